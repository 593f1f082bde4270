import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { getResolution } from 'h3-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mosquittoPub, mosquittoRr } from '../support/mosquitto-clients.ts';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { readmeSession, readmeShellBlocks, runReadmeSession, type SessionRun } from '../support/readme.ts';

/**
 * The README's shell examples run as written (bash, curl, jq, Debian's mosquitto clients)
 * against a fresh platform, one session per section as a reader would run them in one
 * terminal; each example's output is checked for the values that prove it worked.
 */

interface Device {
  id: number;
  name: string;
  type: string;
  gatewayId: number | null;
}

const lines = (output: string | undefined) => (output ?? '').split('\n').filter((l) => l.length > 0);
const json = (line: string | undefined) => JSON.parse(line ?? 'null') as Record<string, unknown>;

describe('README: every shell example is marked', () => {
  it('as an example a test runs, or as not run with the reason', () => {
    const unmarked = readmeShellBlocks().filter((b) => b.marker === undefined).map((b) => `README line ${b.line}`);
    expect(unmarked).toEqual([]);
  });

  it('with a name used once per session', () => {
    const names = readmeShellBlocks().flatMap((b) => (b.marker?.kind === 'example' ? [`${b.marker.session}/${b.marker.name}`] : []));
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual(expect.arrayContaining(['device/register', 'rest/devices', 'access/access']));
  });

  it('finds markers and blocks as written', () => {
    const blocks = readmeShellBlocks(['text', '<!-- example: s/one -->', '```sh', 'echo 1', '```', '```sh', 'echo 2', '```', '<!-- not run: why -->', '```sh', 'x', '```'].join('\n'));
    expect(blocks).toEqual([
      { line: 3, marker: { kind: 'example', session: 's', name: 'one' }, script: 'echo 1\n' },
      { line: 6, marker: undefined, script: 'echo 2\n' },
      { line: 10, marker: { kind: 'not run', reason: 'why' }, script: 'x\n' },
    ]);
  });
});

/**
 * A session's examples run on a fresh platform (without simulators: only what the examples
 * create), in a fresh working directory, with the variables a reader would set.
 */
function session(name: string) {
  const s = { t: undefined as unknown as TestPlatform, cwd: '', run: undefined as unknown as SessionRun };
  beforeAll(async () => {
    s.t = await startTestPlatform();
    s.cwd = await mkdtemp(path.join(os.tmpdir(), 'guanlink-readme-'));
    const env = { GUANLINK: s.t.httpUrl, MQTT_HOST: '127.0.0.1', MQTT_PORT: String(s.t.platform.mqttPort), KEY: s.t.adminKey };
    s.run = await runReadmeSession(name, { env, cwd: s.cwd });
  }, 120_000);
  afterAll(async () => {
    await s.t?.stop();
    if (s.cwd) await rm(s.cwd, { recursive: true, force: true });
  });
  return {
    get t() {
      return s.t;
    },
    get cwd() {
      return s.cwd;
    },
    out: (example: string) => lines(s.run.outputs.get(example)),
    async byName(deviceName: string): Promise<Device> {
      const res = await s.t.api<{ items: Device[] }>('GET', `/api/v1/devices?namePrefix=${encodeURIComponent(deviceName)}`);
      const device = res.body.items.find((d) => d.name === deviceName);
      if (!device) throw new Error(`no device named ${deviceName}`);
      return device;
    },
    async latest(id: number) {
      return (await s.t.api<Record<string, { ts: number; value: unknown }>>('GET', `/api/v1/devices/${id}/latest`)).body;
    },
    expectEveryExampleRan() {
      expect(s.run.code, `the examples stopped at "${[...s.run.outputs.keys()].at(-1)}": ${s.run.stderr}`).toBe(0);
      expect([...s.run.outputs.keys()]).toEqual(readmeSession(name).map((e) => e.name));
    },
  };
}

