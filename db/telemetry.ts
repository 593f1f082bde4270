import type pg from 'pg';
import { POSITION_KEYS } from '../core/device-types.ts';

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
      const sql = column
        ? `SELECT ts, ${column}::float8 AS v FROM readings
            WHERE device_id = $1 AND ts >= $2 AND ts <= $3 AND ${column} IS NOT NULL
            ORDER BY ts DESC LIMIT $4`
        : `SELECT ts, (vals ->> $5)::float8 AS v FROM readings
            WHERE device_id = $1 AND ts >= $2 AND ts <= $3 AND vals ? $5
            ORDER BY ts DESC LIMIT $4`;
      const params: unknown[] = [deviceId, from, to, limit];
      if (!column) params.push(key);
      const { rows } = await pool.query<{ ts: Date; v: number }>({ text: sql, values: params });
      result[key] = rows.map((r) => ({ ts: r.ts.getTime(), value: r.v }));
    }),
  );
  return result;
}

/** Keys one device reported in [from, to] (newest rows first, bounded scan). */
export async function keysInRange(pool: pg.Pool, deviceId: number, from: Date, to: Date): Promise<string[]> {
  const { rows } = await pool.query<{ key: string }>(
    `SELECT DISTINCT k.key FROM (
       SELECT vals, cell FROM readings WHERE device_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts DESC LIMIT 10000
     ) r CROSS JOIN LATERAL jsonb_object_keys(r.vals) AS k(key)
     ORDER BY 1`,
    [deviceId, from, to],
  );
  return rows.map((r) => r.key);
}
