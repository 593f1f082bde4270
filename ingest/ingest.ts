import type pg from 'pg';
import type { Logger } from '../core/log.ts';
import type { DeviceContext } from '../core/registry.ts';
import type { KeyDictionary } from '../db/keys.ts';
import { LatestTracker } from './latest.ts';
import type { Reading, Rejection } from './readings.ts';
import { parseTelemetry } from './telemetry-payload.ts';
import { DEFAULT_TIME_RULES, toReadings, type TimeRules } from './validate.ts';
import { ReadingWriter, RejectedByDatabase } from './writer.ts';

export interface IngestOptions {
  pool: pg.Pool;
  log: Logger;
  keys: KeyDictionary;
  batchSize: number;
  batchMs: number;
  writers: number;
  latestFlushMs: number;
  timeRules?: TimeRules;
  /** Runs inside each batch's transaction after its rows are written. */
  inTransaction?: (client: pg.PoolClient, rows: readonly Reading[]) => Promise<void>;
}

export interface TelemetryOutcome {
  /** Readings committed. */
  stored: number;
  /** What was refused, and why; the rest of the message was stored. */
  rejections: Rejection[];
}

export type CommittedListener = (rows: readonly Reading[]) => void;

/**
 * Ingest: validates telemetry, hands readings to the group-commit writer and settles only once
 * they are committed. Committed batches are passed on to listeners (latest state, live streams).
 */
export class Ingest {
  readonly latest: LatestTracker;
  private readonly writer: ReadingWriter;
  private readonly listeners: CommittedListener[] = [];
  private readonly timeRules: TimeRules;

  constructor(private readonly opts: IngestOptions) {
    this.timeRules = opts.timeRules ?? DEFAULT_TIME_RULES;
    this.latest = new LatestTracker(opts.pool, opts.keys, opts.log.child({ module: 'latest' }), opts.latestFlushMs);
    this.writer = new ReadingWriter({
      pool: opts.pool,
      keys: opts.keys,
      log: opts.log.child({ module: 'writer' }),
      batchSize: opts.batchSize,
      batchMs: opts.batchMs,
      concurrency: opts.writers,
      inTransaction: opts.inTransaction,
      onCommitted: (rows) => {
        this.latest.record(rows);
        for (const listener of this.listeners) {
          try {
            listener(rows);
          } catch (err) {
            opts.log.error({ err }, 'committed-readings listener failed');
          }
        }
      },
    });
  }

  async start(): Promise<void> {
    const recovered = await this.latest.recover();
    if (recovered > 0) this.opts.log.info({ readings: recovered }, 'latest device state recovered from readings');
    this.latest.start();
  }

  onCommitted(listener: CommittedListener): void {
    this.listeners.push(listener);
  }

  get pending(): number {
    return this.writer.pending;
  }

  get databaseDown(): boolean {
    return this.writer.databaseDown;
  }

  /** One telemetry message from a device; resolves after its valid readings are committed. */
  async telemetry(device: DeviceContext, payload: Buffer, receivedAt = Date.now()): Promise<TelemetryOutcome> {
    const parsed = parseTelemetry(payload);
    if (!parsed.ok) return { stored: 0, rejections: [parsed.error] };
    const { readings, rejections } = toReadings(parsed.entries, device, receivedAt, this.timeRules, (name) => this.opts.keys.admit(name));
    return this.store(readings, rejections);
  }

  /** Readings built elsewhere (simulators' bulk loads, gateways); same guarantees. */
  async store(readings: Reading[], rejections: Rejection[] = []): Promise<TelemetryOutcome> {
    try {
      await this.writer.write(readings);
      return { stored: readings.length, rejections };
    } catch (err) {
      if (!(err instanceof RejectedByDatabase)) throw err;
      return { stored: 0, rejections: [...rejections, { reason: 'invalid_shape', detail: `refused by the database: ${err.message}` }] };
    }
  }

  /** Commits everything accepted so far, then saves latest state. */
  async stop(): Promise<void> {
    await this.writer.drain();
    await this.latest.stop();
  }

  /** Gives up on readings still waiting for an unreachable database (their publishes stay unacknowledged). */
  abandon(): void {
    this.writer.abandon();
  }
}
