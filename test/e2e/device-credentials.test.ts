import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPool } from '../support/database.ts';
import { runMosquitto, startMosquitto, type MosquittoResult } from '../support/mosquitto.ts';
import { startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';
import { selfSignedCertificate } from '../support/tls.ts';

const TELEMETRY = 'v1/devices/me/telemetry';

/** Connects with mqtt.js; resolves with the client, or the CONNACK code / error of a refusal. */
async function tryConnect(url: string, options: IClientOptions): Promise<{ client?: MqttClient; code?: number; error?: Error }> {
  try {
    // allowRetries false: a connection closed before CONNACK rejects (instead of waiting forever).
    return { client: await mqtt.connectAsync(url, { reconnectPeriod: 0, connectTimeout: 5000, ...options }, false) };
  } catch (err) {
    return { code: (err as { code?: number }).code, error: err as Error };
  }
}

/** Resolves with the milliseconds until the client's connection closes (bounded). */
function closed(client: MqttClient, timeoutMs = 5000): Promise<number> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    if (!client.connected) return resolve(0);
    const timer = setTimeout(() => reject(new Error(`connection still open after ${timeoutMs} ms`)), timeoutMs);
    client.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

describe('device credentials and sessions over MQTT (mqtt.js and mosquitto clients)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let port: string;
  const clients: MqttClient[] = [];

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
    port = String(t.platform.mqttPort);
  });
  afterAll(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
    await db?.end();
    await t?.stop();
  });

  const connect = async (options: IClientOptions) => {
    const r = await tryConnect(t.mqttUrl, options);
    if (!r.client) throw new Error(`connect refused: ${r.code} ${r.error?.message}`);
    clients.push(r.client);
    return r.client;
  };
  /** mosquitto_pub of one QoS 1 telemetry message with the given credentials flags. */
  const pub = (flags: string[], values: Record<string, number>, extra: string[] = []) =>
    runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', port, ...flags, '-q', '1', '-t', TELEMETRY, '-m', JSON.stringify(values), ...extra]);
  /** A mosquitto_sub session (debug output) subscribed to the device's errors topic. */
  const subscribe = async (flags: string[]) => {
    const sub = startMosquitto('mosquitto_sub', ['-h', '127.0.0.1', '-p', port, ...flags, '-t', 'v1/devices/me/errors', '-q', '1', '-d'], { timeoutMs: 30_000 });
    await sub.waitFor(/received SUBACK/);
    return sub;
  };
  const values = async (id: number) => (await storedReadings(db, id)).map((r) => r.values);
  const expectRefused = (r: MosquittoResult, code: 2 | 5) => {
    expect(r.code, r.stderr).toBe(code);
    expect(r.stderr).toContain(code === 5 ? 'Connection Refused: not authorised' : 'Connection Refused: identifier rejected');
  };
  /** A mosquitto_sub session closed by the server: libmosquitto reconnects (1 s later) and is refused. */
  const expectClosedAndRefused = async (sub: Awaited<ReturnType<typeof subscribe>>, since: number) => {
    await sub.waitFor(/received CONNACK \(5\)/, 5000);
    const r = await sub.exited;
    // Connected with keepalive 60 s: a reconnect within seconds means the server closed the session.
    expect(Date.now() - since).toBeLessThan(4000);
    expect(r.stdout.match(/sending CONNECT/g)).toHaveLength(2);
    expectRefused(r, 5);
  };

  it('deleting a device closes its live sessions at once; its token is then refused (CONNACK 5)', async () => {
    const a = await t.createDevice({ name: 'del-js' });
    const b = await t.createDevice({ name: 'del-mosq' });
    const js = await connect({ username: a.accessToken });
    await js.publishAsync(TELEMETRY, JSON.stringify({ before: 1 }), { qos: 1 });
    const sub = await subscribe(['-u', b.accessToken]);

    const closing = closed(js);
    const since = Date.now();
    expect((await t.api('DELETE', `/api/v1/devices/${a.id}`)).status).toBe(204);
    expect((await t.api('DELETE', `/api/v1/devices/${b.id}`)).status).toBe(204);
    expect(await closing).toBeLessThan(1000);
    await expectClosedAndRefused(sub, since);

    expect((await tryConnect(t.mqttUrl, { username: a.accessToken })).code).toBe(5);
    expectRefused(await pub(['-u', b.accessToken], { after: 1 }), 5);
  });

  it('rotating a token closes the live sessions at once; the old token is refused, the new one works', async () => {
    // One session per device: each client gets its own device.
    const d = await t.createDevice({ name: 'rotate-js' });
    const e = await t.createDevice({ name: 'rotate-mosq' });
    const js = await connect({ username: d.accessToken });
    const sub = await subscribe(['-u', e.accessToken]);

    const closing = closed(js);
    const since = Date.now();
    const rotated = await t.api<CreatedDevice>('POST', `/api/v1/devices/${d.id}/token`);
    const rotatedE = await t.api<CreatedDevice>('POST', `/api/v1/devices/${e.id}/token`);
    expect(rotated.status).toBe(200);
    expect(await closing).toBeLessThan(1000);
    await expectClosedAndRefused(sub, since);

    expect((await tryConnect(t.mqttUrl, { username: d.accessToken })).code).toBe(5);
    expectRefused(await pub(['-u', e.accessToken], { old: 1 }), 5);

    const fresh = await connect({ username: rotated.body.accessToken });
    await fresh.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.UTC(2026, 10, 2), values: { rotated: 1 } }), { qos: 1 });
    expect(await values(d.id)).toEqual([{ rotated: 1 }]);
    const ok = await pub(['-u', rotatedE.body.accessToken], { rotated: 2 });
    expect(ok.code, ok.stderr).toBe(0);
    expect(await values(e.id)).toEqual([{ rotated: 2 }]);
  });

  describe('MQTT basic credentials', () => {
    const setCredentials = async (d: CreatedDevice, body: Record<string, string>) => {
      const res = await t.api('PUT', `/api/v1/devices/${d.id}/credentials`, body);
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    };

    it('client id alone: mqtt.js and mosquitto_pub -i connect; another client id is refused (CONNACK 2)', async () => {
      const d = await t.createDevice({ name: 'basic-client-id' });
      await setCredentials(d, { clientId: 'dg-pump-0007' });
      const js = await connect({ clientId: 'dg-pump-0007' });
      await js.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.UTC(2026, 10, 3), values: { via: 1 } }), { qos: 1 });
      await js.endAsync();
      const ok = await pub(['-i', 'dg-pump-0007'], { via: 2 });
      expect(ok.code, ok.stderr).toBe(0);
      expect((await values(d.id)).map((v) => v.via).sort()).toEqual([1, 2]);

      expect((await tryConnect(t.mqttUrl, { clientId: 'dg-pump-0008' })).code).toBe(2);
      expectRefused(await pub(['-i', 'dg-pump-0008'], { via: 3 }), 2);
      // The access token still works beside basic credentials.
      const token = await pub(['-u', d.accessToken], { via: 4 });
      expect(token.code, token.stderr).toBe(0);
    });

    it('username and password (any client id): both clients connect; a wrong password or username is refused (CONNACK 5)', async () => {
      const d = await t.createDevice({ name: 'basic-user-pass' });
      await setCredentials(d, { username: 'station-42', password: 'Dongjiang-2026!' });
      const js = await connect({ username: 'station-42', password: 'Dongjiang-2026!', clientId: 'anything-1' });
      await js.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.UTC(2026, 10, 3), values: { via: 1 } }), { qos: 1 });
      await js.endAsync();
      const ok = await pub(['-u', 'station-42', '-P', 'Dongjiang-2026!'], { via: 2 }); // mosquitto_pub's own random client id
      expect(ok.code, ok.stderr).toBe(0);
      expect((await values(d.id)).map((v) => v.via).sort()).toEqual([1, 2]);

      expect((await tryConnect(t.mqttUrl, { username: 'station-42', password: 'wrong' })).code).toBe(5);
      expect((await tryConnect(t.mqttUrl, { username: 'station-43', password: 'Dongjiang-2026!' })).code).toBe(5);
      expectRefused(await pub(['-u', 'station-42', '-P', 'wrong'], { via: 3 }), 5);
      expectRefused(await pub(['-u', 'station-43', '-P', 'Dongjiang-2026!'], { via: 3 }), 5);
    });

    it('client id, username and password: all three must match; a wrong client id or password is refused (CONNACK 5)', async () => {
      const d = await t.createDevice({ name: 'basic-all-three' });
      await setCredentials(d, { clientId: 'gate-9', username: 'gate-9-user', password: 'pw-gate-9' });
      const js = await connect({ clientId: 'gate-9', username: 'gate-9-user', password: 'pw-gate-9' });
      await js.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.UTC(2026, 10, 3), values: { via: 1 } }), { qos: 1 });
      await js.endAsync();
      const ok = await pub(['-i', 'gate-9', '-u', 'gate-9-user', '-P', 'pw-gate-9'], { via: 2 });
      expect(ok.code, ok.stderr).toBe(0);
      expect((await values(d.id)).map((v) => v.via).sort()).toEqual([1, 2]);

      expect((await tryConnect(t.mqttUrl, { clientId: 'gate-8', username: 'gate-9-user', password: 'pw-gate-9' })).code).toBe(5);
      expect((await tryConnect(t.mqttUrl, { clientId: 'gate-9', username: 'gate-9-user', password: 'nope' })).code).toBe(5);
      expectRefused(await pub(['-i', 'gate-8', '-u', 'gate-9-user', '-P', 'pw-gate-9'], { via: 3 }), 5);
      expectRefused(await pub(['-i', 'gate-9', '-u', 'gate-9-user', '-P', 'nope'], { via: 3 }), 5);
      expect((await values(d.id)).map((v) => v.via).sort()).toEqual([1, 2]);
    });

    it('changing or removing basic credentials closes the live session; removed credentials are refused', async () => {
      const d = await t.createDevice({ name: 'basic-change' });
      await setCredentials(d, { username: 'change-user', password: 'pw-1' });
      const js = await connect({ username: 'change-user', password: 'pw-1' });
      const sub = await subscribe(['-u', 'change-user', '-P', 'pw-1', '-i', 'mosq-change']);
      expect(await closed(js)).toBeLessThan(1000); // taken over by mosquitto_sub: one session per device
      const since = Date.now();
      await setCredentials(d, { username: 'change-user', password: 'pw-2' });
      await expectClosedAndRefused(sub, since); // it reconnects with the old password: refused

      const js2 = await connect({ username: 'change-user', password: 'pw-2' });
      const closing = closed(js2);
      expect((await t.api('DELETE', `/api/v1/devices/${d.id}/credentials`)).status).toBe(204);
      expect(await closing).toBeLessThan(1000);
      expect((await tryConnect(t.mqttUrl, { username: 'change-user', password: 'pw-2' })).code).toBe(5);
      expectRefused(await pub(['-u', 'change-user', '-P', 'pw-2'], { x: 1 }), 5);
    });
  });
});

