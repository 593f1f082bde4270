import type pg from 'pg';
import { POSITION_KEYS } from '../core/device-types.ts';
import type { Domain } from '../core/domains.ts';
import { readingsTable } from './readings-tables.ts';
import { BUCKET_ORIGIN, MINUTE, floorTo, planSources, type Aggregate, type Source } from './buckets.ts';
import type { KeyDictionary } from './keys.ts';
import { rollupTable } from './rollups.ts';
import type { TelemetryValue } from '../ingest/readings.ts';

export interface Point {
  ts: number;
  value: TelemetryValue;
}

/** An aggregate per time bucket: always a number. */
export interface BucketPoint {
  ts: number;
  value: number;
}

/** Hard ceiling on points per key in one response (documented in the README). */
export const MAX_POINTS_PER_KEY = 100_000;

const positionColumn = (key: string): string | undefined =>
  Object.hasOwn(POSITION_KEYS, key) ? POSITION_KEYS[key as keyof typeof POSITION_KEYS] : undefined;

/**
 * Newest-first history of each key of one device in [from, to]; `where` is an SQL condition on
 * the readings row `r` (a principal's area: only readings positioned inside).
 */
export async function telemetryHistory(
  pool: pg.Pool,
  dictionary: KeyDictionary,
  deviceId: number,
  keys: string[],
  from: Date,
  to: Date,
  limit: number,
  where?: string,
): Promise<Record<string, Point[]>> {
  const result: Record<string, Point[]> = {};
  const extra = where ? ` AND ${where}` : '';
  await Promise.all(
    keys.map(async (key) => {
      const column = positionColumn(key);
      const id = dictionary.id(key);
      if (!column && id === undefined) {
        result[key] = [];
        return;
      }
      const { rows } = column
        ? await pool.query<{ ts: Date; v: number; j?: undefined }>(
            `SELECT ts, ${column}::float8 AS v FROM readings r
              WHERE device_id = $1 AND ts >= $2 AND ts <= $3 AND ${column} IS NOT NULL${extra}
              ORDER BY ts DESC LIMIT $4`,
            [deviceId, from, to, limit],
          )
        : await pool.query<{ ts: Date; v: number | null; j: TelemetryValue | null }>(
            // A key's value is a number (in keys/vals) or another type (in jvals, under its id).
            `SELECT ts, vals[array_position(keys, $5::smallint)] AS v, jvals -> $6::text AS j FROM readings r
              WHERE device_id = $1 AND ts >= $2 AND ts <= $3 AND ($5::smallint = ANY (keys) OR jvals ? $6::text)${extra}
              ORDER BY ts DESC LIMIT $4`,
            [deviceId, from, to, limit, id, String(id)],
          );
      result[key] = rows.map((r) => ({ ts: r.ts.getTime(), value: r.v ?? r.j! }));
    }),
  );
  return result;
}

/** Keys one device reported in [from, to] (newest 10000 rows at most). */
export async function keysInRange(pool: pg.Pool, dictionary: KeyDictionary, deviceId: number, from: Date, to: Date): Promise<string[]> {
  const { rows } = await pool.query<{ id: number }>(
    `SELECT DISTINCT k.id FROM (
       SELECT keys, jvals FROM readings WHERE device_id = $1 AND ts >= $2 AND ts <= $3 ORDER BY ts DESC LIMIT 10000
     ) r, LATERAL (SELECT unnest(r.keys) UNION ALL SELECT jsonb_object_keys(r.jvals)::smallint) AS k(id)`,
    [deviceId, from, to],
  );
  const names = await Promise.all(rows.map((r) => dictionary.name(r.id)));
  return names.filter((n): n is string => n !== undefined).sort();
}

export interface BucketQuery {
  deviceId: number;
  /** The device's domain: its readings and rollups are read from that domain's tables. */
  domain: Domain;
  keys: string[];
  from: Date;
  /** Inclusive, like the raw history. */
  to: Date;
  intervalMs: number;
  agg: Aggregate;
  /** Buckets per key, newest first. */
  limit: number;
  /** Read the raw readings only, ignoring the rollups (for comparisons). */
  rawOnly?: boolean;
  /** An SQL condition on the readings row `r` (a principal's area); the rollups, which cannot apply it, are not read. */
  where?: string;
}

export interface BucketResult {
  /** Per key, one point per bucket that has data: ts is the bucket's start. Numbers, and booleans as 1/0; strings and JSON are not aggregated. */
  points: Record<string, BucketPoint[]>;
  /** Sources read, coarsest first (for the response header and tests). */
  sources: Source[];
}

const ORIGIN = new Date(BUCKET_ORIGIN).toISOString();
const MAX_SEGMENTS = 200;

const FINAL: Record<Aggregate, string> = {
  avg: 'sum(s) / sum(n)::float8',
  sum: 'sum(s)',
  count: 'sum(n)::float8',
  min: 'min(lo)',
  max: 'max(hi)',
  last: '(array_agg(lv ORDER BY lts DESC))[1]',
};

/**
 * Aggregates of each key per time bucket over [from, to], newest bucket first. Whole-hour
 * intervals read rollups_1h, whole-minute intervals rollups_1m, wherever those are complete; the
 * edges of the range, everything after the rollup watermark and minutes with late data not yet
 * rolled up are read from the raw readings (db/buckets.ts planSources). Each part yields partial
 * aggregates (count, sum, min, max, last) that are combined per bucket, so the result equals the
 * same aggregate over the raw readings (avg and sum up to floating-point rounding).
 */
