import mqtt, { type MqttClient } from 'mqtt';
import { io as ioClient, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Alarm } from '../../core/alarms.ts';
import { createTestDatabase, testPool, type TestDatabase } from '../support/database.ts';
import { mosquittoPub } from '../support/mosquitto-clients.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * Match alarm rules (a key == or != a string, number or boolean) through the real platform:
 * devices report ThingsBoard's OTA `fw_state` strings with MQTT.js (3.1.1 and 5) and Debian's
 * mosquitto_pub; alarms come back over REST, socket.io and the MQTT platform events, and survive
 * a restart.
 */

interface AlarmChange {
  kind: 'raised' | 'acknowledged' | 'cleared';
  alarm: Alarm;
}
interface Problem {
  message: string;
}

const TYPE = 'ota-gateway-x';
const TELEMETRY = 'v1/devices/me/telemetry';

describe('match alarm rules', () => {
  let database: TestDatabase;
  let t: TestPlatform;
  let app: MqttClient;
  let socket: Socket;
  const mqttChanges: { topic: string; change: AlarmChange }[] = [];
  const liveChanges: AlarmChange[] = [];
  const base = Date.now() - 3600_000;
  let n = 0;

  const device = (): Promise<CreatedDevice> => t.createDevice({ name: `match-${++n}`, type: TYPE, location: { lat: 22.8, lng: 113.6 } });
  /** Publishes readings `[offset seconds, values]` in one message. */
  const publish = (client: MqttClient, readings: [number, Record<string, unknown>][]) =>
    client.publishAsync(TELEMETRY, JSON.stringify(readings.map(([s, values]) => ({ ts: base + s * 1000, values }))), { qos: 1 });
  const alarmsOf = async (d: CreatedDevice) => (await t.api<{ items: Alarm[] }>('GET', `/api/v1/alarms?device=${d.id}`)).body.items;
  const alarm = async (id: number) => (await t.api<Alarm>('GET', `/api/v1/alarms/${id}`)).body;
  const createRule = async (body: Record<string, unknown>) => {
    const res = await t.api<{ id: number } & Record<string, unknown>>('POST', '/api/v1/alarm-rules', { severity: 'major', deviceType: TYPE, ...body });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };
  const refused = async (body: Record<string, unknown>) => {
    const res = await t.api<Problem>('POST', '/api/v1/alarm-rules', { name: `refused-${++n}`, severity: 'major', deviceType: TYPE, ...body });
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    return res.body.message;
  };
  const firstAlarm = (d: CreatedDevice) => eventually(async () => (await alarmsOf(d))[0]);
  const clearedAlarm = (id: number) => eventually(async () => ((await alarm(id)).status === 'cleared' ? alarm(id) : undefined));

  beforeAll(async () => {
    database = await createTestDatabase();
    t = await startTestPlatform({}, { database });
    const res = await t.api('POST', '/api/v1/device-types', {
      name: TYPE,
      domain: 'generic',
      label: { en: 'OTA gateway', zh: '升级网关' },
      moving: false,
      acceptsUndeclaredKeys: true,
      keys: { fw_state: { type: 'string' }, link: { type: 'string' }, relay: { type: 'boolean' }, mode: {}, config: { type: 'json' } },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    app = await mqtt.connectAsync(t.mqttUrl, { username: 'guanlink-app', password: t.adminKey, reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5 });
    app.on('message', (topic, payload) => mqttChanges.push({ topic, change: JSON.parse(payload.toString()) as AlarmChange }));
    await app.subscribeAsync('guanlink/events/alarms/generic', { qos: 1 });
    socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'] });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    socket.on('alarm', (change: AlarmChange) => liveChanges.push(change));
    expect((await socket.emitWithAck('subscribe', { domain: 'generic' })).ok).toBe(true);
  });
  afterAll(async () => {
    socket?.close();
    await app?.endAsync(true).catch(() => undefined);
    await t?.stop();
  });

  it('fw_state == "FAILED": raised by the string, cleared by another, with the values over REST, socket.io and MQTT events', async () => {
    const rule = await createRule({ name: 'fw-failed', kind: 'match', key: 'fw_state', operator: '==', value: 'FAILED', severity: 'critical' });
    expect(rule).toMatchObject({ kind: 'match', key: 'fw_state', operator: '==', value: 'FAILED', minDurationSeconds: 0 });
    expect(rule).not.toHaveProperty('raiseThreshold');
    expect((await t.api(`GET`, `/api/v1/alarm-rules/${rule.id}`)).body).toEqual(rule);

    const d = await device();
    const client = await t.connect(d.accessToken, { protocolVersion: 5 });
    await publish(client, [[0, { fw_state: 'DOWNLOADING' }], [1, { fw_state: 'failed' }]]); // case counts
    await new Promise((r) => setTimeout(r, 300));
    expect(await alarmsOf(d)).toEqual([]);

    await publish(client, [[2, { fw_state: 'FAILED' }]]);
    const raised = await firstAlarm(d);
    expect(raised).toMatchObject({
      ruleName: 'fw-failed',
      kind: 'match',
      key: 'fw_state',
      operator: '==',
      matchValue: 'FAILED',
      threshold: null,
      severity: 'critical',
      status: 'raised',
      raisedAt: new Date(base + 2000).toISOString(),
      value: 'FAILED',
      lastValue: 'FAILED',
      peakValue: null,
    });

    // Another value clears it: Debian's mosquitto_pub, MQTT 3.1.1.
    const pub = await mosquittoPub({ port: t.platform.mqttPort, username: d.accessToken }, { topic: TELEMETRY, payload: JSON.stringify({ ts: base + 3000, values: { fw_state: 'DOWNLOADING' } }) });
    expect(pub.code, pub.stderr).toBe(0);
    const cleared = await clearedAlarm(raised.id);
    expect(cleared).toMatchObject({ clearReason: 'condition', clearedAt: new Date(base + 3000).toISOString(), value: 'FAILED', lastValue: 'DOWNLOADING', lastValueAt: new Date(base + 3000).toISOString() });

    for (const kind of ['raised', 'cleared'] as const) {
      const live = await eventually(() => liveChanges.find((c) => c.kind === kind && c.alarm.id === raised.id));
      const event = await eventually(() => mqttChanges.find((m) => m.change.kind === kind && m.change.alarm.id === raised.id));
      expect(event.topic).toBe('guanlink/events/alarms/generic');
      for (const change of [live, event.change]) expect(change.alarm).toMatchObject({ kind: 'match', operator: '==', matchValue: 'FAILED', value: 'FAILED' });
    }
    expect(liveChanges.find((c) => c.kind === 'cleared' && c.alarm.id === raised.id)!.alarm.lastValue).toBe('DOWNLOADING');
  });

  it('link != "ONLINE": raised by any other value after the minimum duration, cleared when it is back; JSON values are not compared', async () => {
    await createRule({ name: 'link-not-online', kind: 'match', key: 'link', operator: '!=', value: 'ONLINE', minDurationSeconds: 10, severity: 'warning' });
    const d = await device();
    const client = await t.connect(d.accessToken);
    // OFFLINE for 5 s, back ONLINE: too short; then DEGRADED from 20 s, OFFLINE at 30 s completes the 10 s.
    await publish(client, [[0, { link: 'ONLINE' }], [5, { link: 'OFFLINE' }], [10, { link: 'ONLINE' }], [20, { link: 'DEGRADED' }], [25, { link: 'OFFLINE' }]]);
    await new Promise((r) => setTimeout(r, 300));
    expect(await alarmsOf(d)).toEqual([]);
    await publish(client, [[30, { link: 'OFFLINE' }]]);
    const raised = await firstAlarm(d);
    expect(raised).toMatchObject({ ruleName: 'link-not-online', operator: '!=', matchValue: 'ONLINE', value: 'OFFLINE', conditionSince: new Date(base + 20_000).toISOString() });
    await publish(client, [[40, { link: 'ONLINE' }]]);
    expect(await clearedAlarm(raised.id)).toMatchObject({ clearReason: 'condition', lastValue: 'ONLINE' });

    // An undeclared key may carry JSON objects: those are not compared (not "!= OK"); strings are.
    await createRule({ name: 'health-not-ok', kind: 'match', key: 'health', operator: '!=', value: 'OK' });
    await publish(client, [[50, { health: { cpu: 'hot' } }]]);
    await new Promise((r) => setTimeout(r, 300));
    expect((await alarmsOf(d)).filter((a) => a.ruleName === 'health-not-ok')).toEqual([]);
    await publish(client, [[60, { health: 'DEGRADED' }]]);
    expect(await eventually(async () => (await alarmsOf(d)).find((a) => a.ruleName === 'health-not-ok'))).toMatchObject({ value: 'DEGRADED', status: 'raised' });
  });

  it('compares booleans as booleans and numbers numerically, storing numbers as numbers', async () => {
    await createRule({ name: 'relay-off', kind: 'match', key: 'relay', operator: '==', value: false });
    await createRule({ name: 'mode-3', kind: 'match', key: 'mode', operator: '==', value: 3 });
    const d = await device();
    const client = await t.connect(d.accessToken);
    await publish(client, [[0, { relay: true, mode: 2 }], [1, { relay: false, mode: '3.0' }]]); // ThingsBoard casts "3.0" to 3
    const both = await eventually(async () => {
      const list = await alarmsOf(d);
      return list.length === 2 ? list : undefined;
    });
    const byRule = Object.fromEntries(both.map((a) => [a.ruleName, a]));
    expect(byRule['relay-off']).toMatchObject({ matchValue: false, value: false, lastValue: false });
    expect(byRule['mode-3']).toMatchObject({ matchValue: 3, value: 3, lastValue: 3 });
    // Numbers stay in the float8 column, booleans and strings go in the jsonb one.
    const pool = testPool(database.url, 1);
    const { rows } = await pool
      .query<{ rule_name: string; value: number | null; value_json: unknown }>(`SELECT rule_name, value, value_json FROM alarms WHERE device_id = $1 ORDER BY rule_name`, [d.id])
      .finally(() => pool.end());
    expect(rows).toEqual([
      { rule_name: 'mode-3', value: 3, value_json: null },
      { rule_name: 'relay-off', value: null, value_json: false },
    ]);
    await publish(client, [[2, { relay: true, mode: 3.5 }]]);
    expect(await clearedAlarm(byRule['relay-off']!.id)).toMatchObject({ lastValue: true });
    expect(await clearedAlarm(byRule['mode-3']!.id)).toMatchObject({ lastValue: 3.5 });
  });

  it('refuses match rules that cannot work, and equality operators on thresholds, with the reason', async () => {
    const match = { kind: 'match', key: 'fw_state', operator: '==', value: 'FAILED' };
    expect(await refused({ ...match, operator: '>' })).toBe('operator: match rules compare with == or !=, not ">"');
    expect(await refused({ ...match, operator: undefined })).toBe('operator: match rules compare with == or !=');
    expect(await refused({ key: 'mode', operator: '==', raiseThreshold: 3 })).toBe(
      'operator: "==" compares for equality: give "kind": "match" and a value (threshold rules take > >= < <=)',
    );
    expect(await refused({ key: 'mode', operator: '>', raiseThreshold: 3, value: 3 })).toBe('value: only match rules compare with a value (threshold rules have raiseThreshold)');
    expect(await refused({ ...match, value: 3 })).toBe('value: 3 is a number; key "fw_state" is declared string');
    expect(await refused({ ...match, key: 'relay', value: 'true' })).toBe('value: "true" is a string; key "relay" is declared boolean');
    expect(await refused({ ...match, key: 'mode', value: 'x' })).toBe('value: "x" is a string; key "mode" is declared number');
    expect(await refused({ ...match, key: 'config', value: 'x' })).toBe('key: "config" is a json key; match rules compare strings, numbers and booleans');
    expect(await refused({ ...match, clearThreshold: 1 })).toBe('clearThreshold: match rules have no thresholds (and no hysteresis): they compare the key with value');
    expect(await refused({ ...match, raiseThreshold: 1 })).toBe('raiseThreshold: match rules have no thresholds (and no hysteresis): they compare the key with value');
    expect(await refused({ ...match, value: null })).toBe('value: required for match rules (a string, number or boolean to compare with)');
    expect(await refused({ ...match, key: 'undeclared_code', value: '42' })).toBe(
      `value: devices' numeric strings on undeclared key "undeclared_code" are stored as numbers; compare with the number 42`,
    );
    expect(await refused({ ...match, value: 'x'.repeat(4097) })).toBe('value: the string is 4097 characters; telemetry strings are at most 4096');
    expect(await refused({ ...match, value: { state: 'FAILED' } })).toBe('value: required for match rules (a string, number or boolean to compare with)');
    expect(await refused({ ...match, value: 'A\u0000' })).toBe('body/value: contains U+0000 (NUL), which cannot be stored');
    expect(await refused({ kind: 'geofence_exit', geofence: 'drone-corridors', value: 'x' })).toBe('value: not used by geofence_exit rules (they watch a geofence)');
    // Nothing of them was stored.
    const rules = (await t.api<{ items: { name: string }[] }>('GET', `/api/v1/alarm-rules?deviceType=${TYPE}`)).body.items.map((r) => r.name);
    expect(rules.filter((name) => name.startsWith('refused-'))).toEqual([]);
  });

  it('a new match value clears open alarms (rule_changed); PATCH switches a rule between kinds', async () => {
    const rule = await createRule({ name: 'fw-verify-failed', kind: 'match', key: 'fw_state', operator: '==', value: 'VERIFY_FAILED' });
    const d = await device();
    const client = await t.connect(d.accessToken);
    await publish(client, [[0, { fw_state: 'VERIFY_FAILED' }]]);
    const raised = await firstAlarm(d);
    const patched = await t.api<Record<string, unknown>>('PATCH', `/api/v1/alarm-rules/${rule.id}`, { value: 'FAILED' });
    expect(patched.status, JSON.stringify(patched.body)).toBe(200);
    expect(patched.body).toMatchObject({ kind: 'match', value: 'FAILED' });
    expect(await alarm(raised.id)).toMatchObject({ status: 'cleared', clearReason: 'rule_changed' });

    const toThreshold = await t.api<Record<string, unknown>>('PATCH', `/api/v1/alarm-rules/${rule.id}`, { kind: 'threshold', key: 'mode', operator: '>', raiseThreshold: 5 });
    expect(toThreshold.status, JSON.stringify(toThreshold.body)).toBe(200);
    expect(toThreshold.body).toMatchObject({ kind: 'threshold', key: 'mode', raiseThreshold: 5, clearThreshold: 5 });
    expect(toThreshold.body).not.toHaveProperty('value');
    const back = await t.api<Record<string, unknown>>('PATCH', `/api/v1/alarm-rules/${rule.id}`, { kind: 'match', operator: '!=', value: 0 });
    expect(back.status, JSON.stringify(back.body)).toBe(200);
    expect(back.body).toMatchObject({ kind: 'match', key: 'mode', operator: '!=', value: 0 });
    expect(back.body).not.toHaveProperty('raiseThreshold');
  });

  it('keeps an open match alarm, with its latest string value, over a restart, and clears it by condition after', async () => {
    await createRule({ name: 'fw-not-updated', kind: 'match', key: 'fw_state', operator: '!=', value: 'UPDATED' });
    const d = await device();
    const client = await t.connect(d.accessToken);
    await publish(client, [[100, { fw_state: 'DOWNLOADING' }]]);
    const open = await eventually(async () => (await alarmsOf(d)).find((a) => a.ruleName === 'fw-not-updated'));
    await publish(client, [[110, { fw_state: 'VERIFIED' }]]); // still != UPDATED: the latest value, written at stop
    await eventually(async () => ((await t.api<Record<string, Series>>('GET', `/api/v1/devices/${d.id}/telemetry?keys=fw_state`)).body.fw_state?.length === 2 ? true : undefined));
    await client.endAsync(true);

    await t.platform.stop(); // the database stays
    t = await startTestPlatform({}, { database }); // afterAll stops this one and drops the database
    expect(await alarm(open.id)).toMatchObject({ status: 'raised', value: 'DOWNLOADING', lastValue: 'VERIFIED', lastValueAt: new Date(base + 110_000).toISOString() });
    // Only a reloaded open alarm clears on this (a closed state sees nothing to do for a value that does not breach).
    const again = await t.connect(d.accessToken, { protocolVersion: 5 });
    await publish(again, [[130, { fw_state: 'UPDATED' }]]);
    expect(await clearedAlarm(open.id)).toMatchObject({ clearReason: 'condition', lastValue: 'UPDATED', clearedAt: new Date(base + 130_000).toISOString() });
    expect((await alarmsOf(d)).filter((a) => a.ruleName === 'fw-not-updated')).toHaveLength(1);
  });
});

type Series = { ts: number; value: unknown }[];
