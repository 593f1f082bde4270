import type pg from 'pg';
import type { Logger } from '../core/log.ts';
import { PeriodicJob } from '../core/periodic.ts';
import type { Dialect } from './dialect.ts';

/**
 * GuanLink's physical layout for closed TimescaleDB chunks of readings: rows sorted by hour, then
 * H3 cell, then time. Ingest writes rows in arrival (time) order, which scatters one place's
 * readings over every page of a chunk; once a chunk is closed it is rewritten so that a place's
 * readings of one hour sit together: a small area over a week reads a few pages per hour instead
 * of one page per reading, and an hour over a large area is still one contiguous run (so the
 * BRIN index on ts keeps working). TimescaleDB's own reorder policy needs the Timescale licence;
 * this does the same with CLUSTER. Plain PostgreSQL has no chunks and keeps arrival order.
 */
export const LAYOUT_MARK = 'guanlink:layout=hour,cell';

const LAYOUT_LOCK = 7_004_117_310_404n;

export interface ChunkLayoutOptions {
  pool: pg.Pool;
  dialect: Dialect;
  log: Logger;
  /** How often to look for closed chunks; 0 disables the job. */
  intervalMs: number;
  /** A chunk is rewritten once its time range ended this long ago (late readings still go to it; they stay at its end). */
  afterMs: number;
}

/**
 * Rewrites one chunk in the layout, in one transaction (on failure nothing changes). CLUSTER holds
 * an exclusive lock on the chunk while it runs (about a second per 100 000 rows): readers and late
 * writers of that chunk wait; `lockTimeoutMs` bounds how long the job itself waits for its lock.
 */
export async function reorderChunk(client: pg.ClientBase, chunk: string, lockTimeoutMs = 5_000): Promise<void> {
  const index = `${chunk.split('.').pop()!.replaceAll('"', '')}_guanlink_layout`;
  await client.query('BEGIN');
  try {
    await client.query(`SET LOCAL lock_timeout = ${Math.max(1, Math.round(lockTimeoutMs))}`);
    await client.query(`CREATE INDEX "${index}" ON ${chunk} ((time_bucket('1 hour', ts)), cell, ts)`);
    const schema = chunk.includes('.') ? `${chunk.split('.')[0]}.` : '';
    await client.query(`CLUSTER ${chunk} USING "${index}"`);
    await client.query(`DROP INDEX ${schema}"${index}"`);
    await client.query(`COMMENT ON TABLE ${chunk} IS '${LAYOUT_MARK}'`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK');
    throw err;
  }
  await client.query(`ANALYZE ${chunk}`);
}

/** Closed chunks of these hypertables not yet in the layout, oldest first. */
export async function chunksToReorder(client: pg.ClientBase, hypertables: readonly string[], closedBefore: Date): Promise<string[]> {
  const { rows } = await client.query<{ chunk: string }>(
    `SELECT format('%I.%I', c.chunk_schema, c.chunk_name) AS chunk
       FROM timescaledb_information.chunks c
      WHERE c.hypertable_name = ANY ($1) AND c.range_end <= $2
        AND obj_description(format('%I.%I', c.chunk_schema, c.chunk_name)::regclass, 'pg_class') IS DISTINCT FROM $3
      ORDER BY c.range_end`,
    [hypertables, closedBefore, LAYOUT_MARK],
  );
  return rows.map((r) => r.chunk);
}

/** The periodic job: one node at a time (advisory lock), one chunk per transaction. */
export class ChunkLayout {
  private readonly job: PeriodicJob;

  constructor(
    private readonly opts: ChunkLayoutOptions,
    private readonly hypertables: readonly string[],
  ) {
    this.job = new PeriodicJob(() => this.runOnce(), opts.dialect.kind === 'timescaledb' ? opts.intervalMs : 0, (err) =>
      opts.log.warn({ err: err.message }, 'chunk layout job failed; retrying at the next interval'),
    );
  }

  start(): void {
    this.job.start();
  }

  stop(): Promise<void> {
    return this.job.stop();
  }

  /** Rewrites every chunk that is due now; returns the chunks done (empty when another node holds the job). */
  async runOnce(): Promise<string[]> {
    if (this.opts.dialect.kind !== 'timescaledb') return [];
    const client = await this.opts.pool.connect();
    const done: string[] = [];
    try {
      if (!(await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [LAYOUT_LOCK])).rows[0]!.ok) return done;
      try {
        for (const chunk of await chunksToReorder(client, this.hypertables, new Date(Date.now() - this.opts.afterMs))) {
          if (this.job.stopping) break;
          const started = Date.now();
          try {
            await reorderChunk(client, chunk);
            done.push(chunk);
            this.opts.log.info({ chunk, ms: Date.now() - started }, 'chunk rewritten in hour/cell order');
          } catch (err) {
            // Busy (lock timeout) or dropped meanwhile: try again next time.
            this.opts.log.warn({ chunk, err: (err as Error).message }, 'could not rewrite chunk; will retry');
          }
        }
      } finally {
        await client.query('SELECT pg_advisory_unlock($1)', [LAYOUT_LOCK]);
      }
    } finally {
      client.release();
    }
    return done;
  }
}
