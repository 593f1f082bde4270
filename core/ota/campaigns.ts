import type pg from 'pg';
import { inTransaction } from '../../db/pool.ts';
import type { Logger } from '../log.ts';
import { PeriodicJob } from '../periodic.ts';
import type { OtaAssignments } from './assignments.ts';
import { OtaError, type OtaPackages } from './packages.ts';

export interface OtaCampaign {
  id: number;
  packageId: number;
  devicesPerMinute: number;
  status: 'running' | 'done' | 'cancelled';
  /** Devices in the campaign, and how many were assigned the package so far. */
  devices: number;
  assigned: number;
  createdBy: string;
  createdAt: string;
  finishedAt: string | null;
}

interface CampaignRow {
  id: number;
  package_id: number;
  devices_per_minute: number;
  status: OtaCampaign['status'];
  devices: number;
  assigned: number;
  created_by: string;
  created_at: Date;
  finished_at: Date | null;
}

const SELECT = `SELECT c.id, c.package_id, c.devices_per_minute, c.status, c.created_by, c.created_at, c.finished_at,
       (SELECT count(*)::int FROM ota_campaign_devices cd WHERE cd.campaign_id = c.id) AS devices,
       (SELECT count(*)::int FROM ota_campaign_devices cd WHERE cd.campaign_id = c.id AND cd.assigned_at IS NOT NULL) AS assigned
  FROM ota_campaigns c`;

const toCampaign = (r: CampaignRow): OtaCampaign => ({
  id: r.id,
  packageId: r.package_id,
  devicesPerMinute: r.devices_per_minute,
  status: r.status,
  devices: r.devices,
  assigned: r.assigned,
  createdBy: r.created_by,
  createdAt: r.created_at.toISOString(),
  finishedAt: r.finished_at?.toISOString() ?? null,
});

/**
 * Rollouts of a package to a set of devices at a rate: each device in turn gets the package as
 * its own assignment (overriding its type's), never more than `devicesPerMinute` in any 60 s and
 * spread over the minute (one every 60/N s). Kept in the database (`ota_campaigns`,
 * `ota_campaign_devices`): a restarted node carries on where it stopped, and several nodes
 * sharing the database take turns (a campaign is advanced under its row lock, SKIP LOCKED).
 */
export class OtaCampaigns {
  private readonly job: PeriodicJob;

  constructor(
    private readonly deps: { pool: pg.Pool; packages: OtaPackages; assignments: OtaAssignments; log: Logger; tickMs?: number },
  ) {
    this.job = new PeriodicJob(() => this.tick(), deps.tickMs ?? 1000, (err) => deps.log.warn({ err }, 'OTA campaign step failed; retried'));
  }

  start(): void {
    this.job.start(0);
  }

  stop(): Promise<void> {
    return this.job.stop();
  }

  /**
   * Starts a campaign over `deviceIds` (in that order). Every device must be of the package's
   * device type when it has one (checked here, as an assignment is): the message lists those that are not.
   */
  async create(input: { packageId: number; deviceIds: readonly number[]; devicesPerMinute: number; createdBy: string }): Promise<OtaCampaign> {
    const pkg = await this.deps.packages.get(input.packageId);
    if (!pkg) throw new OtaError('not_found', `no OTA package ${input.packageId}`);
    const ids = [...new Set(input.deviceIds)];
    const { rows: devices } = await this.deps.pool.query<{ id: number; type: string }>('SELECT id, type FROM devices WHERE id = ANY ($1::int[])', [ids]);
    const found = new Map(devices.map((d) => [d.id, d.type]));
    const missing = ids.filter((id) => !found.has(id));
    if (missing.length > 0) throw new OtaError('invalid', `devices: no device ${missing.slice(0, 20).join(', ')}${missing.length > 20 ? ` (and ${missing.length - 20} more)` : ''}`);
    for (const type of new Set(found.values())) await this.deps.assignments.assignable(pkg.id, type);
    const id = await inTransaction(this.deps.pool, async (client) => {
      const { rows } = await client.query<{ id: number }>('INSERT INTO ota_campaigns (package_id, devices_per_minute, created_by) VALUES ($1, $2, $3) RETURNING id', [
        pkg.id,
        input.devicesPerMinute,
        input.createdBy,
      ]);
      const created = rows[0]!.id;
      await client.query('INSERT INTO ota_campaign_devices (campaign_id, device_id, seq) SELECT $1, d, o::int FROM unnest($2::int[]) WITH ORDINALITY AS u(d, o)', [created, ids]);
      return created;
    });
    await this.job.now(() => this.tick()); // the first devices at once
    return (await this.get(id))!;
  }

