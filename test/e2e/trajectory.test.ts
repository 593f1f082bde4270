import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

interface TrackProperties {
  kind: 'track';
  deviceId: number;
  name: string;
  type: string;
  from: string;
  to: string;
  timestamps: number[];
  pointCount: number;
  simplifyMetres: number | null;
  distanceMetres: number;
  durationSeconds: number | null;
  speed: { max: number | null; mean: number | null; median: number | null };
  stopCriteria: { minutes: number; radiusMetres: number };
  truncated: boolean;
  next: string | null;
}
interface StopProperties {
  kind: 'stop';
  from: string;
  to: string;
  durationSeconds: number;
  points: number;
}
interface Feature<G, P> {
  type: 'Feature';
  geometry: G;
  properties: P;
}
type TrackFeature = Feature<{ type: 'LineString'; coordinates: number[][] } | null, TrackProperties>;
type StopFeature = Feature<{ type: 'Point'; coordinates: number[] }, StopProperties>;
interface Trajectory {
  type: 'FeatureCollection';
  features: [TrackFeature, ...StopFeature[]];
}
interface ErrorBody {
  statusCode: number;
  code: string;
  message: string;
}

interface Sent {
  ts: number;
  lng: number;
  lat: number;
  alt?: number;
}

const MIN = 60_000;
const R = 6_371_008.8;
const RAD = Math.PI / 180;

/** Haversine on Turf's sphere: the truth the API's distance is checked against. */
function haversine(a: Sent, b: Sent): number {
  const dLat = (b.lat - a.lat) * RAD;
  const dLng = (b.lng - a.lng) * RAD;
  const h = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * RAD) * Math.cos(b.lat * RAD) * Math.sin(dLng / 2) ** 2;
  return 2 * R * Math.asin(Math.sqrt(h));
}

/** Metres to degrees of latitude / of longitude at `lat`. */
const dLat = (m: number) => m / (R * RAD);
const dLng = (m: number, lat: number) => m / (R * RAD * Math.cos(lat * RAD));

/**
 * A bus route in Dongguan: north 3 km at 10 m/s (a position every 10 s), a 10-minute dwell at a
 * terminus (a position every 30 s, GPS jitter up to 9 m), east 3 km, a 4-minute dwell, north 1.5 km.
 */
function busRoute(t0: number): Sent[] {
  const out: Sent[] = [];
  let ts = t0;
  let lat = 23.02;
  let lng = 113.75;
  out.push({ ts, lng, lat });
  const drive = (minutes: number, heading: 'north' | 'east') => {
    for (let i = 0; i < minutes * 6; i++) {
      ts += 10_000;
      if (heading === 'north') lat += dLat(100);
      else lng += dLng(100, lat);
      out.push({ ts, lng, lat });
    }
  };
  const dwell = (minutes: number) => {
    for (let k = 1; k <= minutes * 2; k++) {
      ts += 30_000;
      const r = 9 * ((k % 10) / 10);
      const angle = k * 137 * RAD;
      out.push({ ts, lng: lng + dLng(r * Math.sin(angle), lat), lat: lat + dLat(r * Math.cos(angle)) });
    }
  };
  drive(5, 'north');
  dwell(10);
  drive(5, 'east');
  dwell(4);
  drive(2.5, 'north');
  return out;
}

