import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPool } from '../support/database.ts';
import { runMosquitto } from '../support/mosquitto.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';

/**
 * Item 10: maximum payload size, maximum connections and per-device publish rate. Each refusal is
 * explained (to the device where MQTT allows it), logged, counted in /metrics, and leaves every
 * other device alone. Each case runs with mqtt.js and with Debian's mosquitto clients.
 */

async function metric(t: TestPlatform, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

type ErrorsMessage = { topic: string; stored: number; errors: { reason: string; detail: string }[] };

function mosquittoArgs(t: TestPlatform, token: string, clientId?: string): string[] {
  return ['-h', '127.0.0.1', '-p', String(t.platform.mqttPort), '-V', 'mqttv311', '-u', token, ...(clientId ? ['-i', clientId] : [])];
}

/** A JSON telemetry payload of exactly `bytes` bytes. */
function payloadOfSize(bytes: number, ts: number): string {
  const head = JSON.stringify({ ts, values: { a: 1 }, pad: '' });
  return JSON.stringify({ ts, values: { a: 1 }, pad: 'x'.repeat(bytes - head.length) });
}

/** The errors a device is told about on v1/devices/me/errors. */
async function errorsOf(client: MqttClient): Promise<ErrorsMessage[]> {
  const messages: ErrorsMessage[] = [];
  client.on('message', (topic, payload) => topic === 'v1/devices/me/errors' && messages.push(JSON.parse(payload.toString())));
  await client.subscribeAsync('v1/devices/me/errors', { qos: 1 });
  return messages;
}

describe('limits: payload size (defaults: INGEST_MAX_PAYLOAD_BYTES 64 KiB, MQTT_MAX_PACKET_BYTES 1 MiB)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let tmp: string;
  const T0 = Date.UTC(2026, 10, 3);

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
    tmp = await mkdtemp(path.join(os.tmpdir(), 'guanlink-limits-'));
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
    if (tmp) await rm(tmp, { recursive: true, force: true });
  });

  it('mqtt.js: 64 KiB is accepted, one byte more is refused (payload_too_large) and acknowledged; the connection stays; others unaffected', async () => {
    const big = await t.createDevice({ name: 'big-talker' });
    const other = await t.createDevice({ name: 'bystander' });
    const c = await t.connect(big.accessToken);
    const o = await t.connect(other.accessToken);
    const errors = await errorsOf(c);
    const before = await metric(t, 'guanlink_rejections_total', 'reason="payload_too_large"');

    await c.publishAsync('v1/devices/me/telemetry', payloadOfSize(65_536, T0), { qos: 1 });
    await c.publishAsync('v1/devices/me/telemetry', payloadOfSize(65_537, T0 + 1), { qos: 1 }); // acknowledged: the device must not resend it forever
    const refusal = await eventually(() => errors[0]);
    expect(refusal.errors[0]!.reason).toBe('payload_too_large');
    expect(refusal.errors[0]!.detail).toMatch(/65536/);
    expect(c.connected).toBe(true);
    await c.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: T0 + 2, values: { a: 3 } }), { qos: 1 });
    await o.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: T0, values: { b: 1 } }), { qos: 1 });

    expect((await storedReadings(db, big.id)).map((r) => new Date(r.ts).getTime())).toEqual([T0, T0 + 2]);
    expect((await storedReadings(db, other.id)).map((r) => r.values)).toEqual([{ b: 1 }]);
    expect(await metric(t, 'guanlink_rejections_total', 'reason="payload_too_large"')).toBe(before + 1);
    const kept = await eventually(async () => (await db.query(`SELECT payload_size FROM rejected_messages WHERE device_id = $1`, [big.id])).rows[0]);
    expect(kept.payload_size).toBe(65_537);
  });

  it('mosquitto_pub: oversized messages are refused and acknowledged on one connection that stays open', async () => {
    const d = await t.createDevice({ name: 'mosq-big-talker' });
    const file = path.join(tmp, 'big.json');
    await writeFile(file, payloadOfSize(70_000, T0));
    const before = await metric(t, 'guanlink_rejections_total', 'reason="payload_too_large"');
    // Two oversized publishes over the same connection (--repeat): both acknowledged, then a clean DISCONNECT.
    const r = await runMosquitto('mosquitto_pub', [...mosquittoArgs(t, d.accessToken, 'mosq-big'), '-d', '-q', '1', '-t', 'v1/devices/me/telemetry', '-f', file, '--repeat', '2']);
    expect(r.code).toBe(0);
    expect(r.stdout.match(/received PUBACK/g)).toHaveLength(2);
    expect(r.stdout.match(/sending CONNECT/g)).toHaveLength(1);
    expect(await metric(t, 'guanlink_rejections_total', 'reason="payload_too_large"')).toBe(before + 2);
    const events = await eventually(async () => {
      const e = (await t.api<{ event: string; reason: string | null }[]>('GET', `/api/v1/devices/${d.id}/events`)).body;
      return e.length === 2 ? e : undefined;
    });
    expect(events.map((e) => [e.event, e.reason])).toEqual([
      ['disconnect', 'client_disconnect'],
      ['connect', null],
    ]);
    // A payload at the limit passes with mosquitto_pub too.
    await writeFile(file, payloadOfSize(65_536, T0 + 5));
    expect((await runMosquitto('mosquitto_pub', [...mosquittoArgs(t, d.accessToken), '-q', '1', '-t', 'v1/devices/me/telemetry', '-f', file])).code).toBe(0);
    expect((await storedReadings(db, d.id)).map((r) => new Date(r.ts).getTime())).toEqual([T0 + 5]);
  });

  it('a packet over MQTT_MAX_PACKET_BYTES closes the connection before its body is read (mqtt.js and mosquitto_pub)', async () => {
    const d = await t.createDevice({ name: 'huge-packets' });
    const other = await t.createDevice({ name: 'huge-bystander' });
    const o = await t.connect(other.accessToken);
    const before = await metric(t, 'guanlink_mqtt_refusals_total', 'reason="packet_too_large"');

    const c = await t.connect(d.accessToken);
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    let acked = false;
    c.publish('v1/devices/me/telemetry', Buffer.alloc(1_100_000, 0x20), { qos: 1 }, (err) => (acked = !err));
    await closed;
    expect(acked).toBe(false);

    const file = path.join(tmp, 'huge.json');
    await writeFile(file, Buffer.alloc(1_100_000, 0x20));
    const r = await runMosquitto('mosquitto_pub', [...mosquittoArgs(t, d.accessToken), '-q', '1', '-t', 'v1/devices/me/telemetry', '-f', file]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/connection was lost/i);

    expect(await metric(t, 'guanlink_mqtt_refusals_total', 'reason="packet_too_large"')).toBe(before + 2);
    await o.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: T0, values: { ok: 1 } }), { qos: 1 });
    expect(o.connected).toBe(true);
    expect((await storedReadings(db, other.id)).length).toBe(1);
  });
});

