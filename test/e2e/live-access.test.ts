import mqtt, { type MqttClient } from 'mqtt';
import { io as ioClient, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startOidcProvider, type TestOidcProvider } from '../support/oidc-provider.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

// Access on live streams (socket.io) and MQTT application sessions: scoped keys see only their
// scope, keys without `live` are refused, and revocation, rotation, change and expiry close open
// streams at once.

const AUDIENCE = 'urn:guanlink:live-access';
const TELEMETRY = 'v1/devices/me/telemetry';
const APP = 'guanlink-app';
// A small square (~2 km) north-west of Dongguan's centre.
const AREA = { type: 'Polygon', coordinates: [[[113.74, 23.01], [113.76, 23.01], [113.76, 23.03], [113.74, 23.03], [113.74, 23.01]]] };
const INSIDE = { lat: 23.02, lng: 113.75 };
const INSIDE_2 = { lat: 23.025, lng: 113.745 };
const OUTSIDE = { lat: 22.98, lng: 113.8 };
const FLUSH_MS = 400; // longer than the live flush interval (100 ms) and the routing of a batch

interface LiveReading {
  deviceId: number;
  domain: string;
  values: Record<string, number>;
  lat?: number;
  lng?: number;
}
interface Hello {
  principal: { kind: string; id: string; name: string; roles: string[]; permissions: string[]; scope: Record<string, unknown>; expiresAt: string | null };
}
interface Opened {
  socket: Socket;
  hello: Hello;
  readings: LiveReading[];
  alarms: { kind: string; alarm: { device: { id: number } } }[];
  ended: { code: string; reason: string }[];
  /** Resolves with when (ms since epoch) the socket was disconnected. */
  disconnected: Promise<number>;
}
type ConnectError = Error & { data?: { statusCode: number; reason: string; permission?: string } };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('access on live streams and MQTT application sessions', () => {
  let idp: TestOidcProvider;
  let t: TestPlatform;
  let river: CreatedDevice; // water, inside the area
  let riverFar: CreatedDevice; // water, outside the area
  let detector: CreatedDevice; // traffic, inside the area
  let bus: CreatedDevice; // traffic, moving
  let admin: Opened;
  const sockets: Socket[] = [];
  const clients: MqttClient[] = [];

  const createKey = async (body: Record<string, unknown>) => {
    const res = await t.api<{ id: number; key: string }>('POST', '/api/v1/keys', { owner: 'test agency', ...body });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };

  /** A socket authenticated with `token`, resolved once its `hello` arrived; refusals reject with the connect_error. */
  const open = (token: string) =>
    new Promise<Opened>((resolve, reject) => {
      const socket = ioClient(t.httpUrl, { auth: { token }, transports: ['websocket'], reconnection: false, forceNew: true });
      sockets.push(socket);
      const readings: LiveReading[] = [];
      const alarms: Opened['alarms'] = [];
      const ended: Opened['ended'] = [];
      socket.on('readings', (batch: LiveReading[]) => readings.push(...batch));
      socket.on('alarm', (change: Opened['alarms'][number]) => alarms.push(change));
      socket.on('access-ended', (e: Opened['ended'][number]) => ended.push(e));
      const disconnected = new Promise<number>((r) => socket.once('disconnect', () => r(Date.now())));
      socket.once('hello', (hello: Hello) => resolve({ socket, hello, readings, alarms, ended, disconnected }));
      socket.once('connect_error', reject);
    });
  const refusal = (token: string) => open(token).then(
    () => {
      throw new Error('the connection was accepted');
    },
    (err: ConnectError) => err,
  );
  const subscribe = (o: Opened, target: unknown) => o.socket.emitWithAck('subscribe', target) as Promise<{ ok: boolean; room?: string; error?: string }>;

  const appSession = async (password: string) => {
    const client = await mqtt.connectAsync(t.mqttUrl, { username: APP, password, reconnectPeriod: 0, connectTimeout: 5000 });
    clients.push(client);
    return client;
  };
  const appRefusal = (password: string) =>
    mqtt.connectAsync(t.mqttUrl, { username: APP, password, reconnectPeriod: 0, connectTimeout: 5000 }).then(
      (c) => {
        void c.endAsync(true);
        return undefined;
      },
      (e: Error & { code?: number }) => e,
    );

  const publish = async (device: CreatedDevice, values: Record<string, number>) => {
    const client = await t.connect(device.accessToken);
    await client.publishAsync(TELEMETRY, JSON.stringify(values), { qos: 1 });
    await client.endAsync();
  };
  /** Waits until the admin socket (which sees everything) has a reading of `device` with `key` = `value`. */
  const adminGot = (device: CreatedDevice, key: string, value: number) =>
    eventually(() => (admin.readings.some((r) => r.deviceId === device.id && r.values[key] === value) ? true : undefined));
  const got = (o: Opened, device: CreatedDevice, key: string, value: number) => o.readings.some((r) => r.deviceId === device.id && r.values[key] === value);

  beforeAll(async () => {
    idp = await startOidcProvider({ audience: AUDIENCE, claims: (accountId) => ({ roles: ['agency'], name: `Staff ${accountId}` }) });
    t = await startTestPlatform({ oidcIssuer: idp.issuer, oidcAudience: AUDIENCE, oidcClientId: idp.clientId });
    river = await t.createDevice({ name: 'la-river', type: 'river-level-station', location: INSIDE });
    riverFar = await t.createDevice({ name: 'la-river-far', type: 'river-level-station', location: OUTSIDE });
    detector = await t.createDevice({ name: 'la-detector', type: 'traffic-detector', location: INSIDE_2 });
    bus = await t.createDevice({ name: 'la-bus', type: 'bus' });
    admin = await open(t.adminKey);
    for (const domain of ['water', 'traffic']) expect((await subscribe(admin, { domain })).ok).toBe(true);
  });

  afterAll(async () => {
    for (const s of sockets) s.close();
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await t?.stop();
    await idp?.stop();
  });

  it('tells a socket who it is (hello), and the bootstrap admin key still sees everything', async () => {
    expect(admin.hello.principal).toMatchObject({ kind: 'bootstrap', roles: ['admin'], scope: {}, expiresAt: null });
    expect(admin.hello.principal.permissions).toContain('live');
  });

  it('a water-scoped key receives water readings, not traffic', async () => {
    const { key } = await createKey({ name: 'water bureau', roles: ['agency'], scope: { domains: ['water'] } });
    const water = await open(key);
    expect(water.hello.principal).toMatchObject({ kind: 'key', name: 'water bureau', owner: 'test agency', roles: ['agency'], scope: { domains: ['water'] } });
    expect(water.hello.principal.permissions).toEqual(['devices:claim', 'live', 'read']);
    expect(await subscribe(water, { domain: 'water' })).toEqual({ ok: true, room: 'domain:water' });
    expect(await subscribe(water, { domain: 'traffic' })).toEqual({ ok: false, error: 'domain traffic is outside the scope of this credential' });
    expect(await subscribe(water, { device: river.id })).toEqual({ ok: true, room: `device:${river.id}` });

    await publish(detector, { vehicle_count: 11 });
    await publish(river, { water_level: 1.11 });
    await adminGot(detector, 'vehicle_count', 11);
    await adminGot(river, 'water_level', 1.11);
    await eventually(() => (got(water, river, 'water_level', 1.11) ? true : undefined));
    await sleep(FLUSH_MS);
    expect(water.readings.every((r) => r.domain === 'water')).toBe(true);
    expect(got(water, detector, 'vehicle_count', 11)).toBe(false);
    // Both of its rooms (the device and the domain) delivered the river's reading.
    expect(water.readings.filter((r) => r.deviceId === river.id && r.values.water_level === 1.11)).toHaveLength(2);
  });

  it('refuses a device subscription outside the scope exactly as one to a device that does not exist', async () => {
    const { key } = await createKey({ name: 'water only', roles: ['agency'], scope: { domains: ['water'] } });
    const water = await open(key);
    expect(await subscribe(water, { device: detector.id })).toEqual({ ok: false, error: `no device ${detector.id}` });
    expect(await subscribe(water, { device: 99_999_999 })).toEqual({ ok: false, error: 'no device 99999999' });
    expect(await subscribe(admin, { device: 99_999_999 })).toEqual({ ok: false, error: 'no device 99999999' });
    expect(await subscribe(water, { device: 'x' })).toEqual({ ok: false, error: 'expected {device: <id>} or {domain: <name>}' });

    const { key: areaKey } = await createKey({ name: 'area only', roles: ['agency'], scope: { area: AREA } });
    const area = await open(areaKey);
    expect(await subscribe(area, { device: riverFar.id })).toEqual({ ok: false, error: `no device ${riverFar.id}` });
    expect(await subscribe(area, { device: river.id })).toEqual({ ok: true, room: `device:${river.id}` });
  });

  it("an area-scoped key receives a moving device's readings inside the area and not outside", async () => {
    const { key } = await createKey({ name: 'district office', roles: ['agency'], scope: { area: AREA } });
    const area = await open(key);
    expect(area.hello.principal.scope).toEqual({ area: AREA });
    for (const domain of ['water', 'traffic']) expect((await subscribe(area, { domain })).ok).toBe(true);

    const client = await t.connect(bus.accessToken);
    const drive = async (speed: number, at: { lat: number; lng: number }) => {
      await client.publishAsync(TELEMETRY, JSON.stringify({ speed, latitude: at.lat, longitude: at.lng }), { qos: 1 });
      await adminGot(bus, 'speed', speed);
    };
    await drive(21, INSIDE);
    await drive(22, OUTSIDE);
    await drive(23, INSIDE_2);
    await client.endAsync();
    await eventually(() => (got(area, bus, 'speed', 23) ? true : undefined));
    await sleep(FLUSH_MS);
    expect(area.readings.filter((r) => r.deviceId === bus.id).map((r) => [r.values.speed, r.lat, r.lng])).toEqual([
      [21, INSIDE.lat, INSIDE.lng],
      [23, INSIDE_2.lat, INSIDE_2.lng],
    ]);

    // Readings without a position: those of devices registered inside the area only.
    await publish(riverFar, { water_level: 2.22 });
    await publish(river, { water_level: 2.21 });
    await adminGot(riverFar, 'water_level', 2.22);
    await adminGot(river, 'water_level', 2.21);
    await eventually(() => (got(area, river, 'water_level', 2.21) ? true : undefined));
    await sleep(FLUSH_MS);
    expect(got(area, riverFar, 'water_level', 2.22)).toBe(false);
  });

  it('filters the snapshot to the scope (and to positions inside an area)', async () => {
    // The bus's latest position is inside the area (the previous test ended there).
    const all = (await admin.socket.emitWithAck('snapshot', null)) as { devices: { id: number; position: { lat: number; lng: number } | null }[] };
    expect(all.devices.map((d) => d.id)).toEqual(expect.arrayContaining([river.id, riverFar.id, detector.id, bus.id]));

    const { key: waterKey } = await createKey({ name: 'water snapshot', roles: ['agency'], scope: { domains: ['water'] } });
    const water = await open(waterKey);
    const ws = (await water.socket.emitWithAck('snapshot', null)) as { devices: { id: number; domain: string }[] };
    expect(ws.devices.map((d) => d.id).sort()).toEqual([river.id, riverFar.id].sort());
    expect(ws.devices.every((d) => d.domain === 'water')).toBe(true);

    const { key: areaKey } = await createKey({ name: 'area snapshot', roles: ['agency'], scope: { area: AREA } });
    const area = await open(areaKey);
    const as = (await area.socket.emitWithAck('snapshot', null)) as { devices: { id: number; position: { lat: number; lng: number } | null }[] };
    expect(as.devices.map((d) => d.id).sort()).toEqual([river.id, detector.id, bus.id].sort());
    expect(as.devices.find((d) => d.id === bus.id)!.position).toMatchObject(INSIDE_2);
  });

  it('refuses a key without the live permission, on socket.io and MQTT', async () => {
    expect((await t.api('PUT', '/api/v1/roles/reader', { description: 'read only', permissions: ['read'] })).status).toBe(200);
    const { key } = await createKey({ name: 'reports', roles: ['reader'] });
    const err = await refusal(key);
    expect(err.message).toMatch(/^forbidden: .*"live"/);
    expect(err.data).toMatchObject({ statusCode: 403, permission: 'live' });
    expect((await appRefusal(key))?.code).toBe(5);

    const unknown = await refusal('glk_' + 'A'.repeat(43));
    expect(unknown.message).toBe('unauthorized: unknown API key');
    expect(unknown.data).toMatchObject({ statusCode: 401, reason: 'unknown API key' });
    expect((await refusal('')).message).toMatch(/^unauthorized: no credential/);
    expect((await appRefusal('not-a-key'))?.code).toBe(5);
  });

  it('revoking a key closes its open socket and MQTT application session at once', async () => {
    const { id, key } = await createKey({ name: 'to revoke', roles: ['operator'], scope: { domains: ['water'] } });
    const live = await open(key);
    const app = await appSession(key);
    expect((await app.subscribeAsync('guanlink/events/#', { qos: 1 }))[0]!.qos).toBe(1);
    const appClosed = new Promise<number>((r) => app.once('close', () => r(Date.now())));

    const before = Date.now();
    expect((await t.api('POST', `/api/v1/keys/${id}/revoke`)).status).toBe(200);
    const [socketAt, appAt] = await Promise.all([live.disconnected, appClosed]);
    expect(socketAt - before).toBeLessThan(1000);
    expect(appAt - before).toBeLessThan(1000);
    expect(live.ended).toEqual([{ code: 'revoked', reason: 'API key "to revoke" was revoked' }]);

    // And it is refused from now on.
    expect((await refusal(key)).message).toMatch(/^unauthorized: API key "to revoke" was revoked at /);
    expect((await appRefusal(key))?.code).toBe(5);
  });

  it('rotating or changing a key closes its open streams; the new key and the changed scope work', async () => {
    const { id, key } = await createKey({ name: 'to rotate', roles: ['agency'] });
    const live = await open(key);
    const app = await appSession(key);
    const appClosed = new Promise<void>((r) => app.once('close', () => r()));
    const rotated = await t.api<{ key: string }>('POST', `/api/v1/keys/${id}/rotate`);
    expect(rotated.status).toBe(200);
    await Promise.all([live.disconnected, appClosed]);
    expect(live.ended[0]).toMatchObject({ code: 'rotated' });
    expect((await refusal(key)).data?.statusCode).toBe(401);

    const again = await open(rotated.body.key);
    expect(again.hello.principal.scope).toEqual({});
    const changed = await t.api('PATCH', `/api/v1/keys/${id}`, { scope: { domains: ['traffic'] } });
    expect(changed.status, JSON.stringify(changed.body)).toBe(200);
    await again.disconnected;
    expect(again.ended[0]).toMatchObject({ code: 'updated' });
    const narrowed = await open(rotated.body.key);
    expect(narrowed.hello.principal.scope).toEqual({ domains: ['traffic'] });
    expect((await subscribe(narrowed, { domain: 'water' })).ok).toBe(false);
  });

  it('changing a role closes the open streams of the keys holding it; they reconnect with the new permissions', async () => {
    expect((await t.api('PUT', '/api/v1/roles/night-watch', { permissions: ['read', 'live'] })).status).toBe(200);
    const { key } = await createKey({ name: 'night desk', roles: ['night-watch'] });
    const live = await open(key);
    const app = await appSession(key);
    const appClosed = new Promise<void>((r) => app.once('close', () => r()));
    expect((await t.api('PUT', '/api/v1/roles/night-watch', { permissions: ['read'] })).status).toBe(200);
    await Promise.all([live.disconnected, appClosed]);
    expect(live.ended).toEqual([{ code: 'updated', reason: 'role "night-watch" was changed: connect again' }]);
    expect((await refusal(key)).data).toMatchObject({ statusCode: 403, permission: 'live' });
  });

  it('closes streams when their key expires, and refuses the expired key', async () => {
    const expiresAt = Date.now() + 2500;
    const { key } = await createKey({ name: 'short-lived', roles: ['agency'], expiresAt: new Date(expiresAt).toISOString() });
    const live = await open(key);
    expect(live.hello.principal.expiresAt).toBe(new Date(expiresAt).toISOString());
    const app = await appSession(key);
    const appClosed = new Promise<number>((r) => app.once('close', () => r(Date.now())));
    const [socketAt, appAt] = await Promise.all([live.disconnected, appClosed]);
    for (const at of [socketAt, appAt]) {
      expect(at).toBeGreaterThanOrEqual(expiresAt - 5);
      expect(at - expiresAt).toBeLessThan(1000);
    }
    expect(live.ended[0]).toMatchObject({ code: 'expired' });
    expect((await refusal(key)).message).toMatch(/^unauthorized: API key "short-lived" expired at /);
    expect((await appRefusal(key))?.code).toBe(5);
  });

  it('closes a socket opened with an OpenID Connect token when the token expires', async () => {
    const token = await idp.token({ accountId: 'zhang.min', claims: { guanlink_scope: { domains: ['water'] } }, expiresInSeconds: 2 });
    const live = await open(token);
    expect(live.hello.principal).toMatchObject({ kind: 'oidc', name: 'Staff zhang.min', roles: ['agency'], scope: { domains: ['water'] } });
    const expiresAt = Date.parse(live.hello.principal.expiresAt!);
    const at = await live.disconnected;
    expect(at).toBeGreaterThanOrEqual(expiresAt - 5);
    expect(at - expiresAt).toBeLessThan(1000);
    expect(live.ended[0]).toMatchObject({ code: 'expired' });
  });

  it('an MQTT application session gets only the alarm and geofence events of its scope', async () => {
    for (const rule of [
      { name: 'la-water-high', deviceType: 'river-level-station', key: 'water_level', operator: '>', raiseThreshold: 5, clearThreshold: 4.5 },
      { name: 'la-traffic-slow', deviceType: 'traffic-detector', key: 'avg_speed', operator: '<', raiseThreshold: 5, clearThreshold: 10 },
    ]) {
      const res = await t.api('POST', '/api/v1/alarm-rules', { ...rule, minDurationSeconds: 0, clearDurationSeconds: 0, severity: 'major' });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
    }
    const fence = await t.api<{ id: number }>('POST', '/api/v1/geofences', {
      type: 'Feature',
      geometry: AREA,
      properties: { name: 'la-district', domain: 'traffic', deviceTypes: ['bus'] },
    });
    expect(fence.status, JSON.stringify(fence.body)).toBe(201);

    const { key: waterKey } = await createKey({ name: 'water agency', roles: ['agency'], scope: { domains: ['water'] } });
    const { key: areaKey } = await createKey({ name: 'district agency', roles: ['agency'], scope: { area: AREA } });
    const sessions = { admin: await appSession(t.adminKey), water: await appSession(waterKey), area: await appSession(areaKey) };
    const received: Record<keyof typeof sessions, { topic: string; body: { kind: string; alarm?: { device: { id: number } }; deviceId?: number } }[]> = { admin: [], water: [], area: [] };
    for (const [name, client] of Object.entries(sessions) as [keyof typeof sessions, MqttClient][]) {
      client.on('message', (topic, payload) => received[name].push({ topic, body: JSON.parse(payload.toString()) }));
      expect((await client.subscribeAsync('guanlink/events/#', { qos: 1 }))[0]!.qos).toBe(1);
    }
    const alarmsOf = (name: keyof typeof sessions, device: CreatedDevice) => received[name].filter((m) => m.body.alarm?.device.id === device.id);
    const fenceEvents = (name: keyof typeof sessions) => received[name].filter((m) => m.topic === `guanlink/events/geofences/${fence.body.id}`);

    await publish(detector, { avg_speed: 2 }); // traffic, inside the area
    await publish(riverFar, { water_level: 5.5 }); // water, outside the area
    await publish(river, { water_level: 5.6 }); // water, inside the area
    const client = await t.connect(bus.accessToken);
    await client.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.now() - 1000, values: { speed: 30, latitude: OUTSIDE.lat, longitude: OUTSIDE.lng } }), { qos: 1 });
    await client.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.now(), values: { speed: 31, latitude: INSIDE.lat, longitude: INSIDE.lng } }), { qos: 1 });
    await client.endAsync();

    await eventually(() => (alarmsOf('admin', detector).length && alarmsOf('admin', riverFar).length && alarmsOf('admin', river).length && fenceEvents('admin').length ? true : undefined));
    await eventually(() => (alarmsOf('water', river).length && alarmsOf('water', riverFar).length && alarmsOf('area', river).length && alarmsOf('area', detector).length && fenceEvents('area').length ? true : undefined));
    await sleep(FLUSH_MS);
    expect(received.water.map((m) => m.topic)).toEqual(['guanlink/events/alarms/water', 'guanlink/events/alarms/water']);
    expect(alarmsOf('water', detector)).toEqual([]);
    expect(fenceEvents('water')).toEqual([]);
    // The area sees what happened inside it, of any domain; not the river station outside.
    expect(alarmsOf('area', riverFar)).toEqual([]);
    expect(fenceEvents('area').map((m) => [m.body.kind, m.body.deviceId])).toEqual([['enter', bus.id]]);

    // Live sockets alike: a water key's socket gets the water alarms only.
    const { key } = await createKey({ name: 'water socket', roles: ['agency'], scope: { domains: ['water'] } });
    const water = await open(key);
    for (const domain of ['water', 'traffic']) await subscribe(water, { domain });
    await publish(detector, { avg_speed: 20 }); // clears the traffic alarm
    await publish(river, { water_level: 3 }); // clears the water alarm
    await eventually(() => (admin.alarms.some((c) => c.kind === 'cleared' && c.alarm.device.id === detector.id) && water.alarms.length > 0 ? true : undefined));
    await sleep(FLUSH_MS);
    expect(water.alarms.map((c) => [c.kind, c.alarm.device.id])).toEqual([['cleared', river.id]]);
  });
});
