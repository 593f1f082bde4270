import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { EndReason, SessionEnd } from '../broker/session.ts';
import type { DeviceSession } from '../broker/session.ts';
import type { Domain } from './domains.ts';
import type { Logger } from './log.ts';

/**
 * Why a device went offline: how its session ended (the broker's reasons), or `node_lost`: the
 * GuanLink node holding the session stopped without closing it (crash, kill -9, power loss), found
 * when that node starts again or when another node sees its heartbeat stop.
 */
export type DisconnectReason = EndReason | 'node_lost';

/** A device connected or disconnected (live streams, `connectivity` events). */
export interface ConnectivityChange {
  deviceId: number;
  domain: Domain;
  online: boolean;
  /** ISO 8601. */
  at: string;
  address: string | null;
  clientId: string | null;
  /** Disconnects: why. */
  reason: DisconnectReason | null;
  /** Disconnects: the device's last will was published. */
  willPublished: boolean | null;
}

export interface DeviceEvent {
  at: string;
  event: 'connect' | 'disconnect';
  reason: string | null;
  address: string | null;
  clientId: string | null;
  willPublished: boolean | null;
}

export interface ConnectivityState {
  online: boolean;
  /** The time of the device's last packet (ISO 8601), or null if it never connected. */
  lastSeen: string | null;
  lastConnect: { at: string; address: string | null; clientId: string | null } | null;
  lastDisconnect: { at: string; reason: string | null } | null;
}

export interface ConnectivityOptions {
  pool: pg.Pool;
  log: Logger;
  /** This node's name (stable across restarts: its stale rows are recognised by it). */
  nodeId: string;
  /** How often last-seen times and this node's heartbeat are written. */
  flushMs: number;
  /** Counted per connect and per disconnect reason. */
  counters?: { connects: { inc(): void }; disconnects: { inc(labels: { reason: string }): void } };
}

interface ConnectOp {
  kind: 'connect';
  /** Order of queuing (read-your-writes). */
  seq?: number;
  deviceId: number;
  sessionId: string;
  at: number;
  address: string | null;
  clientId: string;
}
interface DisconnectOp {
  kind: 'disconnect';
  seq?: number;
  deviceId: number;
  sessionId: string;
  at: number;
  reason: DisconnectReason;
  willPublished: boolean;
  lastSeen: number;
  address: string | null;
  clientId: string;
}
interface SeenOp {
  kind: 'seen';
  entries: { deviceId: number; sessionId: string; ts: number }[];
}
type Op = ConnectOp | DisconnectOp | SeenOp;

interface Local {
  session: DeviceSession;
  sessionId: string;
  /** lastActivity as last written to the database. */
  persisted: number;
}

/** Writes per transaction; a reconnect storm is written in batches of this many changes. */
const BATCH = 5000;
/** Changes held while the database is unavailable; beyond it the oldest events are dropped (logged). */
const MAX_QUEUED = 500_000;
const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Connection state of devices (物联网联接管理): `device_connectivity` (online, last seen, last
 * connect with address and client id, last disconnect with reason) and the `device_events`
 * history, maintained from the broker's session start and end.
 *
 * - Writes are queued and written in batches by one writer, in order (a reconnect storm is a few
 *   transactions, not one per device); a change waits while the database is unavailable.
 * - "Last seen" is the time of the device's last packet. It is kept in memory by the broker (one
 *   store per socket read) and written for the devices that were active every `flushMs`: writing
 *   it per packet is what limited ThingsBoard at scale. The REST API merges memory over the table.
 * - Several nodes: a row belongs to the session (and node) that last connected the device; a node
 *   changes only the rows of its own sessions, so a late disconnect seen by a node the device has
 *   left does not mark it offline. Each node writes a heartbeat with its flush; when a node
 *   starts, rows it left online (a crash) are marked offline (`node_lost`), and every node marks
 *   offline the rows of nodes whose heartbeat stopped.
 */
