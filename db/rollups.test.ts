import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../core/log.ts';
import { createRng } from '../simulators/random.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../test/support/database.ts';
import { HOUR, MINUTE, floorTo } from './buckets.ts';
import { migrate } from './migrate.ts';
import { Rollups } from './rollups.ts';

const log = createLogger('silent');

/**
 * The watermark handshake under contention: writers commit readings all around a watermark that
 * keeps moving, as ingest does (rows written, then the hook, then COMMIT), while refreshes run.
 * No reading may be missed by the rollups or counted twice.
 */
describe('rollups: watermark handshake with concurrent writers', () => {
  let db: TestDatabase;
  let pool: pg.Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 12);
    await migrate(pool, log);
    await pool.query(`INSERT INTO telemetry_keys (name) VALUES ('a'), ('b')`);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('misses nothing and counts nothing twice while the watermark moves under concurrent writes', async () => {
    const nowDb = (await pool.query<{ t: Date }>('SELECT now() AS t')).rows[0]!.t.getTime();
    const base = floorTo(nowDb, HOUR) + 2 * HOUR - 20 * MINUTE; // ahead of the clock, across an hour boundary
    const span = 40 * MINUTE;
    // The watermark is driven by the lateness: base + k minutes is "closed" when lateness = now - (base + k min).
    const rollupsAt = (k: number) => new Rollups({ pool, log, refreshMs: 0, latenessMs: nowDb - (base + k * MINUTE) - 1000 });
    const keys = (await pool.query<{ id: number }>('SELECT id FROM telemetry_keys ORDER BY id')).rows.map((r) => r.id);

    let writing = true;
    let k = 0; // the watermark's minute; readings cluster around it, as on-time readings do
    const writer = async (w: number) => {
      const rng = createRng(100 + w);
      let n = 0;
      while (writing) {
        const client = await pool.connect();
        try {
          await client.query('BEGIN');
          const drawn = Array.from({ length: 1 + rng.int(5) }, () => ({
            deviceId: 1 + rng.int(100_000), // sparse: a later late row rarely heals a missed one
            domain: 'generic' as const,
            ts: base + Math.min(span - 1, Math.max(0, Math.floor((k - 1 + rng.next() * 3) * MINUTE))),
          }));
          // One row per (device, ts) per statement, in a fixed order (as the writer's merge does).
          const rows = [...new Map(drawn.map((r) => [`${r.deviceId}/${r.ts}`, r])).values()].sort((a, b) => a.deviceId - b.deviceId || a.ts - b.ts);
          await client.query(
            `INSERT INTO readings_generic (device_id, ts, keys, vals)
             SELECT d, t, $3::smallint[], ARRAY[v, v * 2] FROM unnest($1::int[], $2::timestamptz[], $4::float8[]) AS x(d, t, v)
             ON CONFLICT (device_id, ts) DO UPDATE SET vals = excluded.vals`,
            [rows.map((r) => r.deviceId), rows.map((r) => new Date(r.ts).toISOString()), keys, rows.map(() => rng.range(0, 100))],
          );
          // The gap between the rows being written and the hook, where a refresh may slip in.
          if (rng.next() < 0.5) await new Promise((r) => setTimeout(r, rng.int(4)));
          await new Rollups({ pool, log, refreshMs: 0, latenessMs: 0 }).recordLate(client, rows);
          // …and between the hook and the commit (a slow commit).
          if (rng.next() < 0.5) await new Promise((r) => setTimeout(r, rng.int(4)));
          await client.query('COMMIT');
          n++;
        } catch (err) {
          await client.query('ROLLBACK');
          throw err;
        } finally {
          client.release();
        }
      }
      return n;
    };
    const writers = Array.from({ length: 6 }, (_, w) => writer(w));
    for (k = 0; k <= 40; k++) {
      await rollupsAt(k).refresh();
      await new Promise((r) => setTimeout(r, 5));
    }
    writing = false;
    const written = (await Promise.all(writers)).reduce((a, b) => a + b, 0);
    expect(written).toBeGreaterThan(200);
    const late = (await pool.query<{ n: number }>('SELECT count(*)::int AS n FROM rollup_invalidations')).rows[0]!.n;
    expect(late).toBeGreaterThan(0); // the test did exercise late writes
    const final = await rollupsAt(41).refresh();
    expect(final.invalidations).toBe(late);

    const mismatches = await pool.query(
      `WITH raw AS (
         SELECT r.device_id, u.k AS key_id, date_bin('1 minute', r.ts, '2000-01-03') AS bucket, count(*)::int AS count, sum(u.v) AS sum,
                min(u.v) AS min, max(u.v) AS max, max(r.ts) AS last_ts, (array_agg(u.v ORDER BY r.ts DESC))[1] AS last_value
           FROM readings_generic r, unnest(r.keys, r.vals) AS u(k, v) GROUP BY 1, 2, 3)
       SELECT * FROM raw FULL JOIN rollups_1m_generic m USING (device_id, key_id, bucket)
        WHERE m.count IS DISTINCT FROM raw.count OR m.min IS DISTINCT FROM raw.min OR m.max IS DISTINCT FROM raw.max
           OR m.last_ts IS DISTINCT FROM raw.last_ts OR m.last_value IS DISTINCT FROM raw.last_value OR abs(m.sum - raw.sum) > 1e-9 * greatest(1, abs(raw.sum))`,
    );
    expect(mismatches.rows).toEqual([]);
    const hours = await pool.query(
      `WITH raw AS (
         SELECT r.device_id, u.k AS key_id, date_bin('1 hour', r.ts, '2000-01-03') AS bucket, count(*)::int AS count, max(u.v) AS max
           FROM readings_generic r, unnest(r.keys, r.vals) AS u(k, v) WHERE r.ts < $1 GROUP BY 1, 2, 3)
       SELECT * FROM raw FULL JOIN rollups_1h_generic h USING (device_id, key_id, bucket)
        WHERE h.count IS DISTINCT FROM raw.count OR h.max IS DISTINCT FROM raw.max`,
      [new Date(floorTo(base + 41 * MINUTE, HOUR))],
    );
    expect(hours.rows).toEqual([]);
    expect((await pool.query('SELECT count(*)::int AS n FROM rollups_1h_generic')).rows[0].n).toBeGreaterThan(0);
  });
});
