import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse as parseCsv } from 'csv-parse/sync';
import { latLngToCell } from 'h3-js';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storageCell } from '../../geo/cell.ts';
import { copyReadings } from '../../ingest/copy.ts';
import { loadReadings } from '../support/readings.ts';
import type { Reading } from '../../ingest/readings.ts';
import { createTestDatabase, testPool, type TestDatabase } from '../support/database.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { spawnGuanlink, waitReady, type GuanlinkProcess } from '../support/process.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A square in Dongguan; its west edge is the meridian 113.70. */
const SQUARE = {
  type: 'Polygon',
  coordinates: [
    [
      [113.7, 23.0],
      [113.72, 23.0],
      [113.72, 23.02],
      [113.7, 23.02],
      [113.7, 23.0],
    ],
  ],
};
const GEOMETRY = encodeURIComponent(JSON.stringify(SQUARE));

interface ExportLine {
  deviceId: number;
  name: string;
  type: string;
  domain: string;
  ts: number;
  time: string;
  lat: number;
  lng: number;
  alt: number | null;
  cell: string;
  values: Record<string, number>;
}

/** Reads a whole response body as text. */
async function get(t: TestPlatform, query: string, init: RequestInit = {}) {
  const res = await fetch(`${t.httpUrl}/api/v1/spatial/export?${query}`, { ...init, headers: { authorization: `Bearer ${t.adminKey}`, ...init.headers } });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

describe('spatial export: formats, filters and errors', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let bus: CreatedDevice;
  let aqIn: CreatedDevice;
  let aqOut: CreatedDevice;
  let odd: CreatedDevice;
  // Whole seconds an hour ago: every reading inside the default and the explicit windows.
  const t0 = Math.floor(Date.now() / 1000) * 1000 - 3_600_000;
  const window = `from=${t0 - 1000}&to=${t0 + 60_000}`;
  let expected: ExportLine[];

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
    bus = await t.createDevice({ name: 'bus-东城-1', type: 'bus' });
    aqIn = await t.createDevice({ name: 'aq-inside', type: 'air-quality-station', location: { lat: 23.012, lng: 113.715 } });
    aqOut = await t.createDevice({ name: 'aq-outside', type: 'air-quality-station', location: { lat: 23.05, lng: 113.75 } });
    odd = await t.createDevice({ name: 'odd, "quoted" name', type: 'generic', location: { lat: 23.019, lng: 113.71 } });

    const publish = async (d: CreatedDevice, messages: { ts: number; values: Record<string, number> }[]) => {
      const client = await t.connect(d.accessToken);
      for (const m of messages) await client.publishAsync('v1/devices/me/telemetry', JSON.stringify(m), { qos: 1 });
    };
    await publish(bus, [
      { ts: t0, values: { latitude: 23.01, longitude: 113.71, altitude: 12.5, speed: 30, heading: 90 } }, // inside
      { ts: t0 + 1000, values: { latitude: 23.01, longitude: 113.73, speed: 31 } }, // east of the square
      { ts: t0 + 2000, values: { latitude: 23.015, longitude: 113.7, speed: 32 } }, // on the west edge: inside
      { ts: t0 + 3000, values: { latitude: 23.005, longitude: 113.705, speed: 0, passengers: 12 } }, // inside
    ]);
    await publish(aqIn, [
      { ts: t0, values: { pm25: 35, temperature: 21.5 } },
      { ts: t0 + 2000, values: { pm25: 36 } },
      { ts: t0 + 3000, values: { temperature: 22 } },
    ]);
    await publish(aqOut, [{ ts: t0 + 1000, values: { pm25: 80 } }]);
    await publish(odd, [{ ts: t0 + 2000, values: { type: 7, custom: 1.25 } }]);
    await eventually(async () => ((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM readings')).rows[0]!.n === 9 ? true : undefined));

    const line = (d: CreatedDevice, domain: string, ts: number, lat: number, lng: number, alt: number | null, values: Record<string, number>): ExportLine => ({
      deviceId: d.id,
      name: d.name,
      type: d.type,
      domain,
      ts,
      time: new Date(ts).toISOString(),
      lat,
      lng,
      alt,
      cell: latLngToCell(lat, lng, 15),
      values,
    });
    // Oldest first; readings of one instant by device id (bus < aqIn < odd: creation order).
    expected = [
      line(bus, 'traffic', t0, 23.01, 113.71, 12.5, { speed: 30, heading: 90 }),
      line(aqIn, 'environment', t0, 23.012, 113.715, null, { pm25: 35, temperature: 21.5 }),
      line(bus, 'traffic', t0 + 2000, 23.015, 113.7, null, { speed: 32 }),
      line(aqIn, 'environment', t0 + 2000, 23.012, 113.715, null, { pm25: 36 }),
      line(odd, 'generic', t0 + 2000, 23.019, 113.71, null, { type: 7, custom: 1.25 }),
      line(bus, 'traffic', t0 + 3000, 23.005, 113.705, null, { speed: 0, passengers: 12 }),
      line(aqIn, 'environment', t0 + 3000, 23.012, 113.715, null, { temperature: 22 }),
    ];
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  const ndjson = (text: string): ExportLine[] => {
    expect(text === '' || text.endsWith('\n')).toBe(true);
    return text
      .split('\n')
      .filter((l) => l.length > 0)
      .map((l) => JSON.parse(l) as ExportLine);
  };

  it('NDJSON: every reading inside the polygon or on its edge, oldest first, ties by device id', async () => {
    const res = await get(t, `format=ndjson&geometry=${GEOMETRY}&${window}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/x-ndjson; charset=utf-8');
    const from = new Date(t0 - 1000).toISOString().replace(/\.\d{3}Z$/, 'Z').replaceAll(/[-:]/g, '');
    expect(res.headers.get('content-disposition')).toMatch(new RegExp(`^attachment; filename="guanlink-export-${from}-\\d{8}T\\d{6}Z\\.ndjson"$`));
    expect(ndjson(res.text)).toEqual(expected);
    // ndjson is the default format, and the 24 h before now the default window.
    expect(ndjson((await get(t, `geometry=${GEOMETRY}`)).text)).toEqual(expected);
  });

  it('POST takes the same selection in a JSON body (format in the body or the query string)', async () => {
    const body = { geometry: SQUARE, from: String(t0 - 1000), to: new Date(t0 + 60_000).toISOString(), format: 'ndjson' };
    const post = (query: string, b: unknown) =>
      get(t, query, { method: 'POST', body: JSON.stringify(b), headers: { 'content-type': 'application/json' } });
    expect(ndjson((await post('', body)).text)).toEqual(expected);
    const { format: _, ...withoutFormat } = body;
    const csv = await post('format=csv', withoutFormat);
    expect(csv.headers.get('content-type')).toMatch(/^text\/csv/);
    const conflict = await post('format=csv', body);
    expect(conflict.status).toBe(400);
    expect(JSON.parse(conflict.text)).toMatchObject({ code: 'invalid_selection', message: expect.stringContaining('format') });
  });

  it('filters: keys (only those values, rows with none left out), type, domain', async () => {
    const pm25 = ndjson((await get(t, `geometry=${GEOMETRY}&${window}&keys=pm25`)).text);
    expect(pm25).toEqual([
      { ...expected[1], values: { pm25: 35 } },
      { ...expected[3], values: { pm25: 36 } },
    ]);
    const buses = ndjson((await get(t, `geometry=${GEOMETRY}&${window}&type=bus`)).text);
    expect(buses).toEqual(expected.filter((e) => e.deviceId === bus.id));
    const generic = ndjson((await get(t, `bbox=113.69,22.99,113.8,23.1&${window}&domain=generic,environment`)).text);
    expect(generic.map((e) => [e.deviceId, e.ts])).toEqual([
      [aqIn.id, t0],
      [aqOut.id, t0 + 1000],
      [aqIn.id, t0 + 2000],
      [odd.id, t0 + 2000],
      [aqIn.id, t0 + 3000],
    ]);
  });

  it('CSV: a header of fixed columns then one column per key, one row per reading; quoting; empty cell when no value', async () => {
    const res = await get(t, `format=csv&geometry=${GEOMETRY}&${window}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/csv; charset=utf-8; header=present');
    expect(res.headers.get('content-disposition')).toMatch(/filename="guanlink-export-.*\.csv"$/);
    const rows = parseCsv(res.text) as string[][];
    const fixed = ['deviceId', 'name', 'type', 'domain', 'time', 'ts', 'lat', 'lng', 'alt', 'cell'];
    // Without keys: every key present in the selection, alphabetical; a key named like a fixed column is prefixed.
    const keyColumns = ['custom', 'heading', 'passengers', 'pm25', 'speed', 'temperature', 'values.type'];
    expect(rows[0]).toEqual([...fixed, ...keyColumns]);
    const asCsv = (e: ExportLine) => [
      String(e.deviceId),
      e.name,
      e.type,
      e.domain,
      e.time,
      String(e.ts),
      String(e.lat),
      String(e.lng),
      e.alt === null ? '' : String(e.alt),
      e.cell,
      ...keyColumns.map((k) => {
        const v = e.values[k.replace(/^values\./, '')];
        return v === undefined ? '' : String(v);
      }),
    ];
    expect(rows.slice(1)).toEqual(expected.map(asCsv));

    // keys: exactly those columns, in the order asked.
    const some = parseCsv((await get(t, `format=csv&geometry=${GEOMETRY}&${window}&keys=temperature,pm25`)).text) as string[][];
    expect(some).toEqual([
      [...fixed, 'temperature', 'pm25'],
      [...asCsv(expected[1]!).slice(0, 10), '21.5', '35'],
      [...asCsv(expected[3]!).slice(0, 10), '', '36'],
      [...asCsv(expected[6]!).slice(0, 10), '22', ''],
    ]);
  });

  it('GeoJSON: a FeatureCollection of Points with the values as properties; valid when empty', async () => {
    const res = await get(t, `format=geojson&geometry=${GEOMETRY}&${window}`);
    expect(res.headers.get('content-type')).toBe('application/geo+json; charset=utf-8');
    const fc = JSON.parse(res.text) as { type: string; features: unknown[] };
    expect(fc.type).toBe('FeatureCollection');
    expect(fc.features).toEqual(
      expected.map((e) => ({
        type: 'Feature',
        geometry: { type: 'Point', coordinates: e.alt === null ? [e.lng, e.lat] : [e.lng, e.lat, e.alt] },
        properties: {
          deviceId: e.deviceId,
          name: e.name,
          type: e.type,
          domain: e.domain,
          ts: e.ts,
          time: e.time,
          cell: e.cell,
          ...Object.fromEntries(Object.entries(e.values).map(([k, v]) => [k === 'type' ? 'values.type' : k, v])),
        },
      })),
    );
    const empty = await get(t, `format=geojson&geometry=${GEOMETRY}&from=${t0 - 86_400_000}&to=${t0 - 3_600_000}`);
    expect(empty.status).toBe(200);
    expect(JSON.parse(empty.text)).toEqual({ type: 'FeatureCollection', features: [] });
    const none = await get(t, `format=csv&geometry=${GEOMETRY}&from=${t0 - 86_400_000}&to=${t0 - 3_600_000}`);
    expect(parseCsv(none.text)).toEqual([['deviceId', 'name', 'type', 'domain', 'time', 'ts', 'lat', 'lng', 'alt', 'cell']]);
  });

  it('refuses bad input with 400 and a reason, before any export byte', async () => {
    const cases: [string, string | RegExp][] = [
      [`format=ndjson&${window}`, /exactly one area/],
      [`format=xml&geometry=${GEOMETRY}`, /format/],
      [`geometry=${GEOMETRY}&from=${t0}&to=${t0 - 1}`, /must be before/],
      [`geometry=${GEOMETRY}&from=2024-01-01T00:00:00Z&to=2025-06-01T00:00:00Z`, /longer than 366 days/],
      [`geometry=${GEOMETRY}&${window}&keys=nonexistent_key`, /nonexistent_key/],
      [`geometry=${GEOMETRY}&${window}&type=submarine`, /submarine/],
      [`bbox=113.7,23.0,113.6&${window}`, /bbox/],
      [`geometry=%7Bnot-json&${window}`, /geometry/],
    ];
    for (const [query, message] of cases) {
      const res = await get(t, query);
      expect(res.status, query).toBe(400);
      expect(res.headers.get('content-disposition'), query).toBeNull();
      const body = JSON.parse(res.text) as { code: string; message: string };
      expect(body.message, query).toMatch(message);
      expect(['invalid_selection', 'FST_ERR_VALIDATION'], query).toContain(body.code);
    }
    const noAuth = await fetch(`${t.httpUrl}/api/v1/spatial/export?geometry=${GEOMETRY}`);
    expect(noAuth.status).toBe(401);
  });

  describe('a large export: backpressure, disconnect, failure', () => {
    const base = t0 - 6 * 3_600_000;
    const N = 150_000;
    const bbox = 'bbox=113.79,23.09,113.81,23.11';
    const big = `${bbox}&from=${base}&to=${base + N * 100}`;
    let bulk: CreatedDevice;

    beforeAll(async () => {
      bulk = await t.createDevice({ name: 'bulk-aq', type: 'air-quality-station', location: { lat: 23.1, lng: 113.8 } });
      const cell = storageCell(23.1, 113.8);
      const rows: Reading[] = [];
      for (let i = 0; i < N; i++) rows.push({ deviceId: bulk.id, domain: 'environment', ts: base + i * 100, values: { pm25: i % 500, temperature: 20 }, lat: 23.1, lng: 113.8, cell });
      await loadReadings(db, rows);
    });

    /** The platform's connections as the database sees them. */
    const sessions = async () =>
      (
        await db.query<{ pid: number; state: string; query: string; query_start: Date }>(
          `SELECT pid, state, query, query_start FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'guanlink-queries' AND pid <> pg_backend_pid()`,
        )
      ).rows;
    const exportSession = async () => {
      const s = (await sessions()).find((x) => x.state === 'idle in transaction' && x.query.startsWith('FETCH'));
      return s;
    };
    const noExportSession = async () =>
      (await sessions()).some((s) => s.state !== 'idle' || /FETCH|DECLARE/.test(s.query) || s.query.startsWith('SET TRANSACTION')) ? undefined : true;

    it('stops reading the database while the client does not read, and releases the connection when it goes away', async () => {
      await eventually(noExportSession);
      const controller = new AbortController();
      const res = await fetch(`${t.httpUrl}/api/v1/spatial/export?${big}`, { headers: { authorization: `Bearer ${t.adminKey}` }, signal: controller.signal });
      try {
        expect(res.status).toBe(200);
        const reader = res.body!.getReader();
        const first = await reader.read();
        expect(first.value!.length).toBeGreaterThan(0);
        // The client stops reading. Once the socket buffers are full, the export waits between two
        // FETCHes: its session stays idle in its transaction, no statement starts, the export does not end.
        let previous = await eventually(exportSession, { timeoutMs: 10_000 });
        const settled = await eventually(
          async () => {
            await sleep(300);
            const now = await exportSession();
            const same = now !== undefined && now.query_start.getTime() === previous.query_start.getTime();
            if (now) previous = now;
            return same ? now : undefined;
          },
          { timeoutMs: 10_000 },
        );
        await sleep(1500);
        const later = await exportSession();
        expect(later).toBeDefined();
        expect(later!.pid).toBe(settled.pid);
        expect(later!.query_start.getTime()).toBe(settled.query_start.getTime());
      } finally {
        controller.abort();
      }
      await eventually(noExportSession, { timeoutMs: 10_000 });

      // More aborted exports than may run at once: each must have given its slot and connection back.
      for (let i = 0; i < 6; i++) {
        const c = new AbortController();
        const r = await fetch(`${t.httpUrl}/api/v1/spatial/export?${big}`, { headers: { authorization: `Bearer ${t.adminKey}` }, signal: c.signal });
        expect(r.status).toBe(200);
        await r.body!.getReader().read();
        c.abort();
        await eventually(noExportSession, { timeoutMs: 10_000 });
      }
      await eventually(noExportSession, { timeoutMs: 10_000 });
      const after = await get(t, `geometry=${GEOMETRY}&${window}`);
      expect(after.status).toBe(200);
      expect(ndjson(after.text)).toEqual(expected);
    });

    it('a database failure mid-stream cuts the response short (no final chunk) after an NDJSON error line', async () => {
      await eventually(noExportSession);
      const res = await fetch(`${t.httpUrl}/api/v1/spatial/export?${big}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
      expect(res.status).toBe(200);
      const reader = res.body!.getReader();
      const decoder = new TextDecoder();
      let text = decoder.decode((await reader.read()).value, { stream: true });
      const victim = await eventually(exportSession, { timeoutMs: 10_000 });
      await db.query('SELECT pg_terminate_backend($1)', [victim.pid]);
      let failure: unknown;
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          text += decoder.decode(value, { stream: true });
        }
      } catch (err) {
        failure = err;
      }
      expect(failure).toBeInstanceOf(Error); // the transfer was incomplete
      const lines = text.split('\n');
      expect(lines.at(-1)).toBe('');
      const last = JSON.parse(lines.at(-2)!) as { error?: { code: string; message: string } };
      expect(last.error).toMatchObject({ code: 'export_failed', message: expect.stringMatching(/^the export stopped after \d+ readings/) });
      expect(lines.length - 2).toBeLessThan(N);
      // The platform carries on.
      await eventually(noExportSession, { timeoutMs: 10_000 });
      const after = await get(t, `format=geojson&geometry=${GEOMETRY}&${window}`);
      expect((JSON.parse(after.text) as { features: unknown[] }).features).toHaveLength(expected.length);
    });

    it('a complete export of the loaded readings in the other formats', async () => {
      const csv = await get(t, `format=csv&${big}&keys=pm25`);
      const rows = parseCsv(csv.text) as string[][];
      expect(rows).toHaveLength(N + 1);
      expect(rows[1]!.slice(-1)).toEqual(['0']);
      expect(rows[N]![5]).toBe(String(base + (N - 1) * 100));
      expect(rows[N]!.slice(-1)).toEqual([String((N - 1) % 500)]);
    });
  });
});

describe('spatial export in constant memory (platform in its own process)', () => {
  const TOTAL = 1_000_000;
  const DEVICES = 1000;
  const STEP_MS = 10_000;
  const BASELINE_ROWS = 50_000;
  const MAX_GROWTH = 64 * 1024 * 1024;
  const HEAP_CAP_MB = 128;
  let database: TestDatabase;
  let dataDir: string;
  let p: GuanlinkProcess;
  const adminKey = 'export-memory-test-admin-key';
  let query = '';

  beforeAll(async () => {
    const bundle = path.join(import.meta.dirname, '../../dist/guanlink.mjs');
    if (!readFileSync(bundle, 'utf8').includes('/spatial/export')) throw new Error(`${bundle} predates the export route: run npm run build (npm test does it)`);
    database = await createTestDatabase();
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-export-'));
    // The heap cap is the measuring instrument, not a crutch: by default V8 lets the old generation
    // grow to ~4× its live size before a full collection, a sawtooth of garbage (~150 MB in this
    // process) that says nothing about what the export holds. Capped, it collects early and the RSS
    // follows what is live; and an export that kept its rows (1M rows are ~1 GB of objects) would
    // die of heap exhaustion instead of finishing.
    p = await spawnGuanlink({ DATABASE_URL: database.url, DATA_DIR: dataDir, GUANLINK_ADMIN_KEY: adminKey, LOG_LEVEL: 'warn', NODE_OPTIONS: `--max-old-space-size=${HEAP_CAP_MB}` });
    await waitReady(p);
  });
  afterAll(async () => {
    if (p && p.child.exitCode === null) {
      p.child.kill('SIGTERM');
      await p.exited;
    }
    await database?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  const rss = async (pid: number): Promise<number> => {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
  };

  it(`streams ${TOTAL.toLocaleString('en')} readings while the server's RSS stays flat`, { timeout: 180_000 }, async () => {
    // 1000 stations on a grid, 1000 readings each, loaded with COPY.
    const created = await fetch(`${p.httpUrl}/api/v1/devices/import`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify(Array.from({ length: DEVICES }, (_, i) => ({ name: `station-${i}`, type: 'air-quality-station', lat: 22.9 + (i % 40) * 0.005, lng: 113.6 + Math.floor(i / 40) * 0.005 }))),
    });
    expect(created.status).toBe(200);
    const report = (await created.json()) as { rows: { id: number; name: string }[] };
    const stations = report.rows.map((r, i) => ({ id: r.id, lat: 22.9 + (i % 40) * 0.005, lng: 113.6 + Math.floor(i / 40) * 0.005 }));
    const cells = stations.map((s) => storageCell(s.lat, s.lng));
    const start = Math.floor(Date.now() / 1000) * 1000 - 6 * 3_600_000;
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      const { rows: keys } = await client.query<{ id: number; name: string }>('SELECT id, name FROM telemetry_keys');
      const ids = new Map(keys.map((k) => [k.name, k.id]));
      const perStep = DEVICES;
      const steps = TOTAL / perStep;
      for (let s0 = 0; s0 < steps; s0 += 50) {
        const batch: Reading[] = [];
        for (let s = s0; s < Math.min(steps, s0 + 50); s++) {
          for (let d = 0; d < DEVICES; d++) {
            const st = stations[d]!;
            batch.push({ deviceId: st.id, domain: 'environment', ts: start + s * STEP_MS, values: { pm25: (s + d) % 300, temperature: 15 + (d % 20) }, lat: st.lat, lng: st.lng, cell: cells[d]! });
          }
        }
        await copyReadings(client, 'readings_environment', batch, { id: (name) => ids.get(name) });
      }
      await client.query('ANALYZE readings_environment');
    } finally {
      await client.end();
    }

    const pid = p.child.pid!;
    query = `format=ndjson&bbox=113.59,22.89,113.75,23.11&from=${start}&to=${start + (TOTAL / DEVICES) * STEP_MS}`;
    const res = await fetch(`${p.httpUrl}/api/v1/spatial/export?${query}`, { headers: { authorization: `Bearer ${adminKey}` } });
    expect(res.status).toBe(200);

    let lines = 0;
    let baseline: number | undefined;
    let peak = 0;
    let sampling = Promise.resolve();
    const timer = setInterval(() => {
      sampling = sampling.then(async () => {
        const now = await rss(pid).catch(() => 0);
        if (baseline !== undefined) peak = Math.max(peak, now);
      });
    }, 50);
    // Parse one line in 10 000 for order and content; count them all.
    let carry = '';
    let lastTs = -Infinity;
    let sampled = 0;
    const trace: string[] = [];
    const decoder = new TextDecoder();
    const reader = res.body!.getReader();
    try {
      for (;;) {
        const { done, value: chunk } = await reader.read();
        if (done) break;
        const text = carry + decoder.decode(chunk, { stream: true });
        const parts = text.split('\n');
        carry = parts.pop()!;
        for (const line of parts) {
          if (lines % 10_000 === 0) {
            const row = JSON.parse(line) as ExportLine;
            expect(row.ts).toBeGreaterThanOrEqual(lastTs);
            expect(row.values.pm25).toBeTypeOf('number');
            lastTs = row.ts;
            sampled++;
          }
          lines++;
          if (lines % 100_000 === 0) trace.push(`${lines / 1000}k:${((await rss(pid)) / 2 ** 20).toFixed(0)}`);
        }
        if (baseline === undefined && lines >= BASELINE_ROWS) {
          baseline = await rss(pid);
          peak = baseline;
        }
      }
    } finally {
      clearInterval(timer);
      await sampling;
    }
    peak = Math.max(peak, await rss(pid));
    expect(carry).toBe('');
    expect(lines).toBe(TOTAL);
    expect(sampled).toBe(TOTAL / 10_000);
    const growth = peak - baseline!;
    console.log(`export of ${lines} readings: server RSS ${(baseline! / 2 ** 20).toFixed(1)} MiB after ${BASELINE_ROWS} rows, peak ${(peak / 2 ** 20).toFixed(1)} MiB (+${(growth / 2 ** 20).toFixed(1)} MiB); RSS MiB by rows ${trace.join(' ')}`);
    expect(growth).toBeLessThan(MAX_GROWTH);
  });

  it('shutting down cuts an export whose client stopped reading, and exits', async () => {
    expect(query).not.toBe('');
    const res = await fetch(`${p.httpUrl}/api/v1/spatial/export?${query}`, { headers: { authorization: `Bearer ${adminKey}` } });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    await reader.read();
    await sleep(500);
    p.child.kill('SIGTERM');
    const code = await Promise.race([p.exited, sleep(20_000).then(() => 'still running after 20 s')]);
    expect(code, p.output().slice(-3000)).toBe(0);
    const rest = async () => {
      for (;;) if ((await reader.read()).done) return 'complete';
    };
    await expect(rest()).rejects.toThrow();
  });
});