export class Connectivity {
  private readonly local = new Map<number, Local>();
  private readonly sessionIds = new WeakMap<DeviceSession, string>();
  private queue: Op[] = [];
  private writing: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private listeners: ((change: ConnectivityChange) => void)[] = [];
  private stopped = false;
  // Read-your-writes for the API: connects and disconnects are numbered as they are queued; a
  // read about a device first waits (briefly) until that device's last change is written.
  private queued = 0;
  private written = 0;
  private readonly lastChange = new Map<number, number>();
  private waiters: { seq: number; resolve: () => void }[] = [];

  constructor(private readonly opts: ConnectivityOptions) {}

  get nodeId(): string {
    return this.opts.nodeId;
  }

  /** Rows are marked offline after this long without their node's heartbeat. */
  get staleAfterMs(): number {
    return Math.max(3 * this.opts.flushMs, 10_000);
  }

  /**
   * Registers this node and marks offline what it (or a node whose heartbeat stopped) left
   * online. Call before the broker accepts connections.
   */
  async start(): Promise<void> {
    await this.opts.pool.query(
      `INSERT INTO connectivity_nodes (node_id) VALUES ($1)
       ON CONFLICT (node_id) DO UPDATE SET started_at = now(), heartbeat_at = now()`,
      [this.opts.nodeId],
    );
    const own = await this.markLost('node_id = $1', [this.opts.nodeId]);
    if (own > 0) this.opts.log.warn({ devices: own }, `${own} devices this node had left online (it stopped without closing their sessions) marked offline`);
    await this.sweep();
    this.timer = setInterval(() => void this.flush(), this.opts.flushMs);
    this.timer.unref();
  }

  /** Called for every connectivity change (after memory is updated, before the database write). */
  onChange(listener: (change: ConnectivityChange) => void): void {
    this.listeners.push(listener);
  }

  /** The broker's onSessionStart. */
  sessionStarted(session: DeviceSession): void {
    const sessionId = randomUUID();
    this.sessionIds.set(session, sessionId);
    this.local.set(session.device.id, { session, sessionId, persisted: session.connectedAt });
    const address = session.address ?? null;
    this.enqueue({ kind: 'connect', deviceId: session.device.id, sessionId, at: session.connectedAt, address, clientId: session.clientId });
    this.opts.counters?.connects.inc();
    this.emit({
      deviceId: session.device.id,
      domain: session.device.type.domain,
      online: true,
      at: iso(session.connectedAt),
      address,
      clientId: session.clientId,
      reason: null,
      willPublished: null,
    });
  }

  /** The broker's onSessionEnd. */
  sessionEnded(session: DeviceSession, end: SessionEnd): void {
    const sessionId = this.sessionIds.get(session);
    if (sessionId === undefined) return; // never started here (ended during the connect)
    const current = this.local.get(session.device.id);
    if (current?.session === session) this.local.delete(session.device.id);
    const address = session.address ?? null;
    this.enqueue({
      kind: 'disconnect',
      deviceId: session.device.id,
      sessionId,
      at: end.at,
      reason: end.reason,
      willPublished: end.willPublished,
      lastSeen: session.lastActivity,
      address,
      clientId: session.clientId,
    });
    this.opts.counters?.disconnects.inc({ reason: end.reason });
    // A session taken over ends after its successor started: the device is still online.
    if (current && current.session !== session) return;
    this.emit({
      deviceId: session.device.id,
      domain: session.device.type.domain,
      online: false,
      at: iso(end.at),
      address,
      clientId: session.clientId,
      reason: end.reason,
      willPublished: end.willPublished,
    });
  }

