import { createHash, generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

/**
 * A real OpenID provider for tests: `oidc-provider` (a certified implementation) in this process on
 * 127.0.0.1 and a free port, with its issuer under a path as Keycloak's are
 * (`http://127.0.0.1:<port>/realms/test`). Access tokens are JWTs for the resource indicator
 * `audience` (RFC 8707), signed RS256 with the provider's own keys and published at its JWKS URI.
 *
 * Clients:
 * - `clientId` — a public client (no secret, authorization code + PKCE S256): the live map. Its
 *   redirect URIs are the caller's `redirectUris`.
 * - `confidential` — a confidential client for tests: `token()` gets a token from the token
 *   endpoint with the client_credentials grant.
 *
 * The development interactions of oidc-provider accept any login and password (form fields
 * `login` and `password`, then a consent page with one "Continue" button); the account id is the
 * login. A browser can do them; `authorize()` does them over HTTP with cookies. The token endpoint
 * answers CORS requests from the origins of the public client's redirect URIs (the map's page).
 *
 * Claims: every access token carries `claims(accountId)` (as an identity provider's mappers add
 * roles and attributes); `token()` and `signIn()` may add or override claims for one token and set
 * its lifetime (a negative `expiresInSeconds` gives a token that has already expired). They are
 * added with the provider's own hook for access-token contents (`formats.customizers.jwt`).
 */
export interface OidcProviderOptions {
  /** The API's audience (`aud` of the access tokens); an absolute URI, e.g. `urn:guanlink:test`. */
  audience: string;
  /** Redirect URIs of the public client (the live map): e.g. `${httpUrl}/`. */
  redirectUris?: string[];
  /** The public client's id (default `guanlink-map`). */
  clientId?: string;
  /** Claims put into every access token of an account (roles, guanlink_scope, org, …). */
  claims?: (accountId: string) => Record<string, unknown>;
  /** The realm path of the issuer (default `/realms/test`; `''` for an issuer at the root). */
  issuerPath?: string;
  /** Access token lifetime in seconds (default 600). */
  accessTokenTtl?: number;
  /** Port to listen on (default: a free one); the same port again gives the same issuer (a provider that comes back). */
  port?: number;
}

export interface TokenOptions {
  /** Becomes the token's `sub`. */
  accountId: string;
  /** Added to (and overriding) `claims(accountId)` for this token. */
  claims?: Record<string, unknown>;
  /** Lifetime; negative: the token expired that many seconds ago. */
  expiresInSeconds?: number;
  /** Resource indicator (`aud`) for this token (default: the provider's audience). */
  audience?: string;
}

export interface SignInResult {
  accessToken: string;
  idToken: string;
  expiresIn: number;
  tokenType: string;
  scope?: string;
}

export interface TestOidcProvider {
  issuer: string;
  /** The public client (the live map). */
  clientId: string;
  redirectUris: string[];
  audience: string;
  /** The confidential client (client_credentials). */
  confidential: { clientId: string; clientSecret: string };
  authorizationEndpoint: string;
  tokenEndpoint: string;
  jwksUri: string;
  /** A JWT access token for the audience, minted by the provider's token endpoint (client_credentials). */
  token(options: TokenOptions): Promise<string>;
  /**
   * Signs `accountId` in at an authorization URL (as the map builds it) through the provider's
   * login and consent pages, and returns the URL the browser is sent back to (redirect URI with
   * `code` and `state`, or `error`).
   */
  authorize(authorizationUrl: string, accountId: string): Promise<URL>;
  /**
   * The whole authorization code + PKCE flow as the map does it: authorization request with a
   * S256 code challenge, login, consent, code exchange at the token endpoint (public client, no secret).
   */
  signIn(options: Omit<TokenOptions, 'audience'> & { redirectUri?: string; scope?: string }): Promise<SignInResult>;
  /** Allows one more redirect URI for the public client (e.g. the platform's URL, known once it runs). */
  addRedirectUri(uri: string): void;
  /** A new signing key (first in the set; the old one is still published): new tokens are signed with it. */
  rotateKeys(): Promise<void>;
  /** Key ids published, current signing key first. */
  keyIds(): string[];
  stop(): Promise<void>;
}

type Jwk = Record<string, unknown> & { kid: string };

function signingKey(): Jwk {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...(privateKey.export({ format: 'jwk' }) as Record<string, unknown>), kid: randomUUID(), alg: 'RS256', use: 'sig' };
}

export const pkcePair = () => {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
};

