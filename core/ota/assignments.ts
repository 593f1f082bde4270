import type pg from 'pg';
import type { AttributeService, AttributeValues } from '../attributes.ts';
import type { Logger } from '../log.ts';
import { OTA_TYPES, OtaError, keyPrefix, type OtaPackage, type OtaPackages, type OtaType } from './packages.ts';

/**
 * The shared attributes ThingsBoard keeps for a target package (OtaPackageUtil getAttributeKey:
 * `<fw|sw>_<OtaPackageKey>`; OtaPackageKey: title, version, ts, state, size, checksum,
 * checksum_algorithm, url, tag). All of them are deleted when a device has no package any more.
 */
export const otaAttributeKeys = (type: OtaType): string[] =>
  ['title', 'version', 'ts', 'state', 'size', 'checksum', 'checksum_algorithm', 'url', 'tag'].map((k) => `${keyPrefix(type)}_${k}`);

/**
 * What a device is told of its target package (DefaultOtaPackageStateService updateAttributes,
 * for a package with data): title, version, size, checksum algorithm and checksum; tag and url are
 * deleted (GuanLink packages have neither).
 */
export function otaAttributes(pkg: OtaPackage): AttributeValues {
  const p = keyPrefix(pkg.type);
  return {
    [`${p}_title`]: pkg.title,
    [`${p}_version`]: pkg.version,
    [`${p}_size`]: pkg.size!,
    [`${p}_checksum_algorithm`]: pkg.checksumAlgorithm,
    [`${p}_checksum`]: pkg.checksum!,
  };
}

/**
 * Which package a device should run: its own assignment, else its device type's (ThingsBoard:
 * the device's firmware/software, else its profile's — DefaultTransportApiService
 * handle(GetOtaPackageRequestMsg)). Changing an assignment tells every device it changes the
 * target of through its `fw_*` / `sw_*` shared attributes, pushed by the attribute service to a
 * connected device (`v1/devices/me/attributes`) or its gateway (`v1/gateway/attributes`).
 */
export class OtaAssignments {
  constructor(
    private readonly deps: { pool: pg.Pool; packages: OtaPackages; attributes: AttributeService; log: Logger },
  ) {}

  /** Checks a package may be assigned to a device (or type) of `deviceType` (AbstractHasOtaPackageValidator). */
  async assignable(packageId: number, deviceType: string): Promise<OtaPackage> {
    const pkg = await this.deps.packages.get(packageId);
    if (!pkg) throw new OtaError('not_found', `no OTA package ${packageId}`);
    const kind = pkg.type.toLowerCase();
    if (pkg.size === null) throw new OtaError('conflict', `Can't assign ${kind} with empty data! Upload the data of package ${packageId} first`);
    if (pkg.deviceType !== null && pkg.deviceType !== deviceType) {
      throw new OtaError('invalid', `Can't assign ${kind} with different device type! Package ${packageId} is for device type "${pkg.deviceType}", not "${deviceType}"`);
    }
    return pkg;
  }

  async assignDeviceType(deviceType: string, packageId: number): Promise<{ devices: number }> {
    const pkg = await this.assignable(packageId, deviceType);
    await this.deps.pool.query(
      `INSERT INTO ota_type_assignments (device_type, type, package_id) VALUES ($1, $2, $3)
       ON CONFLICT (device_type, type) DO UPDATE SET package_id = excluded.package_id, assigned_at = now()`,
      [deviceType, pkg.type, pkg.id],
    );
    return { devices: await this.applyTo(await this.followingType(deviceType, pkg.type), pkg.type) };
  }

  async unassignDeviceType(deviceType: string, type: OtaType): Promise<{ devices: number }> {
    const { rowCount } = await this.deps.pool.query('DELETE FROM ota_type_assignments WHERE device_type = $1 AND type = $2', [deviceType, type]);
    if (rowCount === 0) throw new OtaError('not_found', `device type "${deviceType}" has no ${type.toLowerCase()} assigned`);
    return { devices: await this.applyTo(await this.followingType(deviceType, type), type) };
  }

  async assignDevice(device: { id: number; type: string }, packageId: number): Promise<OtaPackage> {
    const pkg = await this.assignable(packageId, device.type);
    await this.saveDeviceAssignment(device.id, pkg);
    await this.applyTo([device.id], pkg.type);
    return pkg;
  }

  /** Writes a device's own assignment (no push: applyTo or push follow). */
  async saveDeviceAssignment(deviceId: number, pkg: OtaPackage, client: pg.ClientBase | pg.Pool = this.deps.pool): Promise<void> {
    await client.query(
      `INSERT INTO ota_device_assignments (device_id, type, package_id) VALUES ($1, $2, $3)
       ON CONFLICT (device_id, type) DO UPDATE SET package_id = excluded.package_id, assigned_at = now()`,
      [deviceId, pkg.type, pkg.id],
    );
  }

  async unassignDevice(deviceId: number, type: OtaType): Promise<void> {
    const { rowCount } = await this.deps.pool.query('DELETE FROM ota_device_assignments WHERE device_id = $1 AND type = $2', [deviceId, type]);
    if (rowCount === 0) throw new OtaError('not_found', `device ${deviceId} has no ${type.toLowerCase()} of its own assigned`);
    await this.applyTo([deviceId], type);
  }

  /** The package a device should run now, of one type, or undefined. */
  async target(deviceId: number, type: OtaType): Promise<OtaPackage | undefined> {
    const { rows } = await this.deps.pool.query<{ package_id: number | null }>(
      `SELECT coalesce(da.package_id, ta.package_id) AS package_id
         FROM devices d
         LEFT JOIN ota_device_assignments da ON da.device_id = d.id AND da.type = $2
         LEFT JOIN ota_type_assignments ta ON ta.device_type = d.type AND ta.type = $2
        WHERE d.id = $1`,
      [deviceId, type],
    );
    const id = rows[0]?.package_id;
    return id == null ? undefined : this.deps.packages.get(id);
  }