  /** The device's connection state (memory merged over the table), or a never-connected state. */
  async state(deviceId: number): Promise<ConnectivityState> {
    await this.writtenFor(deviceId);
    const { rows } = await this.opts.pool.query<ConnectivityRow>(`SELECT ${CONNECTIVITY_COLUMNS} FROM device_connectivity WHERE device_id = $1`, [deviceId]);
    const row = rows[0];
    const state: ConnectivityState = row
      ? {
          online: row.online,
          lastSeen: row.last_seen?.toISOString() ?? null,
          lastConnect: row.last_connect_at
            ? { at: row.last_connect_at.toISOString(), address: row.last_connect_address, clientId: row.last_connect_client_id }
            : null,
          lastDisconnect: row.last_disconnect_at ? { at: row.last_disconnect_at.toISOString(), reason: row.last_disconnect_reason } : null,
        }
      : { online: false, lastSeen: null, lastConnect: null, lastDisconnect: null };
    const here = this.local.get(deviceId);
    if (here) {
      const s = here.session;
      state.online = true;
      if (!row || row.session_id !== here.sessionId) state.lastConnect = { at: iso(s.connectedAt), address: s.address ?? null, clientId: s.clientId };
      if (state.lastSeen === null || Date.parse(state.lastSeen) < s.lastActivity) state.lastSeen = iso(s.lastActivity);
    }
    return state;
  }

  /** Connects and disconnects of a device, newest first. */
  async events(deviceId: number, range: { from?: Date; to?: Date; limit: number }): Promise<DeviceEvent[]> {
    await this.writtenFor(deviceId);
    const { rows } = await this.opts.pool.query<EventRow>(
      `SELECT at, event, reason, address, client_id, will_published FROM device_events
        WHERE device_id = $1 AND at >= $2 AND at <= $3 ORDER BY at DESC LIMIT $4`,
      [deviceId, range.from ?? new Date(0), range.to ?? new Date(8.64e15), range.limit],
    );
    return rows.map((r) => ({
      at: r.at.toISOString(),
      event: r.event,
      reason: r.reason,
      address: r.address,
      clientId: r.client_id,
      willPublished: r.will_published,
    }));
  }

  /** Devices online now (any node), for the live map's first picture. */
  async onlineDevices(): Promise<Set<number>> {
    await this.writtenUpTo(this.queued);
    const { rows } = await this.opts.pool.query<{ device_id: number }>('SELECT device_id FROM device_connectivity WHERE online');
    const online = new Set(rows.map((r) => r.device_id));
    for (const id of this.local.keys()) online.add(id);
    return online;
  }

  /** Resolves once every change so far is written (or the writer gave up for now). */
  async settled(): Promise<void> {
    while (this.writing) await this.writing;
  }