export async function telemetryBuckets(pool: pg.Pool, dictionary: KeyDictionary, q: BucketQuery): Promise<BucketResult> {
  const from = q.from.getTime();
  const to = q.to.getTime() + 1; // exclusive (readings have millisecond timestamps)
  const { rows } = await pool.query<{ done: number | null; invalid: number[] }>(
    `SELECT (extract(epoch FROM (SELECT done FROM rollup_state)) * 1000)::float8 AS done,
            ARRAY(SELECT DISTINCT (extract(epoch FROM bucket) * 1000)::float8 FROM rollup_invalidations
                   WHERE device_id = $1 AND bucket >= $2 AND bucket < $3) AS invalid`,
    [q.deviceId, new Date(floorTo(from, MINUTE)), new Date(to)],
  );
  const done = q.rawOnly || q.where ? undefined : (rows[0]?.done ?? undefined);
  let plan = planSources({ from, to, intervalMs: q.intervalMs, done, invalidMinutes: rows[0]?.invalid ?? [] });
  // Very many minutes with pending late data: one raw scan rather than a statement of hundreds of parts.
  if (plan.length > MAX_SEGMENTS) plan = [{ source: 'raw', start: from, end: to }];
  const sources = new Set<Source>();
  const points: Record<string, BucketPoint[]> = {};
  await Promise.all(
    q.keys.map(async (key) => {
      const column = positionColumn(key);
      const id = dictionary.id(key);
      if (!column && id === undefined) {
        points[key] = [];
        return;
      }
      // Positions are columns of the readings, not rolled up.
      const segments = column ? [{ source: 'raw' as const, start: from, end: to }] : plan;
      const params: unknown[] = [q.deviceId, `${q.intervalMs} milliseconds`, ORIGIN, q.limit, column ? null : id];
      // One branch per segment: each is a plain index range scan (a join with a list of ranges
      // can make the planner scan the device's whole history).
      const parts = segments.map((segment) => {
        sources.add(segment.source);
        params.push(new Date(segment.start).toISOString(), new Date(segment.end).toISOString());
        const [a, z] = [`$${params.length - 1}::timestamptz`, `$${params.length}::timestamptz`];
        if (segment.source !== 'raw') {
          return `SELECT date_bin($2::interval, x.bucket, $3::timestamptz) AS b, x.count::bigint AS n, x.sum AS s, x.min AS lo, x.max AS hi,
                         x.last_ts AS lts, x.last_value AS lv
                    FROM ${rollupTable(segment.source, q.domain)} x
                   WHERE x.device_id = $1 AND x.key_id = $5::smallint AND x.bucket >= ${a} AND x.bucket < ${z}`;
        }
        // A number, or a boolean as 1 or 0 (as the rollups count it: db/rollups.ts NUMBERS_AND_BOOLEANS).
        const value = column ? `r.${column}::float8` : `coalesce(r.vals[array_position(r.keys, $5::smallint)], (r.jvals -> $5::smallint::text = 'true'::jsonb)::int::float8)`;
        const filter =
          (column ? `r.${column} IS NOT NULL` : `($5::smallint = ANY (r.keys) OR jsonb_typeof(r.jvals -> $5::smallint::text) = 'boolean')`) + (q.where ? ` AND ${q.where}` : '');
        return `SELECT date_bin($2::interval, r.ts, $3::timestamptz) AS b, 1::bigint AS n, r.v AS s, r.v AS lo, r.v AS hi, r.ts AS lts, r.v AS lv
                  FROM (SELECT r.ts, ${value} AS v FROM ${readingsTable(q.domain)} r WHERE r.device_id = $1 AND r.ts >= ${a} AND r.ts < ${z} AND ${filter}) r`;
      });
      if (parts.length === 0) {
        points[key] = [];
        return;
      }
      const result = await pool.query<{ ts: number; value: number }>(
        `SELECT (extract(epoch FROM b) * 1000)::float8 AS ts, ${FINAL[q.agg]} AS value
           FROM (${parts.join('\n UNION ALL ')}) p
          GROUP BY b ORDER BY b DESC LIMIT $4`,
        params,
      );
      points[key] = result.rows.map((r) => ({ ts: r.ts, value: r.value }));
    }),
  );
  return { points, sources: (['1h', '1m', 'raw'] as const).filter((s) => sources.has(s)) };
}

/** The oldest data of one device (raw readings or, when those are gone, hour rollups of these keys). */
export async function earliestData(pool: pg.Pool, dictionary: KeyDictionary, deviceId: number, domain: Domain, keys: string[]): Promise<Date | undefined> {
  const ids = keys.map((k) => dictionary.id(k)).filter((id): id is number => id !== undefined);
  const { rows } = await pool.query<{ ts: Date | null }>(
    `SELECT least(
       (SELECT ts FROM ${readingsTable(domain)} WHERE device_id = $1 ORDER BY ts LIMIT 1),
       (SELECT min(f.bucket) FROM unnest($2::smallint[]) AS k(id),
               LATERAL (SELECT bucket FROM ${rollupTable('1h', domain)} WHERE device_id = $1 AND key_id = k.id ORDER BY bucket LIMIT 1) f)
     ) AS ts`,
    [deviceId, ids],
  );
  return rows[0]?.ts ?? undefined;
}
