import { createHash, randomBytes } from 'node:crypto';
import type pg from 'pg';
import type { ScopeInput } from './scope.ts';
import { NegativeCache, noAuthWork, type Admission, type AuthWorkCounters } from '../auth-throttle.ts';

/** An API key as stored (never the key itself). */
export interface ApiKey {
  id: number;
  name: string;
  owner: string;
  roles: string[];
  scope: ScopeInput;
  /** The key's first characters (`glk_AbCd…`), to tell keys apart. */
  prefix: string;
  createdBy: string | null;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  rotatedAt: string | null;
  lastUsedAt: string | null;
  /** The key's own request rate limit (`1200/min`, `off`); null: its roles' limits (RATE_LIMITS). */
  rateLimit: string | null;
}

export type ApiKeyChange = { kind: 'created' | 'updated' | 'rotated' | 'revoked'; key: ApiKey };

/**
 * Why a presented key is refused (HTTP 401; `throttled`: 429, refused unchecked), or the key.
 * `unknown` and `malformed` are guesses (throttled); `revoked` and `expired` keys were real.
 */
export type KeyCheck =
  | { ok: true; key: ApiKey }
  | { ok: false; code: 'malformed' | 'unknown' | 'revoked' | 'expired'; reason: string }
  | { ok: false; code: 'throttled'; reason: string; admission: Extract<Admission, { ok: false }> };

const PREFIX = 'glk_';
/** `glk_` and 43 base64url characters: 256 random bits. */
export const API_KEY_PATTERN = /^glk_[A-Za-z0-9_-]{43}$/;

const hashOf = (secret: string): Buffer => createHash('sha256').update(secret).digest();

interface KeyRow {
  id: number;
  name: string;
  owner: string;
  roles: string[];
  scope: ScopeInput;
  key_prefix: string;
  created_by: string | null;
  created_at: Date;
  expires_at: Date | null;
  revoked_at: Date | null;
  rotated_at: Date | null;
  last_used_at: Date | null;
  rate_limit: string | null;
}
const COLUMNS = 'id, name, owner, roles, scope, key_prefix, created_by, created_at, expires_at, revoked_at, rotated_at, last_used_at, rate_limit';
const iso = (d: Date | null) => (d ? d.toISOString() : null);
const toKey = (r: KeyRow): ApiKey => ({
  id: r.id,
  name: r.name,
  owner: r.owner,
  roles: r.roles,
  scope: r.scope,
  prefix: r.key_prefix,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  expiresAt: iso(r.expires_at),
  revokedAt: iso(r.revoked_at),
  rotatedAt: iso(r.rotated_at),
  lastUsedAt: iso(r.last_used_at),
  rateLimit: r.rate_limit,
});

/**
 * API keys (table `api_keys`): created, listed, rotated, revoked and expired by admins. A key is
 * shown once; only its SHA-256 is stored. Lookups are cached for `cacheMs` (a change made here
 * takes effect at once; one made on another node within `cacheMs`); an unknown key is remembered
 * as unknown for `negativeCacheMs` (a key created or rotated here is never refused for it); last
 * use is written at most once a minute per key.
 */
