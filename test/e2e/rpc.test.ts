import net from 'node:net';
import type { MqttClient } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RpcRecord } from '../../core/rpc.ts';
import { mosquittoPub, mosquittoRr, mosquittoSub, type MosquittoTarget } from '../support/mosquitto-clients.ts';
import { inbox, nextMessage, sleep } from '../support/inbox.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

interface DeviceError {
  topic: string;
  stored: number;
  errors: { reason: string; detail: string }[];
}



/**
 * Firmware that never acknowledges a command: a raw MQTT 3.1.1 client (mqtt-packet) that
 * subscribes to commands at QoS 1 and records them, but never sends a PUBACK.
 */
async function silentDevice(port: number, token: string) {
  const socket = net.connect(port, '127.0.0.1');
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: mqttPacket.Packet[] = [];
  parser.on('packet', (p) => packets.push(p));
  socket.on('data', (chunk) => parser.parse(chunk));
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'silent', keepalive: 60, username: token }));
  await eventually(() => packets.find((p) => p.cmd === 'connack'));
  socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'v1/devices/me/rpc/request/+', qos: 1 }] }));
  await eventually(() => packets.find((p) => p.cmd === 'suback'));
  return {
    commands: () => packets.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish').map((p) => p.topic),
    close: () => new Promise<void>((resolve) => socket.end(resolve)),
  };
}

type Sent = { status: number; body: RpcRecord & { statusCode?: number; message?: string; status: string; code?: string; rpc?: RpcRecord } };

