import type { MultiPolygon, Polygon } from 'geojson';
import type pg from 'pg';
import { AreaError, parsePolygon } from '../geo/area.ts';
import { coverArea, type Cover } from '../geo/cover.ts';
import { GeofenceIndex } from '../geo/geofence-index.ts';
import type { Reading } from '../ingest/readings.ts';
import type { DeviceType } from './device-types.ts';
import type { GeometryWork } from './geometry-pool.ts';
import type { Domain } from './domains.ts';
import type { Logger } from './log.ts';
import type { Metrics } from './metrics.ts';
import type { DeviceRegistry } from './registry.ts';

/**
 * Geofences: named GeoJSON polygons, each watching the moving devices of some types, and the
 * enter / exit / dwell events those devices produce.
 *
 * - A fence watches the moving device types it lists; an empty list watches every moving type
 *   of the fence's domain (including types created later). Listed types must be moving.
 * - Committed readings with a position, of devices of a moving type, are evaluated after commit,
 *   off the ingest path: `enqueue` only appends to a bounded queue (GEOFENCE_LIMITS.maxQueued
 *   readings). When the queue is full the newest readings are not evaluated: they are counted
 *   (guanlink_geofence_readings_dropped_total) and logged, at most every 10 s. The next reading
 *   evaluated corrects the state (an event may then be late or missing, never invented).
 * - Readings are evaluated per device in time order; a reading not later than the last one
 *   evaluated for its device (a retransmission or a late backlog) is skipped: it cannot move a
 *   device backwards through a fence.
 * - Which fences contain a position: geo/geofence-index.ts (H3 cover prefilter, exact Turf test
 *   on the boundary band; boundary counts as inside).
 * - enter: first reading inside; exit: first reading outside after being inside; dwell: first
 *   reading at least `dwellSeconds` after the enter while still inside (once per stay). Event
 *   time and position are the reading's. A device moving from one fence to another gets the exit
 *   before the enter.
 * - Presence (who is inside since when, dwell sent) is kept in geofence_presence and read in the
 *   batch's transaction, so restarts and other nodes see the same state: no second enter.
 * - Events and presence of a batch are written in one transaction; listeners (`onEvent`: MQTT,
 *   live streams, alarms) are told after commit.
 * - Fence changes take effect for the next reading evaluated; a fence deleted goes with its
 *   presence and events. A device inside a fence that stops watching its type leaves silently.
 */

export const GEOFENCE_LIMITS = {
  /** Readings waiting for evaluation; beyond, new readings are not evaluated (counted, logged). */
  maxQueued: 100_000,
  /** Readings evaluated per transaction. */
  batch: 5_000,
  maxDeviceTypes: 100,
  /** 30 days. */
  maxDwellSeconds: 2_592_000,
  /** Fence changes made on other nodes are picked up this often (ms). */
  refreshMs: 5_000,
} as const;

/** Boundary cells of a fence's cover (geo/cover.ts's default). */
const GEOFENCE_EDGE_CELLS = 1500;

export type GeofenceEventKind = 'enter' | 'exit' | 'dwell';

export interface Geofence {
  id: number;
  name: string;
  domain: Domain;
  /** Moving device types watched; empty: every moving type of `domain`. */
  deviceTypes: string[];
  geometry: Polygon | MultiPolygon;
  /** A dwell event after this long inside; null: none. */
  dwellSeconds: number | null;
  createdAt: string;
  updatedAt: string;
}

/** What a fence is created or replaced with; `geometry` is checked by parsePolygon. */
export interface GeofenceInput {
  name: string;
  domain: Domain;
  deviceTypes?: string[];
  /** Checked here: an integer from 1 to GEOFENCE_LIMITS.maxDwellSeconds, or null / undefined (no dwell events). */
  dwellSeconds?: unknown;
  geometry: unknown;
}

/** One event, as listeners receive it (`ts` epoch ms: the reading's time). */
export interface GeofenceEvent {
  id: number;
  kind: GeofenceEventKind;
  geofenceId: number;
  geofenceName: string;
  /** The fence's domain. */
  domain: Domain;
  deviceId: number;
  deviceName: string;
  deviceType: string;
  ts: number;
  lng: number;
  lat: number;
}

