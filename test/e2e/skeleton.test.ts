import { testPool } from '../support/database.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import mqtt from 'mqtt';
import pg from 'pg';
import { io as ioClient } from 'socket.io-client';
import { cellToBigInt } from '../../geo/cell.ts';
import { latLngToCell } from 'h3-js';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';

type Points = Record<string, { ts: number; value: number }[]>;

describe('walking skeleton: device → broker → database → REST and live', () => {
  let t: TestPlatform;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  describe('REST devices', () => {
    it('creates a device and returns its id and access token once', async () => {
      const res = await t.api<{ id: number; accessToken: string; name: string; location: unknown }>('POST', '/api/v1/devices', {
        name: 'rest-1',
        type: 'generic',
        location: { lat: 22.98, lng: 113.75 },
      });
      expect(res.status).toBe(201);
      expect(res.body.id).toBeGreaterThan(0);
      expect(res.body.accessToken).toMatch(/^[A-Za-z0-9]{32}$/);
      expect(res.body.location).toEqual({ lat: 22.98, lng: 113.75 });
      const one = await t.api<Record<string, unknown>>('GET', `/api/v1/devices/${res.body.id}`);
      expect(one.status).toBe(200);
      expect(one.body.name).toBe('rest-1');
      expect(one.body).not.toHaveProperty('accessToken');
      const stored = await db.query('SELECT token_hash, token_lookup FROM devices WHERE id = $1', [res.body.id]);
      expect(JSON.stringify(stored.rows)).not.toContain(res.body.accessToken);
    });

    it('lists devices with cursor pagination', async () => {
      for (const n of ['page-a', 'page-b', 'page-c']) await t.createDevice({ name: n });
      const first = await t.api<{ items: { name: string }[]; nextAfter: number | null }>('GET', '/api/v1/devices?limit=2');
      expect(first.status).toBe(200);
      expect(first.body.items).toHaveLength(2);
      const rest = await t.api<{ items: { name: string }[] }>('GET', `/api/v1/devices?limit=100&after=${first.body.nextAfter}`);
      const names = [...first.body.items, ...rest.body.items].map((d) => d.name);
      expect(names).toEqual(expect.arrayContaining(['page-a', 'page-b', 'page-c']));
      expect(new Set(names).size).toBe(names.length);
    });

    it('refuses requests without a valid admin key', async () => {
      expect((await t.api('GET', '/api/v1/devices', undefined, { auth: false })).status).toBe(401);
      expect((await t.api('GET', '/api/v1/devices', undefined, { auth: 'wrong-key' })).status).toBe(401);
      expect((await t.api('POST', '/api/v1/devices', { name: 'x' }, { auth: 'wrong-key' })).status).toBe(401);
      expect((await t.api<{ items: unknown[] }>('GET', '/api/v1/devices?limit=1')).status).toBe(200);
    });

    it('rejects bad bodies with a precise 400 and changes nothing', async () => {
      const before = (await db.query('SELECT count(*)::int AS n FROM devices')).rows[0].n;
      const cases = [
        { name: '' },
        { name: 'x', location: { lat: 95, lng: 10 } },
        { name: 'x', type: 'no-such-type' },
        { name: 'x', extra: true },
      ];
      for (const body of cases) {
        const res = await t.api<{ message: string }>('POST', '/api/v1/devices', body);
        expect(res.status, JSON.stringify(body)).toBe(400);
        expect(res.body.message.length).toBeGreaterThan(5);
      }
      expect((await db.query('SELECT count(*)::int AS n FROM devices')).rows[0].n).toBe(before);
      expect((await t.api('POST', '/api/v1/devices', { name: 'rest-1' })).status).toBe(409);
      expect((await t.api('GET', '/api/v1/devices/999999')).status).toBe(404);
      expect((await t.api('GET', '/api/v1/devices/abc')).status).toBe(400);
    });
  });

  describe('device API over MQTT', () => {
    it('refuses a bad token with CONNACK "not authorized"', async () => {
      const err = await mqtt
        .connectAsync(t.mqttUrl, { username: 'not-a-token', reconnectPeriod: 0 })
        .then(() => undefined)
        .catch((e: { code?: number }) => e);
      expect(err).toBeDefined();
      expect((err as { code?: number }).code).toBe(5);
    });

    it('stores every ThingsBoard payload form and acknowledges QoS 1 only after commit', async () => {
      const device = await t.createDevice({ name: 'forms', location: { lat: 23.0, lng: 113.7 } });
      const client = await t.connect(device.accessToken);
      const t0 = Date.UTC(2026, 10, 20, 8, 0, 0);
      const payloads = [
        { temperature: 25 },
        { ts: t0, values: { temperature: 20, humidity: 60 } },
        [{ ts: t0 + 1000, values: { temperature: 21 } }, { ts: t0 + 2000, values: { temperature: 22 } }],
        [{ pressure: 1.5 }, { flow: 3 }],
      ];
      for (const p of payloads) {
        await client.publishAsync('v1/devices/me/telemetry', JSON.stringify(p), { qos: 1 });
        // PUBACK received: the readings must already be committed — no waiting here.
      }
      const rows = await storedReadings(db, device.id);
      const all = rows.flatMap((r) => Object.entries(r.values).map(([k, v]) => `${r.ts.getTime() >= t0 + 3000 ? 'now' : r.ts.getTime()}:${k}=${v}`));
      expect(all.sort()).toEqual(
        [`${t0}:temperature=20`, `${t0}:humidity=60`, `${t0 + 1000}:temperature=21`, `${t0 + 2000}:temperature=22`, 'now:temperature=25', 'now:pressure=1.5', 'now:flow=3'].sort(),
      );

      const history = await t.api<Points>('GET', `/api/v1/devices/${device.id}/telemetry?keys=temperature,humidity&from=${new Date(t0).toISOString()}&to=${new Date(t0 + 2000).toISOString()}`);
      expect(history.status).toBe(200);
      expect(history.body.temperature).toEqual([
        { ts: t0 + 2000, value: 22 },
        { ts: t0 + 1000, value: 21 },
        { ts: t0, value: 20 },
      ]);
      expect(history.body.humidity).toEqual([{ ts: t0, value: 60 }]);
      const limited = await t.api<Points>('GET', `/api/v1/devices/${device.id}/telemetry?keys=temperature&limit=2`);
      expect(limited.body.temperature).toHaveLength(2);
      expect(limited.body.temperature![0]!.value).toBe(25);

      const latest = await t.api<Record<string, { ts: number; value: number }>>('GET', `/api/v1/devices/${device.id}/latest`);
      expect(latest.status).toBe(200);
      expect(latest.body.temperature!.value).toBe(25);
      expect(latest.body.humidity).toEqual({ ts: t0, value: 60 });
      expect(latest.body.pressure!.value).toBe(1.5);
    });

    it('locates readings from latitude/longitude, else the registered location, with a res-15 H3 cell', async () => {
      const device = await t.createDevice({ name: 'tracker', location: { lat: 22.95, lng: 113.8 } });
      const client = await t.connect(device.accessToken);
      const ts = Date.UTC(2026, 10, 21, 0, 0, 0);
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts, values: { speed: 40, latitude: 23.05, longitude: 113.72, altitude: 12 } }), { qos: 1 });
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: ts + 1000, values: { speed: 41 } }), { qos: 1 });
      const rows = await storedReadings(db, device.id);
      expect(rows).toHaveLength(2);
      expect(rows[0]).toMatchObject({ lat: 23.05, lng: 113.72, alt: 12, values: { speed: 40 } });
      expect(BigInt(rows[0]!.cell!)).toBe(cellToBigInt(latLngToCell(23.05, 113.72, 15)));
      expect(rows[1]).toMatchObject({ lat: 22.95, lng: 113.8, values: { speed: 41 } });
      expect(BigInt(rows[1]!.cell!)).toBe(cellToBigInt(latLngToCell(22.95, 113.8, 15)));
      const lat = await t.api<Points>('GET', `/api/v1/devices/${device.id}/telemetry?keys=latitude,longitude`);
      expect(lat.body.latitude!.map((p) => p.value)).toEqual([22.95, 23.05]);
    });

    it('rejects a malformed payload with a reason, and other devices are not disturbed', async () => {
      const bad = await t.createDevice({ name: 'bad-payloads' });
      const good = await t.createDevice({ name: 'good-neighbour' });
      const badClient = await t.connect(bad.accessToken);
      const goodClient = await t.connect(good.accessToken);
      const errors: { errors: { reason: string }[] }[] = [];
      badClient.on('message', (topic, payload) => {
        if (topic === 'v1/devices/me/errors') errors.push(JSON.parse(payload.toString()));
      });
      await badClient.subscribeAsync('v1/devices/me/errors', { qos: 0 });
      const ts = Date.UTC(2026, 10, 22);
      const sends = [
        badClient.publishAsync('v1/devices/me/telemetry', '{not json', { qos: 1 }),
        badClient.publishAsync('v1/devices/me/telemetry', '"a string"', { qos: 1 }),
        // A string is a value (ThingsBoard's types); a number beyond a double is not.
        badClient.publishAsync('v1/devices/me/telemetry', '{"t": 1e999, "ok": 1}', { qos: 1 }),
        ...Array.from({ length: 20 }, (_, i) => goodClient.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: ts + i, values: { n: i } }), { qos: 1 })),
      ];
      await Promise.all(sends);
      const reasons = await eventually(() => (errors.length >= 3 ? errors.map((e) => e.errors[0]!.reason) : undefined));
      expect(reasons.sort()).toEqual(['invalid_json', 'invalid_shape', 'not_numeric']);
      expect(badClient.connected).toBe(true);
      const stored = await storedReadings(db, bad.id);
      expect(stored.map((r) => r.values)).toEqual([{ ok: 1 }]); // the good key of the partly bad message
      expect((await db.query('SELECT count(*)::int AS n FROM readings WHERE device_id = $1', [good.id])).rows[0].n).toBe(20);
    });

    it('works over MQTT over WebSocket', async () => {
      const device = await t.createDevice({ name: 'ws-device' });
      const client = await mqtt.connectAsync(t.wsUrl, { username: device.accessToken, reconnectPeriod: 0 });
      try {
        await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ level: 3.5 }), { qos: 1 });
      } finally {
        await client.endAsync();
      }
      expect((await storedReadings(db, device.id)).map((r) => r.values)).toEqual([{ level: 3.5 }]);
    });
  });

  describe('live streams', () => {
    it('delivers committed readings to device and domain subscribers', async () => {
      const device = await t.createDevice({ name: 'live-station', type: 'river-level-station', location: { lat: 23.03, lng: 113.74 } });
      const socket = ioClient(t.httpUrl, { auth: { token: t.adminKey }, transports: ['websocket'] });
      try {
        await new Promise<void>((resolve, reject) => {
          socket.on('connect', resolve);
          socket.on('connect_error', reject);
        });
        const received: { room: string; deviceId: number; values: Record<string, number> }[] = [];
        socket.on('readings', (batch: { deviceId: number; domain: string; values: Record<string, number> }[]) => {
          for (const r of batch) received.push({ room: r.domain, deviceId: r.deviceId, values: r.values });
        });
        const a = await socket.emitWithAck('subscribe', { device: device.id });
        const b = await socket.emitWithAck('subscribe', { domain: 'water' });
        expect(a.ok && b.ok).toBe(true);
        const client = await t.connect(device.accessToken);
        await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ water_level: 4.2 }), { qos: 1 });
        const got = await eventually(() => (received.length >= 2 ? received : undefined));
        expect(got.every((r) => r.deviceId === device.id && r.values.water_level === 4.2)).toBe(true);

        const announced = new Promise<{ id: number; domain: string; location: unknown }>((resolve) => socket.once('device', resolve));
        const later = await t.createDevice({ name: 'live-station-2', type: 'water-quality-station', location: { lat: 23.04, lng: 113.76 } });
        expect(await announced).toMatchObject({ id: later.id, domain: 'water', location: { lat: 23.04, lng: 113.76 } });

        const snapshot = await socket.emitWithAck('snapshot', null);
        const mine = snapshot.devices.find((d: { id: number }) => d.id === device.id);
        expect(mine).toMatchObject({ domain: 'water', position: { lat: 23.03, lng: 113.74 } });
      } finally {
        socket.close();
      }
    });

    it('refuses live clients without the admin key', async () => {
      const socket = ioClient(t.httpUrl, { auth: { token: 'nope' }, transports: ['websocket'], reconnection: false });
      const err = await new Promise<Error>((resolve) => socket.on('connect_error', resolve));
      expect(err.message).toMatch(/unauthorized/);
      socket.close();
    });
  });

  describe('operability', () => {
    it('answers health and readiness', async () => {
      expect((await t.api('GET', '/healthz', undefined, { auth: false })).status).toBe(200);
      const ready = await t.api<{ status: string; checks: Record<string, boolean> }>('GET', '/readyz', undefined, { auth: false });
      expect(ready.status).toBe(200);
      expect(ready.body.checks).toEqual({ database: true, broker: true, http: true });
    });

    it('names the domains in English and Chinese', async () => {
      const res = await t.api<{ name: string; label: { en: string; zh: string } }[]>('GET', '/api/v1/domains');
      expect(res.body.map((d) => d.name)).toEqual(['water', 'environment', 'traffic', 'air-space-ground', 'generic']);
      expect(res.body[3]!.label).toEqual({ en: 'Air-space-ground', zh: '空天地' });
      const config = (await (await fetch(`${t.httpUrl}/map-config.json`)).json()) as { domains: unknown };
      expect(config.domains).toEqual(res.body);
    });

    it('serves the live map page and its OpenAPI description', async () => {
      const page = await fetch(`${t.httpUrl}/`);
      expect(page.status).toBe(200);
      expect(await page.text()).toContain('maplibre');
      const openapi = await t.api<{ paths: Record<string, unknown> }>('GET', '/api/v1/openapi.json');
      expect(Object.keys(openapi.body.paths)).toEqual(expect.arrayContaining(['/api/v1/devices', '/api/v1/devices/{id}/telemetry']));
    });
  });
});
