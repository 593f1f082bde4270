import type pg from 'pg';
import type { Logger } from './log.ts';

/**
 * Server-side RPC (commands to devices), ThingsBoard's model: a command `{"method","params"}` goes
 * to the device on `v1/devices/me/rpc/request/{requestId}` (QoS 1 unless the device subscribed
 * with QoS 0); a two-way command is answered on `…/rpc/response/{requestId}`. `requestId` is an
 * integer unique per device, so a device can only answer its own commands.
 *
 * Every command is a row of `rpc_requests` (migrations/009_rpc.sql) whose status moves
 *
 *   queued ──▶ sent ──▶ delivered ──▶ answered            (two-way)
 *     │  ▲       │          └──▶ (terminal when one-way)
 *     │  └───────┤ the connection ended before the PUBACK (persistent: queued again)
 *     ▼          ▼
 *   expired   timeout (no PUBACK within the ack timeout, or no answer before the deadline)
 *   cancelled failed  (non-persistent: not written, or its connection ended before the PUBACK)
 *
 * Non-persistent commands need the device connected and subscribed to commands now (else the
 * caller is told "offline"; nothing is stored) and live until `timeout`; persistent ones wait,
 * queued, until the device listens (checked on connect and by the sweep, every second: ThingsBoard
 * too sends pending commands when the device subscribes) and live until their expiry. An answer
 * is taken from any session of the device while the command is open. "delivered" means the
 * device's MQTT stack acknowledged it (PUBACK; written, at QoS 0), not that the firmware acted.
 * Every transition is one conditional UPDATE, so concurrent paths (PUBACK, answer, timers, the
 * sweep, another node) can never move a command backwards or close it twice.
 *
 * How a command reaches its device is an `RpcTransport`: the device's own MQTT session
 * (broker/handlers/rpc.ts `directTransport`), or — for gateway sub-devices — their gateway's.
 */

export const RPC_STATUSES = ['queued', 'sent', 'delivered', 'answered', 'expired', 'timeout', 'failed', 'cancelled'] as const;
export type RpcStatus = (typeof RPC_STATUSES)[number];

export interface RpcRecord {
  /** GuanLink's id of the command (REST). */
  id: number;
  deviceId: number;
  /** The id on the wire: v1/devices/me/rpc/request/{requestId}; unique per device. */
  requestId: number;
  method: string;
  params: unknown;
  oneWay: boolean;
  persistent: boolean;
  timeoutMs: number;
  status: RpcStatus;
  /** The device's answer: its JSON value, or (responseFormat "text") its raw text. */
  response: unknown;
  responseFormat: 'json' | 'text' | null;
  error: string | null;
  /** Times it was written to the device (a persistent command is sent again after a lost connection). */
  attempts: number;
  createdAt: string;
  sentAt: string | null;
  deliveredAt: string | null;
  completedAt: string | null;
  expiresAt: string;
}

/** What goes on the wire (ThingsBoard: the body is `{"method","params"}`, the id is in the topic only). */
export interface RpcWireRequest {
  requestId: number;
  method: string;
  params: unknown;
}

/** A command on its way (broker/session.ts TrackedDelivery has this shape). */
export interface RpcDelivery {
  /** On the wire (false: not sent). */
  written: Promise<boolean>;
  /** The device (or its gateway) acknowledged it: PUBACK, or written at QoS 0. False: never, or the connection ended first. */
  acknowledged: Promise<boolean>;
}

/**
 * How commands reach devices through this node. `directTransport` uses the device's own MQTT
 * session; a gateway transport relays to sub-devices through their gateway's session
 * (`v1/gateway/rpc`); `routeTransports` combines them.
 */
