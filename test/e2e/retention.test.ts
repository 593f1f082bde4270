import { testPool } from '../support/database.ts';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';

const DAY = 86_400_000;

interface Policy {
  domain: string;
  rawDays: number | null;
  rollups1mDays: number | null;
  rollups1hDays: number | null;
}
interface Action {
  domain: string;
  level: string;
  table: string;
  cutoff: string;
  method: 'drop_chunks' | 'delete';
  droppedChunks: string[];
  deletedRows: number;
}

describe('per-domain retention', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let timescale: boolean;

  beforeAll(async () => {
    t = await startTestPlatform({ retentionIntervalMs: 0, rollupRefreshMs: 0 });
    db = testPool(t.databaseUrl, 2);
    timescale = t.platform.dialect.kind === 'timescaledb';
    if (process.env.EXPECT_TIMESCALEDB === '1') expect(timescale).toBe(true);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('has city defaults: water kept longest, traffic shortest, rollups at least as long as what they summarise', async () => {
    const res = await t.api<Policy[]>('GET', '/api/v1/retention');
    expect(res.status).toBe(200);
    expect(res.body.map((p) => p.domain)).toEqual(['water', 'environment', 'traffic', 'air-space-ground', 'generic']);
    const by = Object.fromEntries(res.body.map((p) => [p.domain, p]));
    expect(by.water).toMatchObject({ rawDays: 730, rollups1mDays: 1825, rollups1hDays: null });
    expect(by.traffic!.rawDays).toBeLessThan(by.water!.rawDays!);
    for (const p of res.body) {
      expect(p.rollups1mDays ?? Infinity).toBeGreaterThanOrEqual(p.rawDays ?? Infinity);
      expect(p.rollups1hDays ?? Infinity).toBeGreaterThanOrEqual(p.rollups1mDays ?? Infinity);
    }
  });

  it('refuses nonsense with a precise 400 and changes nothing', async () => {
    const before = await t.api<Policy[]>('GET', '/api/v1/retention');
    const ok = { rawDays: 30, rollups1mDays: 60, rollups1hDays: 400 };
    for (const [body, message] of [
      [{ ...ok, rawDays: -5 }, 'body/rawDays must be >= 1 (or null: kept forever)'],
      [{ ...ok, rawDays: 0 }, 'body/rawDays must be >= 1'],
      [{ ...ok, rollups1hDays: 1_000_000 }, 'body/rollups1hDays must be <= 36500'],
      [{ ...ok, rawDays: 1.5 }, 'body/rawDays must be integer'],
      [{ ...ok, rawDays: '30 days' }, 'body/rawDays must be integer'],
      [{ rawDays: 30, rollups1mDays: 60 }, "must have required property 'rollups1hDays'"],
      [{ ...ok, extra: 1 }, 'must NOT have additional properties'],
      [{ ...ok, rollups1mDays: 10 }, 'rollups1mDays (10 days) must be at least rawDays (30 days)'],
      [{ ...ok, rollups1hDays: 59 }, 'rollups1hDays (59 days) must be at least rollups1mDays (60 days)'],
      [{ ...ok, rawDays: null }, 'rollups1mDays (60 days) must be at least rawDays (forever)'],
    ] as const) {
      const res = await t.api<{ message: string }>('PUT', '/api/v1/retention/traffic', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.message).toContain(message);
    }
    const unknown = await t.api<{ message: string }>('PUT', '/api/v1/retention/sewage', ok);
    expect(unknown.status).toBe(400);
    expect(unknown.body.message).toBe('params/domain must be equal to one of the allowed values: water, environment, traffic, air-space-ground, generic');
    expect((await t.api('PUT', '/api/v1/retention/traffic', ok, { auth: false })).status).toBe(401);
    expect((await t.api<Policy[]>('GET', '/api/v1/retention')).body).toEqual(before.body);
  });

  it('drops old data of one domain only, whole chunks on TimescaleDB, and keeps the rest', async () => {
    const put = await t.api<Policy & { updatedAt: string }>('PUT', '/api/v1/retention/traffic', { rawDays: 30, rollups1mDays: 60, rollups1hDays: 400 });
    expect(put.status).toBe(200);
    expect(put.body).toMatchObject({ domain: 'traffic', rawDays: 30, rollups1mDays: 60, rollups1hDays: 400 });
    expect((await t.api<Policy[]>('GET', '/api/v1/retention')).body.find((p) => p.domain === 'traffic')).toMatchObject({ rawDays: 30 });

    const now = (await db.query<{ t: Date }>('SELECT now() AS t')).rows[0]!.t.getTime();
    const ago = (days: number) => new Date(now - days * DAY);
    const reading = (table: string, device: number, ts: Date) =>
      db.query(`INSERT INTO ${table} (device_id, ts, keys, vals) VALUES ($1, $2, '{1}', '{1.5}')`, [device, ts]);
    const rollup = (table: string, device: number, bucket: Date) =>
      db.query(`INSERT INTO ${table} (device_id, key_id, bucket, count, sum, min, max, last_ts, last_value) VALUES ($1, 1, $2, 1, 1, 1, 1, $2, 1)`, [device, bucket]);
    await db.query(`INSERT INTO telemetry_keys (name) VALUES ('speed') ON CONFLICT DO NOTHING`);
    await reading('readings_traffic', 1, ago(400));
    await reading('readings_traffic', 1, ago(45));
    await reading('readings_traffic', 1, ago(10));
    await reading('readings_water', 2, ago(400)); // water keeps 730 days
    await reading('readings_environment', 3, ago(200)); // environment keeps 365 days
    await rollup('rollups_1m_traffic', 1, ago(90));
    await rollup('rollups_1m_traffic', 1, ago(10));
    await rollup('rollups_1h_traffic', 1, ago(500));
    await rollup('rollups_1h_traffic', 1, ago(100));
    await rollup('rollups_1h_water', 2, ago(500)); // water keeps hours forever
    await db.query(`INSERT INTO rollup_invalidations (domain, device_id, bucket) VALUES ('traffic', 1, $1), ('traffic', 1, $2)`, [ago(45), ago(10)]);
    // Older than the cutoff but in the same day as it: on TimescaleDB its chunk straddles the cutoff and stays whole.
    const cutoffDay = Math.floor((now - 30 * DAY) / DAY) * DAY;
    const straddling = now - 30 * DAY - cutoffDay > 10 * 60_000 ? new Date(cutoffDay + 1000) : undefined;
    if (straddling) await reading('readings_traffic', 4, straddling);

    const chunksBefore = timescale ? (await db.query(`SELECT show_chunks('readings_traffic')::text AS c`)).rows.map((r) => r.c as string) : [];
    const res = await t.api<{ actions: Action[] }>('POST', '/api/v1/retention/apply');
    expect(res.status).toBe(200);
    const action = (domain: string, level: string) => res.body.actions.find((a) => a.domain === domain && a.level === level)!;
    const raw = action('traffic', 'raw');
    expect(Date.parse(raw.cutoff)).toBeGreaterThanOrEqual(now - 30 * DAY);
    expect(Date.parse(raw.cutoff)).toBeLessThan(now - 30 * DAY + 60_000);
    expect(res.body.actions.some((a) => a.domain === 'water' && a.level === '1h')).toBe(false); // kept forever: nothing to do

    const count = async (sql: string, ...params: unknown[]) => (await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, params)).rows[0]!.n;
    expect(await count(`readings_traffic WHERE device_id = 1 AND ts < $1`, ago(30))).toBe(0);
    expect(await count(`readings_traffic WHERE device_id = 1`)).toBe(1);
    expect(await count(`readings_water`)).toBe(1);
    expect(await count(`readings_environment`)).toBe(1);
    expect(await count(`rollups_1m_traffic`)).toBe(1);
    expect(await count(`rollups_1h_traffic`)).toBe(1);
    expect(await count(`rollups_1h_water`)).toBe(1);
    expect((await db.query(`SELECT bucket FROM rollup_invalidations`)).rows.map((r) => r.bucket.getTime())).toEqual([ago(10).getTime()]);

    if (timescale) {
      expect(raw.method).toBe('drop_chunks');
      expect(raw.deletedRows).toBe(0);
      expect(raw.droppedChunks).toHaveLength(2); // the 400- and 45-day-old days
      const chunksAfter = (await db.query(`SELECT show_chunks('readings_traffic')::text AS c`)).rows.map((r) => r.c as string);
      expect(chunksAfter).toEqual(chunksBefore.filter((c) => !raw.droppedChunks.includes(c)));
      for (const chunk of raw.droppedChunks) expect((await db.query('SELECT to_regclass($1) AS r', [chunk])).rows[0].r).toBeNull();
      expect(action('traffic', '1m').droppedChunks).toHaveLength(1);
      expect(action('traffic', '1h').droppedChunks).toHaveLength(1);
      // Whole chunks only: a row older than the cutoff whose chunk is not entirely older stays.
      if (straddling) expect(await count(`readings_traffic WHERE device_id = 4`)).toBe(1);
    } else {
      expect(raw.method).toBe('delete');
      expect(raw.droppedChunks).toEqual([]);
      expect(raw.deletedRows).toBe(straddling ? 3 : 2);
      expect(action('traffic', '1m').deletedRows).toBe(1);
      expect(action('traffic', '1h').deletedRows).toBe(1);
      if (straddling) expect(await count(`readings_traffic WHERE device_id = 4`)).toBe(0);
    }

    const again = await t.api<{ actions: Action[] }>('POST', '/api/v1/retention/apply');
    expect(again.body.actions.every((a) => a.droppedChunks.length === 0 && a.deletedRows === 0)).toBe(true);
  });
});
