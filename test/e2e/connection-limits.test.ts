import http from 'node:http';
import net from 'node:net';
import { readFile } from 'node:fs/promises';
import mqtt, { MqttClient, type IClientOptions } from 'mqtt';
import mqttPacket from 'mqtt-packet';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createTestDatabase, testPool, type TestDatabase } from '../support/database.ts';
import { runMosquitto } from '../support/mosquitto.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { spawnGuanlink, waitReady, type GuanlinkProcess } from '../support/process.ts';
import { storedReadings } from '../support/readings.ts';

/**
 * Issue 10, items 1 and 3: the MQTT connection layer under hostile traffic. A connection budget
 * derived from the open-file limit (CONNACK 3 beyond it), deadlines for unauthenticated and
 * provisioning connections, per-source-address limits that leave authenticated devices behind a
 * NAT alone, and memory bounded before authentication (packet and WebSocket frame limits).
 *
 * Clients are bound to loopback addresses of their own (127.0.x.y: all of 127/8 is loopback on
 * Linux) so that one address can be limited while another is not.
 */

async function metric(httpUrl: string, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ')[1]) : 0;
}
/** GET over a new connection (fetch would reuse a kept-alive one): can the server still accept one? */
function freshGet(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, timeout: 10_000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}
const refusals = (httpUrl: string, reason: string) => metric(httpUrl, 'guanlink_mqtt_refusals_total', `reason="${reason}"`);

/** A raw TCP connection from `localAddress`; `connack()` is the CONNACK return code it got, or 'closed'. */
interface Raw {
  socket: net.Socket;
  closed: Promise<void>;
  isClosed(): boolean;
  connack(): Promise<number | 'closed'>;
}
function raw(port: number, localAddress: string, first?: Buffer): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress });
    let received = Buffer.alloc(0);
    let isClosed = false;
    const closed = new Promise<void>((r) => socket.once('close', () => ((isClosed = true), r())));
    socket.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
    socket.on('error', () => {});
    socket.once('connect', () => {
      if (first) socket.write(first);
      resolve({
        socket,
        closed,
        isClosed: () => isClosed,
        connack: async () => {
          const code = await Promise.race([eventually(() => (received.length >= 4 ? received[3]! : undefined)), closed.then(() => 'closed' as const)]);
          return received.length >= 4 && received[0] === 0x20 ? received[3]! : code;
        },
      });
    });
    socket.once('error', reject);
  });
}

function connectPacket(options: { clientId: string; username?: string; password?: string; keepalive?: number }): Buffer {
  return mqttPacket.generate({
    cmd: 'connect',
    protocolId: 'MQTT',
    protocolVersion: 4,
    clean: true,
    clientId: options.clientId,
    keepalive: options.keepalive ?? 0,
    username: options.username,
    password: options.password === undefined ? undefined : Buffer.from(options.password),
  });
}

/** mqtt.js connected from `localAddress` (mqtt.connect has no option for it: a stream builder does it). */
function deviceFrom(port: number, localAddress: string, token: string, options: IClientOptions = {}): Promise<MqttClient> {
  const client = new MqttClient(() => net.connect({ host: '127.0.0.1', port, localAddress }), { username: token, reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 4, ...options });
  return new Promise((resolve, reject) => {
    client.once('connect', () => resolve(client));
    client.once('error', (err) => (client.end(true), reject(err)));
    client.once('close', () => reject(new Error('closed before CONNACK')));
  });
}