describe('limits: connections (MQTT_MAX_CONNECTIONS)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  const LIMIT = 3;

  beforeAll(async () => {
    t = await startTestPlatform({ maxConnections: LIMIT });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('answers CONNACK 3 (server unavailable) beyond the limit while the connected devices keep working', async () => {
    const devices: CreatedDevice[] = [];
    for (let i = 0; i < LIMIT + 1; i++) devices.push(await t.createDevice({ name: `conn-${i}` }));
    const clients = [];
    for (let i = 0; i < LIMIT; i++) clients.push(await t.connect(devices[i]!.accessToken));
    const before = await metric(t, 'guanlink_mqtt_refusals_total', 'reason="max_connections"');

    const refused = (await t.connect(devices[LIMIT]!.accessToken).catch((err: unknown) => err)) as { code?: number; message?: string };
    expect(refused.code).toBe(3);
    const r = await runMosquitto('mosquitto_pub', [...mosquittoArgs(t, devices[LIMIT]!.accessToken), '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', '{"x": 1}']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Connection Refused: broker unavailable/);
    expect(await metric(t, 'guanlink_mqtt_refusals_total', 'reason="max_connections"')).toBe(before + 2);

    // Those connected are not affected.
    for (const [i, c] of clients.entries()) {
      await c.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.UTC(2026, 10, 4), values: { n: i } }), { qos: 1 });
      expect((await storedReadings(db, devices[i]!.id)).length).toBe(1);
    }
    // A place freed is a place taken.
    await clients[0]!.endAsync();
    await eventually(async () => ((await t.api<{ online: boolean }>('GET', `/api/v1/devices/${devices[0]!.id}/connectivity`)).body.online ? undefined : true));
    const late = await runMosquitto('mosquitto_pub', [...mosquittoArgs(t, devices[LIMIT]!.accessToken), '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', '{"x": 2}']);
    expect(late.code).toBe(0);
  });
});

