import type pg from 'pg';
import type { Principal } from './access/principal.ts';
import type { Logger } from './log.ts';

/**
 * The audit log (table `audit_log`, migrations/014_audit.sql): who did what, with what result,
 * when and from where — every authenticated REST request and every refused attempt (api/audit.ts),
 * every live-stream subscription (api/live), MQTT application sessions.
 *
 * `record` is synchronous and cheap: entries are buffered and written in batches (one INSERT …
 * SELECT FROM unnest per flush, every `flushMs` or `batchSize` entries). The buffer is bounded:
 * while the database is unavailable the oldest entries are dropped and counted (`dropped`).
 *
 * Secrets never enter it: callers pass essentials parsed from a request (`essentialsOf`), never a
 * header, query string or body; strings that look like credentials are masked on the way in.
 */

export type AuditKind = 'http' | 'stream' | 'mqtt';

/** What a request asked for, in brief: never the whole request. */
export type Essentials = Record<string, unknown>;

export interface AuditEntry {
  kind: AuditKind;
  /** Who; null: not authenticated (a refused attempt). */
  principal: Principal | null;
  /** The route pattern (`/api/v1/devices/:id`), or for a stream `subscribe`. */
  route: string;
  /** HTTP status, or for streams 200 accepted / 401, 403, 404 refused. */
  status: number;
  /** When it started (ms since epoch or a Date); default now. */
  at?: number | Date;
  method?: string | null;
  deviceId?: number | null;
  essentials?: Essentials;
  /** Why it was refused or cut short. */
  reason?: string | null;
  rows?: number | null;
  bytes?: number | null;
  durationMs?: number | null;
  sourceIp?: string | null;
  userAgent?: string | null;
}

export interface AuditLogOptions {
  pool: pg.Pool;
  log: Logger;
  /** How often the buffer is written (default 1000 ms). */
  flushMs?: number;
  /** Entries per INSERT; a full batch is written at once (default 500). */
  batchSize?: number;
  /** Entries held at most while the database does not take them (default 50 000); beyond it the oldest are dropped. */
  maxBuffered?: number;
  /** Exact strings never to be written (the bootstrap admin key). */
  secrets?: readonly string[];
}

/** One row, in column order. */
type Row = [
  at: string,
  principal: string | null,
  principalName: string | null,
  owner: string | null,
  roles: string,
  kind: AuditKind,
  method: string | null,
  route: string,
  deviceId: number | null,
  essentials: string,
  status: number,
  reason: string | null,
  rows: number | null,
  bytes: number | null,
  durationMs: number | null,
  sourceIp: string | null,
  userAgent: string | null,
];

const CAST = ['timestamptz', 'text', 'text', 'text', 'jsonb', 'text', 'text', 'text', 'int4', 'jsonb', 'int4', 'text', 'int4', 'int8', 'float4', 'text', 'text'];
const NAMES = 'at, principal, principal_name, owner, roles, kind, method, route, device_id, essentials, status, reason, rows, bytes, duration_ms, source_ip, user_agent';
const INSERT =
  `INSERT INTO audit_log (${NAMES}) ` +
  `SELECT u.at, u.principal, u.principal_name, u.owner, ARRAY(SELECT jsonb_array_elements_text(u.roles)), u.kind, u.method, u.route, u.device_id, u.essentials, ` +
  `u.status, u.reason, u.rows, u.bytes, u.duration_ms, u.source_ip, u.user_agent ` +
  `FROM unnest(${CAST.map((t, i) => `$${i + 1}::${t}[]`).join(', ')}) AS u (${NAMES})`;

/** An API key anywhere in a text, a bearer JWT. */
const CREDENTIAL = /glk_[A-Za-z0-9_-]{4,}|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g;
const HAS_CREDENTIAL = new RegExp(CREDENTIAL.source);

/** `text` with anything that looks like a credential masked, at most `max` characters. */
export function scrub(text: string, max = 500, secrets: readonly string[] = []): string {
  let out = text.length > max ? `${text.slice(0, max)}…` : text;
  out = out.replace(CREDENTIAL, (m) => (m.startsWith('glk_') ? 'glk_…' : '<token>'));
  for (const s of secrets) if (s.length >= 8 && out.includes(s)) out = out.replaceAll(s, '<secret>');
  return out;
}

const finiteOrNull = (n: number | null | undefined): number | null => (typeof n === 'number' && Number.isFinite(n) ? n : null);

export class AuditLog {
  private buffer: Row[] = [];
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private failing = false;
  private readonly flushMs: number;
  private readonly batchSize: number;
  private readonly maxBuffered: number;
  private readonly secrets: readonly string[];
  /** Entries dropped because the buffer was full (since start). */
  dropped = 0;
  /** Entries written (since start). */
  written = 0;

