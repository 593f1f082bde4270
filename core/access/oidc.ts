import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose';
import { Value } from 'typebox/value';
import { ConfigError, parseRoleMap, providerUrl, type Config } from '../config.ts';
import type { Logger } from '../log.ts';
import type { OidcIdentity, OidcVerifier } from './access.ts';
import { ScopeInput } from './scope.ts';

/**
 * OpenID Connect: bearer JWTs issued by the city's identity provider (Keycloak, Azure AD, …).
 *
 * - Discovery: `${issuer}/.well-known/openid-configuration`, read when first needed and read
 *   again after a failure (at most once per `discoveryRetryMs`); the issuer it names must be the
 *   configured one.
 * - Keys: the provider's JWKS (jose's remote key set): cached, fetched again when a token names a
 *   key id it does not know (key rotation), at most once per `jwksCooldownMs`.
 * - A token is accepted when it is signed with an asymmetric algorithm (RS*, PS*, ES*, EdDSA) by one
 *   of those keys, is issued by the issuer for the audience, has `exp` (and `sub`), and has not
 *   expired (with `clockToleranceSeconds`).
 * - Identity: roles, scope, name and owner from configurable claims (dotted paths such as
 *   `realm_access.roles`); roles optionally renamed through a role map.
 *
 * Every refusal is an OidcError whose message says why (expired, wrong audience, unknown key, …).
 */
export interface OidcSettings {
  issuer: string;
  /** Accepted `aud` values (any one of them). */
  audience: string[];
  /** Claim (path) holding the roles: `roles`, `realm_access.roles`, `resource_access.<client>.roles`, … */
  rolesClaim: string;
  /** Provider role → GuanLink roles. When set, only mapped roles count (a provider's own `admin` is not GuanLink's). */
  roleMap: ReadonlyMap<string, readonly string[]> | null;
  /** Claim (path) holding the scope: an object as ScopeInput, or its JSON text. Absent: no restriction beyond the roles. */
  scopeClaim: string;
  /** Claim (path) with the display name (then `preferred_username`, then `sub`). */
  nameClaim: string;
  /** Claim (path) with the agency (then the issuer's host). */
  ownerClaim: string;
  /** The live map's public client (authorization code + PKCE); null: the map does not offer sign-in. */
  clientId: string | null;
  /** Scopes the map asks for. */
  scopes: string;
  clockToleranceSeconds?: number;
  jwksCooldownMs?: number;
  discoveryRetryMs?: number;
  timeoutMs?: number;
  /** The clock the retry interval is measured on (tests advance their own). */
  now?: () => number;
}

/** What the live map needs to sign in through the provider (GET /auth/config.json). */
export interface OidcSignIn {
  issuer: string;
  clientId: string;
  scopes: string;
  authorizationEndpoint?: string;
  tokenEndpoint?: string;
  endSessionEndpoint?: string;
}

export interface OidcDiscovery {
  issuer: string;
  jwksUri: string;
  authorizationEndpoint?: string;
  tokenEndpoint?: string;
  endSessionEndpoint?: string;
}

export interface OidcService extends OidcVerifier {
  readonly settings: OidcSettings;
  /** The provider's discovery document (read once; read again after a failure). */
  discover(): Promise<OidcDiscovery>;
  /** The map's sign-in settings; null when no client id is configured. Endpoints are left out while discovery fails. */
  signIn(): Promise<OidcSignIn | null>;
}

/** A token refused; the message says why. */
export class OidcError extends Error {
  override readonly name = 'OidcError';
}

/** Asymmetric signature algorithms only: a shared-secret (HS*) token could be made by anyone holding the secret. */
export const OIDC_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];

