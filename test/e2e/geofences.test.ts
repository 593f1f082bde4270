import mqtt, { type MqttClient } from 'mqtt';
import { io as ioClient, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { mosquittoSub, type MosquittoTarget } from '../support/mosquitto-clients.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

interface FenceFeature {
  type: 'Feature';
  id: number;
  geometry: { type: string; coordinates: unknown };
  properties: { name: string; domain: string; deviceTypes: string[]; dwellSeconds: number | null; createdAt: string; updatedAt: string };
}
interface EventFeature {
  type: 'Feature';
  id: number;
  geometry: { type: 'Point'; coordinates: [number, number] };
  properties: { kind: string; geofenceId: number; geofenceName: string; domain: string; deviceId: number; deviceName: string; deviceType: string; ts: string };
}
interface Collection<F> {
  type: 'FeatureCollection';
  features: F[];
}
interface EventMessage {
  id: number;
  kind: string;
  geofenceId: number;
  geofenceName: string;
  domain: string;
  deviceId: number;
  deviceName: string;
  deviceType: string;
  ts: string;
  lng: number;
  lat: number;
}

const TELEMETRY = 'v1/devices/me/telemetry';
const APP = 'guanlink-app';
// A square (~1.1 km) east of Dongguan's centre, away from the seeded fences.
const square = (west: number, east: number) => ({
  type: 'Polygon',
  coordinates: [[[west, 23.05], [east, 23.05], [east, 23.06], [west, 23.06], [west, 23.05]]],
});
const fenceBody = (name: string, geometry: unknown, properties: Record<string, unknown> = {}) => ({
  type: 'Feature',
  geometry,
  properties: { name, domain: 'air-space-ground', deviceTypes: ['drone'], dwellSeconds: 5, ...properties },
});
const OUTSIDE: [number, number] = [113.94, 23.055];
const INSIDE: [number, number] = [113.955, 23.055];
const INSIDE_2: [number, number] = [113.956, 23.0551];
const INSIDE_3: [number, number] = [113.957, 23.0552];
const FAR: [number, number] = [113.97, 23.055];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The QoS granted per topic (128: refused); mqtt.js rejects a SUBACK with a failure, carrying the packet. */
const grantedOf = (client: MqttClient, topics: string[]) =>
  client.subscribeAsync(topics, { qos: 1 }).then(
    (granted) => granted.map((g) => g.qos),
    (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
  );

describe('geofences', () => {
  let database: TestDatabase;
  let t: TestPlatform;
  let drone: CreatedDevice;
  let droneClient: MqttClient;
  let fenceId: number;
  const base = Date.now() - 10 * 60_000; // reading times: ten minutes ago onwards

  const position = async (client: MqttClient, at: [number, number], tsOffsetS: number) =>
    client.publishAsync(TELEMETRY, JSON.stringify({ ts: base + tsOffsetS * 1000, values: { longitude: at[0], latitude: at[1], speed: 10 } }), { qos: 1 });
  const fenceEvents = async (id: number, query = '') => (await t.api<Collection<EventFeature>>('GET', `/api/v1/geofences/${id}/events${query}`)).body.features;
  const appTarget = (password: string): MosquittoTarget => ({ port: t.platform.mqttPort, username: APP, password });

  beforeAll(async () => {
    database = await createTestDatabase();
    t = await startTestPlatform({ databaseUrl: database.url });
    drone = await t.createDevice({ name: 'gf-drone-1', type: 'drone' });
    droneClient = await t.connect(drone.accessToken);
  });
  afterAll(async () => {
    await t?.stop();
    await database?.drop();
  });

  describe('REST: CRUD of geofences as GeoJSON', () => {
    it('lists the seeded fences of the simulated city as a FeatureCollection', async () => {
      const res = await t.api<Collection<FenceFeature>>('GET', '/api/v1/geofences');
      expect(res.status).toBe(200);
      expect(res.body.type).toBe('FeatureCollection');
      const names = res.body.features.map((f) => f.properties.name);
      expect(names).toEqual(expect.arrayContaining(['drone-corridors', 'drone-docks', 'bus-terminal-humen', 'bus-terminal-guancheng']));
      const corridors = res.body.features.find((f) => f.properties.name === 'drone-corridors')!;
      expect(corridors.geometry.type).toBe('MultiPolygon');
      expect(corridors.properties.deviceTypes).toEqual(['drone']);
      const traffic = await t.api<Collection<FenceFeature>>('GET', '/api/v1/geofences?domain=traffic');
      expect(traffic.body.features.map((f) => f.properties.name).sort()).toEqual(['bus-terminal-guancheng', 'bus-terminal-humen']);
    });

    it('creates a fence from a GeoJSON Feature and returns it as one', async () => {
      const res = await t.api<FenceFeature>('POST', '/api/v1/geofences', fenceBody('test-square', square(113.95, 113.96)));
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body).toMatchObject({
        type: 'Feature',
        geometry: square(113.95, 113.96),
        properties: { name: 'test-square', domain: 'air-space-ground', deviceTypes: ['drone'], dwellSeconds: 5 },
      });
      fenceId = res.body.id;
      const one = await t.api<FenceFeature>('GET', `/api/v1/geofences/${fenceId}`);
      expect(one.status).toBe(200);
      expect(one.body).toEqual(res.body);
    });

    it('refuses bad input with a precise 400 and changes nothing', async () => {
      const refuse = async (body: unknown, message: RegExp) => {
        const res = await t.api<{ message: string }>('POST', '/api/v1/geofences', body);
        expect(res.status, JSON.stringify(res.body)).toBe(400);
        expect(res.body.message).toMatch(message);
      };
      const open = { type: 'Polygon', coordinates: [[[113.9, 23.0], [113.91, 23.0], [113.91, 23.01], [113.9, 23.01]]] };
      await refuse(fenceBody('bad-1', open), /^geometry: .*not closed/);
      const bowtie = { type: 'Polygon', coordinates: [[[113.9, 23.0], [113.91, 23.01], [113.91, 23.0], [113.9, 23.01], [113.9, 23.0]]] };
      await refuse(fenceBody('bad-2', bowtie), /^geometry: .*intersects itself/);
      await refuse(fenceBody('bad-3', { type: 'Point', coordinates: [113.9, 23.0] }), /^geometry: .*Polygon or MultiPolygon/);
      await refuse(fenceBody('bad-4', square(113.95, 113.96), { deviceTypes: ['ground-station'] }), /not a moving type/);
      await refuse(fenceBody('bad-5', square(113.95, 113.96), { deviceTypes: ['no-such-type'] }), /unknown device type "no-such-type"/);
      await refuse(fenceBody('bad-6', square(113.95, 113.96), { dwellSeconds: 0 }), /dwellSeconds/);
      await refuse(fenceBody('bad-6b', square(113.95, 113.96), { dwellSeconds: 2.5 }), /dwellSeconds/);
      await refuse(fenceBody('bad-6c', square(113.95, 113.96), { dwellSeconds: '60' }), /dwellSeconds/);
      await refuse(fenceBody('bad-7', square(113.95, 113.96), { domain: 'moon' }), /domain/);
      await refuse({ ...fenceBody('bad-8', square(113.95, 113.96)), properties: { name: 'bad-8', domain: 'traffic', colour: 'red' } }, /properties/);
      const dup = await t.api<{ message: string }>('POST', '/api/v1/geofences', fenceBody('test-square', square(113.95, 113.96)));
      expect(dup.status).toBe(409);
      expect(dup.body.message).toMatch(/test-square/);
      const all = await t.api<Collection<FenceFeature>>('GET', '/api/v1/geofences');
      expect(all.body.features.filter((f) => f.properties.name.startsWith('bad-'))).toEqual([]);
      expect((await t.api('GET', '/api/v1/geofences/999999')).status).toBe(404);
      expect((await t.api('PUT', '/api/v1/geofences/999999', fenceBody('x', square(113.95, 113.96)))).status).toBe(404);
      expect((await t.api('DELETE', '/api/v1/geofences/999999')).status).toBe(404);
      expect((await t.api('GET', '/api/v1/geofences/999999/events')).status).toBe(404);
      expect((await t.api('GET', '/api/v1/geofence-events?device=999999')).status).toBe(404);
      expect((await t.api<{ message: string }>('GET', `/api/v1/geofences/${fenceId}/events?from=yesterday`)).body.message).toMatch(/^from: /);
      expect((await t.api('GET', '/api/v1/geofences', undefined, { auth: false })).status).toBe(401);
    });
  });

  describe('events through MQTT, REST, mosquitto_sub and socket.io', () => {
    it('a drone crossing the fence produces enter, dwell and exit, delivered everywhere', async () => {
      // Subscribers first: mqtt.js and mosquitto_sub as application sessions, socket.io on the device's room.
      const app = await mqtt.connectAsync(t.mqttUrl, { username: APP, password: t.adminKey, reconnectPeriod: 0, connectTimeout: 5000 });
      const received: { topic: string; payload: EventMessage; qos: number; retain: boolean }[] = [];
      app.on('message', (topic, payload, packet) => received.push({ topic, payload: JSON.parse(payload.toString()) as EventMessage, qos: packet.qos, retain: packet.retain }));
      const granted = await app.subscribeAsync('guanlink/events/geofences/+', { qos: 1 });
      expect(granted.map((g) => g.qos)).toEqual([1]);
      const sub = mosquittoSub(appTarget(t.adminKey), { topics: [`guanlink/events/geofences/${fenceId}`], count: 3, waitSeconds: 20 });
      await sub.subscribed;
      const socket: Socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'] });
      const live: EventMessage[] = [];
      try {
        await new Promise<void>((resolve, reject) => {
          socket.on('connect', resolve);
          socket.on('connect_error', reject);
        });
        socket.on('geofence', (e: EventMessage) => live.push(e));
        await socket.emitWithAck('subscribe', { device: drone.id });

        // A river station registered inside the square never produces events (it does not move).
        const station = await t.createDevice({ name: 'gf-station', type: 'river-level-station', location: { lng: INSIDE[0], lat: INSIDE[1] } });
        const stationClient = await t.connect(station.accessToken);
        await stationClient.publishAsync(TELEMETRY, JSON.stringify({ water_level: 2.5 }), { qos: 1 });

        await position(droneClient, OUTSIDE, 0);
        await position(droneClient, INSIDE, 1); // enter
        await position(droneClient, INSIDE_2, 3);
        await position(droneClient, INSIDE_3, 7); // 6 s inside ≥ 5 s: dwell
        await position(droneClient, FAR, 9); // exit

        const events = await eventually(async () => {
          const e = await fenceEvents(fenceId);
          return e.length >= 3 ? e : undefined;
        });
        await sleep(300);
        expect((await fenceEvents(fenceId)).length).toBe(3);
        // Newest first, GeoJSON Points where the drone was, at the reading's time.
        expect(events.map((e) => [e.properties.kind, e.geometry.coordinates, Date.parse(e.properties.ts) - base])).toEqual([
          ['exit', FAR, 9000],
          ['dwell', INSIDE_3, 7000],
          ['enter', INSIDE, 1000],
        ]);
        expect(events[0]!.properties).toMatchObject({ geofenceId: fenceId, geofenceName: 'test-square', domain: 'air-space-ground', deviceId: drone.id, deviceName: 'gf-drone-1', deviceType: 'drone' });
        const byDevice = await t.api<Collection<EventFeature>>('GET', `/api/v1/geofence-events?device=${drone.id}&limit=100`);
        expect(byDevice.body.features.filter((e) => e.properties.geofenceId === fenceId).map((e) => e.id)).toEqual(events.map((e) => e.id));
        expect(byDevice.body.features.every((e) => e.properties.deviceId === drone.id)).toBe(true);
        const enters = await fenceEvents(fenceId, `?kind=enter&from=${base}&to=${base + 5000}`);
        expect(enters.map((e) => e.properties.kind)).toEqual(['enter']);
        expect(await fenceEvents(fenceId, `?device=${station.id}`)).toEqual([]);

        const expected = [...events].reverse().map((e) => ({ id: e.id, kind: e.properties.kind, lng: e.geometry.coordinates[0], lat: e.geometry.coordinates[1], ts: e.properties.ts }));
        const pick = (m: EventMessage) => ({ id: m.id, kind: m.kind, lng: m.lng, lat: m.lat, ts: m.ts });
        // mqtt.js application session: QoS 1, not retained, on the fence's topic.
        await eventually(() => (received.filter((r) => r.payload.geofenceId === fenceId).length >= 3 ? true : undefined));
        const mine = received.filter((r) => r.payload.geofenceId === fenceId);
        expect(mine.map((r) => pick(r.payload))).toEqual(expected);
        expect(mine.every((r) => r.topic === `guanlink/events/geofences/${fenceId}` && r.qos === 1 && !r.retain)).toBe(true);
        expect(mine[0]!.payload).toMatchObject({ geofenceName: 'test-square', deviceId: drone.id, deviceName: 'gf-drone-1' });
        // mosquitto_sub
        const mosq = await sub.done;
        expect(mosq.code, mosq.stderr + mosq.stdout).toBe(0);
        expect(mosq.messages.map((m) => pick(JSON.parse(m.payload) as EventMessage))).toEqual(expected);
        // socket.io
        await eventually(() => (live.length >= 3 ? true : undefined));
        expect(live.filter((e) => e.geofenceId === fenceId).map(pick)).toEqual(expected);
      } finally {
        socket.close();
        sub.stop();
        await app.endAsync(true);
      }
    });

    it('skips a late reading older than the last one evaluated (no spurious enter)', async () => {
      await position(droneClient, INSIDE, 8); // before the exit at 9 s
      await position(droneClient, FAR, 10);
      await sleep(500);
      expect((await fenceEvents(fenceId)).length).toBe(3);
    });

    it('applies a fence change to the next reading: shrinking the fence makes the drone inside exit', async () => {
      await position(droneClient, INSIDE, 20); // enter
      await eventually(async () => ((await fenceEvents(fenceId)).length === 4 ? true : undefined));
      const moved = await t.api<FenceFeature>('PUT', `/api/v1/geofences/${fenceId}`, fenceBody('test-square', square(113.958, 113.96), { dwellSeconds: null }));
      expect(moved.status, JSON.stringify(moved.body)).toBe(200);
      expect(moved.body.properties.dwellSeconds).toBeNull();
      await position(droneClient, INSIDE, 21); // outside the new square
      const events = await eventually(async () => {
        const e = await fenceEvents(fenceId);
        return e.length === 5 ? e : undefined;
      });
      expect(events.slice(0, 2).map((e) => e.properties.kind)).toEqual(['exit', 'enter']);
      const bad = await t.api<{ message: string }>('PUT', `/api/v1/geofences/${fenceId}`, fenceBody('test-square', { type: 'Polygon', coordinates: [] }));
      expect(bad.status).toBe(400);
      expect((await t.api<FenceFeature>('GET', `/api/v1/geofences/${fenceId}`)).body.geometry).toEqual(square(113.958, 113.96));
    });
  });

  describe('MQTT access control of platform events', () => {
    it('refuses an application session with a wrong key (CONNACK not authorized), with mqtt.js and mosquitto_sub', async () => {
      const err = await mqtt.connectAsync(t.mqttUrl, { username: APP, password: 'not-the-admin-key', reconnectPeriod: 0, connectTimeout: 5000 }).then(
        (c) => {
          void c.endAsync(true);
          return undefined;
        },
        (e: Error & { code?: number }) => e,
      );
      expect(err?.code).toBe(5);
      const noPassword = await mqtt.connectAsync(t.mqttUrl, { username: APP, reconnectPeriod: 0, connectTimeout: 5000 }).then(
        (c) => {
          void c.endAsync(true);
          return undefined;
        },
        (e: Error & { code?: number }) => e,
      );
      expect(noPassword?.code).toBe(5);
      const sub = mosquittoSub(appTarget('wrong-key'), { topics: ['guanlink/events/#'], waitSeconds: 2 });
      const result = await sub.done;
      expect(result.code).not.toBe(0);
      expect(result.stderr + result.stdout).toMatch(/not authori[sz]ed/i);
    });

    it('refuses a persistent application session (events are not queued for absent subscribers)', async () => {
      const err = await mqtt.connectAsync(t.mqttUrl, { username: APP, password: t.adminKey, clean: false, clientId: 'ops-1', reconnectPeriod: 0, connectTimeout: 5000 }).then(
        (c) => {
          void c.endAsync(true);
          return undefined;
        },
        (e: Error & { code?: number }) => e,
      );
      expect(err?.code).toBe(2);
    });

    it('lets an application session subscribe only under guanlink/events/, and never publish', async () => {
      const app = await mqtt.connectAsync(t.mqttUrl, { username: APP, password: t.adminKey, reconnectPeriod: 0, connectTimeout: 5000 });
      try {
        expect(await grantedOf(app, ['guanlink/events/#', 'guanlink/#', '#', 'v1/devices/me/attributes', '$SYS/#', 'guanlink/events'])).toEqual([1, 128, 128, 128, 128, 128]);
        const closed = new Promise<void>((resolve) => app.once('close', () => resolve()));
        app.publish(`guanlink/events/geofences/${fenceId}`, JSON.stringify({ kind: 'enter', forged: true }), { qos: 1 });
        await Promise.race([closed, sleep(5000).then(() => Promise.reject(new Error('the broker did not close the publishing application session')))]);
      } finally {
        await app.endAsync(true);
      }
      // mosquitto_sub: SUBACK failure (128) outside guanlink/events/
      const sub = mosquittoSub(appTarget(t.adminKey), { topics: ['v1/devices/me/telemetry'], waitSeconds: 1 });
      await sub.subscribed;
      expect((await sub.done).stdout).toMatch(/Subscribed \(mid: \d+\): 128/);
    });

    it('refuses a device subscribing to guanlink/events/#, and delivers it no events', async () => {
      const other = await t.createDevice({ name: 'gf-drone-spy', type: 'drone' });
      const client = await t.connect(other.accessToken);
      const messages: string[] = [];
      client.on('message', (topic) => messages.push(topic));
      expect(await grantedOf(client, ['guanlink/events/#', `guanlink/events/geofences/${fenceId}`])).toEqual([128, 128]);
      await position(droneClient, [113.959, 23.055], 30); // enter the moved square
      await eventually(async () => ((await fenceEvents(fenceId)).length === 6 ? true : undefined));
      await sleep(300);
      expect(messages).toEqual([]);
      // A device publishing there is refused as any topic outside the device API.
      const sub = mosquittoSub(appTarget(t.adminKey), { topics: ['guanlink/events/#'], waitSeconds: 1 });
      await sub.subscribed;
      await client.publishAsync('guanlink/events/geofences/1', '{"forged":true}', { qos: 1 });
      expect((await sub.done).messages).toEqual([]);
    });
  });

  describe('restart', () => {
    it('does not produce a second enter for a drone already inside, and keeps evaluating from the stored presence', async () => {
      const before = await fenceEvents(fenceId);
      expect(before[0]!.properties.kind).toBe('enter'); // the drone is inside (last test)
      await t.stop();
      t = await startTestPlatform({ databaseUrl: database.url });
      droneClient = await t.connect(drone.accessToken);
      await position(droneClient, [113.9591, 23.0551], 40); // still inside
      await position(droneClient, [113.9592, 23.0552], 41);
      await sleep(800);
      expect((await fenceEvents(fenceId)).map((e) => e.id)).toEqual(before.map((e) => e.id));
      await position(droneClient, FAR, 42);
      const after = await eventually(async () => {
        const e = await fenceEvents(fenceId);
        return e.length === before.length + 1 ? e : undefined;
      });
      expect(after[0]!.properties.kind).toBe('exit');
      expect(after.filter((e) => e.properties.kind === 'enter')).toHaveLength(before.filter((e) => e.properties.kind === 'enter').length);
    });

    it('another node sharing the database picks up fence changes within seconds', async () => {
      const b = await startTestPlatform({ databaseUrl: database.url });
      try {
        const created = await t.api<FenceFeature>('POST', '/api/v1/geofences', fenceBody('node-shared', square(113.97, 113.98)));
        expect(created.status).toBe(201);
        const names = async () => (await b.api<Collection<FenceFeature>>('GET', '/api/v1/geofences')).body.features.map((f) => f.properties.name);
        await eventually(async () => ((await names()).includes('node-shared') ? true : undefined), { timeoutMs: 15_000 });
        expect((await t.api('DELETE', `/api/v1/geofences/${created.body.id}`)).status).toBe(204);
        await eventually(async () => (!(await names()).includes('node-shared') ? true : undefined), { timeoutMs: 15_000 });
      } finally {
        await b.stop();
      }
    });

    it('deletes a fence with its events; it is watched no more', async () => {
      expect((await t.api('DELETE', `/api/v1/geofences/${fenceId}`)).status).toBe(204);
      expect((await t.api('GET', `/api/v1/geofences/${fenceId}`)).status).toBe(404);
      expect((await t.api('GET', `/api/v1/geofences/${fenceId}/events`)).status).toBe(404);
      const res = await t.api<Collection<EventFeature>>('GET', `/api/v1/geofence-events?device=${drone.id}`);
      expect(res.body.features.filter((e) => e.properties.geofenceId === fenceId)).toEqual([]);
      await position(droneClient, [113.959, 23.055], 50);
      await sleep(500);
      const again = await t.api<Collection<EventFeature>>('GET', `/api/v1/geofence-events?device=${drone.id}`);
      expect(again.body.features).toEqual([]);
    });
  });
});
