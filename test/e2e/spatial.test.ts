import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cellToParent, latLngToCell } from 'h3-js';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

type Feature = { type: 'Feature'; geometry: { type: 'Point'; coordinates: number[] }; properties: { deviceId: number; name: string; ts: number; values: Record<string, unknown>; cell: string } };
type Collection = { type: 'FeatureCollection'; features: Feature[]; next?: string | null };

// A small quadrilateral in Dongcheng; positions are chosen inside, outside, on a vertex and on an edge.
const POLYGON = {
  type: 'Polygon',
  coordinates: [[[113.75, 23.0], [113.76, 23.0], [113.76, 23.01], [113.75, 23.01], [113.75, 23.0]]],
};
const INSIDE = [[113.755, 23.005], [113.7501, 23.0099]] as const;
const ON_BOUNDARY = [[113.76, 23.01], [113.755, 23.0]] as const; // a vertex, a point on the southern edge
const OUTSIDE = [[113.7601, 23.005], [113.755, 22.9999], [113.8, 23.05]] as const;

describe('spatial queries over REST (latest, history)', () => {
  let t: TestPlatform;
  let bus: CreatedDevice;
  let aq: CreatedDevice;
  const base = Date.now() - 3_600_000;
  /** Every (device, ts, lng, lat) published, to compute the expected answers independently. */
  const sent: { device: number; ts: number; lng: number; lat: number }[] = [];

  beforeAll(async () => {
    t = await startTestPlatform();
    bus = await t.createDevice({ name: 'bus-1', type: 'bus' });
    aq = await t.createDevice({ name: 'aq-1', type: 'air-quality-station', location: { lat: 23.005, lng: 113.752 } });
    const busClient = await t.connect(bus.accessToken);
    const positions = [...INSIDE, ...ON_BOUNDARY, ...OUTSIDE];
    for (const [i, [lng, lat]] of positions.entries()) {
      const ts = base + i * 60_000;
      await busClient.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts, values: { latitude: lat, longitude: lng, speed: 20 + i } }), { qos: 1 });
      sent.push({ device: bus.id, ts, lng, lat });
    }
    const aqClient = await t.connect(aq.accessToken);
    for (let i = 0; i < 5; i++) {
      const ts = base + i * 60_000 + 30_000;
      await aqClient.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts, values: { aqi: 50 + i, pm25: 10 } }), { qos: 1 });
      sent.push({ device: aq.id, ts, lng: 113.752, lat: 23.005 });
    }
  });
  afterAll(async () => {
    await t?.stop();
  });

  const keyOf = (f: Feature) => `${f.properties.deviceId}@${f.properties.ts}`;
  const expected = (pred: (s: (typeof sent)[number]) => boolean) =>
    sent
      .filter(pred)
      .sort((a, b) => b.ts - a.ts || b.device - a.device)
      .map((s) => `${s.device}@${s.ts}`);
  const inPolygon = (s: { lng: number; lat: number }) => s.lng >= 113.75 && s.lng <= 113.76 && s.lat >= 23.0 && s.lat <= 23.01;
  const window = () => `from=${base - 1}&to=${base + 3_600_000}`;

  it('history in a polygon: exactly the readings inside or on the boundary, newest first, as GeoJSON', async () => {
    const geometry = encodeURIComponent(JSON.stringify(POLYGON));
    const res = await t.api<Collection>('GET', `/api/v1/spatial/history?geometry=${geometry}&${window()}`);
    expect(res.status).toBe(200);
    expect(res.body.type).toBe('FeatureCollection');
    expect(res.body.features.map(keyOf)).toEqual(expected(inPolygon));
    const onVertex = res.body.features.find((f) => f.properties.ts === sent[2]!.ts)!;
    expect(onVertex.geometry).toEqual({ type: 'Point', coordinates: [113.76, 23.01] });
    expect(onVertex.properties.values).toEqual({ speed: 22 });
    expect(onVertex.properties.cell).toBe(latLngToCell(23.01, 113.76, 15));
    expect(res.body.next).toBeNull();
  });

  it('the same through POST with the polygon in the body, and as a Feature', async () => {
    const res = await t.api<Collection>('POST', '/api/v1/spatial/history', { geometry: { type: 'Feature', properties: {}, geometry: POLYGON }, from: String(base - 1), to: String(base + 3_600_000) });
    expect(res.status).toBe(200);
    expect(res.body.features.map(keyOf)).toEqual(expected(inPolygon));
  });

  it('bbox, circle and H3 cells select exactly', async () => {
    const bbox = await t.api<Collection>('GET', `/api/v1/spatial/history?bbox=113.75,23.0,113.76,23.01&${window()}`);
    expect(bbox.body.features.map(keyOf)).toEqual(expected(inPolygon));
    // 600 m around the air-quality station: its readings and the bus's nearby positions.
    const circle = await t.api<Collection>('GET', `/api/v1/spatial/history?lat=23.005&lng=113.752&radius=600&${window()}`);
    const near = (s: { lng: number; lat: number }) => {
      const dLat = ((s.lat - 23.005) * Math.PI) / 180;
      const dLng = ((s.lng - 113.752) * Math.PI) / 180;
      const a = Math.sin(dLat / 2) ** 2 + Math.cos((23.005 * Math.PI) / 180) * Math.cos((s.lat * Math.PI) / 180) * Math.sin(dLng / 2) ** 2;
      return 2 * 6_371_008.8 * Math.asin(Math.sqrt(a)) <= 600;
    };
    expect(circle.body.features.map(keyOf)).toEqual(expected(near));
    const cell = cellToParent(latLngToCell(23.005, 113.752, 15), 9);
    const cells = await t.api<Collection>('GET', `/api/v1/spatial/history?cells=${cell}&${window()}`);
    expect(cells.body.features.map(keyOf)).toEqual(expected((s) => cellToParent(latLngToCell(s.lat, s.lng, 15), 9) === cell));
    expect(cells.body.features.length).toBeGreaterThanOrEqual(5);
  });

  it('filters by domain, type and keys; keys narrow the values returned', async () => {
    const byDomain = await t.api<Collection>('GET', `/api/v1/spatial/history?bbox=113.7,22.9,113.9,23.1&domain=environment&${window()}`);
    expect(byDomain.body.features.map(keyOf)).toEqual(expected((s) => s.device === aq.id));
    const byType = await t.api<Collection>('GET', `/api/v1/spatial/history?bbox=113.7,22.9,113.9,23.1&type=bus&${window()}`);
    expect(byType.body.features.map(keyOf)).toEqual(expected((s) => s.device === bus.id));
    const byKey = await t.api<Collection>('GET', `/api/v1/spatial/history?bbox=113.7,22.9,113.9,23.1&keys=aqi&${window()}`);
    expect(byKey.body.features.map(keyOf)).toEqual(expected((s) => s.device === aq.id));
    expect(byKey.body.features.every((f) => Object.keys(f.properties.values).join() === 'aqi')).toBe(true);
  });

  it('paginates with a cursor: every reading once, in order', async () => {
    const seen: string[] = [];
    let cursor: string | null | undefined;
    for (let page = 0; page < 20; page++) {
      const res = await t.api<{ readings: { deviceId: number; ts: number }[]; next: string | null }>(
        'GET',
        `/api/v1/spatial/history?bbox=113.7,22.9,113.9,23.1&format=json&limit=3&${window()}${cursor ? `&cursor=${cursor}` : ''}`,
      );
      expect(res.status).toBe(200);
      seen.push(...res.body.readings.map((r) => `${r.deviceId}@${r.ts}`));
      cursor = res.body.next;
      if (!cursor) break;
    }
    expect(seen).toEqual(expected(() => true));
  });

  it('latest: each device whose latest position is in the area, with its latest values', async () => {
    const res = await eventually(async () => {
      const r = await t.api<Collection>('GET', '/api/v1/spatial/latest?bbox=113.7,22.9,113.9,23.1');
      return r.body.features?.length === 2 ? r : undefined;
    });
    const byName = Object.fromEntries(res.body.features.map((f) => [f.properties.name, f]));
    expect(byName['bus-1']!.geometry.coordinates).toEqual([113.8, 23.05]);
    expect(byName['aq-1']!.properties.values).toMatchObject({ aqi: { value: 54 } });
    // The bus's latest position is outside the polygon; the station is inside.
    const inside = await t.api<Collection>('GET', `/api/v1/spatial/latest?geometry=${encodeURIComponent(JSON.stringify(POLYGON))}`);
    expect(inside.body.features.map((f) => f.properties.name)).toEqual(['aq-1']);
    const json = await t.api<{ devices: { name: string }[] }>('GET', '/api/v1/spatial/latest?bbox=113.7,22.9,113.9,23.1&type=bus&format=json');
    expect(json.body.devices.map((d) => d.name)).toEqual(['bus-1']);
    const page1 = await t.api<Collection>('GET', '/api/v1/spatial/latest?bbox=113.7,22.9,113.9,23.1&limit=1');
    expect(page1.body.features.map((f) => f.properties.name)).toEqual(['bus-1']);
    const page2 = await t.api<Collection>('GET', `/api/v1/spatial/latest?bbox=113.7,22.9,113.9,23.1&limit=1&cursor=${page1.body.next}`);
    expect(page2.body.features.map((f) => f.properties.name)).toEqual(['aq-1']);
    expect(page2.body.next).toBeNull();
  });

  it('refuses bad requests with a precise reason', async () => {
    const bowtie = { type: 'Polygon', coordinates: [[[113.75, 23.0], [113.76, 23.01], [113.76, 23.0], [113.75, 23.01], [113.75, 23.0]]] };
    const unclosed = { type: 'Polygon', coordinates: [[[113.75, 23.0], [113.76, 23.0], [113.76, 23.01], [113.75, 23.01]]] };
    const many = { type: 'Polygon', coordinates: [[...Array.from({ length: 10_001 }, (_, i) => [113.75 + 0.01 * Math.cos((2 * Math.PI * i) / 10_001), 23 + 0.01 * Math.sin((2 * Math.PI * i) / 10_001)]), [113.76, 23]]] };
    const cases: [string, unknown, RegExp][] = [
      ['POST', { geometry: bowtie }, /intersects itself/],
      ['POST', { geometry: unclosed }, /not closed/],
      ['POST', { geometry: many }, /vertices/],
      ['POST', { bbox: [113.7, 22.9, 113.9, 23.1], from: '2026-11-02T00:00:00Z', to: '2026-11-01T00:00:00Z' }, /before/],
      ['POST', { bbox: [113.7, 22.9, 113.9, 23.1], from: '2020-01-01T00:00:00Z', to: '2026-01-01T00:00:00Z' }, /366 days/],
      ['POST', { bbox: [113.7, 22.9, 113.9, 23.1], keys: ['no_such_key'] }, /no_such_key/],
      ['POST', { bbox: [113.7, 22.9, 113.9, 23.1], lat: 23, lng: 113, radius: 5 }, /exactly one area/],
      ['POST', {}, /exactly one area/],
      ['POST', { bbox: [113.9, 22.9, 113.7, 23.1] }, /minLng/],
      ['POST', { lat: 23, lng: 113.7, radius: 1e9 }, /radius/],
      ['POST', { cells: ['not-a-cell'] }, /not a valid H3 cell/],
      ['POST', { bbox: [113.7, 22.9, 113.9, 23.1], cursor: 'bm9wZQ' }, /cursor/],
      ['POST', { bbox: [113.7, 22.9, 113.9, 23.1], type: 'spaceship' }, /spaceship/],
    ];
    for (const [method, body, reason] of cases) {
      const res = await t.api<{ message: string }>(method, '/api/v1/spatial/history', body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(res.body.message).toMatch(reason);
    }
    const noAuth = await t.api('GET', '/api/v1/spatial/history?bbox=113.7,22.9,113.9,23.1', undefined, { auth: false });
    expect(noAuth.status).toBe(401);
  });
});
