import type { Domain } from '../core/domains.ts';
import type { KeyDictionary } from '../db/keys.ts';
import type { Reading } from './readings.ts';

/** Columns written for each reading, in COPY order. */
export const READING_COLUMNS = '(device_id, ts, cell, lat, lng, alt, keys, vals)';

/** The table holding one domain's readings (migrations/003). */
export const readingsTable = (domain: Domain): string => `readings_${domain.replaceAll('-', '_')}`;

const num = (v: number | undefined): string => (v === undefined ? '\\N' : String(v));

// Scratch space reused for every row: the encoder runs per reading on the hot path.
const ids: number[] = [];
const vals: number[] = [];

/**
 * Encodes readings as one COPY text chunk (tab-separated, \N for NULL). Values become two
 * parallel arrays, key ids ascending and float8 values; every key must already have an id.
 * Nothing here needs escaping: ids and finite numbers only.
 */
export function encodeCopyText(rows: readonly Reading[], dictionary: Pick<KeyDictionary, 'id'>): string {
  let out = '';
  for (const r of rows) {
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
    let k = '';
    let v = '';
    for (let i = 0; i < ids.length; i++) {
      if (i > 0) {
        k += ',';
        v += ',';
      }
      k += ids[i];
      v += vals[i];
    }
    out += `${r.deviceId}\t${isoTimestamp(r.ts)}\t${r.cell === undefined ? '\\N' : r.cell}\t${num(r.lat)}\t${num(r.lng)}\t${num(r.alt)}\t{${k}}\t{${v}}\n`;
  }
  return out;
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

const DAY_MS = 86_400_000;
let cachedDay = Number.NaN;
let cachedDayPrefix = '';
const pad2 = (n: number): string => (n < 10 ? `0${n}` : `${n}`);
const pad3 = (n: number): string => (n < 10 ? `00${n}` : n < 100 ? `0${n}` : `${n}`);

/** `new Date(ms).toISOString()` without a Date per reading: the date part is cached per UTC day. */
export function isoTimestamp(ms: number): string {
  const day = Math.floor(ms / DAY_MS);
  if (day !== cachedDay) {
    cachedDay = day;
    cachedDayPrefix = new Date(day * DAY_MS).toISOString().slice(0, 11);
  }
  let rest = ms - day * DAY_MS;
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const sec = Math.floor(rest / 1000);
  return `${cachedDayPrefix}${pad2(h)}:${pad2(m)}:${pad2(sec)}.${pad3(rest - sec * 1000)}Z`;
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
    const next: Reading = { ...prev, values: { ...prev.values, ...r.values } };
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
