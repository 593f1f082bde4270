import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type IClientOptions, type IConnackPacket, type MqttClient } from 'mqtt';
import mqttPacket, { type Packet } from 'mqtt-packet';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPool } from '../support/database.ts';
import { inbox, nextMessage } from '../support/inbox.ts';
import { mosquittoPub, mosquittoRr, mosquittoSub } from '../support/mosquitto-clients.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';
import { selfSignedCertificate } from '../support/tls.ts';

/**
 * MQTT 5.0 beside 3.1.1 on the same ports (broker/mqtt5/): real MQTT.js (protocolVersion 5) and
 * Debian's mosquitto clients (-V mqttv5) over TCP, WebSocket and TLS; ThingsBoard's v5 reason
 * codes; the same guarantees as 3.1.1 (PUBACK after commit, ACL, one session per device); and
 * malformed v5 input answered with its reason code and a closed connection.
 */

const TELEMETRY = 'v1/devices/me/telemetry';
const MAX_PACKET_BYTES = 200_000;

interface Connected {
  client: MqttClient;
  connack: IConnackPacket;
}

/** An MQTT.js v5 client and its CONNACK; rejects with the CONNACK's reason code when refused. */
function connect5(url: string, options: IClientOptions): Promise<Connected> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(url, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, ...options });
    client.once('connect', (connack) => resolve({ client, connack }));
    client.once('error', (err) => {
      client.end(true);
      reject(err);
    });
  });
}

/** A raw v5 connection: packets written as bytes, every packet the server sends parsed. */
async function rawClient(port: number) {
  const socket = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  const received: Packet[] = [];
  const parser = mqttPacket.parser({ protocolVersion: 5 });
  parser.on('packet', (p: Packet) => received.push(p));
  socket.on('data', (b) => parser.parse(b));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => {});
  return {
    received,
    closed,
    send: (packet: Packet) => socket.write(mqttPacket.generate(packet, { protocolVersion: 5 })),
    sendBytes: (bytes: Buffer) => socket.write(bytes),
    next: (cmd: string) => eventually(() => received.find((p) => p.cmd === cmd)),
    destroy: () => socket.destroy(),
  };
}

