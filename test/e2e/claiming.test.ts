import type { MqttClient } from 'mqtt';
import { io as ioClient, type Socket } from 'socket.io-client';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, testPool, type TestDatabase } from '../support/database.ts';
import { inbox, nextMessage, sleep, type Received } from '../support/inbox.ts';
import { mosquittoPub, type MosquittoTarget } from '../support/mosquitto-clients.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * Device claiming as in ThingsBoard, end to end: devices (MQTT.js and mosquitto_pub) and gateways
 * ask to be claimed on v1/devices/me/claim and v1/gateway/claim; agencies claim over real HTTP
 * with their API keys and then see the device and its readings, whatever their scope.
 */

// 莞城 (Guancheng): outside the agencies' towns (虎门镇, 长安); the shipped approximate town areas hold it.
const GUANCHENG = { lat: 23.043, lng: 113.752 };

type Key = { id: number; key: string };
interface Errors {
  topic: string;
  stored: number;
  errors: { device?: string; reason: string; key?: string; detail: string }[];
}
interface ClaimAnswer {
  result?: string;
  reason?: string;
  owner?: string;
  device?: { id: number; name: string };
  status?: number;
  detail?: string;
  previousOwner?: string | null;
}

describe('device claiming (ThingsBoard-compatible)', () => {
  let database: TestDatabase;
  let t: TestPlatform;
  let db: pg.Pool;
  let water: Key; // 水务局: water in Humen
  let waterToo: Key; // another key of the same agency, narrower
  let traffic: Key; // 交通局: traffic in Humen
  let watcher: Key; // a role without devices:claim
  let n = 0;
  const unique = (prefix: string) => `claim-${prefix}-${++n}`;

  const createKey = async (body: Record<string, unknown>) => {
    const res = await t.api<Key>('POST', '/api/v1/keys', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };
  /** A traffic detector in Guancheng: outside the water agency's domains and towns. */
  const foreignDevice = () => t.createDevice({ name: unique('detector'), type: 'traffic-detector', location: GUANCHENG });
  const claim = (key: Key, name: string, secretKey?: string) =>
    t.api<ClaimAnswer>('POST', `/api/v1/claims/${encodeURIComponent(name)}`, secretKey === undefined ? {} : { secretKey }, { auth: key.key });
  const target = (d: CreatedDevice): MosquittoTarget => ({ port: t.platform.mqttPort, username: d.accessToken });
  /** A device connected with MQTT.js and subscribed to its errors topic. */
  const open = async (d: CreatedDevice): Promise<{ client: MqttClient; messages: Received[] }> => {
    const client = await t.connect(d.accessToken);
    const messages = inbox(client);
    await client.subscribeAsync('v1/devices/me/errors', { qos: 1 });
    return { client, messages };
  };
  const askToBeClaimed = async (d: CreatedDevice, body: unknown) => {
    const res = await mosquittoPub(target(d), { topic: 'v1/devices/me/claim', payload: JSON.stringify(body) });
    expect(res.code, res.stderr).toBe(0); // PUBACK: stored
  };
  const rejectedReasons = async (deviceId: number, topic: string) =>
    (await db.query<{ reasons: string[] }>('SELECT reasons FROM rejected_messages WHERE device_id = $1 AND topic = $2 ORDER BY received_at', [deviceId, topic])).rows.map((r) => r.reasons[0]);

  beforeAll(async () => {
    database = await createTestDatabase();
    t = await startTestPlatform({}, { database });
    db = testPool(t.databaseUrl, 2);
    water = await createKey({ name: 'water dashboard', owner: '东莞市水务局', roles: ['agency'], scope: { domains: ['water'], towns: ['虎门镇'] } });
    waterToo = await createKey({ name: 'water field app', owner: '东莞市水务局', roles: ['agency'], scope: { domains: ['water'], towns: ['长安'] } });
    traffic = await createKey({ name: 'traffic dashboard', owner: '东莞市交通运输局', roles: ['agency'], scope: { domains: ['traffic'], towns: ['虎门镇'] } });
    expect((await t.api('PUT', '/api/v1/roles/claim-watcher', { permissions: ['read'] })).status).toBe(200);
    watcher = await createKey({ name: 'reader', owner: 'readers', roles: ['claim-watcher'] });
  });
  const sockets: Socket[] = [];
  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    await db?.end();
    await t?.stop();
  });

  /** A live-stream socket (socket.io) of `key`, once its hello arrived, with the readings it receives. */
  const live = (key: Key) =>
    new Promise<{ socket: Socket; readings: { deviceId: number; values: Record<string, number> }[] }>((resolve, reject) => {
      const socket = ioClient(t.httpUrl, { auth: { token: key.key }, transports: ['websocket'], reconnection: false, forceNew: true });
      sockets.push(socket);
      const readings: { deviceId: number; values: Record<string, number> }[] = [];
      socket.on('readings', (batch: typeof readings) => readings.push(...batch));
      socket.once('hello', () => resolve({ socket, readings }));
      socket.once('connect_error', reject);
    });

  it('a device asks, an agency claims it with the secret and then sees it and its readings, whatever its scope', async () => {
    const d = await foreignDevice();
    const { client } = await open(d);
    const ts = Date.now() - 60_000;
    await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts, values: { vehicle_count: 17 } }), { qos: 1 });
    // Before: outside the water agency's scope.
    expect((await t.api('GET', `/api/v1/devices/${d.id}`, undefined, { auth: water.key })).status).toBe(404);
    expect((await t.api('GET', `/api/v1/devices/${d.id}/telemetry?keys=vehicle_count`, undefined, { auth: water.key })).status).toBe(404);

    await client.publishAsync('v1/devices/me/claim', JSON.stringify({ secretKey: 'pump-7-s3cret', durationMs: 60_000 }), { qos: 1 });
    // The secret is not kept, only its hash.
    const stored = (await db.query<{ secret_hash: string; expires_at: Date }>('SELECT secret_hash, expires_at FROM device_claim_requests WHERE device_id = $1', [d.id])).rows[0]!;
    expect(stored.secret_hash).not.toContain('pump-7-s3cret');
    expect(stored.secret_hash).toMatch(/^scrypt\$/);
    expect(Math.abs(stored.expires_at.getTime() - (Date.now() + 60_000))).toBeLessThan(10_000);

    const res = await claim(water, d.name, 'pump-7-s3cret');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ result: 'SUCCESS', owner: '东莞市水务局', device: { id: d.id, name: d.name } });

    // After: the agency sees the device, in its list, and its readings — through any of its keys.
    for (const key of [water, waterToo]) {
      const one = await t.api<{ id: number }>('GET', `/api/v1/devices/${d.id}`, undefined, { auth: key.key });
      expect(one.status).toBe(200);
      const list = await t.api<{ items: { id: number }[] }>('GET', `/api/v1/devices?limit=1000`, undefined, { auth: key.key });
      expect(list.body.items.map((i) => i.id)).toContain(d.id);
      const series = await t.api<Record<string, { ts: number; value: number }[]>>('GET', `/api/v1/devices/${d.id}/telemetry?keys=vehicle_count&from=${new Date(ts - 1000).toISOString()}`, undefined, { auth: key.key });
      expect(series.status).toBe(200);
      expect(series.body.vehicle_count).toEqual([{ ts, value: 17 }]);
    }
    // Another agency that would see it by scope still sees it; one that claims it too is told it is taken.
    const again = await claim(traffic, d.name, 'pump-7-s3cret');
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ result: 'CLAIMED', status: 409 });
    expect((await t.api('GET', `/api/v1/devices/${d.id}`, undefined, { auth: traffic.key })).status).toBe(404); // traffic in Humen only

    // The owned device asks again: refused with a reason, acknowledged, kept, and the owner unchanged.
    const { client: c2, messages } = await open(d);
    await c2.publishAsync('v1/devices/me/claim', JSON.stringify({ secretKey: 'other' }), { qos: 1 });
    const error = (await nextMessage(messages, 'v1/devices/me/errors')).body as Errors;
    expect(error).toMatchObject({ topic: 'v1/devices/me/claim', stored: 0, errors: [{ reason: 'already_claimed' }] });
    await eventually(async () => ((await rejectedReasons(d.id, 'v1/devices/me/claim')).includes('already_claimed') ? true : undefined));
    expect((await claim(traffic, d.name, 'other')).status).toBe(409);
  });

  it('refuses a wrong secret (and cancels the request), an expired window, a device that never asked, an unknown device', async () => {
    const d = await foreignDevice();
    await askToBeClaimed(d, { secretKey: 'right', durationMs: 60_000 });
    const wrong = await claim(water, d.name, 'wrong');
    expect(wrong.status).toBe(400);
    expect(wrong.body).toMatchObject({ result: 'FAILURE', reason: 'wrong_secret', status: 400, title: 'Bad Request' });
    // One guess per request, as ThingsBoard: the right secret now finds no request.
    const late = await claim(water, d.name, 'right');
    expect(late.body).toMatchObject({ result: 'FAILURE', reason: 'no_request' });
    expect((await t.api('GET', `/api/v1/devices/${d.id}`, undefined, { auth: water.key })).status).toBe(404);
    // The device asks again: the right secret works.
    await askToBeClaimed(d, { secretKey: 'right', durationMs: 60_000 });
    expect((await claim(water, d.name, 'right')).status).toBe(200);

    const e = await foreignDevice();
    await askToBeClaimed(e, { secretKey: 'soon', durationMs: 300 });
    await sleep(600);
    const expired = await claim(water, e.name, 'soon');
    expect(expired.status).toBe(400);
    expect(expired.body).toMatchObject({ result: 'FAILURE', reason: 'expired' });
    expect(expired.body.detail).toMatch(/closed at/);

    const never = await foreignDevice();
    const none = await claim(water, never.name, '');
    expect(none.status).toBe(400);
    expect(none.body).toMatchObject({ result: 'FAILURE', reason: 'no_request' });

    const unknown = await claim(water, unique('nobody'), 'x');
    expect(unknown.status).toBe(404);
    // Without devices:claim: 403 naming it; a secret longer than allowed: 400 before anything is looked at.
    const forbidden = await claim(watcher, never.name, 'x');
    expect(forbidden.status).toBe(403);
    expect(forbidden.body).toMatchObject({ permission: 'devices:claim' });
    expect((await claim(water, never.name, 'x'.repeat(257))).status).toBe(400);
  });

  it('an empty claim payload means the empty secret and the default window (CLAIM_DEFAULT_DURATION_MS)', async () => {
    const d = await foreignDevice();
    const res = await mosquittoPub(target(d), { topic: 'v1/devices/me/claim', payload: null });
    expect(res.code, res.stderr).toBe(0);
    const { expires_at } = (await db.query<{ expires_at: Date }>('SELECT expires_at FROM device_claim_requests WHERE device_id = $1', [d.id])).rows[0]!;
    expect(Math.abs(expires_at.getTime() - (Date.now() + 86_400_000))).toBeLessThan(10_000);
    expect((await claim(water, d.name)).body).toMatchObject({ result: 'SUCCESS' });
  });

  it('explains malformed claim payloads on v1/devices/me/errors, keeps and counts them, and stores nothing', async () => {
    const d = await foreignDevice();
    const { client, messages } = await open(d);
    const cases: [string, string, string?][] = [
      ['{"secretKey": "unterminated', 'invalid_json'],
      ['[1, 2]', 'invalid_shape'],
      ['{"secretKey": 42}', 'invalid_value', 'secretKey'],
      ['{"durationMs": "soon"}', 'invalid_value', 'durationMs'],
      ['{"durationMs": 1.5}', 'invalid_value', 'durationMs'],
      [`{"durationMs": ${400 * 86_400_000}}`, 'out_of_range', 'durationMs'],
      [JSON.stringify({ secretKey: 'k'.repeat(300) }), 'value_too_large', 'secretKey'],
    ];
    for (const [payload, reason, key] of cases) {
      const before = messages.length;
      await client.publishAsync('v1/devices/me/claim', payload, { qos: 1 }); // acknowledged
      const error = (await nextMessage(messages, 'v1/devices/me/errors', before)).body as Errors;
      expect(error, payload).toMatchObject({ topic: 'v1/devices/me/claim', stored: 0, errors: [{ reason, ...(key ? { key } : {}) }] });
    }
    expect(client.connected).toBe(true);
    await eventually(async () => ((await rejectedReasons(d.id, 'v1/devices/me/claim')).length === cases.length ? true : undefined));
    expect(await rejectedReasons(d.id, 'v1/devices/me/claim')).toEqual(cases.map(([, reason]) => reason));
    expect((await db.query('SELECT 1 FROM device_claim_requests WHERE device_id = $1', [d.id])).rowCount).toBe(0);
    expect((await claim(water, d.name, '')).body).toMatchObject({ result: 'FAILURE', reason: 'no_request' });
  });

  it('a gateway claims for its own sub-devices only', async () => {
    const gw = (await t.api<CreatedDevice>('POST', '/api/v1/devices', { name: unique('gw'), isGateway: true })).body;
    const standalone = await foreignDevice();
    const own = unique('pump');
    const fresh = unique('fresh-pump');
    expect((await mosquittoPub(target(gw), { topic: 'v1/gateway/connect', payload: JSON.stringify({ device: own }) })).code).toBe(0);
    const { client, messages } = await open(gw);
    await client.publishAsync(
      'v1/gateway/claim',
      JSON.stringify({ [own]: { secretKey: 'gw-secret', durationMs: 60_000 }, [standalone.name]: { secretKey: 'steal' }, [fresh]: {}, bad: { durationMs: 'x' } }),
      { qos: 1 },
    );
    const error = (await nextMessage(messages, 'v1/devices/me/errors')).body as Errors;
    expect(error.topic).toBe('v1/gateway/claim');
    expect(error.stored).toBe(2);
    expect(error.errors).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ device: standalone.name, reason: 'device_not_owned' }),
        expect.objectContaining({ device: 'bad', reason: 'invalid_value', key: 'durationMs' }),
      ]),
    );
    expect(error.errors).toHaveLength(2);
    expect((await claim(water, standalone.name, 'steal')).body).toMatchObject({ result: 'FAILURE', reason: 'no_request' });
    expect((await claim(water, own, 'gw-secret')).body).toMatchObject({ result: 'SUCCESS' });
    expect((await claim(traffic, fresh)).body).toMatchObject({ result: 'SUCCESS', owner: '东莞市交通运输局' }); // created as a sub-device, as ThingsBoard does
    await eventually(async () => ((await rejectedReasons(gw.id, 'v1/gateway/claim')).length === 2 ? true : undefined));
    // mosquitto_pub, and a malformed gateway message: acknowledged and explained.
    expect((await mosquittoPub(target(gw), { topic: 'v1/gateway/claim', payload: '"not an object"' })).code).toBe(0);
    await eventually(async () => ((await rejectedReasons(gw.id, 'v1/gateway/claim')).includes('invalid_shape') ? true : undefined));
  });

  it('an admin releases a claimed device; the agency no longer sees it and it can be claimed again', async () => {
    const d = await foreignDevice();
    await askToBeClaimed(d, { secretKey: 'a' });
    expect((await claim(water, d.name, 'a')).status).toBe(200);
    expect((await t.api('DELETE', `/api/v1/claims/${encodeURIComponent(d.name)}`, undefined, { auth: water.key })).status).toBe(403); // devices:write
    const released = await t.api<ClaimAnswer>('DELETE', `/api/v1/claims/${encodeURIComponent(d.name)}`);
    expect(released.status).toBe(200);
    expect(released.body).toMatchObject({ device: { id: d.id }, previousOwner: '东莞市水务局' });
    expect((await t.api('GET', `/api/v1/devices/${d.id}`, undefined, { auth: water.key })).status).toBe(404);
    expect((await t.api('DELETE', `/api/v1/claims/${encodeURIComponent(unique('nobody'))}`)).status).toBe(404);
    await askToBeClaimed(d, { secretKey: 'b' });
    expect((await claim(traffic, d.name, 'b')).body).toMatchObject({ result: 'SUCCESS', owner: '东莞市交通运输局' });
  });

  it('keeps a pending claim request and owners across a restart', async () => {
    const pending = await foreignDevice();
    const owned = await foreignDevice();
    await askToBeClaimed(pending, { secretKey: 'after-restart', durationMs: 120_000 });
    await askToBeClaimed(owned, { secretKey: 'before' });
    expect((await claim(water, owned.name, 'before')).status).toBe(200);

    await db.end();
    await t.platform.stop();
    t = await startTestPlatform({}, { database }); // the same database; afterAll stops this one
    db = testPool(t.databaseUrl, 2);

    expect((await t.api('GET', `/api/v1/devices/${owned.id}`, undefined, { auth: water.key })).status).toBe(200);
    const res = await claim(water, pending.name, 'after-restart');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect((await t.api('GET', `/api/v1/devices/${pending.id}`, undefined, { auth: waterToo.key })).status).toBe(200);
  });

  it('streams a claimed device live to its owner, even beside a socket of the same scope and another owner', async () => {
    const d = await foreignDevice();
    await askToBeClaimed(d, { secretKey: 'live' });
    const sameScope = await createKey({ name: 'same scope, other owner', owner: '某区水务所', roles: ['agency'], scope: { domains: ['water'], towns: ['虎门镇'] } });
    const other = await live(sameScope); // first: its principal would otherwise decide for the shared scope
    const owner = await live(water);
    expect((await claim(water, d.name, 'live')).status).toBe(200);
    expect(await owner.socket.emitWithAck('subscribe', { device: d.id })).toMatchObject({ ok: true });
    expect(await other.socket.emitWithAck('subscribe', { device: d.id })).toMatchObject({ ok: false, error: `no device ${d.id}` });
    const client = await t.connect(d.accessToken);
    await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ vehicle_count: 41 }), { qos: 1 });
    await eventually(() => (owner.readings.some((r) => r.deviceId === d.id && r.values.vehicle_count === 41) ? true : undefined));
    expect(other.readings.some((r) => r.deviceId === d.id)).toBe(false);
  });

  it('lists the alarms of a claimed device to its owner, not before', async () => {
    const rule = await t.api('POST', '/api/v1/alarm-rules', { name: 'claim-jam', deviceType: 'traffic-detector', key: 'vehicle_count', operator: '>', raiseThreshold: 500, clearThreshold: 400, severity: 'minor' });
    expect(rule.status, JSON.stringify(rule.body)).toBe(201);
    const d = await foreignDevice();
    const client = await t.connect(d.accessToken);
    await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ vehicle_count: 550 }), { qos: 1 });
    const [alarm] = await eventually(async () => {
      const items = (await t.api<{ items: { id: number; device: { id: number } }[] }>('GET', `/api/v1/alarms?device=${d.id}`)).body.items;
      return items.length > 0 ? items : undefined;
    });
    const listed = async () => (await t.api<{ items: { id: number }[] }>('GET', '/api/v1/alarms?limit=1000', undefined, { auth: water.key })).body.items.map((a) => a.id);
    expect(await listed()).not.toContain(alarm!.id);
    expect((await t.api('GET', `/api/v1/alarms/${alarm!.id}`, undefined, { auth: water.key })).status).toBe(404);
    await askToBeClaimed(d, { secretKey: 'jam' });
    expect((await claim(water, d.name, 'jam')).status).toBe(200);
    expect(await listed()).toContain(alarm!.id);
    expect((await t.api('GET', `/api/v1/alarms/${alarm!.id}`, undefined, { auth: water.key })).status).toBe(200);
  });
});