describe('deadlines: unauthenticated and provisioning connections', () => {
  let t: TestPlatform;
  const CONNECT_MS = 1000;
  const PROVISION_MS = 1500;

  beforeAll(async () => {
    t = await startTestPlatform({ mqttConnectTimeoutMs: CONNECT_MS, provisionSessionTimeoutMs: PROVISION_MS });
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('a connection that never sends CONNECT, or trickles it, is closed at MQTT_CONNECT_TIMEOUT_MS', async () => {
    const before = await refusals(t.httpUrl, 'connect_timeout');
    const idle = await raw(t.platform.mqttPort, '127.0.4.1');
    const trickler = await raw(t.platform.mqttPort, '127.0.4.2');
    const whole = connectPacket({ clientId: 'slow', username: 'whatever' });
    let sent = 0;
    const drip = setInterval(() => sent < whole.length - 1 && !trickler.isClosed() && trickler.socket.write(whole.subarray(sent, ++sent)), 100);
    try {
      await Promise.race([Promise.all([idle.closed, trickler.closed]), new Promise((_, reject) => setTimeout(() => reject(new Error('not closed')), 8000))]);
    } finally {
      clearInterval(drip);
    }
    expect(await refusals(t.httpUrl, 'connect_timeout')).toBe(before + 2);
  });

  it('a provisioning session (keepalive 0) that never asks anything is closed at PROVISION_SESSION_TIMEOUT_MS; device sessions have no deadline', async () => {
    const device = await t.createDevice({ name: 'patient-device' });
    const d = await t.connect(device.accessToken, { keepalive: 0 });
    const before = await refusals(t.httpUrl, 'provision_timeout');
    const provisioning = await mqtt.connectAsync(t.mqttUrl, { username: 'provision', keepalive: 0, reconnectPeriod: 0 });
    const closed = new Promise<void>((resolve) => provisioning.once('close', () => resolve()));
    await Promise.race([closed, new Promise((_, reject) => setTimeout(() => reject(new Error('provisioning session still open')), 10_000))]);
    expect(await refusals(t.httpUrl, 'provision_timeout')).toBe(before + 1);
    // The device, idle as long (keepalive 0), is still connected and working.
    expect(d.connected).toBe(true);
    await d.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.UTC(2026, 11, 1), values: { ok: 1 } }), { qos: 1 });
  });
});

describe('memory before authentication: packet and WebSocket frame limits', () => {
  let t: TestPlatform;

  beforeAll(async () => {
    t = await startTestPlatform(); // MQTT_MAX_CONNECT_BYTES 16 KiB, MQTT_MAX_PACKET_BYTES 1 MiB
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('a CONNECT announcing more than MQTT_MAX_CONNECT_BYTES closes the connection at its header, however slowly it comes', async () => {
    const before = await refusals(t.httpUrl, 'packet_too_large');
    // 200 KiB announced (under the 1 MiB packet limit for devices): a fixed header, then a trickle.
    const c = await raw(t.platform.mqttPort, '127.0.5.1', Buffer.from([0x10, 0x80, 0x80, 0x0c]));
    const drip = setInterval(() => !c.isClosed() && c.socket.write(Buffer.from([0x00])), 50);
    try {
      await c.closed;
    } finally {
      clearInterval(drip);
    }
    expect(await refusals(t.httpUrl, 'packet_too_large')).toBe(before + 1);
    expect(await refusals(t.httpUrl, 'connect_timeout')).toBe(0); // closed by the size limit, not by the deadline
  });

  it('CONNECT and PUBLISH written together are both handled, in order (nothing but the CONNECT is read before the CONNACK)', async () => {
    const device = await t.createDevice({ name: 'pipelining-firmware' });
    const publish = mqttPacket.generate({ cmd: 'publish', topic: 'v1/devices/me/telemetry', payload: JSON.stringify({ ts: Date.UTC(2026, 11, 2), values: { p: 1 } }), qos: 1, messageId: 7, dup: false, retain: false });
    const c = await raw(t.platform.mqttPort, '127.0.5.2', Buffer.concat([connectPacket({ clientId: 'pipe', username: device.accessToken }), publish]));
    expect(await c.connack()).toBe(0);
    const db = testPool(t.databaseUrl, 1);
    try {
      await eventually(async () => ((await storedReadings(db, device.id)).length === 1 ? true : undefined));
    } finally {
      await db.end();
    }
    c.socket.destroy();
  });

  it('over WebSocket a frame beyond the unauthenticated limit is refused from its header (1009); an authenticated device sends larger ones', async () => {
    const ws = new WebSocket(t.wsUrl, 'mqtt');
    await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
    const code = new Promise<number>((resolve) => ws.once('close', (c) => resolve(c)));
    ws.on('error', () => {});
    ws.send(Buffer.alloc(20_000, 0x10));
    expect(await code).toBe(1009); // "message too big" (RFC 6455 §7.4.1)

    const device = await t.createDevice({ name: 'websocket-device' });
    const client = await mqtt.connectAsync(t.wsUrl, { username: device.accessToken, reconnectPeriod: 0 });
    try {
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.UTC(2026, 11, 3), values: { a: 1 }, pad: 'x'.repeat(60_000) }), { qos: 1 });
      expect(client.connected).toBe(true);
    } finally {
      await client.endAsync();
    }
  });
});

