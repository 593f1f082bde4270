import mqtt, { type MqttClient } from 'mqtt';
import type pg from 'pg';
import { io as ioClient, type Socket } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DeviceEvent } from '../../core/connectivity.ts';
import { createTestDatabase, testPool } from '../support/database.ts';
import { startMosquitto, runMosquitto } from '../support/mosquitto.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { spawnGuanlink, waitReady, type GuanlinkProcess } from '../support/process.ts';

interface Connectivity {
  online: boolean;
  lastSeen: string | null;
  lastConnect: { at: string; address: string | null; clientId: string | null } | null;
  lastDisconnect: { at: string; reason: string | null } | null;
  events: DeviceEvent[];
}
interface LiveChange {
  deviceId: number;
  domain: string;
  online: boolean;
  at: string;
  address: string | null;
  clientId: string | null;
  reason: string | null;
  willPublished: boolean | null;
}

/** Reads one Prometheus sample from GET /metrics (0 when absent). */
async function metric(t: TestPlatform, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels ? `{${labels}}` : ''} `));
  return line ? Number(line.split(' ')[1]) : 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('connection state', () => {
  let t: TestPlatform;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestPlatform({ lastSeenFlushMs: 200 });
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  const connectivity = async (id: number) => (await t.api<Connectivity>('GET', `/api/v1/devices/${id}/connectivity`)).body;
  /** Polls the connectivity endpoint until `accept` holds. */
  const until = (id: number, accept: (c: Connectivity) => boolean, timeoutMs = 10_000) =>
    eventually(async () => {
      const c = await connectivity(id);
      return accept(c) ? c : undefined;
    }, { timeoutMs });
  /** The device's disconnect events (from the table: they outlive a deleted device). */
  const disconnects = async (id: number) =>
    (await db.query<{ reason: string; will_published: boolean; client_id: string }>(`SELECT reason, will_published, client_id FROM device_events WHERE device_id = $1 AND event = 'disconnect' ORDER BY at`, [id])).rows;
  const closed = (c: MqttClient) => new Promise<void>((resolve) => (c.connected ? c.once('close', () => resolve()) : resolve()));
  const mosquittoArgs = (d: CreatedDevice, clientId: string) => ['-h', '127.0.0.1', '-p', String(t.platform.mqttPort), '-V', 'mqttv311', '-u', d.accessToken, '-i', clientId];

  describe('mqtt.js', () => {
    it('a device that never connected is offline with no history', async () => {
      const d = await t.createDevice({ name: 'never-connected' });
      expect(await connectivity(d.id)).toEqual({ online: false, lastSeen: null, lastConnect: null, lastDisconnect: null, events: [] });
      expect((await t.api('GET', '/api/v1/devices/999999/connectivity')).status).toBe(404);
      expect((await t.api('GET', '/api/v1/devices/999999/events')).status).toBe(404);
      expect((await t.api('GET', `/api/v1/devices/${d.id}/connectivity`, undefined, { auth: false })).status).toBe(401);
    });

    it('records connect and clean disconnect with address, client id and times', async () => {
      const d = await t.createDevice({ name: 'clean-disconnect' });
      const before = Date.now();
      const c = await t.connect(d.accessToken, { clientId: 'pump-7-firmware' });
      const on = await until(d.id, (x) => x.online);
      expect(on.lastConnect).toMatchObject({ address: '127.0.0.1', clientId: 'pump-7-firmware' });
      expect(Date.parse(on.lastConnect!.at)).toBeGreaterThanOrEqual(before - 5);
      expect(on.lastSeen).not.toBeNull();
      await c.endAsync();
      const off = await until(d.id, (x) => !x.online);
      expect(off.lastDisconnect?.reason).toBe('client_disconnect');
      expect(off.events.map((e) => [e.event, e.reason, e.clientId, e.address])).toEqual([
        ['disconnect', 'client_disconnect', 'pump-7-firmware', '127.0.0.1'],
        ['connect', null, 'pump-7-firmware', '127.0.0.1'],
      ]);
      expect(off.events[0]!.willPublished).toBe(false);
    });

    it('moves last seen with traffic (also a PINGREQ) and saves it periodically', async () => {
      const d = await t.createDevice({ name: 'last-seen' });
      const c = await t.connect(d.accessToken);
      const first = (await until(d.id, (x) => x.online)).lastSeen!;
      await sleep(300);
      await c.publishAsync('v1/devices/me/telemetry', JSON.stringify({ level: 1 }), { qos: 1 });
      const second = (await connectivity(d.id)).lastSeen!;
      expect(Date.parse(second)).toBeGreaterThan(Date.parse(first));
      // Saved to the table by the periodic flush (LAST_SEEN_FLUSH_MS), not per packet.
      await eventually(async () => {
        const row = (await db.query<{ last_seen: Date }>('SELECT last_seen FROM device_connectivity WHERE device_id = $1', [d.id])).rows[0];
        return row && row.last_seen.getTime() >= Date.parse(second) ? true : undefined;
      });
      // A ping is a packet too.
      await sleep(300);
      await new Promise<void>((resolve) => {
        c.once('packetreceive', (p) => p.cmd === 'pingresp' && resolve());
        (c as unknown as { _sendPacket(p: object): void })._sendPacket({ cmd: 'pingreq' });
      });
      expect(Date.parse((await connectivity(d.id)).lastSeen!)).toBeGreaterThan(Date.parse(second));
      await c.endAsync();
      const off = await until(d.id, (x) => !x.online);
      expect(Date.parse(off.lastSeen!)).toBeGreaterThan(Date.parse(second));
    });

    it('a destroyed socket is connection_lost, and the last will is published', async () => {
      const d = await t.createDevice({ name: 'lost-with-will' });
      const c = await t.connect(d.accessToken, { will: { topic: 'v1/devices/me/telemetry', payload: Buffer.from('{"lwt": 1}'), qos: 1, retain: false } });
      await until(d.id, (x) => x.online);
      c.stream.destroy();
      const off = await until(d.id, (x) => !x.online);
      expect(off.lastDisconnect?.reason).toBe('connection_lost');
      expect(off.events[0]).toMatchObject({ event: 'disconnect', reason: 'connection_lost', willPublished: true });
      // The will went through the device API like any publish: here, telemetry.
      await eventually(async () => (await t.api<Record<string, unknown[]>>('GET', `/api/v1/devices/${d.id}/telemetry?keys=lwt`)).body.lwt?.length === 1 || undefined);
    });

    it('a device that stops sending keepalives is dropped (keepalive_timeout) after 1.5 × its keepalive', async () => {
      const d = await t.createDevice({ name: 'frozen-firmware' });
      const c = await t.connect(d.accessToken, { keepalive: 1 });
      await until(d.id, (x) => x.online);
      const frozenAt = Date.now();
      (c as unknown as { _destroyKeepaliveManager(): void })._destroyKeepaliveManager(); // the firmware hangs: no more PINGREQ
      await closed(c);
      const off = await until(d.id, (x) => !x.online);
      expect(off.lastDisconnect?.reason).toBe('keepalive_timeout');
      expect(Date.now() - frozenAt).toBeGreaterThanOrEqual(1000);
    });

    it('a second connection with the same credentials takes over (taken_over); the device stays online', async () => {
      const d = await t.createDevice({ name: 'taken-over' });
      const first = await t.connect(d.accessToken, { clientId: 'first' });
      await until(d.id, (x) => x.online);
      const firstClosed = closed(first);
      await t.connect(d.accessToken, { clientId: 'second' });
      await firstClosed;
      await eventually(async () => ((await disconnects(d.id)).length === 1 ? true : undefined));
      expect(await disconnects(d.id)).toEqual([{ reason: 'taken_over', will_published: false, client_id: 'first' }]);
      const state = await until(d.id, (x) => x.lastConnect?.clientId === 'second');
      expect(state.online).toBe(true);
    });

    it('a deleted device is disconnected at once and the event is kept', async () => {
      const d = await t.createDevice({ name: 'deleted-while-connected' });
      const c = await t.connect(d.accessToken);
      await until(d.id, (x) => x.online);
      const gone = closed(c);
      await t.platform.registry.delete(d.id);
      await gone;
      await eventually(async () => ((await disconnects(d.id)).length === 1 ? true : undefined));
      expect((await disconnects(d.id))[0]!.reason).toBe('deleted');
      expect((await t.api('GET', `/api/v1/devices/${d.id}/connectivity`)).status).toBe(404);
    });

    it('new credentials close the session (credentials_changed)', async () => {
      const d = await t.createDevice({ name: 'rotated' });
      const c = await t.connect(d.accessToken);
      await until(d.id, (x) => x.online);
      const gone = closed(c);
      await t.platform.registry.rotateToken(d.id);
      await gone;
      expect((await until(d.id, (x) => !x.online)).lastDisconnect?.reason).toBe('credentials_changed');
    });

    it('lists events newest first with from, to and limit', async () => {
      const d = await t.createDevice({ name: 'many-sessions' });
      for (let i = 0; i < 3; i++) {
        const c = await t.connect(d.accessToken, { clientId: `s${i}` });
        await until(d.id, (x) => x.online && x.lastConnect?.clientId === `s${i}`);
        await c.endAsync();
        await until(d.id, (x) => !x.online);
      }
      const all = (await t.api<DeviceEvent[]>('GET', `/api/v1/devices/${d.id}/events`)).body;
      expect(all.map((e) => `${e.event}:${e.clientId}`)).toEqual(['disconnect:s2', 'connect:s2', 'disconnect:s1', 'connect:s1', 'disconnect:s0', 'connect:s0']);
      const two = (await t.api<DeviceEvent[]>('GET', `/api/v1/devices/${d.id}/events?limit=2`)).body;
      expect(two.map((e) => e.clientId)).toEqual(['s2', 's2']);
      const middle = (await t.api<DeviceEvent[]>('GET', `/api/v1/devices/${d.id}/events?from=${encodeURIComponent(all[3]!.at)}&to=${Date.parse(all[2]!.at)}`)).body;
      expect(middle.map((e) => `${e.event}:${e.clientId}`)).toEqual(['disconnect:s1', 'connect:s1']);
      expect((await t.api('GET', `/api/v1/devices/${d.id}/events?from=yesterday`)).status).toBe(400);
    });

    it('streams connects and disconnects live to the device and domain rooms', async () => {
      const d = await t.createDevice({ name: 'live-connectivity', type: 'river-level-station', location: { lat: 23.03, lng: 113.72 } });
      const socket: Socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'] });
      try {
        const byDevice: LiveChange[] = [];
        const byDomain: LiveChange[] = [];
        const watcher: Socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'] });
        try {
          socket.on('connectivity', (c: LiveChange) => byDevice.push(c));
          watcher.on('connectivity', (c: LiveChange) => c.deviceId === d.id && byDomain.push(c));
          expect((await socket.emitWithAck('subscribe', { device: d.id })).ok).toBe(true);
          expect((await watcher.emitWithAck('subscribe', { domain: 'water' })).ok).toBe(true);
          const c = await t.connect(d.accessToken, { clientId: 'gauge-1' });
          await eventually(() => (byDevice.length === 1 && byDomain.length === 1 ? true : undefined));
          expect(byDevice[0]).toMatchObject({ deviceId: d.id, domain: 'water', online: true, clientId: 'gauge-1', address: '127.0.0.1', reason: null });
          await c.endAsync();
          await eventually(() => (byDevice.length === 2 && byDomain.length === 2 ? true : undefined));
          expect(byDevice[1]).toMatchObject({ deviceId: d.id, online: false, reason: 'client_disconnect', willPublished: false });
          expect(byDomain).toEqual(byDevice);
          // The first picture tells who is online.
          const snapshot = (await socket.emitWithAck('snapshot', null)) as { devices: { id: number; online: boolean | null }[] };
          expect(snapshot.devices.find((x) => x.id === d.id)?.online).toBe(false);
          const again = await t.connect(d.accessToken);
          await until(d.id, (x) => x.online);
          const snapshot2 = (await socket.emitWithAck('snapshot', null)) as { devices: { id: number; online: boolean | null }[] };
          expect(snapshot2.devices.find((x) => x.id === d.id)?.online).toBe(true);
          await again.endAsync();
        } finally {
          watcher.close();
        }
      } finally {
        socket.close();
      }
    });

    it('counts connects and disconnects by reason', async () => {
      const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
      expect(text).toContain('guanlink_device_connects_total');
      expect(await metric(t, 'guanlink_device_disconnects_total', 'reason="taken_over"')).toBeGreaterThanOrEqual(1);
      expect(await metric(t, 'guanlink_device_disconnects_total', 'reason="keepalive_timeout"')).toBeGreaterThanOrEqual(1);
    });
  });

  describe('mosquitto clients', () => {
    it('clean disconnect of mosquitto_pub, with its client id and address', async () => {
      const d = await t.createDevice({ name: 'mosq-clean' });
      const r = await runMosquitto('mosquitto_pub', [...mosquittoArgs(d, 'mosq-probe-1'), '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', '{"a": 1}']);
      expect(r.code).toBe(0);
      const off = await until(d.id, (x) => !x.online && x.events.length === 2);
      expect(off.events.map((e) => [e.event, e.reason, e.clientId, e.address])).toEqual([
        ['disconnect', 'client_disconnect', 'mosq-probe-1', '127.0.0.1'],
        ['connect', null, 'mosq-probe-1', '127.0.0.1'],
      ]);
    });

    it('a killed mosquitto_sub is connection_lost and its will is published', async () => {
      const d = await t.createDevice({ name: 'mosq-killed' });
      const sub = startMosquitto('mosquitto_sub', [...mosquittoArgs(d, 'mosq-will'), '-d', '-t', 'v1/devices/me/errors', '--will-topic', 'v1/devices/me/telemetry', '--will-payload', '{"lwt": 2}', '--will-qos', '1']);
      try {
        await sub.waitFor(/received SUBACK/);
        expect((await until(d.id, (x) => x.online)).lastConnect?.clientId).toBe('mosq-will');
        sub.child.kill('SIGKILL');
        const off = await until(d.id, (x) => !x.online);
        expect(off.events[0]).toMatchObject({ event: 'disconnect', reason: 'connection_lost', willPublished: true, clientId: 'mosq-will' });
      } finally {
        await sub.stop();
      }
    });

    it('a frozen mosquitto_sub (SIGSTOP) is dropped after 1.5 × its keepalive', async () => {
      const d = await t.createDevice({ name: 'mosq-frozen' });
      const sub = startMosquitto('mosquitto_sub', [...mosquittoArgs(d, 'mosq-frozen'), '-d', '-k', '5', '-t', 'v1/devices/me/errors'], { timeoutMs: 30_000 });
      try {
        await sub.waitFor(/received SUBACK/);
        await until(d.id, (x) => x.online);
        sub.child.kill('SIGSTOP');
        const off = await until(d.id, (x) => !x.online, 15_000);
        expect(off.lastDisconnect?.reason).toBe('keepalive_timeout');
      } finally {
        sub.child.kill('SIGKILL');
        await sub.exited;
      }
    });

    it('mosquitto_pub with the same token takes over a mosquitto_sub session', async () => {
      const d = await t.createDevice({ name: 'mosq-takeover' });
      const sub = startMosquitto('mosquitto_sub', [...mosquittoArgs(d, 'mosq-holder'), '-d', '-t', 'v1/devices/me/errors']);
      try {
        await sub.waitFor(/received SUBACK/);
        await until(d.id, (x) => x.online);
        const r = await runMosquitto('mosquitto_pub', [...mosquittoArgs(d, 'mosq-intruder'), '-q', '1', '-t', 'v1/devices/me/telemetry', '-m', '{"b": 1}']);
        expect(r.code).toBe(0);
        await eventually(async () => ((await disconnects(d.id)).some((e) => e.client_id === 'mosq-holder' && e.reason === 'taken_over') ? true : undefined));
      } finally {
        await sub.stop();
      }
    });

    it('a deleted device loses its mosquitto_sub session and cannot reconnect', async () => {
      const d = await t.createDevice({ name: 'mosq-deleted' });
      const sub = startMosquitto('mosquitto_sub', [...mosquittoArgs(d, 'mosq-doomed'), '-d', '-t', 'v1/devices/me/errors']);
      try {
        await sub.waitFor(/received SUBACK/);
        await until(d.id, (x) => x.online);
        await t.platform.registry.delete(d.id);
        await eventually(async () => ((await disconnects(d.id)).some((e) => e.reason === 'deleted') ? true : undefined));
        // mosquitto_sub reconnects by itself: its token is gone now (CONNACK 5).
        await sub.waitFor(/not authori[sz]ed/i, 10_000);
      } finally {
        await sub.stop();
      }
    });
  });

  it('marks offline the devices of a node whose heartbeat stopped', async () => {
    const d = await t.createDevice({ name: 'on-a-lost-node' });
    await db.query(`INSERT INTO connectivity_nodes (node_id, started_at, heartbeat_at) VALUES ('ghost-node', now() - interval '1 hour', now() - interval '10 minutes')`);
    await db.query(
      `INSERT INTO device_connectivity (device_id, online, last_seen, last_connect_at, last_connect_address, session_id, node_id)
       VALUES ($1, true, now() - interval '10 minutes', now() - interval '1 hour', '10.0.0.7', 'ghost-session', 'ghost-node')`,
      [d.id],
    );
    // (No check that it reads online first: the sweep may already have run.)
    const off = await until(d.id, (x) => !x.online);
    expect(off.lastDisconnect?.reason).toBe('node_lost');
    expect(off.events[0]).toMatchObject({ event: 'disconnect', reason: 'node_lost' });
    expect((await db.query(`SELECT 1 FROM connectivity_nodes WHERE node_id = 'ghost-node'`)).rowCount).toBe(0);
  });

  it('a node declared lost by another (its heartbeat too old) records its devices online again', async () => {
    const d = await t.createDevice({ name: 'on-a-paused-node' });
    const c = await t.connect(d.accessToken);
    await until(d.id, (x) => x.online);
    // What another node's sweep does when this one's heartbeat is too old.
    await db.query(`DELETE FROM connectivity_nodes`);
    await db.query(`UPDATE device_connectivity SET online = false, last_disconnect_reason = 'node_lost' WHERE device_id = $1`, [d.id]);
    await eventually(async () => ((await db.query(`SELECT online FROM device_connectivity WHERE device_id = $1`, [d.id])).rows[0]?.online ? true : undefined));
    expect((await db.query(`SELECT 1 FROM connectivity_nodes`)).rowCount).toBe(1);
    await c.endAsync();
    expect((await until(d.id, (x) => !x.online)).lastDisconnect?.reason).toBe('client_disconnect');
  });

  it('connect/disconnect events are pruned by retention (DEVICE_EVENTS_RETENTION_DAYS)', async () => {
    await db.query(`INSERT INTO device_events (at, device_id, event) VALUES (now() - interval '400 days', 1, 'connect')`);
    const report = (await t.api<{ deviceEvents?: { table: string; deletedRows: number; droppedChunks: string[] } }>('POST', '/api/v1/retention/apply')).body;
    expect(report.deviceEvents?.table).toBe('device_events');
    expect(report.deviceEvents!.deletedRows + report.deviceEvents!.droppedChunks.length).toBeGreaterThanOrEqual(1);
    expect((await db.query(`SELECT 1 FROM device_events WHERE at < now() - interval '300 days'`)).rowCount).toBe(0);
  });
});

/** A crash leaves rows saying "online": the node marks them offline when it starts again. */
describe('connection state across a crash of the platform (kill -9)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });

  it('marks the devices the crashed node held offline (node_lost) when it restarts', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.drop());
    const adminKey = 'connectivity-restart-admin-key-0123';
    const env = { DATABASE_URL: database.url, GUANLINK_ADMIN_KEY: adminKey, NODE_ID: 'restart-test-node', LAST_SEEN_FLUSH_MS: '200', LOG_LEVEL: 'warn' };
    const start = async () => {
      const p = await spawnGuanlink(env);
      cleanups.push(async () => void p.child.kill('SIGKILL'));
      await waitReady(p);
      return p;
    };
    const api = async <T>(p: GuanlinkProcess, method: string, urlPath: string, body?: unknown) => {
      const res = await fetch(`${p.httpUrl}${urlPath}`, {
        method,
        headers: { authorization: `Bearer ${adminKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return (await res.json()) as T;
    };
    const first = await start();
    const device = await api<{ id: number; accessToken: string }>(first, 'POST', '/api/v1/devices', { name: 'survives-a-crash' });
    const client = await mqtt.connectAsync(first.mqttUrl, { username: device.accessToken, reconnectPeriod: 0, clientId: 'crash-probe' });
    client.on('error', () => {});
    await eventually(async () => ((await api<Connectivity>(first, 'GET', `/api/v1/devices/${device.id}/connectivity`)).online ? true : undefined));
    // The connect is in the table (the API waits for it): now the node dies without closing anything.
    first.child.kill('SIGKILL');
    await first.exited;
    client.end(true);

    const second = await start();
    const state = await api<Connectivity>(second, 'GET', `/api/v1/devices/${device.id}/connectivity`);
    expect(state.online).toBe(false);
    expect(state.lastDisconnect?.reason).toBe('node_lost');
    expect(state.lastConnect?.clientId).toBe('crash-probe');
    expect(state.events.map((e) => [e.event, e.reason])).toEqual([
      ['disconnect', 'node_lost'],
      ['connect', null],
    ]);
    expect(second.output()).toMatch(/devices this node had left online/);

    // A clean stop leaves nothing online and nothing to repair.
    const again = await mqtt.connectAsync(second.mqttUrl, { username: device.accessToken, reconnectPeriod: 0 });
    again.on('error', () => {});
    await eventually(async () => ((await api<Connectivity>(second, 'GET', `/api/v1/devices/${device.id}/connectivity`)).online ? true : undefined));
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    again.end(true);
    const third = await start();
    const after = await api<Connectivity>(third, 'GET', `/api/v1/devices/${device.id}/connectivity`);
    expect(after.online).toBe(false);
    expect(after.lastDisconnect?.reason).toBe('server_shutdown');
    third.child.kill('SIGTERM');
    await third.exited;
  });
});
