import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createLogger } from '../core/log.ts';
import { startEmbeddedPostgres } from '../db/embedded.ts';

export const BENCH_DATA_DIR = fileURLToPath(new URL('./.data/', import.meta.url));

/** The database a benchmark runs on: DATABASE_URL, else an embedded PostgreSQL kept in bench/.data. */
export async function benchDatabase(name = 'guanlink_bench'): Promise<{ url: string; kind: string; stop(): Promise<void> }> {
  if (process.env.DATABASE_URL) {
    const server = process.env.DATABASE_URL;
    const admin = new pg.Client({ connectionString: server });
    await admin.connect();
    const exists = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (exists.rowCount === 0) await admin.query(`CREATE DATABASE ${name}`);
    await admin.end();
    const url = new URL(server);
    url.pathname = `/${name}`;
    return { url: url.toString(), kind: 'external', stop: async () => {} };
  }
  await mkdir(BENCH_DATA_DIR, { recursive: true });
  const db = await startEmbeddedPostgres(path.join(BENCH_DATA_DIR, 'embedded'), createLogger('warn'), name);
  return { url: db.url, kind: 'embedded', stop: db.stop };
}

export function formatRate(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0);
}
