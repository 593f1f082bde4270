import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { Logger } from '../core/log.ts';
import { prepareExtensions } from './dialect.ts';

import { MIGRATIONS_DIR } from '../core/paths.ts';

export { MIGRATIONS_DIR };

// Any constant works; it only has to be the same on every GuanLink node sharing a database.
const MIGRATION_LOCK = 7_004_117_310_331n;

interface Migration {
  version: number;
  name: string;
  sql: string;
  checksum: string;
}

export async function readMigrations(dir = MIGRATIONS_DIR): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => /^\d{3,}_[\w-]+\.sql$/.test(f)).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const sql = await readFile(path.join(dir, file), 'utf8');
    migrations.push({
      version: Number.parseInt(file, 10),
      name: file.replace(/\.sql$/, ''),
      sql,
      checksum: createHash('sha256').update(sql).digest('hex'),
    });
  }
  const versions = migrations.map((m) => m.version);
  if (new Set(versions).size !== versions.length) throw new Error(`duplicate migration numbers in ${dir}`);
  return migrations;
}

/**
 * Applies pending migrations in order, each in its own transaction, under a session advisory lock
 * so that nodes starting together apply each migration exactly once. Refuses to run when an
 * already-applied file has changed.
 */
export async function migrate(pool: pg.Pool, log: Logger, dir = MIGRATIONS_DIR): Promise<{ applied: string[] }> {
  const migrations = await readMigrations(dir);
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query('BEGIN');
    for (const warning of await prepareExtensions(client)) log.warn(warning);
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    await client.query('COMMIT');
    const done = new Map(
      (await client.query<{ version: number; name: string; checksum: string }>('SELECT version, name, checksum FROM schema_migrations')).rows.map(
        (r) => [r.version, r],
      ),
    );
    for (const m of migrations) {
      const previous = done.get(m.version);
      if (previous) {
        if (previous.checksum !== m.checksum) {
          throw new Error(`migration ${m.name} was changed after it was applied (checksum differs); add a new migration instead`);
        }
        continue;
      }
      const started = Date.now();
      try {
        await client.query('BEGIN');
        await client.query(m.sql);
        await client.query('INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw new Error(`migration ${m.name} failed: ${(err as Error).message}`, { cause: err });
      }
      applied.push(m.name);
      log.info({ migration: m.name, ms: Date.now() - started }, 'migration applied');
    }
    return { applied };
  } finally {
    // Closing the session releases the advisory lock even if the connection is in a bad state.
    client.release(true);
  }
}
