import { booleanClockwise, booleanPointInPolygon } from '@turf/turf';
import { cellToLatLng, cellToParent, getResolution, isValidCell, latLngToCell } from 'h3-js';
import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BUCKET_ORIGIN, HOUR, MINUTE, floorTo } from '../../db/buckets.ts';
import { testPool } from '../support/database.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

const TOPIC = 'v1/devices/me/telemetry';
const BBOX = [113.7, 22.95, 113.8, 23.05] as const;
const inBbox = (lng: number, lat: number) => lng >= BBOX[0] && lng <= BBOX[2] && lat >= BBOX[1] && lat <= BBOX[3];

interface Reading {
  device: string;
  ts: number;
  lat: number;
  lng: number;
  value: number;
}
type Row = Record<string, number | string> & { cell: string; bucket: number };
interface Answer {
  key: string;
  resolution: number;
  interval: string | null;
  stats: string[];
  sources: string[];
  truncated: boolean;
  rows: Row[];
}

/** Linear interpolation between closest ranks (numpy's default, PostgreSQL's percentile_cont). */
function percentile(sorted: number[], q: number): number {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** The aggregates computed here from what the devices sent: cell × bucket → stats. */
function expectedRows(readings: Reading[], o: { from: number; to: number; resolution: number; intervalMs?: number; percentiles?: number[]; devices?: Set<string> }): Row[] {
  const groups = new Map<string, { cell: string; bucket: number; values: number[] }>();
  for (const r of readings) {
    if (r.ts < o.from || r.ts >= o.to || !inBbox(r.lng, r.lat) || (o.devices && !o.devices.has(r.device))) continue;
    const cell = cellToParent(latLngToCell(r.lat, r.lng, 15), o.resolution);
    const bucket = o.intervalMs === undefined ? o.from : floorTo(r.ts - BUCKET_ORIGIN, o.intervalMs) + BUCKET_ORIGIN;
    const id = `${bucket}/${cell}`;
    let g = groups.get(id);
    if (!g) groups.set(id, (g = { cell, bucket, values: [] }));
    g.values.push(r.value);
  }
  return [...groups.values()]
    .map(({ cell, bucket, values }) => {
      const sorted = [...values].sort((a, b) => a - b);
      const sum = values.reduce((a, b) => a + b, 0);
      const row: Row = { cell, bucket, count: values.length, sum, avg: sum / values.length, min: sorted[0]!, max: sorted[sorted.length - 1]! };
      for (const q of o.percentiles ?? []) row[`p${Number((q * 100).toPrecision(12))}`] = percentile(sorted, q);
      return row;
    })
    .sort((a, b) => a.bucket - b.bucket || (a.cell < b.cell ? -1 : a.cell > b.cell ? 1 : 0));
}

/** Same cells, buckets and stats: counts, minima and maxima exactly, sums, means and percentiles to rounding. */
function expectSameRows(actual: Row[], expected: Row[], stats: string[]): void {
  expect(expected.length).toBeGreaterThan(0);
  expect(actual.map((r) => `${r.bucket}/${r.cell}`)).toEqual(expected.map((r) => `${r.bucket}/${r.cell}`));
  actual.forEach((a, i) => {
    const e = expected[i]!;
    expect(Object.keys(a).sort()).toEqual(['bucket', 'cell', ...stats].sort());
    for (const s of stats) {
      if (s === 'count' || s === 'min' || s === 'max') expect(a[s], `${a.cell} ${a.bucket} ${s}`).toBe(e[s]);
      else expect(Math.abs((a[s] as number) - (e[s] as number)), `${a.cell} ${a.bucket} ${s}: ${a[s]} vs ${e[s]}`).toBeLessThanOrEqual(1e-9 * Math.max(1, Math.abs(e[s] as number)));
    }
  });
}

describe('spatial aggregates (heatmaps): GET|POST /api/v1/spatial/aggregate', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  const readings: Reading[] = [];
  const devices = new Map<string, CreatedDevice>();
  const now = Date.now();
  const t0 = floorTo(now - 5 * HOUR, HOUR); // history: t0 … t0 + 3.5 h
  const end = t0 + 3.5 * HOUR;
  // Not aligned to minutes or hours: the edges must come from raw readings.
  const from = t0 + 7 * MINUTE + 13_000;
  const to = t0 + 3 * HOUR + 20 * MINUTE + 500;

  async function get(query: string): Promise<{ status: number; headers: Headers; body: Answer & Record<string, unknown> }> {
    const res = await fetch(`${t.httpUrl}/api/v1/spatial/aggregate?${query}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
    return { status: res.status, headers: res.headers, body: (await res.json()) as never };
  }
  async function post(body: unknown): Promise<{ status: number; headers: Headers; body: Answer & Record<string, unknown> }> {
    const res = await fetch(`${t.httpUrl}/api/v1/spatial/aggregate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    return { status: res.status, headers: res.headers, body: (await res.json()) as never };
  }
  const window = `bbox=${BBOX.join(',')}&from=${new Date(from).toISOString()}&to=${to}&key=speed`;

  async function publish(client: MqttClient, entries: { ts: number; values: Record<string, number> }[]): Promise<void> {
    for (let i = 0; i < entries.length; i += 100) await client.publishAsync(TOPIC, JSON.stringify(entries.slice(i, i + 100)), { qos: 1 });
  }

  beforeAll(async () => {
    // Rollups only when asked (POST /rollups/refresh), of every minute that has ended.
    t = await startTestPlatform({ rollupRefreshMs: 0, rollupLatenessMs: 0 });
    db = testPool(t.databaseUrl, 2);
    const camera = await t.api('POST', '/api/v1/device-types', {
      name: 'speed-camera',
      domain: 'traffic',
      label: { en: 'Speed camera', zh: '测速摄像头' },
      keys: { speed: { unit: 'km/h', min: 0, max: 150 } },
      moving: false,
      acceptsUndeclaredKeys: false,
    });
    expect(camera.status).toBe(201);
    const fixed: [string, string, number, number][] = [
      ['cam-1', 'speed-camera', 23.02, 113.75],
      ['cam-2', 'speed-camera', 22.97, 113.71], // another res-7 cell
      ['cam-out', 'speed-camera', 23.2, 113.9], // outside the area
      ['gen-1', 'generic', 23.0201, 113.7502], // another domain, next to cam-1
      ['cam-new', 'speed-camera', 23.04, 113.79], // registered just now: its history is read raw
    ];
    for (const [name, type, lat, lng] of fixed) devices.set(name, await t.createDevice({ name, type, location: { lat, lng } }));
    devices.set('bus-1', await t.createDevice({ name: 'bus-1', type: 'bus' }));
    // Stations registered long before the window (their location has not changed since).
    await db.query(`UPDATE devices SET created_at = $1, updated_at = $1 WHERE name <> ALL ($2)`, [new Date(t0 - 86_400_000), ['cam-new', 'bus-1']]);

    let seed = 1;
    const value = () => ((seed = (seed * 48271) % 2147483647) % 1200) / 10; // 0.0 … 119.9
    for (const [name, , lat, lng] of fixed) {
      const entries: { ts: number; values: Record<string, number> }[] = [];
      for (let ts = t0 + (name.length * 1000) % 30_000; ts < end; ts += 30_000) {
        const v = value();
        entries.push({ ts, values: { speed: v } });
        readings.push({ device: name, ts, lat, lng, value: v });
      }
      await publish(await t.connect(devices.get(name)!.accessToken), entries);
    }
    // The bus drives west → east across the area and out of it, then back.
    const entries: { ts: number; values: Record<string, number> }[] = [];
    for (let ts = t0 + 5000, i = 0; ts < end; ts += 20_000, i++) {
      const lng = 113.68 + ((i % 300) / 300) * 0.14;
      const lat = 22.96 + ((i * 7) % 90) / 1000;
      const v = value();
      entries.push({ ts, values: { speed: v, latitude: lat, longitude: lng } });
      readings.push({ device: 'bus-1', ts, lat, lng, value: v });
    }
    await publish(await t.connect(devices.get('bus-1')!.accessToken), entries);
    await eventually(async () => ((await db.query('SELECT count(*)::int AS n FROM readings')).rows[0].n === readings.length ? true : undefined), { timeoutMs: 20_000 });
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('before any rollup: hourly aggregates per res-7 cell from raw readings, exactly', async () => {
    const res = await get(`${window}&resolution=7&interval=1h&format=json`);
    expect(res.status).toBe(200);
    expect(res.headers.get('guanlink-sources')).toBe('raw');
    expect(res.headers.get('guanlink-interval')).toBe('1h');
    expect(res.body).toMatchObject({ key: 'speed', resolution: 7, interval: '1h', stats: ['count', 'avg', 'min', 'max'], sources: ['raw'], truncated: false });
    const expected = expectedRows(readings, { from, to, resolution: 7, intervalMs: HOUR });
    expectSameRows(res.body.rows, expected, ['count', 'avg', 'min', 'max']);
    // The bus, both static domains and the recently registered camera are all in; the camera outside is not.
    expect(res.body.rows.reduce((n, r) => n + (r.count as number), 0)).toBe(readings.filter((r) => r.ts >= from && r.ts < to && inBbox(r.lng, r.lat)).length);
    expect(readings.some((r) => r.device === 'bus-1' && !inBbox(r.lng, r.lat))).toBe(true);
  });

  describe('after the rollups are refreshed', () => {
    beforeAll(async () => {
      const refreshed = await t.api<{ done: string; rows1h: number }>('POST', '/api/v1/rollups/refresh');
      expect(refreshed.status).toBe(200);
      expect(Date.parse(refreshed.body.done)).toBeGreaterThan(end);
      expect(refreshed.body.rows1h).toBeGreaterThan(0);
    });

    it('hourly buckets read the 1-hour rollups of the fixed stations (1-minute and raw at the edges) and equal the raw answer', async () => {
      const stats = ['count', 'sum', 'avg', 'min', 'max'];
      const res = await get(`${window}&resolution=7&interval=1h&stats=${stats.join(',')}&format=json`);
      expect(res.status).toBe(200);
      expect(res.body.sources).toEqual(['1h', '1m', 'raw']);
      expect(res.headers.get('guanlink-sources')).toBe('1h,1m,raw');
      const expected = expectedRows(readings, { from, to, resolution: 7, intervalMs: HOUR });
      expectSameRows(res.body.rows, expected, stats);
      const raw = await get(`${window}&resolution=7&interval=1h&stats=${stats.join(',')}&format=json&source=raw`);
      expect(raw.body.sources).toEqual(['raw']);
      expectSameRows(res.body.rows, raw.body.rows, stats);
    });

    it('15-minute buckets at resolution 9 read the 1-minute rollups; the whole window (no interval) reads the 1-hour ones', async () => {
      const quarter = await get(`${window}&resolution=9&interval=15m&format=json`);
      expect(quarter.body.sources).toEqual(['1m', 'raw']);
      expectSameRows(quarter.body.rows, expectedRows(readings, { from, to, resolution: 9, intervalMs: 15 * MINUTE }), ['count', 'avg', 'min', 'max']);

      const whole = await get(`${window}&resolution=8&format=json`);
      expect(whole.body).toMatchObject({ interval: null, sources: ['1h', '1m', 'raw'] });
      expect(new Set(whole.body.rows.map((r) => r.bucket))).toEqual(new Set([from]));
      expectSameRows(whole.body.rows, expectedRows(readings, { from, to, resolution: 8 }), ['count', 'avg', 'min', 'max']);
    });

    it('percentiles come from raw readings, exactly as computed here (stats=p50,p90 and percentile=0.25)', async () => {
      const res = await get(`${window}&resolution=7&interval=1h&stats=count,p50,p90&percentile=0.25&format=json`);
      expect(res.status).toBe(200);
      expect(res.body.sources).toEqual(['raw']);
      expect(res.body.stats).toEqual(['count', 'p50', 'p90', 'p25']);
      const expected = expectedRows(readings, { from, to, resolution: 7, intervalMs: HOUR, percentiles: [0.5, 0.9, 0.25] });
      expectSameRows(res.body.rows, expected, ['count', 'p50', 'p90', 'p25']);
    });

    it('a late reading in a rolled-up hour is counted at once (its minute is read raw until recomputed)', async () => {
      const cam = devices.get('cam-1')!;
      const late = t0 + HOUR + 25 * MINUTE + 1234;
      await publish(await t.connect(cam.accessToken), [{ ts: late, values: { speed: 149.5 } }]);
      readings.push({ device: 'cam-1', ts: late, lat: 23.02, lng: 113.75, value: 149.5 });
      await eventually(async () => ((await db.query('SELECT count(*)::int AS n FROM rollup_invalidations')).rows[0].n === 1 ? true : undefined));
      const res = await get(`${window}&resolution=7&interval=1h&format=json`);
      expect(res.body.sources).toEqual(['1h', '1m', 'raw']);
      const expected = expectedRows(readings, { from, to, resolution: 7, intervalMs: HOUR });
      expect(expected.some((r) => r.max === 149.5)).toBe(true);
      expectSameRows(res.body.rows, expected, ['count', 'avg', 'min', 'max']);
    });

    it('filters by type and domain: the bus alone comes from raw readings; the stations alone from rollups', async () => {
      const bus = await get(`${window}&resolution=8&interval=1h&type=bus&format=json`);
      expect(bus.body.sources).toEqual(['raw']);
      expectSameRows(bus.body.rows, expectedRows(readings, { from, to, resolution: 8, intervalMs: HOUR, devices: new Set(['bus-1']) }), ['count', 'avg', 'min', 'max']);
      const generic = await get(`${window}&resolution=8&interval=1h&domain=generic&format=json`);
      expect(generic.body.sources).toEqual(['1h', '1m', 'raw']);
      expectSameRows(generic.body.rows, expectedRows(readings, { from, to, resolution: 8, intervalMs: HOUR, devices: new Set(['gen-1']) }), ['count', 'avg', 'min', 'max']);
    });
  });

  it('aggregates position keys too (raw readings): the latitude of the bus per cell', async () => {
    const res = await get(`${window.replace('key=speed', 'key=latitude')}&resolution=7&interval=1h&type=bus&format=json`);
    expect(res.status).toBe(200);
    expect(res.body.sources).toEqual(['raw']);
    const bus = readings.filter((r) => r.device === 'bus-1').map((r) => ({ ...r, value: r.lat }));
    expectSameRows(res.body.rows, expectedRows(bus, { from, to, resolution: 7, intervalMs: HOUR }), ['count', 'avg', 'min', 'max']);
  });

  it('answers GeoJSON hexagons (RFC 7946): one Polygon per cell × bucket, closed counter-clockwise [lng, lat] rings around the cell', async () => {
    const res = await get(`${window}&resolution=8&interval=1h&stats=count,avg,p90`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/geo\+json/);
    const fc = res.body as unknown as { type: string; features: { type: string; geometry: { type: string; coordinates: number[][][] }; properties: Row }[] };
    expect(fc.type).toBe('FeatureCollection');
    const json = await get(`${window}&resolution=8&interval=1h&stats=count,avg,p90&format=json`);
    expect(fc.features.map((f) => f.properties)).toEqual(json.body.rows);
    expect(fc.features.length).toBeGreaterThan(5);
    for (const f of fc.features) {
      expect(f.type).toBe('Feature');
      expect(f.geometry.type).toBe('Polygon');
      expect(f.geometry.coordinates).toHaveLength(1);
      const ring = f.geometry.coordinates[0]!;
      expect(ring.length).toBe(7); // a hexagon, closed
      expect(ring[0]).toEqual(ring[ring.length - 1]);
      for (const [lng, lat] of ring) {
        expect(Math.abs(lng! - 113.75)).toBeLessThan(0.2); // [lng, lat], not [lat, lng]
        expect(Math.abs(lat! - 23)).toBeLessThan(0.2);
      }
      expect(booleanClockwise(ring)).toBe(false);
      expect(isValidCell(f.properties.cell)).toBe(true);
      expect(getResolution(f.properties.cell)).toBe(8);
      const [lat, lng] = cellToLatLng(f.properties.cell);
      expect(booleanPointInPolygon([lng, lat], f.geometry as never)).toBe(true);
    }
  });

  it('POST takes the same names in a JSON body: a polygon area and arrays', async () => {
    const geometry = { type: 'Polygon', coordinates: [[[BBOX[0], BBOX[1]], [BBOX[2], BBOX[1]], [BBOX[2], BBOX[3]], [BBOX[0], BBOX[3]], [BBOX[0], BBOX[1]]]] };
    const res = await post({ geometry, from: String(from), to: String(to), key: 'speed', resolution: 7, interval: '1h', stats: ['count', 'max'], format: 'json' });
    expect(res.status).toBe(200);
    expectSameRows(res.body.rows, expectedRows(readings, { from, to, resolution: 7, intervalMs: HOUR }), ['count', 'max']);
  });

  it('refuses bad input with 400 and a precise reason', async () => {
    const cases: [string, string, RegExp][] = [
      [`bbox=113,22,114.5,23.5&key=speed&resolution=10&from=${from}&to=${to}`, 'area_too_large', /too large for the requested resolution.*resolution 10/],
      [`${window}&resolution=9&interval=1m`, 'area_too_large', /× 194 bucket/],
      [`bbox=${BBOX.join(',')}&key=speed&resolution=7&from=${to}&to=${from}`, 'invalid_selection', /must be before/],
      [`bbox=${BBOX.join(',')}&key=speed&resolution=7&from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z`, 'invalid_selection', /longer than 366 days/],
      [`bbox=${BBOX.join(',')}&key=speed&resolution=7&from=yesterday`, 'invalid_selection', /from: "yesterday" is not/],
      [`key=speed&resolution=7`, 'invalid_selection', /exactly one area/],
      [`bbox=${BBOX.join(',')}&key=no_such_key&resolution=7`, 'unknown_key', /no device has ever sent "no_such_key"/],
      [`${window}&resolution=7&keys=speed`, 'invalid_selection', /name the one key/],
      [`${window}&resolution=7&percentile=1.5`, 'invalid_percentile', /1\.5.*between 0 and 1/],
      [`${window}&resolution=7&percentile=-0.1`, 'invalid_percentile', /between 0 and 1/],
      [`${window}&resolution=7&stats=p101`, 'invalid_percentile', /p101/],
      [`${window}&resolution=7&stats=median`, 'invalid_stats', /"median" is not one of/],
      [`${window}&resolution=7&interval=1s`, 'too_many_buckets', /makes 1\d{4} buckets; at most 10000/],
      [`${window}&resolution=7&interval=auto`, 'invalid_interval', /auto/],
      [`${window}&resolution=7&interval=5x`, 'invalid_interval', /not a duration/],
    ];
    for (const [query, code, message] of cases) {
      const res = await get(query);
      expect({ query, status: res.status, code: res.body.code }).toEqual({ query, status: 400, code });
      expect(res.body.message, query).toMatch(message);
    }
    const validation = await get(`${window}&resolution=16`);
    expect(validation.status).toBe(400);
    expect(validation.body.message).toMatch(/resolution/);
    const missing = await get(`${window.replace('&key=speed', '')}&resolution=7`);
    expect(missing.status).toBe(400);
    expect(missing.body.message).toMatch(/key/);
  });
});
