import type { Domain } from '../core/domains.ts';
import type { KeyDictionary } from '../db/keys.ts';
import type { Reading } from './readings.ts';

/** Columns written for each reading, in COPY order. */
export const READING_COLUMNS = '(device_id, ts, cell, lat, lng, alt, keys, vals)';

/** The table holding one domain's readings (migrations/003). */
export const readingsTable = (domain: Domain): string => `readings_${domain.replaceAll('-', '_')}`;

const num = (v: number | undefined): string => (v === undefined ? '\\N' : String(v));

/**
 * Encodes readings as one COPY text chunk (tab-separated, \N for NULL). Values become two
 * parallel arrays, key ids ascending and float8 values; every key must already have an id.
 * Nothing here needs escaping: ids and finite numbers only.
 */
export function encodeCopyText(rows: readonly Reading[], dictionary: Pick<KeyDictionary, 'id'>): string {
  let out = '';
  for (const r of rows) {
    const pairs: [number, number][] = [];
    for (const key in r.values) {
      const id = dictionary.id(key);
      if (id === undefined) throw new Error(`telemetry key "${key}" has no id yet`);
      pairs.push([id, r.values[key]!]);
    }
    pairs.sort((a, b) => a[0] - b[0]);
    let keys = '';
    let vals = '';
    for (const [id, v] of pairs) {
      keys += keys ? `,${id}` : `${id}`;
      vals += vals ? `,${v}` : `${v}`;
    }
    out +=
      `${r.deviceId}\t${new Date(r.ts).toISOString()}\t${r.cell === undefined ? '\\N' : r.cell.toString()}\t` +
      `${num(r.lat)}\t${num(r.lng)}\t${num(r.alt)}\t{${keys}}\t{${vals}}\n`;
  }
  return out;
}

/**
 * Folds readings of the same device and timestamp into one row (later values win), as the
 * unique (device_id, ts) index requires. ThingsBoard's array form stamps every element with the
 * same server time, so this is common, not exotic.
 */
export function mergeSameInstant(rows: readonly Reading[]): Reading[] {
  const byKey = new Map<string, Reading>();
  let merged = false;
  for (const r of rows) {
    const key = `${r.deviceId}:${r.ts}`;
    const prev = byKey.get(key);
    if (!prev) {
      byKey.set(key, r);
      continue;
    }
    merged = true;
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
  return merged ? [...byKey.values()] : (rows as Reading[]);
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