describe('RPC: commands to devices (server-side) and client-side RPC', () => {
  let t: TestPlatform;
  let n = 0;
  const device = (prefix: string) => t.createDevice({ name: `${prefix}-${++n}` });
  const target = (d: CreatedDevice): MosquittoTarget => ({ port: t.platform.mqttPort, username: d.accessToken });
  const send = (d: { id: number }, body: unknown) => t.api('POST', `/api/v1/devices/${d.id}/rpc`, body) as Promise<Sent>;
  const rpcOf = async (d: { id: number }, id: number) => (await t.api<RpcRecord>('GET', `/api/v1/devices/${d.id}/rpc/${id}`)).body;
  const statusOf = (d: { id: number }, id: number, status: string) =>
    eventually(async () => {
      const r = await rpcOf(d, id);
      return r.status === status ? r : undefined;
    });
  /** An mqtt.js device listening for commands (v1 unless short) and for refusals. */
  const listener = async (d: CreatedDevice, options: { short?: boolean } = {}) => {
    const c = await t.connect(d.accessToken);
    const messages = inbox(c);
    await c.subscribeAsync([options.short ? 'v2/r/req/+' : 'v1/devices/me/rpc/request/+', 'v1/devices/me/errors'], { qos: 1 });
    return { c, messages };
  };

  beforeAll(async () => {
    t = await startTestPlatform({ devicePublishRate: '200:1,6000:60', maxPayloadBytes: 4096 });
  });
  afterAll(async () => {
    await t?.stop();
  });

  describe('server-side RPC through mqtt.js', () => {
    it('two-way: the device gets {"method","params"} on rpc/request/{id} and its answer is the REST response', async () => {
      const d = await device('pump');
      const { c, messages } = await listener(d);
      c.on('message', (topic, payload) => {
        const m = /^v1\/devices\/me\/rpc\/request\/(\d+)$/.exec(topic);
        if (!m) return;
        const { method, params } = JSON.parse(payload.toString());
        void c.publishAsync(`v1/devices/me/rpc/response/${m[1]}`, JSON.stringify({ ok: true, method, echo: params }), { qos: 1 });
      });
      const res = await send(d, { method: 'setGpio', params: { pin: 23, value: 1 }, timeout: 5000 });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({
        deviceId: d.id,
        method: 'setGpio',
        params: { pin: 23, value: 1 },
        oneWay: false,
        persistent: false,
        status: 'answered',
        response: { ok: true, method: 'setGpio', echo: { pin: 23, value: 1 } },
        responseFormat: 'json',
        error: null,
        attempts: 1,
      });
      const request = messages.find((m) => m.topic.startsWith('v1/devices/me/rpc/request/'))!;
      expect(request.topic).toBe(`v1/devices/me/rpc/request/${res.body.requestId}`);
      expect(request.text).toBe('{"method":"setGpio","params":{"pin":23,"value":1}}');
      expect(request.qos).toBe(1);
      expect(res.body.sentAt).not.toBeNull();
      expect(res.body.deliveredAt).not.toBeNull();
      expect(res.body.completedAt).not.toBeNull();
      // the same record over GET; ids on the wire count up per device
      expect(await rpcOf(d, res.body.id)).toEqual(res.body);
      const second = await send(d, { method: 'getState', timeout: 5000 });
      expect(second.status).toBe(200);
      expect(second.body.requestId).toBe(res.body.requestId + 1);
      expect(second.body.params).toEqual({});
      expect(messages.filter((m) => m.topic.startsWith('v1/devices/me/rpc/request/')).map((m) => m.text)[1]).toBe('{"method":"getState","params":{}}');
    });

    it('v2 short topics: a device subscribed to v2/r/req/+ gets v2/r/req/{id} and may answer on v2/r/res/{id}; a non-JSON answer is kept as text', async () => {
      const d = await device('short');
      const { c, messages } = await listener(d, { short: true });
      c.on('message', (topic) => {
        const m = /^v2\/r\/req\/(\d+)$/.exec(topic);
        if (m) void c.publishAsync(`v2/r/res/${m[1]}`, 'OK: valve closed', { qos: 1 });
      });
      const res = await send(d, { method: 'closeValve', params: [1, 2], timeout: 5000 });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: 'answered', response: 'OK: valve closed', responseFormat: 'text', params: [1, 2] });
      expect(messages.map((m) => m.topic)).toContain(`v2/r/req/${res.body.requestId}`);
    });

    it('keeps JSON answers as JSON (numbers, strings, null, arrays) and an empty answer as empty text', async () => {
      const d = await device('answers');
      const answers = ['42', '"done"', 'null', '[1,{"a":2}]', ''];
      const { c } = await listener(d);
      let i = 0;
      c.on('message', (topic) => {
        const m = /request\/(\d+)$/.exec(topic);
        if (m) void c.publishAsync(`v1/devices/me/rpc/response/${m[1]}`, answers[i++]!, { qos: 1 });
      });
      const got = [];
      for (let k = 0; k < answers.length; k++) got.push((await send(d, { method: 'read', timeout: 5000 })).body);
      expect(got.map((r) => [r.status, r.response, r.responseFormat])).toEqual([
        ['answered', 42, 'json'],
        ['answered', 'done', 'json'],
        ['answered', null, 'json'],
        ['answered', [1, { a: 2 }], 'json'],
        ['answered', '', 'text'],
      ]);
    });

    it('timeout: no answer in time gives 504 with status timeout; a late answer is refused (rpc_closed)', async () => {
      const d = await device('silent');
      const { c, messages } = await listener(d);
      const started = Date.now();
      const res = await send(d, { method: 'reboot', timeout: 600 });
      expect(Date.now() - started).toBeGreaterThanOrEqual(550);
      expect(res.status).toBe(504);
      expect(res.body).toMatchObject({ status: 'timeout', error: 'not answered within 600 ms' });
      expect(res.body.deliveredAt).not.toBeNull(); // it did arrive (PUBACK), it just was not answered
      await c.publishAsync(`v1/devices/me/rpc/response/${res.body.requestId}`, '{"late":true}', { qos: 1 });
      const refusal = (await nextMessage(messages, 'v1/devices/me/errors')).body as DeviceError;
      expect(refusal.topic).toBe(`v1/devices/me/rpc/response/${res.body.requestId}`);
      expect(refusal.errors).toEqual([{ reason: 'rpc_closed', detail: `command ${res.body.requestId} is already timeout` }]);
      expect((await rpcOf(d, res.body.id)).response).toBeNull();
    });

    it('offline: a two-way or one-way command to a device that is not connected (or not listening) is 409 status offline, nothing stored', async () => {
      const d = await device('offline');
      const res = await send(d, { method: 'ping', timeout: 1000 });
      expect(res.status).toBe(409);
      expect(res.body.code).toBe('offline');
      expect(res.body.message).toMatch(/is not connected; send the command with "persistent": true/);
      expect((await send(d, { method: 'ping', oneWay: true })).status).toBe(409);
      // connected but not subscribed to commands: ThingsBoard sends nothing to it either
      await t.connect(d.accessToken);
      const deaf = await send(d, { method: 'ping', timeout: 1000 });
      expect(deaf.status).toBe(409);
      expect(deaf.body.message).toMatch(/is connected but not subscribed to v1\/devices\/me\/rpc\/request\/\+/);
      const list = await t.api<{ items: RpcRecord[] }>('GET', `/api/v1/devices/${d.id}/rpc`);
      expect(list.body.items).toEqual([]);
    });

    it('one-way: 200 once the device acknowledged it (delivered, final); an answer to it is refused (rpc_one_way)', async () => {
      const d = await device('oneway');
      const { c, messages } = await listener(d);
      const res = await send(d, { method: 'blink', params: { times: 3 }, oneWay: true, timeout: 3000 });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: 'delivered', oneWay: true, response: null });
      expect(res.body.completedAt).not.toBeNull();
      expect((await nextMessage(messages, `v1/devices/me/rpc/request/${res.body.requestId}`)).body).toEqual({ method: 'blink', params: { times: 3 } });
      await c.publishAsync(`v1/devices/me/rpc/response/${res.body.requestId}`, '{}', { qos: 1 });
      const refusal = (await nextMessage(messages, 'v1/devices/me/errors')).body as DeviceError;
      expect(refusal.errors[0]!.reason).toBe('rpc_one_way');
      expect((await rpcOf(d, res.body.id)).status).toBe('delivered');
    });

    it('a device that never acknowledges (no PUBACK) times out: 504 with the reason', async () => {
      const d = await device('no-puback');
      const silent = await silentDevice(t.platform.mqttPort, d.accessToken);
      const res = await send(d, { method: 'ignored', oneWay: true, timeout: 800 });
      expect(res.status).toBe(504);
      expect(res.body.status).toBe('timeout');
      expect(res.body.error).toBe('not acknowledged by the device (no PUBACK) within 800 ms');
      expect(res.body.deliveredAt).toBeNull();
      expect(silent.commands()).toEqual([`v1/devices/me/rpc/request/${res.body.requestId}`]);
      await silent.close();
    });

    it('a device subscribed with QoS 0 gets the command at QoS 0: delivered once written', async () => {
      const d = await device('qos0');
      const c = await t.connect(d.accessToken);
      const messages = inbox(c);
      await c.subscribeAsync('v1/devices/me/rpc/request/+', { qos: 0 });
      const res = await send(d, { method: 'led', oneWay: true, timeout: 2000 });
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('delivered');
      expect((await nextMessage(messages, /rpc\/request/)).qos).toBe(0);
    });

    it('a device can never answer another device\'s command: request ids are per device', async () => {
      const a = await device('ids-a');
      const b = await device('ids-b');
      const stranger = await device('ids-c');
      const devA = await listener(a);
      const devB = await listener(b);
      const devC = await listener(stranger);
      const callA = send(a, { method: 'whoami', timeout: 2500 });
      const callB = send(b, { method: 'whoami', timeout: 5000 });
      const reqA = await nextMessage(devA.messages, /rpc\/request\/\d+$/);
      const reqB = await nextMessage(devB.messages, /rpc\/request\/\d+$/);
      expect(reqA.topic).toBe(reqB.topic); // both devices' first command: the same id on the wire
      const id = reqA.topic.split('/').pop();
      // B answers "its" id: that is B's own command; A's stays unanswered.
      await devB.c.publishAsync(`v1/devices/me/rpc/response/${id}`, '"from b"', { qos: 1 });
      // C has no such command at all.
      await devC.c.publishAsync(`v1/devices/me/rpc/response/${id}`, '"from c"', { qos: 1 });
      expect((await callB).body).toMatchObject({ status: 'answered', response: 'from b' });
      const resA = await callA;
      expect(resA.status).toBe(504);
      expect(resA.body.response).toBeNull();
      const refusal = (await nextMessage(devC.messages, 'v1/devices/me/errors')).body as DeviceError;
      expect(refusal.errors).toEqual([{ reason: 'rpc_unknown', detail: `no command ${id} was sent to this device` }]);
    });

    it('refuses malformed answers with a reason and keeps the connection (invalid UTF-8, too large, unknown id)', async () => {
      const d = await device('bad-answers');
      const { c, messages } = await listener(d);
      const call = send(d, { method: 'measure', timeout: 5000 });
      const req = await nextMessage(messages, /rpc\/request\/\d+$/);
      const id = req.topic.split('/').pop();
      await c.publishAsync(`v1/devices/me/rpc/response/${id}`, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { qos: 1 });
      await c.publishAsync(`v1/devices/me/rpc/response/${id}`, JSON.stringify({ pad: 'x'.repeat(5000) }), { qos: 1 });
      await c.publishAsync('v1/devices/me/rpc/response/999999', '{}', { qos: 1 });
      await eventually(() => (messages.filter((m) => m.topic === 'v1/devices/me/errors').length === 3 ? true : undefined));
      const reasons = messages.filter((m) => m.topic === 'v1/devices/me/errors').map((m) => (m.body as DeviceError).errors[0]!.reason);
      expect(reasons).toEqual(['invalid_encoding', 'payload_too_large', 'rpc_unknown']);
      // still connected, and the command is still open: a good answer completes it
      await c.publishAsync(`v1/devices/me/rpc/response/${id}`, '{"t":21.5}', { qos: 1 });
      expect((await call).body).toMatchObject({ status: 'answered', response: { t: 21.5 } });
    });
  });

  describe('persistent commands', () => {
    it('queued for an offline device, sent when it connects and subscribes, then answered: every status queryable', async () => {
      const d = await device('sleepy');
      const res = await send(d, { method: 'setInterval', params: { seconds: 60 }, persistent: true, expiresInMs: 60_000 });
      expect(res.status).toBe(202);
      expect(res.body).toMatchObject({ status: 'queued', persistent: true, attempts: 0, sentAt: null });
      const queued = await t.api<{ items: RpcRecord[] }>('GET', `/api/v1/devices/${d.id}/rpc?status=queued`);
      expect(queued.body.items.map((r) => r.id)).toEqual([res.body.id]);

      const c = await t.connect(d.accessToken);
      const messages = inbox(c);
      await sleep(300);
      expect((await rpcOf(d, res.body.id)).status).toBe('queued'); // connected, but not yet listening for commands
      await c.subscribeAsync('v1/devices/me/rpc/request/+', { qos: 1 });
      const req = await nextMessage(messages, `v1/devices/me/rpc/request/${res.body.requestId}`);
      expect(req.body).toEqual({ method: 'setInterval', params: { seconds: 60 } });
      const delivered = await statusOf(d, res.body.id, 'delivered');
      expect(delivered.attempts).toBe(1);
      expect(delivered.completedAt).toBeNull(); // two-way: waiting for the answer
      await c.publishAsync(`v1/devices/me/rpc/response/${res.body.requestId}`, '{"applied":60}', { qos: 1 });
      const answered = await rpcOf(d, res.body.id);
      expect(answered).toMatchObject({ status: 'answered', response: { applied: 60 }, responseFormat: 'json' });
      const byStatus = await t.api<{ items: RpcRecord[] }>('GET', `/api/v1/devices/${d.id}/rpc?status=answered,delivered`);
      expect(byStatus.body.items.map((r) => r.id)).toEqual([res.body.id]);
    });

    it('several queued commands go out in order; a one-way one is done once delivered', async () => {
      const d = await device('backlog');
      const ids = [];
      for (const method of ['first', 'second', 'third']) {
        ids.push((await send(d, { method, oneWay: method !== 'third', persistent: true })).body);
      }
      const { messages } = await listener(d);
      await eventually(() => (messages.filter((m) => /rpc\/request/.test(m.topic)).length === 3 ? true : undefined));
      expect(messages.filter((m) => /rpc\/request/.test(m.topic)).map((m) => (m.body as { method: string }).method)).toEqual(['first', 'second', 'third']);
      const first = await statusOf(d, ids[0]!.id, 'delivered');
      expect(first.completedAt).not.toBeNull();
      expect((await statusOf(d, ids[2]!.id, 'delivered')).completedAt).toBeNull();
    });

    it('sent at once to a listening device (202), answered later', async () => {
      const d = await device('online-persistent');
      const { c, messages } = await listener(d);
      const res = await send(d, { method: 'calibrate', persistent: true });
      expect(res.status).toBe(202);
      expect(['sent', 'delivered']).toContain(res.body.status);
      await nextMessage(messages, `v1/devices/me/rpc/request/${res.body.requestId}`);
      await c.publishAsync(`v1/devices/me/rpc/response/${res.body.requestId}`, '"calibrated"', { qos: 1 });
      expect(await rpcOf(d, res.body.id)).toMatchObject({ status: 'answered', response: 'calibrated' });
    });

    it('queued again when the connection ends before the PUBACK, and sent again on reconnect', async () => {
      const d = await device('flaky');
      const res = await send(d, { method: 'update', persistent: true });
      const first = await silentDevice(t.platform.mqttPort, d.accessToken);
      await eventually(() => first.commands()[0]);
      await first.close();
      const requeued = await statusOf(d, res.body.id, 'queued');
      expect(requeued.attempts).toBe(1);
      expect(requeued.error).toBe('the connection ended before the device acknowledged it');
      const { messages } = await listener(d);
      await nextMessage(messages, `v1/devices/me/rpc/request/${res.body.requestId}`);
      expect((await statusOf(d, res.body.id, 'delivered')).attempts).toBe(2);
    });

    it('expires when nobody picked it up in time; a delivered, unanswered one times out at its expiry', async () => {
      const d = await device('gone');
      const res = await send(d, { method: 'noop', persistent: true, expiresInMs: 300 });
      expect(res.body.status).toBe('queued');
      const expired = await statusOf(d, res.body.id, 'expired');
      expect(expired.error).toBe('expired before it could be sent');
      expect(expired.completedAt).not.toBeNull();
      // an expired command is never sent
      const { messages } = await listener(d);
      const later = await send(d, { method: 'ask', persistent: true, expiresInMs: 1500 });
      await nextMessage(messages, `v1/devices/me/rpc/request/${later.body.requestId}`);
      expect(messages.some((m) => m.topic === `v1/devices/me/rpc/request/${res.body.requestId}`)).toBe(false);
      const timedOut = await statusOf(d, later.body.id, 'timeout');
      expect(timedOut.error).toBe('not answered before it expired');
      expect(timedOut.deliveredAt).not.toBeNull();
    });

    it('cancellation: a queued command is cancelled (never sent); anything else is 409, unknown ids 404', async () => {
      const d = await device('cancel');
      const keep = await send(d, { method: 'keep', persistent: true, oneWay: true });
      const drop = await send(d, { method: 'drop', persistent: true });
      const del = await t.api<RpcRecord>('DELETE', `/api/v1/devices/${d.id}/rpc/${drop.body.id}`);
      expect(del.status).toBe(200);
      expect(del.body).toMatchObject({ status: 'cancelled', error: 'cancelled before it was sent' });
      const again = await t.api<{ message: string }>('DELETE', `/api/v1/devices/${d.id}/rpc/${drop.body.id}`);
      expect(again.status).toBe(409);
      expect(again.body.message).toBe(`command ${drop.body.id} is cancelled; only a queued command can be cancelled`);
      const { messages } = await listener(d);
      await nextMessage(messages, `v1/devices/me/rpc/request/${keep.body.requestId}`);
      await statusOf(d, keep.body.id, 'delivered');
      await sleep(1200);
      expect(messages.some((m) => m.topic === `v1/devices/me/rpc/request/${drop.body.requestId}`)).toBe(false);
      expect((await t.api('DELETE', `/api/v1/devices/${d.id}/rpc/${keep.body.id}`)).status).toBe(409);
      expect((await t.api('DELETE', `/api/v1/devices/${d.id}/rpc/99999999`)).status).toBe(404);
      const other = await device('cancel-other');
      expect((await t.api('DELETE', `/api/v1/devices/${other.id}/rpc/${keep.body.id}`)).status).toBe(404);
      expect((await t.api('GET', `/api/v1/devices/${other.id}/rpc/${keep.body.id}`)).status).toBe(404);
    });
  });

  describe('REST validation', () => {
    it('answers bad input with precise 400s and unknown devices with 404', async () => {
      const d = await device('rest');
      const bad = async (body: unknown) => {
        const res = await t.api<{ message: string }>('POST', `/api/v1/devices/${d.id}/rpc`, body);
        expect(res.status, JSON.stringify(body)).toBe(400);
        return res.body.message;
      };
      expect(await bad({})).toMatch(/method/);
      expect(await bad({ method: '' })).toMatch(/method/);
      expect(await bad({ method: 'x', timeout: 50 })).toMatch(/timeout/);
      expect(await bad({ method: 'x', timeout: 300_001 })).toMatch(/timeout/);
      expect(await bad({ method: 'x', oneway: true })).toMatch(/oneway|additional/i);
      expect(await bad({ method: 'x', expiresInMs: 1000 })).toBe('expiresInMs applies to persistent commands only; a non-persistent command lives for its timeout');
      expect(await bad({ method: 'x', persistent: true, params: { blob: 'y'.repeat(5000) } })).toMatch(/^the command is \d+ bytes as sent .*; at most 4096$/);
      const list = await t.api<{ message: string }>('GET', `/api/v1/devices/${d.id}/rpc?status=queued,done`);
      expect(list.status).toBe(400);
      expect(list.body.message).toMatch(/unknown status "done"; statuses are queued, sent, delivered/);
      expect((await t.api('POST', '/api/v1/devices/99999999/rpc', { method: 'x' })).status).toBe(404);
      expect((await t.api('GET', '/api/v1/devices/99999999/rpc')).status).toBe(404);
      expect((await t.api('GET', `/api/v1/devices/${d.id}/rpc/1`)).status).toBe(404);
      expect((await t.api('POST', `/api/v1/devices/${d.id}/rpc`, { method: 'x' }, { auth: false })).status).toBe(401);
      const openapi = await t.api<{ paths: Record<string, Record<string, unknown>> }>('GET', '/api/v1/openapi.json');
      expect(Object.keys(openapi.body.paths['/api/v1/devices/{id}/rpc']!).sort()).toEqual(['get', 'post']);
      expect(Object.keys(openapi.body.paths['/api/v1/devices/{id}/rpc/{rpcId}']!).sort()).toEqual(['delete', 'get']);
    });

    it('lists a device\'s commands newest first, a page at a time', async () => {
      const d = await device('pages');
      const ids: number[] = [];
      for (let i = 0; i < 5; i++) ids.push((await send(d, { method: `m${i}`, persistent: true })).body.id);
      const page1 = await t.api<{ items: RpcRecord[]; nextBefore: number | null }>('GET', `/api/v1/devices/${d.id}/rpc?limit=3`);
      expect(page1.body.items.map((r) => r.id)).toEqual(ids.slice(2).reverse());
      const page2 = await t.api<{ items: RpcRecord[]; nextBefore: number | null }>('GET', `/api/v1/devices/${d.id}/rpc?limit=3&before=${page1.body.nextBefore}`);
      expect(page2.body.items.map((r) => r.id)).toEqual(ids.slice(0, 2).reverse());
      expect(page2.body.nextBefore).toBeNull();
    });
  });

  describe('client-side RPC (the device calls the server)', () => {
    it('getTime, getCurrentTime and getSessionLimits are answered on rpc/response/{id}; unknown methods get {"error"}', async () => {
      const d = await device('caller');
      const c = await t.connect(d.accessToken);
      const messages = inbox(c);
      await c.subscribeAsync('v1/devices/me/rpc/response/+', { qos: 1 });
      const before = Date.now();
      await c.publishAsync('v1/devices/me/rpc/request/7', JSON.stringify({ method: 'getTime', params: {} }), { qos: 1 });
      const time = (await nextMessage(messages, 'v1/devices/me/rpc/response/7')).body as { ts: number; time: string };
      expect(time.ts).toBeGreaterThanOrEqual(before);
      expect(time.ts).toBeLessThanOrEqual(Date.now());
      expect(new Date(time.time).getTime()).toBe(time.ts);
      await c.publishAsync('v1/devices/me/rpc/request/8', JSON.stringify({ method: 'getCurrentTime', params: {} }), { qos: 1 });
      expect(typeof (await nextMessage(messages, 'v1/devices/me/rpc/response/8')).body).toBe('number');
      await c.publishAsync('v1/devices/me/rpc/request/9', JSON.stringify({ method: 'getSessionLimits', params: {} }), { qos: 1 });
      expect((await nextMessage(messages, 'v1/devices/me/rpc/response/9')).body).toEqual({
        maxPayloadSize: 4096,
        maxInflightMessages: 100,
        rateLimits: { messages: '200:1,6000:60', telemetryMessages: '200:1,6000:60', telemetryDataPoints: '' },
      });
      await c.publishAsync('v1/devices/me/rpc/request/10', JSON.stringify({ method: 'getWeather', params: { city: 'Dongguan' } }), { qos: 1 });
      expect((await nextMessage(messages, 'v1/devices/me/rpc/response/10')).body).toEqual({
        error: 'unknown method "getWeather"; GuanLink answers getSessionLimits, getTime and getCurrentTime',
      });
    });

    it('v2/r/req/{id} is answered on v2/r/res/{id}', async () => {
      const d = await device('caller-v2');
      const c = await t.connect(d.accessToken);
      const messages = inbox(c);
      await c.subscribeAsync('v2/r/res/+', { qos: 1 });
      await c.publishAsync('v2/r/req/3', JSON.stringify({ method: 'getTime' }), { qos: 1 });
      expect(((await nextMessage(messages, 'v2/r/res/3')).body as { ts: number }).ts).toBeGreaterThan(0);
    });

    it('malformed requests are acknowledged, answered {"error"} and explained on v1/devices/me/errors', async () => {
      const d = await device('caller-bad');
      const c = await t.connect(d.accessToken);
      const messages = inbox(c);
      await c.subscribeAsync(['v1/devices/me/rpc/response/+', 'v1/devices/me/errors'], { qos: 1 });
      const cases: [string, string | Buffer, string][] = [
        ['1', 'getTime', 'invalid_json'],
        ['2', '[1,2]', 'invalid_shape'],
        ['3', '{"params":{}}', 'invalid_shape'],
        ['4', '{"method":42}', 'invalid_shape'],
        ['5', Buffer.from([0xff, 0x00]), 'invalid_json'],
        ['6', JSON.stringify({ method: 'getTime', params: { pad: 'x'.repeat(5000) } }), 'payload_too_large'],
      ];
      for (const [id, payload, reason] of cases) {
        await c.publishAsync(`v1/devices/me/rpc/request/${id}`, payload, { qos: 1 }); // acknowledged
        const answer = (await nextMessage(messages, `v1/devices/me/rpc/response/${id}`)).body as { error: string };
        expect(answer.error.startsWith(`${reason}: `), `${id}: ${answer.error}`).toBe(true);
      }
      const refusals = await eventually(() => {
        const errors = messages.filter((m) => m.topic === 'v1/devices/me/errors');
        return errors.length === cases.length ? errors.map((m) => m.body as DeviceError) : undefined;
      });
      expect(refusals.map((r) => [r.topic, r.errors[0]!.reason])).toEqual(cases.map(([id, , reason]) => [`v1/devices/me/rpc/request/${id}`, reason]));
      // still connected and served
      await c.publishAsync('v1/devices/me/rpc/request/11', '{"method":"getCurrentTime"}', { qos: 1 });
      await nextMessage(messages, 'v1/devices/me/rpc/response/11');
    });
  });

  describe('through mosquitto_sub / mosquitto_pub / mosquitto_rr', () => {
    it('mosquitto_sub receives a two-way command; mosquitto_pub answers it on the response topic', async () => {
      const d = await device('mosq');
      const sub = mosquittoSub(target(d), { topics: ['v1/devices/me/rpc/request/+'], count: 1, waitSeconds: 8 });
      await sub.subscribed;
      const call = send(d, { method: 'setRelay', params: { on: true }, timeout: 8000 });
      const got = await sub.done;
      expect(got.messages).toHaveLength(1);
      const [{ topic, payload, qos }] = got.messages as [{ topic: string; payload: string; qos: number }];
      expect(topic).toMatch(/^v1\/devices\/me\/rpc\/request\/\d+$/);
      expect(JSON.parse(payload)).toEqual({ method: 'setRelay', params: { on: true } });
      expect(qos).toBe(1);
      // mosquitto_pub connects as the same device (taking over the session) and answers.
      const pub = await mosquittoPub(target(d), { topic: topic.replace('request', 'response'), payload: '{"relay":"on"}' });
      expect(pub.code).toBe(0);
      const res = await call;
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: 'answered', response: { relay: 'on' } });
    });

    it('mosquitto_sub on v2/r/req/+ at QoS 0 gets a one-way command (delivered once written)', async () => {
      const d = await device('mosq-v2');
      const sub = mosquittoSub(target(d), { topics: ['v2/r/req/+'], count: 1, waitSeconds: 8, qos: 0 });
      await sub.subscribed;
      const res = await send(d, { method: 'beep', oneWay: true, timeout: 3000 });
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('delivered');
      const got = await sub.done;
      expect(got.messages.map((m) => [m.topic, JSON.parse(m.payload), m.qos])).toEqual([[`v2/r/req/${res.body.requestId}`, { method: 'beep', params: {} }, 0]]);
    });

    it('a persistent command waits for a mosquitto_sub device, which gets it on connecting; mosquitto_pub answers', async () => {
      const d = await device('mosq-persistent');
      const queued = await send(d, { method: 'report', params: { what: 'battery' }, persistent: true, expiresInMs: 60_000 });
      expect(queued.body.status).toBe('queued');
      const sub = mosquittoSub(target(d), { topics: ['v1/devices/me/rpc/request/+'], count: 1, waitSeconds: 8 });
      const got = await sub.done;
      expect(got.messages.map((m) => [m.topic, JSON.parse(m.payload)])).toEqual([
        [`v1/devices/me/rpc/request/${queued.body.requestId}`, { method: 'report', params: { what: 'battery' } }],
      ]);
      await statusOf(d, queued.body.id, 'delivered');
      const pub = await mosquittoPub(target(d), { topic: `v1/devices/me/rpc/response/${queued.body.requestId}`, payload: 'battery=87%' });
      expect(pub.code).toBe(0);
      expect(await rpcOf(d, queued.body.id)).toMatchObject({ status: 'answered', response: 'battery=87%', responseFormat: 'text' });
    });

    it('a timeout with a mosquitto_sub device that does not answer', async () => {
      const d = await device('mosq-silent');
      const sub = mosquittoSub(target(d), { topics: ['v1/devices/me/rpc/request/+'], waitSeconds: 3 });
      await sub.subscribed;
      const res = await send(d, { method: 'status', timeout: 700 });
      expect(res.status).toBe(504);
      expect(res.body.status).toBe('timeout');
      sub.stop();
      expect((await sub.done).messages).toHaveLength(1);
    });

    it('mosquitto_rr calls getTime and getSessionLimits (client-side RPC) on v1 and v2 topics', async () => {
      const d = await device('mosq-rr');
      const time = await mosquittoRr(target(d), {
        topic: 'v1/devices/me/rpc/request/1',
        responseTopic: 'v1/devices/me/rpc/response/1',
        payload: '{"method":"getTime","params":{}}',
      });
      expect(time.messages).toHaveLength(1);
      expect(Math.abs((JSON.parse(time.messages[0]!.payload) as { ts: number }).ts - Date.now())).toBeLessThan(10_000);
      const limits = await mosquittoRr(target(d), { topic: 'v2/r/req/2', responseTopic: 'v2/r/res/2', payload: '{"method":"getSessionLimits","params":{}}' });
      expect(JSON.parse(limits.messages[0]!.payload)).toMatchObject({ maxPayloadSize: 4096, maxInflightMessages: 100 });
      const unknown = await mosquittoRr(target(d), { topic: 'v1/devices/me/rpc/request/3', responseTopic: 'v1/devices/me/rpc/response/3', payload: '{"method":"fly"}' });
      expect(JSON.parse(unknown.messages[0]!.payload).error).toMatch(/^unknown method "fly"/);
    });

    it('mosquitto_rr and mosquitto_pub see refusals explained on v1/devices/me/errors (requests and answers)', async () => {
      const d = await device('mosq-refused');
      const refusal = async (topic: string, payload: string | null) => {
        const r = await mosquittoRr(target(d), { topic, responseTopic: 'v1/devices/me/errors', payload });
        expect(r.messages, r.stdout + r.stderr).toHaveLength(1);
        return JSON.parse(r.messages[0]!.payload) as DeviceError;
      };
      expect((await refusal('v1/devices/me/rpc/request/5', 'not json')).errors[0]!.reason).toBe('invalid_json');
      expect((await refusal('v1/devices/me/rpc/request/6', null)).errors[0]!.reason).toBe('invalid_json');
      expect((await refusal('v1/devices/me/rpc/request/7', '{"method":""}')).errors[0]!.reason).toBe('invalid_shape');
      expect((await refusal('v1/devices/me/rpc/response/77', '{"ok":1}')).errors).toEqual([{ reason: 'rpc_unknown', detail: 'no command 77 was sent to this device' }]);
      expect((await refusal('v2/r/res/78', '{"ok":1}')).topic).toBe('v2/r/res/78');
      // mosquitto_pub: acknowledged (exit 0) even when refused
      expect((await mosquittoPub(target(d), { topic: 'v1/devices/me/rpc/response/79', payload: 'x' })).code).toBe(0);
      // a wrong token cannot answer anything
      const wrong = await mosquittoPub({ port: t.platform.mqttPort, username: 'not-a-token' }, { topic: 'v1/devices/me/rpc/response/1', payload: '{}' });
      expect(wrong.code).not.toBe(0);
    });
  });
});
