import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { booleanPointInPolygon } from '@turf/turf';
import type { MultiPolygon, Polygon, Position } from 'geojson';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../../simulators/random.ts';
import { createTestDatabase } from '../support/database.ts';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { spawnGuanlink, waitReady } from '../support/process.ts';

/*
 * Issue 10, item 4: legal but heavy spatial requests — the largest polygon an area may be (10 000
 * positions) and a MultiPolygon of 500 small squares — are answered (exactly) while the platform
 * stays responsive: their geometry work runs off the main thread and their SQL stays small.
 * The bounds on the event loop and on PUBACKs are generous (today's code stalls for seconds);
 * they are a property of the design, not a speed target.
 */

const CENTRE: [number, number] = [113.75, 23.02];

/** The documented maximum: 10 000 positions (9 999 vertices and the closing one), a wavy ring ~5 km across. */
function largestPolygon(): Polygon {
  const ring: Position[] = [];
  for (let i = 0; i < 9_999; i++) {
    const a = (2 * Math.PI * i) / 9_999;
    const r = 0.045 * (1 + 0.15 * Math.sin(7 * a));
    ring.push([CENTRE[0] + r * Math.cos(a), CENTRE[1] + r * Math.sin(a)]);
  }
  ring.push(ring[0]!);
  return { type: 'Polygon', coordinates: [ring] };
}

/** 500 squares of ~200 m, 25 × 20, over the same district. */
function squares(): MultiPolygon {
  const s = 0.002;
  return {
    type: 'MultiPolygon',
    coordinates: Array.from({ length: 500 }, (_, i) => {
      const [x, y] = [CENTRE[0] - 0.05 + (i % 25) * 0.004, CENTRE[1] - 0.04 + Math.floor(i / 25) * 0.004];
      return [[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]];
    }),
  };
}

/** The requests' client: sends them all at once, writes the answers (status, text) to a file. */
const CLIENT = `
import { readFileSync, writeFileSync } from 'node:fs';
const [input, output] = process.argv.slice(1);
const { url, key, requests } = JSON.parse(readFileSync(input, 'utf8'));
const pending = requests.map(async (r) => {
  const res = await fetch(url + r.path, { method: r.method, headers: { authorization: 'Bearer ' + key, 'content-type': 'application/json' }, body: JSON.stringify(r.body), signal: AbortSignal.timeout(120000) });
  return { status: res.status, text: await res.text() };
});
console.log('sent');
writeFileSync(output, JSON.stringify(await Promise.all(pending)));
`;

const DEVICES = 20;
const PER_DEVICE = 300; // 6 000 readings, as in the issue

