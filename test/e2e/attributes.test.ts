import type { MqttClient } from 'mqtt';
import pg from 'pg';
import { io as ioClient } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ATTRIBUTE_LIMITS } from '../../core/attributes.ts';
import { testPool } from '../support/database.ts';
import { mosquittoPub, mosquittoRr, mosquittoSub, type MosquittoTarget } from '../support/mosquitto-clients.ts';
import { inbox, nextMessage, sleep, type Received } from '../support/inbox.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

interface DeviceError {
  topic: string;
  stored: number;
  errors: { reason: string; key?: string; detail: string }[];
}

const topicAndBody = ({ topic, body }: Received) => ({ topic, body });

type ByScope = Partial<Record<'client' | 'shared' | 'server', Record<string, { value: unknown; ts: number }>>>;



describe('attributes: client, shared and server scopes, requests, pushes and the shadow', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let n = 0;
  const device = (prefix: string) => t.createDevice({ name: `${prefix}-${++n}` });
  const clientValues = async (d: CreatedDevice) => {
    const res = await t.api<ByScope>('GET', `/api/v1/devices/${d.id}/attributes?scope=client`);
    return Object.fromEntries(Object.entries(res.body.client ?? {}).map(([k, e]) => [k, e.value]));
  };

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  describe('through mqtt.js', () => {
    it('stores client attributes as sent (strings stay strings) and serves them over REST', async () => {
      const d = await device('reporter');
      const c = await t.connect(d.accessToken);
      const before = Date.now();
      await c.publishAsync(
        'v1/devices/me/attributes',
        JSON.stringify({ fw: '1.10', serial: '0012', online: true, rssi: -71, ratio: 0.25, cfg: { bands: [1, 3], mode: 'eco' }, ignored: null }),
        { qos: 1 },
      );
      // acknowledged after commit: readable at once
      const res = await t.api<ByScope>('GET', `/api/v1/devices/${d.id}/attributes`);
      expect(res.status).toBe(200);
      expect(Object.keys(res.body).sort()).toEqual(['client', 'server', 'shared']);
      expect(Object.fromEntries(Object.entries(res.body.client!).map(([k, e]) => [k, e.value]))).toEqual({
        fw: '1.10',
        serial: '0012',
        online: true,
        rssi: -71,
        ratio: 0.25,
        cfg: { bands: [1, 3], mode: 'eco' },
      });
      expect(res.body.client!.fw!.ts).toBeGreaterThanOrEqual(before - 1000);
      // v2/a merges: keys not sent stay
      await c.publishAsync('v2/a', JSON.stringify({ fw: '1.11' }), { qos: 1 });
      const after = await clientValues(d);
      expect(after.fw).toBe('1.11');
      expect(after.serial).toBe('0012');
      const only = await t.api<ByScope>('GET', `/api/v1/devices/${d.id}/attributes?scope=client&keys=fw,missing`);
      expect(Object.keys(only.body)).toEqual(['client']);
      expect(Object.keys(only.body.client!)).toEqual(['fw']);
    });

    it('answers attribute requests by id: clientKeys, sharedKeys, {} and the v2 short topics', async () => {
      const d = await device('requester');
      const c = await t.connect(d.accessToken);
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ fw: '2.0', model: 'DG-7' }), { qos: 1 });
      expect((await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 22, schedule: { on: '07:00' } })).status).toBe(200);
      expect((await t.api('POST', `/api/v1/devices/${d.id}/attributes/server`, { secret: 'not for the device' })).status).toBe(200);

      const got = inbox(c);
      await c.subscribeAsync('v1/devices/me/attributes/response/+', { qos: 1 });
      await c.publishAsync('v1/devices/me/attributes/request/1', JSON.stringify({ clientKeys: 'fw', sharedKeys: 'target,nope' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/1')).body).toEqual({ client: { fw: '2.0' }, shared: { target: 22 } });

      await c.publishAsync('v1/devices/me/attributes/request/2', '{}', { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/2')).body).toEqual({
        client: { fw: '2.0', model: 'DG-7' },
        shared: { target: 22, schedule: { on: '07:00' } },
      }); // never the server scope

      await c.publishAsync('v1/devices/me/attributes/request/3', JSON.stringify({ sharedKeys: 'schedule' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/3')).body).toEqual({ shared: { schedule: { on: '07:00' } } });

      await c.publishAsync('v1/devices/me/attributes/request/4', JSON.stringify({ clientKeys: 'absent, model ' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/4')).body).toEqual({ client: { model: 'DG-7' } });

      await c.publishAsync('v1/devices/me/attributes/request/5', JSON.stringify({ clientKeys: 'absent' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/5')).body).toEqual({});

      await c.publishAsync('v1/devices/me/attributes/request/6', JSON.stringify({ secret: 'x', serverKeys: 'secret' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/6')).body).not.toHaveProperty('server');

      // v2: a device subscribed to the short form gets its answers there
      const v2 = await t.connect(d.accessToken); // takes the session over
      const got2 = inbox(v2);
      await v2.subscribeAsync('v2/a/res/+', { qos: 1 });
      await v2.publishAsync('v2/a/req/77', JSON.stringify({ sharedKeys: 'target' }), { qos: 1 });
      const answer = await nextMessage(got2, /\/77$/);
      expect(topicAndBody(answer)).toEqual({ topic: 'v2/a/res/77', body: { shared: { target: 22 } } });
      // as in ThingsBoard, the answer follows the form of the request, not of the subscription
      await v2.publishAsync('v1/devices/me/attributes/request/78', JSON.stringify({ clientKeys: 'model' }), { qos: 1 });
      expect(topicAndBody(await nextMessage(got2, /\/78$/))).toEqual({ topic: 'v1/devices/me/attributes/response/78', body: { client: { model: 'DG-7' } } });
    });

    it('pushes shared-attribute changes to a subscribed device: only the keys changed, deletions as {"deleted": [...]}', async () => {
      const d = await device('pushed');
      const c = await t.connect(d.accessToken);
      const got = inbox(c);
      await c.subscribeAsync('v1/devices/me/attributes', { qos: 1 });
      await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 21, mode: 'eco' });
      expect((await nextMessage(got, 'v1/devices/me/attributes')).body).toEqual({ target: 21, mode: 'eco' });

      const set = await t.api<{ updated: string[]; delivered: boolean }>('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 23 });
      expect(set.body).toMatchObject({ updated: ['target'], delivered: true });
      expect((await nextMessage(got, 'v1/devices/me/attributes', 1)).body).toEqual({ target: 23 });

      const del = await t.api<{ deleted: string[]; delivered: boolean }>('DELETE', `/api/v1/devices/${d.id}/attributes/shared?keys=mode,never-set`);
      expect(del.body).toEqual({ scope: 'shared', deleted: ['mode'], delivered: true });
      expect((await nextMessage(got, 'v1/devices/me/attributes', 2)).body).toEqual({ deleted: ['mode'] });

      // server attributes are never pushed; client attributes are the device's own
      const server = await t.api<{ delivered: boolean }>('POST', `/api/v1/devices/${d.id}/attributes/server`, { note: 'x' });
      expect(server.body.delivered).toBe(false);
      await sleep(300);
      expect(got.filter((m) => m.topic === 'v1/devices/me/attributes')).toHaveLength(3);
      expect((await t.api<ByScope>('GET', `/api/v1/devices/${d.id}/attributes?scope=shared`)).body.shared!.target!.value).toBe(23);
    });

    it('pushes on v2/a to a device subscribed there, and nothing to a device that did not subscribe', async () => {
      const d = await device('pushed-v2');
      const c = await t.connect(d.accessToken);
      const got = inbox(c);
      await c.subscribeAsync('v2/a', { qos: 0 });
      await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { led: true });
      expect(topicAndBody(await nextMessage(got, /./))).toEqual({ topic: 'v2/a', body: { led: true } });

      const quiet = await device('not-subscribed');
      const q = await t.connect(quiet.accessToken);
      const qGot = inbox(q);
      const res = await t.api<{ delivered: boolean }>('POST', `/api/v1/devices/${quiet.id}/attributes/shared`, { led: true });
      expect(res.body.delivered).toBe(false);
      await sleep(300);
      expect(qGot).toEqual([]);
    });

    it('pushes nothing to an offline device; it requests its shared attributes when it reconnects', async () => {
      const d = await device('offline');
      const res = await t.api<{ delivered: boolean }>('POST', `/api/v1/devices/${d.id}/attributes/shared`, { interval: 60 });
      expect(res.status).toBe(200);
      expect(res.body.delivered).toBe(false);
      const c = await t.connect(d.accessToken);
      const got = inbox(c);
      await c.subscribeAsync(['v1/devices/me/attributes', 'v1/devices/me/attributes/response/+'], { qos: 1 });
      await sleep(200);
      expect(got).toEqual([]); // no push on (re)connect or subscribe, as in ThingsBoard
      await c.publishAsync('v1/devices/me/attributes/request/1', JSON.stringify({ sharedKeys: 'interval' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/1')).body).toEqual({ shared: { interval: 60 } });
    });

    it('shows the shadow: desired (shared), reported (client) and the delta', async () => {
      const d = await device('shadowed');
      const empty = await t.api('GET', `/api/v1/devices/${d.id}/shadow`);
      expect(empty.body).toEqual({ desired: {}, reported: {}, delta: {}, inSync: true, updatedAt: null });

      const c = await t.connect(d.accessToken);
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ target: 21, mode: 'eco', fw: '3.1', zones: { a: 1, b: 2 } }), { qos: 1 });
      await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 23, mode: 'eco', zones: { b: 2, a: 1 }, interval: 30 });
      const shadow = await t.api<{ desired: object; reported: object; delta: object; inSync: boolean; updatedAt: string }>('GET', `/api/v1/devices/${d.id}/shadow`);
      expect(shadow.status).toBe(200);
      expect(shadow.body.desired).toEqual({ target: 23, mode: 'eco', zones: { a: 1, b: 2 }, interval: 30 });
      expect(shadow.body.reported).toEqual({ target: 21, mode: 'eco', fw: '3.1', zones: { a: 1, b: 2 } });
      expect(shadow.body.delta).toEqual({ target: 23, interval: 30 }); // differs, missing; equal objects in any key order are in sync
      expect(shadow.body.inSync).toBe(false);
      expect(Date.parse(shadow.body.updatedAt)).toBeGreaterThan(Date.now() - 60_000);

      // "22" is not 22: values compare with their JSON types
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ target: '23', interval: 30 }), { qos: 1 });
      expect((await t.api<{ delta: object }>('GET', `/api/v1/devices/${d.id}/shadow`)).body.delta).toEqual({ target: 23 });
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ target: 23 }), { qos: 1 });
      const synced = await t.api<{ delta: object; inSync: boolean }>('GET', `/api/v1/devices/${d.id}/shadow`);
      expect(synced.body).toMatchObject({ delta: {}, inSync: true });
    });

    it('refuses malformed attribute messages with a reason on v1/devices/me/errors, acknowledges them and keeps the good keys', async () => {
      const d = await device('malformed');
      const c = await t.connect(d.accessToken);
      const got = inbox(c);
      await c.subscribeAsync('v1/devices/me/errors', { qos: 0 });
      let seen = 0;
      const refusal = async (payload: string | Buffer, topic = 'v1/devices/me/attributes') => {
        await c.publishAsync(topic, payload, { qos: 1 }); // acknowledged
        const m = await nextMessage(got, 'v1/devices/me/errors', seen);
        seen = got.indexOf(m) + 1;
        return m.body as DeviceError;
      };
      expect(await refusal('[{"a":1}]')).toMatchObject({ topic: 'v1/devices/me/attributes', stored: 0, errors: [{ reason: 'invalid_shape' }] });
      expect((await refusal('42')).errors[0]!.reason).toBe('invalid_shape');
      expect((await refusal('"text"')).errors[0]!.reason).toBe('invalid_shape');
      expect((await refusal('{"a":')).errors[0]!.reason).toBe('invalid_json');
      expect((await refusal(Buffer.from([0x7b, 0xff, 0x7d]))).errors[0]!.reason).toBe('invalid_json');
      expect((await refusal('{}')).errors[0]!.reason).toBe('empty');
      expect((await refusal(JSON.stringify({ a: null }))).errors[0]!.reason).toBe('empty');
      expect((await refusal(JSON.stringify({ pad: 'x'.repeat(70_000) }))).errors[0]!.reason).toBe('payload_too_large');
      const tooMany = Object.fromEntries(Array.from({ length: ATTRIBUTE_LIMITS.maxKeysPerMessage + 1 }, (_, i) => [`k${i}`, i]));
      expect((await refusal(JSON.stringify(tooMany))).errors[0]!.reason).toBe('too_many_values');

      // bad keys and values are refused on their own; the rest is stored
      const mixed = await refusal(
        JSON.stringify({ good: 1, big: 'x'.repeat(ATTRIBUTE_LIMITS.maxValueBytes + 1), ['k'.repeat(101)]: 1, deep: JSON.parse('['.repeat(40) + ']'.repeat(40)), nul: 'a\u0000b' }),
      );
      expect(mixed.stored).toBe(1);
      expect(mixed.errors.map((e) => [e.reason, e.key?.slice(0, 3)])).toEqual([
        ['value_too_large', 'big'],
        ['invalid_key', 'kkk'],
        ['invalid_value', 'dee'],
        ['invalid_value', 'nul'],
      ]);
      expect(await clientValues(d)).toEqual({ good: 1 });

      // a bad request gets its reason and no response
      await c.subscribeAsync('v1/devices/me/attributes/response/+', { qos: 1 });
      expect((await refusal(JSON.stringify({ clientKeys: 5 }), 'v1/devices/me/attributes/request/9')).errors[0]).toMatchObject({ reason: 'invalid_shape' });
      expect((await refusal('[1]', 'v1/devices/me/attributes/request/10')).errors[0]!.reason).toBe('invalid_shape');
      expect((await refusal('not json', 'v2/a/req/11')).errors[0]!.reason).toBe('invalid_json');
      await sleep(200);
      expect(got.some((m) => m.topic.includes('/response/'))).toBe(false);
      expect(c.connected).toBe(true);

      // kept for operators, with the payload
      const rows = await eventually(async () => {
        const r = await db.query<{ reasons: string[] }>(`SELECT reasons FROM rejected_messages WHERE device_id = $1`, [d.id]);
        return r.rows.length >= 13 ? r.rows : undefined;
      });
      expect(new Set(rows.flatMap((r) => r.reasons))).toEqual(
        new Set(['invalid_shape', 'invalid_json', 'empty', 'payload_too_large', 'too_many_values', 'value_too_large', 'invalid_key', 'invalid_value']),
      );
    });

    it('refuses a client scope over its key limit, storing nothing of that message', async () => {
      const d = await device('hoarder');
      const c = await t.connect(d.accessToken);
      const got = inbox(c);
      await c.subscribeAsync('v1/devices/me/errors', { qos: 0 });
      const full = Object.fromEntries(Array.from({ length: ATTRIBUTE_LIMITS.maxKeysPerScope }, (_, i) => [`k${i}`, i]));
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify(full), { qos: 1 });
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ k0: 'updated' }), { qos: 1 }); // an existing key is fine
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ extra: 1, k1: 'lost' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/errors')).body).toMatchObject({ stored: 0, errors: [{ reason: 'too_many_keys' }] });
      const values = await clientValues(d);
      expect(Object.keys(values)).toHaveLength(ATTRIBUTE_LIMITS.maxKeysPerScope);
      expect([values.k0, values.k1, values.extra]).toEqual(['updated', 1, undefined]);
    });

    it('gives a device only its own attributes, and pushes only its own changes', async () => {
      const a = await device('owner');
      const b = await device('neighbour');
      const ca = await t.connect(a.accessToken);
      await ca.publishAsync('v1/devices/me/attributes', JSON.stringify({ secretish: 'a-only' }), { qos: 1 });
      await t.api('POST', `/api/v1/devices/${a.id}/attributes/shared`, { target: 1 });
      const cb = await t.connect(b.accessToken);
      const got = inbox(cb);
      await cb.subscribeAsync(['v1/devices/me/attributes', 'v1/devices/me/attributes/response/+'], { qos: 1 });
      await cb.publishAsync('v1/devices/me/attributes/request/1', '{}', { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/1')).body).toEqual({});
      await cb.publishAsync('v1/devices/me/attributes/request/2', JSON.stringify({ clientKeys: 'secretish', sharedKeys: 'target' }), { qos: 1 });
      expect((await nextMessage(got, 'v1/devices/me/attributes/response/2')).body).toEqual({});
      await t.api('POST', `/api/v1/devices/${a.id}/attributes/shared`, { target: 2 });
      await sleep(300);
      expect(got.filter((m) => m.topic === 'v1/devices/me/attributes')).toEqual([]);
      // B's own report does not touch A's
      await cb.publishAsync('v1/devices/me/attributes', JSON.stringify({ secretish: 'b' }), { qos: 1 });
      expect(await clientValues(a)).toEqual({ secretish: 'a-only' });
    });

    it('streams attribute changes to live subscribers of the device', async () => {
      const d = await device('live-attrs');
      const socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'] });
      try {
        await new Promise<void>((resolve, reject) => {
          socket.on('connect', resolve);
          socket.on('connect_error', reject);
        });
        const events: { deviceId: number; scope: string; values: object; deleted: string[] }[] = [];
        socket.on('attributes', (e: (typeof events)[number]) => events.push(e));
        expect((await socket.emitWithAck('subscribe', { device: d.id })).ok).toBe(true);
        const c = await t.connect(d.accessToken);
        await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ fw: '1' }), { qos: 1 });
        await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 5 });
        await t.api('DELETE', `/api/v1/devices/${d.id}/attributes/shared?keys=target`);
        const all = await eventually(() => (events.length >= 3 ? events : undefined));
        expect(all.map((e) => [e.deviceId, e.scope, e.values, e.deleted])).toEqual([
          [d.id, 'client', { fw: '1' }, []],
          [d.id, 'shared', { target: 5 }, []],
          [d.id, 'shared', {}, ['target']],
        ]);
      } finally {
        socket.close();
      }
    });
  });

  describe('REST refusals', () => {
    it('answers precise 400s and 404s', async () => {
      const d = await device('rest');
      const base = `/api/v1/devices/${d.id}`;
      const expect400 = async (method: string, path: string, body: unknown, pattern: RegExp) => {
        const res = await t.api<{ message: string }>(method, path, body);
        expect(res.status, `${method} ${path}`).toBe(400);
        expect(res.body.message).toMatch(pattern);
      };
      await expect400('POST', `${base}/attributes/client`, { a: 1 }, /client attributes belong to the device/);
      await expect400('POST', `${base}/attributes/global`, { a: 1 }, /scope: "global" is not one of client, shared, server/);
      await expect400('POST', `${base}/attributes/shared`, [{ a: 1 }], /body must be object/);
      await expect400('POST', `${base}/attributes/shared`, 'text', /body must be object/);
      await expect400('POST', `${base}/attributes/shared`, {}, /no attributes given/);
      await expect400('POST', `${base}/attributes/shared`, { a: null }, /a: null is not a value/);
      await expect400('POST', `${base}/attributes/shared`, { ok: 1, big: 'x'.repeat(ATTRIBUTE_LIMITS.maxValueBytes) }, /value_too_large: big/);
      await expect400('POST', `${base}/attributes/shared`, { ['k'.repeat(101)]: 1 }, /invalid_key/);
      await expect400('DELETE', `${base}/attributes/shared`, undefined, /keys: name the keys to delete/);
      await expect400('DELETE', `${base}/attributes/nope?keys=a`, undefined, /scope: "nope"/);
      await expect400('GET', `${base}/attributes?scope=everything`, undefined, /scope: "everything" is not one of/);
      // nothing of a refused body was stored
      expect((await t.api<ByScope>('GET', `${base}/attributes`)).body).toEqual({ client: {}, shared: {}, server: {} });

      for (const [method, path, body] of [
        ['GET', '/api/v1/devices/999999/attributes', undefined],
        ['POST', '/api/v1/devices/999999/attributes/shared', { a: 1 }],
        ['DELETE', '/api/v1/devices/999999/attributes/shared?keys=a', undefined],
        ['GET', '/api/v1/devices/999999/shadow', undefined],
      ] as const) {
        const res = await t.api<{ message: string }>(method, path, body);
        expect(res.status, `${method} ${path}`).toBe(404);
        expect(res.body.message).toBe('no device 999999');
      }
      expect((await t.api('GET', `${base}/attributes`, undefined, { auth: false })).status).toBe(401);
    });

    it('refuses keys beyond the per-scope limit and deletes client attributes on request', async () => {
      const d = await device('rest-limit');
      const base = `/api/v1/devices/${d.id}/attributes`;
      const full = Object.fromEntries(Array.from({ length: ATTRIBUTE_LIMITS.maxKeysPerScope }, (_, i) => [`k${i}`, i]));
      expect((await t.api('POST', `${base}/server`, full)).status).toBe(200);
      const over = await t.api<{ message: string }>('POST', `${base}/server`, { one: 'more' });
      expect(over.status).toBe(400);
      expect(over.body.message).toMatch(/too_many_keys/);
      expect((await t.api<{ message: string }>('POST', `${base}/server`, { ...full, extra: 1 })).body.message).toMatch(/at most 1000 per request/);

      const c = await t.connect(d.accessToken);
      await c.publishAsync('v1/devices/me/attributes', JSON.stringify({ stale: 1, kept: 2 }), { qos: 1 });
      expect((await t.api('DELETE', `${base}/client?keys=stale`)).body).toEqual({ scope: 'client', deleted: ['stale'], delivered: false });
      expect(await clientValues(d)).toEqual({ kept: 2 });
    });
  });

  describe('through the Mosquitto clients (an independent MQTT implementation)', () => {
    const target = (d: CreatedDevice): MosquittoTarget => ({ port: t.platform.mqttPort, username: d.accessToken });

    it('mosquitto_pub reports client attributes (v1 and v2/a), acknowledged after commit', async () => {
      const d = await device('mosq-pub');
      const pub = await mosquittoPub(target(d), { topic: 'v1/devices/me/attributes', payload: JSON.stringify({ fw: '4.0', serial: '007' }) });
      expect(pub.code, pub.stderr).toBe(0);
      const v2 = await mosquittoPub(target(d), { topic: 'v2/a', payload: JSON.stringify({ battery: 88 }) });
      expect(v2.code, v2.stderr).toBe(0);
      expect(await clientValues(d)).toEqual({ fw: '4.0', serial: '007', battery: 88 });
    });

    it('mosquitto_rr requests attributes by id on v1 and v2 topics; {} and an empty message return everything', async () => {
      const d = await device('mosq-rr');
      await mosquittoPub(target(d), { topic: 'v1/devices/me/attributes', payload: JSON.stringify({ fw: '5.0' }) });
      await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 19 });
      const ask = (topic: string, responseTopic: string, payload: string | null) => mosquittoRr(target(d), { topic, responseTopic, payload });
      // set while the device was offline: nothing is pushed when it comes back and subscribes…
      const late = mosquittoSub(target(d), { topics: ['v1/devices/me/attributes'], waitSeconds: 1 });
      await late.subscribed;
      expect((await late.done).messages).toEqual([]);
      // …it asks

      const one = await ask('v1/devices/me/attributes/request/3', 'v1/devices/me/attributes/response/3', JSON.stringify({ clientKeys: 'fw', sharedKeys: 'target' }));
      expect(one.messages, one.stderr + one.stdout).toHaveLength(1);
      expect(one.messages[0]!.topic).toBe('v1/devices/me/attributes/response/3');
      expect(JSON.parse(one.messages[0]!.payload)).toEqual({ client: { fw: '5.0' }, shared: { target: 19 } });

      const all = await ask('v2/a/req/4', 'v2/a/res/4', '{}');
      expect(all.messages[0]!.topic).toBe('v2/a/res/4');
      expect(JSON.parse(all.messages[0]!.payload)).toEqual({ client: { fw: '5.0' }, shared: { target: 19 } });

      const empty = await ask('v1/devices/me/attributes/request/5', 'v1/devices/me/attributes/response/5', null);
      expect(JSON.parse(empty.messages[0]!.payload)).toEqual({ client: { fw: '5.0' }, shared: { target: 19 } });
    });

    it('mosquitto_sub receives shared-attribute updates and deletions pushed through REST', async () => {
      const d = await device('mosq-sub');
      const sub = mosquittoSub(target(d), { topics: ['v1/devices/me/attributes'], count: 1, waitSeconds: 5 });
      await sub.subscribed;
      const set = await t.api<{ delivered: boolean }>('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 24, mode: 'away' });
      expect(set.body.delivered).toBe(true);
      const result = await sub.done;
      expect(result.code, result.stderr).toBe(0);
      expect(result.messages.map((m) => [m.topic, JSON.parse(m.payload)])).toEqual([['v1/devices/me/attributes', { target: 24, mode: 'away' }]]);

      const sub2 = mosquittoSub(target(d), { topics: ['v2/a'], count: 1, waitSeconds: 5 });
      await sub2.subscribed;
      await t.api('DELETE', `/api/v1/devices/${d.id}/attributes/shared?keys=mode`);
      const deleted = await sub2.done;
      expect(deleted.messages.map((m) => [m.topic, JSON.parse(m.payload)])).toEqual([['v2/a', { deleted: ['mode'] }]]);
    });

    it('mosquitto_sub receives nothing for server attributes or for another device', async () => {
      const d = await device('mosq-quiet');
      const other = await device('mosq-other');
      const sub = mosquittoSub(target(d), { topics: ['v1/devices/me/attributes'], count: 1, waitSeconds: 2 });
      await sub.subscribed;
      await t.api('POST', `/api/v1/devices/${d.id}/attributes/server`, { note: 'ops only' });
      await t.api('POST', `/api/v1/devices/${other.id}/attributes/shared`, { target: 1 });
      const result = await sub.done;
      expect(result.killed).toBe(false);
      expect(result.messages).toEqual([]);
    });

    it('mosquitto_rr sees refusals explained on v1/devices/me/errors', async () => {
      const d = await device('mosq-refused');
      const refused = async (topic: string, payload: string) => {
        const r = await mosquittoRr(target(d), { topic, responseTopic: 'v1/devices/me/errors', payload });
        expect(r.messages, r.stderr + r.stdout).toHaveLength(1);
        return JSON.parse(r.messages[0]!.payload) as DeviceError;
      };
      expect((await refused('v1/devices/me/attributes', '[{"a":1}]')).errors[0]!.reason).toBe('invalid_shape');
      expect((await refused('v2/a', 'true')).errors[0]!.reason).toBe('invalid_shape');
      expect((await refused('v1/devices/me/attributes', '{oops')).errors[0]!.reason).toBe('invalid_json');
      expect((await refused('v1/devices/me/attributes', JSON.stringify({ pad: 'y'.repeat(70_000) }))).errors[0]!.reason).toBe('payload_too_large');
      const partial = await refused('v1/devices/me/attributes', JSON.stringify({ fine: 'yes', huge: 'z'.repeat(ATTRIBUTE_LIMITS.maxValueBytes) }));
      expect(partial).toMatchObject({ stored: 1, errors: [{ reason: 'value_too_large', key: 'huge' }] });
      expect((await refused('v1/devices/me/attributes/request/1', JSON.stringify({ sharedKeys: { a: 1 } }))).errors[0]!.reason).toBe('invalid_shape');
      expect(await clientValues(d)).toEqual({ fine: 'yes' });
    });

    it('mosquitto_rr: a device only ever reads its own attributes; a wrong token is refused', async () => {
      const a = await device('mosq-a');
      const b = await device('mosq-b');
      await mosquittoPub(target(a), { topic: 'v1/devices/me/attributes', payload: JSON.stringify({ mine: 'a' }) });
      await t.api('POST', `/api/v1/devices/${a.id}/attributes/shared`, { target: 9 });
      const r = await mosquittoRr(target(b), { topic: 'v1/devices/me/attributes/request/1', responseTopic: 'v1/devices/me/attributes/response/1', payload: '{}' });
      expect(JSON.parse(r.messages[0]!.payload)).toEqual({});

      const wrong = await mosquittoPub({ port: t.platform.mqttPort, username: 'not-a-token' }, { topic: 'v1/devices/me/attributes', payload: '{"mine":"forged"}' });
      expect(wrong.code).not.toBe(0);
      expect(wrong.stderr).toMatch(/not authori[sz]ed/i);
      expect(await clientValues(a)).toEqual({ mine: 'a' });
    });
  });
});
