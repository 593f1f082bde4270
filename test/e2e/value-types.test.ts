import type { MqttClient } from 'mqtt';
import { io as ioClient, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inbox, nextMessage } from '../support/inbox.ts';
import { mosquittoPub } from '../support/mosquitto-clients.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * ThingsBoard's value types (string, boolean, long, double, JSON) end to end: devices publish with
 * MQTT.js (3.1.1 and 5) and mosquitto_pub; every value comes back with its JSON type from the
 * history, latest values, the exports (NDJSON, CSV, GeoJSON) and the live stream.
 */

type Series = Record<string, { ts: number; value: unknown }[]>;
interface DeviceErrors {
  stored: number;
  errors: { reason: string; key?: string; detail: string }[];
}

const TYPE = 'ota-sensor';
const TELEMETRY = 'v1/devices/me/telemetry';
const AT = { lat: 22.61234, lng: 113.41234 };

describe('telemetry of every ThingsBoard value type', () => {
  let t: TestPlatform;
  let n = 0;
  const sockets: Socket[] = [];
  const device = (location: { lat: number; lng: number } | null = null): Promise<CreatedDevice> =>
    t.createDevice({ name: `values-${++n}`, type: TYPE, location });
  const history = async (d: CreatedDevice, query: string) => {
    const res = await t.api<Series>('GET', `/api/v1/devices/${d.id}/telemetry?${query}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body;
  };
  const send = (client: MqttClient, body: unknown) => client.publishAsync(TELEMETRY, JSON.stringify(body), { qos: 1 });

  beforeAll(async () => {
    // Rollups refreshed by the test (not by the clock), with no lateness allowance.
    t = await startTestPlatform({ rollupRefreshMs: 0, rollupLatenessMs: 0 });
    const res = await t.api('POST', '/api/v1/device-types', {
      name: TYPE,
      domain: 'generic',
      label: { en: 'OTA sensor', zh: '升级传感器' },
      moving: false,
      acceptsUndeclaredKeys: true,
      keys: { level: { unit: 'm', min: 0, max: 10 }, fw_version: { type: 'string' }, relay: { type: 'boolean' }, config: { type: 'json' } },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
  });
  afterAll(async () => {
    for (const s of sockets) s.disconnect();
    await t?.stop();
  });

  it('refuses min/max/unit on a key declared as another type than number', async () => {
    const res = await t.api<{ detail: string }>('POST', '/api/v1/device-types', {
      name: 'bad-values',
      domain: 'generic',
      label: { en: 'x', zh: 'x' },
      keys: { state: { type: 'string', max: 3 } },
    });
    expect(res.status).toBe(400);
    expect(JSON.stringify(res.body)).toMatch(/min, max and unit apply to numbers only, not to a string key/);
  });

  it('stores strings, booleans and JSON beside numbers, and returns each with its type from history and latest', async () => {
    const d = await device();
    const t0 = Date.now() - 60_000;
    const client = await t.connect(d.accessToken);
    await send(client, {
      ts: t0,
      values: { level: 4.5, fw_state: 'DOWNLOADING', fw_version: '1.10', relay: true, config: { mode: 'eco', zones: [1, 2] }, count: '7' },
    });
    // Debian's mosquitto_pub over MQTT 5: the SDKs' own fw_state telemetry, a boolean and a JSON array
    const pub = await mosquittoPub(
      { port: t.platform.mqttPort, username: d.accessToken, protocol: 'mqttv5' },
      { topic: TELEMETRY, payload: JSON.stringify({ ts: t0 + 1000, values: { fw_state: 'UPDATED', relay: false, level: '5', tags: ['a', 1, null] } }) },
    );
    expect(pub.code, pub.stderr).toBe(0);

    const got = await history(d, 'keys=level,fw_state,fw_version,relay,config,count,tags');
    expect(got).toEqual({
      level: [
        { ts: t0 + 1000, value: 5 },
        { ts: t0, value: 4.5 },
      ],
      fw_state: [
        { ts: t0 + 1000, value: 'UPDATED' },
        { ts: t0, value: 'DOWNLOADING' },
      ],
      // declared a string: kept as sent, not cast to 1.1
      fw_version: [{ ts: t0, value: '1.10' }],
      relay: [
        { ts: t0 + 1000, value: false },
        { ts: t0, value: true },
      ],
      config: [{ ts: t0, value: { mode: 'eco', zones: [1, 2] } }],
      // undeclared numeric-looking strings are numbers, as ThingsBoard casts them
      count: [{ ts: t0, value: 7 }],
      tags: [{ ts: t0 + 1000, value: ['a', 1, null] }],
    });
    // every key when none is named, whatever its type
    expect(Object.keys(await history(d, `from=${t0}`)).sort()).toEqual(['config', 'count', 'fw_state', 'fw_version', 'level', 'relay', 'tags']);

    const latest = await eventually(async () => {
      const res = await t.api<Record<string, { ts: number; value: unknown }>>('GET', `/api/v1/devices/${d.id}/latest`);
      return res.body.fw_state?.value === 'UPDATED' ? res.body : undefined;
    });
    expect(latest).toEqual({
      level: { ts: t0 + 1000, value: 5 },
      fw_state: { ts: t0 + 1000, value: 'UPDATED' },
      fw_version: { ts: t0, value: '1.10' },
      relay: { ts: t0 + 1000, value: false },
      config: { ts: t0, value: { mode: 'eco', zones: [1, 2] } },
      count: { ts: t0, value: 7 },
      tags: { ts: t0 + 1000, value: ['a', 1, null] },
    });

    // aggregates: numbers, and booleans as 1/0 (sum counts the true ones); strings and JSON have no buckets
    const buckets = await history(d, `keys=level,relay,fw_state,config&from=${t0 - 1}&interval=1h&agg=max`);
    expect(buckets.level!.map((p) => p.value)).toEqual([5]);
    expect(buckets.relay!.map((p) => p.value)).toEqual([1]);
    expect(buckets.fw_state).toEqual([]);
    expect(buckets.config).toEqual([]);
    expect((await history(d, `keys=relay&from=${t0 - 1}&interval=1h&agg=sum`)).relay!.map((p) => p.value)).toEqual([1]);
    expect((await history(d, `keys=relay&from=${t0 - 1}&interval=1h&agg=avg`)).relay!.map((p) => p.value)).toEqual([0.5]);
  });

  it('rolls booleans up as 1/0 beside the numbers, and answers the same from rollups as from raw readings', async () => {
    const d = await device({ lat: 22.7001, lng: 113.3001 });
    const client = await t.connect(d.accessToken);
    const hour = 3_600_000;
    const start = Math.floor((Date.now() - 5 * hour) / hour) * hour;
    const sent = [true, true, false, true].map((on, i) => ({ ts: start + i * 60_000, values: { door: on, level: i, label: `s${i}` } }));
    await send(client, sent);
    const query = `keys=door,level,label&from=${start}&to=${start + hour - 1}&interval=1h&agg=sum`;
    const raw = await history(d, query);
    expect(raw).toEqual({ door: [{ ts: start, value: 3 }], level: [{ ts: start, value: 6 }], label: [] });
    const heatmap = async () => {
      const q = `bbox=113.2,22.6,113.4,22.8&from=${new Date(start).toISOString()}&to=${new Date(start + hour).toISOString()}&key=door&resolution=7&interval=1h&stats=count,sum,avg&format=json`;
      const r = await fetch(`${t.httpUrl}/api/v1/spatial/aggregate?${q}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
      const body = (await r.json()) as { sources: string[]; rows: { count: number; sum: number; avg: number }[] };
      expect(r.status, JSON.stringify(body)).toBe(200);
      return body;
    };
    const rawHeat = await heatmap();
    expect(rawHeat.sources).toEqual(['raw']);
    expect(rawHeat.rows.map((r) => [r.count, r.sum, r.avg])).toEqual([[4, 3, 0.75]]);
    const refreshed = await t.api<{ skipped: boolean }>('POST', '/api/v1/rollups/refresh');
    expect(refreshed.status).toBe(200);
    const res = await fetch(`${t.httpUrl}/api/v1/devices/${d.id}/telemetry?${query}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
    expect([res.status, res.headers.get('guanlink-sources')]).toEqual([200, '1h']);
    expect(await res.json()).toEqual(raw);
  });

  it('refuses values of the wrong declared type and values over the limits, each alone, and says why', async () => {
    const d = await device();
    const client = await t.connect(d.accessToken, { protocolVersion: 5 });
    const messages = inbox(client);
    await client.subscribeAsync('v1/devices/me/errors', { qos: 1 });
    const ts = Date.now() - 30_000;
    await send(client, {
      ts,
      values: { relay: 'on', fw_version: 110, level: 'high', config: 'x', note: 'n'.repeat(4097), blob: { pad: 'p'.repeat(16_400) }, nul: 'a\u0000b', ok: 'fine' },
    });
    const answer = (await nextMessage(messages, 'v1/devices/me/errors')).body as DeviceErrors;
    expect(answer.stored).toBe(1);
    expect(answer.errors.map((e) => [e.reason, e.key])).toEqual([
      ['wrong_type', 'relay'],
      ['wrong_type', 'fw_version'],
      ['not_numeric', 'level'],
      ['wrong_type', 'config'],
      ['value_too_large', 'note'],
      ['value_too_large', 'blob'],
      ['invalid_value', 'nul'],
    ]);
    expect(answer.errors[0]!.detail).toBe(`relay: device type ${TYPE} declares a boolean, got "on"`);
    expect(answer.errors[4]!.detail).toBe('note: the string is 4097 characters; the limit is 4096');
    expect(await history(d, 'keys=relay,fw_version,note,blob,nul,ok')).toEqual({ relay: [], fw_version: [], note: [], blob: [], nul: [], ok: [{ ts, value: 'fine' }] });
  });

  it('merges a retransmission at the same instant: a key changes type and the newer write wins', async () => {
    const d = await device();
    const client = await t.connect(d.accessToken);
    const ts = Date.now() - 20_000;
    await send(client, { ts, values: { mode: 1, state: 'idle', level: 2 } });
    // same device and ts (a lost PUBACK): mode becomes a string, state a number, a boolean is added
    await send(client, { ts, values: { mode: 'eco', state: 3, armed: true } });
    expect(await history(d, 'keys=mode,state,level,armed')).toEqual({
      mode: [{ ts, value: 'eco' }],
      state: [{ ts, value: 3 }],
      level: [{ ts, value: 2 }],
      armed: [{ ts, value: true }],
    });
    // and back: the string replaced by a number leaves no string behind
    await send(client, { ts, values: { mode: 4 } });
    expect((await history(d, 'keys=mode')).mode).toEqual([{ ts, value: 4 }]);
  });

  it('exports every value type as NDJSON, CSV and GeoJSON', async () => {
    const d = await device(AT);
    const client = await t.connect(d.accessToken);
    const t0 = Date.now() - 10_000;
    await send(client, [
      { ts: t0, values: { level: 1, fw_state: 'DOWNLOADED', relay: true, config: { a: [1, 'b'] } } },
      { ts: t0 + 1, values: { level: 2, note: 'say "hi", then go' } },
    ]);
    const query = (format: string, extra = '') =>
      `lat=${AT.lat}&lng=${AT.lng}&radius=50&type=${TYPE}&from=${t0 - 1}&to=${t0 + 10}&format=${format}${extra}`;
    const get = async (q: string) => {
      const res = await fetch(`${t.httpUrl}/api/v1/spatial/export?${q}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
      const text = await res.text();
      expect(res.status, text).toBe(200);
      return text;
    };

    const lines = (await get(query('ndjson'))).trim().split('\n').map((l) => JSON.parse(l) as { deviceId: number; ts: number; values: unknown });
    expect(lines.map((l) => [l.deviceId, l.ts, l.values])).toEqual([
      [d.id, t0, { level: 1, fw_state: 'DOWNLOADED', relay: true, config: { a: [1, 'b'] } }],
      [d.id, t0 + 1, { level: 2, note: 'say "hi", then go' }],
    ]);

    const csv = (await get(query('csv', '&keys=level,fw_state,relay,config,note'))).trim().split(/\r?\n/);
    expect(csv[0]).toBe('deviceId,name,type,domain,time,ts,lat,lng,alt,cell,level,fw_state,relay,config,note');
    expect(csv[1]!.split(',').slice(10).join(',')).toBe('1,DOWNLOADED,true,"{""a"":[1,""b""]}",');
    expect(csv[2]!.split(',').slice(10).join(',')).toBe('2,,,,"say ""hi"", then go"');

    // a key filter selects readings holding the key whatever its type
    const onlyNote = (await get(query('ndjson', '&keys=note'))).trim().split('\n').map((l) => JSON.parse(l) as { ts: number; values: unknown });
    expect(onlyNote.map((l) => [l.ts, l.values])).toEqual([[t0 + 1, { note: 'say "hi", then go' }]]);

    const geo = JSON.parse(await get(query('geojson'))) as { features: { properties: Record<string, unknown> }[] };
    expect(geo.features.map((f) => [f.properties.fw_state, f.properties.relay, f.properties.config])).toEqual([
      ['DOWNLOADED', true, { a: [1, 'b'] }],
      [undefined, undefined, undefined],
    ]);
  });

  it('alarms on a boolean key (true counts as 1, false as 0) and refuses thresholds on string keys', async () => {
    const refused = await t.api<{ message: string }>('POST', '/api/v1/alarm-rules', {
      name: 'fw-version-threshold',
      severity: 'minor',
      deviceType: TYPE,
      key: 'fw_version',
      operator: '>',
      raiseThreshold: 1,
    });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toBe(`key: "fw_version" is a string key of device type "${TYPE}"; thresholds compare numbers (and booleans as 1 and 0)`);

    const created = await t.api<{ id: number }>('POST', '/api/v1/alarm-rules', {
      name: 'relay-tripped',
      severity: 'major',
      deviceType: TYPE,
      key: 'relay',
      operator: '>=',
      raiseThreshold: 1,
      clearThreshold: 1,
    });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const d = await device();
    const client = await t.connect(d.accessToken);
    const ts = Date.now() - 5000;
    type Alarm = { ruleName: string; status: string; value: number; clearedAt: string | null };
    const alarms = async () => (await t.api<{ items: Alarm[] }>('GET', `/api/v1/alarms?device=${d.id}`)).body.items;
    await send(client, { ts, values: { relay: false, fw_state: 'IDLE' } });
    await send(client, { ts: ts + 1000, values: { relay: true } });
    const [raised] = await eventually(async () => ((await alarms()).length > 0 ? alarms() : undefined));
    expect(raised).toMatchObject({ ruleName: 'relay-tripped', status: 'raised', value: 1, clearedAt: null });
    await send(client, { ts: ts + 2000, values: { relay: false } });
    const [cleared] = await eventually(async () => {
      const list = await alarms();
      return list[0]?.clearedAt ? list : undefined;
    });
    expect(cleared).toMatchObject({ ruleName: 'relay-tripped', status: 'cleared' });
  });

  it('stores every value type a gateway sends for its sub-devices', async () => {
    const gw = await t.api<CreatedDevice>('POST', '/api/v1/devices', { name: `values-gw-${++n}`, isGateway: true });
    expect(gw.status).toBe(201);
    const client = await t.connect(gw.body.accessToken, { protocolVersion: 5 });
    const sub = `values-sub-${n}`;
    const ts = Date.now() - 5000;
    await client.publishAsync('v1/gateway/telemetry', JSON.stringify({ [sub]: [{ ts, values: { fw_state: 'FAILED', online: true, err: { code: 7 }, rssi: -70 } }] }), { qos: 1 });
    const found = await t.api<{ items: { id: number; name: string }[] }>('GET', `/api/v1/devices?namePrefix=${sub}&limit=10`);
    const id = found.body.items.find((d) => d.name === sub)!.id;
    const res = await t.api<Series>('GET', `/api/v1/devices/${id}/telemetry?keys=fw_state,online,err,rssi`);
    expect(res.body).toEqual({ fw_state: [{ ts, value: 'FAILED' }], online: [{ ts, value: true }], err: [{ ts, value: { code: 7 } }], rssi: [{ ts, value: -70 }] });
  });

  it('streams live readings with every value in its type', async () => {
    const d = await device();
    const socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'], forceNew: true });
    sockets.push(socket);
    const readings: { deviceId: number; values: Record<string, unknown> }[] = [];
    socket.on('readings', (batch: typeof readings) => readings.push(...batch));
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('connect_error', reject);
    });
    expect((await socket.emitWithAck('subscribe', { device: d.id })).ok).toBe(true);
    const client = await t.connect(d.accessToken);
    await send(client, { level: 3, fw_state: 'VERIFIED', relay: false, config: { k: null } });
    const live = await eventually(() => readings.find((r) => r.deviceId === d.id));
    expect(live.values).toEqual({ level: 3, fw_state: 'VERIFIED', relay: false, config: { k: null } });
  });
});
