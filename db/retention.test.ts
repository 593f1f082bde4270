import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../core/log.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../test/support/database.ts';
import { detectDialect } from './dialect.ts';
import { migrate } from './migrate.ts';
import { Retention, policyProblem } from './retention.ts';

const log = createLogger('silent');

describe('policyProblem', () => {
  it('accepts finer data kept no longer than what summarises it', () => {
    expect(policyProblem({ rawDays: 30, rollups1mDays: 30, rollups1hDays: 30 })).toBeUndefined();
    expect(policyProblem({ rawDays: 30, rollups1mDays: 365, rollups1hDays: null })).toBeUndefined();
    expect(policyProblem({ rawDays: null, rollups1mDays: null, rollups1hDays: null })).toBeUndefined();
  });

  it('refuses rollups that would disappear before the data they summarise', () => {
    expect(policyProblem({ rawDays: 90, rollups1mDays: 30, rollups1hDays: null })).toMatch(/^rollups1mDays \(30 days\) must be at least rawDays \(90 days\)/);
    expect(policyProblem({ rawDays: null, rollups1mDays: 30, rollups1hDays: null })).toMatch(/rawDays \(forever\)/);
    expect(policyProblem({ rawDays: 30, rollups1mDays: 60, rollups1hDays: 59 })).toMatch(/^rollups1hDays \(59 days\) must be at least rollups1mDays \(60 days\)/);
    expect(policyProblem({ rawDays: 30, rollups1mDays: null, rollups1hDays: 400 })).toMatch(/rollups1mDays \(forever\)/);
  });
});

describe('Retention: one node at a time, bounded batches on plain tables', () => {
  let db: TestDatabase;
  let pool: pg.Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 6);
    await migrate(pool, log);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('removes data older than the cutoff exactly once across two nodes (PostgreSQL: in small transactions)', async () => {
    const dialect = await detectDialect(pool);
    await pool.query(
      `INSERT INTO readings_generic (device_id, ts, keys, vals)
       SELECT d, now() - interval '400 days' - d * interval '1 minute', '{}', '{}' FROM generate_series(1, 25) AS d`,
    );
    await pool.query(`INSERT INTO readings_generic (device_id, ts, keys, vals) VALUES (1, now() - interval '1 day', '{}', '{}')`);
    const node = () => new Retention({ pool, log, dialect, intervalMs: 0, deleteBatch: 7, rejectedDays: null });
    const [a, b] = await Promise.all([node().apply(), node().apply()]);
    const [first, second] = [a, b].map((r) => r.actions.find((x) => x.table === 'readings_generic')!).sort((x, y) => y.deletedRows + y.droppedChunks.length - (x.deletedRows + x.droppedChunks.length));
    expect(second).toMatchObject({ deletedRows: 0, droppedChunks: [] });
    if (dialect.kind === 'timescaledb') {
      expect(first).toMatchObject({ method: 'drop_chunks', deletedRows: 0 });
      expect(first!.droppedChunks.length).toBeGreaterThan(0);
    }
    else expect(first).toMatchObject({ method: 'delete', deletedRows: 25, droppedChunks: [] });
    expect((await pool.query('SELECT count(*)::int AS n FROM readings_generic')).rows[0].n).toBe(1);
  });

  it('keeps rejected messages for their own retention period', async () => {
    const dialect = await detectDialect(pool);
    await pool.query(
      `INSERT INTO rejected_messages (received_at, device_id, topic, reasons, errors, stored, payload, payload_size) VALUES
         (now() - interval '40 days', 1, 't', '{invalid_json}', '[]', 0, 'x', 1),
         (now() - interval '1 day', 1, 't', '{invalid_json}', '[]', 0, 'y', 1)`,
    );
    const report = await new Retention({ pool, log, dialect, intervalMs: 0, rejectedDays: 30 }).apply();
    expect(report.rejectedMessages?.table).toBe('rejected_messages');
    const left = (await pool.query(`SELECT encode(payload, 'escape') AS p FROM rejected_messages`)).rows.map((r) => r.p);
    if (dialect.kind === 'timescaledb') expect(left).toContain('y');
    else expect(left).toEqual(['y']);
  });

  it('keeps geofence events for their own retention period', async () => {
    const dialect = await detectDialect(pool);
    await pool.query(`INSERT INTO device_types (name, domain, definition) VALUES ('retention-test', 'generic', '{}')`);
    const device = (await pool.query(`INSERT INTO devices (name, type, token_lookup, token_hash) VALUES ('r1', 'retention-test', 'lookup-r1', 'h') RETURNING id`)).rows[0].id;
    const fence = (await pool.query(`SELECT id FROM geofences ORDER BY id LIMIT 1`)).rows[0].id;
    await pool.query(
      `INSERT INTO geofence_events (geofence_id, device_id, kind, ts, lng, lat) VALUES ($1, $2, 'enter', now() - interval '400 days', 113.7, 23), ($1, $2, 'exit', now() - interval '1 day', 113.7, 23)`,
      [fence, device],
    );
    const report = await new Retention({ pool, log, dialect, intervalMs: 0, rejectedDays: null, geofenceEventsDays: 365 }).apply();
    expect(report.geofenceEvents).toMatchObject({ table: 'geofence_events', deletedRows: 1 });
    expect((await pool.query(`SELECT kind FROM geofence_events`)).rows).toEqual([{ kind: 'exit' }]);
    const forever = await new Retention({ pool, log, dialect, intervalMs: 0, rejectedDays: null }).apply();
    expect(forever.geofenceEvents).toBeUndefined();
  });
});