describe('per source address: unauthenticated connections and connect rate', () => {
  let t: TestPlatform;

  beforeAll(async () => {
    t = await startTestPlatform({ mqttUnauthenticatedPerAddress: 10, mqttConnectRatePerAddress: '30/10min' }); // a token back every 20 s: none during a test
  });
  afterAll(async () => {
    await t?.stop();
  });

  it("the 11th unauthenticated connection from an address closes that address's oldest; other addresses and its authenticated devices are left alone", async () => {
    const port = t.platform.mqttPort;
    const devices: CreatedDevice[] = [];
    for (let i = 0; i < 4; i++) devices.push(await t.createDevice({ name: `behind-nat-${i}` }));
    // Devices behind the NAT address, authenticated: not counted against it.
    const connected = [];
    for (const d of devices.slice(0, 3)) connected.push(await deviceFrom(port, '127.0.6.1', d.accessToken));
    const before = await refusals(t.httpUrl, 'address_limit');
    const anonymous: Raw[] = [];
    for (let i = 0; i < 10; i++) anonymous.push(await raw(port, '127.0.6.1'));
    const elsewhere = await raw(port, '127.0.6.2');
    const eleventh = await raw(port, '127.0.6.1');
    await anonymous[0]!.closed; // the oldest made room
    expect(await refusals(t.httpUrl, 'address_limit')).toBe(before + 1);
    expect(anonymous.slice(1).some((c) => c.isClosed())).toBe(false);
    expect(eleventh.isClosed()).toBe(false);
    expect(elsewhere.isClosed()).toBe(false);
    // A device behind that address still gets in, with mqtt.js and with mosquitto_pub (-A: its source address).
    connected.push(await deviceFrom(port, '127.0.6.1', devices[3]!.accessToken));
    const pub = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-A', '127.0.6.1', '-p', String(port), '-V', 'mqttv311', '-u', devices[3]!.accessToken, '-i', 'mosq-nat', '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', `{"ts": ${Date.UTC(2026, 11, 4)}, "values": {"n": 1}}`]);
    expect(pub.code).toBe(0);
    expect(connected.slice(0, 3).every((c) => c.connected)).toBe(true);
    for (const c of [...anonymous, elsewhere, eleventh]) c.socket.destroy();
    await Promise.all(connected.map((c) => c.endAsync(true)));
  });

  it('connect rate (token bucket): anonymous connections beyond it are closed on arrival; devices connecting again and again are not limited', async () => {
    const port = t.platform.mqttPort;
    const device = await t.createDevice({ name: 'reconnects-a-lot' });
    // 40 connects of an authenticated device: more than the bucket holds, each gives its token back.
    for (let i = 0; i < 40; i++) await (await deviceFrom(port, '127.0.7.1', device.accessToken)).endAsync();
    const before = await refusals(t.httpUrl, 'address_rate');
    const held: Raw[] = [];
    for (let i = 0; i < 3; i++) {
      // Anonymous: provisioning sessions, answered and held (at most 10 at once from one address: older ones make room).
      const c = await raw(port, '127.0.7.1', connectPacket({ clientId: `p${i}`, username: 'provision' }));
      expect(await c.connack()).toBe(0);
      held.push(c);
    }
    // 30 in the bucket (a token back every 20 s): 3 taken by the provisioning sessions, 27 by plain
    // connections; the next one is closed on arrival. Had the device's 40 connects not given their
    // tokens back, the bucket would have been empty before the 31st of them.
    const spent: Raw[] = [];
    for (let i = 0; i < 28; i++) spent.push(await raw(port, '127.0.7.1'));
    await spent[27]!.closed; // the newest: refused on arrival (the per-address limit closes the oldest)
    expect(await refusals(t.httpUrl, 'address_rate')).toBe(before + 1);
    // Another address is not affected.
    const other = await raw(port, '127.0.7.2', connectPacket({ clientId: 'p-other', username: 'provision' }));
    expect(await other.connack()).toBe(0);
    for (const c of [...held, ...spent, other]) c.socket.destroy();
  });
});

