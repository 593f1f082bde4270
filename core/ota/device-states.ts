import type pg from 'pg';
import { inTransaction } from '../../db/pool.ts';
import type { Reading } from '../../ingest/readings.ts';
import type { Logger } from '../log.ts';
import { OTA_TYPES, keyPrefix, type OtaType } from './packages.ts';

/**
 * The update states a device reports in its `fw_state` / `sw_state` telemetry (ThingsBoard
 * OtaPackageUpdateStatus; the python SDK's TBFirmwareState adds IDLE). QUEUED and INITIATED are
 * the server's own: a target assigned (here: by a campaign not yet at the device, or just assigned).
 */
export const OTA_STATES = ['QUEUED', 'INITIATED', 'IDLE', 'DOWNLOADING', 'DOWNLOADED', 'VERIFIED', 'UPDATING', 'UPDATED', 'FAILED'] as const;

/** What one reading says of a device's update of one type; undefined when it says nothing. */
export interface ReportedOtaState {
  deviceId: number;
  type: OtaType;
  ts: number;
  state?: string;
  currentTitle?: string;
  currentVersion?: string;
  error?: string;
}

const MAX_TEXT = 200;
const asText = (v: unknown): string | undefined => (typeof v === 'string' ? v.slice(0, MAX_TEXT) : typeof v === 'number' ? String(v) : undefined);

/**
 * The OTA keys of a committed reading, as the python SDK sends them (tb_device_mqtt.py
 * update_firmware_info: `current_fw_title`, `current_fw_version`, `fw_state`, `fw_error` in one
 * telemetry message; `sw_` the same). A numeric version (the type cast of numeric strings) counts as text.
 */
export function reportedStates(reading: Reading): ReportedOtaState[] {
  const out: ReportedOtaState[] = [];
  const value = (k: string) => asText(reading.jsonValues?.[k] ?? reading.values[k]);
  for (const type of OTA_TYPES) {
    const p = keyPrefix(type);
    const r: ReportedOtaState = { deviceId: reading.deviceId, type, ts: reading.ts };
    const state = value(`${p}_state`);
    const currentTitle = value(`current_${p}_title`);
    const currentVersion = value(`current_${p}_version`);
    const error = value(`${p}_error`);
    if (state === undefined && currentTitle === undefined && currentVersion === undefined && error === undefined) continue;
    if (state !== undefined) r.state = state.toUpperCase();
    if (currentTitle !== undefined) r.currentTitle = currentTitle;
    if (currentVersion !== undefined) r.currentVersion = currentVersion;
    if (error !== undefined) r.error = error;
    out.push(r);
  }
  return out;
}

export interface Rollout {
  /** Devices whose target is the package (in the caller's scope). */
  targeted: number;
  /** Targeted devices by the state they reported for this package (QUEUED: nothing yet). */
  states: Record<string, number>;
  /** Targeted devices by the title and version they report running (null: not reported). */
  versions: { title: string | null; version: string | null; devices: number }[];
  /** Targeted devices whose update failed, with their error (the most recent first, at most 100). */
  failures: { deviceId: number; deviceName: string; error: string | null; at: string }[];
}

/**
 * Follows what devices report of their updates (from committed telemetry, off the ingest path)
 * into `ota_device_states`, one row per device and type, and summarises a package's rollout.
 */
export class OtaDeviceStates {
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(private readonly deps: { pool: pg.Pool; log: Logger; maxPending?: number }) {}

  /** Committed readings (ingest.onCommitted); only those carrying OTA keys are kept, in order. */
  readingsCommitted(rows: readonly Reading[]): void {
    const reports = rows.flatMap(reportedStates);
    if (reports.length === 0) return;
    if (this.pending >= (this.deps.maxPending ?? 10_000)) {
      this.deps.log.warn({ dropped: reports.length }, 'OTA state reports dropped: the database is not keeping up');
      return;
    }
    this.pending += reports.length;
    this.chain = this.chain.then(async () => {
      for (const r of reports) {
        try {
          await this.record(r);
        } catch (err) {
          this.deps.log.warn({ err, device: r.deviceId }, 'OTA state report not recorded');
        } finally {
          this.pending--;
        }
      }
    });
  }

  /** Resolves once every report handed over so far is written. */
  drained(): Promise<void> {
    return this.chain;
  }

