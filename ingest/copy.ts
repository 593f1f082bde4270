import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';
import type { Domain } from '../core/domains.ts';
import type { KeyDictionary } from '../db/keys.ts';
import type { NonNumericValue, Reading } from './readings.ts';

/** Columns written for each reading, in COPY order. */
export const READING_COLUMNS = '(device_id, ts, cell, lat, lng, alt, keys, vals, jvals)';

/**
 * Writes readings into a readings table (or the staging table) with one binary COPY. Binary,
 * not text: no number is formatted in Node or parsed by PostgreSQL, and the batch is one Buffer.
 */
export async function copyReadings(client: pg.ClientBase, table: string, rows: readonly Reading[], dictionary: Pick<KeyDictionary, 'id'>): Promise<void> {
  const stream = client.query(copyStreams.from(`COPY ${table} ${READING_COLUMNS} FROM STDIN WITH (FORMAT binary)`));
  await pipeline(Readable.from([encodeCopyBinary(rows, dictionary)]), stream);
}

const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const FIELDS = 9;
const JSONB_VERSION = 1;
const INT2_OID = 21;
const FLOAT8_OID = 701;
const PG_EPOCH_MS = Date.UTC(2000, 0, 1);
const TWO_32 = 2 ** 32;

// Scratch space reused for every row: the encoder runs per reading on the hot path.
const ids: number[] = [];
const vals: number[] = [];
const jsonTexts: (Buffer | undefined)[] = [];

/**
 * PostgreSQL's binary COPY format for READING_COLUMNS: int4, timestamptz (µs since 2000),
 * int8, float8, float8, float4, int2[] and float8[] (key ids ascending, values alongside), and
 * jsonb (the values that are not numbers, keyed by key id; NULL when there are none).
 * Every key must already have an id.
 */
export function encodeCopyBinary(rows: readonly Reading[], dictionary: Pick<KeyDictionary, 'id'>): Buffer {
  let size = SIGNATURE.length + 8 + 2;
  jsonTexts.length = rows.length;
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    let n = 0;
    for (const _ in r.values) n++;
    const json = r.jsonValues && jsonText(r.jsonValues, dictionary);
    jsonTexts[i] = json;
    size += json ? 4 + 1 + json.length : 4;
    // field count; device, ts, cell, lat, lng, alt (length + value or -1); two arrays
    size += 2 + 8 + 12 + (r.cell === undefined ? 4 : 12) + (r.lat === undefined ? 4 : 12) + (r.lng === undefined ? 4 : 12) + (r.alt === undefined ? 4 : 8);
    size += 2 * (4 + 12 + (n > 0 ? 8 : 0)) + n * (6 + 12);
  }
  const buf = Buffer.allocUnsafe(size);
  let o = SIGNATURE.copy(buf, 0);
  o = buf.writeInt32BE(0, o); // flags
  o = buf.writeInt32BE(0, o); // header extension
  for (let row = 0; row < rows.length; row++) {
    const r = rows[row]!;
    ids.length = 0;
    vals.length = 0;
    let sorted = true;
    for (const key in r.values) {
      const id = dictionary.id(key);
      if (id === undefined) throw new Error(`telemetry key "${key}" has no id yet`);
      if (ids.length > 0 && id < ids[ids.length - 1]!) sorted = false;
      ids.push(id);
      vals.push(r.values[key]!);
    }
    if (!sorted) sortPairs();
    o = buf.writeInt16BE(FIELDS, o);
    o = buf.writeInt32BE(4, o);
    o = buf.writeInt32BE(r.deviceId, o);
    const micros = (r.ts - PG_EPOCH_MS) * 1000;
    const hi = Math.floor(micros / TWO_32);
    o = buf.writeInt32BE(8, o);
    o = buf.writeInt32BE(hi, o);
    o = buf.writeUInt32BE(micros - hi * TWO_32, o);
    if (r.cell === undefined) o = buf.writeInt32BE(-1, o);
    else {
      o = buf.writeInt32BE(8, o);
      o = buf.writeBigInt64BE(r.cell, o);
    }
    o = float8(buf, o, r.lat);
    o = float8(buf, o, r.lng);
    if (r.alt === undefined) o = buf.writeInt32BE(-1, o);
    else {
      o = buf.writeInt32BE(4, o);
      o = buf.writeFloatBE(r.alt, o);
    }
    const n = ids.length;
    o = arrayHeader(buf, o, n, 6, INT2_OID);
    for (let i = 0; i < n; i++) {
      o = buf.writeInt32BE(2, o);
      o = buf.writeInt16BE(ids[i]!, o);
    }
    o = arrayHeader(buf, o, n, 12, FLOAT8_OID);
    for (let i = 0; i < n; i++) {
      o = buf.writeInt32BE(8, o);
      o = buf.writeDoubleBE(vals[i]!, o);
    }
    const json = jsonTexts[row];
    if (json === undefined) o = buf.writeInt32BE(-1, o);
    else {
      o = buf.writeInt32BE(1 + json.length, o);
      o = buf.writeUInt8(JSONB_VERSION, o);
      o += json.copy(buf, o);
    }
  }
  jsonTexts.length = 0;
  o = buf.writeInt16BE(-1, o); // trailer
  if (o !== size) throw new Error(`binary COPY size mismatch: wrote ${o} of ${size} bytes`);
  return buf;
}

