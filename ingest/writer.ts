import type pg from 'pg';
import type { Logger } from '../core/log.ts';
import type { KeyDictionary } from '../db/keys.ts';
import { readingsTable } from '../db/readings-tables.ts';
import { READING_COLUMNS, byDomain, copyReadings, mergeSameInstant } from './copy.ts';
import type { Reading } from './readings.ts';

export interface WriterOptions {
  pool: pg.Pool;
  log: Logger;
  keys: KeyDictionary;
  /** Flush once this many readings are queued… */
  batchSize: number;
  /** …or once the oldest queued reading has waited this long. */
  batchMs: number;
  /** Batches in flight at once, each on its own connection. */
  concurrency: number;
  onCommitted?: (rows: Reading[]) => void;
  /** Runs inside each batch's transaction after its rows are written (e.g. rollup invalidations). */
  inTransaction?: (client: pg.PoolClient, rows: Reading[]) => Promise<void>;
  onBatch?: (info: { rows: number; ms: number; merged: boolean }) => void;
}

/** A reading the database refuses for what it contains (not because it is unavailable). */
export class RejectedByDatabase extends Error {}

interface Request {
  readings: Reading[];
  resolve: () => void;
  reject: (err: Error) => void;
}

/**
 * Group commit. Callers hand over readings and get a promise that settles only when those
 * readings are committed, which is when the broker may acknowledge the publish. Writes use COPY;
 * a batch that collides with stored rows (a device's retransmission after a lost PUBACK) is
 * re-written through a staging table with ON CONFLICT so that each (device, ts, key) is stored
 * once. While the database is unreachable, batches are retried with backoff and nothing settles.
 */
export class ReadingWriter {
  /** Requests not yet in a batch: `queue[head..]` (a head index, not shift(): batches take thousands). */
  private queue: Request[] = [];
  private head = 0;
  private queued = 0;
  private writing = 0;
  private inFlight = 0;
  private dueAt = Number.POSITIVE_INFINITY;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private flushAll = false;
  private idleWaiters: (() => void)[] = [];
  private stopping = false;
  private outage: { since: number; attempts: number } | undefined;

  constructor(private readonly opts: WriterOptions) {}

  /** Readings waiting or being written. */
  get pending(): number {
    return this.queued + this.writing;
  }

  get databaseDown(): boolean {
    return this.outage !== undefined;
  }