  constructor(private readonly opts: AuditLogOptions) {
    this.flushMs = opts.flushMs ?? 1000;
    this.batchSize = opts.batchSize ?? 500;
    this.maxBuffered = opts.maxBuffered ?? 50_000;
    this.secrets = opts.secrets ?? [];
  }

  /** Entries waiting to be written. */
  get buffered(): number {
    return this.buffer.length;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.flushMs);
    this.timer.unref();
  }

  /** Writes what is buffered (waits for a write in progress first). */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    // Until empty, or until a write fails (the database is gone: what is left is lost).
    for (let before = Infinity; this.buffer.length > 0 && this.buffer.length < before; ) {
      before = this.buffer.length;
      await this.flush();
    }
    await this.flushing;
  }

  /** Buffers one entry (never throws, never waits). */
  record(entry: AuditEntry): void {
    const p = entry.principal;
    const at = entry.at === undefined ? new Date() : new Date(entry.at);
    const essentials = JSON.stringify(entry.essentials ?? {});
    this.buffer.push([
      Number.isNaN(at.getTime()) ? new Date().toISOString() : at.toISOString(),
      p ? p.id : null,
      p ? this.clean(p.name, 200) : null,
      p ? this.clean(p.owner, 200) : null,
      JSON.stringify(p ? [...p.roles] : []),
      entry.kind,
      entry.method ?? null,
      this.clean(entry.route, 300)!,
      finiteOrNull(entry.deviceId),
      this.secrets.some((s) => s.length >= 8 && essentials.includes(s)) || HAS_CREDENTIAL.test(essentials) ? JSON.stringify({ redacted: true }) : essentials,
      entry.status,
      this.clean(entry.reason, 500),
      finiteOrNull(entry.rows),
      finiteOrNull(entry.bytes),
      finiteOrNull(entry.durationMs),
      this.clean(entry.sourceIp, 100),
      this.clean(entry.userAgent, 300),
    ]);
    if (this.buffer.length > this.maxBuffered) {
      const excess = this.buffer.length - this.maxBuffered;
      this.buffer.splice(0, excess);
      this.dropped += excess;
    }
    if (this.buffer.length >= this.batchSize && !this.flushing && !this.failing) void this.flush();
  }

  private clean(text: string | null | undefined, max: number): string | null {
    return text === null || text === undefined ? null : scrub(text, max, this.secrets);
  }

  /** Writes the buffer a batch at a time; on failure the batch goes back (oldest first) and is retried at the next tick. */
  flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.buffer.length === 0) return Promise.resolve();
    this.flushing = (async () => {
      try {
        while (this.buffer.length > 0) {
          const batch = this.buffer.splice(0, this.batchSize);
          try {
            await this.opts.pool.query(INSERT, CAST.map((_, i) => batch.map((row) => row[i])));
            this.written += batch.length;
            if (this.failing) this.opts.log.info({ buffered: this.buffer.length, dropped: this.dropped }, 'audit log: writing again');
            this.failing = false;
          } catch (err) {
            this.buffer.unshift(...batch);
            if (this.buffer.length > this.maxBuffered) {
              const excess = this.buffer.length - this.maxBuffered;
              this.buffer.splice(0, excess);
              this.dropped += excess;
            }
            if (!this.failing) this.opts.log.warn({ err: (err as Error).message, buffered: this.buffer.length }, 'audit log: entries not written; kept in memory and retried');
            this.failing = true;
            return;
          }
        }
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }
}

// ---------------------------------------------------------------------------------------------
// Essentials: what a request asked for, from its parsed query and body — never the whole of it.

const MAX_TEXT = 100;
const MAX_ITEMS = 50;

const text = (v: unknown): string | undefined =>
  typeof v === 'string' ? scrub(v, MAX_TEXT) : typeof v === 'number' || typeof v === 'boolean' ? String(v) : undefined;

/** A list given as an array or comma-separated text, at most MAX_ITEMS items. */
function list(v: unknown): string[] | undefined {
  const items = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : undefined;
  if (!items) return undefined;
  const out = items.map(text).filter((s): s is string => s !== undefined && s.trim() !== '').map((s) => s.trim());
  if (out.length > MAX_ITEMS) return [...out.slice(0, MAX_ITEMS), `…${out.length - MAX_ITEMS} more`];
  return out;
}

function numbers(v: unknown): number[] | undefined {
  const items = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',').map((s) => (s.trim() === '' ? NaN : Number(s))) : undefined;
  if (!items || !items.every((n) => typeof n === 'number' && Number.isFinite(n))) return undefined;
  return items as number[];
}

const round6 = (n: number) => Math.round(n * 1e6) / 1e6;