describe('trajectories: GET /api/v1/devices/{id}/trajectory', () => {
  let t: TestPlatform;
  let bus: CreatedDevice;
  let route: Sent[];
  let t0: number;
  const get = <T = Trajectory>(device: number, query: string) => t.api<T>('GET', `/api/v1/devices/${device}/trajectory?${query}`);
  const iso = (ms: number) => new Date(ms).toISOString();
  const track = (body: Trajectory) => body.features[0];
  const stops = (body: Trajectory) => body.features.slice(1) as StopFeature[];

  beforeAll(async () => {
    t = await startTestPlatform();
    bus = await t.createDevice({ name: 'bus-769', type: 'bus' });
    t0 = Math.floor(Date.now() / 1000) * 1000 - 3 * 3_600_000;
    route = busRoute(t0);
    const c = await t.connect(bus.accessToken);
    const entries: object[] = route.map((p) => ({ ts: p.ts, values: { latitude: p.lat, longitude: p.lng, speed: 30 } }));
    // A reading without a position (the bus registered none): not a track point.
    entries.push({ ts: t0 + 5 * MIN + 5_000, values: { passengers: 31 } });
    // Acknowledged after commit: readable once the promise resolves.
    await c.publishAsync('v1/devices/me/telemetry', JSON.stringify(entries), { qos: 1 });
  });
  afterAll(async () => {
    await t?.stop();
  });

  const window = () => `from=${iso(t0 - MIN)}&to=${iso(route.at(-1)!.ts + MIN)}`;

  it('answers GeoJSON: the raw track oldest first, a timestamp per vertex, the distance, speeds and the 10-minute stop', async () => {
    const res = await fetch(`${t.httpUrl}/api/v1/devices/${bus.id}/trajectory?${window()}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^application\/geo\+json/);
    const body = (await res.json()) as Trajectory;
    expect(body.type).toBe('FeatureCollection');
    const line = track(body);
    expect(line.type).toBe('Feature');
    expect(line.geometry!.type).toBe('LineString');
    // Every position sent, in order, [lng, lat] exactly as sent (no altitude sent: 2D)
    expect(line.geometry!.coordinates).toEqual(route.map((p) => [p.lng, p.lat]));
    expect(line.properties.timestamps).toEqual(route.map((p) => p.ts));
    expect(line.properties).toMatchObject({
      kind: 'track',
      deviceId: bus.id,
      name: 'bus-769',
      type: 'bus',
      from: iso(t0 - MIN),
      pointCount: route.length,
      simplifyMetres: null,
      durationSeconds: (route.at(-1)!.ts - t0) / 1000,
      stopCriteria: { minutes: 5, radiusMetres: 50 },
      truncated: false,
      next: null,
    });

    let truth = 0;
    for (let i = 1; i < route.length; i++) truth += haversine(route[i - 1]!, route[i]!);
    expect(truth).toBeGreaterThan(7400); // 3 + 3 + 1.5 km of driving, plus the jitter
    expect(Math.abs(line.properties.distanceMetres - truth)).toBeLessThan(1);
    const { speed } = line.properties;
    expect(speed.max!).toBeGreaterThan(9.99);
    expect(speed.max!).toBeLessThan(10.01); // 100 m per 10 s (jitter steps are slower)
    expect(speed.median!).toBeCloseTo(10, 1); // most segments are driving
    expect(speed.mean!).toBeCloseTo(truth / ((route.at(-1)!.ts - t0) / 1000), 2);

    // Default criteria (5 min, 50 m): the 10-minute dwell only, where and when it was
    const found = stops(body);
    expect(found).toHaveLength(1);
    const arrival = route[30]!; // after 5 minutes of driving, a position every 10 s
    expect(found[0]!.properties).toEqual({ kind: 'stop', from: iso(arrival.ts), to: iso(arrival.ts + 10 * MIN), durationSeconds: 600, points: 21 });
    expect(found[0]!.geometry.type).toBe('Point');
    const [lng, lat] = found[0]!.geometry.coordinates as [number, number];
    expect(haversine({ ts: 0, lng, lat }, arrival)).toBeLessThan(5);
  });

  it('finds the 4-minute stop too with stopMinutes=3, and none with a 2 m radius', async () => {
    const res = await get(bus.id, `${window()}&stopMinutes=3`);
    expect(res.status).toBe(200);
    expect(stops(res.body).map((s) => s.properties.durationSeconds)).toEqual([600, 240]);
    expect(track(res.body).properties.stopCriteria).toEqual({ minutes: 3, radiusMetres: 50 });
    const tight = await get(bus.id, `${window()}&stopMinutes=3&stopRadius=2`);
    expect(stops(tight.body)).toEqual([]);
  });

  it('simplify thins the line, keeps both ends and each kept vertex’s own timestamp; distance stays that of the raw track', async () => {
    const full = await get(bus.id, window());
    const res = await get(bus.id, `${window()}&simplify=20`);
    expect(res.status).toBe(200);
    const line = track(res.body);
    const coordinates = line.geometry!.coordinates;
    // The three straight legs and the two dwells (jitter < 20 m) collapse to a handful of vertices
    expect(coordinates.length).toBeLessThan(12);
    expect(coordinates.length).toBeGreaterThanOrEqual(4);
    expect(line.properties.timestamps).toHaveLength(coordinates.length);
    expect(line.properties.timestamps[0]).toBe(t0);
    expect(line.properties.timestamps.at(-1)).toBe(route.at(-1)!.ts);
    const byTs = new Map(route.map((p) => [p.ts, [p.lng, p.lat]]));
    line.properties.timestamps.forEach((ts, i) => expect(coordinates[i]).toEqual(byTs.get(ts)));
    expect(line.properties).toMatchObject({ simplifyMetres: 20, pointCount: route.length });
    expect(line.properties.distanceMetres).toBe(track(full.body).properties.distanceMetres);
    expect(stops(res.body)).toEqual(stops(full.body));
    // 0 means no simplification
    expect(track((await get(bus.id, `${window()}&simplify=0`)).body).geometry!.coordinates).toHaveLength(route.length);
  });

  it('says when the limit truncated the track, and where the next request starts', async () => {
    const res = await get(bus.id, `${window()}&limit=10`);
    expect(res.status).toBe(200);
    const line = track(res.body);
    expect(line.properties).toMatchObject({ pointCount: 10, truncated: true, next: iso(route[10]!.ts) });
    expect(line.properties.timestamps).toEqual(route.slice(0, 10).map((p) => p.ts));
    const rest = await get(bus.id, `from=${line.properties.next}&to=${iso(route.at(-1)!.ts + MIN)}&limit=100000`);
    expect(track(rest.body).properties).toMatchObject({ pointCount: route.length - 10, truncated: false, next: null });
    expect(track(rest.body).properties.timestamps[0]).toBe(route[10]!.ts);
  });

  it('fewer than two positions: a Feature with null geometry (RFC 7946 §3.2), not an invalid LineString', async () => {
    const one = await get(bus.id, `from=${iso(t0)}&to=${iso(t0 + 5_000)}`);
    expect(one.status).toBe(200);
    expect(track(one.body)).toMatchObject({ type: 'Feature', geometry: null, properties: { pointCount: 1, timestamps: [], durationSeconds: 0, distanceMetres: 0 } });
    expect(track(one.body).properties.speed).toEqual({ max: null, mean: null, median: null });
    const none = await get(bus.id, `from=${iso(t0 - 60 * MIN)}&to=${iso(t0 - MIN)}`);
    expect(none.status).toBe(200);
    expect(none.body.features).toHaveLength(1);
    expect(track(none.body)).toMatchObject({ geometry: null, properties: { pointCount: 0, timestamps: [], durationSeconds: null, distanceMetres: 0 } });
  });

  it('defaults to the last 24 hours up to now', async () => {
    const before = Date.now();
    const res = await get(bus.id, '');
    expect(res.status).toBe(200);
    const p = track(res.body).properties;
    expect(p.pointCount).toBe(route.length);
    const to = Date.parse(p.to);
    expect(to).toBeGreaterThanOrEqual(before - 1000);
    expect(to - Date.parse(p.from)).toBe(24 * 3_600_000);
  });

  it('altitude, when every position has one, is the third coordinate (a drone)', async () => {
    const drone = await t.createDevice({ name: 'drone-3', type: 'drone' });
    const c = await t.connect(drone.accessToken);
    const flight = [0, 1, 2, 3].map((i) => ({ ts: t0 + i * 1000, values: { latitude: 23.0 + i * 0.0001, longitude: 113.7, altitude: 120.5 + i } }));
    await c.publishAsync('v1/devices/me/telemetry', JSON.stringify(flight), { qos: 1 });
    const res = await get(drone.id, `from=${iso(t0)}&to=${iso(t0 + 10_000)}`);
    expect(res.status).toBe(200);
    expect(track(res.body).geometry!.coordinates).toEqual(flight.map((f) => [113.7, f.values.latitude, f.values.altitude]));
  });

  it.each([
    ['an inverted range', () => `from=${iso(t0 + MIN)}&to=${iso(t0)}`, 'inverted_range', /from .* is after to/],
    ['a from after now with to defaulted', () => `from=${iso(Date.now() + 3_600_000)}`, 'inverted_range', /to defaults to now/],
    ['an absurd window', () => 'from=1970-01-01T00:00:00Z&to=9999-12-31T00:00:00Z', 'range_too_long', /longer than 31 days/],
    ['32 days', () => `from=${iso(t0 - 32 * 24 * 3_600_000)}&to=${iso(t0)}`, 'range_too_long', /shorter window/],
    ['an unreadable from', () => 'from=yesterday', 'invalid_from', /^from: "yesterday" is not an ISO 8601/],
    ['an unreadable to', () => 'to=2026-13-45T99:00:00Z', 'invalid_to', /^to: /],
    ['a negative tolerance', () => `${window()}&simplify=-5`, 'FST_ERR_VALIDATION', /simplify must be >= 0/],
    ['a tolerance that is not a number', () => `${window()}&simplify=lots`, 'FST_ERR_VALIDATION', /simplify must be number/],
    ['stopMinutes 0', () => `${window()}&stopMinutes=0`, 'FST_ERR_VALIDATION', /stopMinutes must be > 0/],
    ['a negative stopRadius', () => `${window()}&stopRadius=-1`, 'FST_ERR_VALIDATION', /stopRadius must be > 0/],
    ['a limit above the maximum', () => `${window()}&limit=100001`, 'FST_ERR_VALIDATION', /limit must be <= 100000/],
  ])('400 for %s, with a machine-readable code', async (_name, query, code, message) => {
    const res = await get<ErrorBody>(bus.id, query());
    expect(res.status).toBe(400);
    expect(res.body.code).toBe(code);
    expect(res.body.message).toMatch(message);
  });

  it('404 for an unknown device; 400 for a device whose type does not move', async () => {
    const unknown = await get<ErrorBody>(999_999, window());
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ code: 'device_not_found', message: 'no device 999999' });
    const station = await t.createDevice({ name: 'aqi-dongcheng', type: 'air-quality-station', location: { lat: 23.03, lng: 113.77 } });
    const res = await get<ErrorBody>(station.id, window());
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('device_not_moving');
    expect(res.body.message).toMatch(/air-quality-station, a type that does not move/);
  });

  it('is in the OpenAPI document', async () => {
    const doc = await t.api<{ paths: Record<string, { get?: { parameters?: { name: string }[] } }> }>('GET', '/api/v1/openapi.json');
    const op = doc.body.paths['/api/v1/devices/{id}/trajectory']?.get;
    expect(op).toBeDefined();
    expect(op!.parameters!.map((p) => p.name)).toEqual(expect.arrayContaining(['from', 'to', 'simplify', 'stopMinutes', 'stopRadius', 'limit']));
  });
});