  /** Assignments of one device: its own and its type's, per type. */
  async ofDevice(deviceId: number): Promise<{ type: OtaType; own: number | null; deviceType: number | null; target: number | null }[]> {
    const { rows } = await this.deps.pool.query<{ type: OtaType; own: number | null; by_type: number | null }>(
      `SELECT t.type, da.package_id AS own, ta.package_id AS by_type
         FROM devices d CROSS JOIN unnest($2::text[]) AS t(type)
         LEFT JOIN ota_device_assignments da ON da.device_id = d.id AND da.type = t.type
         LEFT JOIN ota_type_assignments ta ON ta.device_type = d.type AND ta.type = t.type
        WHERE d.id = $1 ORDER BY t.type`,
      [deviceId, OTA_TYPES],
    );
    return rows.map((r) => ({ type: r.type, own: r.own, deviceType: r.by_type, target: r.own ?? r.by_type }));
  }

  /** Device types with a package assigned. */
  async typeAssignments(): Promise<{ deviceType: string; type: OtaType; packageId: number; assignedAt: string }[]> {
    const { rows } = await this.deps.pool.query<{ device_type: string; type: OtaType; package_id: number; assigned_at: Date }>(
      'SELECT device_type, type, package_id, assigned_at FROM ota_type_assignments ORDER BY device_type, type',
    );
    return rows.map((r) => ({ deviceType: r.device_type, type: r.type, packageId: r.package_id, assignedAt: r.assigned_at.toISOString() }));
  }

  /**
   * Brings devices' attributes in line with their target package of one type; returns how many
   * devices' targets were (re)sent. Idempotent: a device whose attributes already name its target
   * gets nothing (an SDK restarts its download on every update that names a new version).
   */
  async applyTo(deviceIds: readonly number[], type: OtaType): Promise<number> {
    let changed = 0;
    for (const id of deviceIds) if (await this.push(id, type, await this.target(id, type))) changed++;
    return changed;
  }

  /**
   * Tells one device its target package (or that it has none), unless its shared attributes say
   * so already; the device's tracked state restarts (INITIATED) when its target changes. Returns
   * whether anything was sent.
   */
  async push(deviceId: number, type: OtaType, pkg: OtaPackage | undefined): Promise<boolean> {
    const { attributes, pool } = this.deps;
    const keys = otaAttributeKeys(type);
    const current = await attributes.values(deviceId, 'shared', keys);
    let sent = false;
    if (pkg) {
      const wanted = otaAttributes(pkg);
      const stale = keys.filter((k) => !(k in wanted) && k in current);
      if (stale.length > 0) sent = (await attributes.remove(deviceId, 'shared', stale)).deleted.length > 0;
      if (Object.entries(wanted).some(([k, v]) => current[k] !== v)) {
        await attributes.save(deviceId, 'shared', wanted);
        sent = true;
      }
    } else if (Object.keys(current).length > 0) {
      sent = (await attributes.remove(deviceId, 'shared', keys)).deleted.length > 0;
    }
    await pool.query(
      `INSERT INTO ota_device_states (device_id, type, package_id, state) VALUES ($1, $2, $3, $4)
       ON CONFLICT (device_id, type) DO UPDATE SET package_id = excluded.package_id, state = excluded.state, error = NULL, updated_at = now()
        WHERE ota_device_states.package_id IS DISTINCT FROM excluded.package_id`,
      [deviceId, type, pkg?.id ?? null, pkg ? 'INITIATED' : null],
    );
    return sent;
  }

  /** Devices of a type that follow its assignment (no assignment of their own). */
  private async followingType(deviceType: string, type: OtaType): Promise<number[]> {
    const { rows } = await this.deps.pool.query<{ id: number }>(
      `SELECT d.id FROM devices d
        WHERE d.type = $1 AND NOT EXISTS (SELECT 1 FROM ota_device_assignments da WHERE da.device_id = d.id AND da.type = $2)
        ORDER BY d.id`,
      [deviceType, type],
    );
    return rows.map((r) => r.id);
  }

  /**
   * A device was created or changed (its type may differ): its targets follow. Queued one after
   * another (a bulk import creates thousands at once), and one query when nothing changed.
   */
  deviceChanged(deviceId: number): Promise<void> {
    const run = this.changes.then(() => this.followTarget(deviceId));
    this.changes = run.catch(() => {});
    return run;
  }

  private changes: Promise<void> = Promise.resolve();

  private async followTarget(deviceId: number): Promise<void> {
    const { rows } = await this.deps.pool.query<{ type: OtaType; target: number | null; known: number | null }>(
      `SELECT t.type, coalesce(da.package_id, ta.package_id) AS target, s.package_id AS known
         FROM devices d CROSS JOIN unnest($2::text[]) AS t(type)
         LEFT JOIN ota_device_assignments da ON da.device_id = d.id AND da.type = t.type
         LEFT JOIN ota_type_assignments ta ON ta.device_type = d.type AND ta.type = t.type
         LEFT JOIN ota_device_states s ON s.device_id = d.id AND s.type = t.type
        WHERE d.id = $1`,
      [deviceId, OTA_TYPES],
    );
    for (const r of rows) {
      // Nothing to tell a device whose target is the one it was last told of (or that never had one).
      if (r.target === r.known) continue;
      await this.push(deviceId, r.type, r.target === null ? undefined : await this.deps.packages.get(r.target));
    }
  }
}
