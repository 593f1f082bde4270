import mqtt, { type MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMosquitto } from '../support/mosquitto.ts';
import { mosquittoRr } from '../support/mosquitto-clients.ts';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';

interface CreatedKey {
  id: number;
  key: string;
  secret: string;
  name: string | null;
  deviceType: string;
  allowCreate: boolean;
  maxDevices: number | null;
  devicesProvisioned: number;
}
type Response = { status: string; credentialsType?: string; credentialsValue?: unknown; errorMsg?: string };

/** Reads one Prometheus sample from GET /metrics (0 when absent). */
async function metric(t: TestPlatform, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

const CLOSE_MS = 1500;

describe('device provisioning', () => {
  let t: TestPlatform;
  let key: CreatedKey;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    t = await startTestPlatform({ provisionSessionCloseMs: CLOSE_MS });
    const res = await t.api<CreatedKey>('POST', '/api/v1/provision-keys', { deviceType: 'air-quality-station', name: 'AQ batch 2026' });
    expect(res.status).toBe(201);
    key = res.body;
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
    await t?.stop();
  });

  /** A provisioning session (username `provision`), subscribed to /provision/response. */
  async function provisionSession(options: mqtt.IClientOptions = {}): Promise<{ client: MqttClient; responses: Response[] }> {
    const client = await mqtt.connectAsync(t.mqttUrl, { username: 'provision', reconnectPeriod: 0, connectTimeout: 5000, ...options });
    client.on('error', () => {});
    clients.push(client);
    const responses: Response[] = [];
    client.on('message', (topic, payload) => topic === '/provision/response' && responses.push(JSON.parse(payload.toString())));
    const granted = await client.subscribeAsync('/provision/response', { qos: 1 });
    expect(granted[0]!.qos).toBe(1);
    return { client, responses };
  }
  async function provision(request: unknown): Promise<Response> {
    const { client, responses } = await provisionSession();
    await client.publishAsync('/provision/request', typeof request === 'string' ? request : JSON.stringify(request), { qos: 1 });
    return eventually(() => responses[0]);
  }
  const credentials = (extra: object = {}) => ({ provisionDeviceKey: key.key, provisionDeviceSecret: key.secret, ...extra });

  describe('provision keys (REST)', () => {
    it('shows the secret only when the key is created, and lists keys without it', async () => {
      expect(key).toMatchObject({ name: 'AQ batch 2026', deviceType: 'air-quality-station', allowCreate: true, maxDevices: null, devicesProvisioned: 0 });
      expect(key.key.length).toBeGreaterThanOrEqual(20);
      expect(key.secret.length).toBeGreaterThanOrEqual(32);
      const list = (await t.api<Record<string, unknown>[]>('GET', '/api/v1/provision-keys')).body;
      const listed = list.find((k) => k.id === key.id)!;
      expect(listed.key).toBe(key.key);
      expect(listed).not.toHaveProperty('secret');
      expect(JSON.stringify(list)).not.toContain(key.secret);
      expect((await t.api('GET', `/api/v1/provision-keys/${key.id}`)).status).toBe(200);
    });

    it('refuses an unknown device type, and needs the admin key', async () => {
      const res = await t.api<{ message: string }>('POST', '/api/v1/provision-keys', { deviceType: 'teapot' });
      expect(res.status).toBe(400);
      expect(res.body.message).toMatch(/unknown device type "teapot"/);
      expect((await t.api('GET', '/api/v1/provision-keys', undefined, { auth: false })).status).toBe(401);
      expect((await t.api('POST', '/api/v1/provision-keys', { deviceType: 'generic' }, { auth: false })).status).toBe(401);
    });
  });

  describe('over MQTT (mqtt.js)', () => {
    it('registers a device and answers its access token; the device connects with it and has the key’s type', async () => {
      const before = await metric(t, 'guanlink_provisioning_total', 'status="SUCCESS"');
      const response = await provision(credentials({ deviceName: 'aq-dongcheng-01' }));
      expect(response).toMatchObject({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN' });
      expect(Object.keys(response)).toEqual(['credentialsValue', 'credentialsType', 'status']); // ThingsBoard's field order
      const token = response.credentialsValue as string;
      const device = await t.connect(token);
      await device.publishAsync('v1/devices/me/telemetry', JSON.stringify({ pm25: 12 }), { qos: 1 });
      const list = (await t.api<{ items: { id: number; name: string; type: string }[] }>('GET', '/api/v1/devices?limit=1000')).body.items;
      expect(list.find((d) => d.name === 'aq-dongcheng-01')?.type).toBe('air-quality-station');
      expect(await metric(t, 'guanlink_provisioning_total', 'status="SUCCESS"')).toBe(before + 1);
      expect((await t.api<CreatedKey>('GET', `/api/v1/provision-keys/${key.id}`)).body.devicesProvisioned).toBeGreaterThanOrEqual(1);
    });

    it('closes the provisioning session a while after answering (PROVISION_SESSION_CLOSE_MS)', async () => {
      const { client, responses } = await provisionSession();
      const closed = new Promise<number>((resolve) => client.once('close', () => resolve(Date.now())));
      await client.publishAsync('/provision/request', JSON.stringify(credentials({ deviceName: 'aq-closing' })), { qos: 1 });
      await eventually(() => responses[0]);
      const answeredAt = Date.now();
      const closedAt = await closed;
      expect(closedAt - answeredAt).toBeGreaterThanOrEqual(CLOSE_MS - 300);
      expect(closedAt - answeredAt).toBeLessThan(CLOSE_MS + 3000);
    });

    it('tells an MQTT 5 provisioning session its end is normal (DISCONNECT 0x00) once answered', async () => {
      const { client, responses } = await provisionSession({ protocolVersion: 5 });
      const disconnect = new Promise<number | undefined>((resolve) => client.once('disconnect', (packet) => resolve(packet.reasonCode)));
      await client.publishAsync('/provision/request', JSON.stringify(credentials({ deviceName: 'aq-closing-v5' })), { qos: 1 });
      expect((await eventually(() => responses[0])).status).toBe('SUCCESS');
      expect(await disconnect).toBe(0);
    });

    it('generates a name when none is sent', async () => {
      const response = await provision(credentials());
      expect(response.status).toBe('SUCCESS');
    });

    it('takes a token the device chose, if long enough', async () => {
      const chosen = 'dg-aq-0000-0000-0001';
      const ok = await provision(credentials({ deviceName: 'aq-own-token', token: chosen }));
      expect(ok).toEqual({ credentialsValue: chosen, credentialsType: 'ACCESS_TOKEN', status: 'SUCCESS' });
      await t.connect(chosen);
      const short = await provision(credentials({ deviceName: 'aq-short-token', token: 'abc123' }));
      expect(short.status).toBe('FAILURE');
      expect(short.errorMsg).toMatch(/token must be at least 20 characters/);
      const taken = await provision(credentials({ deviceName: 'aq-same-token', token: chosen }));
      expect(taken.status).toBe('FAILURE');
      expect(taken.errorMsg).toMatch(/token is taken/);
    });

    it('gives MQTT basic credentials (MQTT_BASIC): credentialsValue is an object, and they work', async () => {
      const request = credentials({ deviceName: 'aq-basic', credentialsType: 'MQTT_BASIC', clientId: 'aq-basic-client', username: 'aq-basic-user', password: 'aq-basic-password-0001' });
      const response = await provision(request);
      expect(response).toEqual({
        credentialsValue: { clientId: 'aq-basic-client', userName: 'aq-basic-user', password: 'aq-basic-password-0001' },
        credentialsType: 'MQTT_BASIC',
        status: 'SUCCESS',
      });
      const device = await t.connect('aq-basic-user', { password: 'aq-basic-password-0001', clientId: 'aq-basic-client' });
      await device.publishAsync('v1/devices/me/telemetry', JSON.stringify({ pm10: 20 }), { qos: 1 });
      const weak = await provision(credentials({ deviceName: 'aq-basic-weak', credentialsType: 'MQTT_BASIC', username: 'weak-user', password: 'short' }));
      expect(weak).toMatchObject({ status: 'FAILURE', errorMsg: expect.stringMatching(/password must be at least 16/) });
      expect((await t.api<{ items: { name: string }[] }>('GET', '/api/v1/devices?limit=1000')).body.items.some((d) => d.name === 'aq-basic-weak')).toBe(false);
    });

    it('answers NOT_FOUND for a wrong secret, an unknown key or missing credentials', async () => {
      const before = await metric(t, 'guanlink_provisioning_total', 'status="NOT_FOUND"');
      const notFound = { errorMsg: 'Provision data was not found!', status: 'NOT_FOUND' };
      expect(await provision(credentials({ deviceName: 'aq-wrong-secret', provisionDeviceSecret: 'not-the-secret' }))).toEqual(notFound);
      expect(await provision(credentials({ deviceName: 'aq-wrong-key', provisionDeviceKey: 'no-such-key' }))).toEqual(notFound);
      expect(await provision({ deviceName: 'aq-no-credentials' })).toEqual(notFound);
      expect(await metric(t, 'guanlink_provisioning_total', 'status="NOT_FOUND"')).toBe(before + 3);
      const names = (await t.api<{ items: { name: string }[] }>('GET', '/api/v1/devices?limit=1000')).body.items.map((d) => d.name);
      expect(names).not.toContain('aq-wrong-secret');
    });

    it('answers FAILURE for a name that exists (a key never hands out an existing device’s credentials), bad JSON or X.509', async () => {
      await t.createDevice({ name: 'aq-registered-by-hand', type: 'air-quality-station' });
      const existing = await provision(credentials({ deviceName: 'aq-registered-by-hand' }));
      expect(existing.status).toBe('FAILURE');
      expect(existing.errorMsg).toMatch(/already exists/);
      expect((await provision('{not json')).status).toBe('FAILURE');
      expect((await provision(credentials({ deviceName: 'aq-x509', credentialsType: 'X509_CERTIFICATE', hash: 'abc' }))).errorMsg).toMatch(/X509_CERTIFICATE is not supported/);
      expect((await provision(credentials({ deviceName: '   ' }))).status).toBe('FAILURE');
    });

    it('a provisioning session may subscribe only to /provision/response (SUBACK failure otherwise)', async () => {
      const { client } = await provisionSession();
      const refused = (await client.subscribeAsync(['v1/devices/me/attributes', 'v1/devices/me/rpc/request/+', '#'], { qos: 1 }).catch((err: unknown) => err)) as {
        packet?: { granted: number[] };
      };
      expect(refused.packet?.granted).toEqual([128, 128, 128]); // SUBACK failure, entry by entry
      expect(client.connected).toBe(true);
    });

    it('a provisioning session that publishes anywhere else is closed, unacknowledged', async () => {
      const { client } = await provisionSession();
      const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
      let acked = false;
      client.publish('v1/devices/me/telemetry', JSON.stringify({ temperature: 20 }), { qos: 1 }, (err) => (acked = !err));
      await closed;
      expect(acked).toBe(false);
      expect(await metric(t, 'guanlink_mqtt_refusals_total', 'reason="acl"')).toBeGreaterThanOrEqual(1);
    });
  });

  describe('over MQTT (mosquitto clients)', () => {
    const target = () => ({ port: t.platform.mqttPort, username: 'provision' });

    it('mosquitto_rr provisions a device and gets its token', async () => {
      const r = await mosquittoRr(target(), {
        topic: '/provision/request',
        responseTopic: '/provision/response',
        payload: JSON.stringify(credentials({ deviceName: 'aq-mosquitto-01' })),
      });
      expect(r.messages).toHaveLength(1);
      const response = JSON.parse(r.messages[0]!.payload) as Response;
      expect(response).toMatchObject({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN' });
      const pub = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(t.platform.mqttPort), '-u', response.credentialsValue as string, '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', '{"pm25": 30}']);
      expect(pub.code).toBe(0);
    });

    it('mosquitto_rr with a wrong key gets NOT_FOUND', async () => {
      const r = await mosquittoRr(target(), {
        topic: '/provision/request',
        responseTopic: '/provision/response',
        payload: JSON.stringify(credentials({ deviceName: 'aq-mosquitto-bad', provisionDeviceKey: 'wrong-key' })),
      });
      expect(r.messages.map((m) => JSON.parse(m.payload))).toEqual([{ errorMsg: 'Provision data was not found!', status: 'NOT_FOUND' }]);
    });

    it('mosquitto_sub as a provisioning session is denied any other subscription', async () => {
      const r = await runMosquitto('mosquitto_sub', ['-h', '127.0.0.1', '-p', String(t.platform.mqttPort), '-u', 'provision', '-q', '1', '-W', '3', '-t', 'v1/devices/me/attributes']);
      expect(r.stderr).toMatch(/All subscription requests were denied/);
    });

    it('mosquitto_pub as a provisioning session publishing elsewhere loses its connection', async () => {
      const r = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(t.platform.mqttPort), '-u', 'provision', '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', '{"x": 1}']);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(/connection was lost/i);
    });
  });

  describe('over HTTP (POST /api/v1/provision, no admin key)', () => {
    it('answers as over MQTT, with HTTP 200 whatever the outcome', async () => {
      const ok = await t.api<Response>('POST', '/api/v1/provision', credentials({ deviceName: 'aq-http-01' }), { auth: false });
      expect(ok.status).toBe(200);
      expect(ok.body).toMatchObject({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN' });
      await t.connect(ok.body.credentialsValue as string);
      const bad = await t.api<Response>('POST', '/api/v1/provision', credentials({ deviceName: 'aq-http-02', provisionDeviceSecret: 'nope' }), { auth: false });
      expect(bad).toEqual({ status: 200, body: { errorMsg: 'Provision data was not found!', status: 'NOT_FOUND' } });
    });

    it('stores a location sent with the request (GuanLink extension)', async () => {
      const ok = await t.api<Response>('POST', '/api/v1/provision', credentials({ deviceName: 'aq-http-located', location: { lat: 23.05, lng: 113.74 } }), { auth: false });
      expect(ok.body.status).toBe('SUCCESS');
      const list = (await t.api<{ items: { name: string; location: unknown }[] }>('GET', '/api/v1/devices?limit=1000')).body.items;
      expect(list.find((d) => d.name === 'aq-http-located')?.location).toEqual({ lat: 23.05, lng: 113.74 });
    });
  });

  describe('keys for pre-registered devices, limits, revocation', () => {
    it('a pre-registered device claims new credentials once; its old token stops working', async () => {
      const preKey = (await t.api<CreatedKey>('POST', '/api/v1/provision-keys', { deviceType: 'noise-monitor', allowCreate: false })).body;
      const registered = await t.createDevice({ name: 'noise-humen-03', type: 'noise-monitor' });
      const claim = (extra: object) => provision({ provisionDeviceKey: preKey.key, provisionDeviceSecret: preKey.secret, ...extra });
      const response = await claim({ deviceName: 'noise-humen-03' });
      expect(response).toMatchObject({ status: 'SUCCESS', credentialsType: 'ACCESS_TOKEN' });
      expect(response.credentialsValue).not.toBe(registered.accessToken);
      await t.connect(response.credentialsValue as string);
      await expect(t.connect(registered.accessToken)).rejects.toThrow(/Not authorized|5/);
      expect((await claim({ deviceName: 'noise-humen-03' })).errorMsg).toMatch(/already provisioned/);
      expect((await claim({ deviceName: 'noise-unknown' })).errorMsg).toMatch(/no device "noise-unknown"/);
      expect((await claim({})).errorMsg).toMatch(/deviceName is required/);
    });

    it('a key with maxDevices provisions at most that many', async () => {
      const limited = (await t.api<CreatedKey>('POST', '/api/v1/provision-keys', { deviceType: 'generic', maxDevices: 1 })).body;
      const ask = (deviceName: string) => provision({ provisionDeviceKey: limited.key, provisionDeviceSecret: limited.secret, deviceName });
      expect((await ask('limited-1')).status).toBe('SUCCESS');
      const second = await ask('limited-2');
      expect(second.status).toBe('FAILURE');
      expect(second.errorMsg).toMatch(/maximum of 1/);
    });

    it('a deleted key provisions nothing more (NOT_FOUND)', async () => {
      const doomed = (await t.api<CreatedKey>('POST', '/api/v1/provision-keys', { deviceType: 'generic' })).body;
      expect((await t.api('DELETE', `/api/v1/provision-keys/${doomed.id}`)).status).toBe(204);
      expect((await t.api('DELETE', `/api/v1/provision-keys/${doomed.id}`)).status).toBe(404);
      expect((await t.api('GET', `/api/v1/provision-keys/${doomed.id}`)).status).toBe(404);
      expect((await provision({ provisionDeviceKey: doomed.key, provisionDeviceSecret: doomed.secret, deviceName: 'after-revocation' })).status).toBe('NOT_FOUND');
    });
  });
});