describe('MQTT over TLS (mqtts)', () => {
  let dir: string;
  let t: TestPlatform;
  let db: pg.Pool;
  let ca: Buffer;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-tls-'));
    const tls = await selfSignedCertificate(dir);
    ca = tls.ca;
    t = await startTestPlatform({ mqttTlsCert: tls.cert, mqttTlsKey: tls.key, mqttsPort: 0 });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('listens for mqtts beside plain MQTT', () => {
    expect(t.platform.mqttsPort).toBeGreaterThan(0);
    expect(t.platform.mqttsPort).not.toBe(t.platform.mqttPort);
  });

  it('stores telemetry published over TLS by mqtt.js and by mosquitto_pub', async () => {
    const d = await t.createDevice({ name: 'tls-device' });
    const js = await tryConnect(`mqtts://localhost:${t.platform.mqttsPort}`, { username: d.accessToken, ca });
    expect(js.error).toBeUndefined();
    await js.client!.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.UTC(2026, 10, 4), values: { tls: 1 } }), { qos: 1 });
    await js.client!.endAsync();

    const r = await runMosquitto('mosquitto_pub', [
      ...['-h', '127.0.0.1', '-p', String(t.platform.mqttsPort), '--cafile', path.join(dir, 'cert.pem')],
      ...['-u', d.accessToken, '-q', '1', '-t', TELEMETRY, '-m', JSON.stringify({ tls: 2 })],
    ]);
    expect(r.code, r.stderr).toBe(0);
    expect((await storedReadings(db, d.id)).map((x) => x.values.tls).sort()).toEqual([1, 2]);

    // credentials are checked over TLS as anywhere
    const bad = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(t.platform.mqttsPort), '--cafile', path.join(dir, 'cert.pem'), '-u', 'wrong', '-t', TELEMETRY, '-m', '{}']);
    expect(bad.code).toBe(5);
  });

  it('refuses plain MQTT on the TLS port, and TLS with an untrusted certificate', async () => {
    const d = await t.createDevice({ name: 'tls-plain' });
    const plain = await tryConnect(`mqtt://127.0.0.1:${t.platform.mqttsPort}`, { username: d.accessToken, connectTimeout: 3000 });
    expect(plain.client).toBeUndefined();
    const mosqPlain = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(t.platform.mqttsPort), '-u', d.accessToken, '-t', TELEMETRY, '-m', '{"x":1}'], { timeoutMs: 10_000 });
    expect(mosqPlain.code).not.toBe(0);
    const untrusted = await tryConnect(`mqtts://localhost:${t.platform.mqttsPort}`, { username: d.accessToken, connectTimeout: 3000 });
    expect(untrusted.client).toBeUndefined();
    expect(untrusted.error?.message).toMatch(/self[- ]signed/i);
    expect(await storedReadings(db, d.id)).toEqual([]);
  });
});
