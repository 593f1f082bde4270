import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPool } from '../support/database.ts';
import { inbox, nextMessage } from '../support/inbox.ts';
import { mosquittoPub } from '../support/mosquitto-clients.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * Topics a device may not use, answered as ThingsBoard does (MqttTransportHandler: an unknown
 * topic keeps the connection open, a plain PUBACK under MQTT 3.1.1; an unsupported SUBSCRIBE gets
 * SUBACK 0x80) — and never acknowledged and silently dropped: each refusal is explained on
 * v1/devices/me/errors, counted and kept in rejected_messages. Real MQTT.js and mosquitto clients.
 */

interface Errors {
  topic: string;
  stored: number;
  errors: { reason: string; detail: string }[];
}

describe('unsupported topics (ThingsBoard-compatible answers)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let device: CreatedDevice;

  const metric = async (name: string, labels: string): Promise<number> => {
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}} `));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  };
  const kept = async (topic: string) =>
    (await db.query<{ reasons: string[]; payload: Buffer; errors: { detail: string }[] }>('SELECT reasons, payload, errors FROM rejected_messages WHERE device_id = $1 AND topic = $2', [device.id, topic])).rows;

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
    device = await t.createDevice({ name: 'unsupported-topics-meter', type: 'generic' });
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('acknowledges a publish to an unsupported topic, keeps the connection, explains, counts and keeps the refusal', async () => {
    const client = await t.connect(device.accessToken);
    const messages = inbox(client);
    await client.subscribeAsync('v1/devices/me/errors', { qos: 1 });
    const aclBefore = await metric('guanlink_mqtt_refusals_total', 'reason="acl"');
    const rejectedBefore = await metric('guanlink_rejections_total', 'reason="topic_not_allowed"');
    const topics: [string, RegExp][] = [
      ['v1/devices/me/unknown', /outside the device API/],
      ['city/secrets', /outside the device API/],
      // Not an OTA request: the chunk number must be digits (ThingsBoard's pattern).
      ['v2/fw/request/1/chunk/first', /outside the device API/],
      ['v2/t/p', /protobuf/],
    ];
    for (const [topic, detail] of topics) {
      const before = messages.length;
      const packet = await client.publishAsync(topic, '{"temperature": 21}', { qos: 1 }); // resolves on the PUBACK
      expect(packet?.cmd).toBe('publish');
      const error = (await nextMessage(messages, 'v1/devices/me/errors', before)).body as Errors;
      expect(error).toMatchObject({ topic, stored: 0, errors: [{ reason: 'topic_not_allowed' }] });
      expect(error.errors[0]!.detail).toMatch(detail);
    }
    expect(client.connected).toBe(true);
    // Still a working session: its telemetry is stored.
    await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ temperature: 22.5 }), { qos: 1 });
    const latest = await t.api<Record<string, { value: number }>>('GET', `/api/v1/devices/${device.id}/latest`);
    expect(latest.body.temperature?.value).toBe(22.5);

    for (const [topic, detail] of topics) {
      const rows = await eventually(async () => {
        const r = await kept(topic);
        return r.length > 0 ? r : undefined;
      });
      expect(rows[0]!.reasons).toEqual(['topic_not_allowed']);
      expect(rows[0]!.payload.toString()).toBe('{"temperature": 21}');
      expect(rows[0]!.errors[0]!.detail).toMatch(detail);
    }
    expect(await metric('guanlink_mqtt_refusals_total', 'reason="acl"')).toBe(aclBefore + topics.length);
    expect(await metric('guanlink_rejections_total', 'reason="topic_not_allowed"')).toBe(rejectedBefore + topics.length);
  });

  it('mosquitto_pub to an unsupported topic gets its PUBACK (exit 0), and the refusal is kept', async () => {
    // A topic the test above does not use: each refusal is kept once.
    const res = await mosquittoPub({ port: t.platform.mqttPort, username: device.accessToken }, { topic: 'v2/a/p', payload: '1024' });
    expect(res.code, res.stderr).toBe(0);
    await eventually(async () => ((await kept('v2/a/p')).length === 1 ? true : undefined));
  });

  it('answers an unsupported SUBSCRIBE with SUBACK 0x80 and keeps the connection', async () => {
    const client = await t.connect(device.accessToken);
    const before = await metric('guanlink_mqtt_refusals_total', 'reason="subscription"');
    // `v2/fw/response/+` is what the python SDK subscribes to; ThingsBoard refuses it too (only `v2/fw/response/+/chunk/+`).
    for (const filter of ['v2/fw/response/+', 'v2/fw/errors', 'v1/devices/me/unknown', '#']) {
      const granted = await client.subscribeAsync(filter, { qos: 1 }).then(
        (g) => g.map((x) => x.qos),
        (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
      );
      expect(granted, filter).toEqual([128]);
    }
    expect(await metric('guanlink_mqtt_refusals_total', 'reason="subscription"')).toBe(before + 4);
    expect(client.connected).toBe(true);
    expect((await client.subscribeAsync('v1/devices/me/attributes', { qos: 1 })).map((g) => g.qos)).toEqual([1]);
  });
});
