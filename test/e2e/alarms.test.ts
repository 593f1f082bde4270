import mqtt, { type MqttClient } from 'mqtt';
import { io as ioClient, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AlarmService, type Alarm } from '../../core/alarms.ts';
import { createLogger } from '../../core/log.ts';
import { DeviceRegistry } from '../../core/registry.ts';
import { createTestDatabase, testPool, type TestDatabase } from '../support/database.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

interface Rule {
  id: number;
  name: string;
  kind: string;
  deviceType: string;
  key?: string;
  operator?: string;
  raiseThreshold?: number;
  clearThreshold?: number;
  geofence?: string;
  minDurationSeconds: number;
  clearDurationSeconds: number;
  severity: string;
  enabled: boolean;
  builtin: boolean;
}
interface Page {
  items: Alarm[];
  nextCursor: number | null;
}
interface AlarmChange {
  kind: 'raised' | 'acknowledged' | 'cleared';
  alarm: Alarm;
}

const TELEMETRY = 'v1/devices/me/telemetry';
const RIVER_AT = { lat: 23.093, lng: 113.795 };
// Inside the seeded drone-corridors fence (the dock of the North Main Channel patrol) and 1.5 km west of it.
const IN_CORRIDOR = { latitude: 23.055, longitude: 113.585 };
const OUT_OF_CORRIDOR = { latitude: 23.055, longitude: 113.57 };

const iso = (ms: number) => new Date(ms).toISOString();