export interface RpcTransport {
  /** Whether the device is connected through this node. */
  connected(deviceId: number): boolean;
  /**
   * Whether commands can go to the device now: connected through this node and subscribed to
   * them (v1/devices/me/rpc/request/+ or v2/r/req/+; a gateway to v1/gateway/rpc). Like
   * ThingsBoard, nothing is sent to a device that does not listen for commands.
   */
  reachable(deviceId: number): boolean;
  /** Sends a command; undefined when the device cannot be reached. */
  send(deviceId: number, request: RpcWireRequest): RpcDelivery | undefined;
}

/** The first transport that reaches the device (e.g. its own session, then its gateway's). */
export function routeTransports(...transports: RpcTransport[]): RpcTransport {
  return {
    connected: (deviceId) => transports.some((t) => t.connected(deviceId)),
    reachable: (deviceId) => transports.some((t) => t.reachable(deviceId)),
    send: (deviceId, request) => transports.find((t) => t.reachable(deviceId))?.send(deviceId, request),
  };
}

export interface RpcCall {
  method: string;
  params?: unknown;
  oneWay?: boolean;
  persistent?: boolean;
  /** Non-persistent: how long to wait for the answer (one-way: the acknowledgement). */
  timeoutMs: number;
  /** Persistent: how long it may wait for the device and its answer. */
  expiresInMs?: number;
}

export type RpcCallOutcome =
  /** Non-persistent and the device is not connected (or not subscribed to commands): nothing was stored or sent. */
  | { kind: 'offline'; connected: boolean }
  /** Non-persistent: the final record (answered, delivered for one-way, timeout, failed); persistent: the record as it stands. */
  | { kind: 'record'; record: RpcRecord };

/** Why a device's answer was refused (sent to it on v1/devices/me/errors). */
export type RpcRefusal = { reason: 'rpc_unknown' | 'rpc_one_way' | 'rpc_closed' | 'payload_too_large' | 'invalid_encoding'; detail: string };

export class RpcError extends Error {
  constructor(
    readonly code: 'not_found' | 'invalid' | 'conflict' | 'unavailable',
    message: string,
  ) {
    super(message);
  }
}

export interface RpcServiceOptions {
  pool: pg.Pool;
  log: Logger;
  /** Largest command (`{"method","params"}`) and largest answer accepted, in bytes. */
  maxPayloadBytes: number;
  /** How long a sent command waits for the device's PUBACK (ThingsBoard's MQTT_TIMEOUT: 10 s). */
  ackTimeoutMs?: number;
  /** How often expiries are applied and queued commands of devices connected here are sent. */
  sweepMs?: number;
  /** Completed commands are deleted this many days after they complete; 0 keeps them. */
  retentionDays?: number;
}

export const DEFAULT_PERSISTENT_EXPIRY_MS = 86_400_000;
const MAX_REQUEST_ID = 999_999_999; // the broker routes ids of at most 9 digits

interface RpcRow {
  id: string;
  device_id: number;
  request_id: number;
  method: string;
  params: unknown;
  one_way: boolean;
  persistent: boolean;
  timeout_ms: number;
  status: RpcStatus;
  response: unknown;
  response_format: 'json' | 'text' | null;
  error: string | null;
  attempts: number;
  created_at: Date;
  sent_at: Date | null;
  delivered_at: Date | null;
  completed_at: Date | null;
  expires_at: Date;
}

/** A command this node wrote and still follows (timers, its connection). */
interface Inflight {
  ackTimer?: NodeJS.Timeout;
  deadline?: NodeJS.Timeout;
}

interface Waiter {
  until: (record: RpcRecord) => boolean;
  resolve: (record: RpcRecord) => void;
  reject: (err: Error) => void;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

export class RpcService {
  private readonly pool: pg.Pool;
  private readonly log: Logger;
  private readonly ackTimeoutMs: number;
  private readonly sweepMs: number;
  private readonly retentionDays: number;
  private readonly maxPayloadBytes: number;
  private transport: RpcTransport | undefined;
  private readonly inflight = new Map<number, Inflight>();
  private readonly waiters = new Map<number, Waiter>();
  /** Per device: the queue flush in progress (commands are sent in order, one flush at a time). */
  private readonly flushing = new Map<number, Promise<void>>();
  private sweepTimer: NodeJS.Timeout | undefined;
  private sweeping: Promise<void> | undefined;
  private lastPrune = 0;
  private stopped = false;

