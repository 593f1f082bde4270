import { isUtf8 } from 'node:buffer';
import type pg from 'pg';
import type { Logger } from './log.ts';
import type { Rejection } from '../ingest/readings.ts';
import { describeValue } from '../ingest/telemetry-payload.ts';
import { valueProblem as jsonValueProblem } from '../ingest/json-value.ts';
import type { Json } from '../ingest/readings.ts';
import { MAX_KEY_LENGTH, keyProblem } from '../ingest/validate.ts';

/**
 * Device attributes, ThingsBoard's three scopes:
 *   client  reported by the device (MQTT `v1/devices/me/attributes`); read-only elsewhere;
 *   shared  set through the REST API, pushed to the device, which may also request them;
 *   server  set through the REST API, never seen by the device.
 * A value is any JSON value but null: string, number, boolean, object or array. Unlike ThingsBoard
 * (which turns `"1.10"` into the number 1.1 by default) strings stay strings: attributes carry
 * versions, serial numbers and phone numbers, where such a cast destroys what was sent.
 *
 * Used by the device API (broker/handlers/attributes.ts), the REST API (api/routes/attributes.ts)
 * and whatever else relays attributes (gateways): validate with `parseAttributesPayload` /
 * `validateAttributes`, store with `AttributeService.save` / `remove`, read with `values`,
 * `entries`, `request` and `shadow`; changes are announced to `onChange` listeners after commit
 * (pushing shared changes to devices, live streams).
 */

export type { Json };

export const ATTRIBUTE_SCOPES = ['client', 'shared', 'server'] as const;
export type AttributeScope = (typeof ATTRIBUTE_SCOPES)[number];
export const isAttributeScope = (s: string): s is AttributeScope => (ATTRIBUTE_SCOPES as readonly string[]).includes(s);

/** What an attribute holds: any JSON value but null. */
export type AttributeValue = Exclude<Json, null>;
export type AttributeValues = Record<string, AttributeValue>;

export interface AttributeLimits {
  maxKeyLength: number;
  maxValueBytes: number;
  maxDepth: number;
  maxKeysPerMessage: number;
  maxKeysPerScope: number;
}

export const ATTRIBUTE_LIMITS: Readonly<AttributeLimits> = {
  /** Characters in a key (the telemetry rule). */
  maxKeyLength: MAX_KEY_LENGTH,
  /** Bytes of one value written as JSON. */
  maxValueBytes: 16_384,
  /** Nesting of objects and arrays within one value. */
  maxDepth: 32,
  /** Keys in one message or REST request (set, delete or ask for). */
  maxKeysPerMessage: 1000,
  /** Keys a device may hold in one scope (approximate under concurrent writes to one device). */
  maxKeysPerScope: 1000,
};

/** One stored attribute with the time it was last written (epoch ms). */
export interface AttributeEntry {
  value: AttributeValue;
  ts: number;
}

/** Why a value cannot be an attribute, with the reason to report, or undefined. */
export const valueProblem = (raw: unknown, limits: Readonly<AttributeLimits> = ATTRIBUTE_LIMITS) => jsonValueProblem(raw, limits);

/** A committed change: keys set (with their values) or keys deleted, in one scope of one device. */
export interface AttributeChange {
  deviceId: number;
  scope: AttributeScope;
  updated: AttributeValues;
  deleted: string[];
  /** Epoch ms of the change. */
  ts: number;
}

/**
 * Told of every committed change. Returns true when it sent the change on to the device (a
 * connected device subscribed to attribute updates, or its gateway): REST answers `delivered`.
 */
export type AttributeListener = (change: AttributeChange) => boolean | void;

/** desired (shared) against reported (client); delta: desired keys whose reported value differs or is missing. */
export interface Shadow {
  desired: AttributeValues;
  reported: AttributeValues;
  delta: AttributeValues;
  inSync: boolean;
  /** Latest change of either side (ISO 8601), null when the device has neither. */
  updatedAt: string | null;
}

/** What a device asked for: absent lists mean "not asked"; neither list means everything (ThingsBoard). */
export interface AttributeRequest {
  clientKeys?: string[];
  sharedKeys?: string[];
}

/** ThingsBoard's answer to an attribute request: sections without values are left out. */
export interface AttributeResponse {
  client?: AttributeValues;
  shared?: AttributeValues;
}

