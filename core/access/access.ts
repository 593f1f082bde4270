import type { MultiPolygon, Polygon } from 'geojson';
import { booleanIntersects } from '@turf/turf';
import type pg from 'pg';
import type { Domain } from '../domains.ts';
import type { DeviceRegistry } from '../registry.ts';
import type { ApiKey, ApiKeyStore } from './api-keys.ts';
import { PERMISSION_NAMES, type Permission } from './permissions.ts';
import { bootstrapPrincipal, type Principal } from './principal.ts';
import type { RoleStore } from './roles.ts';
import { domainVisible, parseScope, scopeAreaSql, scopeContains, scopeExactSql, ScopeError, type Scope, type ScopeInput, type TownAreas } from './scope.ts';
import { safeEqual } from '../credentials.ts';
import { credentialId, describeRefusal, type Attempt, type AuthThrottle, type AuthVia } from '../auth-throttle.ts';
import type { Ownership } from '../claims.ts';

/**
 * A request refused for who is asking: 401 (no valid credential), 403 (a permission missing), 404
 * (outside the scope), 429 (too many failed credentials from this address or for this key:
 * `retryAfterSeconds`).
 */
export class AccessError extends Error {
  override readonly name = 'AccessError';
  constructor(
    readonly statusCode: 401 | 403 | 404 | 429,
    message: string,
    readonly permission?: Permission,
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }
}

/** Where a credential is presented from (failed ones are throttled per source address). */
export interface AuthContext {
  /** The client's address. */
  source?: string | undefined;
  via?: AuthVia;
}

/** An identity proven by the city's OpenID provider (core/access/oidc.ts). */
export interface OidcIdentity {
  subject: string;
  name: string;
  owner: string;
  roles: string[];
  scope: ScopeInput;
  expiresAt: number;
}

export interface OidcVerifier {
  /** The identity of a bearer JWT, or an Error whose message says why it is refused. */
  verify(token: string): Promise<OidcIdentity>;
}

export interface AccessDeps {
  pool: pg.Pool;
  registry: DeviceRegistry;
  roles: RoleStore;
  keys: ApiKeyStore;
  towns: TownAreas;
  bootstrapKey: string;
  oidc?: OidcVerifier;
  /** How long a scope's set of visible devices is reused (registry changes clear it at once). */
  visibleCacheMs?: number;
  /** Failed credentials throttled per source and per key (core/auth-throttle.ts). */
  throttle?: AuthThrottle;
  /** Claimed devices and their owners (core/claims.ts). */
  ownership?: Ownership;
}

/** AccessError 429 for a credential refused unchecked (too many failures). */
function throttled(admission: Extract<ReturnType<AuthThrottle['admit']>, { ok: false }>, what: string): AccessError {
  return new AccessError(429, `${describeRefusal(admission, what)} (the credential was not checked)`, undefined, Math.max(1, Math.ceil(admission.retryAfterMs / 1000)));
}

const looksLikeJwt = (s: string) => /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(s);

/**
 * The one place that decides what a principal may see and do: REST routes (api/access.ts), live
 * streams (api/live/live.ts) and MQTT application sessions (broker/auth.ts) all ask it.
 *
 * - `authenticate` turns a presented credential (the bootstrap admin key, an API key or an OIDC
 *   bearer JWT) into a Principal, or refuses it with the reason.
 * - `require` checks a permission (403 naming it).
 * - Scope: `visibleDevices`/`deviceVisible` (devices whose registered location — a moving
 *   device's latest position — is inside the area, in visible domains), `readingsSql` and
 *   `positionVisible` (readings positioned inside).
 * - Ownership: a device an agency claimed (core/claims.ts) is visible to every principal of that
 *   owner, with all its readings, events and streams, whatever the scope's domains and area:
 *   visible = in scope OR owned by the principal's owner (`owns`). Area-wide queries (spatial
 *   latest/history/aggregate/export) stay bounded by the scope: they answer for a place.
 */
