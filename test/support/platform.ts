import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { loadConfig, type Config } from '../../core/config.ts';
import { createLogger, type Logger } from '../../core/log.ts';
import { startPlatform, type Platform } from '../../platform.ts';
import { createTestDatabase, type TestDatabase } from './database.ts';

export interface TestPlatform {
  platform: Platform;
  databaseUrl: string;
  httpUrl: string;
  mqttUrl: string;
  wsUrl: string;
  adminKey: string;
  /** JSON request to the REST API with the admin key (unless `auth: false`). */
  api<T = unknown>(method: string, urlPath: string, body?: unknown, options?: { auth?: boolean | string }): Promise<{ status: number; body: T }>;
  /** Registers a device and returns it with its access token. */
  createDevice(body: { name: string; type?: string; location?: { lat: number; lng: number; alt?: number } | null }): Promise<CreatedDevice>;
  /** A connected MQTT client authenticated with `token`; closed automatically by stop(). */
  connect(token: string, options?: IClientOptions): Promise<MqttClient>;
  stop(): Promise<void>;
}

export interface CreatedDevice {
  id: number;
  name: string;
  type: string;
  domain: string;
  location: { lat: number; lng: number; alt?: number } | null;
  accessToken: string;
}

/**
 * The whole platform in this process on its own fresh database and free ports, the way
 * `npm start` wires it (without simulators). Tests talk to it only through real MQTT and HTTP.
 */
export async function startTestPlatform(overrides: Partial<Config> = {}, options: { database?: TestDatabase; log?: Logger } = {}): Promise<TestPlatform> {
  const db = options.database ?? (await createTestDatabase());
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-data-'));
  const config = loadConfig(
    {},
    // Tests stream faster than the default per-device publish limit; the limit's own test sets it.
    { databaseUrl: db.url, dataDir, host: '127.0.0.1', mqttPort: 0, httpPort: 0, simulators: false, devicePublishRate: 'off', ...overrides },
  );
  const log = options.log ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
  const platform = await startPlatform(config, log);
  const httpUrl = `http://127.0.0.1:${platform.httpPort}`;
  const clients: MqttClient[] = [];

  const api: TestPlatform['api'] = async (method, urlPath, body, options = {}) => {
    const headers: Record<string, string> = {};
    const auth = options.auth ?? true;
    if (auth) headers.authorization = `Bearer ${typeof auth === 'string' ? auth : platform.adminKey}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${httpUrl}${urlPath}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as never };
  };

  return {
    platform,
    databaseUrl: db.url,
    httpUrl,
    mqttUrl: `mqtt://127.0.0.1:${platform.mqttPort}`,
    wsUrl: `ws://127.0.0.1:${platform.httpPort}/mqtt`,
    adminKey: platform.adminKey,
    api,
    async createDevice(body) {
      const res = await api<CreatedDevice>('POST', '/api/v1/devices', body);
      if (res.status !== 201) throw new Error(`device creation failed: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    },
    async connect(token, options = {}) {
      const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${platform.mqttPort}`, {
        username: token,
        reconnectPeriod: 0,
        connectTimeout: 5000,
        ...options,
      });
      clients.push(client);
      return client;
    },
    async stop() {
      await Promise.all(clients.map((c) => c.endAsync(true).catch(() => {})));
      await platform.stop();
      await db.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** Polls `probe` until it returns a value other than undefined (bounded). */
export async function eventually<T>(probe: () => Promise<T | undefined> | T | undefined, options: { timeoutMs?: number; intervalMs?: number } = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 10_000);
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 50));
  }
  throw new Error(`condition not met in time${last ? `: ${String(last)}` : ''}`);
}
