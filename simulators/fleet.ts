/**
 * Runs the simulated Dongguan fleet as real clients: devices are registered through the REST
 * API (tokens kept in the state file) and each publishes its readings over its own MQTT
 * connection, exactly like a field device. What a device reports comes from plan.ts (pure);
 * this file is only registration, connections and timing.
 */
import mqtt, { type MqttClient } from 'mqtt';
import type { Logger } from '../core/log.ts';
import { planFleet, readingAt, toPayload, type SimDevice } from './plan.ts';
import { hash, hashString, hashUnit } from './random.ts';
import { StateFileError, loadTokens, saveTokens, setAsideBadState, type TokenState } from './state-file.ts';

export interface FleetOptions {
  httpUrl: string;
  mqttUrl: string;
  adminKey: string;
  seed: number;
  devicesPerType: number;
  intervalMs: number;
  stateFile: string;
  log: Logger;
  /** Only these device types (default: every simulated type). */
  types?: readonly string[];
  /** Registrations and MQTT connection attempts running at once (default 8 and 32). */
  registrationConcurrency?: number;
  connectConcurrency?: number;
  /**
   * Run the models at another time than the wall clock: at start-up the simulation is at
   * `startMs` and it advances `speed` times as fast as real time (default 1). Readings are still
   * timestamped with the real time they are sent at. Default: simulated time = real time.
   */
  simulatedClock?: { startMs: number; speed?: number };
}

export type FleetDeviceStatus = 'created' | 'reused' | 'skipped';

export interface FleetDevice {
  name: string;
  type: string;
  /** Platform id (undefined when the device was skipped before it was known). */
  id?: number;
  status: FleetDeviceStatus;
}

export interface FleetStats {
  /** Readings acknowledged by the broker (QoS 1 PUBACK). */
  published: number;
  /** Publishes that failed (connection lost before the acknowledgement). */
  failed: number;
  /** Reports not sent because the device was offline at that moment. */
  skipped: number;
  /** Devices connected right now. */
  connected: number;
}

export interface Fleet {
  stop(): Promise<void>;
  /** Every planned device and what became of it at start-up. */
  readonly devices: readonly FleetDevice[];
  stats(): FleetStats;
  /** The simulated time at which the models are evaluated for a report sent at real time `ts`. */
  simulatedTime(ts: number): number;
}

export const TELEMETRY_TOPIC = 'v1/devices/me/telemetry';
const MAX_INFLIGHT_PER_DEVICE = 10;
const RECONNECT_MIN_MS = 1000;
const RECONNECT_MAX_MS = 30_000;
const STOP_GRACE_MS = 5000;
const HTTP_TIMEOUT_MS = 15_000;

interface ApiResponse<T> {
  status: number;
  body: T;
}

interface Runner {
  device: SimDevice;
  id: number;
  token: string;
  key: number;
  client?: MqttClient;
  tickTimer?: NodeJS.Timeout;
  reconnectTimer?: NodeJS.Timeout;
  attempts: number;
  /** The broker refused the token: no more attempts. */
  refused: boolean;
  /** connect() was called (a client that never connected must not be ended). */
  started: boolean;
  inflight: number;
  /** Slot number of the last scheduled report (timers may fire a little early: never reuse a slot). */
  lastSlot: number;
}