describe('MQTT 5.0', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let dir: string;
  let ca: Buffer;
  let device: CreatedDevice;
  const clients: MqttClient[] = [];
  const open = async (url: string, options: IClientOptions) => {
    const c = await connect5(url, options);
    clients.push(c.client);
    return c;
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-mqtt5-'));
    const tls = await selfSignedCertificate(dir);
    ca = tls.ca;
    t = await startTestPlatform({ mqttTlsCert: tls.cert, mqttTlsKey: tls.key, mqttsPort: 0, maxPacketBytes: MAX_PACKET_BYTES });
    db = testPool(t.databaseUrl, 2);
    device = await t.createDevice({ name: 'mqtt5-meter', type: 'generic' });
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
    await db?.end();
    await t?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('answers CONNECT with CONNACK 0 and its properties; assigns a client id when the client sent none', async () => {
    const { client, connack } = await open(t.mqttUrl, { username: device.accessToken, clientId: '' });
    expect(connack.reasonCode).toBe(0);
    expect(connack.sessionPresent).toBe(false);
    expect(connack.properties).toMatchObject({ maximumPacketSize: MAX_PACKET_BYTES, receiveMaximum: 1024, topicAliasMaximum: 32, maximumQoS: 1, retainAvailable: false, sharedSubscriptionAvailable: false });
    expect(connack.properties!.assignedClientIdentifier).toMatch(/^guanlink-[0-9a-f]{16}$/);
    await client.endAsync();
    // A session kept after the connection is not offered: Session Expiry Interval 0 in the CONNACK.
    const kept = await open(t.mqttUrl, { username: device.accessToken, clientId: 'kept', clean: false, properties: { sessionExpiryInterval: 3600 } });
    expect(kept.connack.properties!.sessionExpiryInterval).toBe(0);
    expect(kept.connack.properties!.assignedClientIdentifier).toBeUndefined();
    await kept.client.endAsync();
  });

  it('stores QoS 1 telemetry before its PUBACK (reason 0), over TCP, WebSocket and TLS', async () => {
    const d = await t.createDevice({ name: 'mqtt5-transports' });
    const urls = [t.mqttUrl, t.wsUrl, `mqtts://localhost:${t.platform.mqttsPort}`];
    for (const [i, url] of urls.entries()) {
      const { client } = await open(url, { username: d.accessToken, ca });
      const pubacks: Packet[] = [];
      client.on('packetreceive', (p) => p.cmd === 'puback' && pubacks.push(p));
      await client.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.now() - 1000 * (10 - i), values: { v5: i } }), { qos: 1 });
      expect(pubacks).toMatchObject([{ cmd: 'puback', reasonCode: 0 }]);
      // Acknowledged only after commit: stored by the time the PUBACK arrived.
      expect((await storedReadings(db, d.id)).map((r) => r.values.v5)).toContain(i);
      await client.endAsync();
    }
  });

  it('refuses wrong credentials with the v5 codes ThingsBoard sends (0x86, 0x85, 0x87)', async () => {
    await expect(connect5(t.mqttUrl, { username: 'no-such-token' })).rejects.toMatchObject({ code: 0x86 });
    await expect(connect5(t.mqttUrl, { clientId: 'firmware-without-token' })).rejects.toMatchObject({ code: 0x85 });
    await expect(connect5(t.mqttUrl, { clientId: '' })).rejects.toMatchObject({ code: 0x87 });
    // Enhanced authentication is not supported: refused before the session, with the CONNACK (0x8C).
    await expect(connect5(t.mqttUrl, { username: device.accessToken, properties: { authenticationMethod: 'SCRAM-SHA-1' } })).rejects.toMatchObject({ code: 0x8c });
  });

  it('answers a publish to an unknown topic with PUBACK 0x90 and keeps the connection', async () => {
    const { client } = await open(t.mqttUrl, { username: device.accessToken });
    await expect(client.publishAsync('v1/devices/me/unknown', '{"a":1}', { qos: 1 })).rejects.toMatchObject({ code: 0x90 });
    expect(client.connected).toBe(true);
    // The next (supported) publish is acknowledged with success on the same connection.
    await client.publishAsync(TELEMETRY, '{"after_unknown":1}', { qos: 1 });
    expect((await storedReadings(db, device.id)).some((r) => r.values.after_unknown === 1)).toBe(true);
    await client.endAsync();
  });

  it('answers an unsupported subscription with SUBACK 0x8F, a shared one with 0x9E, and grants the others', async () => {
    const { client } = await open(t.mqttUrl, { username: device.accessToken });
    // MQTT.js rejects a SUBACK with a failure code; its packet holds every filter's code, in order.
    const failed = await client.subscribeAsync({ 'v1/devices/me/attributes': { qos: 1 }, 'city/#': { qos: 1 }, '$share/g/v1/devices/me/attributes': { qos: 0 } }).then(
      () => undefined,
      (err: { packet?: { granted: number[] } }) => err.packet?.granted,
    );
    expect(failed).toEqual([1, 0x8f, 0x9e]);
    expect(client.connected).toBe(true);
    const unsub = (await client.unsubscribeAsync(['v1/devices/me/attributes', 'city/#'])) as { granted?: number[] } | undefined;
    expect(unsub?.granted).toEqual([0, 0]); // one reason code per filter (MQTT 5.0 §3.11.3)
    await client.endAsync();
  });

  it('resolves topic aliases set by the client', async () => {
    const d = await t.createDevice({ name: 'mqtt5-alias' });
    const { client } = await open(t.mqttUrl, { username: d.accessToken });
    await client.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.now() - 2000, values: { alias: 1 } }), { qos: 1, properties: { topicAlias: 7 } });
    await client.publishAsync('', JSON.stringify({ ts: Date.now() - 1000, values: { alias: 2 } }), { qos: 1, properties: { topicAlias: 7 } });
    expect((await storedReadings(db, d.id)).map((r) => r.values.alias)).toEqual([1, 2]);
    await client.endAsync();
  });

  it('tells the old v5 client DISCONNECT 0x8E when a new connection takes its session over', async () => {
    const d = await t.createDevice({ name: 'mqtt5-takeover' });
    const first = await open(t.mqttUrl, { username: d.accessToken });
    const disconnected = new Promise<number | undefined>((resolve) => first.client.once('disconnect', (p) => resolve(p.reasonCode)));
    const second = await open(t.mqttUrl, { username: d.accessToken });
    expect(await disconnected).toBe(0x8e);
    await second.client.publishAsync(TELEMETRY, '{"taken":1}', { qos: 1 });
    await second.client.endAsync();
  });

  it('round-trips a server-side RPC and an attributes request', async () => {
    const d = await t.createDevice({ name: 'mqtt5-rpc' });
    const { client } = await open(t.mqttUrl, { username: d.accessToken });
    const messages = inbox(client);
    await client.subscribeAsync(['v1/devices/me/rpc/request/+', 'v1/devices/me/attributes/response/+'], { qos: 1 });
    client.on('message', (topic, payload) => {
      const m = /^v1\/devices\/me\/rpc\/request\/(\d+)$/.exec(topic);
      if (m) void client.publishAsync(`v1/devices/me/rpc/response/${m[1]}`, JSON.stringify({ echo: JSON.parse(payload.toString()).params }), { qos: 1 });
    });
    const res = await t.api<{ status: string; response: unknown }>('POST', `/api/v1/devices/${d.id}/rpc`, { method: 'setGpio', params: { pin: 4 }, timeout: 5000 });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'answered', response: { echo: { pin: 4 } } });

    await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { target: 23 });
    await client.publishAsync('v1/devices/me/attributes', '{"fw":"5.0"}', { qos: 1 });
    await client.publishAsync('v1/devices/me/attributes/request/9', '{"clientKeys":"fw","sharedKeys":"target"}', { qos: 1 });
    expect((await nextMessage(messages, 'v1/devices/me/attributes/response/9')).body).toEqual({ client: { fw: '5.0' }, shared: { target: 23 } });
    await client.endAsync();
  });

  it('serves a gateway: its sub-devices connect and their telemetry is stored before the PUBACK', async () => {
    const gw = (await t.api<CreatedDevice>('POST', '/api/v1/devices', { name: 'mqtt5-gateway', isGateway: true })).body;
    const { client } = await open(t.mqttUrl, { username: gw.accessToken });
    await client.publishAsync('v1/gateway/connect', JSON.stringify({ device: 'mqtt5-pump' }), { qos: 1 });
    await client.publishAsync('v1/gateway/telemetry', JSON.stringify({ 'mqtt5-pump': [{ ts: Date.now() - 1000, values: { rpm: 1200 } }] }), { qos: 1 });
    const { body } = await t.api<{ items: { id: number; gatewayId: number | null }[] }>('GET', '/api/v1/devices?namePrefix=mqtt5-pump&limit=10');
    expect(body.items).toMatchObject([{ gatewayId: gw.id }]);
    expect((await storedReadings(db, body.items[0]!.id)).map((r) => r.values.rpm)).toEqual([1200]);
    await client.endAsync();
  });

  it('serves mosquitto_pub, mosquitto_sub and mosquitto_rr with -V mqttv5', async () => {
    const d = await t.createDevice({ name: 'mqtt5-mosquitto' });
    const target = { port: t.platform.mqttPort, username: d.accessToken, protocol: 'mqttv5' as const };
    const pub = await mosquittoPub(target, { topic: TELEMETRY, payload: '{"mosq5":1}' });
    expect(pub.code, pub.stderr).toBe(0);
    expect((await storedReadings(db, d.id)).map((r) => r.values.mosq5)).toEqual([1]);

    const refused = await mosquittoPub({ ...target, username: 'wrong-token' }, { topic: TELEMETRY, payload: '{}' });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/Bad user name or password/i);

    await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { mode: 'eco' });
    const rr = await mosquittoRr(target, { topic: 'v1/devices/me/attributes/request/3', responseTopic: 'v1/devices/me/attributes/response/3', payload: '{"sharedKeys":"mode"}' });
    expect(rr.code, rr.stderr).toBe(0);
    expect(rr.messages.map((m) => JSON.parse(m.payload))).toEqual([{ shared: { mode: 'eco' } }]);

    // mosquitto_sub gets a shared-attribute update pushed by the server (another connection would take the session over: -C 1, then it exits).
    const sub = mosquittoSub({ ...target, clientId: 'mosq5-sub' }, { topics: ['v1/devices/me/attributes'], count: 1, waitSeconds: 5 });
    await sub.subscribed;
    await t.api('POST', `/api/v1/devices/${d.id}/attributes/shared`, { mode: 'boost' });
    const got = await sub.done;
    expect(got.code, got.stderr).toBe(0);
    expect(got.messages.map((m) => JSON.parse(m.payload))).toEqual([{ mode: 'boost' }]);
  });

  describe('malformed v5 input: the reason code, the connection closed, others unaffected', () => {
    const connectPacket = (token: string): Packet => ({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'raw5', keepalive: 30, username: token });

    const violation = async (packets: (Packet | Buffer)[], reasonCode: number) => {
      const d = await t.createDevice({ name: `mqtt5-bad-${reasonCode}-${Math.random().toString(36).slice(2, 8)}` });
      const bystander = await open(t.mqttUrl, { username: device.accessToken });
      const raw = await rawClient(t.platform.mqttPort);
      raw.send(connectPacket(d.accessToken));
      expect(await raw.next('connack')).toMatchObject({ reasonCode: 0 });
      for (const p of packets) Buffer.isBuffer(p) ? raw.sendBytes(p) : raw.send(p);
      expect(await raw.next('disconnect')).toMatchObject({ reasonCode });
      await raw.closed;
      expect(raw.received.some((p) => p.cmd === 'puback')).toBe(false);
      expect(await storedReadings(db, d.id)).toEqual([]);
      // Another client carries on.
      await bystander.client.publishAsync(TELEMETRY, '{"bystander":1}', { qos: 1 });
      await bystander.client.endAsync();
    };

    it('topic alias 0 → 0x94', () => violation([{ cmd: 'publish', topic: TELEMETRY, payload: '{"x":1}', qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 0 } }], 0x94));
    it('topic alias above the maximum → 0x94', () =>
      violation([{ cmd: 'publish', topic: TELEMETRY, payload: '{"x":1}', qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 33 } }], 0x94));
    it('an alias never set, with an empty topic → 0x82', () => violation([{ cmd: 'publish', topic: '', payload: '{"x":1}', qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 5 } }], 0x82));
    it('an unknown property identifier → 0x81', () => {
      // PUBLISH QoS 1, topic "a/b", packet id 1, properties: length 2, identifier 0x7F (none such), then a byte.
      const topic = Buffer.from('a/b');
      const body = Buffer.concat([Buffer.from([0, topic.length]), topic, Buffer.from([0, 1, 2, 0x7f, 0]), Buffer.from('{}')]);
      return violation([Buffer.concat([Buffer.from([0x32, body.length]), body])], 0x81);
    });
    it('QoS 2 (above the Maximum QoS) → 0x9B', () => violation([{ cmd: 'publish', topic: TELEMETRY, payload: '{"x":1}', qos: 2, messageId: 1, retain: false, dup: false }], 0x9b));
    it('a packet above the maximum packet size → 0x95', () =>
      violation([{ cmd: 'publish', topic: TELEMETRY, payload: Buffer.alloc(MAX_PACKET_BYTES + 10, 0x20), qos: 1, messageId: 1, retain: false, dup: false }], 0x95));
  });

  it('leaves MQTT 3.1.1 clients as they were (plain PUBACK for an unknown topic, CONNACK 5 for a wrong token)', async () => {
    const c = await t.connect(device.accessToken);
    await c.publishAsync('v1/devices/me/unknown', '{}', { qos: 1 });
    expect(c.connected).toBe(true);
    await c.endAsync();
    const refused = await mosquittoPub({ port: t.platform.mqttPort, username: 'wrong-token' }, { topic: TELEMETRY, payload: '{}' });
    expect(refused.code).toBe(5);
  });
});

