import type pg from 'pg';
import { PeriodicJob } from '../core/periodic.ts';
import { Type, type Static } from 'typebox';
import { DOMAINS, Domain } from '../core/domains.ts';
import type { Logger } from '../core/log.ts';
import { readingsTable } from './readings-tables.ts';
import type { Dialect } from './dialect.ts';
import { rollupTable } from './rollups.ts';

export const MAX_RETENTION_DAYS = 36_500;

// `null` as a constant, first: with the API's type coercion, `{type: 'null'}` would accept 0, false
// and "" as null (forever).
const Forever = Type.Unsafe<null>({ const: null, description: 'kept forever' });
const Days = (what: string) =>
  Type.Union([Forever, Type.Integer({ minimum: 1, maximum: MAX_RETENTION_DAYS })], {
    description: `days ${what} are kept (1…${MAX_RETENTION_DAYS}); null keeps them forever`,
  });

/** What may be changed: how long each level of one domain's data is kept. */
export const RetentionUpdate = Type.Object(
  {
    rawDays: Days('raw readings'),
    rollups1mDays: Days('1-minute rollups'),
    rollups1hDays: Days('1-hour rollups'),
  },
  { additionalProperties: false },
);
export type RetentionUpdate = Static<typeof RetentionUpdate>;

export const RetentionPolicy = Type.Object({
  domain: Domain,
  rawDays: Days('raw readings'),
  rollups1mDays: Days('1-minute rollups'),
  rollups1hDays: Days('1-hour rollups'),
  updatedAt: Type.String({ format: 'date-time' }),
});
export type RetentionPolicy = Static<typeof RetentionPolicy>;

export const RetentionAction = Type.Object({
  domain: Domain,
  level: Type.Union([Type.Literal('raw'), Type.Literal('1m'), Type.Literal('1h')]),
  table: Type.String(),
  cutoff: Type.String({ format: 'date-time', description: 'data older than this was due' }),
  method: Type.Union([Type.Literal('drop_chunks'), Type.Literal('delete')]),
  droppedChunks: Type.Array(Type.String(), { description: 'TimescaleDB: whole chunks dropped (every row older than the cutoff)' }),
  deletedRows: Type.Integer({ description: 'plain PostgreSQL: rows deleted in bounded batches' }),
});
export type RetentionAction = Static<typeof RetentionAction>;

export const RetentionReport = Type.Object({
  startedAt: Type.String({ format: 'date-time' }),
  ms: Type.Integer(),
  actions: Type.Array(RetentionAction),
  rejectedMessages: Type.Optional(Type.Omit(RetentionAction, ['domain', 'level'])),
  deviceEvents: Type.Optional(Type.Omit(RetentionAction, ['domain', 'level'])),
  geofenceEvents: Type.Optional(Type.Omit(RetentionAction, ['domain', 'level'])),
  auditLog: Type.Optional(Type.Omit(RetentionAction, ['domain', 'level'])),
});
export type RetentionReport = Static<typeof RetentionReport>;

/** Why a policy is not acceptable (undefined: it is). Finer data must not outlive what summarises it. */
export function policyProblem(p: RetentionUpdate): string | undefined {
  const forever = (d: number | null) => (d === null ? Number.POSITIVE_INFINITY : d);
  const show = (d: number | null) => (d === null ? 'forever' : `${d} days`);
  if (forever(p.rollups1mDays) < forever(p.rawDays)) {
    return `rollups1mDays (${show(p.rollups1mDays)}) must be at least rawDays (${show(p.rawDays)}): 1-minute rollups summarise the raw readings and must be kept as long`;
  }
  if (forever(p.rollups1hDays) < forever(p.rollups1mDays)) {
    return `rollups1hDays (${show(p.rollups1hDays)}) must be at least rollups1mDays (${show(p.rollups1mDays)}): 1-hour rollups are computed from 1-minute rollups and must be kept as long`;
  }
  return undefined;
}

