import type { Reading } from './readings.ts';

/** Columns written for each reading, in COPY order. */
export const READING_COLUMNS = '(device_id, ts, cell, lat, lng, alt, vals)';

// COPY text format: tab-separated, \N for NULL, backslash escapes. Only the jsonb column can hold a
// backslash (JSON escapes); tabs, newlines and NUL cannot appear raw because JSON.stringify escapes
// them and validation refuses control characters in keys.
const escapeCopy = (s: string): string => (s.includes('\\') ? s.replaceAll('\\', '\\\\') : s);

const num = (v: number | undefined): string => (v === undefined ? '\\N' : String(v));

/** Encodes readings as one COPY text chunk. */
export function encodeCopyText(rows: readonly Reading[]): string {
  let out = '';
  for (const r of rows) {
    out +=
      `${r.deviceId}\t${new Date(r.ts).toISOString()}\t${r.cell === undefined ? '\\N' : r.cell.toString()}\t` +
      `${num(r.lat)}\t${num(r.lng)}\t${num(r.alt)}\t${escapeCopy(JSON.stringify(r.values))}\n`;
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
