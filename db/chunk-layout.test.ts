import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../core/log.ts';
import { storageCell } from '../geo/cell.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../test/support/database.ts';
import { ChunkLayout, LAYOUT_MARK } from './chunk-layout.ts';
import { detectDialect, type Dialect } from './dialect.ts';
import { migrate } from './migrate.ts';

const log = createLogger('silent');
const DAY = 86_400_000;

describe('ChunkLayout: closed chunks rewritten in hour / cell order', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let dialect: Dialect;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 4);
    await migrate(pool, log);
    dialect = await detectDialect(pool);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  const digest = async () =>
    (await pool.query<{ n: string; s: string }>(`SELECT count(*) AS n, sum(hashint4(device_id) # timestamp_hash(ts::timestamp) # hashint8(cell))::text AS s FROM readings_generic`)).rows[0];

  it('rewrites each closed chunk once, keeps every row, and leaves open chunks and plain PostgreSQL alone', async () => {
    // Two days ago, in arrival (time) order: 40 devices spread over the city, every 10 minutes.
    const dayStart = Math.floor((Date.now() - 2 * DAY) / DAY) * DAY;
    const rows: unknown[][] = [];
    for (let m = 0; m < 24 * 60; m += 10) {
      for (let d = 1; d <= 40; d++) {
        const lat = 22.7 + (d % 8) * 0.05;
        const lng = 113.6 + Math.floor(d / 8) * 0.1;
        rows.push([d, new Date(dayStart + m * 60_000 + d * 1000), storageCell(lat, lng).toString(), lat, lng]);
      }
    }
    // And one reading of now (an open chunk).
    rows.push([1, new Date(), storageCell(23, 113.7).toString(), 23, 113.7]);
    for (let i = 0; i < rows.length; i += 1000) {
      const part = rows.slice(i, i + 1000);
      await pool.query(
        `INSERT INTO readings_generic (device_id, ts, cell, lat, lng, keys, vals)
         SELECT d, t, c, la, lo, '{}', '{}' FROM unnest($1::int4[], $2::timestamptz[], $3::int8[], $4::float8[], $5::float8[]) AS u(d, t, c, la, lo)`,
        [part.map((r) => r[0]), part.map((r) => r[1]), part.map((r) => r[2]), part.map((r) => r[3]), part.map((r) => r[4])],
      );
    }
    const before = await digest();
    const job = new ChunkLayout({ pool, dialect, log, intervalMs: 0, afterMs: 3_600_000 }, ['readings_generic']);
    const done = await job.runOnce();
    expect(await digest()).toEqual(before);
    if (dialect.kind !== 'timescaledb') {
      expect(done).toEqual([]);
      return;
    }
    expect(done).toHaveLength(1);
    // Physical order of the rewritten chunk: by hour, then cell, then ts.
    const { rows: physical } = await pool.query<{ hour: Date; cell: string; ts: Date }>(
      `SELECT date_trunc('hour', ts) AS hour, cell::text AS cell, ts FROM ${done[0]} ORDER BY ctid`,
    );
    expect(physical).toHaveLength(24 * 6 * 40);
    const sorted = [...physical].sort((a, b) => a.hour.getTime() - b.hour.getTime() || (BigInt(a.cell) < BigInt(b.cell) ? -1 : BigInt(a.cell) > BigInt(b.cell) ? 1 : 0) || a.ts.getTime() - b.ts.getTime());
    expect(physical).toEqual(sorted);
    const mark = await pool.query<{ c: string }>(`SELECT obj_description($1::regclass, 'pg_class') AS c`, [done[0]]);
    expect(mark.rows[0]!.c).toBe(LAYOUT_MARK);
    // The layout index is gone again; a second run has nothing to do.
    const indexes = await pool.query(`SELECT indexname FROM pg_indexes WHERE indexname LIKE '%guanlink_layout'`);
    expect(indexes.rowCount).toBe(0);
    expect(await job.runOnce()).toEqual([]);
  });
});