  constructor(options: RpcServiceOptions) {
    this.pool = options.pool;
    this.log = options.log;
    this.maxPayloadBytes = options.maxPayloadBytes;
    this.ackTimeoutMs = options.ackTimeoutMs ?? 10_000;
    this.sweepMs = options.sweepMs ?? 1000;
    this.retentionDays = options.retentionDays ?? 30;
  }

  /** Sets how commands reach devices (the broker exists after the service: see platform.ts). */
  useTransport(transport: RpcTransport): void {
    this.transport = transport;
  }

  start(): void {
    this.stopped = false;
    const tick = () => {
      this.sweepTimer = setTimeout(() => {
        this.sweeping = this.sweep()
          .catch((err: Error) => this.log.warn({ err }, 'rpc sweep failed'))
          .finally(() => {
            this.sweeping = undefined;
            if (!this.stopped) tick();
          });
      }, this.sweepMs);
      this.sweepTimer.unref();
    };
    tick();
  }

  /** Stops the sweep and timers; callers still waiting are told the server is shutting down. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.sweepTimer);
    await this.sweeping;
    for (const [id, waiter] of this.waiters) {
      this.waiters.delete(id);
      waiter.reject(new RpcError('unavailable', 'the server is shutting down'));
    }
    for (const id of [...this.inflight.keys()]) this.release(id);
  }

  /**
   * Sends a command. Non-persistent: the device must be connected; resolves when it answered
   * (one-way: acknowledged), failed or timed out. Persistent: stored, sent now if the device is
   * connected (else when it connects), and resolves at once with the record.
   */
  async call(deviceId: number, call: RpcCall): Promise<RpcCallOutcome> {
    const transport = this.requireTransport();
    const params = call.params === undefined ? {} : call.params;
    const wire = JSON.stringify({ method: call.method, params });
    if (Buffer.byteLength(wire) > this.maxPayloadBytes) {
      throw new RpcError('invalid', `the command is ${Buffer.byteLength(wire)} bytes as sent ({"method","params"}); at most ${this.maxPayloadBytes}`);
    }
    const persistent = call.persistent === true;
    if (!persistent && !transport.reachable(deviceId)) return { kind: 'offline', connected: transport.connected(deviceId) };
    const lifetime = persistent ? (call.expiresInMs ?? DEFAULT_PERSISTENT_EXPIRY_MS) : call.timeoutMs;
    const row = await this.insert(deviceId, call.method, params, call.oneWay === true, persistent, call.timeoutMs, lifetime);
    if (persistent) {
      if (transport.reachable(deviceId)) await this.flush(deviceId);
      return { kind: 'record', record: (await this.get(deviceId, Number(row.id)))! };
    }
    const id = Number(row.id);
    const done = this.waitFor(id, (r) => r.completedAt !== null || (r.oneWay && r.status === 'delivered'));
    this.follow(id).deadline = setTimeout(() => void this.deadlinePassed(id, call.timeoutMs), call.timeoutMs);
    await this.transmit(row);
    // The deadline's UPDATE resolves the waiter; should the database fail it, answer with what is known.
    let fallbackTimer: NodeJS.Timeout | undefined;
    const fallback = new Promise<RpcRecord | undefined>((resolve) => {
      fallbackTimer = setTimeout(() => {
        this.waiters.delete(id);
        resolve(this.get(deviceId, id).catch(() => undefined));
      }, call.timeoutMs + 5000);
    });
    try {
      const record = await Promise.race([done, fallback]);
      if (!record) throw new RpcError('not_found', `command ${id} is gone (its device was deleted) or the database is unavailable`);
      return { kind: 'record', record };
    } finally {
      clearTimeout(fallbackTimer);
    }
  }

