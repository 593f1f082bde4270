import type pg from 'pg';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { Rejection } from './readings.ts';

export interface RejectedMessage {
  deviceId: number | null;
  topic: string;
  payload: Buffer;
  rejections: Rejection[];
  /** Readings of the same message that were stored anyway. */
  stored: number;
}

export interface RejectionLogOptions {
  pool: pg.Pool;
  log: Logger;
  metrics: Metrics;
  /** Rejected messages kept per device per minute; beyond it they are only counted. */
  perDevicePerMinute: number;
  /** Payload bytes kept per message (the size is always recorded). */
  maxStoredPayload?: number;
  flushMs?: number;
  /** Messages buffered while the database is slow; beyond it they are only counted. */
  maxBuffered?: number;
}

/**
 * Every rejection is counted by reason (metrics), logged (at most a few lines per device per
 * minute, then a summary), and kept with its raw payload in `rejected_messages`, within a
 * per-device budget so that a misbehaving device cannot fill the database.
 */
export class RejectionLog {
  private buffer: (RejectedMessage & { at: Date })[] = [];
  private budget = new Map<number | null, { minute: number; stored: number; logged: number }>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly maxStoredPayload: number;
  private readonly maxBuffered: number;

  constructor(private readonly opts: RejectionLogOptions) {
    this.maxStoredPayload = opts.maxStoredPayload ?? 65_536;
    this.maxBuffered = opts.maxBuffered ?? 10_000;
  }

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.opts.flushMs ?? 200);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  record(message: RejectedMessage): void {
    for (const r of message.rejections) this.opts.metrics.rejections.inc({ reason: r.reason });
    const minute = Math.floor(Date.now() / 60_000);
    let b = this.budget.get(message.deviceId);
    if (!b || b.minute !== minute) {
      if (b && b.logged > LOG_LINES_PER_MINUTE) {
        this.opts.log.warn({ device: message.deviceId, rejected: b.logged }, 'rejected messages in the last minute (further lines were suppressed)');
      }
      b = { minute, stored: 0, logged: 0 };
      this.budget.set(message.deviceId, b);
      if (this.budget.size > 100_000) this.budget.clear(); // a bound, not a policy: budgets restart
    }
    b.logged++;
    if (b.logged <= LOG_LINES_PER_MINUTE) {
      this.opts.log.info(
        { device: message.deviceId, topic: message.topic, stored: message.stored, errors: message.rejections.slice(0, 5) },
        `message rejected: ${[...new Set(message.rejections.map((r) => r.reason))].join(', ')}`,
      );
    }
    if (b.stored >= this.opts.perDevicePerMinute || this.buffer.length >= this.maxBuffered) {
      this.opts.metrics.rejectionsNotStored.inc();
      return;
    }
    b.stored++;
    this.buffer.push({
      ...message,
      topic: printable(message.topic),
      rejections: message.rejections.slice(0, 100).map((r) => (r.key === undefined ? { ...r, detail: printable(r.detail) } : { ...r, key: printable(r.key), detail: printable(r.detail) })),
      at: new Date(),
    });
  }

  async flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    this.flushing = this.save(batch)
      .catch((err: Error) => {
        this.opts.metrics.rejectionsNotStored.inc(batch.length);
        this.opts.log.warn({ err: err.message, messages: batch.length }, 'could not store rejected messages (counted only)');
      })
      .finally(() => {
        this.flushing = undefined;
      });
    return this.flushing;
  }

  private async save(batch: (RejectedMessage & { at: Date })[]): Promise<void> {
    await this.opts.pool.query(
      `INSERT INTO rejected_messages (received_at, device_id, topic, reasons, errors, stored, payload, payload_size)
       SELECT at, device_id, topic, ARRAY(SELECT jsonb_array_elements_text(reasons)), errors, stored, payload, payload_size
         FROM unnest($1::timestamptz[], $2::int[], $3::text[], $4::jsonb[], $5::jsonb[], $6::int[], $7::bytea[], $8::int[])
           AS u(at, device_id, topic, reasons, errors, stored, payload, payload_size)`,
      [
        batch.map((m) => m.at),
        batch.map((m) => m.deviceId),
        batch.map((m) => m.topic),
        batch.map((m) => JSON.stringify([...new Set(m.rejections.map((r) => r.reason))])),
        batch.map((m) => JSON.stringify(m.rejections)),
        batch.map((m) => m.stored),
        batch.map((m) => (m.payload.length > this.maxStoredPayload ? m.payload.subarray(0, this.maxStoredPayload) : m.payload)),
        batch.map((m) => m.payload.length),
      ],
    );
  }
}

const LOG_LINES_PER_MINUTE = 20;

/** Text PostgreSQL accepts whatever a device sent: no NUL or other control characters, no lone surrogates. */
// eslint-disable-next-line no-control-regex
const printable = (s: string): string => s.toWellFormed().replace(/[\u0000-\u001f\u007f]/g, '\ufffd');