  write(readings: Reading[]): Promise<void> {
    if (readings.length === 0) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      if (this.head === this.queue.length) this.dueAt = Date.now() + this.opts.batchMs;
      this.queue.push({ readings, resolve, reject });
      this.queued += readings.length;
      if (this.queued >= this.opts.batchSize) this.schedule();
      else this.armTimer();
    });
  }

  /** Writes everything queued now and resolves once all of it is committed (used at shutdown). */
  async drain(): Promise<void> {
    this.flushAll = true;
    this.schedule();
    if (this.head === this.queue.length && this.inFlight === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops retrying: pending writes fail instead of waiting for the database (last resort at exit). */
  abandon(): void {
    this.stopping = true;
  }

  /** Starts every batch that is due and a writer is free for; then waits for the next deadline. */
  private schedule(): void {
    while (this.head < this.queue.length && this.inFlight < this.opts.concurrency) {
      const due = this.flushAll || this.queued >= this.opts.batchSize || Date.now() >= this.dueAt;
      if (!due) break;
      this.startBatch();
    }
    // With every writer busy the next batch starts when one finishes (startBatch's finally), not
    // on a timer: a due timer would fire every millisecond through a database outage.
    if (this.head < this.queue.length && this.inFlight < this.opts.concurrency) this.armTimer();
    if (this.head === this.queue.length && this.inFlight === 0) {
      this.flushAll = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /** One timer at a time, for the oldest queued request's deadline (not one per write). */
  private armTimer(): void {
    if (this.timer && this.timerAt <= this.dueAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = this.dueAt;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.timerAt = Number.POSITIVE_INFINITY;
      this.schedule();
    }, Math.max(0, this.dueAt - Date.now()));
  }

  private startBatch(): void {
    let end = this.head;
    let rows = 0;
    while (end < this.queue.length) {
      const n = this.queue[end]!.readings.length;
      if (end > this.head && rows + n > this.opts.batchSize) break;
      rows += n;
      end++;
    }
    const batch = this.queue.slice(this.head, end);
    this.head = end;
    if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 65_536) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    this.queued -= rows;
    this.writing += rows;
    this.dueAt = this.head < this.queue.length ? Date.now() + this.opts.batchMs : Number.POSITIVE_INFINITY;
    this.inFlight++;
    void this.writeWithRetry(batch).finally(() => {
      this.writing -= rows;
      this.inFlight--;
      this.schedule();
    });
  }

  private async writeWithRetry(batch: Request[]): Promise<void> {
    let delay = 50;
    for (;;) {
      try {
        await this.writeIsolatingBadRows(batch);
        if (this.outage) {
          this.opts.log.info({ downMs: Date.now() - this.outage.since, attempts: this.outage.attempts }, 'database writable again');
          this.outage = undefined;
        }
        return;
      } catch (err) {
        if (this.stopping) {
          for (const r of batch) r.reject(err as Error);
          return;
        }
        if (!this.outage) {
          this.outage = { since: Date.now(), attempts: 0 };
          this.opts.log.warn({ err: (err as Error).message }, 'database unavailable; holding readings (unacknowledged) and retrying');
        }
        this.outage.attempts++;
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 2000);
      }
    }
  }

  /** Commits the batch; a request whose data the database refuses is split off and rejected alone. */
  private async writeIsolatingBadRows(batch: Request[]): Promise<void> {
    try {
      const rows = batch.flatMap((r) => r.readings);
      await this.commit(rows);
      for (const r of batch) r.resolve();
    } catch (err) {
      if (!isDataError(err)) throw err;
      if (batch.length === 1) {
        batch[0]!.reject(new RejectedByDatabase((err as Error).message));
        return;
      }
      const half = Math.ceil(batch.length / 2);
      await this.writeIsolatingBadRows(batch.slice(0, half));
      await this.writeIsolatingBadRows(batch.slice(half));
    }
  }

  private async commit(input: Reading[]): Promise<void> {
    const started = Date.now();
    const rows = mergeSameInstant(input);
    const names = new Set<string>();
    for (const r of rows) {
      for (const key in r.values) names.add(key);
      for (const key in r.jsonValues) names.add(key);
    }
    await this.opts.keys.ensure(names);
    const groups = [...byDomain(rows)].map(([domain, group]) => ({ table: readingsTable(domain), rows: group }));
    const client = await this.opts.pool.connect();
    let merged = false;
    let broken = false;
    try {
      try {
        await client.query('BEGIN');
        for (const g of groups) await copyReadings(client, g.table, g.rows, this.opts.keys);
        await this.opts.inTransaction?.(client, rows);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        if ((err as { code?: string }).code !== '23505') throw err;
        merged = true;
        await client.query('BEGIN');
        await client.query(`CREATE TEMP TABLE IF NOT EXISTS readings_stage (LIKE readings_generic) ON COMMIT DELETE ROWS`);
        for (const g of groups) {
          await copyReadings(client, 'readings_stage', g.rows, this.opts.keys);
          await client.query(
            `INSERT INTO ${g.table} AS r ${READING_COLUMNS}
               SELECT device_id, ts, cell, lat, lng, alt, keys, vals, jvals FROM readings_stage
             ON CONFLICT (device_id, ts) DO UPDATE SET
               (keys, vals, jvals) = (SELECT m.keys, m.vals, m.jvals
                                        FROM guanlink_merge_typed_values(r.keys, r.vals, r.jvals, excluded.keys, excluded.vals, excluded.jvals) AS m),
               cell = coalesce(excluded.cell, r.cell),
               lat = CASE WHEN excluded.cell IS NULL THEN r.lat ELSE excluded.lat END,
               lng = CASE WHEN excluded.cell IS NULL THEN r.lng ELSE excluded.lng END,
               alt = CASE WHEN excluded.cell IS NULL THEN r.alt ELSE excluded.alt END`,
          );
          await client.query('TRUNCATE readings_stage');
        }
        await this.opts.inTransaction?.(client, rows);
        await client.query('COMMIT');
      }
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      broken = !isDataError(err);
      throw err;
    } finally {
      client.release(broken);
    }
    this.opts.onBatch?.({ rows: rows.length, ms: Date.now() - started, merged });
    this.opts.onCommitted?.(rows);
  }
}


/** SQLSTATE classes 22 (data exception) and 23 (integrity): the rows are at fault, not the database. */
function isDataError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code.startsWith('22') || (code.startsWith('23') && code !== '23505'));
}