  async record(r: ReportedOtaState): Promise<void> {
    // A state comes with its error (the SDK sends fw_error "" unless FAILED): a new state replaces the error.
    const error = r.error === undefined || r.error === '' ? null : r.error;
    await this.deps.pool.query(
      `INSERT INTO ota_device_states (device_id, type, package_id, state, current_title, current_version, error, updated_at)
       SELECT d.id, $2, coalesce(da.package_id, ta.package_id), $3, $4, $5, $6, $7
         FROM devices d
         LEFT JOIN ota_device_assignments da ON da.device_id = d.id AND da.type = $2
         LEFT JOIN ota_type_assignments ta ON ta.device_type = d.type AND ta.type = $2
        WHERE d.id = $1
       ON CONFLICT (device_id, type) DO UPDATE SET
         package_id = excluded.package_id,
         state = coalesce(excluded.state, ota_device_states.state),
         current_title = coalesce(excluded.current_title, ota_device_states.current_title),
         current_version = coalesce(excluded.current_version, ota_device_states.current_version),
         error = CASE WHEN excluded.state IS NOT NULL OR $8 THEN excluded.error ELSE ota_device_states.error END,
         updated_at = excluded.updated_at
       WHERE ota_device_states.updated_at <= excluded.updated_at`,
      [r.deviceId, r.type, r.state ?? null, r.currentTitle ?? null, r.currentVersion ?? null, error, new Date(r.ts), r.error !== undefined],
    );
  }

  /** One device's tracked states (both types). */
  async ofDevice(deviceId: number): Promise<{ type: OtaType; packageId: number | null; state: string | null; currentTitle: string | null; currentVersion: string | null; error: string | null; updatedAt: string }[]> {
    const { rows } = await this.deps.pool.query<{ type: OtaType; package_id: number | null; state: string | null; current_title: string | null; current_version: string | null; error: string | null; updated_at: Date }>(
      'SELECT type, package_id, state, current_title, current_version, error, updated_at FROM ota_device_states WHERE device_id = $1 ORDER BY type',
      [deviceId],
    );
    return rows.map((r) => ({ type: r.type, packageId: r.package_id, state: r.state, currentTitle: r.current_title, currentVersion: r.current_version, error: r.error, updatedAt: r.updated_at.toISOString() }));
  }

  /** A package's rollout among the devices in `visible` (null: all). */
  async rollout(pkg: { id: number; type: OtaType }, visible: ReadonlySet<number> | null): Promise<Rollout> {
    const params = [pkg.id, pkg.type, visible === null ? null : [...visible]];
    const targeted = `
      SELECT d.id, d.name, CASE WHEN s.package_id = $1 THEN coalesce(s.state, 'QUEUED') ELSE 'QUEUED' END AS state,
             s.current_title, s.current_version, s.error, s.updated_at
        FROM devices d
        LEFT JOIN ota_device_assignments da ON da.device_id = d.id AND da.type = $2
        LEFT JOIN ota_type_assignments ta ON ta.device_type = d.type AND ta.type = $2
        LEFT JOIN ota_device_states s ON s.device_id = d.id AND s.type = $2
       WHERE coalesce(da.package_id, ta.package_id) = $1 AND ($3::int[] IS NULL OR d.id = ANY ($3::int[]))`;
    // One snapshot for the three parts: read apart, a report landing between them made the counts
    // disagree with the failures listed.
    const { states, versions, failures } = await inTransaction(this.deps.pool, async (client) => {
      await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY');
      const states = await client.query<{ state: string; n: number }>(`WITH t AS (${targeted}) SELECT state, count(*)::int AS n FROM t GROUP BY state ORDER BY state`, params);
      const versions = await client.query<{ title: string | null; version: string | null; n: number }>(
        `WITH t AS (${targeted}) SELECT current_title AS title, current_version AS version, count(*)::int AS n FROM t GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 100`,
        params,
      );
      const failures = await client.query<{ id: number; name: string; error: string | null; updated_at: Date }>(
        `WITH t AS (${targeted}) SELECT id, name, error, updated_at FROM t WHERE state = 'FAILED' ORDER BY updated_at DESC, id LIMIT 100`,
        params,
      );
      return { states, versions, failures };
    });
    return {
      targeted: states.rows.reduce((sum, r) => sum + r.n, 0),
      states: Object.fromEntries(states.rows.map((r) => [r.state, r.n])),
      versions: versions.rows.map((r) => ({ title: r.title, version: r.version, devices: r.n })),
      failures: failures.rows.map((r) => ({ deviceId: r.id, deviceName: r.name, error: r.error, at: r.updated_at.toISOString() })),
    };
  }
}