/** A polygon's size and extent: its number of vertices and bounding box, not its coordinates. */
function polygonSummary(raw: unknown): Essentials {
  let geometry = raw;
  if (typeof geometry === 'string') {
    try {
      geometry = JSON.parse(geometry);
    } catch {
      return { kind: 'polygon', invalid: true };
    }
  }
  if (geometry && typeof geometry === 'object' && (geometry as { type?: unknown }).type === 'Feature') geometry = (geometry as { geometry?: unknown }).geometry;
  const g = geometry as { type?: unknown; coordinates?: unknown } | null;
  const type = g && typeof g === 'object' ? g.type : undefined;
  const depth = type === 'Polygon' ? 2 : type === 'MultiPolygon' ? 3 : undefined;
  if (depth === undefined) return { kind: 'polygon', invalid: true };
  let vertices = 0;
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  let ok = true;
  const walk = (node: unknown, level: number): void => {
    if (!Array.isArray(node)) {
      ok = false;
      return;
    }
    if (level === 0) {
      const [lng, lat] = node;
      if (typeof lng !== 'number' || typeof lat !== 'number' || !Number.isFinite(lng) || !Number.isFinite(lat)) {
        ok = false;
        return;
      }
      vertices++;
      box[0] = Math.min(box[0]!, lng);
      box[1] = Math.min(box[1]!, lat);
      box[2] = Math.max(box[2]!, lng);
      box[3] = Math.max(box[3]!, lat);
      return;
    }
    for (const child of node) walk(child, level - 1);
  };
  walk(g!.coordinates, depth);
  if (!ok || vertices === 0) return { kind: 'polygon', invalid: true };
  const out: Essentials = { kind: type === 'Polygon' ? 'polygon' : 'multipolygon', vertices, bbox: box.map(round6) };
  if (type === 'MultiPolygon') out.polygons = (g!.coordinates as unknown[]).length;
  return out;
}

/** The area a request names (spatial selections, the device list's bbox): its kind and extent. */
function areaOf(f: Record<string, unknown>): Essentials | undefined {
  if (f.geometry !== undefined) return polygonSummary(f.geometry);
  if (f.bbox !== undefined) {
    const box = numbers(f.bbox);
    return box && box.length === 4 ? { kind: 'bbox', bbox: box.map(round6) } : { kind: 'bbox', invalid: true };
  }
  if (f.cells !== undefined) {
    return { kind: 'cells', cells: Array.isArray(f.cells) ? f.cells.length : typeof f.cells === 'string' ? f.cells.split(',').filter((c) => c.trim() !== '').length : 0 };
  }
  if (f.radius !== undefined || (f.lat !== undefined && f.lng !== undefined)) {
    const [lat, lng, radius] = [f.lat, f.lng, f.radius].map((v) => (typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN));
    return { kind: 'circle', centre: [lng, lat].map((n) => (Number.isFinite(n!) ? round6(n!) : null)), radius: Number.isFinite(radius!) ? radius : null };
  }
  return undefined;
}

const asObject = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});

/**
 * The essentials of a request, from its parsed query string and JSON body (body fields win): the
 * area (kind and extent — a polygon's vertex count and bounding box, never its coordinates), the
 * time window, telemetry keys, domains, device types, format, limit and a few other parameters
 * named below. Nothing else is taken: not names, not credentials, not values written.
 */
export function essentialsOf(routeUrl: string, query: unknown, body: unknown): Essentials {
  const f = { ...asObject(query), ...asObject(body) };
  const out: Essentials = {};
  const area = areaOf(f);
  if (area) out.area = area;
  const from = text(f.from);
  const to = text(f.to);
  if (from !== undefined || to !== undefined) out.window = { ...(from !== undefined ? { from } : {}), ...(to !== undefined ? { to } : {}) };
  const keys = list(f.keys);
  if (keys) out.keys = keys;
  // The aggregate's one key is a telemetry key; elsewhere `key` may be something else.
  if (routeUrl.startsWith('/api/v1/spatial/aggregate') && text(f.key) !== undefined) out.keys = [text(f.key)!];
  const domains = list(f.domain) ?? list(f.domains);
  if (domains) out.domains = domains;
  const types = list(f.type) ?? list(f.types) ?? list(f.deviceType);
  if (types) out.types = types;
  for (const name of ['format', 'interval', 'agg', 'source', 'resolution', 'simplify', 'limit', 'kind', 'status', 'severity'] as const) {
    const v = text(f[name]);
    if (v !== undefined) out[name] = typeof f[name] === 'number' ? f[name] : v;
  }
  const stats = list(f.stats);
  if (stats) out.stats = stats;
  if (typeof f.device === 'number' || (typeof f.device === 'string' && /^\d{1,10}$/.test(f.device))) out.device = Number(f.device);
  if (f.cursor !== undefined || f.before !== undefined) out.page = 'next';
  return out;
}