export class Access {
  private readonly bootstrap: Principal;
  private readonly scopes = new Map<string, Scope>();
  private readonly visible = new Map<string, { at: number; ids: Promise<ReadonlySet<number>> }>();
  private readonly visibleCacheMs: number;

  constructor(private readonly deps: AccessDeps) {
    this.bootstrap = bootstrapPrincipal(new Set(PERMISSION_NAMES));
    this.visibleCacheMs = deps.visibleCacheMs ?? 2_000;
    deps.registry.onChange(() => this.visible.clear());
    deps.registry.onTypeChange(() => this.visible.clear());
    deps.ownership?.onChange(() => this.visible.clear());
  }

  /** The devices the principal's owner claimed (empty set: none). */
  ownedDevices(p: Principal): ReadonlySet<number> {
    return this.deps.ownership?.ownedBy(p.owner) ?? new Set();
  }

  /** Whether the device belongs to the principal's owner (an agency that claimed it). */
  owns(p: Principal, deviceId: number): boolean {
    return this.deps.ownership?.ownerOf(deviceId) === p.owner;
  }

  /**
   * A principal for a presented credential; AccessError 401 with the reason otherwise. Guesses —
   * an unknown or malformed API key, a credential of no known form (an admin key guess) — are
   * throttled per source address and per key: once blocked, such a credential is refused with
   * AccessError 429 without being looked up. The admin key, API keys that passed on this node
   * before and OpenID Connect tokens (nothing to guess: a signature) are never held back.
   */
  async authenticate(credential: string, context: AuthContext = {}): Promise<Principal> {
    const secret = credential.trim();
    if (secret === '') throw new AccessError(401, 'no credential: send Authorization: Bearer <API key or token>');
    if (safeEqual(secret, this.deps.bootstrapKey)) return this.bootstrap;
    const throttle = this.deps.throttle;
    const via = context.via ?? 'rest';
    if (secret.startsWith('glk_')) {
      const attempt: Attempt = { via, source: context.source, credential: credentialId('key', secret) };
      const check = await this.deps.keys.check(secret, Date.now(), throttle ? { admit: () => throttle.admit(attempt) } : {});
      if (check.ok) {
        throttle?.succeeded(attempt);
        return this.keyPrincipal(check.key);
      }
      if (check.code === 'throttled') throw throttled(check.admission, 'API key');
      if (check.code === 'unknown' || check.code === 'malformed') throttle?.failed(attempt, `${check.code}_api_key`);
      else throttle?.counted(via, `${check.code}_api_key`);
      throw new AccessError(401, check.reason);
    }
    if (looksLikeJwt(secret)) {
      if (!this.deps.oidc) {
        throttle?.counted(via, 'oidc_not_configured');
        throw new AccessError(401, 'bearer JWTs are not accepted: OpenID Connect is not configured (OIDC_ISSUER)');
      }
      let identity: OidcIdentity;
      try {
        identity = await this.deps.oidc.verify(secret);
      } catch (err) {
        throttle?.counted(via, 'oidc_token_refused');
        throw new AccessError(401, `token refused: ${(err as Error).message}`);
      }
      return this.oidcPrincipal(identity);
    }
    if (throttle) {
      const attempt: Attempt = { via, source: context.source, credential: undefined };
      const admission = throttle.admit(attempt);
      if (!admission.ok) throw throttled(admission, 'credential');
      throttle.failed(attempt, 'unknown_credential');
    }
    throw new AccessError(401, 'unknown credential: expected an API key (glk_…), an OpenID Connect bearer token or the admin key');
  }

  /** The principal of a stored key (its roles' permissions and its scope). */
  keyPrincipal(key: ApiKey): Principal {
    return {
      kind: 'key',
      id: `key:${key.id}`,
      keyId: key.id,
      name: key.name,
      owner: key.owner,
      roles: key.roles,
      permissions: this.deps.roles.permissionsOf(key.roles),
      scope: this.scope(key.scope),
      expiresAt: key.expiresAt ? Date.parse(key.expiresAt) : null,
      rateLimit: key.rateLimit,
    };
  }

