import type pg from 'pg';
import { POSITION_KEYS } from '../core/device-types.ts';
import type { KeyDictionary } from './keys.ts';

export interface Point {
  ts: number;
  value: number;
}

/** Hard ceiling on points per key in one response (documented in the README). */
export const MAX_POINTS_PER_KEY = 100_000;

const positionColumn = (key: string): string | undefined =>
  Object.hasOwn(POSITION_KEYS, key) ? POSITION_KEYS[key as keyof typeof POSITION_KEYS] : undefined;

/** Newest-first history of each key of one device in [from, to]. */
export async function telemetryHistory(
  pool: pg.Pool,
  dictionary: KeyDictionary,
  deviceId: number,
  keys: string[],
  from: Date,
  to: Date,
  limit: number,
): Promise<Record<string, Point[]>> {
  const result: Record<string, Point[]> = {};
  await Promise.all(
    keys.map(async (key) => {
      const column = positionColumn(key);
      const id = dictionary.id(key);
      if (!column && id === undefined) {
        result[key] = [];
        return;
      }
      const { rows } = column
        ? await pool.query<{ ts: Date; v: number }>(
            `SELECT ts, ${column}::float8 AS v FROM readings
              WHERE device_id = $1 AND ts >= $2 AND ts <= $3 AND ${column} IS NOT NULL
              ORDER BY ts DESC LIMIT $4`,
            [deviceId, from, to, limit],
          )
        : await pool.query<{ ts: Date; v: number }>(
            `SELECT ts, vals[array_position(keys, $5::smallint)] AS v FROM readings
              WHERE device_id = $1 AND ts >= $2 AND ts <= $3 AND $5::smallint = ANY (keys)
              ORDER BY ts DESC LIMIT $4`,
            [deviceId, from, to, limit, id],
          );
      result[key] = rows.map((r) => ({ ts: r.ts.getTime(), value: r.v }));
    }),
  );
  return result;
}

/** Keys one device reported in [from, to] (newest 10000 rows at most). */
export async function keysInRange(pool: pg.Pool, dictionary: KeyDictionary, deviceId: number, from: Date, to: Date): Promise<string[]> {
  const { rows } = await pool.query<{ id: number }>(
    `SELECT DISTINCT unnest(keys) AS id FROM (
       SELECT keys FROM readings WHERE device_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts DESC LIMIT 10000
     ) r`,
    [deviceId, from, to],
  );
  const names = await Promise.all(rows.map((r) => dictionary.name(r.id)));
  return names.filter((n): n is string => n !== undefined).sort();
}
