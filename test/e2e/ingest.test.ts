import { testPool } from '../support/database.ts';
import net from 'node:net';
import mqttPacket from 'mqtt-packet';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';

/** Reads one Prometheus sample (first match of name and labels) from GET /metrics. */
async function metric(t: TestPlatform, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

describe('ingest: validation, rejections, idempotency, metrics', () => {
  let t: TestPlatform;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestPlatform({ maxPayloadBytes: 2048, maxPacketBytes: 8192 });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('stores a retransmission once, merging its keys into the stored row', async () => {
    const d = await t.createDevice({ name: 'retransmitter' });
    const c = await t.connect(d.accessToken);
    const ts = Date.UTC(2026, 10, 1, 10);
    const msg = JSON.stringify({ ts, values: { a: 1, b: 2 } });
    await c.publishAsync('v1/devices/me/telemetry', msg, { qos: 1 });
    await c.publishAsync('v1/devices/me/telemetry', msg, { qos: 1, dup: true });
    await c.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts, values: { b: 3, c: 4 } }), { qos: 1 });
    const rows = await storedReadings(db, d.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]!.values).toEqual({ a: 1, b: 3, c: 4 });
  });

  it('keeps every rejected message with its raw payload and reasons, counts it, and tells the device', async () => {
    const d = await t.createDevice({ name: 'rejected-probe', type: 'air-quality-station', location: { lat: 23, lng: 113.7 } });
    const c = await t.connect(d.accessToken);
    const errors: { errors: { reason: string; key?: string }[]; stored: number }[] = [];
    c.on('message', (_topic, payload) => errors.push(JSON.parse(payload.toString())));
    await c.subscribeAsync('v1/devices/me/errors');
    const before = await metric(t, 'guanlink_rejections_total', 'reason="out_of_range"');
    const payload = JSON.stringify({ aqi: 1200, pm25: 35, colour: 3 });
    await c.publishAsync('v1/devices/me/telemetry', payload, { qos: 1 });
    const notified = await eventually(() => errors[0]);
    expect(notified.stored).toBe(1);
    expect(notified.errors.map((e) => [e.reason, e.key])).toEqual([
      ['out_of_range', 'aqi'],
      ['undeclared_key', 'colour'],
    ]);
    const row = await eventually(async () => (await db.query(`SELECT * FROM rejected_messages WHERE device_id = $1`, [d.id])).rows[0]);
    expect(row.topic).toBe('v1/devices/me/telemetry');
    expect(row.reasons.sort()).toEqual(['out_of_range', 'undeclared_key']);
    expect(Buffer.from(row.payload).toString()).toBe(payload);
    expect(row.stored).toBe(1);
    expect(await metric(t, 'guanlink_rejections_total', 'reason="out_of_range"')).toBe(before + 1);
    expect((await storedReadings(db, d.id)).map((r) => r.values)).toEqual([{ pm25: 35 }]);
  });

  it('refuses a payload over the size limit with a reason and keeps the connection', async () => {
    const d = await t.createDevice({ name: 'big-payload' });
    const c = await t.connect(d.accessToken);
    const errors: { errors: { reason: string }[] }[] = [];
    c.on('message', (_topic, payload) => errors.push(JSON.parse(payload.toString())));
    await c.subscribeAsync('v1/devices/me/errors');
    await c.publishAsync('v1/devices/me/telemetry', JSON.stringify({ a: 1, pad: 'x'.repeat(3000) }), { qos: 1 });
    expect((await eventually(() => errors[0])).errors[0]!.reason).toBe('payload_too_large');
    await c.publishAsync('v1/devices/me/telemetry', JSON.stringify({ a: 2 }), { qos: 1 });
    expect((await storedReadings(db, d.id)).map((r) => r.values)).toEqual([{ a: 2 }]);
    const row = await eventually(async () => (await db.query(`SELECT payload_size, length(payload) AS kept FROM rejected_messages WHERE device_id = $1`, [d.id])).rows[0]);
    expect(row.payload_size).toBeGreaterThan(3000);
    expect(row.kept).toBeLessThanOrEqual(2048);
  });

  it('closes a connection whose packet announces more than the packet limit, before reading the body', async () => {
    const d = await t.createDevice({ name: 'huge-packet' });
    const before = await metric(t, 'guanlink_mqtt_refusals_total', 'reason="packet_too_large"');
    const socket = net.connect(Number(new URL(t.mqttUrl).port), '127.0.0.1');
    await new Promise((r) => socket.once('connect', r));
    socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'huge', keepalive: 30, username: d.accessToken }));
    await new Promise((r) => socket.once('data', r)); // CONNACK
    // Announce a 100 MB publish but send only its start: the broker must not wait for (or buffer) the rest.
    const header = mqttPacket.generate({ cmd: 'publish', topic: 'v1/devices/me/telemetry', payload: Buffer.alloc(16), qos: 0, retain: false, dup: false });
    const bogus = Buffer.concat([Buffer.from([0x30, 0x80, 0x80, 0x80, 0x32]), header.subarray(2)]);
    socket.write(bogus);
    await new Promise((r) => socket.once('close', r));
    expect(await metric(t, 'guanlink_mqtt_refusals_total', 'reason="packet_too_large"')).toBe(before + 1);
    const ready = await t.api<{ status: string }>('GET', '/readyz', undefined, { auth: false });
    expect(ready.body.status).toBe('ok');
  });

  it('exposes Prometheus metrics for ingest, the queue and connections', async () => {
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    for (const name of [
      'guanlink_readings_accepted_total',
      'guanlink_rejections_total',
      'guanlink_ingest_batch_rows_bucket',
      'guanlink_ingest_commit_seconds_bucket',
      'guanlink_ingest_queue_readings',
      'guanlink_ingest_queue_bytes',
      'guanlink_ingest_paused',
      'guanlink_mqtt_connected_clients',
      'guanlink_process_resident_memory_bytes',
    ]) {
      expect(text, name).toContain(name);
    }
    expect(await metric(t, 'guanlink_readings_accepted_total')).toBeGreaterThan(0);
  });
});

describe('ingest: the telemetry key cap', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  beforeAll(async () => {
    t = await startTestPlatform({ maxTelemetryKeys: 60 });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('refuses new keys from a generic device at the cap, but never a typed device its declared keys', async () => {
    const generic = await t.createDevice({ name: 'key-inventor' });
    const station = await t.createDevice({ name: 'aq-after-cap', type: 'air-quality-station', location: { lat: 23, lng: 113.7 } });
    const g = await t.connect(generic.accessToken);
    const invented = Object.fromEntries(Array.from({ length: 60 }, (_, i) => [`invented_${i}`, i]));
    await g.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.UTC(2026, 10, 2), values: invented }), { qos: 1 });
    const stored = await storedReadings(db, generic.id);
    const kept = Object.keys(stored[0]!.values).length;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThan(60);
    const rejected = await eventually(async () => (await db.query(`SELECT reasons FROM rejected_messages WHERE device_id = $1`, [generic.id])).rows[0]);
    expect(rejected.reasons).toEqual(['too_many_keys']);

    const s = await t.connect(station.accessToken);
    await s.publishAsync('v1/devices/me/telemetry', JSON.stringify({ so2: 5, co: 0.4 }), { qos: 1 });
    expect((await storedReadings(db, station.id)).map((r) => r.values)).toEqual([{ so2: 5, co: 0.4 }]);
  });
});
