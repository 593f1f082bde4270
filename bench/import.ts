/**
 * What does a bulk import of devices cost, and does it disturb devices connecting meanwhile?
 * Side by side in one run:
 *  1. hashing 5,000 new tokens (scrypt, as stored): one at a time, bounded as the import does it
 *     (hashSecrets), and all at once — with the wait of a token check (what a connecting device's
 *     CONNECT waits for) probed every 20 ms meanwhile;
 *  2. end to end through the REST API of a running platform: a CSV of 5,000 new devices, the same
 *     again (all unchanged), a JSON import changing every label (all updated), the CSV export.
 * Run: `npm run bench:import` (DATABASE_URL to use TimescaleDB; else the embedded PostgreSQL).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { loadConfig } from '../core/config.ts';
import { generateToken, hashSecret, hashSecrets, verifySecret } from '../core/credentials.ts';
import { createLogger } from '../core/log.ts';
import { startEmbeddedPostgres } from '../db/embedded.ts';
import { startPlatform } from '../platform.ts';
import { BENCH_DATA_DIR, benchDatabase } from './support.ts';

const N = Number(process.env.BENCH_DEVICES ?? 5000);
const log = createLogger('warn');
const percentile = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))] ?? NaN;

/** Runs `work` while a token check is timed every 20 ms; answers the work's time and the checks' waits. */
async function withProbe(work: () => Promise<unknown>): Promise<{ ms: number; p50: number; max: number }> {
  const token = generateToken();
  const stored = await hashSecret(token);
  const waits: number[] = [];
  let running = true;
  const probe = (async () => {
    while (running) {
      const started = performance.now();
      await verifySecret(token, stored);
      waits.push(performance.now() - started);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const started = performance.now();
  await work();
  const ms = performance.now() - started;
  running = false;
  await probe;
  return { ms, p50: percentile(waits, 0.5), max: Math.max(...waits) };
}

async function main() {
  console.log(`# import — ${os.availableParallelism()} cores, UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}, load average ${os.loadavg()[0]!.toFixed(1)}`);

  console.log(`\n## 1. hashing ${N} tokens (scrypt N=1024), with a token check probed meanwhile\n`);
  console.log('| how | total ms | per token ms | token check wait p50 ms | max ms |');
  console.log('|---|---|---|---|---|');
  const tokens = Array.from({ length: N }, () => generateToken());
  const variants: [string, () => Promise<unknown>][] = [
    ['one at a time', () => hashSecrets(tokens, 1)],
    ['bounded (hashSecrets, as the import)', () => hashSecrets(tokens)],
    ['all at once', () => Promise.all(tokens.map((t) => hashSecret(t)))],
  ];
  for (const [name, work] of variants) {
    const r = await withProbe(work);
    console.log(`| ${name} | ${r.ms.toFixed(0)} | ${(r.ms / N).toFixed(2)} | ${r.p50.toFixed(1)} | ${r.max.toFixed(1)} |`);
  }

  const base = process.env.DATABASE_URL ? await benchDatabase() : await startEmbeddedPostgres(path.join(BENCH_DATA_DIR, 'import'), log, 'guanlink_bench');
  const admin = new pg.Client({ connectionString: base.url });
  await admin.connect();
  await admin.query('DROP DATABASE IF EXISTS guanlink_bench_import WITH (FORCE)');
  await admin.query('CREATE DATABASE guanlink_bench_import');
  const url = new URL(base.url);
  url.pathname = '/guanlink_bench_import';
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-bench-import-'));
  const platform = await startPlatform(
    loadConfig({}, { databaseUrl: url.toString(), dataDir, host: '127.0.0.1', mqttPort: 0, httpPort: 0, simulators: false, logLevel: 'warn' }),
    log,
  );
  try {
    const api = `http://127.0.0.1:${platform.httpPort}/api/v1`;
    const headers = { authorization: `Bearer ${platform.adminKey}` };
    const timed = async (name: string, request: () => Promise<Response>) => {
      const started = performance.now();
      const res = await request();
      const text = await res.text();
      const ms = performance.now() - started;
      const totals = res.headers.get('content-type')?.startsWith('application/json') && text.startsWith('{') ? JSON.stringify(JSON.parse(text).totals) : `${text.length} bytes`;
      console.log(`| ${name} | ${res.status} | ${ms.toFixed(0)} | ${totals} |`);
      return text;
    };
    const csv = ['name,type,label,lat,lng'];
    for (let i = 0; i < N; i++) csv.push(`bench-${i},${i % 2 ? 'noise-monitor' : 'generic'},station ${i},${(22.6 + (i % 100) * 0.006).toFixed(4)},${(113.5 + Math.floor(i / 100) * 0.016).toFixed(4)}`);
    console.log(`\n## 2. end to end over REST (${platform.dialect.kind})\n`);
    console.log('| request | status | ms | result |');
    console.log('|---|---|---|---|');
    const post = (body: string, type: string) => () => fetch(`${api}/devices/import`, { method: 'POST', headers: { ...headers, 'content-type': type }, body });
    await timed(`CSV, ${N} new devices`, post(csv.join('\n'), 'text/csv'));
    await timed(`the same CSV again (unchanged)`, post(csv.join('\n'), 'text/csv'));
    const json = JSON.stringify(Array.from({ length: N }, (_, i) => ({ name: `bench-${i}`, type: i % 2 ? 'noise-monitor' : 'generic', label: `站点 ${i}` })));
    await timed(`JSON, every label changed (updated)`, post(json, 'application/json'));
    await timed(`CSV export of ${N}`, () => fetch(`${api}/devices/export?format=csv`, { headers }));
  } finally {
    await platform.stop();
    await admin.query('DROP DATABASE IF EXISTS guanlink_bench_import WITH (FORCE)');
    await admin.end();
    await base.stop();
    await rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