  async get(deviceId: number, id: number): Promise<RpcRecord | undefined> {
    const { rows } = await this.pool.query<RpcRow>('SELECT * FROM rpc_requests WHERE id = $1 AND device_id = $2', [id, deviceId]);
    return rows[0] && toRecord(rows[0]);
  }

  /** The device's commands, newest first; `before` is the previous page's last id. */
  async list(deviceId: number, options: { statuses?: RpcStatus[]; limit: number; before?: number }): Promise<RpcRecord[]> {
    const { rows } = await this.pool.query<RpcRow>(
      `SELECT * FROM rpc_requests
        WHERE device_id = $1 AND ($2::text[] IS NULL OR status = ANY ($2)) AND ($3::bigint IS NULL OR id < $3)
        ORDER BY id DESC LIMIT $4`,
      [deviceId, options.statuses ?? null, options.before ?? null, options.limit],
    );
    return rows.map(toRecord);
  }

  /** Cancels a queued command (only a queued one: the device has not seen it). */
  async cancel(deviceId: number, id: number): Promise<RpcRecord> {
    const { rows } = await this.pool.query<RpcRow>(
      `UPDATE rpc_requests SET status = 'cancelled', error = 'cancelled before it was sent', completed_at = now(), updated_at = now()
        WHERE id = $1 AND device_id = $2 AND status = 'queued' RETURNING *`,
      [id, deviceId],
    );
    if (rows[0]) return this.changed(rows[0]);
    const current = await this.get(deviceId, id);
    if (!current) throw new RpcError('not_found', `device ${deviceId} has no command ${id}`);
    throw new RpcError('conflict', `command ${id} is ${current.status}; only a queued command can be cancelled`);
  }

  /** The device connected (its own session, or through its gateway): send what is queued for it. */
  deviceConnected(deviceId: number): void {
    void this.flush(deviceId).catch((err: Error) => this.log.warn({ err, device: deviceId }, 'sending queued commands failed'));
  }

  /**
   * The device answered command `requestId` (…/rpc/response/{requestId}, or through its gateway).
   * The payload is opaque: JSON is kept as JSON, anything else as text.
   */
  async respond(deviceId: number, requestId: number, payload: Buffer): Promise<{ accepted: true; record: RpcRecord } | ({ accepted: false } & RpcRefusal)> {
    if (payload.length > this.maxPayloadBytes) {
      return { accepted: false, reason: 'payload_too_large', detail: `the answer is ${payload.length} bytes; at most ${this.maxPayloadBytes}` };
    }
    let text: string;
    try {
      text = utf8.decode(payload);
    } catch {
      return { accepted: false, reason: 'invalid_encoding', detail: 'the answer is not valid UTF-8' };
    }
    if (text.includes('\u0000')) return { accepted: false, reason: 'invalid_encoding', detail: 'the answer contains U+0000' };
    let json = isJson(text);
    let rows: RpcRow[];
    for (;;) {
      try {
        ({ rows } = await this.pool.query<RpcRow>(
          `UPDATE rpc_requests
              SET status = 'answered', response = $3::jsonb, response_format = $4, delivered_at = coalesce(delivered_at, now()),
                  completed_at = now(), updated_at = now()
            WHERE device_id = $1 AND request_id = $2 AND NOT one_way AND completed_at IS NULL AND sent_at IS NOT NULL
            RETURNING *`,
          [deviceId, requestId, json ? text : JSON.stringify(text), json ? 'json' : 'text'],
        ));
        break;
      } catch (err) {
        // JSON that PostgreSQL's jsonb refuses (e.g. an escaped U+0000): keep it as text.
        const code = (err as { code?: string }).code;
        if (json && (code === '22P02' || code === '22P05' || code === '22023')) {
          json = false;
          continue;
        }
        throw err;
      }
    }
    if (rows[0]) return { accepted: true, record: this.changed(rows[0]) };
    const { rows: found } = await this.pool.query<RpcRow>('SELECT * FROM rpc_requests WHERE device_id = $1 AND request_id = $2', [deviceId, requestId]);
    const current = found[0];
    if (!current || current.sent_at === null) return { accepted: false, reason: 'rpc_unknown', detail: `no command ${requestId} was sent to this device` };
    if (current.one_way) return { accepted: false, reason: 'rpc_one_way', detail: `command ${requestId} is one-way: no answer is expected` };
    return { accepted: false, reason: 'rpc_closed', detail: `command ${requestId} is already ${current.status}` };
  }

