import type pg from 'pg';
import { DOMAINS, type Domain } from '../core/domains.ts';
import type { Logger } from '../core/log.ts';
import { readingsTable } from './readings-tables.ts';
import { BUCKET_ORIGIN, DAY, HOUR, MINUTE, floorTo } from './buckets.ts';

/** The table holding one domain's rollups at one resolution (migrations/004). */
export const rollupTable = (resolution: '1m' | '1h', domain: Domain): string => `rollups_${resolution}_${domain.replaceAll('-', '_')}`;

/** What the ingest hook needs of a committed reading. */
export interface RowTime {
  deviceId: number;
  domain: Domain;
  /** Epoch milliseconds. */
  ts: number;
}

export interface RollupOptions {
  pool: pg.Pool;
  log: Logger;
  /** How often closed minutes are rolled up; 0: this node never refreshes (another one does). */
  refreshMs: number;
  /** A minute is closed this long after it ends; readings older than the watermark are "late". */
  latenessMs: number;
}

export interface RefreshReport {
  /** Another node (or refresh) held the refresh lock. */
  skipped: boolean;
  /** Minutes rolled up in order (the watermark moved by this much). */
  minutes: number;
  /** Rows written to rollups_1m / rollups_1h. */
  rows1m: number;
  rows1h: number;
  /** Late-data invalidations processed (recomputed or expired). */
  invalidations: number;
  /** Everything before this minute is rolled up. */
  done: Date | null;
  ms: number;
}

// Any constant works; it only has to be the same on every node. The refresh runs on one node at a
// time. (The watermark lock shared with ingest, 7004117310401, lives in the migration's functions.)
const REFRESH_LOCK = 7_004_117_310_402n;
const ORIGIN = new Date(BUCKET_ORIGIN).toISOString();
/** Invalidations handled per transaction. */
const INVALIDATION_PAGE = 2000;
/** Catch-up step bounds, in hours of readings per transaction (adapted to the rows found). */
const MIN_STEP_HOURS = 1;
const MAX_STEP_HOURS = 24 * 7;

const upsert = `ON CONFLICT (device_id, key_id, bucket) DO UPDATE SET count = excluded.count, sum = excluded.sum,
  min = excluded.min, max = excluded.max, last_ts = excluded.last_ts, last_value = excluded.last_value`;

/**
 * The (key id, value) pairs of a readings row `r` that aggregate: its numbers, and its booleans
 * as 1 (true) and 0 (false), so that sum counts the true values and avg is their share. Strings
 * and JSON values are not aggregated.
 */
export const NUMBERS_AND_BOOLEANS = `SELECT * FROM unnest(r.keys, r.vals)
  UNION ALL SELECT b.key::smallint, (b.value = 'true'::jsonb)::int::float8 FROM jsonb_each(r.jvals) AS b WHERE jsonb_typeof(b.value) = 'boolean'`;

/**
 * Minute rollups of one domain's raw readings that match `where` (alias r; joins go in `from`).
 * `replace`: upsert over existing buckets (recomputation); otherwise the range was emptied first.
 */
const minuteSql = (domain: Domain, from: string, where: string, replace = true) => `
  INSERT INTO ${rollupTable('1m', domain)} (device_id, key_id, bucket, count, sum, min, max, last_ts, last_value)
  SELECT r.device_id, u.k, date_bin('1 minute', r.ts, '${ORIGIN}'), count(*), sum(u.v), min(u.v), max(u.v), max(r.ts),
         (array_agg(u.v ORDER BY r.ts DESC))[1]
    FROM ${from} CROSS JOIN LATERAL (${NUMBERS_AND_BOOLEANS}) AS u(k, v)
   WHERE ${where}
   GROUP BY 1, 2, 3
  ${replace ? upsert : ''}`;

/** Hour rollups from one domain's minute rollups that match `where` (alias m). */
const hourSql = (domain: Domain, from: string, where: string, replace = true) => `
  INSERT INTO ${rollupTable('1h', domain)} (device_id, key_id, bucket, count, sum, min, max, last_ts, last_value)
  SELECT m.device_id, m.key_id, date_bin('1 hour', m.bucket, '${ORIGIN}'), sum(m.count), sum(m.sum), min(m.min), max(m.max), max(m.last_ts),
         (array_agg(m.last_value ORDER BY m.last_ts DESC))[1]
    FROM ${from}
   WHERE ${where}
   GROUP BY 1, 2, 3
  ${replace ? upsert : ''}`;