describe('the connection budget (MQTT_MAX_CONNECTIONS)', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  const BUDGET = 6;

  beforeAll(async () => {
    t = await startTestPlatform({ maxConnections: BUDGET });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('an anonymous flood takes no place from devices: provisioning beyond the budget gets CONNACK 3, a device takes the oldest anonymous place', async () => {
    const port = t.platform.mqttPort;
    const devices: CreatedDevice[] = [];
    for (let i = 0; i < BUDGET + 1; i++) devices.push(await t.createDevice({ name: `budget-${i}` }));
    const beforeFull = await refusals(t.httpUrl, 'max_connections');
    const beforeDisplaced = await refusals(t.httpUrl, 'displaced');

    // Provisioning sessions from as many addresses, up to the budget: accepted; the next one: CONNACK 3.
    const anonymous: Raw[] = [];
    for (let i = 0; i < BUDGET; i++) {
      const c = await raw(port, `127.0.8.${i + 1}`, connectPacket({ clientId: `flood-${i}`, username: 'provision' }));
      expect(await c.connack()).toBe(0);
      anonymous.push(c);
    }
    const over = await raw(port, '127.0.8.100', connectPacket({ clientId: 'flood-over', username: 'provision' }));
    expect(await over.connack()).toBe(3);
    expect(await refusals(t.httpUrl, 'max_connections')).toBe(beforeFull + 1);

    // A device still gets in, in place of the oldest provisioning session.
    const clients = [await t.connect(devices[0]!.accessToken)];
    await anonymous[0]!.closed;
    expect(anonymous.slice(1).some((c) => c.isClosed())).toBe(false);
    expect(await refusals(t.httpUrl, 'displaced')).toBe(beforeDisplaced + 1);

    // Connections that never send a CONNECT, from more addresses, beyond every slot (the budget
    // and 32 refusal slots): each new one closes the oldest unauthenticated one.
    const idle: Raw[] = [];
    for (let i = 0; i < 60; i++) idle.push(await raw(port, `127.0.9.${i + 1}`));
    await Promise.all(anonymous.map((c) => c.closed)); // the provisioning sessions were the oldest
    expect(await metric(t.httpUrl, 'guanlink_mqtt_connections')).toBeLessThanOrEqual(BUDGET + 32);
    expect(await freshGet(`${t.httpUrl}/readyz`)).toBe(200);
    // A device still gets in, during the flood.
    clients.push(await deviceFrom(port, '127.0.0.1', devices[1]!.accessToken));

    // Devices fill the budget; beyond it a device gets CONNACK 3 (mqtt.js and mosquitto_pub).
    for (let i = 2; i < BUDGET; i++) clients.push(await t.connect(devices[i]!.accessToken));
    const refused = (await t.connect(devices[BUDGET]!.accessToken).catch((err: unknown) => err)) as { code?: number };
    expect(refused.code).toBe(3);
    const args = ['-h', '127.0.0.1', '-p', String(port), '-V', 'mqttv311', '-u', devices[BUDGET]!.accessToken, '-q', '1', '-t', 'v1/devices/me/telemetry'];
    const r = await runMosquitto('mosquitto_pub', [...args, '-m', '{"x": 1}']);
    expect(r.stderr).toMatch(/Connection Refused: broker unavailable/);
    expect(await refusals(t.httpUrl, 'max_connections')).toBe(beforeFull + 3);
    // The sessions were never displaced: every device is connected and working.
    for (const [i, c] of clients.entries()) {
      expect(c.connected).toBe(true);
      await c.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.UTC(2026, 11, 5), values: { n: i } }), { qos: 1 });
    }

    // The flood ends; a place freed is a place taken.
    for (const c of [...anonymous, over, ...idle]) c.socket.destroy();
    await clients[0]!.endAsync();
    await eventually(async () => ((await t.api<{ online: boolean }>('GET', `/api/v1/devices/${devices[0]!.id}/connectivity`)).body.online ? undefined : true));
    const late = await runMosquitto('mosquitto_pub', [...args, '-m', `{"ts": ${Date.UTC(2026, 11, 6)}, "values": {"late": 1}}`]);
    expect(late.code).toBe(0);
    expect((await storedReadings(db, devices[BUDGET]!.id)).length).toBe(1);
  });
});

/** VmHWM (peak resident memory) of a process, in bytes. */
async function peakRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

