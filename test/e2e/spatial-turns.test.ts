import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';

/** Heavy spatial queries take turns on the database (SPATIAL_MAX_CONCURRENT_QUERIES, SPATIAL_QUERY_QUEUE). */
describe('heavy spatial queries take turns', () => {
  let t: TestPlatform;
  beforeAll(async () => {
    t = await startTestPlatform({ spatialMaxConcurrentQueries: 1, spatialQueryQueue: 1 });
  });
  afterAll(async () => {
    await t?.stop();
  });

  const gauge = async (name: string) => {
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\d+)`, 'm').exec(text)?.[1]);
  };
  const history = () =>
    fetch(`${t.httpUrl}/api/v1/spatial/history?bbox=113.5,22.6,114.3,23.2&domain=environment&limit=10`, { headers: { authorization: `Bearer ${t.adminKey}` } });

  it('runs one at a time, queues one, answers the next 503 with Retry-After, and serves the queued one after', async () => {
    // A slow database, made so: the readings table is locked; the query holding the turn waits for it.
    const locker = new pg.Client({ connectionString: t.databaseUrl });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE readings_environment IN ACCESS EXCLUSIVE MODE');
      const first = history();
      await eventually(async () => ((await gauge('guanlink_spatial_queries_running')) === 1 ? true : undefined));
      const second = history();
      await eventually(async () => ((await gauge('guanlink_spatial_queries_waiting')) === 1 ? true : undefined));
      const third = await history();
      expect(third.status).toBe(503);
      expect(third.headers.get('retry-after')).toBe('2');
      expect(((await third.json()) as { message: string }).message).toMatch(/heavy spatial queries are running and 1 waiting \(SPATIAL_MAX_CONCURRENT_QUERIES=1\)/);
      await locker.query('COMMIT');
      expect([(await first).status, (await second).status]).toEqual([200, 200]);
      expect(await gauge('guanlink_spatial_queries_running')).toBe(0);
    } finally {
      await locker.end();
    }
  });
});