describe('heavy legal spatial requests', () => {
  let t: TestPlatform;
  const sent: { device: number; ts: number; lng: number; lat: number }[] = [];
  const from = Date.now() - 3_600_000;
  const to = Date.now() + 60_000;
  let heartbeatToken: string;

  beforeAll(async () => {
    t = await startTestPlatform({ queryConcurrencyPerPrincipal: 20, exportConcurrencyPerPrincipal: 10 });
    const random = createRng(42).next;
    for (let d = 0; d < DEVICES; d++) {
      const device = await t.createDevice({ name: `bus-${d}`, type: 'bus' });
      const client = await t.connect(device.accessToken);
      for (let start = 0; start < PER_DEVICE; start += 100) {
        const batch = [];
        for (let i = start; i < start + 100; i++) {
          const ts = from + 1000 + i * 10_000 + d;
          const [lng, lat] = [CENTRE[0] - 0.06 + random() * 0.12, CENTRE[1] - 0.06 + random() * 0.12];
          batch.push({ ts, values: { latitude: lat, longitude: lng, speed: i % 50 } });
          sent.push({ device: device.id, ts, lng, lat });
        }
        await client.publishAsync('v1/devices/me/telemetry', JSON.stringify(batch), { qos: 1 });
      }
      await client.endAsync();
    }
    heartbeatToken = (await t.createDevice({ name: 'heartbeat', type: 'bus' })).accessToken;
  }, 120_000);
  afterAll(async () => {
    await t?.stop();
  });

  it('are answered exactly, and meanwhile the event loop and PUBACKs keep flowing', async () => {
    const areas = { polygon: largestPolygon(), squares: squares() };
    const window = { from: String(from), to: String(to) };
    const requests: { name: string; method: string; path: string; body: unknown; check: (status: number, text: string) => void }[] = [];
    for (const [name, geometry] of Object.entries(areas)) {
      const inside = sent.filter((s) => booleanPointInPolygon([s.lng, s.lat], geometry));
      expect(inside.length, name).toBeGreaterThan(name === 'polygon' ? 1000 : 100);
      const expected = inside.map((s) => `${s.device}@${s.ts}`).sort();
      const latestOf = new Map<number, (typeof sent)[number]>();
      for (const s of sent) if ((latestOf.get(s.device)?.ts ?? -Infinity) < s.ts) latestOf.set(s.device, s);
      const latestInside = [...latestOf.values()].filter((s) => booleanPointInPolygon([s.lng, s.lat], geometry)).map((s) => s.device).sort((a, b) => a - b);
      for (let copy = 0; copy < 2; copy++) {
        requests.push({
          name: `${name} latest`,
          method: 'POST',
          path: '/api/v1/spatial/latest',
          body: { geometry, format: 'json' },
          check: (status, text) => {
            expect(status, text.slice(0, 300)).toBe(200);
            // The devices whose latest position is inside.
            const devices = (JSON.parse(text) as { devices: { deviceId: number }[] }).devices;
            expect(devices.map((d) => d.deviceId)).toEqual(latestInside);
          },
        });
      }
      requests.push({
        name: `${name} history`,
        method: 'POST',
        path: '/api/v1/spatial/history',
        body: { geometry, ...window, format: 'json', limit: 100_000 },
        check: (status, text) => {
          expect(status, text.slice(0, 300)).toBe(200);
          const readings = (JSON.parse(text) as { readings: { deviceId: number; ts: number }[] }).readings;
          expect(readings.map((r) => `${r.deviceId}@${r.ts}`).sort()).toEqual(expected);
        },
      });
      requests.push({
        name: `${name} aggregate`,
        method: 'POST',
        path: '/api/v1/spatial/aggregate',
        body: { geometry, ...window, key: 'speed', resolution: 7, format: 'json' },
        check: (status, text) => {
          expect(status, text.slice(0, 300)).toBe(200);
          const rows = (JSON.parse(text) as { rows: { count: number }[] }).rows;
          expect(rows.reduce((n, r) => n + r.count, 0)).toBe(expected.length);
        },
      });
      requests.push({
        name: `${name} export`,
        method: 'POST',
        path: '/api/v1/spatial/export',
        body: { geometry, ...window, format: 'ndjson' },
        check: (status, text) => {
          expect(status, text.slice(0, 300)).toBe(200);
          const lines = text.trim().split('\n').map((l) => JSON.parse(l) as { deviceId: number; ts: number });
          expect(lines.map((r) => `${r.deviceId}@${r.ts}`).sort()).toEqual(expected);
        },
      });
    }
    // The requests come from another process (a client of their own), so that this process's
    // event loop carries the platform alone.
    const dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-heavy-'));
    await writeFile(path.join(dir, 'requests.json'), JSON.stringify({ url: t.httpUrl, key: t.adminKey, requests: requests.map((r) => ({ method: r.method, path: r.path, body: r.body })) }));
    const client = spawn(process.execPath, ['--input-type=module', '-e', CLIENT, path.join(dir, 'requests.json'), path.join(dir, 'answers.json')], { stdio: ['ignore', 'pipe', 'pipe'] });
    let clientOutput = '';
    client.stdout.on('data', (d: Buffer) => (clientOutput += d.toString()));
    client.stderr.on('data', (d: Buffer) => (clientOutput += d.toString()));
    const clientDone = new Promise<number | null>((resolve) => client.on('exit', resolve));

    const heartbeat = await t.connect(heartbeatToken);
    // Measured once the client has sent its requests (its start-up is not the platform's).
    await eventually(() => (clientOutput.includes('sent') ? true : undefined), { timeoutMs: 30_000 });
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    let running = true;
    void clientDone.then(() => (running = false));
    const pubacks: number[] = [];
    // QoS 1 publishes one after another while the requests run: each PUBACK's latency.
    for (let i = 0; running && i < 10_000; i++) {
      const sentAt = performance.now();
      await heartbeat.publishAsync('v1/devices/me/telemetry', JSON.stringify({ seq: i }), { qos: 1 });
      if (running) pubacks.push(performance.now() - sentAt);
      await new Promise((r) => setTimeout(r, 20));
    }
    loop.disable();
    expect(await clientDone, clientOutput).toBe(0);
    const answers = JSON.parse(await readFile(path.join(dir, 'answers.json'), 'utf8')) as { status: number; text: string }[];
    await rm(dir, { recursive: true, force: true });

    answers.forEach((a, i) => requests[i]!.check(a.status, a.text));
    // Several PUBACKs arrived while the requests were running, none of them held up for long.
    expect(pubacks.length).toBeGreaterThan(3);
    expect(Math.max(...pubacks)).toBeLessThan(1000);
    expect(loop.max / 1e6).toBeLessThan(1000);
  }, 180_000);

  it('refuses an area too costly to test with 413 and the reason, before any database work', async () => {
    // A star whose 5 000 spikes all span its centre latitude: every position test would examine thousands of edges.
    const ring: Position[] = [];
    for (let i = 0; i < 9_998; i++) {
      const a = (2 * Math.PI * i) / 9_998;
      const r = i % 2 === 0 ? 0.05 : 0.001;
      ring.push([CENTRE[0] + r * Math.cos(a), CENTRE[1] + r * Math.sin(a)]);
    }
    ring.push(ring[0]!);
    for (const route of ['history', 'latest', 'aggregate', 'export']) {
      const res = await t.api<{ code: string; message: string }>('POST', `/api/v1/spatial/${route}`, { geometry: { type: 'Polygon', coordinates: [ring] }, key: 'speed', resolution: 7 });
      expect(res.status, route).toBe(413);
      expect(res.body.code).toBe('area_too_complex');
      expect(res.body.message).toMatch(/a line of latitude meets up to \d+ of its 9998 edges.*at most 2000/);
    }
  }, 60_000);
});