export class AttributeError extends Error {
  constructor(
    readonly reason: 'too_many_keys' | 'invalid_value' | 'not_found',
    message: string,
  ) {
    super(message);
  }
}

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Why a string cannot be stored (PostgreSQL's jsonb refuses U+0000 and lone surrogates), or undefined. */
/**
 * Checks a flat object of attribute values. A bad key or value is refused on its own (the rest
 * are kept). `nulls: 'skip'` ignores null values silently (ThingsBoard's device API);
 * `'refuse'` reports them (REST, where DELETE removes a key).
 */
export function validateAttributes(
  sent: Record<string, unknown>,
  options: { nulls: 'skip' | 'refuse' } = { nulls: 'skip' },
  limits: Readonly<AttributeLimits> = ATTRIBUTE_LIMITS,
): { values: AttributeValues; count: number; rejections: Rejection[] } {
  const values: AttributeValues = {};
  const rejections: Rejection[] = [];
  let count = 0;
  const keys = Object.keys(sent);
  if (keys.length > limits.maxKeysPerMessage) {
    return { values, count, rejections: [{ reason: 'too_many_values', detail: `${keys.length} keys in one message; the limit is ${limits.maxKeysPerMessage}` }] };
  }
  for (const key of keys) {
    const raw = sent[key];
    const problem = keyProblem(key);
    if (problem) {
      rejections.push({ reason: 'invalid_key', detail: problem, key: key.slice(0, limits.maxKeyLength) });
      continue;
    }
    if (raw === null && options.nulls === 'skip') continue;
    const bad = valueProblem(raw, limits);
    if (bad) {
      const detail = raw === null ? `${key}: null is not a value (DELETE the key to remove it)` : `${key}: ${bad.detail}`;
      rejections.push({ reason: bad.reason, detail, key });
      continue;
    }
    values[key] = raw as AttributeValue;
    count++;
  }
  return { values, count, rejections };
}

export type ParsedAttributes = { ok: true; values: Record<string, unknown> } | { ok: false; error: Rejection };

/** JSON text (UTF-8) of at most `maxBytes`; the parsed document or why not. */
function parseJson(payload: Buffer, maxBytes: number): { ok: true; doc: unknown } | { ok: false; error: Rejection } {
  if (payload.length > maxBytes) return { ok: false, error: { reason: 'payload_too_large', detail: `payload is ${payload.length} bytes; the limit is ${maxBytes}` } };
  if (!isUtf8(payload)) return { ok: false, error: { reason: 'invalid_json', detail: 'payload is not valid UTF-8 (JSON text must be UTF-8)' } };
  try {
    return { ok: true, doc: JSON.parse(payload.toString('utf8')) };
  } catch (err) {
    return { ok: false, error: { reason: 'invalid_json', detail: `payload is not JSON: ${(err as Error).message}` } };
  }
}

/** A client-attributes message (`v1/devices/me/attributes`): one flat JSON object; an array is invalid (ThingsBoard). */
export function parseAttributesPayload(payload: Buffer, maxBytes: number): ParsedAttributes {
  const parsed = parseJson(payload, maxBytes);
  if (!parsed.ok) return parsed;
  if (!isPlainObject(parsed.doc)) {
    return {
      ok: false,
      error: { reason: 'invalid_shape', detail: `attributes must be one JSON object of key/value pairs, got ${Array.isArray(parsed.doc) ? 'an array' : describeValue(parsed.doc)}` },
    };
  }
  return { ok: true, values: parsed.doc };
}

export type ParsedAttributeRequest = ({ ok: true } & AttributeRequest) | { ok: false; error: Rejection };

/**
 * An attribute request (`v1/devices/me/attributes/request/{id}`): `{"clientKeys": "a,b",
 * "sharedKeys": "c,d"}`, each a comma-separated string (ThingsBoard); a JSON array of strings is
 * accepted too. `{}` (or an empty payload) asks for every client and shared attribute.
 */
export function parseAttributesRequest(payload: Buffer, maxBytes: number, limits: Readonly<AttributeLimits> = ATTRIBUTE_LIMITS): ParsedAttributeRequest {
  if (payload.length === 0) return { ok: true };
  const parsed = parseJson(payload, maxBytes);
  if (!parsed.ok) return parsed;
  const doc = parsed.doc;
  if (!isPlainObject(doc)) {
    return { ok: false, error: { reason: 'invalid_shape', detail: `an attribute request must be a JSON object such as {"clientKeys":"a,b","sharedKeys":"c"}, got ${describeValue(doc)}` } };
  }
  const request: AttributeRequest = {};
  let total = 0;
  for (const field of ['clientKeys', 'sharedKeys'] as const) {
    const raw = doc[field];
    if (raw === undefined || raw === null) continue;
    let keys: string[];
    if (typeof raw === 'string') keys = raw.split(',');
    else if (Array.isArray(raw) && raw.every((k) => typeof k === 'string')) keys = raw as string[];
    else return { ok: false, error: { reason: 'invalid_shape', detail: `${field} must be a comma-separated string of keys, got ${describeValue(raw)}` } };
    request[field] = [...new Set(keys.map((k) => k.trim()).filter((k) => k.length > 0))];
    total += request[field].length;
  }
  if (total > limits.maxKeysPerMessage) return { ok: false, error: { reason: 'too_many_values', detail: `${total} keys asked for; the limit is ${limits.maxKeysPerMessage}` } };
  return { ok: true, ...request };
}

/** Splits `a,b` (REST query) into distinct trimmed keys; undefined stays undefined. */
export function splitKeys(raw: string | undefined): string[] | undefined {
  return raw === undefined ? undefined : [...new Set(raw.split(',').map((k) => k.trim()).filter((k) => k.length > 0))];
}

/**
 * What a device receives when its shared attributes change (ThingsBoard's update notification):
 * the keys set with their values, or `{"deleted": [keys]}`. A gateway wraps it as `data`.
 */
export function attributeUpdateMessage(change: AttributeChange): Record<string, Json> {
  const message: Record<string, Json> = { ...change.updated };
  if (change.deleted.length > 0) message.deleted = change.deleted;
  return message;
}

/** Whether two stored values are equal (both read from jsonb, so object keys come in the same order). */
const sameValue = (a: AttributeValue, b: AttributeValue): boolean => a === b || JSON.stringify(a) === JSON.stringify(b);

interface Row {
  scope: AttributeScope;
  key: string;
  value: AttributeValue;
  updated_at: Date;
}

/** Storage of device attributes (`device_attributes`) and the announcements of their changes. */
export class AttributeService {
  private listeners: AttributeListener[] = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly log?: Logger,
    private readonly limits: Readonly<AttributeLimits> = ATTRIBUTE_LIMITS,
  ) {}

  /** Called after each committed change, in commit order per call site. */
  onChange(listener: AttributeListener): void {
    this.listeners.push(listener);
  }

  /**
   * Client attributes a device (or a gateway for it) reported: validated (nulls skipped, as
   * ThingsBoard does), the valid ones stored. Returns how many were stored and every refusal
   * (`empty` when nothing was sent); a missing device still throws.
   */
  async saveReported(deviceId: number, sent: Record<string, unknown>): Promise<{ stored: number; rejections: Rejection[] }> {
    const checked = validateAttributes(sent, { nulls: 'skip' });
    const rejections = [...checked.rejections];
    if (checked.count === 0) {
      if (rejections.length === 0) rejections.push({ reason: 'empty', detail: 'no attribute values to store' });
      return { stored: 0, rejections };
    }
    try {
      await this.save(deviceId, 'client', checked.values);
      return { stored: checked.count, rejections };
    } catch (err) {
      if (!(err instanceof AttributeError) || err.reason === 'not_found') throw err;
      return { stored: 0, rejections: [...rejections, { reason: err.reason, detail: err.message }] };
    }
  }

  /**
   * Sets (merges) keys in one scope of a device; validate first (`validateAttributes`). Resolves
   * after commit, once listeners were told; `delivered` is true when one sent it on to the device.
   * Throws AttributeError: `too_many_keys` (the scope would exceed its limit; nothing is stored),
   * `not_found` (no such device), `invalid_value` (refused by the database).
   */
  async save(deviceId: number, scope: AttributeScope, values: AttributeValues): Promise<{ ts: number; delivered: boolean }> {
    const keys = Object.keys(values);
    const ts = Date.now();
    if (keys.length === 0) return { ts, delivered: false };
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      await client.query(
        `INSERT INTO device_attributes (device_id, scope, key, value, updated_at)
         SELECT $1, $2, e.key, e.value, $4 FROM jsonb_each($3::jsonb) AS e
         ON CONFLICT (device_id, scope, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`,
        [deviceId, scope, JSON.stringify(values), new Date(ts)],
      );
      const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM device_attributes WHERE device_id = $1 AND scope = $2', [deviceId, scope]);
      if (rows[0]!.n > this.limits.maxKeysPerScope) {
        await client.query('ROLLBACK');
        throw new AttributeError('too_many_keys', `device ${deviceId} would hold ${rows[0]!.n} ${scope} attributes; the limit is ${this.limits.maxKeysPerScope} (delete some first)`);
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      if (err instanceof AttributeError) throw err;
      const code = (err as { code?: string }).code;
      if (code === '23503') throw new AttributeError('not_found', `no device ${deviceId}`);
      if (code?.startsWith('22')) throw new AttributeError('invalid_value', `refused by the database: ${(err as Error).message}`);
      throw err;
    } finally {
      client.release();
    }
    return { ts, delivered: this.emit({ deviceId, scope, updated: values, deleted: [], ts }) };
  }

  /** Deletes keys from one scope; resolves with the keys that existed (announced to listeners). */
  async remove(deviceId: number, scope: AttributeScope, keys: string[]): Promise<{ deleted: string[]; delivered: boolean }> {
    if (keys.length === 0) return { deleted: [], delivered: false };
    const { rows } = await this.pool.query<{ key: string }>(
      'DELETE FROM device_attributes WHERE device_id = $1 AND scope = $2 AND key = ANY($3::text[]) RETURNING key',
      [deviceId, scope, keys],
    );
    const existed = new Set(rows.map((r) => r.key));
    const deleted = keys.filter((k) => existed.has(k)); // in the order asked for
    if (deleted.length === 0) return { deleted, delivered: false };
    return { deleted, delivered: this.emit({ deviceId, scope, updated: {}, deleted, ts: Date.now() }) };
  }

  /** Stored attributes with their times, by scope (every scope asked for is present, maybe empty). */
  async entries(deviceId: number, scopes: readonly AttributeScope[] = ATTRIBUTE_SCOPES, keys?: string[]): Promise<Partial<Record<AttributeScope, Record<string, AttributeEntry>>>> {
    const result: Partial<Record<AttributeScope, Record<string, AttributeEntry>>> = {};
    for (const scope of scopes) result[scope] = {};
    const { rows } = await this.pool.query<Row>(
      `SELECT scope, key, value, updated_at FROM device_attributes
        WHERE device_id = $1 AND scope = ANY($2::text[]) AND ($3::text[] IS NULL OR key = ANY($3::text[]))
        ORDER BY scope, key`,
      [deviceId, scopes, keys ?? null],
    );
    for (const r of rows) result[r.scope]![r.key] = { value: r.value, ts: r.updated_at.getTime() };
    return result;
  }

  /** Values of one scope (all, or the keys given that exist). */
  async values(deviceId: number, scope: AttributeScope, keys?: string[]): Promise<AttributeValues> {
    const entries = (await this.entries(deviceId, [scope], keys))[scope]!;
    return Object.fromEntries(Object.entries(entries).map(([k, e]) => [k, e.value]));
  }

  /**
   * A device's attribute request, answered the way ThingsBoard does: neither list → every client
   * and shared attribute; otherwise the keys of each list given (a scope not asked for is not
   * read). Sections with no values are left out, so the answer may be `{}`.
   */
  async request(deviceId: number, request: AttributeRequest): Promise<AttributeResponse> {
    const all = request.clientKeys === undefined && request.sharedKeys === undefined;
    const wants = (keys: string[] | undefined) => (all ? null : keys ?? []);
    const client = wants(request.clientKeys);
    const shared = wants(request.sharedKeys);
    const { rows } = await this.pool.query<Row>(
      `SELECT scope, key, value FROM device_attributes
        WHERE device_id = $1
          AND ((scope = 'client' AND ($2::text[] IS NULL OR key = ANY($2::text[])))
            OR (scope = 'shared' AND ($3::text[] IS NULL OR key = ANY($3::text[]))))
        ORDER BY scope, key`,
      [deviceId, client, shared],
    );
    const response: AttributeResponse = {};
    for (const r of rows) {
      const section = r.scope as 'client' | 'shared';
      (response[section] ??= {})[r.key] = r.value;
    }
    return response;
  }

  /** The device's shadow: desired (shared) against reported (client) state, and their delta. */
  async shadow(deviceId: number): Promise<Shadow> {
    const { rows } = await this.pool.query<Row>(
      `SELECT scope, key, value, updated_at FROM device_attributes WHERE device_id = $1 AND scope IN ('client', 'shared') ORDER BY key`,
      [deviceId],
    );
    const desired: AttributeValues = {};
    const reported: AttributeValues = {};
    let latest = 0;
    for (const r of rows) {
      (r.scope === 'shared' ? desired : reported)[r.key] = r.value;
      latest = Math.max(latest, r.updated_at.getTime());
    }
    const delta: AttributeValues = {};
    for (const [key, value] of Object.entries(desired)) {
      if (!Object.hasOwn(reported, key) || !sameValue(reported[key]!, value)) delta[key] = value;
    }
    return { desired, reported, delta, inSync: Object.keys(delta).length === 0, updatedAt: latest === 0 ? null : new Date(latest).toISOString() };
  }

  private emit(change: AttributeChange): boolean {
    let delivered = false;
    for (const listener of this.listeners) {
      try {
        if (listener(change) === true) delivered = true;
      } catch (err) {
        this.log?.warn({ err, device: change.deviceId, scope: change.scope }, 'attribute change listener failed');
      }
    }
    return delivered;
  }
}
