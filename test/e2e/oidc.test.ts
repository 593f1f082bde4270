import { createHash, randomBytes } from 'node:crypto';
import { decodeProtectedHeader, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcProvider, type TestOidcProvider } from '../support/oidc-provider.ts';
import { startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

// OpenID Connect end to end: a real OpenID provider (oidc-provider) mints and signs the tokens,
// GuanLink discovers it, fetches its keys and decides with the claims.

const AUDIENCE = 'urn:guanlink:e2e';
const DONGGUAN = { lat: 23.02, lng: 113.75 };

interface Refusal {
  statusCode: number;
  message: string;
  permission?: string;
}

describe('OpenID Connect bearer tokens', () => {
  let idp: TestOidcProvider;
  let t: TestPlatform;
  let water: CreatedDevice;
  let traffic: CreatedDevice;

  beforeAll(async () => {
    idp = await startOidcProvider({
      audience: AUDIENCE,
      // What a city's provider would put in by its mappers: the agency and its GuanLink role.
      claims: (accountId) => ({ roles: ['agency'], org: 'Dongguan Water Bureau', name: `Staff ${accountId}` }),
    });
    t = await startTestPlatform({
      oidcIssuer: idp.issuer,
      oidcAudience: AUDIENCE,
      oidcClientId: idp.clientId,
      // Unknown key ids make GuanLink fetch the provider's keys again at most this often.
      oidcJwksCooldownMs: 200,
    });
    idp.addRedirectUri(`${t.httpUrl}/`);
    water = await t.createDevice({ name: 'oidc-river-1', type: 'river-level-station', location: DONGGUAN });
    traffic = await t.createDevice({ name: 'oidc-traffic-1', type: 'traffic-detector', location: DONGGUAN });
  });

  afterAll(async () => {
    await t?.stop();
    await idp?.stop();
  });

  const waterAgencyToken = (accountId = 'li.wei') => idp.token({ accountId, claims: { guanlink_scope: { domains: ['water'] } } });

  it('publishes the sign-in settings for the live map at /auth/config.json', async () => {
    const res = await t.api<{ oidc: Record<string, string> | null }>('GET', '/auth/config.json', undefined, { auth: false });
    expect(res.status).toBe(200);
    expect(res.body.oidc).toEqual({
      issuer: idp.issuer,
      clientId: idp.clientId,
      scopes: 'openid profile',
      authorizationEndpoint: idp.authorizationEndpoint,
      tokenEndpoint: idp.tokenEndpoint,
      endSessionEndpoint: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+\/realms\/test\//),
    });
  });

  it('a token with role agency and scope {domains:[water]} reads only water devices', async () => {
    const token = await waterAgencyToken();
    const res = await t.api<{ items: { id: number; name: string }[] }>('GET', '/api/v1/devices', undefined, { auth: token });
    expect(res.status).toBe(200);
    const ids = res.body.items.map((d) => d.id);
    expect(ids).toContain(water.id);
    expect(ids).not.toContain(traffic.id);
    expect(res.body.items.length).toBeGreaterThan(0);

    const me = await t.api<Record<string, unknown>>('GET', '/api/v1/me', undefined, { auth: token });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ kind: 'oidc', id: 'oidc:li.wei', name: 'Staff li.wei', owner: 'Dongguan Water Bureau', roles: ['agency'], scope: { domains: ['water'] } });
    expect(me.body.permissions).toEqual(['devices:claim', 'live', 'read']);

    expect((await t.api('GET', `/api/v1/devices/${traffic.id}`, undefined, { auth: token })).status).toBe(404);
    expect((await t.api('GET', `/api/v1/devices/${water.id}`, undefined, { auth: token })).status).toBe(200);
  });

  it('the same token may not register devices: 403 naming the permission', async () => {
    const res = await t.api<Refusal>('POST', '/api/v1/devices', { name: 'oidc-not-allowed', type: 'river-level-station', location: DONGGUAN }, { auth: await waterAgencyToken() });
    expect(res.status).toBe(403);
    expect(res.body.permission).toBe('devices:write');
    expect(res.body.message).toContain('"devices:write"');
  });

  it('refuses an expired token: 401 saying it expired', async () => {
    const token = await idp.token({ accountId: 'li.wei', expiresInSeconds: -120 });
    const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: token });
    expect(res.status).toBe(401);
    expect(res.body.message).toMatch(/expired/);
  });

  it('accepts a token that expired within the clock tolerance (30 s)', async () => {
    const token = await idp.token({ accountId: 'li.wei', expiresInSeconds: -5 });
    expect((await t.api('GET', '/api/v1/devices', undefined, { auth: token })).status).toBe(200);
  });

  it('refuses a token for another audience', async () => {
    const token = await idp.token({ accountId: 'li.wei', audience: 'urn:another:api' });
    const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: token });
    expect(res.status).toBe(401);
    expect(res.body.message).toMatch(/wrong audience: it is for "urn:another:api", not "urn:guanlink:e2e"/);
  });

  it('refuses a token from a different provider', async () => {
    const other = await startOidcProvider({ audience: AUDIENCE, claims: () => ({ roles: ['admin'] }) });
    try {
      const token = await other.token({ accountId: 'intruder' });
      const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: token });
      expect(res.status).toBe(401);
      expect(res.body.message).toContain(`issued by "${other.issuer}", not by the configured identity provider "${idp.issuer}"`);

      // The same, claiming our issuer: its key is not one our provider publishes.
      const forged = await other.token({ accountId: 'intruder', claims: { iss: idp.issuer } });
      const res2 = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: forged });
      expect(res2.status).toBe(401);
      expect(res2.body.message).toMatch(/signed with a key the identity provider does not publish/);
    } finally {
      await other.stop();
    }
  });

  it('refuses a token whose signature does not match its contents', async () => {
    const token = await waterAgencyToken();
    const [header, payload, signature] = token.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
    claims.roles = ['admin'];
    const tampered = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${signature}`;
    const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: tampered });
    expect(res.status).toBe(401);
    expect(res.body.message).toMatch(/bad signature/);
  });

  it('refuses a token signed with a shared secret (HS256)', async () => {
    const token = await new SignJWT({ roles: ['admin'] })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(idp.issuer)
      .setAudience(AUDIENCE)
      .setSubject('someone')
      .setExpirationTime('5m')
      .sign(randomBytes(32));
    const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: token });
    expect(res.status).toBe(401);
    expect(res.body.message).toMatch(/algorithm "HS256" is not accepted/);
  });

  it('refuses a token that names no GuanLink role', async () => {
    const none = await idp.token({ accountId: 'li.wei', claims: { roles: [] } });
    const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: none });
    expect(res.status).toBe(401);
    expect(res.body.message).toMatch(/names no GuanLink role/);

    const foreign = await idp.token({ accountId: 'li.wei', claims: { roles: ['offline_access', 'uma_authorization'] } });
    const res2 = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: foreign });
    expect(res2.status).toBe(401);
    expect(res2.body.message).toMatch(/names no GuanLink role \(unknown: offline_access, uma_authorization\)/);
  });

  it('refuses a token whose scope names an unknown town, or is not a scope', async () => {
    const town = await idp.token({ accountId: 'li.wei', claims: { guanlink_scope: { towns: ['Atlantis'] } } });
    const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: town });
    expect(res.status).toBe(401);
    expect(res.body.message).toMatch(/unknown town "Atlantis"/);

    const domain = await idp.token({ accountId: 'li.wei', claims: { guanlink_scope: { domains: ['lava'] } } });
    const res2 = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: domain });
    expect(res2.status).toBe(401);
    expect(res2.body.message).toMatch(/claim "guanlink_scope\/domains\/0"/);

    const text = await idp.token({ accountId: 'li.wei', claims: { guanlink_scope: '{"domains":' } });
    const res3 = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: text });
    expect(res3.status).toBe(401);
    expect(res3.body.message).toMatch(/claim "guanlink_scope" is not JSON/);
  });

  it('takes the scope claim as JSON text too, and a scope by town', async () => {
    const token = await idp.token({ accountId: 'li.wei', claims: { guanlink_scope: JSON.stringify({ domains: ['traffic'], towns: ['莞城街道'] }) } });
    const me = await t.api<Record<string, unknown>>('GET', '/api/v1/me', undefined, { auth: token });
    expect(me.status).toBe(200);
    expect(me.body.scope).toEqual({ domains: ['traffic'], towns: ['莞城街道'] });
  });

  it('accepts tokens signed with a new key after the provider rotates its keys, without a restart', async () => {
    const before = await waterAgencyToken();
    expect((await t.api('GET', '/api/v1/devices', undefined, { auth: before })).status).toBe(200);
    const oldKid = decodeProtectedHeader(before).kid;

    await idp.rotateKeys();
    await new Promise((r) => setTimeout(r, 300)); // past OIDC_JWKS_COOLDOWN_MS since GuanLink last fetched the keys
    const after = await waterAgencyToken();
    expect(decodeProtectedHeader(after).kid).not.toBe(oldKid);
    const res = await t.api<{ items: { id: number }[] }>('GET', '/api/v1/devices', undefined, { auth: after });
    expect(res.status).toBe(200);
    expect(res.body.items.map((d) => d.id)).toContain(water.id);
    // The previous key is still published: tokens signed before the rotation stay valid until they expire.
    expect((await t.api('GET', '/api/v1/devices', undefined, { auth: before })).status).toBe(200);
  });

  it('signs in as the live map does: authorization code + PKCE with the settings from /auth/config.json', async () => {
    const { body } = await t.api<{ oidc: { clientId: string; scopes: string; authorizationEndpoint: string; tokenEndpoint: string } }>('GET', '/auth/config.json', undefined, { auth: false });
    const { clientId, scopes, authorizationEndpoint, tokenEndpoint } = body.oidc;
    const redirectUri = `${t.httpUrl}/`;
    const verifier = randomBytes(32).toString('base64url');
    const state = randomBytes(12).toString('base64url');
    const url = new URL(authorizationEndpoint);
    url.search = new URLSearchParams({
      client_id: clientId,
      response_type: 'code',
      redirect_uri: redirectUri,
      scope: scopes,
      state,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    }).toString();

    // The person signs in at the provider's pages; the browser comes back to the map with a code.
    const back = await idp.authorize(url.href, 'zhang.min');
    expect(back.href.startsWith(redirectUri)).toBe(true);
    expect(back.searchParams.get('state')).toBe(state);
    const code = back.searchParams.get('code');
    expect(code).toBeTruthy();

    // Without the verifier the code is worthless.
    const stolen = await fetch(tokenEndpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: code!, redirect_uri: redirectUri, client_id: clientId, code_verifier: randomBytes(32).toString('base64url') }),
    });
    expect(stolen.status).toBe(400);

    const back2 = await idp.authorize(url.href, 'zhang.min');
    const res = await fetch(tokenEndpoint, {
      method: 'POST',
      // From the map's page: the provider lets its origin read the answer (CORS).
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: t.httpUrl },
      body: new URLSearchParams({ grant_type: 'authorization_code', code: back2.searchParams.get('code')!, redirect_uri: redirectUri, client_id: clientId, code_verifier: verifier }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('access-control-allow-origin')).toBe(t.httpUrl);
    const tokens = (await res.json()) as { access_token: string; id_token: string; token_type: string };
    expect(tokens.token_type).toBe('Bearer');

    const me = await t.api<Record<string, unknown>>('GET', '/api/v1/me', undefined, { auth: tokens.access_token });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ kind: 'oidc', id: 'oidc:zhang.min', name: 'Staff zhang.min', owner: 'Dongguan Water Bureau', roles: ['agency'] });
    const devices = await t.api<{ items: { id: number }[] }>('GET', '/api/v1/devices', undefined, { auth: tokens.access_token });
    expect(devices.status).toBe(200);
    expect(devices.body.items.map((d) => d.id)).toEqual(expect.arrayContaining([water.id, traffic.id]));

    // The ID token is for the map (its audience is the client), not a credential for the API.
    const idToken = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: tokens.id_token });
    expect(idToken.status).toBe(401);
    expect(idToken.body.message).toMatch(/wrong audience/);
  });

  it('the helper flow gives the same: signIn() with claims for this sign-in', async () => {
    const session = await idp.signIn({ accountId: 'chen.jie', redirectUri: `${t.httpUrl}/`, claims: { roles: ['operator'], guanlink_scope: { domains: ['traffic'] } } });
    const me = await t.api<Record<string, unknown>>('GET', '/api/v1/me', undefined, { auth: session.accessToken });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ id: 'oidc:chen.jie', roles: ['operator'], scope: { domains: ['traffic'] } });
  });
});

describe('without OpenID Connect configured', () => {
  let t: TestPlatform;
  let idp: TestOidcProvider;

  beforeAll(async () => {
    idp = await startOidcProvider({ audience: AUDIENCE, claims: () => ({ roles: ['admin'] }) });
    t = await startTestPlatform();
  });

  afterAll(async () => {
    await t?.stop();
    await idp?.stop();
  });

  it('refuses a bearer JWT: 401 saying OpenID Connect is not configured', async () => {
    const token = await idp.token({ accountId: 'someone' });
    const res = await t.api<Refusal>('GET', '/api/v1/devices', undefined, { auth: token });
    expect(res.status).toBe(401);
    expect(res.body.message).toMatch(/not configured/);
  });

  it('/auth/config.json says there is no provider', async () => {
    const res = await t.api('GET', '/auth/config.json', undefined, { auth: false });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ oidc: null });
  });
});