/** The JSON form of an event (MQTT payload, live streams): `ts` as ISO 8601. */
export function eventJson(e: GeofenceEvent) {
  return {
    id: e.id,
    kind: e.kind,
    geofenceId: e.geofenceId,
    geofenceName: e.geofenceName,
    domain: e.domain,
    deviceId: e.deviceId,
    deviceName: e.deviceName,
    deviceType: e.deviceType,
    ts: new Date(e.ts).toISOString(),
    lng: e.lng,
    lat: e.lat,
  };
}

/** The MQTT topic of a fence's events (published to application sessions). */
export const geofenceEventTopic = (geofenceId: number): string => `guanlink/events/geofences/${geofenceId}`;

export class GeofenceError extends Error {
  constructor(
    readonly code: 'invalid' | 'not_found' | 'conflict',
    message: string,
  ) {
    super(message);
  }
}

/** Whether a fence watches devices of `type`. */
export function watches(fence: Pick<Geofence, 'domain' | 'deviceTypes'>, type: Pick<DeviceType, 'name' | 'domain' | 'moving'>): boolean {
  if (!type.moving) return false;
  return fence.deviceTypes.length === 0 ? type.domain === fence.domain : fence.deviceTypes.includes(type.name);
}

/** A device's stay in one fence. */
export interface Presence {
  /** Epoch ms of the reading that entered. */
  insideSince: number;
  dwellReported: boolean;
}

/**
 * One reading's effect on one device's presence (pure; `presence` is updated in place):
 * `inside` are the watched fences containing the reading, `watched` every fence watching the
 * device (with its dwell time). Exits come first, then enters, then dwells.
 */
export function applyReading(
  presence: Map<number, Presence>,
  ts: number,
  inside: ReadonlySet<number>,
  watched: ReadonlyMap<number, { dwellSeconds: number | null }>,
): { geofenceId: number; kind: GeofenceEventKind }[] {
  const events: { geofenceId: number; kind: GeofenceEventKind }[] = [];
  for (const id of [...presence.keys()]) {
    if (!watched.has(id)) presence.delete(id); // no longer watched (or gone): leaves silently
    else if (!inside.has(id)) {
      presence.delete(id);
      events.push({ geofenceId: id, kind: 'exit' });
    }
  }
  for (const id of inside) {
    if (!watched.has(id) || presence.has(id)) continue;
    presence.set(id, { insideSince: ts, dwellReported: false });
    events.push({ geofenceId: id, kind: 'enter' });
  }
  for (const [id, stay] of presence) {
    const dwell = watched.get(id)?.dwellSeconds;
    if (dwell == null || stay.dwellReported || ts - stay.insideSince < dwell * 1000) continue;
    stay.dwellReported = true;
    events.push({ geofenceId: id, kind: 'dwell' });
  }
  return events;
}

interface GeofenceRow {
  id: number;
  name: string;
  domain: Domain;
  device_types: string[];
  geometry: Polygon | MultiPolygon;
  dwell_seconds: number | null;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = 'id, name, domain, device_types, geometry, dwell_seconds, created_at, updated_at';
const toGeofence = (r: GeofenceRow): Geofence => ({
  id: r.id,
  name: r.name,
  domain: r.domain,
  deviceTypes: r.device_types,
  geometry: r.geometry,
  dwellSeconds: r.dwell_seconds,
  createdAt: r.created_at.toISOString(),
  updatedAt: r.updated_at.toISOString(),
});

export interface EventQuery {
  geofenceId?: number;
  deviceId?: number;
  kind?: GeofenceEventKind;
  from?: Date;
  to?: Date;
  limit: number;
  /** Only events of devices of these domains (a principal's scope). */
  domains?: readonly Domain[];
  /** An SQL condition on the event `e` (lng, lat): a principal's area. */
  where?: string;
}

export type GeofenceListener = (event: GeofenceEvent) => void;

interface DeviceInfo {
  name: string;
  type: string;
}

/** CRUD of geofences, evaluation of committed readings, and the event history. */
export class GeofenceService {
  private index = new GeofenceIndex<Geofence>([]);
  private readonly byId = new Map<number, Geofence>();
  private readonly covers = new Map<number, { updatedAt: string; cover: Cover }>();
  private readonly listeners: GeofenceListener[] = [];
  private readonly devices = new Map<number, DeviceInfo>();
  /** Time of the last reading evaluated, per device (epoch ms). */
  private readonly lastTs = new Map<number, number>();
  private queue: Reading[] = [];
  private head = 0;
  private running: Promise<void> | undefined;
  private stopped = false;
  private lastDropLog = 0;
  private droppedSinceLog = 0;
  private refreshTimer: NodeJS.Timeout | undefined;
  private version = '';