  /**
   * Writes last-seen times of active devices and this node's heartbeat, and marks offline the
   * devices of nodes whose heartbeat stopped. Runs every `flushMs`.
   */
  flush(): Promise<void> {
    this.flushing ??= this.flushOnce().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  /** Writes what is pending; the node's row is removed (its devices are offline now, the broker having closed their sessions). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flushing;
    this.queueSeen();
    this.stopped = true;
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
    }
    try {
      if (this.queue.length > 0) {
        while (this.writing) await this.writing;
        if (this.queue.length > 0) {
          const rest = this.queue.splice(0);
          await this.writeBatch(rest);
          this.advance(rest);
        }
      }
      if (this.local.size === 0) await this.opts.pool.query('DELETE FROM connectivity_nodes WHERE node_id = $1', [this.opts.nodeId]);
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'could not save connection state at shutdown; devices left online are marked offline at the next start');
    }
  }

  private emit(change: ConnectivityChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch (err) {
        this.opts.log.warn({ err }, 'connectivity listener failed');
      }
    }
  }

  private async flushOnce(): Promise<void> {
    this.queueSeen();
    try {
      const { rowCount } = await this.opts.pool.query('UPDATE connectivity_nodes SET heartbeat_at = now() WHERE node_id = $1', [this.opts.nodeId]);
      if (rowCount === 0) await this.rejoin();
      await this.sweep();
    } catch (err) {
      this.opts.log.warn({ err: (err as Error).message }, 'connectivity heartbeat failed; will retry');
    }
  }

  /**
   * Another node found this one's heartbeat stale (the database was out of reach too long) and
   * marked its devices offline: register again and record the sessions still held here as
   * connected again (a `connect` event now).
   */
  private async rejoin(): Promise<void> {
    await this.opts.pool.query(
      `INSERT INTO connectivity_nodes (node_id) VALUES ($1) ON CONFLICT (node_id) DO UPDATE SET heartbeat_at = now()`,
      [this.opts.nodeId],
    );
    const now = Date.now();
    for (const [deviceId, l] of this.local) {
      this.enqueue({ kind: 'connect', deviceId, sessionId: l.sessionId, at: now, address: l.session.address ?? null, clientId: l.session.clientId });
    }
    this.opts.log.warn({ devices: this.local.size }, 'this node had been declared lost (heartbeat too old): its connected devices are recorded online again');
  }

  /** Queues the last-seen times that moved since they were last written. */
  private queueSeen(): void {
    const entries: SeenOp['entries'] = [];
    for (const [deviceId, l] of this.local) {
      if (l.session.lastActivity <= l.persisted) continue;
      l.persisted = l.session.lastActivity;
      entries.push({ deviceId, sessionId: l.sessionId, ts: l.persisted });
    }
    for (let i = 0; i < entries.length; i += BATCH) this.enqueue({ kind: 'seen', entries: entries.slice(i, i + BATCH) });
  }

  /** Marks offline the devices of nodes whose heartbeat stopped, and forgets those nodes. */
  private async sweep(): Promise<void> {
    const { rows } = await this.opts.pool.query<{ node_id: string }>(
      `SELECT node_id FROM connectivity_nodes WHERE node_id <> $1 AND heartbeat_at < now() - make_interval(secs => $2)`,
      [this.opts.nodeId, this.staleAfterMs / 1000],
    );
    for (const { node_id } of rows) {
      const lost = await this.markLost('node_id = $1', [node_id]);
      await this.opts.pool.query(`DELETE FROM connectivity_nodes WHERE node_id = $1 AND heartbeat_at < now() - make_interval(secs => $2)`, [
        node_id,
        this.staleAfterMs / 1000,
      ]);
      this.opts.log.warn({ node: node_id, devices: lost }, `node ${node_id} stopped sending heartbeats: its ${lost} online devices marked offline`);
    }
  }

  /** Marks the matching online rows offline with reason node_lost, recording the events. */
  private async markLost(where: string, params: unknown[]): Promise<number> {
    const client = await this.opts.pool.connect();
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<{ device_id: number }>(
        `UPDATE device_connectivity SET online = false, last_disconnect_at = now(), last_disconnect_reason = 'node_lost', updated_at = now()
          WHERE online AND ${where} RETURNING device_id`,
        params,
      );
      if (rows.length > 0) {
        await client.query(
          `INSERT INTO device_events (at, device_id, event, reason, will_published, node_id)
           SELECT now(), id, 'disconnect', 'node_lost', false, $2 FROM unnest($1::int[]) AS id`,
          [rows.map((r) => r.device_id), this.opts.nodeId],
        );
      }
      await client.query('COMMIT');
      for (const r of rows) this.opts.counters?.disconnects.inc({ reason: 'node_lost' });
      return rows.length;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /** Waits until the device's last connect or disconnect is in the table (at most `timeoutMs`: then the table is read as it is). */
  private writtenFor(deviceId: number, timeoutMs = 2000): Promise<void> {
    const seq = this.lastChange.get(deviceId);
    return seq === undefined ? Promise.resolve() : this.writtenUpTo(seq, timeoutMs);
  }

  private writtenUpTo(seq: number, timeoutMs = 2000): Promise<void> {
    if (this.written >= seq) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.waiters.push({
        seq,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  private enqueue(op: Op): void {
    if (op.kind !== 'seen') {
      op.seq = ++this.queued;
      this.lastChange.set(op.deviceId, op.seq);
    }
    this.queue.push(op);
    if (this.queue.length > MAX_QUEUED) {
      const dropped = this.queue.splice(0, this.queue.length - MAX_QUEUED);
      this.advance(dropped); // nobody waits for them any more
      this.opts.log.error({ dropped: dropped.length }, 'connection-state queue full (database unavailable): oldest changes dropped');
    }
    this.kick();
  }

  private kick(): void {
    if (this.writing || this.retryTimer || this.stopped || this.queue.length === 0) return;
    this.writing = this.drain().finally(() => {
      this.writing = undefined;
      this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0 && !this.stopped) {
      const batch = this.queue.splice(0, BATCH);
      try {
        await this.writeBatch(batch);
        this.failures = 0;
        this.advance(batch);
      } catch (err) {
        this.queue.unshift(...batch);
        const delay = Math.min(2000, 50 * 2 ** this.failures++);
        this.opts.log.warn({ err: (err as Error).message, pending: this.queue.length, retryMs: delay }, 'could not save connection state; will retry');
        this.retryTimer = setTimeout(() => {
          this.retryTimer = undefined;
          this.kick();
        }, delay);
        this.retryTimer.unref();
        return;
      }
    }
  }

  /** A batch is committed: release the reads waiting for it. */
  private advance(batch: Op[]): void {
    for (const op of batch) {
      if (op.kind === 'seen') continue;
      this.written = Math.max(this.written, op.seq!);
      if (this.lastChange.get(op.deviceId) === op.seq) this.lastChange.delete(op.deviceId);
    }
    if (this.waiters.length === 0) return;
    const ready = this.waiters.filter((w) => w.seq <= this.written);
    this.waiters = this.waiters.filter((w) => w.seq > this.written);
    for (const w of ready) w.resolve();
  }

  /**
   * One transaction: every event, then each device's resulting state. Within a batch a device's
   * changes are folded in order: its last connect (with a disconnect of that same session, if
   * any) is one upsert; disconnects and last-seen times of sessions connected in earlier
   * batches are updates that apply only while the row still belongs to that session.
   */
  private async writeBatch(batch: Op[]): Promise<void> {
    const events: (ConnectOp | DisconnectOp)[] = [];
    const upserts = new Map<number, { connect: ConnectOp; lastSeen: number; end?: DisconnectOp }>();
    const ends: DisconnectOp[] = [];
    const seen: SeenOp['entries'] = [];
    for (const op of batch) {
      if (op.kind === 'connect') {
        events.push(op);
        upserts.set(op.deviceId, { connect: op, lastSeen: op.at });
      } else if (op.kind === 'disconnect') {
        events.push(op);
        const u = upserts.get(op.deviceId);
        if (!u) ends.push(op);
        else if (u.connect.sessionId === op.sessionId) {
          u.end = op;
          u.lastSeen = Math.max(u.lastSeen, op.lastSeen);
        } // else: an older session ended after a newer one connected; the state is the newer one's
      } else {
        for (const e of op.entries) {
          const u = upserts.get(e.deviceId);
          if (!u) seen.push(e);
          else if (u.connect.sessionId === e.sessionId) u.lastSeen = Math.max(u.lastSeen, e.ts);
        }
      }
    }
    const client = await this.opts.pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      if (events.length > 0) {
        await client.query(
          `INSERT INTO device_events (at, device_id, event, reason, address, client_id, will_published, node_id)
           SELECT at, device_id, event, reason, address, client_id, will_published, $8
             FROM unnest($1::timestamptz[], $2::int[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[])
               AS u(at, device_id, event, reason, address, client_id, will_published)`,
          [
            events.map((e) => new Date(e.at)),
            events.map((e) => e.deviceId),
            events.map((e) => e.kind),
            events.map((e) => (e.kind === 'disconnect' ? e.reason : null)),
            events.map((e) => e.address),
            events.map((e) => e.clientId),
            events.map((e) => (e.kind === 'disconnect' ? e.willPublished : null)),
            this.opts.nodeId,
          ],
        );
      }
      if (upserts.size > 0) {
        const u = [...upserts.values()];
        // Devices deleted meanwhile are skipped (the join); a newer connect already written (another node) wins.
        await client.query(
          `INSERT INTO device_connectivity (device_id, online, last_seen, last_connect_at, last_connect_address, last_connect_client_id,
                                            last_disconnect_at, last_disconnect_reason, session_id, node_id, updated_at)
           SELECT u.device_id, u.disconnect_at IS NULL, u.last_seen, u.connect_at, u.address, u.client_id,
                  u.disconnect_at, u.reason, u.session_id, $9, now()
             FROM unnest($1::int[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], $8::text[])
                    AS u(device_id, last_seen, connect_at, address, client_id, disconnect_at, reason, session_id)
             JOIN devices d ON d.id = u.device_id
           ON CONFLICT (device_id) DO UPDATE SET
             online = excluded.online,
             last_seen = GREATEST(device_connectivity.last_seen, excluded.last_seen),
             last_connect_at = excluded.last_connect_at,
             last_connect_address = excluded.last_connect_address,
             last_connect_client_id = excluded.last_connect_client_id,
             last_disconnect_at = COALESCE(excluded.last_disconnect_at, device_connectivity.last_disconnect_at),
             last_disconnect_reason = CASE WHEN excluded.last_disconnect_at IS NULL THEN device_connectivity.last_disconnect_reason
                                           ELSE excluded.last_disconnect_reason END,
             session_id = excluded.session_id,
             node_id = excluded.node_id,
             updated_at = now()
           WHERE device_connectivity.last_connect_at IS NULL OR device_connectivity.last_connect_at <= excluded.last_connect_at`,
          [
            u.map((x) => x.connect.deviceId),
            u.map((x) => new Date(x.lastSeen)),
            u.map((x) => new Date(x.connect.at)),
            u.map((x) => x.connect.address),
            u.map((x) => x.connect.clientId),
            u.map((x) => (x.end ? new Date(x.end.at) : null)),
            u.map((x) => x.end?.reason ?? null),
            u.map((x) => x.connect.sessionId),
            this.opts.nodeId,
          ],
        );
      }
      if (ends.length > 0) {
        await client.query(
          `UPDATE device_connectivity c SET online = false, last_seen = GREATEST(c.last_seen, u.last_seen),
                  last_disconnect_at = u.at, last_disconnect_reason = u.reason, updated_at = now()
             FROM unnest($1::int[], $2::text[], $3::timestamptz[], $4::text[], $5::timestamptz[]) AS u(device_id, session_id, at, reason, last_seen)
            WHERE c.device_id = u.device_id AND c.session_id = u.session_id`,
          [ends.map((e) => e.deviceId), ends.map((e) => e.sessionId), ends.map((e) => new Date(e.at)), ends.map((e) => e.reason), ends.map((e) => new Date(e.lastSeen))],
        );
      }
      if (seen.length > 0) {
        await client.query(
          `UPDATE device_connectivity c SET last_seen = GREATEST(c.last_seen, u.ts), updated_at = now()
             FROM unnest($1::int[], $2::text[], $3::timestamptz[]) AS u(device_id, session_id, ts)
            WHERE c.device_id = u.device_id AND c.session_id = u.session_id`,
          [seen.map((e) => e.deviceId), seen.map((e) => e.sessionId), seen.map((e) => new Date(e.ts))],
        );
      }
      await client.query('COMMIT');
    } catch (err) {
      broken = true;
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release(broken);
    }
  }
}

const CONNECTIVITY_COLUMNS =
  'online, last_seen, last_connect_at, last_connect_address, last_connect_client_id, last_disconnect_at, last_disconnect_reason, session_id';

interface ConnectivityRow {
  online: boolean;
  last_seen: Date | null;
  last_connect_at: Date | null;
  last_connect_address: string | null;
  last_connect_client_id: string | null;
  last_disconnect_at: Date | null;
  last_disconnect_reason: string | null;
  session_id: string | null;
}

interface EventRow {
  at: Date;
  event: 'connect' | 'disconnect';
  reason: string | null;
  address: string | null;
  client_id: string | null;
  will_published: boolean | null;
}
