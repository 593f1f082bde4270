import type pg from 'pg';
import type { Logger } from '../core/log.ts';
import type { KeyDictionary } from '../db/keys.ts';
import type { NonNumericValue, Reading, TelemetryValue } from './readings.ts';

/** A device's newest values ({key: [ts, value]}) and newest position. */
export interface DeviceLatest {
  deviceId: number;
  lastTs: number;
  values: Record<string, [number, TelemetryValue]>;
  position?: { ts: number; lat: number; lng: number; alt?: number; cell: bigint };
}

/**
 * Keeps each device's latest values and position. Committed batches update memory at once; the
 * changed devices are saved to `device_state` every `flushMs` in one statement (per key, the newer
 * timestamp wins, so concurrent nodes never move a value back). Reads merge memory over the table.
 */
export class LatestTracker {
  private dirty = new Map<number, DeviceLatest>();
  /** The batch being saved: still read from memory until its save commits (see merged). */
  private saving: Map<number, DeviceLatest> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly dictionary: KeyDictionary,
    private readonly log: Logger,
    private readonly flushMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.flush(), this.flushMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  /** Called with each committed batch. */
  record(rows: readonly Reading[]): void {
    for (const r of rows) {
      let d = this.dirty.get(r.deviceId);
      if (!d) {
        d = { deviceId: r.deviceId, lastTs: r.ts, values: {} };
        this.dirty.set(r.deviceId, d);
      }
      mergeReading(d, r);
    }
  }

  async flush(): Promise<void> {
    if (this.flushing) return this.flushing;
    if (this.dirty.size === 0) return;
    this.saving = this.dirty;
    const batch = [...this.saving.values()];
    this.dirty = new Map();
    this.flushing = this.save(batch)
      .catch((err: Error) => {
        // Put them back (newer entries recorded meanwhile win) and try again next time.
        for (const d of batch) {
          const newer = this.dirty.get(d.deviceId);
          if (newer) mergeLatest(d, newer);
          this.dirty.set(d.deviceId, d);
        }
        this.log.warn({ err: err.message, devices: batch.length }, 'could not save latest device state; will retry');
      })
      .finally(() => {
        this.flushing = undefined;
        this.saving = undefined;
      });
    return this.flushing;
  }

  /**
   * What memory holds beyond the table, captured before a read of the table: the batch being
   * saved and the unsaved changes. A save may commit after the read's snapshot was taken, and its
   * batch has already left `dirty` then, so both maps are captured first and merged after the read
   * (merging what the table already has is harmless: per key, the newer value wins).
   */
  private unsaved(): Map<number, DeviceLatest>[] {
    return this.saving ? [this.saving, this.dirty] : [this.dirty];
  }

  /** The maps captured before a read, and the changes recorded since when a save swapped them out meanwhile. */
  private sinceRead(captured: Map<number, DeviceLatest>[]): Map<number, DeviceLatest>[] {
    return captured.includes(this.dirty) ? captured : [...captured, this.dirty];
  }

  /** Latest state of one device, or undefined when it never reported. */
  async get(deviceId: number): Promise<DeviceLatest | undefined> {
    const unsaved = this.unsaved();
    const { rows } = await this.pool.query<StateRow>(`${SELECT_STATE} WHERE device_id = $1`, [deviceId]);
    let state = rows[0] ? fromRow(rows[0]) : undefined;
    for (const map of this.sinceRead(unsaved)) {
      const fresh = map.get(deviceId);
      if (!fresh) continue;
      if (state) mergeLatest(state, fresh);
      else state = structuredClone(fresh);
    }
    return state;
  }

  /** Latest state of every device that ever reported (the live map's first picture). */
  async all(): Promise<DeviceLatest[]> {
    const unsaved = this.unsaved();
    const { rows } = await this.pool.query<StateRow>(SELECT_STATE);
    const byId = new Map(rows.map((r) => [r.device_id, fromRow(r)]));
    for (const map of this.sinceRead(unsaved)) {
      for (const fresh of map.values()) {
        const stored = byId.get(fresh.deviceId);
        if (stored) mergeLatest(stored, fresh);
        else byId.set(fresh.deviceId, structuredClone(fresh));
      }
    }
    return [...byId.values()];
  }

  /** After a crash, re-derive state for readings committed since the last save. */
  async recover(): Promise<number> {
    const { rows } = await this.pool.query<{
      device_id: number;
      domain: Reading['domain'];
      ts: Date;
      cell: string | null;
      lat: number | null;
      lng: number | null;
      alt: number | null;
      keys: number[];
      vals: number[];
      jvals: Record<string, NonNumericValue> | null;
    }>(
      `SELECT device_id, domain, ts, cell, lat, lng, alt, keys, vals, jvals FROM readings
        WHERE ts > coalesce((SELECT max(updated_at) FROM device_state), '-infinity') - interval '1 minute'
          AND ts <= now() + interval '1 hour'
        ORDER BY ts`,
    );
    const readings: Reading[] = [];
    for (const r of rows) {
      const values: Record<string, number> = {};
      for (const [i, id] of r.keys.entries()) {
        const name = await this.dictionary.name(id);
        if (name !== undefined) values[name] = r.vals[i]!;
      }
      const reading: Reading = { deviceId: r.device_id, domain: r.domain, ts: r.ts.getTime(), values };
      if (r.jvals) {
        const jsonValues: Record<string, NonNumericValue> = {};
        for (const [id, value] of Object.entries(r.jvals)) {
          const name = await this.dictionary.name(Number(id));
          if (name !== undefined) jsonValues[name] = value;
        }
        reading.jsonValues = jsonValues;
      }
      if (r.cell !== null && r.lat !== null && r.lng !== null) {
        reading.cell = BigInt(r.cell);
        reading.lat = r.lat;
        reading.lng = r.lng;
        if (r.alt !== null) reading.alt = r.alt;
      }
      readings.push(reading);
    }
    this.record(readings);
    await this.flush();
    return rows.length;
  }