describe('MQTT 5.0: the server ends a session with a reason', () => {
  let t: TestPlatform | undefined;
  let db: pg.Pool | undefined;

  beforeAll(async () => {
    // 3 publishes a minute (the refill is negligible during the test); 2 MQTT sessions at most.
    t = await startTestPlatform({ devicePublishRate: '3:60', maxConnections: 2 });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  /** The reason code of the DISCONNECT a raw v5 client gets, with every PUBACK it got before. */
  const session = async (token: string, keepalive = 30) => {
    const raw = await rawClient(t!.platform.mqttPort);
    raw.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'raw5', keepalive, username: token });
    expect(await raw.next('connack')).toMatchObject({ reasonCode: 0 });
    return raw;
  };

  it('beyond the connection budget: CONNACK 0x89 (server busy)', async () => {
    const held = [await session((await t!.createDevice({ name: 'mqtt5-budget-1' })).accessToken), await session((await t!.createDevice({ name: 'mqtt5-budget-2' })).accessToken)];
    const d = await t!.createDevice({ name: 'mqtt5-budget-3' });
    await expect(connect5(t!.mqttUrl, { username: d.accessToken })).rejects.toMatchObject({ code: 0x89 });
    for (const raw of held) raw.destroy();
    await Promise.all(held.map((raw) => raw.closed));
    // Room again once they are gone.
    const admitted = await eventually(() => connect5(t!.mqttUrl, { username: d.accessToken }).catch(() => undefined));
    await admitted.client.endAsync();
  });

  it('over the publish rate: the accepted publishes are acknowledged, then DISCONNECT 0x96 without PUBACK (the device resends)', async () => {
    const d = await t!.createDevice({ name: 'mqtt5-rate' });
    const raw = await session(d.accessToken);
    for (let id = 1; id <= 4; id++) raw.send({ cmd: 'publish', topic: TELEMETRY, payload: JSON.stringify({ ts: Date.now() - 10_000 + id, values: { n: id } }), qos: 1, messageId: id, retain: false, dup: false });
    expect(await raw.next('disconnect')).toMatchObject({ reasonCode: 0x96 });
    await raw.closed;
    expect(raw.received.filter((p) => p.cmd === 'puback').map((p) => [p.messageId, (p as { reasonCode?: number }).reasonCode])).toEqual([
      [1, 0],
      [2, 0],
      [3, 0],
    ]);
    expect((await storedReadings(db!, d.id)).map((r) => r.values.n)).toEqual([1, 2, 3]);
  });

  it('a device deleted through REST: DISCONNECT 0x98 (administrative action)', async () => {
    const d = await t!.createDevice({ name: 'mqtt5-deleted' });
    const raw = await session(d.accessToken);
    expect((await t!.api('DELETE', `/api/v1/devices/${d.id}`)).status).toBe(204);
    expect(await raw.next('disconnect')).toMatchObject({ reasonCode: 0x98 });
    await raw.closed;
  });

  it('a client silent beyond 1.5 × its keep alive: DISCONNECT 0x8D', async () => {
    const d = await t!.createDevice({ name: 'mqtt5-silent' });
    const raw = await session(d.accessToken, 1);
    expect(await raw.next('disconnect')).toMatchObject({ reasonCode: 0x8d });
    await raw.closed;
  });

  it('a client DISCONNECT gets no DISCONNECT back; the server shutting down sends 0x8B', async () => {
    const d = await t!.createDevice({ name: 'mqtt5-shutdown' });
    const leaving = await session(d.accessToken);
    leaving.send({ cmd: 'disconnect', reasonCode: 0 });
    await leaving.closed;
    expect(leaving.received.map((p) => p.cmd)).toEqual(['connack']);

    const staying = await session(d.accessToken);
    await db!.end();
    db = undefined;
    const stopped = t!.stop();
    t = undefined;
    expect(await staying.next('disconnect')).toMatchObject({ reasonCode: 0x8b });
    await staying.closed;
    await stopped;
  });
});