/**
 * Per-device-key rollups at 1 minute and 1 hour (count, sum, min, max, last), maintained by
 * GuanLink on every database edition.
 *
 * - Closed minutes (older than now − lateness) are aggregated once, from the raw readings, up to
 *   a watermark kept in `rollup_state`; a restarted node continues from there. Hours are computed
 *   from their 60 minutes once they close. Every bucket is recomputed, never incremented, so
 *   retransmissions and repeated work cannot double-count.
 * - Readings older than the watermark when written ("late") are recorded by ingest in
 *   `rollup_invalidations`, in the batch's own transaction (`recordLate`); the refresher
 *   recomputes those minutes and their hours. On-time batches cost one tiny statement.
 * - The watermark moves under an exclusive advisory lock that ingest takes shared, so no batch
 *   can slip between "rows read" and "watermark moved" unnoticed (see migrations/004).
 * - Nodes sharing a database refresh one at a time (session advisory lock); the others skip.
 */
export class Rollups {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<RefreshReport> | undefined;
  private stopping = false;
  private stepHours = MIN_STEP_HOURS;

  constructor(private readonly opts: RollupOptions) {}

  /**
   * The ingest hook: inside a batch's transaction, after its rows are written. Records the
   * (device, minute) of readings older than the watermark; nothing else for on-time readings.
   */
  readonly recordLate = async (client: pg.ClientBase, rows: readonly RowTime[]): Promise<void> => {
    if (rows.length === 0) return;
    const { rows: state } = await client.query<{ w: number | null }>(`SELECT (extract(epoch FROM guanlink_rollup_watermark()) * 1000)::float8 AS w`);
    const watermark = state[0]?.w;
    if (watermark === null || watermark === undefined) return;
    const seen = new Set<string>();
    const domains: string[] = [];
    const devices: number[] = [];
    const minutes: string[] = [];
    for (const r of rows) {
      if (r.ts >= watermark) continue;
      const minute = floorTo(r.ts, MINUTE);
      const id = `${r.deviceId}/${minute}`;
      if (seen.has(id)) continue;
      seen.add(id);
      domains.push(r.domain);
      devices.push(r.deviceId);
      minutes.push(new Date(minute).toISOString());
    }
    if (devices.length === 0) return;
    await client.query(
      `INSERT INTO rollup_invalidations (domain, device_id, bucket) SELECT * FROM unnest($1::text[], $2::int[], $3::timestamptz[])`,
      [domains, devices, minutes],
    );
  };

  start(): void {
    if (this.opts.refreshMs <= 0) return;
    this.schedule(0);
  }