  private oidcPrincipal(identity: OidcIdentity): Principal {
    const unknown = this.deps.roles.unknown(identity.roles);
    if (identity.roles.length === 0 || unknown.length === identity.roles.length) {
      throw new AccessError(401, `token refused: it names no GuanLink role${unknown.length ? ` (unknown: ${unknown.join(', ')})` : ''}`);
    }
    let scope: Scope;
    try {
      scope = this.scope(identity.scope);
    } catch (err) {
      throw new AccessError(401, `token refused: ${(err as Error).message}`);
    }
    return {
      kind: 'oidc',
      id: `oidc:${identity.subject}`,
      name: identity.name,
      owner: identity.owner,
      roles: identity.roles,
      permissions: this.deps.roles.permissionsOf(identity.roles),
      scope,
      expiresAt: identity.expiresAt,
    };
  }

  /** A parsed scope (ScopeError when it cannot be used); parsed once per distinct input. */
  scope(input: ScopeInput): Scope {
    const cacheKey = JSON.stringify(input);
    let scope = this.scopes.get(cacheKey);
    if (!scope) {
      scope = parseScope(input, this.deps.towns);
      this.scopes.set(cacheKey, scope);
      if (this.scopes.size > 1000) this.scopes.delete(this.scopes.keys().next().value!);
    }
    return scope;
  }

  /** Checks a scope input for storing with a key (ScopeError → 400). */
  checkScope(input: ScopeInput): Scope {
    return this.scope(input);
  }

  can(p: Principal, permission: Permission): boolean {
    return p.permissions.has(permission);
  }

  /** AccessError 403 naming the permission when the principal lacks it. */
  require(p: Principal, permission: Permission): void {
    if (!p.permissions.has(permission)) {
      const who = p.kind === 'key' ? `API key "${p.name}"` : p.kind === 'oidc' ? `"${p.name}"` : 'this principal';
      throw new AccessError(403, `this needs the permission "${permission}", which ${who} (roles: ${p.roles.join(', ') || 'none'}) does not have`, permission);
    }
  }

  domainVisible(p: Principal, domain: Domain): boolean {
    return domainVisible(p.scope, domain);
  }

  /**
   * AccessError 403 unless a device of `domain` registered at `location` would be inside the
   * principal's scope: a scoped key may only register or move devices within its scope.
   */
  requirePlace(p: Principal, domain: Domain, location: { lat: number; lng: number } | null | undefined): void {
    if (!domainVisible(p.scope, domain)) throw new AccessError(403, `domain "${domain}" is outside this credential's scope`);
    if (p.scope.area && (!location || !scopeContains(p.scope, location.lng, location.lat))) {
      throw new AccessError(403, "the device's location is outside this credential's scope (a scoped credential registers devices only inside its area)");
    }
  }

  /** AccessError 403 unless the principal's scope is unrestricted (for city-wide changes: device types, bulk import, rules). */
  requireUnscoped(p: Principal, what: string): void {
    if (p.scope.key !== '*') throw new AccessError(403, `${what} needs a credential without a scope (this one is limited to ${describeScope(p.scope)})`);
  }

  /** Whether a reading or event positioned at (lng, lat) is inside the principal's area. */
  positionVisible(p: Principal, lng: number, lat: number): boolean {
    return scopeContains(p.scope, lng, lat);
  }

  /**
   * SQL restricting one device's readings rows (lng, lat, cell columns) to the principal's area;
   * undefined when it has none, or when the principal's owner owns the device (all its readings).
   */
  readingsSql(p: Principal, deviceId: number, cols: { lng: string; lat: string; cell: string } = { lng: 'r.lng', lat: 'r.lat', cell: 'r.cell' }): string | undefined {
    return this.owns(p, deviceId) ? undefined : scopeAreaSql(p.scope, cols);
  }

