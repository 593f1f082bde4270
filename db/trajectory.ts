import type pg from 'pg';
import type { Domain } from '../core/domains.ts';
import type { TrackPoint } from '../geo/track.ts';
import { readingsTable } from './readings-tables.ts';

/** Hard ceiling on positions read for one trajectory (documented in the README and the OpenAPI schema). */
export const MAX_TRACK_POINTS = 100_000;

export interface TrackRead {
  /** Oldest first. */
  points: TrackPoint[];
  /** Epoch ms of the first position left unread when the limit was reached; undefined when the track is complete. */
  next: number | undefined;
}

/**
 * Positions of one device in [from, to] (inclusive), oldest first, at most `limit` of them: the rows
 * of its domain's readings table with a position. One index range scan on (device_id, ts), stopped
 * after `limit` + 1 rows with a position (the extra one tells whether more remain, and where).
 * `where` is an SQL condition on the row `r` (a principal's area: only positions inside).
 */
export async function readTrack(pool: pg.Pool, deviceId: number, domain: Domain, from: Date, to: Date, limit: number, where?: string): Promise<TrackRead> {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_TRACK_POINTS) throw new RangeError(`limit must be 1…${MAX_TRACK_POINTS}, not ${limit}`);
  // alt stays real: its text form is the value sent (123.4), its float8 cast is not (123.40000152587891).
  const { rows } = await pool.query<[number, number, number, number | null]>({
    text: `SELECT floor(extract(epoch FROM ts) * 1000)::float8 AS ms, lng, lat, alt
             FROM ${readingsTable(domain)} r
            WHERE device_id = $1 AND ts >= $2 AND ts <= $3 AND lat IS NOT NULL AND lng IS NOT NULL${where ? ` AND ${where}` : ''}
            ORDER BY ts
            LIMIT $4`,
    values: [deviceId, from, to, limit + 1],
    rowMode: 'array',
  });
  const n = Math.min(rows.length, limit);
  const points = new Array<TrackPoint>(n);
  for (let i = 0; i < n; i++) {
    const [ts, lng, lat, alt] = rows[i]!;
    points[i] = { ts, lng, lat, alt };
  }
  return { points, next: rows.length > limit ? rows[limit]![0] : undefined };
}