describe('the bundled platform (npm start)', () => {
  it('runs the geometry work on its worker thread (dist/geometry-worker.mjs)', async () => {
    const db = await createTestDatabase();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-data-'));
    const adminKey = 'gl_test_admin_key_for_the_geometry_worker_0001';
    const p = await spawnGuanlink({ DATA_DIR: dataDir, DATABASE_URL: db.url, GUANLINK_ADMIN_KEY: adminKey, GEOMETRY_THREADS: '1' });
    try {
      await waitReady(p);
      const post = (body: unknown) =>
        fetch(`${p.httpUrl}/api/v1/spatial/history`, { method: 'POST', headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
      const ok = await post({ geometry: largestPolygon() });
      expect(ok.status, await ok.clone().text()).toBe(200);
      const bowtie = await post({ geometry: { type: 'Polygon', coordinates: [[[113.75, 23.0], [113.76, 23.01], [113.76, 23.0], [113.75, 23.01], [113.75, 23.0]]] } });
      expect(bowtie.status).toBe(400);
      expect(((await bowtie.json()) as { message: string }).message).toMatch(/intersects itself/);
      expect(p.output()).not.toMatch(/geometry worker failed/);
      // The work ran on a worker thread, which is still there (idle threads stay a minute).
      const metrics = await (await fetch(`${p.httpUrl}/metrics`)).text();
      expect(metrics).toMatch(/^guanlink_geometry_threads 1$/m);
    } finally {
      p.child.kill('SIGTERM');
      await p.exited;
      await rm(dataDir, { recursive: true, force: true });
      await db.drop();
    }
  }, 120_000);
});
