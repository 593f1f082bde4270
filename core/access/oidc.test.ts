import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcProvider, type TestOidcProvider } from '../../test/support/oidc-provider.ts';
import { startPlatform } from '../../platform.ts';
import { ConfigError, loadConfig } from '../config.ts';
import { createLogger } from '../log.ts';
import { claimAt, createOidcVerifier, oidcSettings, type OidcSettings } from './oidc.ts';

// The verifier against a real OpenID provider (test/support/oidc-provider.ts); end to end through
// the platform: test/e2e/oidc.test.ts.

const AUDIENCE = 'urn:guanlink:unit';
const log = createLogger('silent');

const settingsFor = (issuer: string, more: Partial<OidcSettings> = {}): OidcSettings => ({
  issuer,
  audience: [AUDIENCE],
  rolesClaim: 'roles',
  roleMap: null,
  scopeClaim: 'guanlink_scope',
  nameClaim: 'name',
  ownerClaim: 'org',
  clientId: null,
  scopes: 'openid profile',
  ...more,
});

describe('OIDC settings', () => {
  it('OIDC_ISSUER without OIDC_AUDIENCE stops start-up with a ConfigError naming OIDC_AUDIENCE', async () => {
    const config = loadConfig({ OIDC_ISSUER: 'https://keycloak.example/realms/city' });
    expect(() => oidcSettings(config)).toThrow(ConfigError);
    expect(() => oidcSettings(config)).toThrow(/OIDC_AUDIENCE: required with OIDC_ISSUER/);

    // The platform refuses before it starts anything (no database, no admin key written).
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-oidc-'));
    try {
      await expect(startPlatform({ ...config, dataDir }, log)).rejects.toThrow(/OIDC_AUDIENCE/);
      expect(await readdir(dataDir)).toEqual([]);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('parses the issuer, audiences, claims and role map', () => {
    const s = oidcSettings(
      loadConfig({
        OIDC_ISSUER: 'https://keycloak.example/realms/city',
        OIDC_AUDIENCE: 'guanlink-api, guanlink',
        OIDC_CLIENT_ID: 'guanlink-map',
        OIDC_ROLES_CLAIM: 'realm_access.roles',
        OIDC_ROLE_MAP: 'water-staff=agency, ops=operator, ops=agency',
      }),
    )!;
    expect(s.audience).toEqual(['guanlink-api', 'guanlink']);
    expect(s.clientId).toBe('guanlink-map');
    expect(s.scopes).toBe('openid profile');
    expect(s.rolesClaim).toBe('realm_access.roles');
    expect([...s.roleMap!]).toEqual([
      ['water-staff', ['agency']],
      ['ops', ['operator', 'agency']],
    ]);
    expect(oidcSettings(loadConfig({}))).toBeUndefined();
  });

  it('refuses unusable values with the variable named', () => {
    expect(() => loadConfig({ OIDC_ISSUER: 'http://keycloak.example/realms/city' })).toThrow(/OIDC_ISSUER: expected an https URL \(http only on localhost\)/);
    expect(() => loadConfig({ OIDC_ISSUER: 'keycloak' })).toThrow(/OIDC_ISSUER: expected a URL/);
    expect(() => loadConfig({ OIDC_ROLE_MAP: 'water-staff' })).toThrow(/OIDC_ROLE_MAP: expected provider-role=guanlink-role pairs/);
    expect(() => loadConfig({ OIDC_JWKS_COOLDOWN_MS: '5' })).toThrow(/OIDC_JWKS_COOLDOWN_MS/);
    expect(() => oidcSettings(loadConfig({ OIDC_AUDIENCE: 'guanlink-api' }))).toThrow(/OIDC_AUDIENCE set without OIDC_ISSUER/);
    expect(() => oidcSettings(loadConfig({}, { oidcIssuer: 'ftp://x.example', oidcAudience: 'a' }))).toThrow(/OIDC_ISSUER: expected an https URL/);
  });

  it('reads claims by name or dotted path', () => {
    const payload = { roles: ['a'], realm_access: { roles: ['b'] }, resource_access: { 'guanlink-api': { roles: ['c'] } }, 'https://city.example/roles': ['d'] };
    expect(claimAt(payload, 'roles')).toEqual(['a']);
    expect(claimAt(payload, 'realm_access.roles')).toEqual(['b']);
    expect(claimAt(payload, 'resource_access.guanlink-api.roles')).toEqual(['c']);
    expect(claimAt(payload, 'https://city.example/roles')).toEqual(['d']);
    expect(claimAt(payload, 'realm_access.missing')).toBeUndefined();
    expect(claimAt(payload, 'roles.0')).toBeUndefined();
  });
});

describe('OIDC verifier against a real provider', () => {
  let idp: TestOidcProvider;

  beforeAll(async () => {
    idp = await startOidcProvider({ audience: AUDIENCE });
  });
  afterAll(async () => {
    await idp?.stop();
  });

  it('Keycloak-style roles: realm_access.roles through a role map (unmapped provider roles do not count)', async () => {
    const verifier = createOidcVerifier(settingsFor(idp.issuer, { rolesClaim: 'realm_access.roles', roleMap: new Map([['water-staff', ['agency']]]) }), log);
    const token = await idp.token({ accountId: 'u1', claims: { realm_access: { roles: ['water-staff', 'admin', 'offline_access'] }, preferred_username: 'wang.fang' } });
    const identity = await verifier.verify(token);
    expect(identity).toMatchObject({ subject: 'u1', name: 'wang.fang', owner: new URL(idp.issuer).host, roles: ['agency'], scope: {} });
    expect(identity.expiresAt).toBeGreaterThan(Date.now());
  });

  it('client roles at resource_access.<client>.roles, roles as a space-separated string, namespaced claims', async () => {
    const byClient = createOidcVerifier(settingsFor(idp.issuer, { rolesClaim: 'resource_access.guanlink-api.roles', ownerClaim: 'groups' }), log);
    const t1 = await idp.token({ accountId: 'u2', claims: { resource_access: { 'guanlink-api': { roles: ['operator'] } }, groups: ['Traffic Police'] } });
    expect(await byClient.verify(t1)).toMatchObject({ roles: ['operator'], owner: 'Traffic Police', name: 'u2' });

    const namespaced = createOidcVerifier(settingsFor(idp.issuer, { rolesClaim: 'https://guanlink.example/roles', scopeClaim: 'https://guanlink.example/scope' }), log);
    const t2 = await idp.token({ accountId: 'u3', claims: { 'https://guanlink.example/roles': 'agency operator', 'https://guanlink.example/scope': { domains: ['water'] } } });
    expect(await namespaced.verify(t2)).toMatchObject({ roles: ['agency', 'operator'], scope: { domains: ['water'] } });

    const t3 = await idp.token({ accountId: 'u4', claims: { 'https://guanlink.example/roles': 42 } });
    await expect(namespaced.verify(t3)).rejects.toThrow('claim "https://guanlink.example/roles" is not a list of role names (OIDC_ROLES_CLAIM)');
  });

  it('refuses a scope claim with unknown properties, naming them', async () => {
    const verifier = createOidcVerifier(settingsFor(idp.issuer), log);
    const token = await idp.token({ accountId: 'u5', claims: { roles: ['agency'], guanlink_scope: { domains: ['water'], district: 'x' } } });
    await expect(verifier.verify(token)).rejects.toThrow(/claim "guanlink_scope" must not have additional properties \(district; allowed: domains, towns, area\)/);
  });

  it('refuses when the discovery document names another issuer', async () => {
    const verifier = createOidcVerifier(settingsFor(`${idp.issuer}/`), log);
    await expect(verifier.discover()).rejects.toThrow(`the identity provider's discovery document names the issuer "${idp.issuer}", not the configured OIDC_ISSUER "${idp.issuer}/"`);
  });

  it('reports the key set unreachable, and discovery unreachable until the provider is back', async () => {
    const first = await startOidcProvider({ audience: AUDIENCE });
    const port = Number(new URL(first.issuer).port);
    const token = await first.token({ accountId: 'u6', claims: { roles: ['agency'] } });
    const verifier = createOidcVerifier(settingsFor(first.issuer, { discoveryRetryMs: 300 }), log);
    await verifier.discover();
    await first.stop();
    // Discovered, but the keys were not fetched yet: the key set cannot be read.
    await expect(verifier.verify(token)).rejects.toThrow(/identity provider unreachable: its key set \(jwks_uri\) could not be read: (connect ECONNREFUSED|other side closed)/);

    let clock = 0; // the retry interval runs on this clock: no race with a busy machine
    const fresh = createOidcVerifier(settingsFor(first.issuer, { discoveryRetryMs: 300, now: () => clock }), log);
    await expect(fresh.verify(token)).rejects.toThrow(/identity provider unreachable: .*\/\.well-known\/openid-configuration: connect ECONNREFUSED/);

    // The provider comes back (same address, new keys); discovery is tried again after discoveryRetryMs.
    const back = await startOidcProvider({ audience: AUDIENCE, port });
    try {
      const newToken = await back.token({ accountId: 'u6', claims: { roles: ['agency'] } });
      await expect(fresh.verify(newToken)).rejects.toThrow(/identity provider unreachable/); // within the retry interval: not asked again yet
      clock += 350;
      expect(await fresh.verify(newToken)).toMatchObject({ subject: 'u6', roles: ['agency'] });
      // The token signed by the provider before its restart names a key it no longer publishes.
      await expect(fresh.verify(token)).rejects.toThrow(/signed with a key the identity provider does not publish \(kid "/);
    } finally {
      await back.stop();
    }
  });

  it("gives the map's sign-in settings only with a client id", async () => {
    expect(await createOidcVerifier(settingsFor(idp.issuer), log).signIn()).toBeNull();
    expect(await createOidcVerifier(settingsFor(idp.issuer, { clientId: 'guanlink-map', scopes: 'openid' }), log).signIn()).toMatchObject({
      issuer: idp.issuer,
      clientId: 'guanlink-map',
      scopes: 'openid',
      authorizationEndpoint: idp.authorizationEndpoint,
      tokenEndpoint: idp.tokenEndpoint,
    });
  });
});
