/**
 * What do GuanLink's own rollups cost, and what do they buy? Side by side in one run:
 *  1. ingest: batches of on-time readings written with and without the rollup hook (and late ones);
 *  2. refresh: catching up 1M readings (500 devices × 2000 readings × 4 keys over ~17 h), then a
 *     year of one device at one reading a minute, then late readings in 5000 distinct minutes;
 *  3. queries over a long range: the same buckets from the rollups and from the raw readings.
 * Run: `npm run bench:rollups` (DATABASE_URL to use TimescaleDB; else the embedded PostgreSQL).
 */
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { createLogger } from '../core/log.ts';
import { DAY, HOUR, MINUTE, floorTo, type Aggregate } from '../db/buckets.ts';
import { startEmbeddedPostgres } from '../db/embedded.ts';
import { KeyDictionary } from '../db/keys.ts';
import { migrate } from '../db/migrate.ts';
import { Rollups } from '../db/rollups.ts';
import { telemetryBuckets } from '../db/telemetry.ts';
import { readingsTable } from '../db/readings-tables.ts';
import { copyReadings } from '../ingest/copy.ts';
import type { Reading } from '../ingest/readings.ts';
import { ReadingWriter } from '../ingest/writer.ts';
import { createRng } from '../simulators/random.ts';
import { BENCH_DATA_DIR, benchDatabase, formatRate } from './support.ts';

const log = createLogger('warn');
const KEYS = ['water_level', 'flow_rate', 'rainfall_1h', 'battery'];
const DEVICES = Number(process.env.BENCH_DEVICES ?? 500);
const PER_DEVICE = Number(process.env.BENCH_PER_DEVICE ?? 2000);
const BATCH = 5000;
const YEAR_DEVICE = 100_000;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (started: bigint) => Number(process.hrtime.bigint() - started) / 1e6;

async function loadReadings(pool: pg.Pool, keys: KeyDictionary, rows: Reading[]): Promise<void> {
  const client = await pool.connect();
  try {
    for (let i = 0; i < rows.length; i += 50_000) await copyReadings(client, readingsTable('water'), rows.slice(i, i + 50_000), keys);
  } finally {
    client.release();
  }
}

async function resetRollups(pool: pg.Pool): Promise<void> {
  await pool.query(`UPDATE rollup_state SET announced = NULL, done = NULL`);
  await pool.query(`TRUNCATE rollups_1m_water, rollups_1h_water, rollup_invalidations`);
}