  /** Applies expiries, sends queued commands of devices reachable here, prunes old ones. Runs every sweepMs. */
  async sweep(): Promise<void> {
    // Non-persistent commands are closed on time by the deadline timer of the node that sent them;
    // the sweep closes them only if that node is gone (a grace period later).
    const { rows } = await this.pool.query<RpcRow>(
      `UPDATE rpc_requests
          SET status = CASE WHEN status = 'queued' THEN 'expired' ELSE 'timeout' END,
              error = CASE WHEN status = 'queued' THEN 'expired before it could be sent'
                           WHEN status = 'sent' THEN 'not acknowledged by the device (no PUBACK) before it expired'
                           ELSE 'not answered before it expired' END,
              completed_at = now(), updated_at = now()
        WHERE completed_at IS NULL AND expires_at <= now() AND (persistent OR expires_at <= now() - interval '5 seconds')
        RETURNING *`,
    );
    for (const row of rows) this.changed(row);
    // A persistent command still "sent" long after any PUBACK timer would have fired was sent by a
    // node that stopped before the PUBACK: queue it again (it is sent when the device listens).
    await this.pool.query(
      `UPDATE rpc_requests SET status = 'queued', error = 'queued again: no PUBACK was recorded (the node that sent it stopped?)', updated_at = now()
        WHERE status = 'sent' AND persistent AND sent_at < now() - $1 * interval '1 millisecond' AND expires_at > now()`,
      [this.ackTimeoutMs + 60_000],
    );
    const transport = this.transport;
    if (transport) {
      const { rows: queued } = await this.pool.query<{ device_id: number }>(
        `SELECT DISTINCT device_id FROM rpc_requests WHERE status = 'queued' AND expires_at > now() LIMIT 10000`,
      );
      for (const { device_id } of queued) if (transport.reachable(device_id)) this.deviceConnected(device_id);
    }
    if (this.retentionDays > 0 && Date.now() - this.lastPrune > 3_600_000) {
      this.lastPrune = Date.now();
      let deleted = 0;
      for (let batch = 0; batch < 100; batch++) {
        const { rowCount } = await this.pool.query(
          `DELETE FROM rpc_requests WHERE id IN (
             SELECT id FROM rpc_requests WHERE completed_at < now() - $1 * interval '1 day' LIMIT 5000)`,
          [this.retentionDays],
        );
        deleted += rowCount ?? 0;
        if ((rowCount ?? 0) < 5000) break;
      }
      if (deleted > 0) this.log.info({ deleted, days: this.retentionDays }, 'old RPC commands deleted');
    }
  }

  private requireTransport(): RpcTransport {
    if (!this.transport) throw new RpcError('unavailable', 'RPC transport not ready');
    return this.transport;
  }