describe('README examples run as written', () => {
  describe('Device API (MQTT)', () => {
    const s = session('device');
    const { out, byName, latest } = s;

    it('runs every example of the section', () => s.expectEveryExampleRan());

    it('telemetry: the three forms are stored at their own (recent) times', async () => {
      expect(out('telemetry')).toEqual(['{"pm25":38,"temperature":25,"water_level":3.2}']);
      const station = await byName('station-7');
      const res = await s.t.api<Record<string, { ts: number; value: number }[]>>('GET', `/api/v1/devices/${station.id}/telemetry?keys=pm25,water_level,latitude`);
      expect(res.body.pm25!.map((p) => p.value)).toEqual([38, 35]);
      expect(res.body.pm25![0]!.ts - res.body.pm25![1]!.ts).toBe(60_000);
      expect(Date.now() - res.body.water_level![0]!.ts).toBeLessThan(10 * 60_000);
      expect(res.body.latitude![0]!.value).toBe(23.02);
    });

    it('errors: the refusal comes back on the publishing connection', () => {
      expect(out('errors')).toEqual(['{"reason":"ts_too_old","key":null}']);
    });

    it('credentials: the device connects with its username and password', async () => {
      expect(json(out('credentials')[0])).toEqual({ scheme: 'username_password', clientId: null, username: 'station-7', hasPassword: true });
      expect((await latest((await byName('station-7')).id)).temperature!.value).toBe(26);
    });

    it('attributes: the device reads its client and shared attributes', () => {
      expect(out('attributes')).toEqual(['{"client":{"fw_version":"1.10"},"shared":{"target":23}}']);
    });

    it('rpc: a persistent command is taken by the device and answered', () => {
      const [status, command, answer] = out('rpc');
      expect(status).toBe('queued');
      expect(command).toMatch(/^v1\/devices\/me\/rpc\/request\/\d+ \{"method":"setGpio","params":\{"pin":23,"value":1\}\}$/);
      expect(json(answer)).toEqual({ status: 'answered', response: { pin: 23, value: 1 } });
    });

    it('gateway: both sub-devices are created under the gateway with their readings', async () => {
      const gateway = await byName('pumping-station-3');
      expect(out('gateway').map(json)).toEqual([
        { name: 'Pump 7', type: 'pipe-pressure-sensor', gatewayId: gateway.id },
        { name: 'Pump 8', type: 'generic', gatewayId: gateway.id },
      ]);
      expect((await latest((await byName('Pump 7')).id)).pressure!.value).toBe(0.32);
      expect((await latest((await byName('Pump 8')).id)).pressure!.value).toBe(0.29);
    });

    it('provisioning: the device registers itself with the key', async () => {
      expect(out('provisioning')).toEqual(['{"status":"SUCCESS","credentialsType":"ACCESS_TOKEN"}']);
      expect((await byName('aq-dongcheng-01')).type).toBe('air-quality-station');
    });

    it('connectivity: offline after its last clean disconnect, with its recent events', () => {
      const [state, ...events] = out('connectivity');
      expect(json(state)).toMatchObject({ online: false, lastDisconnect: { reason: 'client_disconnect' } });
      expect(events.length).toBeGreaterThanOrEqual(2);
      expect(events.length).toBeLessThanOrEqual(10);
      expect(events[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z disconnect client_disconnect$/);
      for (const e of events) expect(e).toMatch(/^\S+Z (connect|disconnect \S+)$/);
    });

    it('unsupported topics: a publish to an unsupported topic is answered with the reason, on the same connection', () => {
      expect(out('unsupported')).toEqual(['{"reason":"topic_not_allowed"}']);
    });

    it('claiming: the agency claims the device with its secret and then sees it, outside its scope', () => {
      expect(out('claiming')).toEqual(['{"result":"SUCCESS","owner":"东莞市水务局"}', 'station-7']);
    });

    it('gateway: the form the README used to show, {"values": …} without "ts", is a key named "values", as in ThingsBoard', async () => {
      // ThingsBoard's JsonConverter.parseObject takes the timestamped path only for an object with
      // both "ts" and "values"; anything else is a flat object of keys (the reference note, §2).
      const gatewayToken = await s.t.api<{ accessToken: string }>('POST', '/api/v1/devices', { name: 'old-form-gateway', isGateway: true });
      const target = { port: s.t.platform.mqttPort, username: gatewayToken.body.accessToken };
      expect((await mosquittoPub(target, { topic: 'v1/gateway/connect', payload: '{"device": "Pump 9", "type": "pipe-pressure-sensor"}' })).code).toBe(0);
      const answer = await mosquittoRr(target, { topic: 'v1/gateway/telemetry', responseTopic: 'v1/devices/me/errors', payload: '{"Pump 9": [{"values": {"pressure": 0.32}}]}' });
      const error = JSON.parse(answer.messages[0]!.payload) as { errors: { device: string; key?: string }[] };
      expect(error.errors).toEqual([expect.objectContaining({ device: 'Pump 9', key: 'values' })]);
      expect(await latest((await byName('Pump 9')).id)).toEqual({});
    });
  });

  describe('Firmware and software updates (OTA)', () => {
    const s = session('ota');
    const { out } = s;

    it('runs every example of the section', () => s.expectEveryExampleRan());

    it('package: the upload is stored with its checksum checked', () => {
      expect(out('package')).toEqual(['{"size":100000,"checksumAlgorithm":"SHA256"}']);
    });

    it('assign: the device reads its fw_* attributes', () => {
      expect(out('assign').map(json)).toEqual([{ type: 'FIRMWARE', packageId: expect.any(Number) }, { fw_title: 'water-meter', fw_version: '1.1', fw_size: 100000 }]);
    });

    it('download: seven chunks of 16 KiB (the last shorter) make the package, byte for byte', () => {
      expect(out('download')).toEqual(['7 chunks, 100000 bytes', 'identical']);
    });

    it('progress and rollout: the device is counted UPDATED, on 1.1', async () => {
      expect(json(out('progress')[0])).toEqual({ targeted: 1, states: { UPDATED: 1 }, versions: [{ title: 'water-meter', version: '1.1', devices: 1 }], failures: [] });
      const device = await s.byName('meter-0001');
      expect((await s.latest(device.id)).fw_state?.value).toBe('UPDATED');
    });

    it('http: the second 64 KiB chunk is the rest of the file', () => {
      expect(out('http')).toEqual(['34464']);
    });

    it('campaign: one device, assigned at once', () => {
      expect(out('campaign')).toEqual(['{"status":"done","devices":1,"assigned":1}']);
    });
  });

  describe('REST API, spatial queries, alarms, geofences, platform events', () => {
    const s = session('rest');
    const { out } = s;

    it('runs every example of the sections', () => s.expectEveryExampleRan());

    it('devices: the station registered by the example reports and its telemetry reads back', () => {
      expect(out('devices')).toEqual(['{"aqi":[50],"pm25":[35]}']);
    });

    it('aggregated telemetry: this hour\'s maximum, and an automatic interval', () => {
      const [hourly, header] = out('aggregated-telemetry');
      const point = json(hourly) as { ts: number; value: number };
      expect(point.value).toBe(35);
      expect(point.ts % 3_600_000).toBe(0);
      expect(Date.now() - point.ts).toBeLessThan(2 * 3_600_000);
      expect(header).toMatch(/^guanlink-interval: \d+[smhd]\s*$/i);
    });

    it('trajectory: the three positions just sent, about 1.5 km', () => {
      const track = json(out('trajectory')[0]) as { pointCount: number; distanceMetres: number };
      expect(track.pointCount).toBe(3);
      expect(track.distanceMetres).toBeGreaterThan(1400);
      expect(track.distanceMetres).toBeLessThan(1600);
      const geojson = JSON.parse(readFileSync(path.join(s.cwd, 'bus-L1-07.geojson'), 'utf8')) as { features: { geometry: { type: string } | null }[] };
      expect(geojson.features[0]!.geometry!.type).toBe('LineString');
    });

    it('import and export: two stations created, then exported with the water devices', () => {
      expect(json(out('import')[0])).toEqual({ rows: 2, created: 2, updated: 0, unchanged: 0, errors: 0 });
      const csv = readFileSync(path.join(s.cwd, 'water.csv'), 'utf8');
      expect(csv).toMatch(/^\d+,wl-humen-01,river-level-station,water,,22.82,113.67,/m);
      expect(csv).toMatch(/^\d+,wl-humen-02,river-level-station,water,,22.83,113.68,/m);
    });

    it('attributes: shared attributes set, and the shadow shows them as not yet reported', () => {
      const [set, shadow] = out('attributes');
      expect(json(set)).toEqual({ updated: ['reportSeconds', 'mode'], delivered: false });
      expect(shadow).toBe('{"delta":{"mode":"eco","reportSeconds":60},"desired":{"mode":"eco","reportSeconds":60},"inSync":false}');
    });

    it('rpc: a persistent command for the offline station is queued', () => {
      expect(json(out('rpc')[0])).toEqual({ id: expect.any(Number), status: 'queued' });
    });

    it('spatial: history in a box and latest positions in a polygon find the devices just created', () => {
      expect(out('spatial')).toEqual(['{"name":"aq-nancheng-01","values":{"aqi":50,"pm25":35}}', '{"name":"bus-L1-07","at":[113.755,23.02]}']);
    });

    it('aggregate: one hexagon of the asked resolution per bucket, with the statistics asked', () => {
      const [hourly, daily] = out('aggregate').map(json) as { cell: string; count: number; avg: number; max: number; p90?: number }[];
      expect(hourly).toMatchObject({ count: 1, avg: 35, max: 35, p90: 35 });
      expect(getResolution(hourly!.cell)).toBe(8);
      expect(daily).toMatchObject({ count: 1, avg: 50, min: 50, max: 50 });
      expect(getResolution(daily!.cell)).toBe(7);
      expect(out('aggregate')).toHaveLength(2);
    });

    it('export: the CSV holds the station\'s reading, the GeoJSON the bus positions', () => {
      const files = out('export');
      const csvName = files.find((f) => /^guanlink-export-.+\.csv$/.test(f));
      expect(csvName).toBeDefined();
      const [header, ...rows] = lines(readFileSync(path.join(s.cwd, csvName!), 'utf8'));
      expect(header).toBe('deviceId,name,type,domain,time,ts,lat,lng,alt,cell,pm25,pm10,aqi');
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatch(/^\d+,aq-nancheng-01,air-quality-station,environment,.*,35,52,50$/);
      const buses = JSON.parse(readFileSync(path.join(s.cwd, 'buses.geojson'), 'utf8')) as { features: { properties: { name: string } }[] };
      expect(buses.features.map((f) => f.properties.name)).toEqual(['bus-L1-07', 'bus-L1-07', 'bus-L1-07']);
    });

    it('alarms: the rule raises an alarm on the station\'s reading', () => {
      const [rule, alarm] = out('alarms');
      expect(json(rule)).toEqual({ id: expect.any(Number), name: 'pm25-high' });
      expect(alarm).toBe('{"ruleName":"pm25-high","severity":"minor","status":"raised","value":82}');
    });

    it('alarm-match: a match rule on a string raises on FAILED and clears on the next state', () => {
      expect(out('alarm-match')).toEqual([
        '{"name":"firmware-update-failed","kind":"match","operator":"==","value":"FAILED"}',
        '{"ruleName":"firmware-update-failed","status":"raised","matchValue":"FAILED","value":"FAILED"}',
        '{"status":"cleared","clearReason":"condition","lastValue":"DOWNLOADING"}',
      ]);
    });

    it('geofences: the bus entering the depot is an enter event', () => {
      expect(out('geofences')).toEqual(['{"kind":"enter","device":"bus-L1-07","at":[113.765,23.025]}']);
    });

    it('platform events: an application session sees the bus leave the depot', () => {
      const [event] = out('events');
      const match = /^guanlink\/events\/geofences\/\d+ (\{.*\})$/.exec(event ?? '');
      expect(match, event).not.toBeNull();
      expect(JSON.parse(match![1]!)).toMatchObject({ kind: 'exit', geofenceName: 'depot-east', deviceName: 'bus-L1-07', lng: 113.775, lat: 23.035 });
    });
  });

  describe('SensorThings API', () => {
    const s = session('sta');
    const { out } = s;

    it('runs every example of the section', () => s.expectEveryExampleRan());

    it('root: the entity sets served', () => {
      expect(out('root')).toEqual(['["Things","Locations","HistoricalLocations","Datastreams","Sensors","ObservedProperties","Observations","FeaturesOfInterest"]']);
    });

    it('observations: the station\'s Datastream with its unit and newest two water levels', () => {
      expect(out('observations')).toEqual(['{"name":"wl-dongjiang-01 water_level","unit":"m","results":[3.4,3.2]}']);
    });

    it('filter: the station found by geo.intersects, and its Observations by a navigation path, a value and now()', () => {
      expect(out('filter')).toEqual(['[{"name":"wl-dongjiang-01","at":[113.78,23.05]}]', '{"count":2,"results":[3.2,3.4]}']);
    });
  });
});