export class ApiKeyStore {
  private cache = new Map<string, { at: number; row: KeyRow }>();
  /** Hashes of keys that passed check() → key id: they skip the throttle's gate (`admit`). */
  private known = new Map<string, number>();
  private readonly unknown: NegativeCache;
  private readonly work: AuthWorkCounters;
  private used = new Map<number, Date>();
  private listeners: ((change: ApiKeyChange) => void)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly cacheMs = 5_000,
    options: { work?: AuthWorkCounters; negativeCacheMs?: number } = {},
  ) {
    this.work = options.work ?? noAuthWork;
    this.unknown = new NegativeCache(options.negativeCacheMs ?? 30_000);
  }

  start(): void {
    this.timer = setInterval(() => void this.flushUsed(), 60_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.flushUsed();
  }

  onChange(listener: (change: ApiKeyChange) => void): void {
    this.listeners.push(listener);
  }

  private changed(kind: ApiKeyChange['kind'], row: KeyRow): ApiKey {
    for (const [hash, entry] of this.cache) if (entry.row.id === row.id) this.cache.delete(hash);
    for (const [hash, id] of this.known) if (id === row.id) this.known.delete(hash);
    const key = toKey(row);
    for (const l of this.listeners) l({ kind, key });
    return key;
  }

  /**
   * Checks a presented key: unknown, revoked and expired keys are refused with the reason. A key
   * that has not passed here before is first put to `options.admit` (the throttle's gate), then
   * answered from the negative cache or looked up.
   */
  async check(secret: string, now = Date.now(), options: { admit?: () => Admission } = {}): Promise<KeyCheck> {
    if (!API_KEY_PATTERN.test(secret)) return { ok: false, code: 'malformed', reason: 'malformed API key (expected glk_ and 43 characters)' };
    const hash = hashOf(secret);
    const cacheKey = hash.toString('hex');
    if (!this.known.has(cacheKey)) {
      const admission = options.admit?.();
      if (admission && !admission.ok) return { ok: false, code: 'throttled', reason: 'too many failed attempts', admission };
      if (this.unknown.has(cacheKey)) return { ok: false, code: 'unknown', reason: 'unknown API key' };
    }
    let entry = this.cache.get(cacheKey);
    if (!entry || now - entry.at > this.cacheMs) {
      this.work.lookup('api_keys');
      const { rows } = await this.pool.query<KeyRow>(`SELECT ${COLUMNS} FROM api_keys WHERE key_hash = $1`, [hash]);
      if (!rows[0]) {
        this.cache.delete(cacheKey);
        this.known.delete(cacheKey);
        this.unknown.add(cacheKey);
        return { ok: false, code: 'unknown', reason: 'unknown API key' };
      }
      entry = { at: now, row: rows[0] };
      bounded(this.cache, cacheKey, entry);
    }
    const row = entry.row;
    if (row.revoked_at) return { ok: false, code: 'revoked', reason: `API key "${row.name}" was revoked at ${row.revoked_at.toISOString()}` };
    if (row.expires_at && row.expires_at.getTime() <= now) return { ok: false, code: 'expired', reason: `API key "${row.name}" expired at ${row.expires_at.toISOString()}` };
    bounded(this.known, cacheKey, row.id);
    this.used.set(row.id, new Date(now));
    return { ok: true, key: toKey(row) };
  }

  private async flushUsed(): Promise<void> {
    if (this.used.size === 0) return;
    const batch = [...this.used];
    this.used = new Map();
    await this.pool
      .query(
        `UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.at) FROM unnest($1::int[], $2::timestamptz[]) AS u (id, at) WHERE k.id = u.id`,
        [batch.map(([id]) => id), batch.map(([, at]) => at)],
      )
      .catch(() => {});
  }

  async create(input: { name: string; owner: string; roles: string[]; scope: ScopeInput; expiresAt: Date | null; createdBy: string; rateLimit?: string | null }): Promise<{ key: ApiKey; secret: string }> {
    const secret = PREFIX + randomBytes(32).toString('base64url');
    const { rows } = await this.pool.query<KeyRow>(
      `INSERT INTO api_keys (name, owner, roles, scope, key_hash, key_prefix, created_by, expires_at, rate_limit) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${COLUMNS}`,
      [input.name, input.owner, input.roles, JSON.stringify(input.scope), hashOf(secret), secret.slice(0, 10), input.createdBy, input.expiresAt, input.rateLimit ?? null],
    );
    this.unknown.forget(hashOf(secret).toString('hex'));
    return { key: this.changed('created', rows[0]!), secret };
  }

  async get(id: number): Promise<ApiKey | undefined> {
    const { rows } = await this.pool.query<KeyRow>(`SELECT ${COLUMNS} FROM api_keys WHERE id = $1`, [id]);
    return rows[0] && toKey(rows[0]);
  }

  /** Keys in id order after `afterId`; revoked keys only when asked. */
  async list(options: { owner?: string; role?: string; includeRevoked?: boolean; limit: number; afterId?: number }): Promise<ApiKey[]> {
    const params: unknown[] = [options.afterId ?? 0, options.limit];
    const where = ['id > $1'];
    if (!options.includeRevoked) where.push('revoked_at IS NULL');
    if (options.owner !== undefined) where.push(`owner = $${params.push(options.owner)}`);
    if (options.role !== undefined) where.push(`$${params.push(options.role)} = ANY (roles)`);
    const { rows } = await this.pool.query<KeyRow>(`SELECT ${COLUMNS} FROM api_keys WHERE ${where.join(' AND ')} ORDER BY id LIMIT $2`, params);
    return rows.map(toKey);
  }

  /** Changes a key's description, roles, scope or expiry; undefined fields are kept. */
  async update(id: number, input: { name?: string; owner?: string; roles?: string[]; scope?: ScopeInput; expiresAt?: Date | null; rateLimit?: string | null }): Promise<ApiKey | undefined> {
    const { rows } = await this.pool.query<KeyRow>(
      `UPDATE api_keys SET name = coalesce($2, name), owner = coalesce($3, owner), roles = coalesce($4, roles), scope = coalesce($5::jsonb, scope),
              expires_at = CASE WHEN $6 THEN $7::timestamptz ELSE expires_at END, rate_limit = CASE WHEN $8 THEN $9::text ELSE rate_limit END
        WHERE id = $1 AND revoked_at IS NULL RETURNING ${COLUMNS}`,
      [id, input.name ?? null, input.owner ?? null, input.roles ?? null, input.scope ? JSON.stringify(input.scope) : null, input.expiresAt !== undefined, input.expiresAt ?? null, input.rateLimit !== undefined, input.rateLimit ?? null],
    );
    return rows[0] && this.changed('updated', rows[0]);
  }

  /** A new secret for the key; the old one stops working at once. */
  async rotate(id: number): Promise<{ key: ApiKey; secret: string } | undefined> {
    const secret = PREFIX + randomBytes(32).toString('base64url');
    const { rows } = await this.pool.query<KeyRow>(
      `UPDATE api_keys SET key_hash = $2, key_prefix = $3, rotated_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING ${COLUMNS}`,
      [id, hashOf(secret), secret.slice(0, 10)],
    );
    this.unknown.forget(hashOf(secret).toString('hex'));
    return rows[0] && { key: this.changed('rotated', rows[0]), secret };
  }

  async revoke(id: number): Promise<ApiKey | undefined> {
    const { rows } = await this.pool.query<KeyRow>(`UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING ${COLUMNS}`, [id]);
    return rows[0] && this.changed('revoked', rows[0]);
  }

  /** Keys (not revoked) holding the role. */
  async countWithRole(role: string): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM api_keys WHERE revoked_at IS NULL AND $1 = ANY (roles)', [role]);
    return rows[0]!.n;
  }
}

/** Sets a map entry as the most recent, dropping the oldest beyond 10 000. */
function bounded<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  if (map.size > 10_000) map.delete(map.keys().next().value!);
}
