import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RpcRecord } from '../../core/rpc.ts';
import { testPool } from '../support/database.ts';
import { mosquittoPub, mosquittoRr, mosquittoSub, type MosquittoTarget } from '../support/mosquitto-clients.ts';
import { inbox, nextMessage, sleep } from '../support/inbox.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * ThingsBoard's gateway API end to end: a gateway device (isGateway) speaks for sub-devices by
 * name over mqtt.js and Debian's mosquitto clients, against the real platform and database.
 */

interface GatewayErrors {
  topic: string;
  stored: number;
  errors: { device?: string; reason: string; key?: string; detail: string }[];
}

interface DeviceView {
  id: number;
  name: string;
  type: string;
  domain: string;
  isGateway: boolean;
  gatewayId: number | null;
}

interface Connectivity {
  online: boolean;
  lastConnect: { at: string; address: string | null; clientId: string | null } | null;
  lastDisconnect: { at: string; reason: string | null } | null;
}

type Series = Record<string, { ts: number; value: number }[]>;



// A custom type as the default for sub-devices created without one: its declared range is
// checked by ingest (temperature), undeclared keys are stored.
const DEFAULT_TYPE = 'gw-sensor';
const MAX_DEVICES = 6;
const MAX_PER_MESSAGE = 5;

describe('gateway API (ThingsBoard-compatible)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let n = 0;
  const unique = (prefix: string) => `${prefix}-${++n}`;

  const gateway = async (prefix: string): Promise<CreatedDevice> => {
    const res = await t.api<CreatedDevice>('POST', '/api/v1/devices', { name: unique(prefix), isGateway: true });
    expect(res.status).toBe(201);
    return res.body;
  };
  const target = (d: CreatedDevice): MosquittoTarget => ({ port: t.platform.mqttPort, username: d.accessToken });
  const byName = async (name: string): Promise<DeviceView | undefined> => {
    const res = await t.api<{ items: DeviceView[] }>('GET', `/api/v1/devices?namePrefix=${encodeURIComponent(name)}&limit=100`);
    return res.body.items.find((d) => d.name === name);
  };
  const telemetry = async (id: number, keys: string) => (await t.api<Series>('GET', `/api/v1/devices/${id}/telemetry?keys=${keys}`)).body;
  const connectivity = async (id: number) => (await t.api<Connectivity>('GET', `/api/v1/devices/${id}/connectivity`)).body;
  const clientAttributes = async (id: number) => {
    const res = await t.api<{ client?: Record<string, { value: unknown }> }>('GET', `/api/v1/devices/${id}/attributes?scope=client`);
    return Object.fromEntries(Object.entries(res.body.client ?? {}).map(([k, e]) => [k, e.value]));
  };
  const metric = async (name: string, labels: string): Promise<number> => {
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  };
  /** A gateway connected with mqtt.js, subscribed to its errors (and to `topics`), with an inbox. */
  const open = async (gw: CreatedDevice, topics: string[] = []) => {
    const client = await t.connect(gw.accessToken);
    const messages = inbox(client);
    await client.subscribeAsync(['v1/devices/me/errors', ...topics], { qos: 1 });
    return { client, messages };
  };
  const publish = (client: MqttClient, topic: string, body: unknown) => client.publishAsync(topic, JSON.stringify(body), { qos: 1 });

  beforeAll(async () => {
    t = await startTestPlatform({ gatewayDefaultDeviceType: DEFAULT_TYPE, gatewayMaxDevices: MAX_DEVICES, gatewayMaxDevicesPerMessage: MAX_PER_MESSAGE });
    db = testPool(t.databaseUrl, 2);
    const type = await t.api('POST', '/api/v1/device-types', {
      name: DEFAULT_TYPE,
      domain: 'generic',
      label: { en: 'Gateway sensor', zh: '网关传感器' },
      moving: false,
      acceptsUndeclaredKeys: true,
      keys: { temperature: { unit: '°C', min: -50, max: 100 } },
    });
    expect(type.status).toBe(201);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  describe('sub-devices: connect, telemetry, disconnect', () => {
    it('connect creates the sub-device under the gateway, with the default type or the one named, and marks it online', async () => {
      const gw = await gateway('gw-connect');
      const { client, messages } = await open(gw);
      const [plain, typed] = [unique('sub-plain'), unique('sub-typed')];
      await publish(client, 'v1/gateway/connect', { device: plain });
      await publish(client, 'v1/gateway/connect', { device: typed, type: 'river-level-station' });

      const a = (await byName(plain))!;
      const b = (await byName(typed))!;
      expect(a).toMatchObject({ type: DEFAULT_TYPE, domain: 'generic', gatewayId: gw.id, isGateway: false });
      expect(b).toMatchObject({ type: 'river-level-station', domain: 'water', gatewayId: gw.id });
      for (const d of [a, b]) {
        const c = await connectivity(d.id);
        expect(c.online).toBe(true);
        expect(c.lastConnect?.clientId).toBeTruthy();
      }
      // connecting again (another type named) keeps the device and its type, as ThingsBoard does
      await publish(client, 'v1/gateway/connect', { device: typed, type: 'noise-monitor' });
      expect(await byName(typed)).toMatchObject({ id: b.id, type: 'river-level-station' });
      expect(messages.filter((m) => m.topic === 'v1/devices/me/errors')).toEqual([]);
    });

    it('stores telemetry of several sub-devices (every ThingsBoard form), validated by each one’s type, readable over REST', async () => {
      const gw = await gateway('gw-telemetry');
      const { client, messages } = await open(gw);
      const [pumpA, pumpB, pumpC] = [unique('pump-a'), unique('pump-b'), unique('pump-c')];
      const t0 = Date.now() - 60_000;
      await publish(client, 'v1/gateway/connect', { device: pumpB, type: 'river-level-station' });
      await publish(client, 'v1/gateway/telemetry', {
        [pumpA]: [
          { ts: t0, values: { temperature: 21.5, rpm: 1200 } },
          { ts: t0 + 1000, values: { temperature: 500, rpm: 1250 } }, // temperature out of gw-sensor's range
        ],
        [pumpB]: [{ ts: t0, values: { water_level: 3.25 } }, { ts: t0 + 1000, values: { bogus: 1 } }], // undeclared for a river station
        [pumpC]: { humidity: 40 }, // one flat object, server time
      });
      // acknowledged after commit: readable at once
      const a = (await byName(pumpA))!;
      const b = (await byName(pumpB))!;
      const c = (await byName(pumpC))!;
      expect([a.gatewayId, b.gatewayId, c.gatewayId]).toEqual([gw.id, gw.id, gw.id]);
      expect(await telemetry(a.id, 'temperature,rpm')).toEqual({
        temperature: [{ ts: t0, value: 21.5 }],
        rpm: [
          { ts: t0 + 1000, value: 1250 },
          { ts: t0, value: 1200 },
        ],
      });
      expect(await telemetry(b.id, 'water_level')).toEqual({ water_level: [{ ts: t0, value: 3.25 }] });
      const humidity = (await telemetry(c.id, 'humidity')).humidity!;
      expect(humidity.map((p) => p.value)).toEqual([40]);
      expect(Math.abs(humidity[0]!.ts - Date.now())).toBeLessThan(10_000);

      // the refusals, explained to the gateway per sub-device and kept under the sub-device
      const errors = (await nextMessage(messages, 'v1/devices/me/errors')).body as GatewayErrors;
      expect(errors.topic).toBe('v1/gateway/telemetry');
      expect(errors.stored).toBe(4);
      expect(errors.errors).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ device: pumpA, reason: 'out_of_range', key: 'temperature' }),
          expect.objectContaining({ device: pumpB, reason: 'undeclared_key', key: 'bogus' }),
        ]),
      );
      expect(errors.errors).toHaveLength(2);
      const kept = await eventually(async () => {
        const { rows } = await db.query<{ device_id: number; reasons: string[]; topic: string }>(
          'SELECT device_id, reasons, topic FROM rejected_messages WHERE device_id = ANY($1::int[]) ORDER BY device_id',
          [[a.id, b.id]],
        );
        return rows.length === 2 ? rows : undefined;
      });
      expect(kept).toEqual(
        [
          { device_id: a.id, reasons: ['out_of_range'], topic: 'v1/gateway/telemetry' },
          { device_id: b.id, reasons: ['undeclared_key'], topic: 'v1/gateway/telemetry' },
        ].sort((x, y) => x.device_id - y.device_id),
      );
      expect((await connectivity(c.id)).online).toBe(true); // telemetry connects an unknown name, as in ThingsBoard
    });

    it('acknowledges a QoS 1 gateway telemetry publish only after all of its readings are committed', async () => {
      const gw = await gateway('gw-commit');
      const { client } = await open(gw);
      const [one, two] = [unique('commit-a'), unique('commit-b')];
      await publish(client, 'v1/gateway/connect', { device: one });
      await publish(client, 'v1/gateway/connect', { device: two });
      const ts = Date.now() - 5000;
      // Hold every write to the generic readings table: nothing can commit meanwhile.
      const lock = await db.connect();
      let acked = false;
      let sent: Promise<unknown>;
      try {
        await lock.query('BEGIN');
        await lock.query('LOCK TABLE readings_generic IN SHARE MODE');
        sent = publish(client, 'v1/gateway/telemetry', { [one]: [{ ts, values: { rpm: 1 } }], [two]: [{ ts, values: { rpm: 2 } }] }).then(() => (acked = true));
        await sleep(1000);
        expect(acked).toBe(false);
        const { rows } = await lock.query('SELECT count(*)::int AS n FROM readings_generic WHERE ts = $1', [new Date(ts)]);
        expect(rows[0].n).toBe(0);
      } finally {
        await lock.query('COMMIT').catch(() => {});
        lock.release();
      }
      await sent!;
      expect(acked).toBe(true);
      const [a, b] = [(await byName(one))!, (await byName(two))!];
      expect(await telemetry(a.id, 'rpm')).toEqual({ rpm: [{ ts, value: 1 }] });
      expect(await telemetry(b.id, 'rpm')).toEqual({ rpm: [{ ts, value: 2 }] });

      // mosquitto_pub (QoS 1) exits once acknowledged: the readings are there then
      const later = ts + 1000;
      const lock2 = await db.connect();
      let exited = false;
      let run: ReturnType<typeof mosquittoPub>;
      try {
        await lock2.query('BEGIN');
        await lock2.query('LOCK TABLE readings_generic IN SHARE MODE');
        run = mosquittoPub(target(gw), { topic: 'v1/gateway/telemetry', payload: JSON.stringify({ [one]: [{ ts: later, values: { rpm: 3 } }] }) });
        void run.then(() => (exited = true));
        await sleep(1000);
        expect(exited).toBe(false);
      } finally {
        await lock2.query('COMMIT').catch(() => {});
        lock2.release();
      }
      const result = await run!;
      expect(result.code, result.stderr).toBe(0);
      expect((await telemetry(a.id, 'rpm')).rpm![0]).toEqual({ ts: later, value: 3 });
    });

    it('disconnect marks a sub-device offline; the end of the gateway’s session marks all of them offline', async () => {
      const gw = await gateway('gw-offline');
      const { client } = await open(gw);
      const [one, two] = [unique('off-a'), unique('off-b')];
      await publish(client, 'v1/gateway/connect', { device: one });
      await publish(client, 'v1/gateway/telemetry', { [two]: [{ rpm: 5 }] });
      const [a, b] = [(await byName(one))!, (await byName(two))!];
      expect((await connectivity(a.id)).online).toBe(true);
      expect((await connectivity(b.id)).online).toBe(true);

      await publish(client, 'v1/gateway/disconnect', { device: one });
      const offA = await eventually(async () => {
        const c = await connectivity(a.id);
        return c.online ? undefined : c;
      });
      expect(offA.lastDisconnect?.reason).toBe('gateway_disconnect');
      expect((await connectivity(b.id)).online).toBe(true);

      await client.endAsync();
      const offB = await eventually(async () => {
        const c = await connectivity(b.id);
        return c.online ? undefined : c;
      });
      expect(offB.lastDisconnect?.reason).toBe('gateway_offline');
      const events = (await t.api<{ event: string; reason: string | null }[]>('GET', `/api/v1/devices/${b.id}/events`)).body;
      expect(events.map((e) => [e.event, e.reason])).toEqual([
        ['disconnect', 'gateway_offline'],
        ['connect', null],
      ]);

      // a lost connection (no DISCONNECT) too
      const gw2 = await gateway('gw-lost');
      const second = await open(gw2);
      const three = unique('off-c');
      await publish(second.client, 'v1/gateway/connect', { device: three });
      const c = (await byName(three))!;
      expect((await connectivity(c.id)).online).toBe(true);
      second.client.stream.destroy();
      const offC = await eventually(async () => {
        const s = await connectivity(c.id);
        return s.online ? undefined : s;
      });
      expect(offC.lastDisconnect?.reason).toBe('gateway_offline');
    });

    it('mosquitto_pub: a gateway connects sub-devices and publishes their telemetry; each publish’s session end takes them offline', async () => {
      const gw = await gateway('gw-mosq');
      const [one, two] = [unique('mosq-a'), unique('mosq-b')];
      const connect = await mosquittoPub(target(gw), { topic: 'v1/gateway/connect', payload: JSON.stringify({ device: one, type: 'air-quality-station' }) });
      expect(connect.code, connect.stderr).toBe(0);
      const ts = Date.now() - 2000;
      const sent = await mosquittoPub(target(gw), {
        topic: 'v1/gateway/telemetry',
        payload: JSON.stringify({ [one]: [{ ts, values: { pm25: 35 } }], [two]: [{ ts, values: { temperature: 19.5 } }] }),
      });
      expect(sent.code, sent.stderr).toBe(0);
      const [a, b] = [(await byName(one))!, (await byName(two))!];
      expect(a).toMatchObject({ type: 'air-quality-station', domain: 'environment', gatewayId: gw.id });
      expect(b).toMatchObject({ type: DEFAULT_TYPE, gatewayId: gw.id });
      expect(await telemetry(a.id, 'pm25')).toEqual({ pm25: [{ ts, value: 35 }] });
      expect(await telemetry(b.id, 'temperature')).toEqual({ temperature: [{ ts, value: 19.5 }] });
      const off = await eventually(async () => {
        const c = await connectivity(a.id);
        return c.online ? undefined : c;
      });
      expect(off.lastDisconnect?.reason).toBe('gateway_offline');
      const attrs = await mosquittoPub(target(gw), { topic: 'v1/gateway/attributes', payload: JSON.stringify({ [one]: { fw: '3.1', serial: '0042' } }) });
      expect(attrs.code, attrs.stderr).toBe(0);
      expect(await clientAttributes(a.id)).toEqual({ fw: '3.1', serial: '0042' });
    });
  });

  describe('attributes', () => {
    it('stores client attributes per sub-device and pushes shared-attribute changes to the gateway', async () => {
      const gw = await gateway('gw-attrs');
      const { client, messages } = await open(gw, ['v1/gateway/attributes']);
      const [one, two] = [unique('attr-a'), unique('attr-b')];
      await publish(client, 'v1/gateway/attributes', { [one]: { fw: '1.10', serial: '0012', cfg: { bands: [1, 3] }, skipped: null }, [two]: { online: true } });
      const [a, b] = [(await byName(one))!, (await byName(two))!];
      expect(await clientAttributes(a.id)).toEqual({ fw: '1.10', serial: '0012', cfg: { bands: [1, 3] } });
      expect(await clientAttributes(b.id)).toEqual({ online: true });

      const set = await t.api<{ delivered: boolean }>('POST', `/api/v1/devices/${a.id}/attributes/shared`, { target: 23, mode: 'eco' });
      expect(set.body.delivered).toBe(true);
      expect((await nextMessage(messages, 'v1/gateway/attributes')).body).toEqual({ device: one, data: { target: 23, mode: 'eco' } });
      const before = messages.length;
      const removed = await t.api<{ delivered: boolean }>('DELETE', `/api/v1/devices/${a.id}/attributes/shared?keys=mode`);
      expect(removed.body.delivered).toBe(true);
      expect((await nextMessage(messages, 'v1/gateway/attributes', before)).body).toEqual({ device: one, data: { deleted: ['mode'] } });
      // server attributes are never sent; a disconnected sub-device gets nothing pushed
      await t.api('POST', `/api/v1/devices/${a.id}/attributes/server`, { note: 'ops' });
      await publish(client, 'v1/gateway/disconnect', { device: one });
      const after = messages.length;
      const offline = await t.api<{ delivered: boolean }>('POST', `/api/v1/devices/${a.id}/attributes/shared`, { target: 24 });
      expect(offline.body.delivered).toBe(false);
      await sleep(300);
      expect(messages.slice(after).filter((m) => m.topic === 'v1/gateway/attributes')).toEqual([]);
    });

    it('answers attribute requests as ThingsBoard does: value, values, per-scope lists', async () => {
      const gw = await gateway('gw-attr-req');
      const { client, messages } = await open(gw, ['v1/gateway/attributes/response']);
      const name = unique('req-a');
      await publish(client, 'v1/gateway/attributes', { [name]: { fw: '2.0', model: 'DG-7' } });
      const d = (await byName(name))!;
      await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 22, schedule: { on: '07:00' } });
      await t.api('POST', `/api/v1/devices/${d.id}/attributes/server`, { secret: 'never for devices' });

      const ask = async (request: Record<string, unknown>) => {
        const from = messages.length;
        await publish(client, 'v1/gateway/attributes/request', request);
        return (await nextMessage(messages, 'v1/gateway/attributes/response', from)).body;
      };
      expect(await ask({ id: 1, device: name, client: true, key: 'fw' })).toEqual({ id: 1, device: name, value: '2.0' });
      expect(await ask({ id: 2, device: name, client: false, key: 'schedule' })).toEqual({ id: 2, device: name, value: { on: '07:00' } });
      expect(await ask({ id: 3, device: name, client: false, keys: ['target', 'schedule', 'absent'] })).toEqual({
        id: 3,
        device: name,
        values: { target: 22, schedule: { on: '07:00' } },
      });
      expect(await ask({ id: 4, device: name, client: true, keys: ['model'] })).toEqual({ id: 4, device: name, values: { model: 'DG-7' } });
      expect(await ask({ id: 5, device: name, client: true, key: 'absent' })).toEqual({ id: 5, device: name });
      expect(await ask({ id: 6, device: name, client: false, key: 'secret' })).toEqual({ id: 6, device: name }); // never the server scope
      expect(await ask({ id: 7, device: name, client: ['fw'], shared: ['target'] })).toEqual({ id: 7, device: name, client: { fw: '2.0' }, shared: { target: 22 } });

      // mosquitto_rr: the same request from an independent client
      const rr = await mosquittoRr(target(gw), {
        topic: 'v1/gateway/attributes/request',
        responseTopic: 'v1/gateway/attributes/response',
        payload: JSON.stringify({ id: 8, device: name, client: true, keys: ['fw', 'model'] }),
      });
      expect(rr.messages, rr.stderr + rr.stdout).toHaveLength(1);
      expect(JSON.parse(rr.messages[0]!.payload)).toEqual({ id: 8, device: name, values: { fw: '2.0', model: 'DG-7' } });
    });

    it('mosquitto_sub receives shared-attribute updates of a sub-device connected through the gateway', async () => {
      const gw = await gateway('gw-attr-sub');
      const name = unique('push-a');
      // mosquitto_rr keeps one connection: it subscribes to the updates, then connects the sub-device
      const created = await mosquittoPub(target(gw), { topic: 'v1/gateway/connect', payload: JSON.stringify({ device: name }) });
      expect(created.code).toBe(0);
      const d = (await byName(name))!;
      const rr = mosquittoRr(target(gw), { topic: 'v1/gateway/connect', responseTopic: 'v1/gateway/attributes', payload: JSON.stringify({ device: name }), waitSeconds: 8 });
      await eventually(async () => ((await connectivity(d.id)).online ? true : undefined));
      const set = await eventually(async () => {
        const res = await t.api<{ delivered: boolean }>('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 30 });
        return res.body.delivered ? res : undefined;
      });
      expect(set.status).toBe(200);
      const result = await rr;
      expect(result.messages, result.stderr + result.stdout).toHaveLength(1);
      expect(JSON.parse(result.messages[0]!.payload)).toEqual({ device: name, data: { target: 30 } });
    });
  });

  describe('RPC through the gateway', () => {
    it('relays a two-way and a one-way command to the sub-device and completes it with the gateway’s answer', async () => {
      const gw = await gateway('gw-rpc');
      const { client, messages } = await open(gw, ['v1/gateway/rpc']);
      const received: unknown[] = [];
      client.on('message', (topic, payload) => {
        if (topic !== 'v1/gateway/rpc') return;
        const command = JSON.parse(payload.toString()) as { device: string; data: { id: number; method: string; params: unknown } };
        received.push(command);
        if (command.data.method !== 'blink') void publish(client, 'v1/gateway/rpc', { device: command.device, id: command.data.id, data: { echo: command.data.params, ok: true } });
      });
      const name = unique('rpc-a');
      await publish(client, 'v1/gateway/connect', { device: name });
      const d = (await byName(name))!;

      const call = await t.api<RpcRecord>('POST', `/api/v1/devices/${d.id}/rpc`, { method: 'setGpio', params: { pin: 2, value: 1 }, timeout: 5000 });
      expect(call.status, JSON.stringify(call.body)).toBe(200);
      expect(call.body).toMatchObject({ status: 'answered', response: { echo: { pin: 2, value: 1 }, ok: true }, responseFormat: 'json' });
      expect(received[0]).toEqual({ device: name, data: { id: call.body.requestId, method: 'setGpio', params: { pin: 2, value: 1 } } });

      const oneWay = await t.api<RpcRecord>('POST', `/api/v1/devices/${d.id}/rpc`, { method: 'blink', params: {}, oneWay: true, timeout: 5000 });
      expect(oneWay.status).toBe(200);
      expect(oneWay.body.status).toBe('delivered');

      // an answer for a command never sent, or for another gateway's device, is refused and explained
      const from = messages.length;
      await publish(client, 'v1/gateway/rpc', { device: name, id: 999_999, data: {} });
      const refused = (await nextMessage(messages, 'v1/devices/me/errors', from)).body as GatewayErrors;
      expect(refused.errors).toEqual([expect.objectContaining({ device: name, reason: 'rpc_unknown' })]);
    });

    it('keeps a persistent command for a disconnected sub-device and delivers it when the gateway connects it again', async () => {
      const gw = await gateway('gw-rpc-persist');
      const { client } = await open(gw, ['v1/gateway/rpc']);
      client.on('message', (topic, payload) => {
        if (topic !== 'v1/gateway/rpc') return;
        const command = JSON.parse(payload.toString()) as { device: string; data: { id: number; params: unknown } };
        void publish(client, 'v1/gateway/rpc', { device: command.device, id: command.data.id, data: 'done' });
      });
      const name = unique('rpc-p');
      await publish(client, 'v1/gateway/connect', { device: name });
      const d = (await byName(name))!;
      await publish(client, 'v1/gateway/disconnect', { device: name });

      const offline = await t.api<{ code: string }>('POST', `/api/v1/devices/${d.id}/rpc`, { method: 'reboot', timeout: 2000 });
      expect(offline.status).toBe(409);
      expect(offline.body.code).toBe('offline');
      const queued = await t.api<RpcRecord>('POST', `/api/v1/devices/${d.id}/rpc`, { method: 'reboot', params: { delay: 5 }, persistent: true, timeout: 10_000 });
      expect(queued.status).toBe(202);
      expect(queued.body.status).toBe('queued');
      await sleep(300);
      expect((await t.api<RpcRecord>('GET', `/api/v1/devices/${d.id}/rpc/${queued.body.id}`)).body.status).toBe('queued');

      await publish(client, 'v1/gateway/connect', { device: name });
      const answered = await eventually(async () => {
        const r = (await t.api<RpcRecord>('GET', `/api/v1/devices/${d.id}/rpc/${queued.body.id}`)).body;
        return r.status === 'answered' ? r : undefined;
      });
      expect(answered).toMatchObject({ response: 'done', responseFormat: 'json', attempts: 1 });
    });

    it('mosquitto: a queued command reaches the gateway once it connects the sub-device, and mosquitto_pub answers it', async () => {
      const gw = await gateway('gw-rpc-mosq');
      const name = unique('rpc-m');
      expect((await mosquittoPub(target(gw), { topic: 'v1/gateway/connect', payload: JSON.stringify({ device: name }) })).code).toBe(0);
      const d = (await byName(name))!;
      const queued = await t.api<RpcRecord>('POST', `/api/v1/devices/${d.id}/rpc`, { method: 'setValve', params: { open: 40 }, persistent: true, timeout: 10_000 });
      expect(queued.status).toBe(202);
      // one connection subscribed to v1/gateway/rpc that connects the sub-device: the command comes
      const rr = await mosquittoRr(target(gw), { topic: 'v1/gateway/connect', responseTopic: 'v1/gateway/rpc', payload: JSON.stringify({ device: name }), waitSeconds: 8 });
      expect(rr.messages, rr.stderr + rr.stdout).toHaveLength(1);
      const command = JSON.parse(rr.messages[0]!.payload) as { device: string; data: { id: number; method: string; params: unknown } };
      expect(command).toEqual({ device: name, data: { id: queued.body.requestId, method: 'setValve', params: { open: 40 } } });
      const delivered = (await t.api<RpcRecord>('GET', `/api/v1/devices/${d.id}/rpc/${queued.body.id}`)).body;
      expect(['delivered', 'sent']).toContain(delivered.status);
      const answer = await mosquittoPub(target(gw), { topic: 'v1/gateway/rpc', payload: JSON.stringify({ device: name, id: command.data.id, data: { open: 40, ok: true } }) });
      expect(answer.code, answer.stderr).toBe(0);
      const done = (await t.api<RpcRecord>('GET', `/api/v1/devices/${d.id}/rpc/${queued.body.id}`)).body;
      expect(done).toMatchObject({ status: 'answered', response: { open: 40, ok: true } });
    });
  });

  describe('refusals', () => {
    it('a device that is not a gateway may not use v1/gateway/…: refused, counted, nothing created', async () => {
      const plain = await t.createDevice({ name: unique('not-gw') });
      const c = await t.connect(plain.accessToken);
      const messages = inbox(c);
      await c.subscribeAsync('v1/devices/me/errors', { qos: 1 });
      const refused = await c.subscribeAsync('v1/gateway/rpc', { qos: 1 }).then(
        () => undefined,
        (err: { packet?: { granted?: number[] } }) => err,
      );
      expect(refused?.packet?.granted).toEqual([128]); // SUBACK failure
      const before = await metric('guanlink_mqtt_refusals_total', 'reason="acl"');
      const ghost = unique('ghost');
      await publish(c, 'v1/gateway/telemetry', { [ghost]: [{ ts: Date.now(), values: { t: 1 } }] });
      const error = (await nextMessage(messages, 'v1/devices/me/errors')).body as GatewayErrors;
      expect(error).toMatchObject({ topic: 'v1/gateway/telemetry', stored: 0, errors: [{ reason: 'topic_not_allowed' }] });
      expect(error.errors[0]!.detail).toMatch(/not a gateway/);
      const viaMosquitto = await mosquittoPub({ port: t.platform.mqttPort, username: plain.accessToken }, { topic: 'v1/gateway/connect', payload: JSON.stringify({ device: ghost }) });
      expect(viaMosquitto.code).toBe(0); // acknowledged, not processed
      expect(await metric('guanlink_mqtt_refusals_total', 'reason="acl"')).toBeGreaterThanOrEqual(before + 2);
      expect(await byName(ghost)).toBeUndefined();
    });

    it('a gateway can never write for a device that is not its own sub-device', async () => {
      const standalone = await t.createDevice({ name: unique('standalone') });
      const other = await gateway('gw-other');
      const othersSub = unique('others-sub');
      expect((await mosquittoPub(target(other), { topic: 'v1/gateway/connect', payload: JSON.stringify({ device: othersSub }) })).code).toBe(0);
      const others = (await byName(othersSub))!;
      const gw = await gateway('gw-intruder');
      const { client, messages } = await open(gw, ['v1/gateway/attributes/response']);
      const own = unique('own');
      const before = await metric('guanlink_rejections_total', 'reason="device_not_owned"');
      const ts = Date.now() - 1000;
      await publish(client, 'v1/gateway/telemetry', {
        [standalone.name]: [{ ts, values: { temperature: 1 } }],
        [othersSub]: [{ ts, values: { temperature: 2 } }],
        [gw.name]: [{ ts, values: { temperature: 3 } }],
        [own]: [{ ts, values: { temperature: 4 } }],
      });
      const error = (await nextMessage(messages, 'v1/devices/me/errors')).body as GatewayErrors;
      expect(error.stored).toBe(1);
      expect(error.errors.map((e) => [e.device, e.reason]).sort()).toEqual(
        [
          [standalone.name, 'device_not_owned'],
          [othersSub, 'device_not_owned'],
          [gw.name, 'device_not_owned'],
        ].sort(),
      );
      expect(await telemetry(standalone.id, 'temperature')).toEqual({ temperature: [] });
      expect(await telemetry(others.id, 'temperature')).toEqual({ temperature: [] });
      expect(await telemetry(gw.id, 'temperature')).toEqual({ temperature: [] });
      expect(await telemetry((await byName(own))!.id, 'temperature')).toEqual({ temperature: [{ ts, value: 4 }] });

      // attributes, connect, disconnect, attribute requests and RPC answers: refused the same way
      let from = messages.length;
      await publish(client, 'v1/gateway/attributes', { [standalone.name]: { fw: 'evil' } });
      expect(((await nextMessage(messages, 'v1/devices/me/errors', from)).body as GatewayErrors).errors).toEqual([expect.objectContaining({ device: standalone.name, reason: 'device_not_owned' })]);
      expect(await clientAttributes(standalone.id)).toEqual({});
      from = messages.length;
      await publish(client, 'v1/gateway/connect', { device: othersSub });
      expect(((await nextMessage(messages, 'v1/devices/me/errors', from)).body as GatewayErrors).errors[0]).toMatchObject({ device: othersSub, reason: 'device_not_owned' });
      await t.api('POST', `/api/v1/devices/${others.id}/attributes/shared`, { secret: 1 });
      from = messages.length;
      await publish(client, 'v1/gateway/attributes/request', { id: 1, device: othersSub, client: false, key: 'secret' });
      expect(((await nextMessage(messages, 'v1/devices/me/errors', from)).body as GatewayErrors).errors[0]).toMatchObject({ device: othersSub, reason: 'device_not_owned' });
      from = messages.length;
      await publish(client, 'v1/gateway/rpc', { device: standalone.name, id: 1, data: {} });
      expect(((await nextMessage(messages, 'v1/devices/me/errors', from)).body as GatewayErrors).errors[0]).toMatchObject({ device: standalone.name, reason: 'device_not_owned' });
      expect(messages.filter((m) => m.topic === 'v1/gateway/attributes/response')).toEqual([]);

      expect(await byName(standalone.name)).toMatchObject({ gatewayId: null });
      expect(await byName(othersSub)).toMatchObject({ gatewayId: other.id });
      expect(await metric('guanlink_rejections_total', 'reason="device_not_owned"')).toBeGreaterThanOrEqual(before + 6);
      const kept = await eventually(async () => {
        const { rows } = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM rejected_messages WHERE device_id = $1 AND 'device_not_owned' = ANY(reasons)`, [gw.id]);
        return rows[0]!.n >= 6 ? rows[0]!.n : undefined;
      });
      expect(kept).toBeGreaterThanOrEqual(6);
    });

    it('refuses an unknown device type, clearly, and creates nothing', async () => {
      const gw = await gateway('gw-type');
      const { client, messages } = await open(gw);
      const name = unique('typo');
      const before = await metric('guanlink_rejections_total', 'reason="unknown_type"');
      await publish(client, 'v1/gateway/connect', { device: name, type: 'river-levle-station' });
      const error = (await nextMessage(messages, 'v1/devices/me/errors')).body as GatewayErrors;
      expect(error).toMatchObject({ topic: 'v1/gateway/connect', stored: 0, errors: [{ device: name, reason: 'unknown_type' }] });
      expect(error.errors[0]!.detail).toMatch(/river-levle-station.*does not exist; known types: .*river-level-station/);
      expect(await byName(name)).toBeUndefined();
      expect(await metric('guanlink_rejections_total', 'reason="unknown_type"')).toBe(before + 1);
      // mosquitto_rr: the refusal arrives on the errors topic
      const rr = await mosquittoRr(target(gw), { topic: 'v1/gateway/connect', responseTopic: 'v1/devices/me/errors', payload: JSON.stringify({ device: name, type: 'nope' }) });
      expect(JSON.parse(rr.messages[0]!.payload)).toMatchObject({ errors: [{ device: name, reason: 'unknown_type' }] });
      expect(await byName(name)).toBeUndefined();
    });

    it(`caps sub-devices per gateway (${MAX_DEVICES}) and devices per message (${MAX_PER_MESSAGE})`, async () => {
      const gw = await gateway('gw-limit');
      const { client, messages } = await open(gw);
      const names = Array.from({ length: MAX_DEVICES + 1 }, () => unique('lim'));
      // one message naming too many devices: refused whole, nothing created
      await publish(client, 'v1/gateway/telemetry', Object.fromEntries(names.slice(0, MAX_PER_MESSAGE + 1).map((d) => [d, [{ v: 1 }]])));
      const whole = (await nextMessage(messages, 'v1/devices/me/errors')).body as GatewayErrors;
      expect(whole).toMatchObject({ stored: 0, errors: [{ reason: 'too_many_values' }] });
      expect(whole.errors[0]!.detail).toMatch(/GATEWAY_MAX_DEVICES_PER_MESSAGE/);
      for (const d of names) expect(await byName(d)).toBeUndefined();

      // up to the limit, then refused
      await publish(client, 'v1/gateway/telemetry', Object.fromEntries(names.slice(0, MAX_PER_MESSAGE).map((d) => [d, [{ v: 1 }]])));
      await publish(client, 'v1/gateway/connect', { device: names[MAX_PER_MESSAGE] });
      expect((await byName(names[MAX_DEVICES - 1]!))?.gatewayId).toBe(gw.id);
      const before = await metric('guanlink_rejections_total', 'reason="too_many_devices"');
      const from = messages.length;
      await publish(client, 'v1/gateway/telemetry', { [names[0]!]: [{ v: 2 }], [names[MAX_DEVICES]!]: [{ v: 2 }] });
      const over = (await nextMessage(messages, 'v1/devices/me/errors', from)).body as GatewayErrors;
      expect(over).toMatchObject({ stored: 1, errors: [{ device: names[MAX_DEVICES], reason: 'too_many_devices' }] });
      expect(over.errors[0]!.detail).toMatch(new RegExp(`limit is ${MAX_DEVICES}`));
      expect(await byName(names[MAX_DEVICES]!)).toBeUndefined();
      const rr = await mosquittoRr(target(gw), { topic: 'v1/gateway/connect', responseTopic: 'v1/devices/me/errors', payload: JSON.stringify({ device: names[MAX_DEVICES] }) });
      expect(JSON.parse(rr.messages[0]!.payload)).toMatchObject({ errors: [{ device: names[MAX_DEVICES], reason: 'too_many_devices' }] });
      expect(await byName(names[MAX_DEVICES]!)).toBeUndefined();
      expect(await metric('guanlink_rejections_total', 'reason="too_many_devices"')).toBe(before + 2);
      // existing sub-devices carry on
      expect((await telemetry((await byName(names[0]!))!.id, 'v')).v!.map((p) => p.value)).toContain(2);
    });

    it('explains malformed gateway messages on the errors topic and acknowledges them', async () => {
      const gw = await gateway('gw-malformed');
      const { client, messages } = await open(gw);
      const refusal = async (topic: string, payload: string) => {
        const from = messages.length;
        await client.publishAsync(topic, payload, { qos: 1 });
        return ((await nextMessage(messages, 'v1/devices/me/errors', from)).body as GatewayErrors).errors[0]!;
      };
      expect((await refusal('v1/gateway/telemetry', '{oops')).reason).toBe('invalid_json');
      expect((await refusal('v1/gateway/telemetry', '[{"a":1}]')).reason).toBe('invalid_shape');
      expect(await refusal('v1/gateway/telemetry', '{"Dev": 42}')).toMatchObject({ device: 'Dev', reason: 'invalid_shape' });
      expect(await refusal('v1/gateway/attributes', '{"Dev": [1]}')).toMatchObject({ device: 'Dev', reason: 'invalid_shape' });
      expect((await refusal('v1/gateway/connect', '{"type": "generic"}')).reason).toBe('invalid_shape');
      expect((await refusal('v1/gateway/connect', JSON.stringify({ device: 'bad\u0001name' }))).reason).toBe('invalid_device_name');
      expect((await refusal('v1/gateway/attributes/request', '{"device": "Dev", "key": "a"}')).reason).toBe('invalid_shape');
      expect((await refusal('v1/gateway/rpc', '{"device": "Dev", "id": 1}')).reason).toBe('invalid_shape');
      expect((await refusal('v1/gateway/telemetry', JSON.stringify({ Dev: [{ pad: 'x'.repeat(70_000) }] }))).reason).toBe('payload_too_large');
      expect(await byName('Dev')).toBeUndefined();
    });
  });
});