async function main() {
  // Its own embedded server (bench/.data/rollups), so that other benchmarks starting theirs do not stop it.
  const base = process.env.DATABASE_URL ? await benchDatabase() : await startEmbeddedPostgres(path.join(BENCH_DATA_DIR, 'rollups'), log, 'guanlink_bench');
  const admin = new pg.Client({ connectionString: base.url });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS guanlink_bench_rollups WITH (FORCE)');
  await admin.query('CREATE DATABASE guanlink_bench_rollups');
  await admin.end();
  const url = new URL(base.url);
  url.pathname = '/guanlink_bench_rollups';
  const pool = new pg.Pool({ connectionString: url.toString(), max: 8 });
  await migrate(pool, log);
  const kind = (await pool.query(`SELECT count(*)::int AS n FROM pg_extension WHERE extname = 'timescaledb'`)).rows[0].n ? 'TimescaleDB' : 'PostgreSQL';
  const version = (await pool.query(`SELECT current_setting('server_version') AS v`)).rows[0].v;
  const keys = new KeyDictionary(pool, 100);
  await keys.ensure(KEYS);
  const rollups = new Rollups({ pool, log, refreshMs: 0, latenessMs: 2 * MINUTE });
  const rng = createRng(5);
  const values = () => Object.fromEntries(KEYS.map((k) => [k, Math.round(rng.next() * 1e4) / 100]));
  console.log(`# rollups — ${kind}, PostgreSQL ${version}`);

  // 1. Ingest: the same batches through the writer, without and with the hook, alternating.
  await rollups.refresh(); // sets the watermark (nothing to roll up yet)
  const now = Date.now();
  const timings: Record<string, number[]> = { none: [], onTime: [], late: [] };
  const writers = {
    none: new ReadingWriter({ pool, log, keys, batchSize: BATCH, batchMs: 1, concurrency: 1, onBatch: (b) => timings.none!.push(b.ms) }),
    onTime: new ReadingWriter({ pool, log, keys, batchSize: BATCH, batchMs: 1, concurrency: 1, inTransaction: rollups.recordLate, onBatch: (b) => timings.onTime!.push(b.ms) }),
    late: new ReadingWriter({ pool, log, keys, batchSize: BATCH, batchMs: 1, concurrency: 1, inTransaction: rollups.recordLate, onBatch: (b) => timings.late!.push(b.ms) }),
  };
  let device = 10_000;
  for (let round = 0; round < 30; round++) {
    for (const name of ['none', 'onTime', 'late'] as const) {
      // 5000 readings of 5000 devices; on time: in the current minutes; late: in the last day, before the watermark.
      const rows: Reading[] = Array.from({ length: BATCH }, (_, i) => ({
        deviceId: device + i,
        domain: 'water',
        ts: name === 'late' ? now - 10 * MINUTE - rng.int(DAY) : now + round * 1000 + rng.int(1000),
        values: values(),
      }));
      device += BATCH;
      await writers[name].write(rows);
    }
  }
  console.log('\n## ingest: one batch of 5000 readings (4 values), median of 30');
  console.log('| batch | ms | readings/s | extra vs no hook |');
  console.log('|---|---|---|---|');
  for (const [name, label] of [
    ['none', 'no rollup hook'],
    ['onTime', 'hook, on-time readings'],
    ['late', 'hook, late readings (5000 invalidations)'],
  ] as const) {
    const m = median(timings[name]!);
    console.log(`| ${label} | ${m.toFixed(1)} | ${formatRate((BATCH / m) * 1000)} | ${name === 'none' ? '–' : `${(m - median(timings.none!)).toFixed(1)} ms`} |`);
  }
  // The hook alone, in a transaction, against an empty round trip.
  const onTimeRows = Array.from({ length: BATCH }, (_, i) => ({ deviceId: i, domain: 'water' as const, ts: now + HOUR + i }));
  const hookMs: Record<string, number[]> = { empty: [], hook: [] };
  const client = await pool.connect();
  for (let i = 0; i < 400; i++) {
    const name = i % 2 === 0 ? 'empty' : 'hook';
    await client.query('BEGIN');
    const s = process.hrtime.bigint();
    if (name === 'hook') await rollups.recordLate(client, onTimeRows);
    else await client.query('SELECT 1');
    hookMs[name]!.push(ms(s));
    await client.query('COMMIT');
  }
  client.release();
  console.log(`| the hook alone (5000 on-time rows), vs an empty round trip | ${median(hookMs.hook!).toFixed(2)} | – | ${(median(hookMs.hook!) - median(hookMs.empty!)).toFixed(2)} ms |`);
  await pool.query(`TRUNCATE readings_water`);

  // 2. Refresh: catch-up of 1M readings from scratch.
  const t0 = floorTo(now - 2 * DAY, HOUR);
  const bulk: Reading[] = [];
  for (let i = 0; i < PER_DEVICE; i++) for (let d = 1; d <= DEVICES; d++) bulk.push({ deviceId: d, domain: 'water', ts: t0 + i * 30_000 + d * 10, values: values() });
  await loadReadings(pool, keys, bulk);
  await resetRollups(pool);
  let started = process.hrtime.bigint();
  let report = await rollups.refresh();
  const bulkMs = ms(started);
  console.log('\n## refresh (from the raw readings, one process)');
  console.log('| work | readings | ms | readings/s | 1m rows | 1h rows |');
  console.log('|---|---|---|---|---|---|');
  console.log(`| catch up ${DEVICES} devices × ${PER_DEVICE} readings (~${((PER_DEVICE * 30_000) / HOUR).toFixed(0)} h) | ${formatRate(bulk.length)} | ${bulkMs.toFixed(0)} | ${formatRate((bulk.length / bulkMs) * 1000)} | ${report.rows1m} | ${report.rows1h} |`);

  // A year of one device, one reading a minute (plus the 1M above): sparse history, many steps.
  const yearStart = floorTo(now - 366 * DAY, DAY);
  const year: Reading[] = [];
  for (let ts = yearStart; ts < floorTo(now - DAY, DAY); ts += MINUTE) year.push({ deviceId: YEAR_DEVICE, domain: 'water', ts: ts + 7000, values: values() });
  await loadReadings(pool, keys, year);
  await resetRollups(pool);
  started = process.hrtime.bigint();
  report = await rollups.refresh();
  const yearMs = ms(started);
  const total = bulk.length + year.length;
  console.log(`| catch up the above plus one device × 1 year at 1/min | ${formatRate(total)} | ${yearMs.toFixed(0)} | ${formatRate((total / yearMs) * 1000)} | ${report.rows1m} | ${report.rows1h} |`);

  // Steady state: a refresh with one new closed minute of the 500 devices, and one with nothing to do.
  started = process.hrtime.bigint();
  report = await rollups.refresh();
  console.log(`| a refresh with nothing new | 0 | ${ms(started).toFixed(1)} | – | ${report.rows1m} | ${report.rows1h} |`);

  // Late readings in 5000 distinct device-minutes (each recomputes its minute and hour).
  const late: Reading[] = Array.from({ length: 5000 }, (_, i) => ({ deviceId: 1 + (i % DEVICES), domain: 'water', ts: t0 + Math.floor(i / DEVICES) * 90_000 + 1 + (i % 7), values: values() }));
  await writers.late.write(late);
  started = process.hrtime.bigint();
  report = await rollups.refresh();
  console.log(`| recompute ${report.invalidations} late device-minutes (and their hours) | ${late.length} | ${ms(started).toFixed(0)} | – | ${report.rows1m} | ${report.rows1h} |`);

  // 3. Queries: one device over a long range, from rollups (as served) and from raw readings.
  await pool.query('ANALYZE');
  console.log('\n## one device, one key, long range (median of 7, ms)');
  console.log('| range, interval, agg | buckets | rollups | raw readings | raw / rollups |');
  console.log('|---|---|---|---|---|');
  const cases: [string, number, number, number, Aggregate][] = [
    ['1 year, 1d, avg', yearStart, now, DAY, 'avg'],
    ['1 year, 1h, max', yearStart, now, HOUR, 'max'],
    ['30 days, 1h, avg', now - 30 * DAY, now, HOUR, 'avg'],
    ['7 days, 5m, avg', now - 8 * DAY, now - DAY, 5 * MINUTE, 'avg'],
    ['1 day, 1m, last', now - 2 * DAY, now - DAY, MINUTE, 'last'],
  ];
  for (const [label, from, to, intervalMs, agg] of cases) {
    const run = async (rawOnly: boolean) => {
      const times: number[] = [];
      let n = 0;
      for (let i = 0; i < 7; i++) {
        const s = process.hrtime.bigint();
        const r = await telemetryBuckets(pool, keys, { deviceId: YEAR_DEVICE, domain: 'water', keys: ['water_level'], from: new Date(from), to: new Date(to), intervalMs, agg, limit: 100_000, rawOnly });
        times.push(ms(s));
        n = r.points.water_level!.length;
      }
      return { ms: median(times), n };
    };
    const fromRollups = await run(false);
    const fromRaw = await run(true);
    if (fromRollups.n !== fromRaw.n) throw new Error(`${label}: ${fromRollups.n} buckets from rollups, ${fromRaw.n} from raw`);
    console.log(`| ${label} | ${fromRollups.n} | ${fromRollups.ms.toFixed(1)} | ${fromRaw.ms.toFixed(1)} | ${(fromRaw.ms / fromRollups.ms).toFixed(0)}× |`);
  }
  await pool.end();
  await base.stop();
}

await main();
