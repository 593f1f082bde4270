import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../core/log.ts';
import { createTestDatabase, type TestDatabase } from '../test/support/database.ts';
import { detectDialect } from './dialect.ts';
import { MIGRATIONS_DIR, migrate, readMigrations } from './migrate.ts';

const log = createLogger('silent');

describe('migrations', () => {
  let db: TestDatabase;
  const pools: pg.Pool[] = [];
  const pool = () => {
    const p = new pg.Pool({ connectionString: db.url, max: 3 });
    pools.push(p);
    return p;
  };
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await db.drop();
  });

  it('applies every migration exactly once when two nodes start together', async () => {
    const [a, b] = await Promise.all([migrate(pool(), log), migrate(pool(), log)]);
    const files = await readMigrations();
    expect([...a.applied, ...b.applied].sort()).toEqual(files.map((m) => m.name).sort());
    const { rows } = await pool().query('SELECT version, name FROM schema_migrations ORDER BY version');
    expect(rows.map((r) => r.name)).toEqual(files.map((m) => m.name));
    expect((await migrate(pool(), log)).applied).toEqual([]);
  });

  it('makes readings a hypertable on TimescaleDB and a plain table on PostgreSQL', async () => {
    const p = pool();
    const dialect = await detectDialect(p);
    // CI sets EXPECT_TIMESCALEDB for its TimescaleDB run, so that run cannot quietly test plain PostgreSQL.
    if (process.env.EXPECT_TIMESCALEDB === '1') expect(dialect.kind).toBe('timescaledb');
    if (dialect.kind === 'timescaledb') {
      const { rows } = await p.query(`SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'`);
      expect(rows).toHaveLength(1);
      expect(dialect.timescaledb?.license).toMatch(/apache|timescale/);
    } else {
      const { rows } = await p.query(`SELECT relkind FROM pg_class WHERE relname = 'readings'`);
      expect(rows[0].relkind).toBe('r');
    }
  });

  it('refuses to start when an applied migration file was changed', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    try {
      for (const f of await readdir(MIGRATIONS_DIR)) await copyFile(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
      const first = (await readdir(dir)).sort()[0]!;
      await writeFile(path.join(dir, first), `-- edited\n${await readFile(path.join(dir, first), 'utf8')}`);
      await expect(migrate(pool(), log, dir)).rejects.toThrow(/was changed after it was applied/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