export interface RetentionOptions {
  pool: pg.Pool;
  dialect: Dialect;
  log: Logger;
  /** How often the policies are applied; 0: never automatically (POST /api/v1/retention/apply still works). */
  intervalMs: number;
  /** Plain PostgreSQL: rows per DELETE (each its own short transaction). */
  deleteBatch?: number;
  /** How long rejected messages (with their payloads) are kept; null: forever. */
  rejectedDays: number | null;
  /** How long connect/disconnect events (device_events) are kept; null or omitted: forever. */
  deviceEventsDays?: number | null;
  /** How long geofence enter/exit/dwell events (geofence_events) are kept; null or omitted: forever. */
  geofenceEventsDays?: number | null;
  /** How long audit log entries (audit_log) are kept; null or omitted: forever. */
  auditDays?: number | null;
}

// Any constant works; the same on every node, so that one node at a time applies retention.
const RETENTION_LOCK = 7_004_117_310_403n;
const LEVELS = ['raw', '1m', '1h'] as const;

interface PolicyRow {
  domain: Domain;
  raw_days: number | null;
  rollup_1m_days: number | null;
  rollup_1h_days: number | null;
  updated_at: Date;
}

const toPolicy = (r: PolicyRow): RetentionPolicy => ({
  domain: r.domain,
  rawDays: r.raw_days,
  rollups1mDays: r.rollup_1m_days,
  rollups1hDays: r.rollup_1h_days,
  updatedAt: r.updated_at.toISOString(),
});

/**
 * Per-domain retention of raw readings and rollups (the `retention_policies` table). On
 * TimescaleDB whole chunks older than the cutoff are dropped (drop_chunks: no row-by-row delete,
 * no bloat; a chunk straddling the cutoff stays until it is entirely older). On plain PostgreSQL
 * rows older than the cutoff are deleted in bounded batches, each its own short transaction, so
 * no long lock is held.
 */
export class Retention {
  private readonly job: PeriodicJob;

  constructor(private readonly opts: RetentionOptions) {
    this.job = new PeriodicJob(() => this.applyOnce(false), opts.intervalMs, (err) =>
      opts.log.warn({ err: err.message }, 'applying retention failed; retrying at the next interval'),
    );
  }

  private get stopping(): boolean {
    return this.job.stopping;
  }

  async list(): Promise<RetentionPolicy[]> {
    const { rows } = await this.opts.pool.query<PolicyRow>('SELECT domain, raw_days, rollup_1m_days, rollup_1h_days, updated_at FROM retention_policies');
    return rows.map(toPolicy).sort((a, b) => DOMAINS.indexOf(a.domain) - DOMAINS.indexOf(b.domain));
  }

  /** Replaces one domain's policy; throws RangeError (with the reason) when it is not acceptable. */
  async update(domain: Domain, p: RetentionUpdate): Promise<RetentionPolicy> {
    const problem = policyProblem(p);
    if (problem) throw new RangeError(problem);
    const { rows } = await this.opts.pool.query<PolicyRow>(
      `INSERT INTO retention_policies (domain, raw_days, rollup_1m_days, rollup_1h_days) VALUES ($1, $2, $3, $4)
       ON CONFLICT (domain) DO UPDATE SET raw_days = excluded.raw_days, rollup_1m_days = excluded.rollup_1m_days,
         rollup_1h_days = excluded.rollup_1h_days, updated_at = now()
       RETURNING domain, raw_days, rollup_1m_days, rollup_1h_days, updated_at`,
      [domain, p.rawDays, p.rollups1mDays, p.rollups1hDays],
    );
    this.opts.log.info({ domain, ...p }, 'retention policy changed');
    return toPolicy(rows[0]!);
  }

  start(): void {
    this.job.start();
  }

  stop(): Promise<void> {
    return this.job.stop();
  }

  /** Applies every policy now (waits for a run in progress here or on another node). */
  apply(): Promise<RetentionReport> {
    return this.job.now(() => this.applyOnce(true)) as Promise<RetentionReport>;
  }