/** The jsonb text of a reading's non-numeric values, keyed by key id (the `jvals` column), or undefined when there are none. */
function jsonText(values: Record<string, NonNumericValue>, dictionary: Pick<KeyDictionary, 'id'>): Buffer | undefined {
  const byId: Record<string, NonNumericValue> = {};
  let any = false;
  for (const key in values) {
    const id = dictionary.id(key);
    if (id === undefined) throw new Error(`telemetry key "${key}" has no id yet`);
    byId[id] = values[key]!;
    any = true;
  }
  return any ? Buffer.from(JSON.stringify(byId)) : undefined;
}

function float8(buf: Buffer, o: number, v: number | undefined): number {
  if (v === undefined) return buf.writeInt32BE(-1, o);
  o = buf.writeInt32BE(8, o);
  return buf.writeDoubleBE(v, o);
}

/** A one-dimensional array field: its length, then ndim, has-nulls, element type, [size, lower bound]. */
function arrayHeader(buf: Buffer, o: number, n: number, bytesPerElement: number, oid: number): number {
  o = buf.writeInt32BE(12 + (n > 0 ? 8 : 0) + n * bytesPerElement, o);
  o = buf.writeInt32BE(n > 0 ? 1 : 0, o);
  o = buf.writeInt32BE(0, o);
  o = buf.writeInt32BE(oid, o);
  if (n > 0) {
    o = buf.writeInt32BE(n, o);
    o = buf.writeInt32BE(1, o);
  }
  return o;
}

/** Insertion sort of the scratch pairs by id (a handful of keys per reading). */
function sortPairs(): void {
  for (let i = 1; i < ids.length; i++) {
    const id = ids[i]!;
    const val = vals[i]!;
    let j = i - 1;
    while (j >= 0 && ids[j]! > id) {
      ids[j + 1] = ids[j]!;
      vals[j + 1] = vals[j]!;
      j--;
    }
    ids[j + 1] = id;
    vals[j + 1] = val;
  }
}

/**
 * Folds readings of the same device and timestamp into one row (later values win), as the
 * unique (device_id, ts) index requires. ThingsBoard's array form stamps every element with the
 * same server time, so this is common, not exotic.
 */
export function mergeSameInstant(rows: readonly Reading[]): Reading[] {
  // Cheap check first (no key strings): most batches hold no two rows of one device and instant.
  const seen = new Map<number, number | Set<number>>();
  let collision = false;
  for (const r of rows) {
    const prev = seen.get(r.deviceId);
    if (prev === undefined) seen.set(r.deviceId, r.ts);
    else if (typeof prev === 'number') {
      if (prev === r.ts) {
        collision = true;
        break;
      }
      seen.set(r.deviceId, new Set([prev, r.ts]));
    } else if (prev.has(r.ts)) {
      collision = true;
      break;
    } else prev.add(r.ts);
  }
  if (!collision) return rows as Reading[];
  const byKey = new Map<string, Reading>();
  for (const r of rows) {
    const key = `${r.deviceId}:${r.ts}`;
    const prev = byKey.get(key);
    if (!prev) {
      byKey.set(key, r);
      continue;
    }
    const next = mergeValues(prev, r);
    if (r.cell !== undefined) {
      next.cell = r.cell;
      next.lat = r.lat;
      next.lng = r.lng;
      if (r.alt !== undefined) next.alt = r.alt;
      else delete next.alt;
    }
    byKey.set(key, next);
  }
  return [...byKey.values()];
}

/** prev's values with r's over them: a key has one value per instant, whatever its type, and the later write wins. */
function mergeValues(prev: Reading, r: Reading): Reading {
  const values = { ...prev.values, ...r.values };
  const jsonValues = { ...prev.jsonValues, ...r.jsonValues };
  for (const key in r.values) delete jsonValues[key];
  for (const key in r.jsonValues) delete values[key];
  const next: Reading = { ...prev, values };
  if (Object.keys(jsonValues).length > 0) next.jsonValues = jsonValues;
  else delete next.jsonValues;
  return next;
}

/** Rows grouped by the domain table they go to. */
export function byDomain(rows: readonly Reading[]): Map<Domain, Reading[]> {
  const groups = new Map<Domain, Reading[]>();
  for (const r of rows) {
    const g = groups.get(r.domain);
    if (g) g.push(r);
    else groups.set(r.domain, [r]);
  }
  return groups;
}
