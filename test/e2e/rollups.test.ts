import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUCKET_ORIGIN, HOUR, MINUTE, floorTo } from '../../db/buckets.ts';
import { createRng } from '../../simulators/random.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../support/database.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';

type Points = Record<string, { ts: number; value: number }[]>;
interface Agg {
  count: number;
  sum: number;
  min: number;
  max: number;
  lastTs: number;
  last: number;
}
type Aggregates = Map<string, Agg>; // "device/key/bucket" → aggregate

const TOPIC = 'v1/devices/me/telemetry';
const bucketOf = (ts: number, iv: number) => floorTo(ts - BUCKET_ORIGIN, iv) + BUCKET_ORIGIN;
const close = (a: number, b: number) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(b));

/** The aggregates computed here, in JS, from the raw rows the database holds (the reference). */
async function rawAggregates(db: pg.Pool, devices: number[], iv: number, filter: (ts: number) => boolean = () => true): Promise<Aggregates> {
  const out: Aggregates = new Map();
  for (const device of devices) {
    for (const row of await storedReadings(db, device)) {
      const ts = row.ts.getTime();
      if (!filter(ts)) continue;
      for (const [key, v] of Object.entries(row.values)) {
        const id = `${device}/${key}/${bucketOf(ts, iv)}`;
        const a = out.get(id);
        if (!a) out.set(id, { count: 1, sum: v, min: v, max: v, lastTs: ts, last: v });
        else {
          a.count++;
          a.sum += v;
          a.min = Math.min(a.min, v);
          a.max = Math.max(a.max, v);
          if (ts > a.lastTs) [a.lastTs, a.last] = [ts, v];
        }
      }
    }
  }
  return out;
}

async function storedRollups(db: pg.Pool, table: 'rollups_1m' | 'rollups_1h', devices: number[]): Promise<Aggregates> {
  const { rows } = await db.query(
    `SELECT x.device_id, k.name, x.bucket, x.count, x.sum, x.min, x.max, x.last_ts, x.last_value
       FROM ${table} x JOIN telemetry_keys k ON k.id = x.key_id WHERE x.device_id = ANY ($1)`,
    [devices],
  );
  return new Map(
    rows.map((r) => [`${r.device_id}/${r.name}/${r.bucket.getTime()}`, { count: r.count, sum: r.sum, min: r.min, max: r.max, lastTs: r.last_ts.getTime(), last: r.last_value }]),
  );
}

function expectSameAggregates(actual: Aggregates, expected: Aggregates): void {
  expect(expected.size).toBeGreaterThan(0);
  expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [id, e] of expected) {
    const a = actual.get(id)!;
    expect({ id, count: a.count, min: a.min, max: a.max, lastTs: a.lastTs, last: a.last }).toEqual({ id, count: e.count, min: e.min, max: e.max, lastTs: e.lastTs, last: e.last });
    expect(close(a.sum, e.sum), `${id} sum ${a.sum} vs ${e.sum}`).toBe(true);
  }
}

/** Every rollup bucket before the watermark equals the aggregate of the raw readings. */
async function expectRollupsMatchRaw(db: pg.Pool, devices: number[]): Promise<void> {
  const done = (await db.query('SELECT done FROM rollup_state')).rows[0].done.getTime() as number;
  expectSameAggregates(await storedRollups(db, 'rollups_1m', devices), await rawAggregates(db, devices, MINUTE, (ts) => ts < done));
  const doneHour = floorTo(done, HOUR);
  expectSameAggregates(await storedRollups(db, 'rollups_1h', devices), await rawAggregates(db, devices, HOUR, (ts) => ts < doneHour));
}

async function publishAll(client: MqttClient, entries: { ts: number; values: Record<string, number> }[]): Promise<void> {
  for (let i = 0; i < entries.length; i += 100) await client.publishAsync(TOPIC, JSON.stringify(entries.slice(i, i + 100)), { qos: 1 });
}