  private async applyOnce(wait: boolean): Promise<RetentionReport | undefined> {
    const started = new Date();
    const client = await this.opts.pool.connect();
    let broken = false;
    try {
      if (wait) await client.query('SELECT pg_advisory_lock($1)', [RETENTION_LOCK]);
      else if (!(await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [RETENTION_LOCK])).rows[0]!.ok) return undefined;
      try {
        const actions: RetentionAction[] = [];
        const hypertables = new Set<string>();
        if (this.opts.dialect.kind === 'timescaledb') {
          const { rows } = await client.query<{ name: string }>(`SELECT hypertable_name AS name FROM timescaledb_information.hypertables`);
          for (const r of rows) hypertables.add(r.name);
        }
        for (const policy of await this.list()) {
          for (const level of LEVELS) {
            if (this.stopping) break;
            const days = level === 'raw' ? policy.rawDays : level === '1m' ? policy.rollups1mDays : policy.rollups1hDays;
            if (days === null) continue;
            const table = level === 'raw' ? readingsTable(policy.domain) : rollupTable(level, policy.domain);
            const action = await this.applyTo(client, table, level === 'raw' ? 'ts' : 'bucket', days, hypertables.has(table));
            actions.push({ domain: policy.domain, level, table, ...action });
            if (action.droppedChunks.length > 0 || action.deletedRows > 0) {
              this.opts.log.info({ domain: policy.domain, level, table, ...action }, `retention: ${action.method === 'drop_chunks' ? `dropped ${action.droppedChunks.length} chunks` : `deleted ${action.deletedRows} rows`} of ${table} older than ${action.cutoff}`);
            }
            if (level === 'raw') {
              await client.query('DELETE FROM rollup_invalidations WHERE domain = $1 AND bucket < $2', [policy.domain, action.cutoff]);
            }
          }
        }
        const report: RetentionReport = { startedAt: started.toISOString(), ms: Date.now() - started.getTime(), actions };
        const eventTables = [
          ['rejectedMessages', 'rejected_messages', 'received_at', this.opts.rejectedDays],
          ['deviceEvents', 'device_events', 'at', this.opts.deviceEventsDays],
          ['geofenceEvents', 'geofence_events', 'ts', this.opts.geofenceEventsDays],
          ['auditLog', 'audit_log', 'at', this.opts.auditDays],
        ] as const;
        for (const [name, table, column, days] of eventTables) {
          if (days == null || this.stopping) continue;
          report[name] = { table, ...(await this.applyTo(client, table, column, days, hypertables.has(table))) };
        }
        report.ms = Date.now() - started.getTime();
        return report;
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [RETENTION_LOCK]).catch(() => (broken = true));
      }
    } catch (err) {
      broken = true;
      throw err;
    } finally {
      client.release(broken);
    }
  }

  private async applyTo(
    client: pg.PoolClient,
    table: string,
    column: 'ts' | 'bucket' | 'received_at' | 'at',
    days: number,
    hypertable: boolean,
  ): Promise<Omit<RetentionAction, 'domain' | 'level' | 'table'>> {
    const cutoff = (await client.query<{ c: Date }>('SELECT now() - make_interval(days => $1) AS c', [days])).rows[0]!.c.toISOString();
    if (hypertable) {
      const { rows } = await client.query<{ chunk: string }>(`SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)::text AS chunk`, [table, cutoff]);
      return { cutoff, method: 'drop_chunks', droppedChunks: rows.map((r) => r.chunk), deletedRows: 0 };
    }
    // Plain tables only: a ctid names one row of one table (a TID scan finds each batch directly).
    const batch = this.opts.deleteBatch ?? 10_000;
    let deletedRows = 0;
    for (;;) {
      const r = await client.query(
        `DELETE FROM ${table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM ${table} WHERE ${column} < $1 LIMIT ${batch}))`,
        [cutoff],
      );
      deletedRows += r.rowCount ?? 0;
      if ((r.rowCount ?? 0) < batch || this.stopping) break; // shutting down: the rest goes next time
    }
    return { cutoff, method: 'delete', droppedChunks: [], deletedRows };
  }
}