  private async insert(
    deviceId: number,
    method: string,
    params: unknown,
    oneWay: boolean,
    persistent: boolean,
    timeoutMs: number,
    lifetimeMs: number,
  ): Promise<RpcRow> {
    try {
      const { rows } = await this.pool.query<RpcRow>(
        `WITH next AS (
           INSERT INTO rpc_request_ids AS c (device_id, last_request_id) VALUES ($1, 1)
           ON CONFLICT (device_id) DO UPDATE SET last_request_id = CASE WHEN c.last_request_id >= ${MAX_REQUEST_ID} THEN 1 ELSE c.last_request_id + 1 END
           RETURNING last_request_id)
         INSERT INTO rpc_requests (device_id, request_id, method, params, one_way, persistent, timeout_ms, status, sent_at, attempts, expires_at)
         SELECT $1, last_request_id, $2, $3::jsonb, $4, $5, $6, $7::text,
                CASE WHEN $7::text = 'sent' THEN now() END, CASE WHEN $7::text = 'sent' THEN 1 ELSE 0 END, $8
           FROM next RETURNING *`,
        [deviceId, method, JSON.stringify(params), oneWay, persistent, timeoutMs, persistent ? 'queued' : 'sent', new Date(Date.now() + lifetimeMs)],
      );
      return rows[0]!;
    } catch (err) {
      if ((err as { code?: string }).code === '23503') throw new RpcError('not_found', `no device ${deviceId}`);
      throw err;
    }
  }

  /** Sends the device's queued commands in order (one flush per device at a time). */
  private flush(deviceId: number): Promise<void> {
    const previous = this.flushing.get(deviceId) ?? Promise.resolve();
    const run = previous
      .catch(() => {})
      .then(async () => {
        const { rows } = await this.pool.query<{ id: string }>(
          `SELECT id FROM rpc_requests WHERE device_id = $1 AND status = 'queued' AND expires_at > now() ORDER BY id`,
          [deviceId],
        );
        for (const { id } of rows) {
          if (this.stopped || !this.transport?.reachable(deviceId)) return;
          const { rows: claimed } = await this.pool.query<RpcRow>(
            `UPDATE rpc_requests SET status = 'sent', sent_at = now(), attempts = attempts + 1, updated_at = now()
              WHERE id = $1 AND status = 'queued' AND expires_at > now() RETURNING *`,
            [id],
          );
          if (claimed[0]) await this.transmit(claimed[0]);
        }
      })
      .finally(() => {
        if (this.flushing.get(deviceId) === run) this.flushing.delete(deviceId);
      });
    this.flushing.set(deviceId, run);
    return run;
  }

  /** Writes a command already marked sent, and follows its PUBACK and its connection. */
  private async transmit(row: RpcRow): Promise<void> {
    const id = Number(row.id);
    const delivery = this.transport?.send(row.device_id, { requestId: row.request_id, method: row.method, params: row.params });
    if (!delivery) {
      await this.notAcknowledged(id, row.persistent, 'the device is not connected');
      return;
    }
    // Waiting for the PUBACK beyond the command's life is the deadline's (or the sweep's) business.
    if (this.ackTimeoutMs < row.expires_at.getTime() - Date.now()) {
      this.follow(id).ackTimer = setTimeout(() => void this.ackTimedOut(id, this.ackTimeoutMs), this.ackTimeoutMs);
    }
    void delivery.acknowledged.then((acked) => {
      clearTimeout(this.inflight.get(id)?.ackTimer);
      return acked ? this.delivered(id) : this.notAcknowledged(id, row.persistent, 'the connection ended before the device acknowledged it');
    });
    await delivery.written;
  }

  private async delivered(id: number): Promise<void> {
    await this.transition(
      `UPDATE rpc_requests SET status = 'delivered', delivered_at = now(), completed_at = CASE WHEN one_way THEN now() END, updated_at = now()
        WHERE id = $1 AND status = 'sent' RETURNING *`,
      [id],
    );
  }

  /** Not written, or its connection ended before the PUBACK: a persistent command is queued again. */
  private async notAcknowledged(id: number, persistent: boolean, why: string): Promise<void> {
    // Queued again, it is sent when the device connects, or by the next sweep if it already has
    // (a session taken over: the new one started before the old one ended).
    await this.transition(
      persistent
        ? `UPDATE rpc_requests SET status = 'queued', error = $2, updated_at = now() WHERE id = $1 AND status = 'sent' RETURNING *`
        : `UPDATE rpc_requests SET status = 'failed', error = $2, completed_at = now(), updated_at = now() WHERE id = $1 AND status = 'sent' RETURNING *`,
      [id, why],
    );
  }

