import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOMAINS } from '../core/domains.ts';
import { createLogger } from '../core/log.ts';
import { readingsTable } from './readings-tables.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../test/support/database.ts';
import { detectDialect } from './dialect.ts';
import { MIGRATIONS_DIR, migrate, readMigrations } from './migrate.ts';

const log = createLogger('silent');

describe('migrations', () => {
  let db: TestDatabase;
  const pools: pg.Pool[] = [];
  const pool = () => {
    const p = testPool(db.url, 3);
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

  it('keeps readings in one hypertable per domain on TimescaleDB (plain tables on PostgreSQL) behind a readings view', async () => {
    const p = pool();
    const dialect = await detectDialect(p);
    // CI sets EXPECT_TIMESCALEDB for its TimescaleDB run, so that run cannot quietly test plain PostgreSQL.
    if (process.env.EXPECT_TIMESCALEDB === '1') expect(dialect.kind).toBe('timescaledb');
    const tables = DOMAINS.map(readingsTable);
    expect(tables).toEqual(['readings_water', 'readings_environment', 'readings_traffic', 'readings_air_space_ground', 'readings_generic']);
    const kinds = await p.query<{ relname: string; relkind: string }>(`SELECT relname, relkind FROM pg_class WHERE relname = ANY ($1)`, [[...tables, 'readings']]);
    expect(Object.fromEntries(kinds.rows.map((r) => [r.relname, r.relkind]))).toEqual({ ...Object.fromEntries(tables.map((t) => [t, 'r'])), readings: 'v' });
    if (dialect.kind === 'timescaledb') {
      const { rows } = await p.query(`SELECT hypertable_name FROM timescaledb_information.hypertables WHERE hypertable_name = ANY ($1) ORDER BY 1`, [tables]);
      expect(rows.map((r) => r.hypertable_name)).toEqual([...tables].sort());
      expect(dialect.timescaledb?.license).toMatch(/apache|timescale/);
    }
  });

  it('carries readings of the first (jsonb) schema over into the per-domain tables', async () => {
    const old = await createTestDatabase();
    const p = testPool(old.url, 2);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'migrations-'));
    try {
      for (const f of ['001_devices.sql', '002_readings.sql']) await copyFile(path.join(MIGRATIONS_DIR, f), path.join(dir, f));
      await migrate(p, log, dir);
      await p.query(`INSERT INTO device_types (name, domain, definition) VALUES ('bus', 'traffic', '{}'), ('generic', 'generic', '{}')`);
      await p.query(`INSERT INTO devices (name, type, token_lookup, token_hash) VALUES ('b', 'bus', 'x1', 'h'), ('g', 'generic', 'x2', 'h')`);
      await p.query(`INSERT INTO readings (device_id, ts, cell, lat, lng, vals) VALUES
        (1, '2026-01-01T00:00:00Z', 5, 23, 113.7, '{"speed": 30, "passengers": 12}'),
        (2, '2026-01-01T00:00:01Z', NULL, NULL, NULL, '{"t": 1.5}')`);
      await migrate(p, log);
      const rows = await p.query(
        `SELECT domain, device_id, cell, (SELECT jsonb_object_agg(k.name, u.v) FROM unnest(keys, vals) u(id, v) JOIN telemetry_keys k ON k.id = u.id) AS v
           FROM readings ORDER BY device_id`,
      );
      expect(rows.rows).toEqual([
        { domain: 'traffic', device_id: 1, cell: '5', v: { speed: 30, passengers: 12 } },
        { domain: 'generic', device_id: 2, cell: null, v: { t: 1.5 } },
      ]);
    } finally {
      await p.end();
      await old.drop();
      await rm(dir, { recursive: true, force: true });
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