describe('alarms', () => {
  let database: TestDatabase;
  let t: TestPlatform;
  let river: CreatedDevice;
  let riverClient: MqttClient;
  let app: MqttClient;
  let socket: Socket;
  const mqttChanges: { topic: string; change: AlarmChange }[] = [];
  const liveChanges: AlarmChange[] = [];
  const base = Date.now() - 3 * 3600_000; // reading times: three hours ago onwards
  let n = 0;

  /** Publishes readings `[offset seconds, values]` of one device in one message (ThingsBoard array form). */
  const publish = async (client: MqttClient, readings: [number, Record<string, number>][]) => {
    await client.publishAsync(TELEMETRY, JSON.stringify(readings.map(([s, values]) => ({ ts: base + s * 1000, values }))), { qos: 1 });
  };
  const alarmsOf = async (deviceId: number, query = '') => (await t.api<Page>('GET', `/api/v1/alarms?device=${deviceId}${query}`)).body.items;
  const rule = async (name: string) => (await t.api<{ items: Rule[] }>('GET', '/api/v1/alarm-rules')).body.items.find((r) => r.name === name)!;
  const createRule = async (body: Record<string, unknown>) => {
    const res = await t.api<Rule>('POST', '/api/v1/alarm-rules', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };
  const device = (type: string, location: { lat: number; lng: number } | null = RIVER_AT) => t.createDevice({ name: `al-${type}-${++n}`, type, location });

  beforeAll(async () => {
    database = await createTestDatabase();
    t = await startTestPlatform({}, { database });
    river = await device('river-level-station');
    riverClient = await t.connect(river.accessToken);
    // An application session on the platform events, and a live-map client on the water domain.
    app = await mqtt.connectAsync(t.mqttUrl, { username: 'guanlink-app', password: t.adminKey, reconnectPeriod: 0, connectTimeout: 5000 });
    app.on('message', (topic, payload) => mqttChanges.push({ topic, change: JSON.parse(payload.toString()) as AlarmChange }));
    const granted = await app.subscribeAsync('guanlink/events/alarms/#', { qos: 1 });
    expect(granted[0]!.qos).toBe(1);
    socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'] });
    await new Promise<void>((resolve, reject) => {
      socket.on('connect', resolve);
      socket.on('connect_error', reject);
    });
    socket.on('alarm', (change: AlarmChange) => liveChanges.push(change));
    await socket.emitWithAck('subscribe', { domain: 'water' });
  });
  afterAll(async () => {
    socket?.close();
    await app?.endAsync(true).catch(() => undefined);
    await t?.stop();
  });

  it('seeds rules for the simulated domains', async () => {
    const res = await t.api<{ items: Rule[] }>('GET', '/api/v1/alarm-rules');
    expect(res.status).toBe(200);
    const byName = new Map(res.body.items.map((r) => [r.name, r]));
    expect(byName.get('flood-warning-level')).toMatchObject({ kind: 'threshold', deviceType: 'river-level-station', key: 'water_level', operator: '>', raiseThreshold: 3.8, clearThreshold: 3.5, builtin: true, enabled: true });
    expect(byName.get('flood-danger-level')).toMatchObject({ raiseThreshold: 4.3, severity: 'critical' });
    expect(byName.get('aqi-heavily-polluted')).toMatchObject({ deviceType: 'air-quality-station', key: 'aqi', operator: '>', raiseThreshold: 200 });
    expect(byName.get('traffic-congestion')).toMatchObject({ deviceType: 'traffic-detector', key: 'avg_speed', operator: '<', minDurationSeconds: 300 });
    expect(byName.get('drone-battery-low')).toMatchObject({ deviceType: 'drone', key: 'battery', operator: '<', raiseThreshold: 20 });
    expect(byName.get('drone-left-corridor')).toMatchObject({ kind: 'geofence_exit', deviceType: 'drone', geofence: 'drone-corridors' });
    const water = await t.api<{ items: Rule[] }>('GET', '/api/v1/alarm-rules?deviceType=river-level-station');
    expect(water.body.items.every((r) => r.deviceType === 'river-level-station')).toBe(true);
  });

  it('raises after the minimum duration, is acknowledged with who and when, clears by condition after the clear duration', async () => {
    const warning = await rule('flood-warning-level'); // > 3.8 for 600 s, cleared < 3.5 for 1800 s
    // Above the line from 60 s; the reading at 660 s completes the ten minutes.
    await publish(riverClient, [[0, { water_level: 3.0 }], ...Array.from({ length: 10 }, (_, i): [number, Record<string, number>] => [60 + i * 60, { water_level: 4.0 + i * 0.01 }])]);
    await new Promise((r) => setTimeout(r, 300));
    expect(await alarmsOf(river.id)).toEqual([]); // 600 s not reached at 600 s - 60 s
    await publish(riverClient, [[660, { water_level: 4.05 }]]);
    const [raised] = await eventually(async () => {
      const list = await alarmsOf(river.id);
      return list.length > 0 ? list : undefined;
    });
    expect(raised).toMatchObject({
      ruleId: warning.id,
      ruleName: 'flood-warning-level',
      kind: 'threshold',
      key: 'water_level',
      threshold: 3.8,
      severity: 'major',
      status: 'raised',
      device: { id: river.id, name: river.name, type: 'river-level-station', domain: 'water' },
      position: RIVER_AT,
      conditionSince: iso(base + 60_000),
      raisedAt: iso(base + 660_000),
      value: 4.05,
      acknowledgedAt: null,
      clearedAt: null,
    });
    // 4.0–4.09 stays below the danger level (4.3): one alarm only
    expect(await alarmsOf(river.id)).toHaveLength(1);

    // Acknowledge: who, when, note; a second acknowledgement is refused.
    const before = Date.now();
    const ack = await t.api<Alarm>('POST', `/api/v1/alarms/${raised!.id}/ack`, { by: 'duty-officer-li', note: 'patrol dispatched' });
    expect(ack.status, JSON.stringify(ack.body)).toBe(200);
    expect(ack.body).toMatchObject({ status: 'acknowledged', acknowledgedBy: 'duty-officer-li', ackNote: 'patrol dispatched' });
    expect(Date.parse(ack.body.acknowledgedAt!)).toBeGreaterThanOrEqual(before - 1000);
    expect(Date.parse(ack.body.acknowledgedAt!)).toBeLessThanOrEqual(Date.now() + 1000);
    const again = await t.api<{ message: string }>('POST', `/api/v1/alarms/${raised!.id}/ack`, { by: 'someone-else' });
    expect(again.status).toBe(409);
    expect(again.body.message).toMatch(/already acknowledged by duty-officer-li/);
    expect((await alarmsOf(river.id, '&status=acknowledged')).map((a) => a.id)).toEqual([raised!.id]);
    expect(await alarmsOf(river.id, '&status=raised')).toEqual([]);

    // Receding: 3.6 is between the lines (stays open); below 3.5 for 30 minutes clears it.
    await publish(riverClient, [
      [720, { water_level: 4.2 }],
      [780, { water_level: 3.6 }],
      ...Array.from({ length: 31 }, (_, i): [number, Record<string, number>] => [840 + i * 60, { water_level: 3.4 }]),
    ]);
    const cleared = await eventually(async () => {
      const a = (await t.api<Alarm>('GET', `/api/v1/alarms/${raised!.id}`)).body;
      return a.status === 'cleared' ? a : undefined;
    });
    expect(cleared).toMatchObject({ clearReason: 'condition', clearedBy: null, clearedAt: iso(base + (840 + 1800) * 1000), acknowledgedBy: 'duty-officer-li', lastValue: 3.4, peakValue: 4.2 });
    expect((await t.api('POST', `/api/v1/alarms/${raised!.id}/ack`, { by: 'x' })).status).toBe(409);
    expect((await t.api('POST', `/api/v1/alarms/${raised!.id}/clear`, { by: 'x' })).status).toBe(409);

    // The same lifecycle on the live stream (socket.io, water domain) and on MQTT guanlink/events/alarms/water.
    const mine = (list: AlarmChange[]) => list.filter((c) => c.alarm.id === raised!.id).map((c) => [c.kind, c.alarm.status]);
    const expected = [
      ['raised', 'raised'],
      ['acknowledged', 'acknowledged'],
      ['cleared', 'cleared'],
    ];
    await eventually(() => (mine(liveChanges).length >= 3 ? true : undefined));
    expect(mine(liveChanges)).toEqual(expected);
    await eventually(() => (mine(mqttChanges.map((m) => m.change)).length >= 3 ? true : undefined));
    expect(mine(mqttChanges.map((m) => m.change))).toEqual(expected);
    expect(mqttChanges.filter((m) => m.change.alarm.id === raised!.id).every((m) => m.topic === 'guanlink/events/alarms/water')).toBe(true);
    expect(liveChanges.find((c) => c.alarm.id === raised!.id)!.alarm.device.name).toBe(river.name);
  });

  it('hysteresis through MQTT: a value oscillating around the raise threshold raises one alarm; a manual clear while it holds raises a new one', async () => {
    const station = await device('river-level-station');
    const client = await t.connect(station.accessToken);
    const r = await createRule({ name: 'flow-oscillation', deviceType: 'river-level-station', key: 'flow_rate', operator: '>', raiseThreshold: 5000, clearThreshold: 4000, severity: 'warning' });
    await publish(client, Array.from({ length: 12 }, (_, i): [number, Record<string, number>] => [i * 10, { flow_rate: i % 2 === 0 ? 5100 : 4900 }]));
    const [alarm] = await eventually(async () => {
      const list = await alarmsOf(station.id);
      return list.length > 0 ? list : undefined;
    });
    await new Promise((res) => setTimeout(res, 300));
    expect(await alarmsOf(station.id)).toHaveLength(1);
    expect(alarm).toMatchObject({ ruleId: r.id, status: 'raised', raisedAt: iso(base), value: 5100 });

    // Cleared by hand while the rain goes on: recorded as manual, by whom; the next reading above the line raises again.
    const cleared = await t.api<Alarm>('POST', `/api/v1/alarms/${alarm!.id}/clear`, { by: 'engineer-chen', note: 'gauge checked' });
    expect(cleared.status, JSON.stringify(cleared.body)).toBe(200);
    expect(cleared.body).toMatchObject({ status: 'cleared', clearReason: 'manual', clearedBy: 'engineer-chen' });
    await publish(client, [[200, { flow_rate: 5500 }]]);
    const again = await eventually(async () => {
      const list = await alarmsOf(station.id, '&status=open');
      return list.length > 0 ? list : undefined;
    });
    expect(again).toHaveLength(1);
    expect(again[0]!.id).not.toBe(alarm!.id);

    // Disabling the rule clears its open alarm.
    const disabled = await t.api<Rule>('PATCH', `/api/v1/alarm-rules/${r.id}`, { enabled: false });
    expect(disabled.status).toBe(200);
    expect(disabled.body).toMatchObject({ enabled: false, raiseThreshold: 5000, clearThreshold: 4000 });
    const gone = (await t.api<Alarm>('GET', `/api/v1/alarms/${again[0]!.id}`)).body;
    expect(gone).toMatchObject({ status: 'cleared', clearReason: 'rule_disabled', clearedBy: null });
    await publish(client, [[300, { flow_rate: 6000 }]]);
    await new Promise((res) => setTimeout(res, 300));
    expect(await alarmsOf(station.id, '&status=open')).toEqual([]);
  });

  it('minimum duration through MQTT: congestion shorter than five minutes raises nothing, longer raises one', async () => {
    const detector = await device('traffic-detector', { lat: 22.985, lng: 114.0 });
    const client = await t.connect(detector.accessToken);
    // 240 s under 20 km/h (readings at 0..240 s), then traffic moves again
    await publish(client, [...Array.from({ length: 5 }, (_, i): [number, Record<string, number>] => [i * 60, { avg_speed: 12 }]), [300, { avg_speed: 45 }]]);
    await new Promise((res) => setTimeout(res, 500));
    expect(await alarmsOf(detector.id)).toEqual([]);
    await publish(client, Array.from({ length: 6 }, (_, i): [number, Record<string, number>] => [360 + i * 60, { avg_speed: 15 }]));
    const list = await eventually(async () => {
      const l = await alarmsOf(detector.id);
      return l.length > 0 ? l : undefined;
    });
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({ ruleName: 'traffic-congestion', raisedAt: iso(base + 660_000), conditionSince: iso(base + 360_000), severity: 'minor', device: { domain: 'traffic' } });
  });

  it('rule CRUD: precise 400s, 409 on duplicates, 403 for built-in deletion, 404s', async () => {
    const refuse = async (body: Record<string, unknown>, message: RegExp) => {
      const res = await t.api<{ message: string }>('POST', '/api/v1/alarm-rules', { name: 'bad', severity: 'minor', ...body });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.message).toMatch(message);
    };
    await refuse({ deviceType: 'submarine', key: 'depth', operator: '>', raiseThreshold: 1 }, /^deviceType: no device type "submarine"/);
    await refuse({ deviceType: 'river-level-station', key: 'aqi', operator: '>', raiseThreshold: 1 }, /^key: "aqi" is not declared by device type "river-level-station" \(declared: .*water_level/);
    await refuse({ deviceType: 'river-level-station', key: 'water_level', raiseThreshold: 1 }, /^operator: required/);
    await refuse({ deviceType: 'river-level-station', key: 'water_level', operator: '>' }, /^raiseThreshold: required/);
    await refuse({ deviceType: 'river-level-station', operator: '>', raiseThreshold: 1 }, /^key: required/);
    await refuse({ deviceType: 'river-level-station', key: 'water_level', operator: '>', raiseThreshold: 4, clearThreshold: 5 }, /^clearThreshold: .* must not be above the raise threshold/);
    await refuse({ deviceType: 'traffic-detector', key: 'avg_speed', operator: '<', raiseThreshold: 20, clearThreshold: 10 }, /^clearThreshold: .* must not be below the raise threshold/);
    await refuse({ deviceType: 'river-level-station', key: 'altitude', operator: '>', raiseThreshold: 1 }, /^key: "altitude" is a position key/);
    await refuse({ deviceType: 'river-level-station', kind: 'geofence_exit', geofence: 'drone-corridors' }, /^deviceType: .* do not move/);
    await refuse({ deviceType: 'drone', kind: 'geofence_exit', geofence: 'no-such-fence' }, /^geofence: no geofence "no-such-fence"/);
    await refuse({ deviceType: 'drone', kind: 'geofence_exit', geofence: 'drone-corridors', key: 'battery' }, /^key: not used by geofence_exit rules/);
    await refuse({ deviceType: 'drone', key: 'battery', operator: '<', raiseThreshold: 10, geofence: 'drone-corridors', kind: 'threshold' }, /^geofence: only geofence_exit rules/);
    await refuse({ deviceType: 'drone', key: 'battery', operator: '=', raiseThreshold: 10 }, /operator/);
    await refuse({ deviceType: 'drone', key: 'battery', operator: '<', raiseThreshold: 10, severity: 'apocalyptic' }, /severity/);
    await refuse({ deviceType: 'drone', key: 'battery', operator: '<', raiseThreshold: 10, minDurationSeconds: -1 }, /minDurationSeconds/);
    await refuse({ deviceType: 'drone', key: 'battery', operator: '<', raiseThreshold: 10, colour: 'red' }, /additional properties|colour/);
    const all = await t.api<{ items: Rule[] }>('GET', '/api/v1/alarm-rules');
    expect(all.body.items.filter((r) => r.name === 'bad')).toEqual([]);

    // Generic devices accept undeclared keys: any valid key name is fine.
    const generic = await createRule({ name: 'generic-temp', deviceType: 'generic', key: 'boiler_temp', operator: '>=', raiseThreshold: 90, severity: 'major', minDurationSeconds: 30 });
    expect(generic).toMatchObject({ kind: 'threshold', clearThreshold: 90, clearDurationSeconds: 0, enabled: true, builtin: false });
    expect((await t.api('POST', '/api/v1/alarm-rules', { name: 'generic-temp', deviceType: 'generic', key: 'x', operator: '>', raiseThreshold: 1, severity: 'minor' })).status).toBe(409);

    // Replace and patch: a raise threshold alone keeps the hysteresis band.
    const patched = await t.api<Rule>('PATCH', `/api/v1/alarm-rules/${generic.id}`, { raiseThreshold: 95 });
    expect(patched.body).toMatchObject({ raiseThreshold: 95, clearThreshold: 95 });
    const badPatch = await t.api<{ message: string }>('PATCH', `/api/v1/alarm-rules/${generic.id}`, { clearThreshold: 100 });
    expect(badPatch.status).toBe(400);
    expect(badPatch.body.message).toMatch(/^clearThreshold/);
    const replaced = await t.api<Rule>('PUT', `/api/v1/alarm-rules/${generic.id}`, { name: 'generic-pressure', deviceType: 'generic', key: 'pressure', operator: '<', raiseThreshold: 1, clearThreshold: 1.2, severity: 'critical' });
    expect(replaced.status, JSON.stringify(replaced.body)).toBe(200);
    expect((await t.api<Rule>('GET', `/api/v1/alarm-rules/${generic.id}`)).body).toMatchObject({ name: 'generic-pressure', key: 'pressure', operator: '<', clearThreshold: 1.2 });

    // Built-in rules: changed and disabled, not deleted.
    const builtin = await rule('aqi-heavily-polluted');
    const del = await t.api<{ message: string }>('DELETE', `/api/v1/alarm-rules/${builtin.id}`);
    expect(del.status).toBe(403);
    expect(del.body.message).toMatch(/disable it instead/);
    expect((await t.api('DELETE', `/api/v1/alarm-rules/${generic.id}`)).status).toBe(204);
    expect((await t.api('GET', `/api/v1/alarm-rules/${generic.id}`)).status).toBe(404);
    expect((await t.api('DELETE', `/api/v1/alarm-rules/${generic.id}`)).status).toBe(404);
    expect((await t.api('PUT', '/api/v1/alarm-rules/999999', { name: 'x', deviceType: 'generic', key: 'x', operator: '>', raiseThreshold: 1, severity: 'minor' })).status).toBe(404);
    expect((await t.api('GET', '/api/v1/alarm-rules', undefined, { auth: false })).status).toBe(401);
  });

  it('lists alarms filtered, paginated, and as GeoJSON; refuses bad queries precisely', async () => {
    const bad = async (query: string, message: RegExp) => {
      const res = await t.api<{ message: string }>('GET', `/api/v1/alarms?${query}`);
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.message).toMatch(message);
    };
    await bad('status=burning', /^status: "burning" is not one of raised, acknowledged, cleared, open/);
    await bad('severity=minor,apocalyptic', /^severity: "apocalyptic"/);
    await bad('domain=moon', /^domain: "moon"/);
    await bad('from=yesterday', /^from: /);
    await bad(`from=${base + 1000}&to=${base}`, /^from: must be before to/);
    await bad('format=xml', /^format: "xml"/);
    await bad('limit=0', /limit/);
    expect((await t.api('GET', '/api/v1/alarms/999999')).status).toBe(404);
    expect((await t.api('POST', '/api/v1/alarms/999999/ack', { by: 'x' })).status).toBe(404);
    expect((await t.api('POST', '/api/v1/alarms/1/ack', { by: 'x', colour: 'red' })).status).toBe(400);
    expect((await t.api('POST', '/api/v1/alarms/1/clear', { by: '' })).status).toBe(400);

    const all = (await t.api<Page>('GET', '/api/v1/alarms')).body.items;
    expect(all.length).toBeGreaterThanOrEqual(4);
    expect(all.map((a) => a.id)).toEqual([...all.map((a) => a.id)].sort((a, b) => b - a));
    // pages of two follow each other without gaps
    const first = (await t.api<Page>('GET', '/api/v1/alarms?limit=2')).body;
    const second = (await t.api<Page>('GET', `/api/v1/alarms?limit=2&cursor=${first.nextCursor}`)).body;
    expect([...first.items, ...second.items].map((a) => a.id)).toEqual(all.slice(0, 4).map((a) => a.id));
    expect((await t.api<Page>('GET', '/api/v1/alarms?domain=traffic')).body.items.every((a) => a.device.domain === 'traffic')).toBe(true);
    expect((await t.api<Page>('GET', '/api/v1/alarms?severity=minor,warning')).body.items.every((a) => ['minor', 'warning'].includes(a.severity))).toBe(true);
    expect((await t.api<Page>('GET', '/api/v1/alarms?status=cleared')).body.items.every((a) => a.status === 'cleared')).toBe(true);
    const window = (await t.api<Page>('GET', `/api/v1/alarms?from=${iso(base + 600_000)}&to=${base + 700_000}`)).body.items;
    expect(window.length).toBeGreaterThan(0);
    expect(window.every((a) => Date.parse(a.raisedAt) >= base + 600_000 && Date.parse(a.raisedAt) < base + 700_000)).toBe(true);

    // GeoJSON: by format=geojson, or by Accept.
    const geo = await fetch(`${t.httpUrl}/api/v1/alarms?device=${river.id}&format=geojson`, { headers: { authorization: `Bearer ${t.adminKey}` } });
    expect(geo.headers.get('content-type')).toMatch(/^application\/geo\+json/);
    const fc = (await geo.json()) as { type: string; features: { type: string; id: number; geometry: { type: string; coordinates: number[] } | null; properties: Alarm }[]; nextCursor: number | null };
    expect(fc.type).toBe('FeatureCollection');
    expect(fc.features.length).toBeGreaterThan(0);
    expect(fc.features[0]).toMatchObject({ type: 'Feature', geometry: { type: 'Point', coordinates: [RIVER_AT.lng, RIVER_AT.lat] }, properties: { device: { id: river.id } } });
    expect(fc.features[0]!.properties).not.toHaveProperty('position');
    const negotiated = await fetch(`${t.httpUrl}/api/v1/alarms?limit=1`, { headers: { authorization: `Bearer ${t.adminKey}`, accept: 'application/geo+json' } });
    expect(((await negotiated.json()) as { type: string }).type).toBe('FeatureCollection');
  });

  it('drone leaving its corridor (seeded geofence_exit rule): raised where it left after 30 s outside, cleared when it is back', async () => {
    const drone = await device('drone', null);
    const client = await t.connect(drone.accessToken);
    const fix = (p: typeof IN_CORRIDOR, battery = 80) => ({ ...p, altitude: 80, battery, speed: 10, signal: 90 });
    await publish(client, [[0, fix(IN_CORRIDOR)], [10, fix(IN_CORRIDOR)]]);
    const events = async () => (await t.api<{ features: { properties: { kind: string; geofenceName: string } }[] }>('GET', `/api/v1/geofence-events?device=${drone.id}`)).body.features;
    await eventually(async () => ((await events()).some((e) => e.properties.kind === 'enter' && e.properties.geofenceName === 'drone-corridors') ? true : undefined));
    await publish(client, [[20, fix(OUT_OF_CORRIDOR)]]);
    await eventually(async () => ((await events()).some((e) => e.properties.kind === 'exit' && e.properties.geofenceName === 'drone-corridors') ? true : undefined));
    await publish(client, [[40, fix(OUT_OF_CORRIDOR)]]);
    await new Promise((r) => setTimeout(r, 300));
    expect(await alarmsOf(drone.id)).toEqual([]); // 20 s outside: not yet
    await publish(client, [[50, fix(OUT_OF_CORRIDOR)]]);
    const [alarm] = await eventually(async () => {
      const l = await alarmsOf(drone.id);
      return l.length > 0 ? l : undefined;
    });
    expect(alarm).toMatchObject({
      ruleName: 'drone-left-corridor',
      kind: 'geofence_exit',
      geofence: 'drone-corridors',
      severity: 'critical',
      status: 'raised',
      conditionSince: iso(base + 20_000),
      raisedAt: iso(base + 50_000),
      device: { id: drone.id, type: 'drone', domain: 'air-space-ground' },
      position: { lat: OUT_OF_CORRIDOR.latitude, lng: OUT_OF_CORRIDOR.longitude },
    });
    await publish(client, [[60, fix(IN_CORRIDOR)]]);
    const cleared = await eventually(async () => {
      const a = (await t.api<Alarm>('GET', `/api/v1/alarms/${alarm!.id}`)).body;
      return a.status === 'cleared' ? a : undefined;
    });
    expect(cleared).toMatchObject({ clearReason: 'condition', clearedAt: iso(base + 60_000) });
    // A battery dip below 20 % raises the seeded low-battery rule (10 s) on the same device.
    await publish(client, [[70, fix(IN_CORRIDOR, 18)], [85, fix(IN_CORRIDOR, 17)]]);
    await eventually(async () => ((await alarmsOf(drone.id, '&status=open')).some((a) => a.ruleName === 'drone-battery-low') ? true : undefined));
  });

  it('changing what a rule watches, deleting it, or changing the device type clears open alarms with the reason', async () => {
    const raiseOne = async (client: MqttClient, deviceId: number, s: number, values: Record<string, number>, ruleName: string) => {
      await publish(client, [[s, values]]);
      return eventually(async () => (await alarmsOf(deviceId, '&status=open')).find((a) => a.ruleName === ruleName));
    };
    const station = await device('air-quality-station');
    const client = await t.connect(station.accessToken);
    const pm = await createRule({ name: 'pm25-high', deviceType: 'air-quality-station', key: 'pm25', operator: '>', raiseThreshold: 150, clearThreshold: 100, severity: 'major' });

    // A threshold change keeps it open; a key change clears it (rule_changed).
    const first = await raiseOne(client, station.id, 0, { pm25: 200 }, 'pm25-high');
    expect((await t.api('PATCH', `/api/v1/alarm-rules/${pm.id}`, { raiseThreshold: 160 })).status).toBe(200);
    expect((await t.api<Alarm>('GET', `/api/v1/alarms/${first.id}`)).body.status).toBe('raised');
    expect((await t.api('PATCH', `/api/v1/alarm-rules/${pm.id}`, { key: 'pm10' })).status).toBe(200);
    expect((await t.api<Alarm>('GET', `/api/v1/alarms/${first.id}`)).body).toMatchObject({ status: 'cleared', clearReason: 'rule_changed', key: 'pm25', threshold: 150 });

    // Deleting the rule clears its open alarm and keeps it in the history without a rule.
    const second = await raiseOne(client, station.id, 10, { pm10: 300 }, 'pm25-high');
    expect((await t.api('DELETE', `/api/v1/alarm-rules/${pm.id}`)).status).toBe(204);
    expect((await t.api<Alarm>('GET', `/api/v1/alarms/${second.id}`)).body).toMatchObject({ status: 'cleared', clearReason: 'rule_deleted', ruleId: null, ruleName: 'pm25-high', key: 'pm10' });

    // The device becomes a noise monitor (same domain): the air-quality rule's alarm is cleared.
    await createRule({ name: 'no2-high', deviceType: 'air-quality-station', key: 'no2', operator: '>', raiseThreshold: 200, severity: 'minor' });
    const third = await raiseOne(client, station.id, 20, { no2: 300 }, 'no2-high');
    const moved = await t.api('PUT', `/api/v1/devices/${station.id}`, { name: station.name, type: 'noise-monitor', location: RIVER_AT });
    expect(moved.status, JSON.stringify(moved.body)).toBe(200);
    const cleared = await eventually(async () => {
      const a = (await t.api<Alarm>('GET', `/api/v1/alarms/${third.id}`)).body;
      return a.status === 'cleared' ? a : undefined;
    });
    expect(cleared).toMatchObject({ clearReason: 'device_type_changed', device: { type: 'noise-monitor' } });
  });

  it('a full evaluation queue drops whole batches (counted) and evaluation carries on with later readings', async () => {
    const station = await device('river-level-station');
    await createRule({ name: 'overflow-flow', deviceType: 'river-level-station', key: 'flow_rate', operator: '>', raiseThreshold: 100, clearThreshold: 50, severity: 'minor' });
    // A second evaluator on the same database, with room for four readings, fed directly.
    const pool = testPool(database.url, 2);
    const registry = new DeviceRegistry(pool);
    await registry.init();
    const service = new AlarmService({ pool, registry, log: createLogger('silent'), maxQueuedReadings: 4 });
    try {
      await service.start();
      const row = (s: number, flow: number) => ({ deviceId: station.id, domain: 'water' as const, ts: base + s * 1000, values: { flow_rate: flow } });
      service.readingsCommitted([row(0, 10), row(1, 10), row(2, 10)]);
      service.readingsCommitted([row(3, 200), row(4, 200)]); // 3 + 2 > 4: dropped, not evaluated
      expect(service.droppedReadings).toBe(2);
      expect(service.pendingReadings).toBe(3);
      await service.idle();
      expect(service.pendingReadings).toBe(0);
      expect(await alarmsOf(station.id)).toEqual([]);
      service.readingsCommitted([row(5, 200)]);
      await service.idle();
      const list = await alarmsOf(station.id);
      expect(list).toHaveLength(1);
      expect(list[0]).toMatchObject({ ruleName: 'overflow-flow', raisedAt: iso(base + 5000), value: 200 });
    } finally {
      await service.stop();
      await pool.end();
    }
  });

  it('reloads open alarms after a restart, so they clear when the condition does', async () => {
    const station = await device('river-level-station');
    const client = await t.connect(station.accessToken);
    await createRule({ name: 'restart-battery', deviceType: 'river-level-station', key: 'battery', operator: '<', raiseThreshold: 20, clearThreshold: 30, severity: 'major' });
    await publish(client, [[0, { battery: 15 }]]);
    const [open] = await eventually(async () => {
      const l = await alarmsOf(station.id, '&status=open');
      return l.length > 0 ? l : undefined;
    });
    await client.endAsync(true);

    // Stop this platform (the database stays) and start another on the same database.
    await t.platform.stop();
    const t2 = await startTestPlatform({}, { database });
    t = t2; // afterAll stops this one (and drops the database)
    const again = await t2.connect(station.accessToken);
    await publish(again, [[10, { battery: 25 }]]); // between the lines: stays open
    await new Promise((r) => setTimeout(r, 300));
    expect((await t2.api<Alarm>('GET', `/api/v1/alarms/${open!.id}`)).body.status).toBe('raised');
    await publish(again, [[20, { battery: 35 }]]);
    const cleared = await eventually(async () => {
      const a = (await t2.api<Alarm>('GET', `/api/v1/alarms/${open!.id}`)).body;
      return a.status === 'cleared' ? a : undefined;
    });
    expect(cleared).toMatchObject({ clearReason: 'condition', clearedAt: iso(base + 20_000), lastValue: 35 });
    expect(await t2.api<Page>('GET', `/api/v1/alarms?device=${station.id}`).then((r) => r.body.items)).toHaveLength(1);
  });
});