  async get(id: number): Promise<OtaCampaign | undefined> {
    const { rows } = await this.deps.pool.query<CampaignRow>(`${SELECT} WHERE c.id = $1`, [id]);
    return rows[0] && toCampaign(rows[0]);
  }

  async list(filter: { packageId?: number; limit: number; afterId?: number }): Promise<OtaCampaign[]> {
    const { rows } = await this.deps.pool.query<CampaignRow>(`${SELECT} WHERE ($1::int IS NULL OR c.package_id = $1) AND c.id > $2 ORDER BY c.id LIMIT $3`, [
      filter.packageId ?? null,
      filter.afterId ?? 0,
      filter.limit,
    ]);
    return rows.map(toCampaign);
  }

  /** Stops a running campaign: devices already assigned keep the package, the others are not given it. */
  async cancel(id: number): Promise<OtaCampaign> {
    const { rowCount } = await this.deps.pool.query(`UPDATE ota_campaigns SET status = 'cancelled', finished_at = now() WHERE id = $1 AND status = 'running'`, [id]);
    const campaign = await this.get(id);
    if (!campaign) throw new OtaError('not_found', `no OTA campaign ${id}`);
    if (rowCount === 0) throw new OtaError('conflict', `OTA campaign ${id} is ${campaign.status} already`);
    return campaign;
  }

  /** One step of every running campaign not being advanced elsewhere; returns how many devices were assigned. */
  async tick(): Promise<number> {
    const { rows: running } = await this.deps.pool.query<{ id: number }>(`SELECT id FROM ota_campaigns WHERE status = 'running' ORDER BY id`);
    let assigned = 0;
    for (const { id } of running) {
      if (this.job.stopping) break;
      assigned += await this.advance(id);
    }
    return assigned;
  }

  private async advance(id: number): Promise<number> {
    const { pool, packages, assignments } = this.deps;
    return inTransaction(pool, async (client) => {
      // Times from the database's clock only: the nodes sharing it need not agree on the time.
      const { rows } = await client.query<{ package_id: number; devices_per_minute: number; in_last_minute: number; since_last_ms: number | null }>(
        `SELECT c.package_id, c.devices_per_minute,
                (SELECT count(*)::int FROM ota_campaign_devices cd WHERE cd.campaign_id = c.id AND cd.assigned_at > now() - interval '60 seconds') AS in_last_minute,
                (SELECT extract(epoch FROM now() - max(cd.assigned_at)) * 1000 FROM ota_campaign_devices cd WHERE cd.campaign_id = c.id)::float8 AS since_last_ms
           FROM ota_campaigns c WHERE c.id = $1 AND c.status = 'running' FOR UPDATE SKIP LOCKED`,
        [id],
      );
      const c = rows[0];
      if (!c) return 0; // done meanwhile, or being advanced by another node
      const spacingMs = 60_000 / c.devices_per_minute;
      // Spread over the minute (one per spacing; the first at once), and never more than N in the last 60 s.
      const due = Math.min(c.devices_per_minute - c.in_last_minute, c.since_last_ms === null ? 1 : Math.floor(c.since_last_ms / spacingMs));
      const { rows: next } = await client.query<{ device_id: number; type: string }>(
        `SELECT cd.device_id, d.type FROM ota_campaign_devices cd JOIN devices d ON d.id = cd.device_id
          WHERE cd.campaign_id = $1 AND cd.assigned_at IS NULL ORDER BY cd.seq LIMIT $2`,
        [id, Math.max(due, 0)],
      );
      const pkg = await packages.get(c.package_id);
      if (pkg) {
        for (const d of next) {
          // Told before commit: were the commit lost, the device is assigned (and told, again) on
          // the next step — at least once, never assigned without being told.
          await assignments.push(d.device_id, pkg.type, pkg);
          await assignments.saveDeviceAssignment(d.device_id, pkg, client);
          await client.query('UPDATE ota_campaign_devices SET assigned_at = now() WHERE campaign_id = $1 AND device_id = $2', [id, d.device_id]);
        }
      }
      const { rows: left } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM ota_campaign_devices WHERE campaign_id = $1 AND assigned_at IS NULL', [id]);
      if (left[0]!.n === 0 || !pkg) await client.query(`UPDATE ota_campaigns SET status = 'done', finished_at = now() WHERE id = $1`, [id]);
      return pkg ? next.length : 0;
    });
  }
}