export async function startOidcProvider(options: OidcProviderOptions): Promise<TestOidcProvider> {
  const { audience } = options;
  const clientId = options.clientId ?? 'guanlink-map';
  const redirectUris = [...(options.redirectUris ?? ['http://127.0.0.1/callback'])];
  const confidential = { clientId: 'guanlink-tests', clientSecret: randomBytes(24).toString('base64url') };
  const issuerPath = options.issuerPath ?? '/realms/test';
  const ttl = options.accessTokenTtl ?? 600;
  const cookieKeys = [randomBytes(32).toString('base64url')];
  let keys: Jwk[] = [signingKey()];

  // What the token request being made by this helper asks for (one at a time: `exclusive`).
  let pending: Omit<TokenOptions, 'audience'> | undefined;
  let queue: Promise<unknown> = Promise.resolve();
  const exclusive = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = queue.then(fn, fn);
    queue = run.catch(() => {});
    return run;
  };

  let handler: ((req: IncomingMessage, res: ServerResponse) => void) | undefined;
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    if (!handler || (issuerPath && url !== issuerPath && !url.startsWith(`${issuerPath}/`) && !url.startsWith(`${issuerPath}?`))) {
      res.writeHead(404).end();
      return;
    }
    // Mounted under the realm path as frameworks do it: the provider sees the rest, and the whole URL in originalUrl.
    (req as IncomingMessage & { originalUrl?: string }).originalUrl = url;
    req.url = url.slice(issuerPath.length) || '/';
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const issuer = `${origin}${issuerPath}`;

  const build = () => {
    const provider = new Provider(issuer, {
      clients: [
        {
          client_id: clientId,
          token_endpoint_auth_method: 'none',
          grant_types: ['authorization_code'],
          response_types: ['code'],
          redirect_uris: [...redirectUris],
        },
        {
          client_id: confidential.clientId,
          client_secret: confidential.clientSecret,
          grant_types: ['client_credentials'],
          response_types: [],
          redirect_uris: [],
        },
      ],
      jwks: { keys },
      cookies: { keys: cookieKeys },
      // The map calls the token endpoint from its own origin (as Keycloak's "Web origins: +"): the
      // origins of the public client's redirect URIs may.
      clientBasedCORS: (_ctx: unknown, origin: string, client: { clientId: string }) =>
        client.clientId === clientId && redirectUris.some((u) => new URL(u).origin === origin),
      scopes: ['openid', 'profile', 'offline_access'],
      claims: { openid: ['sub'], profile: ['name', 'preferred_username'] },
      findAccount: (_ctx, id) => ({ accountId: id, claims: () => ({ sub: id, name: id, preferred_username: id }) }),
      ttl: { AccessToken: ttl, ClientCredentials: ttl, IdToken: ttl, Interaction: 600, Session: 3600, Grant: 3600, AuthorizationCode: 60 },
      features: {
        devInteractions: { enabled: true },
        clientCredentials: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => audience,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => ({
            scope: 'guanlink',
            audience: resource,
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          }),
        },
      },
      formats: {
        customizers: {
          jwt: (_ctx, token, jwt) => {
            const accountId = pending?.accountId ?? token.accountId;
            if (accountId === undefined) return;
            const payload = jwt.payload;
            payload.sub = accountId;
            Object.assign(payload, options.claims?.(accountId), pending?.claims);
            if (pending?.expiresInSeconds !== undefined) {
              const now = Math.floor(Date.now() / 1000);
              payload.exp = now + pending.expiresInSeconds;
              payload.iat = Math.min(now, (payload.exp as number) - 60);
            }
          },
        },
      },
    });
    provider.on('server_error', (_ctx, err) => console.error('test OpenID provider: server error', err));
    return provider.callback();
  };
  handler = build();

  const discovery = (await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()) as Record<string, string>;
  const tokenEndpoint = discovery.token_endpoint!;
  const authorizationEndpoint = discovery.authorization_endpoint!;

  const tokenRequest = async (body: Record<string, string>, auth?: string): Promise<Record<string, unknown>> => {
    const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded' };
    if (auth) headers.authorization = auth;
    const res = await fetch(tokenEndpoint, { method: 'POST', headers, body: new URLSearchParams(body) });
    const json = (await res.json()) as Record<string, unknown>;
    if (res.status !== 200) throw new Error(`token endpoint: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };

  const authorize = async (authorizationUrl: string, accountId: string): Promise<URL> => {
    const cookies = new Map<string, string>();
    const target = new URL(authorizationUrl);
    const redirectUri = target.searchParams.get('redirect_uri') ?? '';
    let request: { url: string; method: 'GET' | 'POST'; body?: URLSearchParams } = { url: authorizationUrl, method: 'GET' };
    for (let step = 0; step < 20; step++) {
      const headers: Record<string, string> = {};
      if (cookies.size) headers.cookie = [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
      if (request.body) headers['content-type'] = 'application/x-www-form-urlencoded';
      const res = await fetch(request.url, { method: request.method, headers, body: request.body, redirect: 'manual' });
      for (const line of res.headers.getSetCookie()) {
        const [pair] = line.split(';');
        const eq = pair!.indexOf('=');
        const name = pair!.slice(0, eq).trim();
        const value = pair!.slice(eq + 1).trim();
        if (/expires=Thu, 01 Jan 1970/i.test(line) || value === '') cookies.delete(name);
        else cookies.set(name, value);
      }
      const location = res.headers.get('location');
      if (res.status >= 300 && res.status < 400 && location) {
        await res.arrayBuffer();
        const next = new URL(location, request.url);
        if (redirectUri && next.href.startsWith(redirectUri)) return next;
        request = { url: next.href, method: 'GET' };
        continue;
      }
      const html = await res.text();
      if (res.status !== 200) throw new Error(`authorization: ${res.status} at ${request.url}: ${html.slice(0, 500)}`);
      // A login or consent form of the provider: fill it in and submit it as a person would.
      const form = /<form[^>]*action="([^"]+)"[^>]*method="post"[^>]*>([\s\S]*?)<\/form>/i.exec(html);
      if (!form) throw new Error(`authorization: no form at ${request.url}: ${html.slice(0, 500)}`);
      const fields = new URLSearchParams();
      for (const input of form[2]!.matchAll(/<input([^>]*)>/gi)) {
        const name = /name="([^"]+)"/.exec(input[1]!)?.[1];
        if (!name) continue;
        const value = /value="([^"]*)"/.exec(input[1]!)?.[1] ?? '';
        fields.set(name, name === 'login' ? accountId : name === 'password' ? 'any password' : value);
      }
      request = { url: new URL(form[1]!.replace(/&amp;/g, '&'), request.url).href, method: 'POST', body: fields };
    }
    throw new Error('authorization: too many steps');
  };

  return {
    issuer,
    clientId,
    redirectUris,
    audience,
    confidential,
    authorizationEndpoint,
    tokenEndpoint,
    jwksUri: discovery.jwks_uri!,
    token: (opts) =>
      exclusive(async () => {
        pending = opts;
        try {
          const basic = `Basic ${Buffer.from(`${encodeURIComponent(confidential.clientId)}:${encodeURIComponent(confidential.clientSecret)}`).toString('base64')}`;
          const json = await tokenRequest({ grant_type: 'client_credentials', resource: opts.audience ?? audience, scope: 'guanlink' }, basic);
          return json.access_token as string;
        } finally {
          pending = undefined;
        }
      }),
    authorize,
    async signIn(opts) {
      const redirectUri = opts.redirectUri ?? redirectUris[0]!;
      const { verifier, challenge } = pkcePair();
      const state = randomBytes(12).toString('base64url');
      const url = new URL(authorizationEndpoint);
      url.search = new URLSearchParams({
        client_id: clientId,
        response_type: 'code',
        redirect_uri: redirectUri,
        scope: opts.scope ?? 'openid profile',
        state,
        code_challenge: challenge,
        code_challenge_method: 'S256',
      }).toString();
      const back = await authorize(url.href, opts.accountId);
      if (back.searchParams.get('state') !== state) throw new Error(`authorization: state mismatch in ${back.href}`);
      const code = back.searchParams.get('code');
      if (!code) throw new Error(`authorization refused: ${back.href}`);
      return exclusive(async () => {
        pending = { accountId: opts.accountId, claims: opts.claims, expiresInSeconds: opts.expiresInSeconds };
        try {
          const json = await tokenRequest({ grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, client_id: clientId });
          return {
            accessToken: json.access_token as string,
            idToken: json.id_token as string,
            expiresIn: json.expires_in as number,
            tokenType: json.token_type as string,
            scope: json.scope as string | undefined,
          };
        } finally {
          pending = undefined;
        }
      });
    },
    addRedirectUri(uri) {
      if (redirectUris.includes(uri)) return;
      redirectUris.push(uri);
      handler = build();
    },
    async rotateKeys() {
      // As an identity provider rotates: a new active key first, the previous one still published
      // (tokens signed with it stay valid until they expire). The provider is rebuilt with the new
      // key set on the same address, as a restart of the identity provider would.
      await queue;
      keys = [signingKey(), ...keys].slice(0, 2);
      handler = build();
    },
    keyIds: () => keys.map((k) => k.kid),
    async stop() {
      handler = undefined;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