  private async save(batch: DeviceLatest[]): Promise<void> {
    const ids: number[] = [];
    const lastTs: Date[] = [];
    const lat: (number | null)[] = [];
    const lng: (number | null)[] = [];
    const alt: (number | null)[] = [];
    const cell: (string | null)[] = [];
    const posTs: (Date | null)[] = [];
    const latest: string[] = [];
    for (const d of batch) {
      ids.push(d.deviceId);
      lastTs.push(new Date(d.lastTs));
      lat.push(d.position?.lat ?? null);
      lng.push(d.position?.lng ?? null);
      alt.push(d.position?.alt ?? null);
      cell.push(d.position ? d.position.cell.toString() : null);
      posTs.push(d.position ? new Date(d.position.ts) : null);
      latest.push(JSON.stringify(d.values));
    }
    // Devices deleted meanwhile are skipped by the join.
    await this.pool.query(
      `INSERT INTO device_state AS s (device_id, last_ts, lat, lng, alt, cell, position_ts, latest, updated_at)
       SELECT u.* , now() FROM unnest($1::int[], $2::timestamptz[], $3::float8[], $4::float8[], $5::float8[], $6::int8[], $7::timestamptz[], $8::jsonb[])
              AS u(device_id, last_ts, lat, lng, alt, cell, position_ts, latest)
       JOIN devices d ON d.id = u.device_id
       ON CONFLICT (device_id) DO UPDATE SET
         last_ts = greatest(s.last_ts, excluded.last_ts),
         latest = guanlink_merge_latest(s.latest, excluded.latest),
         lat = CASE WHEN s.position_ts IS NULL OR excluded.position_ts >= s.position_ts THEN coalesce(excluded.lat, s.lat) ELSE s.lat END,
         lng = CASE WHEN s.position_ts IS NULL OR excluded.position_ts >= s.position_ts THEN coalesce(excluded.lng, s.lng) ELSE s.lng END,
         alt = CASE WHEN s.position_ts IS NULL OR excluded.position_ts >= s.position_ts THEN coalesce(excluded.alt, s.alt) ELSE s.alt END,
         cell = CASE WHEN s.position_ts IS NULL OR excluded.position_ts >= s.position_ts THEN coalesce(excluded.cell, s.cell) ELSE s.cell END,
         position_ts = greatest(s.position_ts, excluded.position_ts),
         updated_at = now()`,
      [ids, lastTs, lat, lng, alt, cell, posTs, latest],
    );
  }
}

interface StateRow {
  device_id: number;
  last_ts: Date;
  lat: number | null;
  lng: number | null;
  alt: number | null;
  cell: string | null;
  position_ts: Date | null;
  latest: Record<string, [number, TelemetryValue]>;
}
const SELECT_STATE = `SELECT device_id, last_ts, lat, lng, alt, cell, position_ts, latest FROM device_state`;

function fromRow(r: StateRow): DeviceLatest {
  const d: DeviceLatest = { deviceId: r.device_id, lastTs: r.last_ts.getTime(), values: r.latest };
  if (r.position_ts && r.lat !== null && r.lng !== null && r.cell !== null) {
    d.position = { ts: r.position_ts.getTime(), lat: r.lat, lng: r.lng, cell: BigInt(r.cell) };
    if (r.alt !== null) d.position.alt = r.alt;
  }
  return d;
}

function mergeReading(d: DeviceLatest, r: Reading): void {
  if (r.ts > d.lastTs) d.lastTs = r.ts;
  for (const key in r.values) setLatest(d, key, r.ts, r.values[key]!);
  for (const key in r.jsonValues) setLatest(d, key, r.ts, r.jsonValues[key]!);
  if (r.cell !== undefined && r.lat !== undefined && r.lng !== undefined && (!d.position || d.position.ts <= r.ts)) {
    d.position = { ts: r.ts, lat: r.lat, lng: r.lng, cell: r.cell };
    if (r.alt !== undefined) d.position.alt = r.alt;
  }
}

function setLatest(d: DeviceLatest, key: string, ts: number, value: TelemetryValue): void {
  const prev = d.values[key];
  if (!prev) d.values[key] = [ts, value];
  else if (prev[0] <= ts) {
    prev[0] = ts;
    prev[1] = value;
  }
}

/** Merges `from` into `into`, newer timestamps winning per key and for the position. */
function mergeLatest(into: DeviceLatest, from: DeviceLatest): void {
  if (from.lastTs > into.lastTs) into.lastTs = from.lastTs;
  for (const [key, v] of Object.entries(from.values)) {
    const prev = into.values[key];
    if (!prev || prev[0] <= v[0]) into.values[key] = v;
  }
  if (from.position && (!into.position || into.position.ts <= from.position.ts)) into.position = { ...from.position };
}
