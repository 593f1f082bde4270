import { testPool } from '../support/database.ts';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../core/log.ts';
import { startFleet, type Fleet } from '../../simulators/fleet.ts';
import { SIMULATED_TYPES, planFleet, readingAt, toPayload } from '../../simulators/plan.ts';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';

type Latest = Record<string, { ts: number; value: number }>;

const SEED = 4242;
const INTERVAL_MS = 200;

describe('simulated Dongguan fleet against the real platform', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let dir: string;
  let stateFile: string;
  const log = createLogger(process.env.TEST_LOG_LEVEL ?? 'silent');
  const fleets: Fleet[] = [];
  const plan = planFleet({ seed: SEED, devicesPerType: 1 });
  const bus = plan.find((d) => d.type === 'bus')!;

  /**
   * Simulated time at which the bus drives for the next minute (it may be standing at a terminus
   * for a while at the real time), so the test does not depend on the time of day it runs at.
   */
  function drivingClock(): { startMs: number } {
    const now = Date.now();
    for (let offset = 0; ; offset += 60_000) {
      const positions = Array.from({ length: 13 }, (_, i) => bus.model(now + offset + i * 5_000).position!);
      const moving = positions.slice(1).every((p, i) => p.lat !== positions[i]!.lat || p.lng !== positions[i]!.lng);
      if (moving) return { startMs: now + offset };
    }
  }

  const start = (extra: Partial<Parameters<typeof startFleet>[0]> = {}) =>
    startFleet({
      httpUrl: t.httpUrl,
      mqttUrl: t.mqttUrl,
      adminKey: t.adminKey,
      seed: SEED,
      devicesPerType: 1,
      intervalMs: INTERVAL_MS,
      stateFile,
      log,
      ...extra,
    }).then((f) => {
      fleets.push(f);
      return f;
    });

  const latest = async (id: number) => (await t.api<Latest>('GET', `/api/v1/devices/${id}/latest`)).body;
  const simDevices = async () => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM devices WHERE name LIKE 'sim-%'")).rows[0]!.n;

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
    dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-sim-e2e-'));
    stateFile = path.join(dir, 'simulators.json');
  });
  afterAll(async () => {
    await Promise.all(fleets.map((f) => f.stop()));
    await db?.end();
    await t?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('registers one device of each type, publishes over MQTT, and the platform stores exactly what was sent', async () => {
    const fleet = await start({ simulatedClock: drivingClock() });
    expect(fleet.devices.map((d) => d.type).sort()).toEqual([...SIMULATED_TYPES].sort());
    expect(fleet.devices.every((d) => d.status === 'created' && d.id! > 0)).toBe(true);
    expect(await simDevices()).toBe(10);
    const saved = JSON.parse(await readFile(stateFile, 'utf8')) as Record<string, string>;
    expect(Object.keys(saved).sort()).toEqual(plan.map((d) => d.name).sort());

    // registered like field devices: type, domain and (for fixed devices) location
    for (const d of fleet.devices) {
      const planned = plan.find((p) => p.name === d.name)!;
      const res = await t.api<{ type: string; domain: string; location: unknown }>('GET', `/api/v1/devices/${d.id}`);
      expect(res.body).toMatchObject({ type: planned.type, domain: planned.domain, location: planned.location ?? null });
    }

    // every device reports, with every declared key (nothing rejected)
    const all = await eventually(
      async () => {
        const out = new Map<string, Latest>();
        for (const d of fleet.devices) {
          const l = await latest(d.id!);
          const planned = plan.find((p) => p.name === d.name)!;
          const keys = [...Object.keys(planned.deviceType.keys), ...(planned.moving ? ['latitude', 'longitude'] : [])];
          if (!keys.every((k) => k in l)) return undefined;
          out.set(d.name, l);
        }
        return out;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );

    // the stored latest values are the model's values for that report (same seed, same numbers)
    for (const [name, l] of all) {
      const device = plan.find((p) => p.name === name)!;
      const ts = l[Object.keys(device.deviceType.keys)[0]!]!.ts;
      const expected = readingAt(device, fleet.simulatedTime(ts));
      expected.ts = ts;
      for (const [k, v] of Object.entries(toPayload(expected).values)) {
        expect(l[k], `${name}.${k}`).toEqual({ ts, value: v });
      }
    }
    const stats = fleet.stats();
    expect(stats.published).toBeGreaterThanOrEqual(10);
    expect(stats.failed).toBe(0);
    expect(stats.connected).toBe(10);
  });

  it('moves the bus along its route over time', async () => {
    const id = (await db.query<{ id: number }>('SELECT id FROM devices WHERE name = $1', [bus.name])).rows[0]!.id;
    const first = await latest(id);
    const moved = await eventually(
      async () => {
        const now = await latest(id);
        return now.latitude!.ts > first.latitude!.ts && (now.latitude!.value !== first.latitude!.value || now.longitude!.value !== first.longitude!.value)
          ? now
          : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100 },
    );
    expect(moved.speed!.value).toBeGreaterThanOrEqual(0);
    const track = (await db.query<{ lat: number; lng: number }>('SELECT lat, lng FROM readings WHERE device_id = $1 ORDER BY ts', [id])).rows;
    expect(new Set(track.map((r) => `${r.lat},${r.lng}`)).size).toBeGreaterThan(1);
  });

  it('stops cleanly and, started again with the same state file, reuses its devices and tokens', async () => {
    const first = fleets[0]!;
    await first.stop();
    const stoppedAt = Date.now();
    const count = (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM readings')).rows[0]!.n;
    await new Promise((r) => setTimeout(r, 3 * INTERVAL_MS));
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM readings')).rows[0]!.n).toBe(count); // nothing after stop()

    const again = await start();
    expect(again.devices.every((d) => d.status === 'reused')).toBe(true);
    expect(again.devices.map((d) => d.id)).toEqual(first.devices.map((d) => d.id));
    expect(await simDevices()).toBe(10);
    await eventually(
      async () => {
        for (const d of again.devices) {
          const l = await latest(d.id!);
          if (!Object.values(l).some((p) => p.ts > stoppedAt)) return undefined;
        }
        return true;
      },
      { timeoutMs: 20_000, intervalMs: 100 },
    );
    expect(again.stats().failed).toBe(0);
    await again.stop();
  });

  it('skips devices whose tokens it does not know, and survives tokens the broker refuses', async () => {
    const empty = path.join(dir, 'empty.json');
    const unknown = await start({ stateFile: empty, types: ['noise-monitor', 'bus'] });
    expect(unknown.devices.map((d) => d.status)).toEqual(['skipped', 'skipped']);
    await unknown.stop();
    expect(await simDevices()).toBe(10);

    const wrong = path.join(dir, 'wrong.json');
    const noise = plan.find((d) => d.type === 'noise-monitor')!;
    await writeFile(wrong, JSON.stringify({ [noise.name]: 'not-the-token' }));
    const refused = await start({ stateFile: wrong, types: ['noise-monitor'] });
    expect(refused.devices[0]!.status).toBe('reused');
    await new Promise((r) => setTimeout(r, 5 * INTERVAL_MS));
    expect(refused.stats()).toMatchObject({ connected: 0, published: 0 });
    await refused.stop();
  });
});
