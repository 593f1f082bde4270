import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../core/log.ts';
import { KeyDictionary } from '../db/keys.ts';
import { migrate } from '../db/migrate.ts';
import { createTestDatabase, testPool, type TestDatabase } from '../test/support/database.ts';
import { LatestTracker } from './latest.ts';

describe('LatestTracker', () => {
  let database: TestDatabase;
  let pool: pg.Pool;
  let deviceId: number;
  const log = createLogger('silent');

  beforeAll(async () => {
    database = await createTestDatabase();
    pool = testPool(database.url, 4);
    await migrate(pool, log);
    await pool.query(`INSERT INTO device_types (name, domain, definition) VALUES ('meter', 'generic', '{}') ON CONFLICT DO NOTHING`);
    deviceId = (await pool.query<{ id: number }>(`INSERT INTO devices (name, type, token_lookup, token_hash) VALUES ('latest-meter', 'meter', 'lookup', 'hash') RETURNING id`)).rows[0]!.id;
  });
  afterAll(async () => {
    await pool?.end();
    await database?.drop();
  });

  it('still answers with the values of a batch whose save has not committed yet', async () => {
    const tracker = new LatestTracker(pool, new KeyDictionary(pool, 100), log, 60_000);
    tracker.record([{ deviceId, domain: 'generic', ts: 1_000, values: { level: 2.5 }, lat: 23, lng: 113.7, cell: 1n }]);
    // Writes to device_state wait behind this lock; reads do not: the save is in flight while we read.
    const blocker = await pool.connect();
    let flushed: Promise<void> | undefined;
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE device_state IN EXCLUSIVE MODE');
      flushed = tracker.flush();
      const one = await tracker.get(deviceId);
      expect(one?.values.level).toEqual([1_000, 2.5]);
      expect(one?.position).toMatchObject({ lat: 23, lng: 113.7 });
      const all = await tracker.all();
      expect(all.find((d) => d.deviceId === deviceId)?.values.level).toEqual([1_000, 2.5]);
    } finally {
      await blocker.query('COMMIT');
      blocker.release();
    }
    await flushed;
    expect((await tracker.get(deviceId))?.values.level).toEqual([1_000, 2.5]);
    const { rows } = await pool.query('SELECT latest FROM device_state WHERE device_id = $1', [deviceId]);
    expect(rows[0].latest).toEqual({ level: [1_000, 2.5] });
  });
});