describe('guanlink process: the budget from the open-file limit, and memory under oversized frames', () => {
  const cleanups: (() => Promise<void>)[] = [];
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase();
    cleanups.push(() => database.drop());
  });
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });

  async function start(env: Record<string, string>, wrap?: string[]): Promise<GuanlinkProcess> {
    const p = await spawnGuanlink({ DATABASE_URL: database.url, DATA_DIR: `/tmp/guanlink-budget-${process.pid}-${Date.now()}`, GUANLINK_ADMIN_KEY: 'budget-test-admin-key-0123456789', ...env }, ['--no-simulators'], undefined, { wrap });
    cleanups.push(async () => {
      p.child.kill('SIGKILL');
      await p.exited;
    });
    await waitReady(p);
    return p;
  }

  it('with an open-file limit of 400, MQTT is held to what the limit leaves: a flood never takes the last descriptor', async () => {
    const p = await start({ HTTP_MAX_CONNECTIONS: '40', MQTT_UNAUTHENTICATED_PER_ADDRESS: '1000', MQTT_CONNECT_RATE_PER_ADDRESS: 'off' }, ['prlimit', '--nofile=400:400']);
    expect(await metric(p.httpUrl, 'guanlink_open_file_limit')).toBe(400);
    const budget = await metric(p.httpUrl, 'guanlink_mqtt_connection_budget');
    expect(budget).toBeGreaterThan(100);
    expect(budget).toBeLessThan(400 - 40);
    expect(p.output()).toMatch(new RegExp(`connection budget: ${budget} MQTT and 40 HTTP connections \\(open-file limit 400\\)`));
    expect(p.output()).toMatch(/open-file limit: /); // what was found and done at start
    expect(p.output()).toMatch(/raise it to \d+ \(ulimit -n, or LimitNOFILE=/); // the configured 100 000 do not fit

    const created = await fetch(`${p.httpUrl}/api/v1/devices`, {
      method: 'POST',
      headers: { authorization: 'Bearer budget-test-admin-key-0123456789', 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'legit-during-flood' }),
    });
    const device = (await created.json()) as { accessToken: string };
    // More connections than the whole limit, each holding its socket: 450 from 10 addresses.
    const port = Number(new URL(p.mqttUrl).port);
    const flood: Raw[] = [];
    for (let i = 0; i < 450; i++) flood.push(await raw(port, `127.0.10.${(i % 10) + 1}`));
    // The process still answers: readiness over a new HTTP connection, and a device's CONNECT.
    expect(await freshGet(`${p.httpUrl}/readyz`)).toBe(200);
    const d = await deviceFrom(port, '127.0.0.1', device.accessToken);
    expect(d.connected).toBe(true);
    expect(await metric(p.httpUrl, 'guanlink_descriptors_exhausted_seconds_total')).toBe(0);
    expect(await metric(p.httpUrl, 'guanlink_mqtt_connections')).toBeLessThanOrEqual(budget + 32);
    await d.endAsync(true);
    for (const c of flood) c.socket.destroy();
  });

  it('WebSocket clients sending 95 MiB frames before CONNECT are closed at the frame header: peak memory does not grow with them', async () => {
    const p = await start({});
    const url = `ws://127.0.0.1:${p.httpPort}/mqtt`;
    // Warm up the WebSocket path once with a well-behaved client.
    await new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(url, 'mqtt');
      ws.once('open', () => ws.close());
      ws.once('close', () => resolve());
      ws.once('error', reject);
    });
    const before = await peakRss(p.child.pid!);
    const frame = Buffer.alloc(95 * 1024 * 1024, 0x10);
    const codes = await Promise.all(
      Array.from(
        { length: 3 },
        () =>
          new Promise<number>((resolve) => {
            const ws = new WebSocket(url, 'mqtt');
            ws.on('error', () => {});
            ws.once('open', () => ws.send(frame));
            ws.once('close', (code) => resolve(code));
          }),
      ),
    );
    expect(codes).toEqual([1009, 1009, 1009]);
    const grown = (await peakRss(p.child.pid!)) - before;
    // Measured: about 35 MiB (the rest of each frame is read and dropped until the client ends it:
    // garbage until the next GC); before frames were limited, 560 MiB.
    expect(grown).toBeLessThan(128 * 1024 * 1024);
    expect(await freshGet(`${p.httpUrl}/readyz`)).toBe(200);
  });
});
