import type pg from 'pg';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { DeviceContext } from '../core/registry.ts';
import type { KeyDictionary } from '../db/keys.ts';
import { LatestTracker } from './latest.ts';
import type { Reading, Rejection } from './readings.ts';
import { RejectionLog } from './rejections.ts';
import { parseTelemetry } from './telemetry-payload.ts';
import { DEFAULT_TIME_RULES, toReadings, type TimeRules } from './validate.ts';
import { ReadingWriter, RejectedByDatabase } from './writer.ts';

export interface IngestOptions {
  pool: pg.Pool;
  log: Logger;
  metrics: Metrics;
  keys: KeyDictionary;
  batchSize: number;
  batchMs: number;
  writers: number;
  latestFlushMs: number;
  /** Larger telemetry payloads are rejected (payload_too_large). */
  maxPayloadBytes: number;
  /**
   * Payload bytes accepted but not yet committed. At this bound ingest reports pressure and the
   * broker stops reading from publishers' sockets until it has fallen to half.
   */
  maxQueueBytes: number;
  /** Rejected messages kept (with payload) per device per minute. */
  rejectedPerDevicePerMinute: number;
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
export type PressureListener = (saturated: boolean) => void;

/**
 * Ingest: validates telemetry, hands readings to the group-commit writer and settles only once
 * they are committed. Committed batches are passed on to listeners (latest state, live streams).
 * Rejections are counted, logged and kept (RejectionLog). Memory is bounded by bytes: past
 * `maxQueueBytes` ingest asks its producers to stop reading until the database catches up.
 */
export class Ingest {
  readonly latest: LatestTracker;
  private readonly writer: ReadingWriter;
  private readonly rejected: RejectionLog;
  private readonly committedListeners: CommittedListener[] = [];
  private readonly pressureListeners: PressureListener[] = [];
  private readonly timeRules: TimeRules;
  private bytes = 0;
  private saturated = false;

  constructor(private readonly opts: IngestOptions) {
    this.timeRules = opts.timeRules ?? DEFAULT_TIME_RULES;
    this.latest = new LatestTracker(opts.pool, opts.keys, opts.log.child({ module: 'latest' }), opts.latestFlushMs);
    this.rejected = new RejectionLog({
      pool: opts.pool,
      log: opts.log.child({ module: 'rejections' }),
      metrics: opts.metrics,
      perDevicePerMinute: opts.rejectedPerDevicePerMinute,
      maxStoredPayload: opts.maxPayloadBytes,
    });
    this.writer = new ReadingWriter({
      pool: opts.pool,
      keys: opts.keys,
      log: opts.log.child({ module: 'writer' }),
      batchSize: opts.batchSize,
      batchMs: opts.batchMs,
      concurrency: opts.writers,
      inTransaction: opts.inTransaction,
      onBatch: ({ rows, ms }) => {
        opts.metrics.batchRows.observe(rows);
        opts.metrics.commitSeconds.observe(ms / 1000);
      },
      onCommitted: (rows) => {
        opts.metrics.readingsAccepted.inc(rows.length);
        this.latest.record(rows);
        for (const listener of this.committedListeners) {
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
    this.rejected.start();
  }

  onCommitted(listener: CommittedListener): void {
    this.committedListeners.push(listener);
  }

  /** Called with true when the queue reaches its byte bound, false once it has drained to half. */
  onPressure(listener: PressureListener): void {
    this.pressureListeners.push(listener);
  }

  /** Readings waiting for or in a batch. */
  get pendingReadings(): number {
    return this.writer.pending;
  }

  /** Payload bytes accepted and not yet committed. */
  get pendingBytes(): number {
    return this.bytes;
  }

  get underPressure(): boolean {
    return this.saturated;
  }

  get databaseDown(): boolean {
    return this.writer.databaseDown;
  }

  /**
   * One telemetry message from a device; resolves after its valid readings are committed.
   * Whatever is refused is counted, logged and kept in rejected_messages before this returns.
   */
  async telemetry(device: DeviceContext, payload: Buffer, topic: string, receivedAt = Date.now()): Promise<TelemetryOutcome> {
    const outcome = await this.validateAndStore(device, payload, receivedAt);
    if (outcome.rejections.length > 0) {
      this.rejected.record({ deviceId: device.id, topic, payload, rejections: outcome.rejections, stored: outcome.stored });
    }
    return outcome;
  }

  /** A refusal decided outside ingest (e.g. by the broker), kept and counted the same way. */
  recordRejection(deviceId: number | null, topic: string, payload: Buffer, rejection: Rejection): void {
    this.rejected.record({ deviceId, topic, payload, rejections: [rejection], stored: 0 });
  }

  private async validateAndStore(device: DeviceContext, payload: Buffer, receivedAt: number): Promise<TelemetryOutcome> {
    if (payload.length > this.opts.maxPayloadBytes) {
      return { stored: 0, rejections: [{ reason: 'payload_too_large', detail: `payload is ${payload.length} bytes; the limit is ${this.opts.maxPayloadBytes}` }] };
    }
    const parsed = parseTelemetry(payload);
    if (!parsed.ok) return { stored: 0, rejections: [parsed.error] };
    const { readings, rejections } = toReadings(parsed.entries, device, receivedAt, this.timeRules, (name) => this.opts.keys.admit(name));
    if (readings.length === 0) return { stored: 0, rejections: rejections.length > 0 ? rejections : [{ reason: 'empty', detail: 'no values to store' }] };
    this.hold(payload.length);
    try {
      await this.writer.write(readings);
      return { stored: readings.length, rejections };
    } catch (err) {
      if (!(err instanceof RejectedByDatabase)) throw err;
      return { stored: 0, rejections: [...rejections, { reason: 'invalid_shape', detail: `refused by the database: ${err.message}` }] };
    } finally {
      this.release(payload.length);
    }
  }

  private hold(bytes: number): void {
    this.bytes += bytes;
    if (!this.saturated && this.bytes >= this.opts.maxQueueBytes) this.setPressure(true);
  }

  private release(bytes: number): void {
    this.bytes -= bytes;
    if (this.saturated && this.bytes <= this.opts.maxQueueBytes / 2) this.setPressure(false);
  }

  private setPressure(saturated: boolean): void {
    this.saturated = saturated;
    this.opts.log.warn({ pendingBytes: this.bytes, pendingReadings: this.writer.pending }, saturated ? 'ingest queue full: pausing publishers' : 'ingest queue drained: resuming publishers');
    for (const listener of this.pressureListeners) listener(saturated);
  }

  /** Commits everything accepted so far, then saves latest state and rejections. */
  async stop(): Promise<void> {
    await this.writer.drain();
    await this.latest.stop();
    await this.rejected.stop();
  }

  /** Gives up on readings still waiting for an unreachable database (their publishes stay unacknowledged). */
  abandon(): void {
    this.writer.abandon();
  }
}