describe('rollups: 1-minute and 1-hour aggregates maintained by GuanLink', () => {
  let database: TestDatabase;
  let db: pg.Pool;
  let b: TestPlatform;
  const devices: CreatedDevice[] = [];
  const ids = () => devices.map((d) => d.id);
  const now = Date.now();
  const t0 = floorTo(now - 4 * HOUR, HOUR) + 7 * MINUTE + 13_000; // history: t0 … t0 + 3 h
  const rng = createRng(42);

  beforeAll(async () => {
    database = await createTestDatabase();
    db = testPool(database.url, 3);
  });
  afterAll(async () => {
    await b?.stop();
    await db?.end();
    await database?.drop();
  });

  it('costs on-time readings nothing: no invalidations, and nothing is rolled up before its minute closes', async () => {
    // Node A: a minute closes 6 h after it ends, so the history published now is on time.
    const a = await startTestPlatform({ databaseUrl: database.url, rollupRefreshMs: 100, rollupLatenessMs: 6 * HOUR });
    try {
      devices.push(await a.createDevice({ name: 'roll-generic-1' }));
      devices.push(await a.createDevice({ name: 'roll-generic-2' }));
      devices.push(await a.createDevice({ name: 'roll-river', type: 'river-level-station', location: { lat: 23.03, lng: 113.74 } }));
      for (const [i, d] of devices.entries()) {
        const client = await a.connect(d.accessToken);
        const keys = d.type === 'generic' ? ['temperature', 'humidity', 'pressure'] : ['water_level', 'flow_rate'];
        const entries: { ts: number; values: Record<string, number> }[] = [];
        for (let ts = t0 + i * 1000; ts < t0 + 3 * HOUR; ts += 20_000 + Math.floor(rng.next() * 40_000)) {
          const values: Record<string, number> = {};
          for (const k of keys) if (rng.next() < 0.8) values[k] = Math.round(rng.range(0, 50) * 1000) / 1000;
          if (Object.keys(values).length > 0) entries.push({ ts, values });
        }
        await publishAll(client, entries);
        // Retransmissions: one repeated as is, one with a changed value and an extra key (merged into the row).
        await client.publishAsync(TOPIC, JSON.stringify(entries.slice(10, 12)), { qos: 1 });
        await client.publishAsync(TOPIC, JSON.stringify({ ts: entries[20]!.ts, values: { [keys[0]!]: 99.5, [keys[1]!]: -1 } }), { qos: 1 });
      }
      const state = await eventually(async () => {
        const res = await a.api<{ done: string | null; announced: string | null; pendingInvalidations: number }>('GET', '/api/v1/rollups');
        return res.body.done ? res.body : undefined;
      });
      expect(Date.parse(state.done!)).toBeLessThan(t0);
      expect(state.pendingInvalidations).toBe(0);
      expect((await db.query('SELECT count(*)::int AS n FROM rollup_invalidations')).rows[0].n).toBe(0);
      expect((await db.query('SELECT count(*)::int AS n FROM rollups_1m WHERE device_id = ANY ($1)', [ids()])).rows[0].n).toBe(0);
    } finally {
      await a.stop();
    }
  });

  it('catches up after a restart from where it stopped, and the rollups equal the raw aggregates', async () => {
    // Node B restarts on the same database with no lateness; its refresh runs only when asked.
    b = await startTestPlatform({ databaseUrl: database.url, rollupRefreshMs: 0, rollupLatenessMs: 0 });
    const before = await b.api<{ done: string }>('GET', '/api/v1/rollups');
    const refreshed = await b.api<{ skipped: boolean; minutes: number; rows1m: number; rows1h: number; done: string }>('POST', '/api/v1/rollups/refresh');
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.skipped).toBe(false);
    expect(Date.parse(refreshed.body.done)).toBe(floorTo(Date.parse(refreshed.body.done), MINUTE));
    expect(Date.parse(refreshed.body.done)).toBeGreaterThan(t0 + 3 * HOUR);
    // It went on from the persisted watermark (not from the first reading, not from scratch).
    expect(refreshed.body.minutes).toBe((Date.parse(refreshed.body.done) - Date.parse(before.body.done)) / MINUTE);
    expect(refreshed.body.rows1h).toBeGreaterThan(0);
    await expectRollupsMatchRaw(db, ids());
    // The merged retransmission is counted once, with its newest value.
    const merged = await db.query(`SELECT count, max FROM rollups_1m x JOIN telemetry_keys k ON k.id = x.key_id WHERE device_id = $1 AND k.name = 'temperature' AND max = 99.5`, [devices[0]!.id]);
    expect(merged.rows).toHaveLength(1);
    // Refreshing again changes nothing.
    const again = await b.api<{ minutes: number; rows1m: number; invalidations: number }>('POST', '/api/v1/rollups/refresh');
    expect(again.body).toMatchObject({ rows1m: 0, invalidations: 0 });
  });

  it('records late readings in their own transaction, answers exactly meanwhile, and recomputes their minutes and hours', async () => {
    const d = devices[0]!;
    const client = await b.connect(d.accessToken);
    const rows = await storedReadings(db, d.id);
    const existing = rows[30]!;
    const lateNew = t0 + HOUR + 25 * MINUTE + 1234; // a new reading in a long-closed minute
    await client.publishAsync(TOPIC, JSON.stringify({ ts: lateNew, values: { temperature: 1000, humidity: -50 } }), { qos: 1 });
    // A late retransmission changing a stored value and adding a key.
    await client.publishAsync(TOPIC, JSON.stringify({ ts: existing.ts.getTime(), values: { pressure: -7, wind: 3 } }), { qos: 1 });
    const pending = await db.query('SELECT device_id, bucket FROM rollup_invalidations ORDER BY bucket');
    expect(pending.rows.map((r) => [r.device_id, r.bucket.getTime()]).sort()).toEqual(
      [
        [d.id, floorTo(lateNew, MINUTE)],
        [d.id, floorTo(existing.ts.getTime(), MINUTE)],
      ].sort(),
    );

    // Before the refresh, queries read those minutes raw: already exact.
    const from = t0;
    const to = t0 + 3 * HOUR;
    const q = `/api/v1/devices/${d.id}/telemetry?keys=temperature&interval=1h&agg=max&from=${from}&to=${to}`;
    const early = await b.api<Points>('GET', q);
    expect(early.body.temperature!.some((p) => p.value === 1000)).toBe(true);

    const refreshed = await b.api<{ invalidations: number }>('POST', '/api/v1/rollups/refresh');
    expect(refreshed.body.invalidations).toBe(2);
    expect((await db.query('SELECT count(*)::int AS n FROM rollup_invalidations')).rows[0].n).toBe(0);
    await expectRollupsMatchRaw(db, ids());
    const wind = await db.query(`SELECT count FROM rollups_1h x JOIN telemetry_keys k ON k.id = x.key_id WHERE device_id = $1 AND k.name = 'wind'`, [d.id]);
    expect(wind.rows).toEqual([{ count: 1 }]);
    expect((await b.api<Points>('GET', q)).body).toEqual(early.body);
  });

  describe('GET /devices/{id}/telemetry with interval and agg', () => {
    const from = () => t0 + 3 * MINUTE + 500; // not aligned: edges are read raw
    const to = () => Date.now();

    /** The same aggregate, per bucket, computed here from the raw rows. */
    async function expected(device: number, key: string, iv: number, agg: string, f: number, t: number) {
      const all = await rawAggregates(db, [device], iv, (ts) => ts >= f && ts <= t);
      return [...all.entries()]
        .filter(([id]) => id.split('/')[1] === key)
        .map(([id, a]) => {
          const ts = Number(id.split('/')[2]);
          const value = { avg: a.sum / a.count, sum: a.sum, count: a.count, min: a.min, max: a.max, last: a.last }[agg]!;
          return { ts, value };
        })
        .sort((x, y) => y.ts - x.ts);
    }

    function expectPoints(actual: { ts: number; value: number }[], wanted: { ts: number; value: number }[]) {
      expect(actual.map((p) => p.ts)).toEqual(wanted.map((p) => p.ts));
      actual.forEach((p, i) => expect(close(p.value, wanted[i]!.value), `${p.ts}: ${p.value} vs ${wanted[i]!.value}`).toBe(true));
    }

    it('reads whole-hour intervals from the hour rollups and equals the raw aggregate for every agg', async () => {
      for (const device of devices) {
        const key = device.type === 'generic' ? 'humidity' : 'water_level';
        for (const agg of ['avg', 'min', 'max', 'count', 'sum', 'last']) {
          for (const interval of ['1h', '3h']) {
            const [f, t] = [from(), to()];
            const res = await b.api<Points>('GET', `/api/v1/devices/${device.id}/telemetry?keys=${key}&interval=${interval}&agg=${agg}&from=${f}&to=${t}`);
            expect(res.status).toBe(200);
            expectPoints(res.body[key]!, await expected(device.id, key, interval === '1h' ? HOUR : 3 * HOUR, agg, f, t));
          }
        }
      }
      const res = await fetch(`${b.httpUrl}/api/v1/devices/${devices[0]!.id}/telemetry?keys=humidity&interval=1h&from=${from()}`, { headers: { authorization: `Bearer ${b.adminKey}` } });
      expect(res.headers.get('guanlink-interval')).toBe('1h');
      expect(res.headers.get('guanlink-sources')).toBe('1h,1m,raw');
    });

    it('reads whole-minute intervals from the minute rollups, others raw, all equal to the raw aggregate', async () => {
      const device = devices[1]!;
      for (const [interval, iv, sources] of [
        ['1m', MINUTE, '1m,raw'],
        ['5m', 5 * MINUTE, '1m,raw'],
        ['90m', 90 * MINUTE, '1m,raw'],
        ['45s', 45_000, 'raw'],
      ] as const) {
        for (const agg of ['avg', 'count', 'last', 'min']) {
          const [f, t] = [from(), to()];
          const res = await fetch(`${b.httpUrl}/api/v1/devices/${device.id}/telemetry?keys=temperature,pressure&interval=${interval}&agg=${agg}&from=${f}&to=${t}`, {
            headers: { authorization: `Bearer ${b.adminKey}` },
          });
          expect(res.headers.get('guanlink-sources')).toBe(sources);
          const body = (await res.json()) as Points;
          expectPoints(body.temperature!, await expected(device.id, 'temperature', iv, agg, f, t));
          expectPoints(body.pressure!, await expected(device.id, 'pressure', iv, agg, f, t));
        }
      }
    });

    it('really reads the rollups (a changed rollup row shows), and limits buckets newest first', async () => {
      const device = devices[0]!;
      const hour = floorTo(t0, HOUR) + HOUR;
      const q = `/api/v1/devices/${device.id}/telemetry?keys=temperature&interval=1h&agg=max&from=${t0}`;
      const before = (await b.api<Points>('GET', q)).body.temperature!;
      const saved = await db.query(`SELECT max FROM rollups_1h_generic WHERE device_id = $1 AND bucket = $2 AND key_id = (SELECT id FROM telemetry_keys WHERE name = 'temperature')`, [device.id, new Date(hour)]);
      await db.query(`UPDATE rollups_1h_generic SET max = 12345 WHERE device_id = $1 AND bucket = $2 AND key_id = (SELECT id FROM telemetry_keys WHERE name = 'temperature')`, [device.id, new Date(hour)]);
      try {
        const after = (await b.api<Points>('GET', q)).body.temperature!;
        expect(after.find((p) => p.ts === hour)!.value).toBe(12345);
      } finally {
        await db.query(`UPDATE rollups_1h_generic SET max = $3 WHERE device_id = $1 AND bucket = $2 AND key_id = (SELECT id FROM telemetry_keys WHERE name = 'temperature')`, [device.id, new Date(hour), saved.rows[0].max]);
      }
      const limited = (await b.api<Points>('GET', `${q}&limit=2`)).body.temperature!;
      expect(limited).toEqual(before.slice(0, 2));
      expect(limited[0]!.ts).toBeGreaterThan(limited[1]!.ts);
    });

    it('auto picks an interval giving at most ~1000 buckets (from the first data when from is omitted)', async () => {
      const device = devices[2]!;
      const res = await fetch(`${b.httpUrl}/api/v1/devices/${device.id}/telemetry?keys=water_level&interval=auto`, { headers: { authorization: `Bearer ${b.adminKey}` } });
      expect(res.status).toBe(200);
      // 4-5 h from the first reading to now: 30 s buckets (10 s would be more than 1000).
      expect(res.headers.get('guanlink-interval')).toBe('30s');
      const body = (await res.json()) as Points;
      expect(body.water_level!.length).toBeGreaterThan(100);
      expect(body.water_level!.length).toBeLessThanOrEqual(1000);
      const day = await fetch(`${b.httpUrl}/api/v1/devices/${device.id}/telemetry?keys=water_level&interval=auto&from=${Date.now() - 30 * 86_400_000}`, {
        headers: { authorization: `Bearer ${b.adminKey}` },
      });
      expect(day.headers.get('guanlink-interval')).toBe('1h');
      expect(day.headers.get('guanlink-sources')).toBe('1h,1m,raw');
    });

    it('keeps the raw behaviour without interval, and refuses bad interval and agg values precisely', async () => {
      const id = devices[0]!.id;
      const raw = await b.api<Points>('GET', `/api/v1/devices/${id}/telemetry?keys=temperature&from=${t0}`);
      expect(raw.body.temperature).toHaveLength(100);
      for (const [query, message] of [
        ['interval=7x', 'interval: "7x" is not a duration like 30s, 5m, 1h or 1d, or auto'],
        ['interval=0s', 'interval: "0s" must be between 1s and 366d'],
        ['interval=1.5h', 'interval: "1.5h" is not a duration'],
        ['interval=1h&agg=median', 'agg: "median" is not one of avg, min, max, count, sum, last'],
        ['agg=max', 'agg needs an interval'],
      ]) {
        const res = await b.api<{ message: string }>('GET', `/api/v1/devices/${id}/telemetry?keys=temperature&${query}`);
        expect(res.status, query).toBe(400);
        expect(res.body.message).toContain(message);
      }
      const openapi = await b.api<{ paths: Record<string, { get: { parameters: { name: string }[] } }> }>('GET', '/api/v1/openapi.json');
      const names = openapi.body.paths['/api/v1/devices/{id}/telemetry']!.get.parameters.map((p) => p.name);
      expect(names).toEqual(expect.arrayContaining(['interval', 'agg', 'limit']));
    });
  });

  it('stays exact with two nodes refreshing the same database while late data arrives', async () => {
    const c = await startTestPlatform({ databaseUrl: database.url, rollupRefreshMs: 50, rollupLatenessMs: 0 });
    try {
      const viaB = await b.connect(devices[1]!.accessToken);
      const viaC = await c.connect(devices[2]!.accessToken);
      const late: Promise<unknown>[] = [];
      for (let i = 0; i < 40; i++) {
        const ts = t0 + Math.floor(rng.next() * 3 * HOUR);
        late.push(viaB.publishAsync(TOPIC, JSON.stringify({ ts, values: { temperature: rng.range(-5, 5), extra: i } }), { qos: 1 }));
        late.push(viaC.publishAsync(TOPIC, JSON.stringify({ ts: ts + 7, values: { water_level: rng.range(0, 9), flow_rate: i } }), { qos: 1 }));
        if (i % 10 === 0) late.push(b.api('POST', '/api/v1/rollups/refresh'), c.api('POST', '/api/v1/rollups/refresh'));
      }
      await Promise.all(late);
      const reports = await Promise.all([b.api<{ skipped: boolean }>('POST', '/api/v1/rollups/refresh'), c.api<{ skipped: boolean }>('POST', '/api/v1/rollups/refresh')]);
      expect(reports.every((r) => r.status === 200)).toBe(true);
      // Node C's periodic refresh picks up whatever is left.
      await eventually(async () => ((await db.query('SELECT count(*)::int AS n FROM rollup_invalidations')).rows[0].n === 0 ? true : undefined));
      await b.api('POST', '/api/v1/rollups/refresh');
      await expectRollupsMatchRaw(db, ids());
    } finally {
      await c.stop();
    }
  });
});