  constructor(
    private readonly deps: {
      pool: pg.Pool;
      registry: DeviceRegistry;
      log: Logger;
      metrics?: Pick<Metrics, 'geofenceEvents' | 'geofenceReadingsDropped'>;
      maxQueued?: number;
      refreshMs?: number;
      /** Where a fence's polygon is checked and covered (core/geometry-pool.ts); without it, on this thread. */
      geometry?: Pick<GeometryWork, 'parseArea' | 'cover'>;
    },
  ) {
    deps.registry.onChange((event) => {
      if (event.kind === 'deleted') {
        this.devices.delete(event.device.id);
        this.lastTs.delete(event.device.id);
      } else this.devices.set(event.device.id, { name: event.device.name, type: event.device.type });
    });
  }

  /** Loads the fences and follows changes made on other nodes. */
  async start(): Promise<void> {
    await this.reload();
    this.refreshTimer = setInterval(() => {
      this.refreshIfChanged().catch((err: Error) => this.deps.log.warn({ err: err.message }, 'geofence refresh failed'));
    }, this.deps.refreshMs ?? GEOFENCE_LIMITS.refreshMs);
    this.refreshTimer.unref();
  }

  /** Evaluates what is queued, then stops taking readings. */
  async stop(): Promise<void> {
    clearInterval(this.refreshTimer);
    await this.drain();
    this.stopped = true;
  }

  onEvent(listener: GeofenceListener): void {
    this.listeners.push(listener);
  }

  /** Readings waiting for evaluation. */
  get queued(): number {
    return this.queue.length - this.head;
  }

  // ---------------------------------------------------------------------------------------------
  // CRUD

  list(filter: { domain?: Domain } = {}): Geofence[] {
    return [...this.byId.values()].filter((f) => filter.domain === undefined || f.domain === filter.domain).sort((a, b) => a.id - b.id);
  }

  get(id: number): Geofence | undefined {
    return this.byId.get(id);
  }

  async create(input: GeofenceInput): Promise<Geofence> {
    const v = this.validate(input, await this.geometryOf(input));
    const cover = await this.coverOf(v.geometry);
    try {
      const { rows } = await this.deps.pool.query<GeofenceRow>(
        `INSERT INTO geofences (name, domain, device_types, geometry, dwell_seconds) VALUES ($1, $2, $3, $4, $5) RETURNING ${COLUMNS}`,
        [v.name, v.domain, v.deviceTypes, JSON.stringify(v.geometry), v.dwellSeconds],
      );
      return this.changed(toGeofence(rows[0]!), cover);
    } catch (err) {
      throw this.conflict(err, v.name);
    }
  }