  /**
   * readingsSql for readings of many devices at once (a `deviceId` column): rows inside the
   * principal's area, or of a device its owner owns; undefined when it has no area.
   */
  readingsOfAnySql(p: Principal, cols: { deviceId: string; lng: string; lat: string; cell: string }): string | undefined {
    const area = scopeAreaSql(p.scope, cols);
    if (!area) return undefined;
    const owned = [...this.ownedDevices(p)].filter((id) => Number.isSafeInteger(id));
    return owned.length === 0 ? area : `(${cols.deviceId} = ANY ('{${owned.join(',')}}'::int4[]) OR ${area})`;
  }

  /** SQL restricting positioned events (lng, lat columns, no cell) to the principal's area; undefined when it has none. */
  eventsSql(p: Principal, cols: { lng: string; lat: string }): string | undefined {
    return scopeExactSql(p.scope, cols);
  }

  /** Whether a geofence is visible: its domain is in scope and it reaches into the principal's area. */
  geofenceVisible(p: Principal, fence: { domain: Domain; geometry: Polygon | MultiPolygon }): boolean {
    if (!domainVisible(p.scope, fence.domain)) return false;
    return !p.scope.area || booleanIntersects(fence.geometry, p.scope.area.geometry);
  }

  /** Ids of the devices the principal may see (in its scope, or owned by its owner); null: all of them. */
  async visibleDevices(p: Principal): Promise<ReadonlySet<number> | null> {
    if (p.scope.domains === null && p.scope.area === null) return null;
    const now = Date.now();
    const owned = this.deps.ownership?.ownedBy(p.owner);
    const cacheKey = owned && owned.size > 0 ? `${p.scope.key}\u0000${p.owner}` : p.scope.key;
    let entry = this.visible.get(cacheKey);
    if (!entry || now - entry.at > this.visibleCacheMs) {
      const inScope = this.loadVisible(p.scope);
      entry = { at: now, ids: owned && owned.size > 0 ? inScope.then((ids) => new Set([...ids, ...owned])) : inScope };
      this.visible.set(cacheKey, entry);
      entry.ids.catch(() => this.visible.delete(cacheKey));
      if (this.visible.size > 200) this.visible.delete(this.visible.keys().next().value!);
    }
    return entry.ids;
  }

  async deviceVisible(p: Principal, id: number): Promise<boolean> {
    const ids = await this.visibleDevices(p);
    return ids === null || ids.has(id);
  }

  /** AccessError 404 (`no device N`, as for a device that does not exist) when the device is outside the scope. */
  async requireDevice(p: Principal, id: number): Promise<void> {
    if (!(await this.deviceVisible(p, id))) throw new AccessError(404, `no device ${id}`);
  }

  private async loadVisible(scope: Scope): Promise<ReadonlySet<number>> {
    const params: unknown[] = [];
    const where: string[] = [];
    if (scope.domains) where.push(`t.domain = ANY ($${params.push(scope.domains)}::text[])`);
    const registered = scopeAreaSql(scope, { lng: 'd.lng', lat: 'd.lat', cell: 'd.cell' });
    const latest = scopeAreaSql(scope, { lng: 's.lng', lat: 's.lat', cell: 's.cell' });
    if (registered && latest) {
      where.push(`CASE WHEN coalesce((t.definition ->> 'moving')::boolean, false) AND s.cell IS NOT NULL THEN ${latest} ELSE ${registered} END`);
    }
    const { rows } = await this.deps.pool.query<{ id: number }>(
      `SELECT d.id FROM devices d JOIN device_types t ON t.name = d.type LEFT JOIN device_state s ON s.device_id = d.id WHERE ${where.join(' AND ') || 'true'}`,
      params,
    );
    return new Set(rows.map((r) => r.id));
  }
}

/** A scope in words, for messages: `domains water; towns 虎门镇`. */
export function describeScope(scope: Scope): string {
  const parts = [];
  if (scope.domains) parts.push(`domains ${scope.domains.join(', ')}`);
  if (scope.towns) parts.push(`towns ${scope.towns.join(', ')}`);
  else if (scope.area) parts.push('an area');
  return parts.join('; ') || 'nothing';
}

export { ScopeError };
