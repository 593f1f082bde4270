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
   * Bytes of accepted, uncommitted messages (payload plus bookkeeping, see MESSAGE_OVERHEAD).
   * At this bound new messages wait to be admitted — which holds their connection's read batch
   * open, so the broker reads nothing more from that socket — until half has been committed.
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

/**
 * Memory a queued message costs beyond its payload (parsed values, readings, promises), measured
 * with the outage test's heap figures; counting it makes the byte bound a bound on memory.
 */
export const MESSAGE_OVERHEAD = 1024;

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
  private readonly timeRules: TimeRules;
  private bytes = 0;
  private saturated = false;
  /** Messages held at the bound, admitted first come first served (a FIFO: `head` is the next). */
  private waiting: { size: number; admit: () => void }[] = [];
  private head = 0;

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

  /** Readings waiting for or in a batch. */
  get pendingReadings(): number {
    return this.writer.pending;
  }

  /** Bytes (payload + overhead) of messages accepted and not yet committed. */
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
   * While the queue is at its bound the message waits here, costing no more than its packet.
   */
  telemetry(device: DeviceContext, payload: Buffer, topic: string, receivedAt = Date.now()): Promise<TelemetryOutcome> {
    if (payload.length > this.opts.maxPayloadBytes) {
      const rejection: Rejection = { reason: 'payload_too_large', detail: `payload is ${payload.length} bytes; the limit is ${this.opts.maxPayloadBytes}` };
      return Promise.resolve(this.reported(device, topic, payload, 0, [rejection]));
    }
    const size = payload.length + MESSAGE_OVERHEAD;
    if (this.fits(size)) {
      this.bytes += size;
      return this.process(device, payload, topic, receivedAt, size);
    }
    if (!this.saturated) this.setPressure(true);
    return new Promise((resolve, reject) => this.waiting.push({ size, admit: () => this.process(device, payload, topic, receivedAt, size).then(resolve, reject) }));
  }

  /** Validates an admitted message and writes its readings; releases its room in the queue when settled. */
  private process(device: DeviceContext, payload: Buffer, topic: string, receivedAt: number, size: number): Promise<TelemetryOutcome> {
    const parsed = parseTelemetry(payload);
    if (!parsed.ok) {
      this.release(size);
      return Promise.resolve(this.reported(device, topic, payload, 0, [parsed.error]));
    }
    const { readings, rejections } = toReadings(parsed.entries, device, receivedAt, this.timeRules, this.admitKey);
    if (readings.length === 0) {
      this.release(size);
      return Promise.resolve(this.reported(device, topic, payload, 0, rejections.length > 0 ? rejections : [{ reason: 'empty', detail: 'no values to store' }]));
    }
    return this.writer.write(readings).then(
      () => {
        this.release(size);
        return this.reported(device, topic, payload, readings.length, rejections);
      },
      (err: unknown) => {
        this.release(size);
        if (!(err instanceof RejectedByDatabase)) throw err;
        return this.reported(device, topic, payload, 0, [...rejections, { reason: 'invalid_shape', detail: `refused by the database: ${err.message}` }]);
      },
    );
  }

  private readonly admitKey = (name: string): boolean => this.opts.keys.admit(name);

  /** The outcome, with its rejections (if any) counted, logged and kept. */
  private reported(device: DeviceContext, topic: string, payload: Buffer, stored: number, rejections: Rejection[]): TelemetryOutcome {
    if (rejections.length > 0) this.rejected.record({ deviceId: device.id, topic, payload, rejections, stored });
    return { stored, rejections };
  }

  /** A refusal decided outside ingest (e.g. by the broker, or of an attributes message), kept and counted the same way. */
  recordRejection(deviceId: number | null, topic: string, payload: Buffer, rejection: Rejection | Rejection[], stored = 0): void {
    this.rejected.record({ deviceId, topic, payload, rejections: Array.isArray(rejection) ? rejection : [rejection], stored });
  }

  /** Whether a message may be admitted now: nothing waiting ahead of it, and room (a lone message always fits). */
  private fits(size: number): boolean {
    return !this.saturated && this.head === this.waiting.length && (this.bytes === 0 || this.bytes + size <= this.opts.maxQueueBytes);
  }

  private release(size: number): void {
    this.bytes -= size;
    if (!this.saturated || this.bytes > this.opts.maxQueueBytes / 2) return;
    this.setPressure(false);
    while (this.head < this.waiting.length) {
      const next = this.waiting[this.head]!;
      if (this.bytes > 0 && this.bytes + next.size > this.opts.maxQueueBytes) {
        this.setPressure(true);
        break;
      }
      this.head++;
      this.bytes += next.size;
      next.admit();
    }
    if (this.head === this.waiting.length) {
      this.waiting = [];
      this.head = 0;
    } else if (this.head > 4096) {
      this.waiting = this.waiting.slice(this.head);
      this.head = 0;
    }
  }

  private setPressure(saturated: boolean): void {
    this.saturated = saturated;
    this.opts.log.warn(
      { pendingBytes: this.bytes, pendingReadings: this.writer.pending },
      saturated ? 'ingest queue full: holding new messages (their sockets are not read meanwhile)' : 'ingest queue drained to half: admitting again',
    );
  }

  /** Commits everything accepted so far (including messages held at the bound), then saves latest state and rejections. */
  async stop(): Promise<void> {
    do {
      await this.writer.drain();
      await new Promise((resolve) => setImmediate(resolve)); // let held messages be admitted
    } while (this.bytes > 0 || this.head < this.waiting.length);
    await this.latest.stop();
    await this.rejected.stop();
  }

  /** Gives up on readings still waiting for an unreachable database (their publishes stay unacknowledged). */
  abandon(): void {
    this.writer.abandon();
  }
}