  private async ackTimedOut(id: number, waitedMs: number): Promise<void> {
    await this.transition(
      `UPDATE rpc_requests SET status = 'timeout', error = $2, completed_at = now(), updated_at = now() WHERE id = $1 AND status = 'sent' RETURNING *`,
      [id, `not acknowledged by the device (no PUBACK) within ${waitedMs} ms`],
    );
  }

  private async deadlinePassed(id: number, timeoutMs: number): Promise<void> {
    const rows = await this.transition(
      `UPDATE rpc_requests SET status = 'timeout', completed_at = now(), updated_at = now(),
              error = CASE WHEN status = 'sent' THEN $2 ELSE $3 END
        WHERE id = $1 AND completed_at IS NULL RETURNING *`,
      [id, `not acknowledged by the device (no PUBACK) within ${timeoutMs} ms`, `not answered within ${timeoutMs} ms`],
    );
    // Already completed elsewhere (e.g. answered through another node): tell the caller what happened.
    if (rows.length === 0 && this.waiters.has(id)) {
      const { rows: current } = await this.pool.query<RpcRow>('SELECT * FROM rpc_requests WHERE id = $1', [id]).catch(() => ({ rows: [] as RpcRow[] }));
      if (current[0]) this.changed(current[0]);
    }
  }

  /** Runs a conditional status UPDATE and tells whoever waits; errors are logged (the sweep repairs expiries). */
  private async transition(sql: string, values: unknown[]): Promise<RpcRow[]> {
    try {
      const { rows } = await this.pool.query<RpcRow>(sql, values);
      for (const row of rows) this.changed(row);
      return rows;
    } catch (err) {
      // While stopping, the pool may already be closing; the sweep of the next start repairs it.
      this.log[this.stopped ? 'debug' : 'warn']({ err, command: values[0] }, 'rpc status update failed');
      return [];
    }
  }

  private follow(id: number): Inflight {
    let inflight = this.inflight.get(id);
    if (!inflight) this.inflight.set(id, (inflight = {}));
    return inflight;
  }

  private release(id: number): void {
    const inflight = this.inflight.get(id);
    if (!inflight) return;
    this.inflight.delete(id);
    clearTimeout(inflight.ackTimer);
    clearTimeout(inflight.deadline);
  }

  private waitFor(id: number, until: (record: RpcRecord) => boolean): Promise<RpcRecord> {
    return new Promise((resolve, reject) => this.waiters.set(id, { until, resolve, reject }));
  }

  private changed(row: RpcRow): RpcRecord {
    const record = toRecord(row);
    // Followed here until done; a persistent command only until it is acknowledged (no deadline timer: the sweep expires it).
    if (record.completedAt !== null || record.status === 'queued' || (record.persistent && record.status === 'delivered')) this.release(record.id);
    const waiter = this.waiters.get(record.id);
    if (waiter?.until(record)) {
      this.waiters.delete(record.id);
      waiter.resolve(record);
    }
    this.log.debug({ command: record.id, device: record.deviceId, requestId: record.requestId, status: record.status }, 'rpc status');
    return record;
  }
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString());

function toRecord(row: RpcRow): RpcRecord {
  return {
    id: Number(row.id),
    deviceId: row.device_id,
    requestId: row.request_id,
    method: row.method,
    params: row.params,
    oneWay: row.one_way,
    persistent: row.persistent,
    timeoutMs: row.timeout_ms,
    status: row.status,
    response: row.response ?? null,
    responseFormat: row.response_format,
    error: row.error,
    attempts: row.attempts,
    createdAt: row.created_at.toISOString(),
    sentAt: iso(row.sent_at),
    deliveredAt: iso(row.delivered_at),
    completedAt: iso(row.completed_at),
    expiresAt: row.expires_at.toISOString(),
  };
}