/** The OIDC settings of a configuration; undefined when OIDC_ISSUER is not set. ConfigError for an incomplete one. */
export function oidcSettings(config: Config): OidcSettings | undefined {
  if (!config.oidcIssuer) {
    const stray = (['oidcAudience', 'oidcClientId'] as const).filter((k) => config[k]);
    if (stray.length > 0) throw new ConfigError(`${stray.map((k) => (k === 'oidcAudience' ? 'OIDC_AUDIENCE' : 'OIDC_CLIENT_ID')).join(' and ')} set without OIDC_ISSUER: set OIDC_ISSUER to the identity provider's issuer URL`);
    return undefined;
  }
  const problems: string[] = [];
  try {
    providerUrl(config.oidcIssuer);
  } catch (err) {
    problems.push(`OIDC_ISSUER: ${(err as Error).message}`);
  }
  const audience = (config.oidcAudience ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter(Boolean);
  if (audience.length === 0) {
    problems.push("OIDC_AUDIENCE: required with OIDC_ISSUER — the audience (aud) the provider puts into access tokens for GuanLink, e.g. the client id of GuanLink's API");
  }
  let roleMap: Map<string, string[]> | null = null;
  if (config.oidcRoleMap) {
    try {
      roleMap = parseRoleMap(config.oidcRoleMap);
    } catch (err) {
      problems.push(`OIDC_ROLE_MAP: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  return {
    issuer: config.oidcIssuer,
    audience,
    rolesClaim: config.oidcRolesClaim,
    roleMap,
    scopeClaim: config.oidcScopeClaim,
    nameClaim: config.oidcNameClaim,
    ownerClaim: config.oidcOwnerClaim,
    clientId: config.oidcClientId ?? null,
    scopes: config.oidcScopes,
    jwksCooldownMs: config.oidcJwksCooldownMs,
  };
}

/** A claim by name, or by dotted path (`realm_access.roles`) when no claim has the whole name (`https://city/roles`). */
export function claimAt(payload: Record<string, unknown>, path: string): unknown {
  if (Object.hasOwn(payload, path)) return payload[path];
  let value: unknown = payload;
  for (const part of path.split('.')) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

const text = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() !== '' ? v.trim() : undefined);

export function createOidcVerifier(settings: OidcSettings, log: Logger): OidcService {
  const issuer = settings.issuer;
  const discoveryUrl = `${issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
  const timeoutMs = settings.timeoutMs ?? 5000;
  const retryMs = settings.discoveryRetryMs ?? 5000;
  const now = settings.now ?? Date.now;
  const issuerHost = new URL(issuer).host;

  let discovery: Promise<OidcDiscovery> | undefined;
  let failure: { at: number; error: OidcError } | undefined;
  let keys: ReturnType<typeof createRemoteJWKSet> | undefined;

  async function load(): Promise<OidcDiscovery> {
    let doc: Record<string, unknown>;
    try {
      const res = await fetch(discoveryUrl, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = (await res.json()) as Record<string, unknown>;
      if (doc === null || typeof doc !== 'object') throw new Error('not a JSON object');
    } catch (err) {
      throw new OidcError(`identity provider unreachable: ${discoveryUrl}: ${reason(err)}`);
    }
    if (doc.issuer !== issuer) {
      throw new OidcError(`the identity provider's discovery document names the issuer ${JSON.stringify(doc.issuer)}, not the configured OIDC_ISSUER "${issuer}"`);
    }
    const jwksUri = text(doc.jwks_uri);
    if (!jwksUri) throw new OidcError(`the identity provider's discovery document (${discoveryUrl}) has no jwks_uri`);
    try {
      providerUrl(jwksUri);
    } catch (err) {
      throw new OidcError(`the identity provider's jwks_uri: ${(err as Error).message}`);
    }
    return {
      issuer,
      jwksUri,
      authorizationEndpoint: text(doc.authorization_endpoint),
      tokenEndpoint: text(doc.token_endpoint),
      endSessionEndpoint: text(doc.end_session_endpoint),
    };
  }

  function discover(): Promise<OidcDiscovery> {
    if (discovery) return discovery;
    if (failure && now() - failure.at < retryMs) return Promise.reject(failure.error);
    const attempt: Promise<OidcDiscovery> = load().then(
      (d) => {
        failure = undefined;
        keys = createRemoteJWKSet(new URL(d.jwksUri), { timeoutDuration: timeoutMs, cooldownDuration: settings.jwksCooldownMs ?? 30_000 });
        log.info({ issuer, jwksUri: d.jwksUri }, 'OpenID provider discovered');
        return d;
      },
      (err: OidcError) => {
        if (discovery === attempt) discovery = undefined;
        failure = { at: now(), error: err };
        log.warn({ issuer, err: err.message }, 'OpenID provider discovery failed (tried again when a token arrives)');
        throw err;
      },
    );
    discovery = attempt;
    return attempt;
  }

  async function verify(token: string): Promise<OidcIdentity> {
    // What the token claims about itself is read first to refuse plainly foreign tokens with a
    // clear reason, without asking the provider for keys; everything is verified below.
    let alg: string | undefined;
    let claimedIssuer: unknown;
    try {
      alg = decodeProtectedHeader(token).alg;
      claimedIssuer = decodeJwt(token).iss;
    } catch {
      throw new OidcError('malformed token: not a JSON Web Token');
    }
    if (!alg || !OIDC_ALGORITHMS.includes(alg)) {
      throw new OidcError(`signature algorithm ${JSON.stringify(alg ?? null)} is not accepted (only asymmetric ones: RS*, PS*, ES*, EdDSA)`);
    }
    if (claimedIssuer !== issuer) {
      throw new OidcError(`issued by ${JSON.stringify(claimedIssuer ?? null)}, not by the configured identity provider "${issuer}"`);
    }
    await discover();
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys!, {
        issuer,
        audience: settings.audience,
        algorithms: OIDC_ALGORITHMS,
        clockTolerance: settings.clockToleranceSeconds ?? 30,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (err) {
      throw new OidcError(explain(err, token));
    }
    return identity(payload);
  }

  function explain(err: unknown, token: string): string {
    if (err instanceof errors.JWTExpired) {
      const exp = err.payload.exp;
      return `expired${typeof exp === 'number' ? ` at ${new Date(exp * 1000).toISOString()}` : ''}`;
    }
    if (err instanceof errors.JWTClaimValidationFailed) {
      const value = err.payload[err.claim];
      if (err.reason === 'missing') return `it has no "${err.claim}" claim`;
      if (err.claim === 'aud') return `wrong audience: it is for ${JSON.stringify(value ?? null)}, not ${settings.audience.map((a) => `"${a}"`).join(' or ')} (OIDC_AUDIENCE)`;
      if (err.claim === 'nbf') return `not valid yet (nbf ${typeof value === 'number' ? new Date(value * 1000).toISOString() : JSON.stringify(value)})`;
      if (err.claim === 'iss') return `issued by ${JSON.stringify(value ?? null)}, not by "${issuer}"`;
      return `claim "${err.claim}" is invalid: ${err.message}`;
    }
    if (err instanceof errors.JWKSNoMatchingKey) {
      let kid: string | undefined;
      try {
        kid = decodeProtectedHeader(token).kid;
      } catch {}
      return `signed with a key the identity provider does not publish${kid ? ` (kid "${kid}")` : ''}`;
    }
    if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad signature: it was not signed by the identity provider';
    if (err instanceof errors.JOSEAlgNotAllowed) return 'signature algorithm not accepted (only asymmetric ones: RS*, PS*, ES*, EdDSA)';
    if (err instanceof errors.JWKSTimeout) return `identity provider unreachable: its key set (jwks_uri) did not answer within ${timeoutMs} ms`;
    if (err instanceof errors.JWKSInvalid || err instanceof errors.JWKSMultipleMatchingKeys) return `the identity provider's key set cannot be used: ${err.message}`;
    if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) return `malformed token: ${err.message}`;
    if (err instanceof errors.JOSEError) return `${err.message}`;
    if (err instanceof TypeError || (err instanceof Error && err.name === 'AbortError')) return `identity provider unreachable: its key set (jwks_uri) could not be read: ${reason(err)}`;
    return `could not be verified: ${reason(err)}`;
  }

  function identity(payload: JWTPayload): OidcIdentity {
    const claims = payload as Record<string, unknown>;
    const subject = payload.sub!;
    return {
      subject,
      name: text(claimAt(claims, settings.nameClaim)) ?? text(claims.preferred_username) ?? subject,
      owner: owner(claimAt(claims, settings.ownerClaim)) ?? issuerHost,
      roles: roles(claimAt(claims, settings.rolesClaim)),
      scope: scope(claimAt(claims, settings.scopeClaim)),
      expiresAt: payload.exp! * 1000,
    };
  }

  function owner(value: unknown): string | undefined {
    if (Array.isArray(value)) return text(value.find((v) => text(v) !== undefined));
    return text(value);
  }

  function roles(value: unknown): string[] {
    let names: string[];
    if (value === undefined || value === null) names = [];
    else if (typeof value === 'string') names = value.split(/[\s,]+/).filter(Boolean);
    else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) names = value;
    else throw new OidcError(`claim "${settings.rolesClaim}" is not a list of role names (OIDC_ROLES_CLAIM)`);
    if (!settings.roleMap) return [...new Set(names)];
    return [...new Set(names.flatMap((n) => settings.roleMap!.get(n) ?? []))];
  }

  function scope(value: unknown): ScopeInput {
    if (value === undefined || value === null) return {};
    let input = value;
    if (typeof value === 'string') {
      try {
        input = JSON.parse(value);
      } catch {
        throw new OidcError(`claim "${settings.scopeClaim}" is not JSON: expected an object such as {"domains":["water"],"towns":["虎门镇"]}`);
      }
    }
    if (!Value.Check(ScopeInput, input)) {
      const all = [...Value.Errors(ScopeInput, input)] as { keyword?: string; instancePath?: string; message?: string; params?: Record<string, unknown> }[];
      const first = all.find((e) => e.keyword !== 'boolean') ?? all[0];
      const where = `${settings.scopeClaim}${first?.instancePath ?? ''}`;
      const params = first?.params ?? {};
      const detail = params.allowedValues
        ? ` (one of ${(params.allowedValues as unknown[]).join(', ')})`
        : params.additionalProperties
          ? ` (${(params.additionalProperties as unknown[]).join(', ')}; allowed: domains, towns, area)`
          : '';
      throw new OidcError(`claim "${where}" ${first?.message ?? 'is invalid'}${detail}`);
    }
    return input as ScopeInput;
  }

  return {
    settings,
    verify,
    discover,
    async signIn() {
      if (!settings.clientId) return null;
      const base: OidcSignIn = { issuer, clientId: settings.clientId, scopes: settings.scopes };
      try {
        const d = await discover();
        if (d.authorizationEndpoint) base.authorizationEndpoint = d.authorizationEndpoint;
        if (d.tokenEndpoint) base.tokenEndpoint = d.tokenEndpoint;
        if (d.endSessionEndpoint) base.endSessionEndpoint = d.endSessionEndpoint;
      } catch {
        // Left out: the map reads the discovery document itself, or says sign-in is unavailable.
      }
      return base;
    },
  };
}

function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'no answer in time';
  // fetch's "fetch failed" says nothing; its cause does ("connect ECONNREFUSED 10.0.0.5:443", "getaddrinfo ENOTFOUND …").
  const cause = (err as Error & { cause?: { code?: string; message?: string } }).cause;
  return cause?.message || cause?.code || err.message;
}