/** Runs `work` over items with at most `limit` at once. */
async function eachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await work(item);
    }
  });
  await Promise.all(lanes);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function startFleet(opts: FleetOptions): Promise<Fleet> {
  const log = opts.log;
  if (!(opts.intervalMs > 0)) throw new Error(`intervalMs must be positive, got ${opts.intervalMs}`);
  const httpUrl = opts.httpUrl.replace(/\/+$/, '');
  const plan = planFleet({ seed: opts.seed, devicesPerType: opts.devicesPerType, types: opts.types });
  const wallStart = Date.now();
  const clock = opts.simulatedClock;
  const simulatedTime = (ts: number): number => (clock ? clock.startMs + (ts - wallStart) * (clock.speed ?? 1) : ts);

  async function api<T>(method: string, urlPath: string, body?: unknown): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { authorization: `Bearer ${opts.adminKey}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    let lastErr: unknown;
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        const res = await fetch(`${httpUrl}${urlPath}`, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
        });
        const text = await res.text();
        if (res.status >= 500) {
          lastErr = new Error(`HTTP ${res.status}: ${text.slice(0, 200)}`);
        } else {
          if (res.status === 401 || res.status === 403) throw new Error(`the platform refused the admin key (HTTP ${res.status} on ${method} ${urlPath})`);
          return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
        }
      } catch (err) {
        if (err instanceof Error && err.message.startsWith('the platform refused')) throw err;
        lastErr = err;
      }
      await sleep(250 * 2 ** attempt);
    }
    throw new Error(`${method} ${urlPath} failed: ${lastErr instanceof Error ? lastErr.message : String(lastErr)}`);
  }

  // --- state file ------------------------------------------------------------------------------
  let tokens: TokenState;
  try {
    tokens = await loadTokens(opts.stateFile);
  } catch (err) {
    if (!(err instanceof StateFileError)) throw err;
    const copy = await setAsideBadState(opts.stateFile);
    log.error({ err: err.message, copy }, 'simulator state file unreadable; kept a copy and starting without saved tokens');
    tokens = {};
  }
  let saving: Promise<void> = Promise.resolve();
  const save = () => {
    const snapshot = { ...tokens };
    saving = saving.then(() => saveTokens(opts.stateFile, snapshot));
    return saving;
  };

  // --- registration ----------------------------------------------------------------------------
  const existing = new Map<string, number>();
  for (let after = 0; ; ) {
    const page = await api<{ items: { id: number; name: string }[]; nextAfter: number | null }>('GET', `/api/v1/devices?limit=1000&after=${after}`);
    if (page.status !== 200) throw new Error(`listing devices failed: HTTP ${page.status}`);
    for (const d of page.body.items) existing.set(d.name, d.id);
    if (page.body.nextAfter === null) break;
    after = page.body.nextAfter;
  }

  const devices: FleetDevice[] = [];
  const runners: Runner[] = [];
  const accept = (device: SimDevice, id: number, token: string, status: FleetDeviceStatus) => {
    devices.push({ name: device.name, type: device.type, id, status });
    runners.push({ device, id, token, key: hash(opts.seed, hashString(device.name)), attempts: 0, refused: false, started: false, inflight: 0, lastSlot: -Infinity });
  };
  const skip = (device: SimDevice, id: number | undefined, why: string, level: 'warn' | 'error' = 'warn') => {
    devices.push(id === undefined ? { name: device.name, type: device.type, status: 'skipped' } : { name: device.name, type: device.type, id, status: 'skipped' });
    log[level]({ device: device.name, id }, why);
  };

  const toCreate: SimDevice[] = [];
  for (const device of plan) {
    const id = existing.get(device.name);
    const token = tokens[device.name];
    if (id !== undefined && token !== undefined) accept(device, id, token, 'reused');
    else if (id !== undefined) skip(device, id, 'simulated device exists but its access token is not in the state file; skipping it (rotate its token to bring it back)');
    else toCreate.push(device);
  }

  let sinceSave = 0;
  const registering = eachLimited(toCreate, opts.registrationConcurrency ?? 8, async (device) => {
    const body: Record<string, unknown> = { name: device.name, type: device.type };
    if (device.location) body.location = device.location;
    const res = await api<{ id: number; accessToken: string; message?: string }>('POST', '/api/v1/devices', body);
    if (res.status === 201) {
      tokens[device.name] = res.body.accessToken;
      accept(device, res.body.id, res.body.accessToken, 'created');
      if (++sinceSave >= 20) {
        sinceSave = 0;
        await save();
      }
    } else if (res.status === 409 && tokens[device.name] === undefined) {
      skip(device, undefined, 'simulated device was created meanwhile by someone else; its token is unknown, skipping it');
    } else if (res.status === 409) {
      // registered concurrently under a name we hold a token for: look its id up
      const id = await findId(device.name);
      if (id === undefined) skip(device, undefined, 'simulated device conflicts but cannot be found; skipping it', 'error');
      else accept(device, id, tokens[device.name]!, 'reused');
    } else {
      skip(device, undefined, `registration refused: HTTP ${res.status} ${res.body?.message ?? ''}`.trim(), 'error');
    }
  });
  try {
    await registering;
  } finally {
    // tokens are shown only once: keep those we got even when registration fails half-way
    if (toCreate.length > 0) await save();
  }

  async function findId(name: string): Promise<number | undefined> {
    for (let after = 0; ; ) {
      const page = await api<{ items: { id: number; name: string }[]; nextAfter: number | null }>('GET', `/api/v1/devices?limit=1000&after=${after}`);
      const hit = page.body.items.find((d) => d.name === name);
      if (hit) return hit.id;
      if (page.status !== 200 || page.body.nextAfter === null) return undefined;
      after = page.body.nextAfter;
    }
  }

  // keep the plan's order for callers (registration finishes out of order)
  const order = new Map(plan.map((d, i) => [d.name, i]));
  devices.sort((a, b) => order.get(a.name)! - order.get(b.name)!);
  runners.sort((a, b) => order.get(a.device.name)! - order.get(b.device.name)!);

  // --- connections and reporting ---------------------------------------------------------------
  let stopping = false;
  const stats = { published: 0, failed: 0, skipped: 0 };
  const inflight = new Set<Promise<unknown>>();

  const scheduleReconnect = (r: Runner) => {
    if (stopping || r.refused || r.reconnectTimer || !r.client) return;
    const base = Math.min(RECONNECT_MAX_MS, RECONNECT_MIN_MS * 2 ** r.attempts);
    const delay = Math.round(base * (0.75 + 0.5 * hashUnit(r.key, r.attempts))); // jitter: no thundering herd
    r.attempts++;
    log.debug({ device: r.device.name, delay }, 'MQTT reconnect scheduled');
    r.reconnectTimer = setTimeout(() => {
      r.reconnectTimer = undefined;
      if (!stopping && !r.refused) r.client?.reconnect();
    }, delay);
  };

  const createClient = (r: Runner): MqttClient => {
    const client = mqtt.connect(opts.mqttUrl, {
      username: r.token,
      clientId: `guanlink-sim-${r.id}`,
      clean: true,
      reconnectPeriod: 0, // reconnection with backoff is ours (scheduleReconnect)
      connectTimeout: 10_000,
      keepalive: 60,
      manualConnect: true,
    });
    client.on('connect', () => {
      if (r.attempts > 0) log.info({ device: r.device.name }, 'simulated device reconnected');
      r.attempts = 0;
    });
    client.on('error', (err: Error & { code?: number | string }) => {
      if (err.code === 4 || err.code === 5 || err.code === 134 || err.code === 135) {
        r.refused = true;
        log.warn({ device: r.device.name, id: r.id, err: err.message }, 'broker refused the simulated device\'s access token; it stays offline (rotate its token and update the state file)');
        client.end(true);
      } else {
        log.debug({ device: r.device.name, err: err.message }, 'MQTT error');
      }
    });
    client.on('close', () => scheduleReconnect(r));
    return client;
  };

  const publish = (r: Runner, ts: number) => {
    const client = r.client;
    if (!client?.connected || r.inflight >= MAX_INFLIGHT_PER_DEVICE) {
      stats.skipped++;
      return;
    }
    const reading = readingAt(r.device, simulatedTime(ts));
    reading.ts = ts;
    const payload = JSON.stringify(toPayload(reading));
    r.inflight++;
    const p = client
      .publishAsync(TELEMETRY_TOPIC, payload, { qos: 1 })
      .then(
        () => void stats.published++,
        (err: Error) => {
          stats.failed++;
          log.debug({ device: r.device.name, err: err.message }, 'publish failed');
        },
      )
      .finally(() => {
        r.inflight--;
        inflight.delete(p);
      });
    inflight.add(p);
  };

  /** Reports fall at n·interval + phase (epoch-aligned), so a device's timestamps are the same on every run. */
  const scheduleTick = (r: Runner) => {
    if (stopping) return;
    const offset = Math.floor(r.device.phase * opts.intervalMs);
    const now = Date.now();
    const n = Math.max(Math.floor((now - offset) / opts.intervalMs) + 1, r.lastSlot + 1);
    r.lastSlot = n;
    const ts = n * opts.intervalMs + offset;
    r.tickTimer = setTimeout(() => {
      r.tickTimer = undefined;
      if (stopping) return;
      publish(r, ts);
      scheduleTick(r);
    }, Math.max(0, ts - now));
  };

  for (const r of runners) {
    r.client = createClient(r);
    scheduleTick(r);
  }

  // Connect gradually (each connection costs the platform a token check).
  const connecting = eachLimited(runners, opts.connectConcurrency ?? 32, async (r) => {
    if (stopping) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        r.client!.off('connect', done);
        r.client!.off('close', done);
        resolve();
      };
      r.client!.on('connect', done);
      r.client!.on('close', done);
      r.started = true;
      r.client!.connect();
    });
  });

  const counts = { created: 0, reused: 0, skipped: 0 };
  for (const d of devices) counts[d.status]++;
  log.info({ ...counts, types: new Set(plan.map((d) => d.type)).size, intervalMs: opts.intervalMs, seed: opts.seed }, 'simulated Dongguan fleet started');

  let stopped: Promise<void> | undefined;
  return {
    devices,
    stats: () => ({ ...stats, connected: runners.filter((r) => r.client?.connected).length }),
    simulatedTime,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        for (const r of runners) {
          clearTimeout(r.tickTimer);
          clearTimeout(r.reconnectTimer);
        }
        // let acknowledgements of readings already sent arrive (bounded)
        await Promise.race([Promise.allSettled([...inflight]), sleep(STOP_GRACE_MS)]);
        await Promise.all(
          runners.map((r) =>
            r.client && r.started
              ? Promise.race([r.client.endAsync(inflight.size > 0).catch(() => {}), sleep(STOP_GRACE_MS).then(() => r.client!.end(true))])
              : undefined,
          ),
        );
        await connecting;
        await saving;
        log.info({ ...stats }, 'simulated Dongguan fleet stopped');
      })();
      return stopped;
    },
  };
}