  async update(id: number, input: GeofenceInput): Promise<Geofence> {
    const v = this.validate(input, await this.geometryOf(input));
    const cover = await this.coverOf(v.geometry);
    try {
      const { rows } = await this.deps.pool.query<GeofenceRow>(
        `UPDATE geofences SET name = $2, domain = $3, device_types = $4, geometry = $5, dwell_seconds = $6, updated_at = clock_timestamp()
         WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, v.name, v.domain, v.deviceTypes, JSON.stringify(v.geometry), v.dwellSeconds],
      );
      if (!rows[0]) throw new GeofenceError('not_found', `no geofence ${id}`);
      return this.changed(toGeofence(rows[0]), cover);
    } catch (err) {
      throw this.conflict(err, v.name);
    }
  }

  async delete(id: number): Promise<Geofence> {
    const { rows } = await this.deps.pool.query<GeofenceRow>(`DELETE FROM geofences WHERE id = $1 RETURNING ${COLUMNS}`, [id]);
    if (!rows[0]) throw new GeofenceError('not_found', `no geofence ${id}`);
    this.byId.delete(id);
    this.covers.delete(id);
    this.rebuild();
    return toGeofence(rows[0]);
  }

  /** Events, newest first, with fence and device names. */
  async events(q: EventQuery): Promise<GeofenceEvent[]> {
    const params: unknown[] = [q.limit];
    const where: string[] = [];
    const param = (value: unknown) => `$${params.push(value)}`;
    if (q.geofenceId !== undefined) where.push(`e.geofence_id = ${param(q.geofenceId)}`);
    if (q.deviceId !== undefined) where.push(`e.device_id = ${param(q.deviceId)}`);
    if (q.kind !== undefined) where.push(`e.kind = ${param(q.kind)}`);
    if (q.from !== undefined) where.push(`e.ts >= ${param(q.from)}`);
    if (q.to !== undefined) where.push(`e.ts <= ${param(q.to)}`);
    if (q.domains !== undefined) where.push(`d.type IN (SELECT name FROM device_types WHERE domain = ANY (${param(q.domains)}::text[]))`);
    if (q.where !== undefined) where.push(q.where);
    const { rows } = await this.deps.pool.query<{
      id: string;
      kind: GeofenceEventKind;
      geofence_id: number;
      geofence_name: string;
      domain: Domain;
      device_id: number;
      device_name: string;
      device_type: string;
      ts: Date;
      lng: number;
      lat: number;
    }>(
      `SELECT e.id, e.kind, e.geofence_id, g.name AS geofence_name, g.domain, e.device_id, d.name AS device_name, d.type AS device_type, e.ts, e.lng, e.lat
       FROM geofence_events e JOIN geofences g ON g.id = e.geofence_id JOIN devices d ON d.id = e.device_id
       ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''}
       ORDER BY e.ts DESC, e.id DESC LIMIT $1`,
      params,
    );
    return rows.map((r) => ({
      id: Number(r.id),
      kind: r.kind,
      geofenceId: r.geofence_id,
      geofenceName: r.geofence_name,
      domain: r.domain,
      deviceId: r.device_id,
      deviceName: r.device_name,
      deviceType: r.device_type,
      ts: r.ts.getTime(),
      lng: r.lng,
      lat: r.lat,
    }));
  }

  /** The fence's polygon, checked (GeofenceError when invalid): on the geometry threads when there are. */
  private async geometryOf(input: GeofenceInput): Promise<Polygon | MultiPolygon> {
    if (this.deps.geometry) {
      const parsed = await this.deps.geometry.parseArea({ geometry: input.geometry });
      if ('error' in parsed) throw new GeofenceError('invalid', `geometry: ${parsed.error}`);
      if (parsed.area.kind === 'polygon') return parsed.area.geometry;
    }
    try {
      return parsePolygon(input.geometry);
    } catch (err) {
      if (err instanceof AreaError) throw new GeofenceError('invalid', `geometry: ${err.message}`);
      throw err;
    }
  }

  /** A fence's cover, computed on the geometry threads when there are (else by rebuild, here). */
  private async coverOf(geometry: Polygon | MultiPolygon): Promise<Cover | undefined> {
    return this.deps.geometry?.cover({ kind: 'polygon', geometry }, GEOFENCE_EDGE_CELLS);
  }

  private validate(input: GeofenceInput, geometry: Polygon | MultiPolygon): Omit<Geofence, 'id' | 'createdAt' | 'updatedAt'> {
    const deviceTypes = [...new Set(input.deviceTypes ?? [])];
    if (deviceTypes.length > GEOFENCE_LIMITS.maxDeviceTypes) throw new GeofenceError('invalid', `deviceTypes: at most ${GEOFENCE_LIMITS.maxDeviceTypes}`);
    for (const name of deviceTypes) {
      const type = this.deps.registry.deviceType(name);
      if (!type) throw new GeofenceError('invalid', `deviceTypes: unknown device type "${name}"`);
      if (!type.moving) throw new GeofenceError('invalid', `deviceTypes: "${name}" is not a moving type (its devices stay where they are registered); a geofence watches moving devices`);
    }
    const dwell = input.dwellSeconds ?? null;
    if (dwell !== null && (typeof dwell !== 'number' || !Number.isInteger(dwell) || dwell < 1 || dwell > GEOFENCE_LIMITS.maxDwellSeconds)) {
      throw new GeofenceError('invalid', `dwellSeconds: an integer from 1 to ${GEOFENCE_LIMITS.maxDwellSeconds}, or null for no dwell events`);
    }
    const dwellSeconds = dwell as number | null;
    return { name: input.name, domain: input.domain, deviceTypes, dwellSeconds, geometry };
  }

  private conflict(err: unknown, name: string): unknown {
    return (err as { code?: string }).code === '23505' ? new GeofenceError('conflict', `a geofence named "${name}" exists`) : err;
  }

  /** A fence was saved here: it takes effect now. */
  private changed(fence: Geofence, cover?: Cover): Geofence {
    this.byId.set(fence.id, fence);
    if (cover) this.covers.set(fence.id, { updatedAt: fence.updatedAt, cover });
    this.rebuild();
    return fence;
  }

  private rebuild(): void {
    const fences = this.list();
    this.index = new GeofenceIndex(fences, {
      coverOf: (f) => {
        const kept = this.covers.get(f.id);
        if (kept && kept.updatedAt === f.updatedAt) return kept.cover;
        const cover = coverArea({ kind: 'polygon', geometry: f.geometry }, { maxEdgeCells: GEOFENCE_EDGE_CELLS });
        this.covers.set(f.id, { updatedAt: f.updatedAt, cover });
        return cover;
      },
    });
    this.watchedByType.clear();
  }

  private async reload(): Promise<void> {
    // The version first: a change committed while the fences are read makes the next check reload again.
    const version = await this.currentVersion();
    const { rows } = await this.deps.pool.query<GeofenceRow>(`SELECT ${COLUMNS} FROM geofences`);
    this.byId.clear();
    for (const r of rows) this.byId.set(r.id, toGeofence(r));
    for (const id of this.covers.keys()) if (!this.byId.has(id)) this.covers.delete(id);
    // Fences changed elsewhere are covered on the geometry threads first (rebuild would on this one).
    const { geometry } = this.deps;
    if (geometry) {
      await Promise.all(
        [...this.byId.values()]
          .filter((f) => this.covers.get(f.id)?.updatedAt !== f.updatedAt)
          .map(async (f) => {
            const cover = await geometry.cover({ kind: 'polygon', geometry: f.geometry }, GEOFENCE_EDGE_CELLS).catch(() => undefined);
            if (cover) this.covers.set(f.id, { updatedAt: f.updatedAt, cover });
          }),
      );
    }
    this.rebuild();
    this.version = version;
  }

  private async currentVersion(): Promise<string> {
    const { rows } = await this.deps.pool.query<{ v: string }>(`SELECT count(*) || '/' || coalesce(max(updated_at)::text, '') || '/' || coalesce(max(id), 0) AS v FROM geofences`);
    return rows[0]!.v;
  }

  private async refreshIfChanged(): Promise<void> {
    const version = await this.currentVersion();
    if (version !== this.version) await this.reload();
  }

  // ---------------------------------------------------------------------------------------------
  // Evaluation

  /** Fences watching a device type (with their dwell), cached until the fences change. */
  private readonly watchedByType = new Map<string, Map<number, Geofence>>();
  private watchedBy(type: DeviceType): Map<number, Geofence> {
    const key = `${type.name}/${type.domain}/${type.moving}`; // a custom type may change domain or stop moving
    let watched = this.watchedByType.get(key);
    if (!watched) {
      watched = new Map(this.list().filter((f) => watches(f, type)).map((f) => [f.id, f]));
      this.watchedByType.set(key, watched);
    }
    return watched;
  }

  /** Called with each committed batch (ingest.onCommitted): queues what may concern a fence. Never blocks. */
  enqueue(rows: readonly Reading[]): void {
    if (this.stopped || this.byId.size === 0) return;
    const max = this.deps.maxQueued ?? GEOFENCE_LIMITS.maxQueued;
    let dropped = 0;
    for (const row of rows) {
      if (row.lat === undefined || row.lng === undefined) continue;
      const known = this.devices.get(row.deviceId);
      if (known && this.deps.registry.deviceType(known.type)?.moving !== true) continue;
      if (this.queued >= max) dropped++;
      else this.queue.push(row);
    }
    if (dropped > 0) this.dropped(dropped);
    if (this.queued > 0) this.running ??= this.run();
  }

  private dropped(n: number): void {
    this.deps.metrics?.geofenceReadingsDropped.inc(n);
    this.droppedSinceLog += n;
    const now = Date.now();
    if (now - this.lastDropLog < 10_000) return;
    this.deps.log.warn({ dropped: this.droppedSinceLog, queued: this.queued }, 'geofence queue full: readings not evaluated for geofences');
    this.lastDropLog = now;
    this.droppedSinceLog = 0;
  }

  /** Resolves once everything queued so far is evaluated. */
  async drain(): Promise<void> {
    while (this.running) await this.running;
  }

  private async run(): Promise<void> {
    try {
      await new Promise((r) => setImmediate(r)); // let a burst of commits queue up
      while (this.queued > 0) {
        const batch = this.queue.slice(this.head, this.head + GEOFENCE_LIMITS.batch);
        this.head += batch.length;
        if (this.head === this.queue.length) {
          this.queue = [];
          this.head = 0;
        } else if (this.head > 50_000) {
          this.queue = this.queue.slice(this.head);
          this.head = 0;
        }
        for (let attempt = 1; ; attempt++) {
          try {
            await this.evaluate(batch);
            break;
          } catch (err) {
            if (attempt >= 3) {
              this.deps.log.error({ err, readings: batch.length }, 'geofence evaluation failed; these readings are not evaluated');
              this.deps.metrics?.geofenceReadingsDropped.inc(batch.length);
              break;
            }
            this.deps.log.warn({ err: (err as Error).message, attempt }, 'geofence evaluation failed; retrying');
            await new Promise((r) => setTimeout(r, 500 * attempt));
          }
        }
      }
    } finally {
      this.running = undefined;
    }
  }

  /** Evaluates one batch: presence read and written, events stored, in one transaction; listeners told after commit. */
  private async evaluate(batch: readonly Reading[]): Promise<void> {
    await this.learnDevices(batch);
    // Per device, in time order, only readings later than the last one evaluated.
    const perDevice = new Map<number, Reading[]>();
    for (const r of batch) {
      const info = this.devices.get(r.deviceId);
      const type = info && this.deps.registry.deviceType(info.type);
      if (!type?.moving) continue;
      const list = perDevice.get(r.deviceId);
      if (list) list.push(r);
      else perDevice.set(r.deviceId, [r]);
    }
    if (perDevice.size === 0) return;
    for (const [id, list] of perDevice) {
      list.sort((a, b) => a.ts - b.ts);
      const after = this.lastTs.get(id) ?? -Infinity;
      const fresh = list.filter((r, i) => r.ts > after && (i === 0 || r.ts > list[i - 1]!.ts));
      if (fresh.length === 0) perDevice.delete(id);
      else perDevice.set(id, fresh);
    }
    if (perDevice.size === 0) return;

    const index = this.index;
    const deviceIds = [...perDevice.keys()];
    const client = await this.deps.pool.connect();
    const pending: Omit<GeofenceEvent, 'id'>[] = [];
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<{ device_id: number; geofence_id: number; inside_since: Date; dwell_reported: boolean }>(
        'SELECT device_id, geofence_id, inside_since, dwell_reported FROM geofence_presence WHERE device_id = ANY($1::int[]) FOR UPDATE',
        [deviceIds],
      );
      const presence = new Map<number, Map<number, Presence>>();
      const before = new Map<string, string>();
      const stateKey = (p: Presence) => `${p.insideSince}/${p.dwellReported}`;
      for (const r of rows) {
        let m = presence.get(r.device_id);
        if (!m) presence.set(r.device_id, (m = new Map()));
        const p = { insideSince: r.inside_since.getTime(), dwellReported: r.dwell_reported };
        m.set(r.geofence_id, p);
        before.set(`${r.device_id}:${r.geofence_id}`, stateKey(p));
      }
      for (const [deviceId, readings] of perDevice) {
        const info = this.devices.get(deviceId)!;
        const type = this.deps.registry.deviceType(info.type)!;
        const watched = this.watchedBy(type);
        let m = presence.get(deviceId);
        if (!m) presence.set(deviceId, (m = new Map()));
        if (watched.size === 0 && m.size === 0) continue;
        for (const r of readings) {
          const inside = new Set(index.containing(r.lng!, r.lat!, r.cell).map((f) => f.id));
          for (const e of applyReading(m, r.ts, inside, watched)) {
            const fence = watched.get(e.geofenceId) ?? this.byId.get(e.geofenceId)!;
            pending.push({ kind: e.kind, geofenceId: fence.id, geofenceName: fence.name, domain: fence.domain, deviceId, deviceName: info.name, deviceType: type.name, ts: r.ts, lng: r.lng!, lat: r.lat! });
          }
        }
      }
      // Presence: rows gone are deleted, new or changed ones upserted.
      const gone: [number[], number[]] = [[], []];
      const kept: [number[], number[], Date[], boolean[]] = [[], [], [], []];
      for (const [deviceId, m] of presence) {
        for (const [fenceId, p] of m) {
          const key = `${deviceId}:${fenceId}`;
          if (before.get(key) !== stateKey(p)) {
            kept[0].push(deviceId);
            kept[1].push(fenceId);
            kept[2].push(new Date(p.insideSince));
            kept[3].push(p.dwellReported);
          }
          before.delete(key);
        }
      }
      for (const key of before.keys()) {
        const [d, f] = key.split(':').map(Number) as [number, number];
        gone[0].push(d);
        gone[1].push(f);
      }
      if (gone[0].length > 0) {
        await client.query('DELETE FROM geofence_presence p USING unnest($1::int[], $2::int[]) AS g(d, f) WHERE p.device_id = g.d AND p.geofence_id = g.f', gone);
      }
      if (kept[0].length > 0) {
        await client.query(
          `INSERT INTO geofence_presence (device_id, geofence_id, inside_since, dwell_reported)
           SELECT k.d, k.f, k.s, k.r FROM unnest($1::int[], $2::int[], $3::timestamptz[], $4::boolean[]) AS k(d, f, s, r)
           WHERE EXISTS (SELECT 1 FROM devices WHERE id = k.d) AND EXISTS (SELECT 1 FROM geofences WHERE id = k.f)
           ON CONFLICT (device_id, geofence_id) DO UPDATE SET inside_since = excluded.inside_since, dwell_reported = excluded.dwell_reported`,
          kept,
        );
      }
      let stored: GeofenceEvent[] = [];
      if (pending.length > 0) {
        // A device or fence deleted meanwhile loses its events rather than failing the batch.
        const { rows: ids } = await client.query<{ id: string; geofence_id: number; device_id: number; kind: string; ts: Date }>(
          `INSERT INTO geofence_events (geofence_id, device_id, kind, ts, lng, lat)
           SELECT e.f, e.d, e.k, e.t, e.x, e.y FROM unnest($1::int[], $2::int[], $3::text[], $4::timestamptz[], $5::float8[], $6::float8[]) AS e(f, d, k, t, x, y)
           WHERE EXISTS (SELECT 1 FROM devices WHERE id = e.d) AND EXISTS (SELECT 1 FROM geofences WHERE id = e.f)
           RETURNING id, geofence_id, device_id, kind, ts`,
          [
            pending.map((e) => e.geofenceId),
            pending.map((e) => e.deviceId),
            pending.map((e) => e.kind),
            pending.map((e) => new Date(e.ts)),
            pending.map((e) => e.lng),
            pending.map((e) => e.lat),
          ],
        );
        // (device, fence, kind, ts) is unique in a batch: readings of a device have distinct times.
        const idOf = new Map(ids.map((r) => [`${r.device_id}:${r.geofence_id}:${r.kind}:${r.ts.getTime()}`, Number(r.id)]));
        stored = pending.flatMap((e) => {
          const id = idOf.get(`${e.deviceId}:${e.geofenceId}:${e.kind}:${e.ts}`);
          return id === undefined ? [] : [{ id, ...e }];
        });
      }
      await client.query('COMMIT');
      for (const [deviceId, readings] of perDevice) this.lastTs.set(deviceId, readings[readings.length - 1]!.ts);
      for (const e of stored) {
        this.deps.metrics?.geofenceEvents.inc({ kind: e.kind });
        for (const listener of this.listeners) {
          try {
            listener(e);
          } catch (err) {
            this.deps.log.error({ err }, 'geofence event listener failed');
          }
        }
      }
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
  }

  /** Names and types of devices not seen yet (one query for the batch). */
  private async learnDevices(batch: readonly Reading[]): Promise<void> {
    const unknown = [...new Set(batch.map((r) => r.deviceId).filter((id) => !this.devices.has(id)))];
    if (unknown.length === 0) return;
    const { rows } = await this.deps.pool.query<{ id: number; name: string; type: string }>('SELECT id, name, type FROM devices WHERE id = ANY($1::int[])', [unknown]);
    for (const r of rows) this.devices.set(r.id, { name: r.name, type: r.type });
  }
}
