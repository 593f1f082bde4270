import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { MqttClient, type IClientOptions } from 'mqtt';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPool } from '../support/database.ts';
import { runMosquitto } from '../support/mosquitto.ts';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';

/**
 * Failed credentials are throttled per source address and per credential, answered from memory
 * once blocked (no lookup, no scrypt), and unknown credentials are cached as unknown.
 *
 * Each client connects from a loopback address of its own (127.0.0.0/8 is all loopback on Linux:
 * mqtt.js through its stream builder, mosquitto_pub -A, http.request localAddress), so each test
 * has its own sources. That no lookup is made is read from guanlink_auth_lookups_total and
 * guanlink_auth_hash_checks_total, not from timings.
 */

const TELEMETRY = 'v1/devices/me/telemetry';
const sha256Prefix = (token: string) => createHash('sha256').update(token).digest('hex').slice(0, 16);
const randomKey = () => `glk_${randomBytes(32).toString('base64url')}`;

describe('throttling of failed credentials, negative caching, keyed token lookups', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    // Small limits, so that a test reaches them in a few attempts: the first block then lasts
    // 10 min / 4 = 150 s (per source) or 10 min / 3 = 200 s (per credential), longer than any test.
    t = await startTestPlatform({ authFailuresPerSource: '4/10min', authFailuresPerCredential: '3/10min', authNegativeCacheMs: 600_000 });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
    await db?.end();
    await t?.stop();
  });

  /** One sample of GET /metrics whose labels include `labels` (0 when absent). */
  async function metric(name: string, labels: Record<string, string>): Promise<number> {
    const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
    const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
    const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && wanted.every((w) => l.slice(0, l.indexOf('}')).includes(w)));
    return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
  }
  const lookups = (store: string) => metric('guanlink_auth_lookups_total', { store });
  const hashChecks = (store: string) => metric('guanlink_auth_hash_checks_total', { store });
  const throttled = (via: string, limit: string) => metric('guanlink_auth_throttled_total', { via, limit });

  /** An MQTT CONNECT (mqtt.js) from `localAddress`: the client, or the CONNACK code of the refusal (-1: closed without one). */
  function connectFrom(localAddress: string, options: IClientOptions): Promise<{ client?: MqttClient; code?: number }> {
    const port = t.platform.mqttPort;
    const client = new MqttClient(() => net.createConnection({ host: '127.0.0.1', port, localAddress }), { reconnectPeriod: 0, connectTimeout: 5000, ...options });
    return new Promise((resolve) => {
      client.once('connect', () => {
        clients.push(client);
        resolve({ client });
      });
      client.once('error', (err) => {
        client.end(true);
        resolve({ code: (err as { code?: number }).code ?? -1 });
      });
      client.once('close', () => resolve({ code: -1 }));
    });
  }

  /** An HTTP request from `localAddress`. */
  function request(localAddress: string, method: string, path: string, options: { auth?: string; body?: unknown } = {}) {
    return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Record<string, unknown> }>((resolve, reject) => {
      const headers: Record<string, string> = {};
      if (options.auth) headers.authorization = `Bearer ${options.auth}`;
      if (options.body !== undefined) headers['content-type'] = 'application/json';
      const req = http.request({ host: '127.0.0.1', port: t.platform.httpPort, method, path, localAddress, headers }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (d: string) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: text ? JSON.parse(text) : {} }));
      });
      req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')));
      req.on('error', reject);
      req.end(options.body === undefined ? undefined : JSON.stringify(options.body));
    });
  }

  /** A provisioning request over MQTT from `localAddress` (session `provision`); its answer. */
  async function provisionOverMqtt(localAddress: string, body: unknown): Promise<Record<string, unknown>> {
    const { client } = await connectFrom(localAddress, { username: 'provision' });
    expect(client).toBeDefined();
    const answers: Record<string, unknown>[] = [];
    client!.on('message', (_topic, payload) => answers.push(JSON.parse(payload.toString())));
    await client!.subscribeAsync('/provision/response', { qos: 1 });
    await client!.publishAsync('/provision/request', JSON.stringify(body), { qos: 1 });
    return eventually(() => answers[0]);
  }

  const provisionKey = async (deviceType = 'generic') => {
    const res = await t.api<{ key: string; secret: string }>('POST', '/api/v1/provision-keys', { deviceType });
    expect(res.status).toBe(201);
    return res.body;
  };

  describe('MQTT', () => {
    it('after 4 wrong tokens from one address it is refused unchecked (no lookup), whatever the client; the right token works from elsewhere, then from there too', async () => {
      const device = await t.createDevice({ name: 'throttle-token' });
      const A = '127.0.10.1';
      const before = await lookups('devices');
      for (let i = 0; i < 4; i++) expect((await connectFrom(A, { username: `wrong-token-${i}-${randomBytes(6).toString('hex')}` })).code).toBe(5);
      expect(await lookups('devices')).toBe(before + 4);

      const refusedBefore = await throttled('mqtt', 'source');
      for (let i = 0; i < 3; i++) expect((await connectFrom(A, { username: `more-wrong-${i}-${randomBytes(6).toString('hex')}` })).code).toBe(5);
      const pub = await runMosquitto('mosquitto_pub', ['-A', A, '-h', '127.0.0.1', '-p', String(t.platform.mqttPort), '-V', 'mqttv311', '-u', 'mosquitto-wrong-token', '-q', '1', '-t', TELEMETRY, '-m', '{"x": 1}']);
      expect(pub.code).not.toBe(0);
      expect(pub.stderr).toMatch(/not authori[sz]ed/i);
      // The device's own token, never verified on this node, is held back from that address too.
      expect((await connectFrom(A, { username: device.accessToken })).code).toBe(5);
      expect(await lookups('devices')).toBe(before + 4);
      expect(await throttled('mqtt', 'source')).toBe(refusedBefore + 5);

      // From another address the token is looked up, proved, and the device publishes.
      const elsewhere = await connectFrom('127.0.10.2', { username: device.accessToken });
      expect(elsewhere.client).toBeDefined();
      expect(await lookups('devices')).toBe(before + 5);
      await elsewhere.client!.publishAsync(TELEMETRY, JSON.stringify({ temperature: 21 }), { qos: 1 });
      await elsewhere.client!.endAsync();
      // Verified on this node, it is recognised in memory: the blocked address does not keep its device out.
      const back = await connectFrom(A, { username: device.accessToken });
      expect(back.client).toBeDefined();
      expect(await throttled('mqtt', 'source')).toBe(refusedBefore + 5);
      // MQTT 5 clients are told why: 0x9F connection rate exceeded from the throttled address, 0x86 elsewhere.
      expect((await connectFrom(A, { username: `v5-wrong-${randomBytes(6).toString('hex')}`, protocolVersion: 5 })).code).toBe(0x9f);
      expect((await connectFrom('127.0.10.3', { username: `v5-wrong-${randomBytes(6).toString('hex')}`, protocolVersion: 5 })).code).toBe(0x86);
    });

    it('a username is blocked after 3 wrong passwords from any addresses; a success resets its count; its device still connects', async () => {
      const device = await t.createDevice({ name: 'throttle-basic' });
      expect((await t.api('PUT', `/api/v1/devices/${device.id}/credentials`, { username: 'throttle-user', password: 'the-right-password-0001' })).status).toBe(200);
      // Every attempt from an address of its own: only the username's limit can apply.
      let n = 0;
      const fresh = () => `127.0.11.${++n}`;
      const wrong = async () => (await connectFrom(fresh(), { username: 'throttle-user', password: `wrong-password-${n}` })).code;
      const right = async () => {
        const { client } = await connectFrom(fresh(), { username: 'throttle-user', password: 'the-right-password-0001' });
        expect(client).toBeDefined();
        await client!.endAsync();
      };
      const h0 = await hashChecks('devices');
      expect(await wrong()).toBe(5);
      expect(await wrong()).toBe(5);
      await right(); // resets the username's count
      expect(await wrong()).toBe(5);
      expect(await wrong()).toBe(5);
      expect(await hashChecks('devices')).toBe(h0 + 5); // each one checked: 2 failures since the success, not 4
      expect(await wrong()).toBe(5); // the third: checked, and the username is blocked
      const blockedBefore = await throttled('mqtt', 'credential');
      expect(await wrong()).toBe(5);
      expect(await wrong()).toBe(5);
      expect(await hashChecks('devices')).toBe(h0 + 6);
      expect(await throttled('mqtt', 'credential')).toBe(blockedBefore + 2);
      // The right password, verified before, is recognised without a hash: guessing at a username does not lock its device out.
      await right();
      expect(await hashChecks('devices')).toBe(h0 + 6);
    });

    it('an unknown token is looked up once, then answered from the negative cache until a device is created with it', async () => {
      const key = await provisionKey();
      const token = `dg-chosen-${randomBytes(12).toString('hex')}`;
      const before = await lookups('devices');
      expect((await connectFrom('127.0.12.1', { username: token })).code).toBe(5);
      expect((await connectFrom('127.0.12.2', { username: token })).code).toBe(5);
      expect(await lookups('devices')).toBe(before + 1);

      const answer = await request('127.0.12.3', 'POST', '/api/v1/provision', {
        body: { provisionDeviceKey: key.key, provisionDeviceSecret: key.secret, deviceName: 'negative-cache-device', token },
      });
      expect(answer.body).toEqual({ credentialsValue: token, credentialsType: 'ACCESS_TOKEN', status: 'SUCCESS' });
      // The cache entry went with the device's creation (AUTH_NEGATIVE_CACHE_MS is 10 min here).
      const { client } = await connectFrom('127.0.12.4', { username: token });
      expect(client).toBeDefined();
      expect(await lookups('devices')).toBe(before + 2);

      // Stored under a keyed lookup: neither the token nor its unsalted SHA-256 prefix.
      const { rows } = await db.query<{ token_lookup: string; token_hash: string }>("SELECT token_lookup, token_hash FROM devices WHERE name = 'negative-cache-device'");
      expect(rows[0]!.token_lookup).toMatch(/^k1\.[A-Za-z0-9_-]{22}$/);
      expect(rows[0]!.token_lookup).not.toContain(sha256Prefix(token));
      expect(JSON.stringify(rows)).not.toContain(token);
    });

    it('a row written before keyed lookups (a SHA-256 prefix) still authenticates and is rewritten; its token cannot be chosen again', async () => {
      const key = await provisionKey();
      const device = await t.createDevice({ name: 'legacy-lookup' });
      await db.query('UPDATE devices SET token_lookup = $2 WHERE id = $1', [device.id, sha256Prefix(device.accessToken)]);
      const taken = await request('127.0.15.1', 'POST', '/api/v1/provision', {
        body: { provisionDeviceKey: key.key, provisionDeviceSecret: key.secret, deviceName: 'legacy-twin', token: device.accessToken },
      });
      expect(taken.body).toEqual({ errorMsg: 'Failed to provision device! that access token is taken', status: 'FAILURE' });

      const { client } = await connectFrom('127.0.15.2', { username: device.accessToken });
      expect(client).toBeDefined();
      const { rows } = await db.query<{ token_lookup: string }>('SELECT token_lookup FROM devices WHERE id = $1', [device.id]);
      expect(rows[0]!.token_lookup).toMatch(/^k1\./);
      await client!.endAsync();
      expect((await connectFrom('127.0.15.3', { username: device.accessToken })).client).toBeDefined();
    });
  });

  describe('REST API keys', () => {
    it('after 4 unknown keys from one address: 429 with Retry-After and no lookup; a real key works from elsewhere, then from there; the admin key always', async () => {
      const A = '127.0.13.1';
      const before = await lookups('api_keys');
      const guesses = Array.from({ length: 4 }, randomKey);
      for (const guess of guesses) {
        const res = await request(A, 'GET', '/api/v1/devices', { auth: guess });
        expect(res.status).toBe(401);
        expect(res.body.message).toBe('unknown API key');
      }
      expect(await lookups('api_keys')).toBe(before + 4);
      // The same unknown key from another address: answered from the negative cache.
      expect((await request('127.0.13.9', 'GET', '/api/v1/devices', { auth: guesses[0] })).status).toBe(401);
      expect(await lookups('api_keys')).toBe(before + 4);

      const blocked = await request(A, 'GET', '/api/v1/devices', { auth: randomKey() });
      expect(blocked.status).toBe(429);
      expect(Number(blocked.headers['retry-after'])).toBeGreaterThan(0);
      expect(blocked.body.message).toMatch(/too many failed attempts from this address: retry in \d+ s/);
      const created = await t.api<{ key: string }>('POST', '/api/v1/keys', { name: 'throttle test', owner: 'test', roles: ['operator'] });
      expect(created.status).toBe(201);
      expect((await request(A, 'GET', '/api/v1/devices', { auth: created.body.key })).status).toBe(429); // never verified on this node
      expect((await request(A, 'GET', '/api/v1/me', { auth: randomKey() })).status).toBe(429);
      expect(await lookups('api_keys')).toBe(before + 4);

      expect((await request('127.0.13.2', 'GET', '/api/v1/devices', { auth: created.body.key })).status).toBe(200);
      expect((await request(A, 'GET', '/api/v1/devices', { auth: created.body.key })).status).toBe(200);
      expect((await request(A, 'GET', '/api/v1/devices', { auth: t.adminKey })).status).toBe(200);
      expect(await throttled('rest', 'source')).toBe(3);
    });

    it('an application session (guanlink-app) with unknown keys is throttled the same way', async () => {
      const A = '127.0.16.1';
      for (let i = 0; i < 4; i++) expect((await connectFrom(A, { username: 'guanlink-app', password: randomKey() })).code).toBe(5);
      const before = await lookups('api_keys');
      expect((await connectFrom(A, { username: 'guanlink-app', password: randomKey() })).code).toBe(5);
      expect(await lookups('api_keys')).toBe(before);
      expect(await throttled('mqtt', 'source')).toBeGreaterThanOrEqual(1);
    });
  });

  describe('provisioning', () => {
    it('after 4 wrong secrets from one address it is answered FAILURE unchecked; the right secret works from elsewhere, then from there without a hash', async () => {
      const key = await provisionKey();
      const A = '127.0.14.1';
      const ask = (secret: string, deviceName: string) => request(A, 'POST', '/api/v1/provision', { body: { provisionDeviceKey: key.key, provisionDeviceSecret: secret, deviceName } });
      const [l0, h0] = [await lookups('provision_keys'), await hashChecks('provision_keys')];
      for (let i = 0; i < 4; i++) expect((await ask(`wrong-secret-${i}`, `prov-wrong-${i}`)).body).toEqual({ errorMsg: 'Provision data was not found!', status: 'NOT_FOUND' });
      expect([await lookups('provision_keys'), await hashChecks('provision_keys')]).toEqual([l0 + 4, h0 + 4]);

      const refused = await ask(key.secret, 'prov-held-back');
      expect(refused.status).toBe(200);
      expect(refused.body).toEqual({ errorMsg: expect.stringMatching(/^Failed to provision device! too many failed attempts from this address: retry in \d+ s$/), status: 'FAILURE' });
      expect([await lookups('provision_keys'), await hashChecks('provision_keys')]).toEqual([l0 + 4, h0 + 4]);
      expect(await throttled('provision', 'source')).toBe(1);

      expect(await provisionOverMqtt('127.0.14.2', { provisionDeviceKey: key.key, provisionDeviceSecret: key.secret, deviceName: 'prov-elsewhere' })).toMatchObject({ status: 'SUCCESS' });
      expect([await lookups('provision_keys'), await hashChecks('provision_keys')]).toEqual([l0 + 5, h0 + 5]);
      // The pair was proved on this node: it passes the blocked address's gate, without another hash.
      expect((await ask(key.secret, 'prov-after')).body).toMatchObject({ status: 'SUCCESS' });
      expect([await lookups('provision_keys'), await hashChecks('provision_keys')]).toEqual([l0 + 6, h0 + 5]);
    });

    it('refuses a chosen token that is short or repetitive (ThingsBoard FAILURE)', async () => {
      const key = await provisionKey();
      const ask = (token: string, deviceName: string) => request('127.0.17.1', 'POST', '/api/v1/provision', { body: { provisionDeviceKey: key.key, provisionDeviceSecret: key.secret, deviceName, token } });
      expect((await ask('dg-aq-0000-00001', 'short-token')).body).toEqual({ errorMsg: 'Failed to provision device! token must be at least 20 characters (omit it to get a random one)', status: 'FAILURE' });
      expect((await ask('abababababababababababab', 'repetitive-token')).body).toEqual({
        errorMsg: 'Failed to provision device! token is too repetitive: use at least 5 different characters (omit it to get a random one)',
        status: 'FAILURE',
      });
      expect((await ask('dg-aq-0000-0000-0042', 'long-enough-token')).body).toMatchObject({ status: 'SUCCESS' });
    });
  });
});