  /** Stops the periodic refresh and waits for one in progress (it stops between steps). */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running?.catch(() => {});
  }

  /** Watermarks: everything before `done` is rolled up; ingest treats rows before `announced` as late. */
  async state(): Promise<{ announced: Date | null; done: Date | null; pendingInvalidations: number }> {
    const { rows } = await this.opts.pool.query<{ announced: Date | null; done: Date | null; pending: number }>(
      `SELECT announced, done, (SELECT count(*)::int FROM rollup_invalidations) AS pending FROM rollup_state`,
    );
    return { announced: rows[0]!.announced, done: rows[0]!.done, pendingInvalidations: rows[0]!.pending };
  }

  /** Rolls up everything closed now (one refresh at a time per process; other nodes skip). */
  refresh(): Promise<RefreshReport> {
    this.running ??= this.refreshOnce().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private schedule(delay: number): void {
    if (this.stopping) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.refresh()
        .then((report) => {
          if (report.skipped) return;
          const level = report.ms > 1000 || report.minutes > 60 || report.invalidations > 0 ? 'info' : 'debug';
          this.opts.log[level](report, 'rollups refreshed');
        })
        .catch((err: unknown) => this.opts.log.warn({ err: (err as Error).message }, 'rollup refresh failed; retrying at the next interval'))
        .finally(() => this.schedule(this.opts.refreshMs));
    }, delay);
    this.timer.unref?.();
  }

  private async refreshOnce(): Promise<RefreshReport> {
    const started = Date.now();
    const report: RefreshReport = { skipped: false, minutes: 0, rows1m: 0, rows1h: 0, invalidations: 0, done: null, ms: 0 };
    const client = await this.opts.pool.connect();
    let broken = false;
    try {
      const locked = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [REFRESH_LOCK]);
      if (!locked.rows[0]!.ok) return { ...report, skipped: true, ms: Date.now() - started };
      try {
        await this.announce(client);
        await this.rollUpClosedMinutes(client, report);
        await this.recomputeInvalidated(client, report);
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        // Should this fail, the connection is discarded, which releases the lock too.
        await client.query('SELECT pg_advisory_unlock($1)', [REFRESH_LOCK]).catch(() => (broken = true));
      }
      report.done = (await client.query<{ done: Date | null }>('SELECT done FROM rollup_state')).rows[0]!.done;
      report.ms = Date.now() - started;
      return report;
    } catch (err) {
      broken = true;
      throw err;
    } finally {
      client.release(broken);
    }
  }

  /**
   * Moves the announced watermark to the last closed minute. The exclusive lock waits for batches
   * in their final statements (they hold it shared) and holds new ones back for that moment only.
   */
  private async announce(client: pg.PoolClient): Promise<void> {
    const lateness = `${this.opts.latenessMs} milliseconds`;
    const { rows } = await client.query<{ due: boolean }>(
      `SELECT announced IS NULL OR announced < date_bin('1 minute', now() - $1::interval, '${ORIGIN}') AS due FROM rollup_state`,
      [lateness],
    );
    if (!rows[0]!.due) return;
    await client.query('BEGIN');
    await client.query(`SET LOCAL lock_timeout = '10s'`);
    await client.query(`SELECT guanlink_rollup_announce(date_bin('1 minute', now() - $1::interval, '${ORIGIN}'))`, [lateness]);
    await client.query('COMMIT');
  }

  /** Aggregates [done, announced) from raw readings, in steps of whole hours, one transaction each. */
  private async rollUpClosedMinutes(client: pg.PoolClient, report: RefreshReport): Promise<void> {
    while (!this.stopping) {
      // One snapshot per step, taken after the announcement: every batch that did not see the new
      // watermark has committed, and later ones record their late rows as invalidations.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      const state = (await client.query<{ announced: Date | null; done: Date | null }>('SELECT announced, done FROM rollup_state')).rows[0]!;
      if (!state.announced) {
        await client.query('COMMIT');
        return;
      }
      let done = state.done?.getTime();
      if (done === undefined) {
        const first = await client.query<{ ts: Date | null }>(`SELECT min(ts) AS ts FROM readings`);
        const firstTs = first.rows[0]!.ts;
        done = firstTs ? floorTo(firstTs.getTime(), MINUTE) : state.announced.getTime();
      }
      const announced = state.announced.getTime();
      if (done >= announced) {
        if (!state.done) await client.query('UPDATE rollup_state SET done = $1, updated_at = now()', [new Date(announced)]);
        await client.query('COMMIT');
        return;
      }
      const end = Math.min(announced, floorTo(done, HOUR) + this.stepHours * HOUR);
      const range = [new Date(done), new Date(end)];
      let rows1m = 0;
      // Normally nothing is there yet; emptying the range first (rather than upserting) is cheaper
      // and also right after a manual reset of the watermark.
      for (const domain of DOMAINS) {
        await client.query(`DELETE FROM ${rollupTable('1m', domain)} WHERE bucket >= $1 AND bucket < $2`, range);
        const r = await client.query(minuteSql(domain, `${readingsTable(domain)} r`, 'r.ts >= $1 AND r.ts < $2', false), range);
        rows1m += r.rowCount ?? 0;
      }
      const hours = [new Date(floorTo(done, HOUR)), new Date(floorTo(end, HOUR))];
      if (hours[0]! < hours[1]!) {
        for (const domain of DOMAINS) {
          await client.query(`DELETE FROM ${rollupTable('1h', domain)} WHERE bucket >= $1 AND bucket < $2`, hours);
          const r = await client.query(hourSql(domain, `${rollupTable('1m', domain)} m`, 'm.bucket >= $1 AND m.bucket < $2', false), hours);
          report.rows1h += r.rowCount ?? 0;
        }
      }
      await client.query('UPDATE rollup_state SET done = $1, updated_at = now()', [new Date(end)]);
      await client.query('COMMIT');
      report.minutes += (end - done) / MINUTE;
      report.rows1m += rows1m;
      // Big steps through sparse history, small ones through dense history.
      if (rows1m < 20_000) this.stepHours = Math.min(MAX_STEP_HOURS, this.stepHours * 2);
      else if (rows1m > 200_000) this.stepHours = Math.max(MIN_STEP_HOURS, Math.floor(this.stepHours / 2));
    }
  }

  /**
   * Recomputes the minutes (and closed hours) that received late readings, then deletes exactly
   * the invalidations it read, all in one snapshot: a late batch committing meanwhile keeps its
   * own invalidation for the next round. Minutes about to leave raw retention are not recomputed
   * (their raw readings may already be partly gone); their invalidations are dropped.
   */
  private async recomputeInvalidated(client: pg.PoolClient, report: RefreshReport): Promise<void> {
    while (!this.stopping) {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ');
      const { rows } = await client.query<{ id: string; domain: Domain; device_id: number; bucket: Date; expired: boolean }>(
        `SELECT i.id, i.domain, i.device_id, i.bucket,
                coalesce(i.bucket < now() - make_interval(days => p.raw_days) + interval '1 hour', false) AS expired
           FROM rollup_invalidations i
           LEFT JOIN retention_policies p ON p.domain = i.domain
          WHERE i.bucket < (SELECT done FROM rollup_state)
          ORDER BY i.id
          LIMIT ${INVALIDATION_PAGE}`,
      );
      if (rows.length === 0) {
        await client.query('COMMIT');
        return;
      }
      const doneHour = floorTo((await client.query<{ done: Date }>('SELECT done FROM rollup_state')).rows[0]!.done.getTime(), HOUR);
      // Grouped by domain and day, each statement bounded by constants: on TimescaleDB the planner
      // then keeps only that day's chunks instead of probing every chunk for every minute.
      const groups = new Map<string, { domain: Domain; day: number; pairs: Map<string, [number, string]> }>();
      let expired = 0;
      for (const r of rows) {
        if (r.expired) {
          expired++;
          continue;
        }
        const day = floorTo(r.bucket.getTime(), DAY);
        const id = `${r.domain}/${day}`;
        let g = groups.get(id);
        if (!g) groups.set(id, (g = { domain: r.domain, day, pairs: new Map() }));
        g.pairs.set(`${r.device_id}/${r.bucket.getTime()}`, [r.device_id, r.bucket.toISOString()]);
      }
      for (const { domain, day, pairs } of groups.values()) {
        const bounds = [new Date(day).toISOString(), new Date(day + DAY).toISOString()];
        const minutes = await client.query<{ device_id: number; key_id: number; bucket: Date }>(
          `${minuteSql(
            domain,
            // LATERAL … OFFSET 0: one index range scan per minute, whatever the planner guesses of the list.
            `unnest($1::int[], $2::timestamptz[]) AS i(device_id, bucket)
             CROSS JOIN LATERAL (SELECT r.device_id, r.ts, r.keys, r.vals, r.jvals FROM ${readingsTable(domain)} r
                                  WHERE r.device_id = i.device_id AND r.ts >= i.bucket AND r.ts < i.bucket + interval '1 minute'
                                    AND r.ts >= $3::timestamptz AND r.ts < $4::timestamptz OFFSET 0) r`,
            'true',
          )} RETURNING device_id, key_id, bucket`,
          [[...pairs.values()].map((p) => p[0]), [...pairs.values()].map((p) => p[1]), ...bounds],
        );
        report.rows1m += minutes.rowCount ?? 0;
        // Hours already rolled up whose minutes changed, per key (the primary key's order).
        const hours = new Map<string, [number, number, string]>();
        for (const m of minutes.rows) {
          const hour = floorTo(m.bucket.getTime(), HOUR);
          if (hour >= doneHour) continue;
          hours.set(`${m.device_id}/${m.key_id}/${hour}`, [m.device_id, m.key_id, new Date(hour).toISOString()]);
        }
        if (hours.size === 0) continue;
        const h = [...hours.values()];
        const r = await client.query(
          hourSql(
            domain,
            `unnest($1::int[], $2::smallint[], $3::timestamptz[]) AS i(device_id, key_id, hour)
             CROSS JOIN LATERAL (SELECT m.* FROM ${rollupTable('1m', domain)} m
                                  WHERE m.device_id = i.device_id AND m.key_id = i.key_id AND m.bucket >= i.hour AND m.bucket < i.hour + interval '1 hour'
                                    AND m.bucket >= $4::timestamptz AND m.bucket < $5::timestamptz OFFSET 0) m`,
            'true',
          ),
          [h.map((x) => x[0]), h.map((x) => x[1]), h.map((x) => x[2]), ...bounds],
        );
        report.rows1h += r.rowCount ?? 0;
      }
      await client.query('DELETE FROM rollup_invalidations WHERE id = ANY ($1::bigint[])', [rows.map((r) => r.id)]);
      await client.query('COMMIT');
      report.invalidations += rows.length;
      if (expired > 0) this.opts.log.info({ expired }, 'late readings older than raw retention were not rolled up');
      if (rows.length < INVALIDATION_PAGE) return;
    }
  }
}
