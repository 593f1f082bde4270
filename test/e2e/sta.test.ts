import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MODEL, ENTITY_TYPES } from '../../api/sta/model.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

// The SensorThings API v1.1 over real HTTP against a platform fed over MQTT.

type Entity = Record<string, unknown> & { '@iot.id': number | string; '@iot.selfLink': string };
type Collection = { '@iot.count'?: number; '@iot.nextLink'?: string; value: Entity[] };

describe('SensorThings API v1.1 (/sta/v1.1)', () => {
  let t: TestPlatform;
  let root: string;
  let river: CreatedDevice;
  let aq: CreatedDevice;
  let gen: CreatedDevice;
  let bus: CreatedDevice;
  let waterKey: string;
  let waterKeyId: number;
  const base = Date.now() - 30 * 60_000;
  const ts = (i: number) => base + i * 60_000;

  /** GET with the admin key (or `key`); the body parsed when JSON. */
  const get = async <T = Collection>(url: string, key?: string) => {
    const res = await fetch(url.startsWith('http') ? url : `${root}/${url}`.replace(/\/$/, ''), { headers: { authorization: `Bearer ${key ?? t.adminKey}` } });
    const text = await res.text();
    const json = res.headers.get('content-type')?.includes('json') ? JSON.parse(text) : undefined;
    return { status: res.status, body: json as T, text, headers: res.headers };
  };
  /** Follows nextLinks to the end; the ids of every page in order. */
  const allPages = async (url: string, key?: string) => {
    const ids: (number | string)[] = [];
    let next: string | undefined = url;
    for (let pages = 0; next; pages++) {
      expect(pages).toBeLessThan(200);
      const r: { status: number; body: Collection } = await get(next, key);
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      ids.push(...r.body.value.map((e) => e['@iot.id']));
      next = r.body['@iot.nextLink'];
      if (next) expect(next).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/sta\/v1\.1\/.*\?\$top=\d+&\$skip=\d+/);
    }
    return ids;
  };

  beforeAll(async () => {
    t = await startTestPlatform({ latestFlushMs: 100 });
    root = `${t.httpUrl}/sta/v1.1`;
    river = await t.createDevice({ name: 'DG-WL-001', type: 'river-level-station', location: { lat: 23.02, lng: 113.75 } });
    aq = await t.createDevice({ name: 'DG-AQ-001', type: 'air-quality-station', location: { lat: 23.03, lng: 113.76 } });
    gen = await t.createDevice({ name: 'DG-GEN-001', type: 'generic', location: { lat: 22.9, lng: 113.9 } });
    bus = await t.createDevice({ name: 'BUS-7', type: 'bus' });
    const send = async (d: CreatedDevice, rows: { ts: number; values: Record<string, unknown> }[]) => {
      const c = await t.connect(d.accessToken);
      for (const r of rows) await c.publishAsync('v1/devices/me/telemetry', JSON.stringify(r), { qos: 1 });
    };
    await send(river, [0, 1, 2, 3, 4].map((i) => ({ ts: ts(i), values: { water_level: 2 + i / 10, flow_rate: 100 + i } })));
    await send(aq, [0, 1, 2].map((i) => ({ ts: ts(i), values: { aqi: 40 + i, pm25: 10 + i } })));
    await send(gen, [{ ts: ts(0), values: { status: 'ok', door_open: true, cfg: { mode: 'eco', level: 3 }, count: 7 } }]);
    await send(bus, [0, 1, 2].map((i) => ({ ts: ts(i), values: { latitude: 23.0 + i / 100, longitude: 113.7, speed: 30 + i } })));
    const res = await t.api<{ key: string; id: number }>('POST', '/api/v1/keys', { name: 'water bureau GIS', owner: 'water bureau', roles: ['agency'], scope: { domains: ['water'] } });
    waterKey = res.body.key;
    waterKeyId = res.body.id;
    // Datastreams and a moving device's latest Location come from the saved latest state
    // (device_state, every LATEST_FLUSH_MS): wait until the last of what was sent is saved.
    await eventually(
      async () => {
        if ((await get('Datastreams?$top=0&$count=true')).body['@iot.count'] !== 9) return undefined;
        const location = (await get<Entity>(`Locations(${bus.id})`)).body as unknown as { location?: { coordinates?: number[] } };
        return location.location?.coordinates?.join() === '113.7,23.02' ? true : undefined;
      },
      { timeoutMs: 15_000 },
    );
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('service root: absolute URLs of the sets served, the conformance implemented, no-store; a key is needed', async () => {
    const r = await get<{ value: { name: string; url: string }[]; serverSettings: { conformance: string[] } }>('');
    expect(r.status).toBe(200);
    expect(r.headers.get('cache-control')).toBe('no-store');
    expect(r.body.value.map((v) => v.name)).toEqual(['Things', 'Locations', 'HistoricalLocations', 'Datastreams', 'Sensors', 'ObservedProperties', 'Observations', 'FeaturesOfInterest']);
    for (const v of r.body.value) expect(v.url).toBe(`${root}/${v.name}`);
    expect(r.body.serverSettings.conformance).toContain('http://www.opengis.net/spec/iot_sensing/1.1/req/request-data');
    expect(r.body.serverSettings.conformance.some((c) => c.includes('create-update-delete'))).toBe(false);
    const anonymous = await fetch(root);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('cache-control')).toBe('no-store');
  });

  it('Things: every device, ids and links, counted, paged by absolute nextLinks in id order', async () => {
    const r = await get('Things?$count=true');
    expect(r.body['@iot.count']).toBe(4);
    expect(r.body.value.map((e) => e['@iot.id'])).toEqual([river.id, aq.id, gen.id, bus.id]);
    const thing = r.body.value[0]!;
    expect(thing).toMatchObject({ name: 'DG-WL-001', '@iot.selfLink': `${root}/Things(${river.id})`, 'Datastreams@iot.navigationLink': `${root}/Things(${river.id})/Datastreams`, properties: { type: 'river-level-station', domain: 'water' } });
    expect(await allPages('Things?$top=1')).toEqual([river.id, aq.id, gen.id, bus.id]);
    // Observations: 5×2 + 3×2 + 4 + 3 (the bus's position keys are not Observations).
    const observations = await allPages('Observations?$top=4');
    expect(observations.length).toBe(23);
    expect(new Set(observations).size).toBe(23);
    const count = await get('Observations?$top=0&$count=true');
    expect(count.body).toEqual({ '@iot.count': 23, value: [] });
    // The same number counted Observation by Observation (a filter takes the general path).
    expect((await get('Observations?$top=0&$count=true&$filter=true')).body['@iot.count']).toBe(23);
    expect(await allPages('Observations?$top=3&$skip=20')).toHaveLength(3);
  });

  it('Locations: registered positions, a moving device at its latest one; Datastreams with unit and observation type', async () => {
    const locations = (await get('Locations')).body.value;
    expect(locations.find((l) => l['@iot.id'] === river.id)).toMatchObject({ encodingType: 'application/geo+json', location: { type: 'Point', coordinates: [113.75, 23.02] } });
    expect(locations.find((l) => l['@iot.id'] === bus.id)).toMatchObject({ location: { type: 'Point', coordinates: [113.7, 23.02] } });
    const ds = await get<Entity>(`Things(${river.id})/Datastreams?$filter=properties/key eq 'water_level'`);
    const level = (ds.body as unknown as Collection).value[0]!;
    expect(level.phenomenonTime).toBe(`${new Date(ts(0)).toISOString()}/${new Date(ts(4)).toISOString()}`);
    expect(level).toMatchObject({ name: 'DG-WL-001 water_level', unitOfMeasurement: { name: 'm', symbol: 'm' }, observationType: 'http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement' });
    const sensor = await get<Entity>(`Datastreams('${level['@iot.id']}')/Sensor`);
    expect(sensor.body).toMatchObject({ '@iot.id': 'river-level-station', encodingType: 'application/json' });
    const prop = await get<Entity>(`Datastreams('${level['@iot.id']}')/ObservedProperty`);
    expect(prop.body).toMatchObject({ name: 'water_level', definition: 'urn:guanlink:telemetry-key:water_level' });
    const back = await get(`ObservedProperties(${prop.body['@iot.id']})/Datastreams`);
    expect(back.body.value.map((e) => e['@iot.id'])).toEqual([level['@iot.id']]);
  });

  it('HistoricalLocations: a moving device at each located reading, with the Location it was at; Locations lists where devices are now', async () => {
    const hl = await get(`Things(${bus.id})/HistoricalLocations?$count=true&$orderby=time desc`);
    expect(hl.body['@iot.count']).toBe(3);
    expect(hl.body.value.map((h) => [h['@iot.id'], h.time])).toEqual([2, 1, 0].map((i) => [`${bus.id}-${ts(i)}`, new Date(ts(i)).toISOString()]));
    const was = await get(`HistoricalLocations('${bus.id}-${ts(1)}')/Locations`);
    expect(was.body.value).toEqual([expect.objectContaining({ '@iot.id': `${bus.id}-${ts(1)}`, location: { type: 'Point', coordinates: [113.7, 23.01] } })]);
    expect((await get<Entity>(`Locations('${bus.id}-${ts(1)}')/HistoricalLocations('${bus.id}-${ts(1)}')/Thing`)).body['@iot.id']).toBe(bus.id);
    // The collection and a Thing's Locations hold where devices are, not where they were.
    expect((await get('Locations?$top=0&$count=true')).body['@iot.count']).toBe(4);
    expect((await get(`Things(${bus.id})/Locations`)).body.value.map((l) => l['@iot.id'])).toEqual([bus.id]);
    expect((await get(`Things(${river.id})/HistoricalLocations`)).body.value).toEqual([]);
    const expanded = await get(`HistoricalLocations?$filter=time ge ${new Date(ts(2)).toISOString()}&$expand=Thing($select=name),Locations($select=location)`);
    expect(expanded.body.value).toEqual([expect.objectContaining({ Thing: { name: 'BUS-7' }, Locations: [{ location: { type: 'Point', coordinates: [113.7, 23.02] } }] })]);
  });

  it("FeaturesOfInterest: a station's place, a moving device's position at each reading, both ways from Observations", async () => {
    const all = await get('FeaturesOfInterest?$count=true');
    // Three stations, and the bus's three located readings.
    expect(all.body['@iot.count']).toBe(6);
    expect(all.body.value.map((f) => f['@iot.id'])).toEqual([river.id, aq.id, gen.id, ...[0, 1, 2].map((i) => `${bus.id}-${ts(i)}`)]);
    const station = (await get<Entity>(`FeaturesOfInterest(${river.id})`)).body;
    expect(station).toMatchObject({ encodingType: 'application/geo+json', feature: { type: 'Point', coordinates: [113.75, 23.02] } });
    const atReading = await get<Entity>(`Observations?$filter=Datastream/Thing/id eq ${bus.id}&$orderby=phenomenonTime&$expand=FeatureOfInterest`);
    expect((atReading.body as unknown as Collection).value.map((o) => ((o.FeatureOfInterest as Entity).feature as { coordinates: number[] }).coordinates)).toEqual([
      [113.7, 23],
      [113.7, 23.01],
      [113.7, 23.02],
    ]);
    const stationObs = await get(`FeaturesOfInterest(${river.id})/Observations?$top=0&$count=true`);
    expect(stationObs.body['@iot.count']).toBe(10);
    const busObs = await get(`FeaturesOfInterest('${bus.id}-${ts(1)}')/Observations`);
    expect(busObs.body.value.map((o) => o.result)).toEqual([31]);
    expect((await get<Entity>(`Observations('${busObs.body.value[0]!['@iot.id']}')/FeatureOfInterest`)).body['@iot.id']).toBe(`${bus.id}-${ts(1)}`);
    const inBox = await get(`FeaturesOfInterest?$filter=feature/type eq 'Point' and geo.intersects(feature, geography'Polygon ((113.69 23.005, 113.71 23.005, 113.71 23.03, 113.69 23.03, 113.69 23.005))')`);
    expect(inBox.body.value.map((f) => f['@iot.id'])).toEqual([`${bus.id}-${ts(1)}`, `${bus.id}-${ts(2)}`]);
  });

  it('navigation, properties, $value, $ref, $select, $orderby', async () => {
    const ds = `${river.id}-${(await get(`Things(${river.id})/Datastreams?$filter=properties/key eq 'water_level'`)).body.value[0]!['@iot.id'].toString().split('-')[1]}`;
    const obs = await get(`Datastreams('${ds}')/Observations?$orderby=phenomenonTime desc`);
    expect(obs.body.value.map((o) => o.result)).toEqual([2.4, 2.3, 2.2, 2.1, 2]);
    expect(obs.body.value[0]).toMatchObject({ '@iot.id': `${ds}-${ts(4)}`, phenomenonTime: new Date(ts(4)).toISOString(), 'Datastream@iot.navigationLink': `${root}/Observations('${ds}-${ts(4)}')/Datastream` });
    const one = await get<Entity>(`Observations('${ds}-${ts(4)}')`);
    expect(one.body.result).toBe(2.4);
    expect((await get<Entity>(`Observations('${ds}-${ts(4)}')/Datastream/Thing`)).body['@iot.id']).toBe(river.id);
    expect((await get<Entity>(`Things(${river.id})/name`)).body).toEqual({ name: 'DG-WL-001' });
    expect((await get<Entity>(`Things(${river.id})?$select=name,Datastreams`)).body).toEqual({ name: 'DG-WL-001', 'Datastreams@iot.navigationLink': `${root}/Things(${river.id})/Datastreams` });
    expect((await get(`Things(${river.id})?$select=nonsense`)).status).toBe(400);
    const raw = await get(`Things(${river.id})/name/$value`);
    expect(raw.text).toBe('DG-WL-001');
    const refs = await get(`Things(${river.id})/Datastreams/$ref`);
    expect(refs.body.value).toEqual([expect.objectContaining({ '@iot.selfLink': expect.stringMatching(/\/Datastreams\('\d+-\d+'\)$/) }), expect.anything()]);
    const byId = await get(`Datastreams?$orderby=id desc&$select=id`);
    const ids = byId.body.value.map((d) => String(d['@iot.id']).split('-').map(Number) as [number, number]);
    expect(ids).toEqual([...ids].sort((a, b) => b[0] - a[0] || b[1] - a[1]));
    const selected = await get('Things?$select=name&$orderby=name desc');
    expect(selected.body.value).toEqual([{ name: 'DG-WL-001' }, { name: 'DG-GEN-001' }, { name: 'DG-AQ-001' }, { name: 'BUS-7' }]);
  });

  it('$expand: Datastreams → Observations (newest first, per-level $top) and Locations → Things → Datastreams → Observations', async () => {
    const r = await get(`Datastreams?$filter=Thing/id eq ${river.id}&$expand=Observations($orderby=phenomenonTime desc;$top=2),Thing`);
    expect(r.body.value).toHaveLength(2);
    for (const d of r.body.value) {
      const o = d.Observations as Entity[];
      expect(o.map((x) => x.phenomenonTime)).toEqual([new Date(ts(4)).toISOString(), new Date(ts(3)).toISOString()]);
      expect((d.Thing as Entity)['@iot.id']).toBe(river.id);
    }
    const counted = await get(`Things?$filter=id eq ${river.id}&$expand=Datastreams($count=true;$top=1;$expand=Observations($count=true;$top=1;$filter=result gt 3))`);
    const ds = counted.body.value[0]!;
    expect(ds['Datastreams@iot.count']).toBe(2);
    expect((ds.Datastreams as Entity[]).length).toBe(1);
    expect((ds.Datastreams as Entity[])[0]!['Observations@iot.count']).toBe(5);
    const deep = await get(
      `Locations?$top=200&$count=false&$expand=Things($top=100;$expand=Datastreams($top=10;$expand=Observations($orderby=phenomenonTime desc;$top=100)))&$filter=location/type eq 'Point' or location/geometry/type eq 'Point'`,
    );
    expect(deep.status).toBe(200);
    const loc = deep.body.value.find((l) => l['@iot.id'] === aq.id)!;
    const things = loc.Things as Entity[];
    expect(things.map((x) => x.name)).toEqual(['DG-AQ-001']);
    const streams = things[0]!.Datastreams as Entity[];
    expect(streams).toHaveLength(2);
    expect((streams[0]!.Observations as Entity[]).length).toBe(3);
  });

  it('$filter: comparisons, arithmetic, strings, time and now(), JSON paths, navigation paths, value types', async () => {
    const names = async (q: string) => (await get(q)).body.value.map((e) => e.name);
    expect(await names(`Things?$filter=name eq 'DG-WL-001'`)).toEqual(['DG-WL-001']);
    expect(await names(`Things?$filter=substringof('AQ', name) or startswith(name, 'BUS')`)).toEqual(['DG-AQ-001', 'BUS-7']);
    expect(await names(`Things?$filter=endswith(tolower(name), 'gen-001') and length(name) eq 10`)).toEqual(['DG-GEN-001']);
    expect(await names(`Things?$filter=not (properties/domain eq 'water') and toupper(properties/type) eq 'BUS'`)).toEqual(['BUS-7']);
    expect(await names(`Things?$filter=id eq ${aq.id} or @iot.id eq ${gen.id}`)).toEqual(['DG-AQ-001', 'DG-GEN-001']);
    expect(await names(`Datastreams?$filter=Thing/name eq 'DG-AQ-001' and ObservedProperty/name eq 'pm25'`)).toEqual(['DG-AQ-001 pm25']);
    const results = async (q: string) => (await get(q)).body.value.map((e) => e.result);
    expect(await results(`Observations?$filter=result mul 10 ge 23 and result sub 1 lt 2`)).toEqual([2.3, 2.4]);
    expect(await results(`Observations?$filter=result div 0 eq 1 or (result mod 7 eq 0 and result lt 10)`)).toEqual([7]);
    expect(await results(`Observations?$filter=phenomenonTime ge ${new Date(ts(4)).toISOString()} and phenomenonTime lt now()`)).toEqual([104, 2.4]);
    expect(await results(`Observations?$filter=year(phenomenonTime) gt 2100`)).toEqual([]);
    // Value types: a string, a boolean, a JSON object, a number.
    const gens = await get(`Observations?$filter=Datastream/Thing/id eq ${gen.id}`);
    expect(gens.status, JSON.stringify(gens.body)).toBe(200);
    expect(gens.body.value.map((o) => o.result).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)))).toEqual(['ok', 7, true, { level: 3, mode: 'eco' }].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))));
    expect(await results(`Observations?$filter=result eq 'ok' or result eq true`)).toEqual(expect.arrayContaining(['ok', true]));
    expect(await results(`Observations?$filter=result/mode eq 'eco'`)).toEqual([{ level: 3, mode: 'eco' }]);
    // Lambdas, nested, and all() with a counter-example.
    expect(await names(`Things?$filter=Datastreams/any(d: d/ObservedProperty/name eq 'pm25')`)).toEqual(['DG-AQ-001']);
    expect(await names(`Things?$filter=Datastreams/all(d: d/properties/domain eq 'water') and Datastreams/any()`)).toEqual(['DG-WL-001']);
    expect(await names(`Sensors?$filter=Datastreams/any(d: d/Observations/any(o: o/result eq 'ok' and d/name ne name))`)).toEqual(['generic']);
    // Spatial functions on another entity's geometry, as pygeoapi's bbox sends them.
    const box = `geography'POLYGON ((113.74 23, 113.77 23, 113.77 23.04, 113.74 23.04, 113.74 23))'`;
    expect(await names(`Things?$filter=st_within(Locations/location, ${box})`)).toEqual(['DG-WL-001', 'DG-AQ-001']);
    expect((await get(`Datastreams?$top=0&$count=true&$filter=st_within(Thing/Locations/location, ${box})`)).body['@iot.count']).toBe(4);
    expect(await results(`Observations?$filter=st_within(FeatureOfInterest/feature, geography'POLYGON ((113.69 23.005, 113.71 23.005, 113.71 23.03, 113.69 23.03, 113.69 23.005))')`)).toEqual([31, 32]);
    const streams = await get(`Datastreams?$filter=Thing/id eq ${gen.id}&$orderby=name`);
    expect(streams.body.value.map((d) => [d.name, String(d.observationType).split('/').pop()])).toEqual([
      ['DG-GEN-001 cfg', 'OM_Observation'],
      ['DG-GEN-001 count', 'OM_Measurement'],
      ['DG-GEN-001 door_open', 'OM_TruthObservation'],
      ['DG-GEN-001 status', 'OM_CategoryObservation'],
    ]);
  });

  it('geo.intersects: QGIS world extent (±135 latitudes), a small extent, st_within with a polygon; the type filter', async () => {
    const types = `(location/type eq 'Point' or location/geometry/type eq 'Point')`;
    const world = `geo.intersects(location, geography'Polygon ((-180 -135, 180 -135, 180 135, -180 135, -180 -135))')`;
    const all = await get(`Locations?$top=0&$count=true&$filter=${types} and (${world})`);
    expect(all.body['@iot.count']).toBe(4);
    const small = await get(`Locations?$filter=${types} and (geo.intersects(location, geography'Polygon ((113.74 23, 113.77 23, 113.77 23.04, 113.74 23.04, 113.74 23))'))`);
    expect(small.body.value.map((l) => l['@iot.id'])).toEqual([river.id, aq.id]);
    const triangle = await get(`Locations?$filter=st_within(location, geometry'POLYGON((113.8 22.8, 114 22.8, 113.9 23.0, 113.8 22.8))')`);
    expect(triangle.body.value.map((l) => l['@iot.id'])).toEqual([gen.id]);
    // 48 edges: beyond the cheap exact test, so the H3 cover (computed on the geometry threads) decides first.
    const ring = Array.from({ length: 49 }, (_, i) => [113.75 + 0.005 * Math.cos((2 * Math.PI * (i % 48)) / 48), 23.02 + 0.005 * Math.sin((2 * Math.PI * (i % 48)) / 48)]);
    const circle = await get(`Locations?$filter=geo.intersects(location, geography'POLYGON ((${ring.map(([x, y]) => `${x} ${y}`).join(', ')}))')`);
    expect(circle.status, JSON.stringify(circle.body)).toBe(200);
    expect(circle.body.value.map((l) => l['@iot.id'])).toEqual([river.id]);
    // geo.distance in metres on the great circle (0.01° of latitude ≈ 1112 m); st_contains and st_disjoint.
    const near = await get(`Locations?$filter=geo.distance(location, geography'POINT (113.75 23.01)') lt 1200&$orderby=geo.distance(location, geography'POINT (113.75 23.01)')`);
    expect(near.body.value.map((l) => l['@iot.id'])).toEqual([river.id]);
    const far = await get(`Locations?$filter=geo.distance(geography'POINT (113.75 23.01)', location) gt 1100 and geo.distance(location, geography'POINT (113.75 23.01)') lt 1120`);
    expect(far.body.value.map((l) => l['@iot.id'])).toEqual([river.id]);
    const contains = await get(`Locations?$filter=st_contains(geometry'POLYGON((113.8 22.8, 114 22.8, 113.9 23.0, 113.8 22.8))', location)`);
    expect(contains.body.value.map((l) => l['@iot.id'])).toEqual([gen.id]);
    const disjoint = await get(`Locations?$filter=st_disjoint(location, geometry'POLYGON((113.8 22.8, 114 22.8, 113.9 23.0, 113.8 22.8))')`);
    expect(disjoint.body.value.map((l) => l['@iot.id'])).toEqual([river.id, aq.id, bus.id]);
    const lines = await get(`Locations?$top=0&$count=true&$filter=location/type eq 'LineString' or location/geometry/type eq 'LineString'`);
    expect(lines.body['@iot.count']).toBe(0);
    const observedArea = await get(`Datastreams?$top=0&$count=true&$filter=geo.intersects(observedArea, geography'POLYGON ((113.89 22.89, 113.91 22.89, 113.91 22.91, 113.89 22.91, 113.89 22.89))')`);
    expect(observedArea.body['@iot.count']).toBe(4);
  });

  it('errors: 400 with the position, 404, 501 naming what is not implemented, 405 for writes; never a 5xx', async () => {
    const malformed = await get<{ status: number; detail: string; code: string }>(`Things?$filter=name eq`);
    expect(malformed.status).toBe(400);
    expect(malformed.body.code).toBe('sta_query_malformed');
    const typed = await get<{ detail: string }>(`Things?$filter=name eq 5`);
    expect(typed.status).toBe(400);
    expect(typed.body.detail).toMatch(/at 8: cannot compare a string with a number/);
    const order = await get<{ detail: string }>(`Things?$orderby=name add 1`);
    expect(order.status).toBe(400);
    expect(order.body.detail).toMatch(/^\$orderby: at 0: a number is needed here/);
    const nested = await get<{ detail: string }>(`Things?$expand=Datastreams($filter=name gt 1)`);
    expect(nested.status).toBe(400);
    expect(nested.body.detail).toMatch(/^\$expand: at 28: cannot compare a string with a number/);
    expect((await get(`Thingz`)).status).toBe(404);
    expect((await get(`Things(999999)`)).status).toBe(404);
    expect((await get(`Datastreams(5)`)).status).toBe(404);
    expect((await get(`Things(${river.id})/Datastreams('${aq.id}-1')`)).status).toBe(404);
    const distance = await get<{ detail: string }>(`Locations?$filter=geo.length(location) lt 1`);
    expect(distance.status).toBe(501);
    expect(distance.body.detail).toMatch(/geo\.length/);
    expect((await get(`MultiDatastreams`)).status).toBe(501);
    expect((await get(`Things?$filter=Datastreams/name eq 'x'`)).status).toBe(501);
    expect((await get(`Observations?$filter=result mul 1e300 mul 1e300 gt 1`)).status).toBe(400);
    const post = await fetch(`${root}/Things`, { method: 'POST', headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': 'application/json' }, body: '{"name":"x"}' });
    expect(post.status).toBe(405);
    expect(((await post.json()) as { detail: string }).detail).toMatch(/read-only/);
    expect((await get('Things?$top=0&$count=true')).body['@iot.count']).toBe(4);
  });

  it('no client input gives a 5xx: every property and navigation of every set against every kind of literal, function, order and expansion', async () => {
    const literals = ['5', '-1.5e308', "'x'", 'true', 'null', '2024-01-01T00:00:00Z', 'now()', "geography'POINT (1 2)'", "duration'P1D'"];
    const failures: string[] = [];
    const check = async (url: string) => {
      const r = await get<{ status?: number; detail?: string }>(url);
      // 501 is the standard's answer for what is not implemented; anything else ≥ 500 is a fault.
      if ((r.status >= 500 && r.status !== 501) || (r.status >= 400 && typeof r.body?.detail !== 'string')) failures.push(`${r.status} ${url}`);
    };
    for (const type of ENTITY_TYPES) {
      const { set, properties, navigation } = MODEL[type];
      const names = ['id', '@iot.id', ...properties, ...properties.map((p) => `${p}/type`), ...Object.keys(navigation).map((n) => `${n}/id`)];
      for (const name of names) {
        for (const literal of literals) for (const op of ['eq', 'gt']) await check(`${set}?$top=2&$filter=${encodeURIComponent(`${name} ${op} ${literal}`)}`);
        for (const f of ['length(X) eq 1', "tolower(X) eq 'x'", 'year(X) eq 1', 'round(X) eq 1', 'X add 1 eq 2', 'X div 0 eq 1', "substring(X, 1e300) eq 'x'", 'not X', "geo.intersects(X, geography'POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))')"]) {
          await check(`${set}?$top=2&$filter=${encodeURIComponent(f.replaceAll('X', name))}`);
        }
        await check(`${set}?$top=2&$orderby=${encodeURIComponent(`${name} desc`)}`);
        await check(`${set}?$top=2&$select=${encodeURIComponent(name)}`);
      }
      for (const nav of Object.keys(navigation)) {
        for (const f of ['N/any(x: x/id eq 1)', "N/all(x: x/name eq 'x' or x/result gt 1)", 'N/any()', 'N/any(x: y/id eq 1)', "geo.intersects(N/location, geography'POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))')", "st_within(N/feature, geography'POLYGON ((0 0, 1 0, 1 1, 0 1, 0 0))')"]) {
          await check(`${set}?$top=2&$filter=${encodeURIComponent(f.replaceAll('N', nav))}`);
        }
      }
      for (const nav of Object.keys(navigation)) await check(`${set}?$top=2&$expand=${encodeURIComponent(`${nav}($top=1;$orderby=id desc;$expand=${Object.keys(MODEL[navigation[nav]!.target].navigation)[0]})`)}`);
      for (const id of ['0', '2147483647', "'x'", "'1-2'", "'1-2-3'", "'1-99999999999999'", "'1-2-99999999999999999'", "''''"]) {
        await check(`${set}(${id})`);
        for (const nav of Object.keys(navigation)) await check(`${set}(${id})/${nav}`);
      }
    }
    expect(failures).toEqual([]);
  }, 120_000);

  it('scope: a water-only key sees only water Things and what hangs off them, in every set, count, expansion and link', async () => {
    expect(await allPages('Things?$top=1', waterKey)).toEqual([river.id]);
    expect((await get('Locations?$count=true', waterKey)).body['@iot.count']).toBe(1);
    expect((await get('Datastreams?$top=0&$count=true', waterKey)).body['@iot.count']).toBe(2);
    expect((await get('Observations?$top=0&$count=true', waterKey)).body['@iot.count']).toBe(10);
    expect((await get('FeaturesOfInterest', waterKey)).body.value.map((f) => f['@iot.id'])).toEqual([river.id]);
    expect((await get('HistoricalLocations?$top=0&$count=true', waterKey)).body['@iot.count']).toBe(0);
    expect((await get(`Locations('${bus.id}-${ts(1)}')`, waterKey)).status).toBe(404);
    expect((await get(`FeaturesOfInterest('${bus.id}-${ts(1)}')`, waterKey)).status).toBe(404);
    expect((await get('Sensors', waterKey)).body.value.map((s) => s['@iot.id'])).toEqual(['river-level-station']);
    expect((await get('ObservedProperties', waterKey)).body.value.map((s) => s.name).sort()).toEqual(['flow_rate', 'water_level']);
    expect((await get(`Things(${aq.id})`, waterKey)).status).toBe(404);
    expect((await get(`Things(${aq.id})/Datastreams`, waterKey)).status).toBe(404);
    const expanded = await get(`Sensors?$expand=Datastreams($expand=Observations($top=1))`, waterKey);
    const streams = expanded.body.value.flatMap((s) => s.Datastreams as Entity[]);
    expect(streams.every((d) => String(d['@iot.id']).startsWith(`${river.id}-`))).toBe(true);
    // The air-quality Datastream ids do not leak through a filter either.
    expect((await get(`Observations?$filter=Datastream/Thing/id eq ${aq.id}`, waterKey)).body.value).toEqual([]);
    // Each request is in the audit log with the entities it answered.
    expect((await get('Datastreams', waterKey)).body.value).toHaveLength(2);
    const logged = await eventually(async () => {
      const r = await t.api<{ entries: { route: string; status: number; rows: number | null }[] }>('GET', `/api/v1/audit?principal=key:${waterKeyId}&route=${encodeURIComponent('/sta/v1.1/*')}&limit=1000`);
      return r.body.entries?.some((e) => e.rows === 2) ? r.body.entries : undefined;
    });
    expect(logged.every((e) => e.route === '/sta/v1.1/*')).toBe(true);
  });

  it('replays every QGIS 3.40 request of the reference note: what QGIS depends on holds', async () => {
    const lines = readFileSync(new URL('../../api/sta/query/fixtures/qgis-3.40-requests.txt', import.meta.url), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#'));
    const served = new Set(['Things', 'Locations', 'HistoricalLocations', 'Datastreams', 'Sensors', 'ObservedProperties', 'Observations', 'FeaturesOfInterest']);
    for (const line of lines) {
      // As QGIS sends it: only spaces encoded.
      const res = await fetch(`${root}/${line.replaceAll(' ', '%20')}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
      const body = (await res.json()) as Collection & { detail?: string };
      const set = /^[A-Za-z]+/.exec(line)![0];
      expect(res.headers.get('cache-control'), line).toBe('no-store');
      if (!served.has(set)) {
        expect(res.status, line).toBe(501);
        continue;
      }
      expect(res.status, `${line}: ${JSON.stringify(body)}`).toBe(200);
      expect(Array.isArray(body.value), line).toBe(true);
      if (/\$count=true/.test(line)) expect(typeof body['@iot.count'], line).toBe('number');
      if (/\$top=0/.test(line)) expect(body.value, line).toEqual([]);
      for (const e of body.value) {
        expect(e['@iot.selfLink'], line).toMatch(/^http:\/\//);
        expect(typeof e['@iot.id'] === 'string' || (Number.isInteger(e['@iot.id']) && (e['@iot.id'] as number) < 2 ** 31), line).toBe(true);
        if (set === 'Locations') expect((e.location as { type: string }).type, line).toBe('Point');
        if (set === 'FeaturesOfInterest') expect((e.feature as { type: string }).type, line).toBe('Point');
      }
    }
    // A page of 2 with an expansion: the nextLink's first $top is the page's, before the nested one.
    const page = await get(`Datastreams?$top=2&$count=false&$expand=Observations($orderby=phenomenonTime desc;$top=100)`);
    expect(page.body['@iot.nextLink']).toMatch(/\?\$top=2&\$skip=2&\$count=false&\$expand=Observations\(\$orderby=phenomenonTime%20desc;\$top=100\)$/);
    expect(await allPages(page.body['@iot.nextLink']!)).toHaveLength(7);
  });
});