describe('limits: per-device publish rate (DEVICE_PUBLISH_RATE)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  const T0 = Date.UTC(2026, 10, 5);

  beforeAll(async () => {
    t = await startTestPlatform({ devicePublishRate: '5:60' }); // 5 a minute: the refill is negligible during the test
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  const connectivity = async (id: number) =>
    (await t.api<{ online: boolean; lastDisconnect: { reason: string } | null }>('GET', `/api/v1/devices/${id}/connectivity`)).body;

  it('mqtt.js: beyond the limit the device’s connection is closed without PUBACK, with rate_limited on its errors topic; others unaffected', async () => {
    const fast = await t.createDevice({ name: 'chatterbox' });
    const calm = await t.createDevice({ name: 'calm' });
    const c = await t.connect(fast.accessToken);
    const o = await t.connect(calm.accessToken);
    const errors = await errorsOf(c);
    const before = await metric(t, 'guanlink_mqtt_refusals_total', 'reason="rate_limited"');
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));

    // Six at once: the five within the limit are committed and acknowledged, the sixth is not.
    const acked: number[] = [];
    for (let i = 0; i < 6; i++) c.publish('v1/devices/me/telemetry', JSON.stringify({ ts: T0 + i, values: { n: i } }), { qos: 1 }, (err) => !err && acked.push(i));
    await closed;
    expect(acked.sort()).toEqual([0, 1, 2, 3, 4]);
    const notice = await eventually(() => errors.find((e) => e.errors[0]?.reason === 'rate_limited'));
    expect(notice.errors[0]!.detail).toMatch(/rate limit/);
    expect((await storedReadings(db, fast.id)).map((r) => r.values.n)).toEqual([0, 1, 2, 3, 4]);
    expect(await metric(t, 'guanlink_mqtt_refusals_total', 'reason="rate_limited"')).toBe(before + 1);
    await eventually(async () => ((await connectivity(fast.id)).lastDisconnect?.reason === 'rate_limited' ? true : undefined));

    // The other device is not limited by it.
    for (let i = 0; i < 5; i++) await o.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: T0 + i, values: { m: i } }), { qos: 1 });
    expect((await storedReadings(db, calm.id)).length).toBe(5);
    expect(o.connected).toBe(true);

    // Reconnecting does not refill the device's budget: the limit is per device, not per connection.
    const again = await t.connect(fast.accessToken);
    const closedAgain = new Promise<void>((resolve) => again.once('close', () => resolve()));
    let ackedAgain = false;
    again.publish('v1/devices/me/telemetry', JSON.stringify({ ts: T0 + 10, values: { n: 10 } }), { qos: 1 }, (err) => (ackedAgain = !err));
    await closedAgain;
    expect(ackedAgain).toBe(false);
  });

  it('mosquitto_pub: the publishes within the limit are acknowledged, then the connection is closed', async () => {
    const d = await t.createDevice({ name: 'mosq-chatterbox' });
    const before = await metric(t, 'guanlink_mqtt_refusals_total', 'reason="rate_limited"');
    // Eight copies over one connection, one at a time: five acknowledged, the sixth closes the connection.
    const r = await runMosquitto('mosquitto_pub', [...mosquittoArgs(t, d.accessToken, 'mosq-rate'), '-d', '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', `{"ts": ${T0}, "values": {"k": 1}}`, '--repeat', '8'], {
      timeoutMs: 10_000,
    });
    const acks = new Set(r.stdout.match(/received PUBACK \(Mid: \d+/g));
    expect(acks.size).toBe(5);
    expect(r.stdout).toMatch(/m6, 'v1\/devices\/me\/telemetry'/);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/connection was lost/i);
    expect(await metric(t, 'guanlink_mqtt_refusals_total', 'reason="rate_limited"')).toBe(before + 1);
    expect((await storedReadings(db, d.id)).length).toBe(1); // same ts: one reading, stored once
    const events = (await t.api<{ event: string; reason: string | null }[]>('GET', `/api/v1/devices/${d.id}/events`)).body;
    expect(events.some((e) => e.event === 'disconnect' && e.reason === 'rate_limited')).toBe(true);
  });
});
