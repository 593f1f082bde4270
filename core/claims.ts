import { isUtf8 } from 'node:buffer';
import type pg from 'pg';
import type { Rejection } from '../ingest/readings.ts';
import { describeValue } from '../ingest/telemetry-payload.ts';
import { hashSecret, verifySecret } from './credentials.ts';
import type { Logger } from './log.ts';
import type { Device, DeviceRegistry } from './registry.ts';

/**
 * Device claiming, as ThingsBoard does it (ClaimDevicesServiceImpl, DeviceController.claimDevice:
 * https://github.com/thingsboard/thingsboard/blob/master/dao/src/main/java/org/thingsboard/server/dao/device/ClaimDevicesServiceImpl.java;
 * https://thingsboard.io/docs/reference/mqtt-api/claiming/, …/gateway-api/claiming/):
 *
 * - A device publishes `{"secretKey", "durationMs"}` to `v1/devices/me/claim` (a gateway
 *   `{"Name": {…}}` to `v1/gateway/claim`). Both optional: no secretKey is the empty secret, a
 *   missing or non-positive durationMs the default window (CLAIM_DEFAULT_DURATION_MS, ThingsBoard's
 *   SECURITY_CLAIM_DURATION). A device that already has an owner is refused (`already_claimed`).
 *   A new request replaces a pending one (ThingsBoard keeps the first in its cache until it
 *   expires; the device that asks again has usually shown a new secret).
 * - An agency presents the device's name and the secret within the window: SUCCESS, the agency
 *   (the principal's `owner`) owns the device. A wrong secret or an expired window is FAILURE and
 *   cancels the request (one guess per request, as ThingsBoard evicts it); no request pending is
 *   FAILURE, or CLAIMED when the device already has an owner.
 * - An admin releases a claimed device (ThingsBoard's reclaim); it may then be claimed again.
 *
 * The secret is never kept: only its scrypt hash, compared in constant time. Requests and owners
 * are in the database (migrations/016_claims.sql), so a restart keeps both. Owners are also held
 * in memory, for core/access/access.ts (visibility), re-read every `refreshMs` for other nodes.
 */

export interface ClaimRequest {
  /** '' when the device sent none (ThingsBoard: the empty secret). */
  secretKey: string;
  /** undefined: the default window. */
  durationMs: number | undefined;
}

export const MAX_SECRET_KEY_LENGTH = 256;
/** The longest window a device may ask for. */
export const MAX_CLAIM_DURATION_MS = 365 * 86_400_000;
export const CLAIM_EXAMPLE = '{"secretKey": "abc123", "durationMs": 60000}';

type Parsed<T> = ({ ok: true } & T) | { ok: false; error: Rejection };

/** One claim request's fields (`{"secretKey", "durationMs"}`, both optional; other members ignored). */
export function parseClaimFields(value: unknown): Parsed<{ request: ClaimRequest }> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, error: { reason: 'invalid_shape', detail: `a claim request is a JSON object such as ${CLAIM_EXAMPLE}, got ${describeValue(value)}` } };
  }
  const { secretKey, durationMs } = value as Record<string, unknown>;
  if (secretKey !== undefined && secretKey !== null && typeof secretKey !== 'string') {
    return { ok: false, error: { reason: 'invalid_value', key: 'secretKey', detail: `"secretKey" must be a string, got ${describeValue(secretKey)}` } };
  }
  if (typeof secretKey === 'string' && secretKey.length > MAX_SECRET_KEY_LENGTH) {
    return { ok: false, error: { reason: 'value_too_large', key: 'secretKey', detail: `"secretKey" is ${secretKey.length} characters; at most ${MAX_SECRET_KEY_LENGTH}` } };
  }
  if (durationMs !== undefined && durationMs !== null && !(typeof durationMs === 'number' && Number.isSafeInteger(durationMs))) {
    return { ok: false, error: { reason: 'invalid_value', key: 'durationMs', detail: `"durationMs" must be an integer number of milliseconds, got ${describeValue(durationMs)}` } };
  }
  if (typeof durationMs === 'number' && durationMs > MAX_CLAIM_DURATION_MS) {
    return { ok: false, error: { reason: 'out_of_range', key: 'durationMs', detail: `"durationMs" is ${durationMs}; at most ${MAX_CLAIM_DURATION_MS} (one year)` } };
  }
  return { ok: true, request: { secretKey: typeof secretKey === 'string' ? secretKey : '', durationMs: typeof durationMs === 'number' && durationMs > 0 ? durationMs : undefined } };
}

/** `v1/devices/me/claim`: an empty payload is allowed (every field defaulted). */
export function parseDeviceClaim(payload: Buffer, maxBytes: number): Parsed<{ request: ClaimRequest }> {
  if (payload.length > maxBytes) return { ok: false, error: { reason: 'payload_too_large', detail: `payload is ${payload.length} bytes; the limit is ${maxBytes}` } };
  if (payload.length === 0) return { ok: true, request: { secretKey: '', durationMs: undefined } };
  if (!isUtf8(payload)) return { ok: false, error: { reason: 'invalid_json', detail: 'payload is not valid UTF-8 (JSON text must be UTF-8)' } };
  let doc: unknown;
  try {
    doc = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    return { ok: false, error: { reason: 'invalid_json', detail: `payload is not JSON: ${(err as Error).message}` } };
  }
  return parseClaimFields(doc);
}

/** How an agency's claim ended (ThingsBoard's ClaimResponse, with GuanLink's reason for a FAILURE). */
export type ClaimOutcome =
  | { result: 'SUCCESS'; device: Device; owner: string }
  | { result: 'CLAIMED'; device: Device; detail: string }
  | { result: 'FAILURE'; device: Device; reason: 'no_request' | 'expired' | 'wrong_secret'; detail: string }
  | { result: 'NOT_FOUND'; detail: string };

/** Who owns which device, as access decisions need it (synchronously). */
export interface Ownership {
  ownerOf(deviceId: number): string | undefined;
  /** Ids of the devices `owner` owns (empty set: none). */
  ownedBy(owner: string): ReadonlySet<number>;
  onChange(listener: () => void): void;
}

export interface ClaimServiceOptions {
  /** The window when a device gives none (CLAIM_DEFAULT_DURATION_MS). */
  defaultDurationMs: number;
  log: Logger;
  refreshMs?: number;
}

const NONE: ReadonlySet<number> = new Set();

export class ClaimService implements Ownership {
  private owners = new Map<number, string>();
  private byOwner = new Map<string, Set<number>>();
  private listeners: (() => void)[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly registry: Pick<DeviceRegistry, 'byName'>,
    private readonly options: ClaimServiceOptions,
  ) {}

  async start(): Promise<void> {
    await this.reload();
    this.timer = setInterval(() => void this.reload().catch((err: Error) => this.options.log.warn({ err }, 'device owners not re-read')), this.options.refreshMs ?? 10_000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  ownerOf(deviceId: number): string | undefined {
    return this.owners.get(deviceId);
  }

  ownedBy(owner: string): ReadonlySet<number> {
    return this.byOwner.get(owner) ?? NONE;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /**
   * A device asks to be claimed (stored before the device's publish is acknowledged). Refused
   * (`already_claimed`) when it has an owner. Resolves with when the window closes.
   */
  async request(deviceId: number, request: ClaimRequest, viaGateway?: number): Promise<{ ok: true; expiresAt: number } | { ok: false; error: Rejection }> {
    const hash = await hashSecret(request.secretKey);
    const expiresAt = Date.now() + (request.durationMs ?? this.options.defaultDurationMs);
    const { rows } = await this.pool.query<{ owner: string | null }>(
      `WITH owned AS (SELECT owner FROM device_owners WHERE device_id = $1),
            saved AS (
              INSERT INTO device_claim_requests (device_id, secret_hash, expires_at, via_gateway)
              SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM owned)
              ON CONFLICT (device_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, expires_at = EXCLUDED.expires_at,
                requested_at = now(), via_gateway = EXCLUDED.via_gateway
              RETURNING device_id)
       SELECT (SELECT owner FROM owned) AS owner`,
      [deviceId, hash, new Date(expiresAt), viaGateway ?? null],
    );
    if (rows[0]?.owner) {
      return { ok: false, error: { reason: 'already_claimed', detail: 'the device is already claimed; an admin must release it (DELETE /api/v1/claims/{deviceName}) before it can be claimed again' } };
    }
    return { ok: true, expiresAt };
  }

  /** An agency (`owner`, through principal `by`) claims a device by name with its secret. */
  async claim(deviceName: string, secretKey: string, owner: string, by: string): Promise<ClaimOutcome> {
    const device = await this.registry.byName(deviceName);
    if (!device) return { result: 'NOT_FOUND', detail: `no device is named "${deviceName}"` };
    const client = await this.pool.connect();
    let outcome: ClaimOutcome;
    try {
      await client.query('BEGIN');
      // Locks the request: of two agencies presenting the right secret at once, one succeeds, the other finds it gone.
      const pending = await client.query<{ secret_hash: string; expires_at: Date }>('SELECT secret_hash, expires_at FROM device_claim_requests WHERE device_id = $1 FOR UPDATE', [device.id]);
      const owned = await client.query<{ owner: string }>('SELECT owner FROM device_owners WHERE device_id = $1', [device.id]);
      const request = pending.rows[0];
      const currentOwner = owned.rows[0]?.owner;
      if (!request) {
        outcome = currentOwner
          ? { result: 'CLAIMED', device, detail: `device "${deviceName}" is already claimed` }
          : { result: 'FAILURE', device, reason: 'no_request', detail: `device "${deviceName}" has not asked to be claimed (or its request was used or cancelled): it must publish to v1/devices/me/claim first` };
      } else {
        // Checked even when expired, so that the answer takes as long either way.
        const secretOk = await verifySecret(secretKey, request.secret_hash);
        if (request.expires_at.getTime() < Date.now()) {
          await client.query('DELETE FROM device_claim_requests WHERE device_id = $1', [device.id]);
          outcome = { result: 'FAILURE', device, reason: 'expired', detail: `the claim window of device "${deviceName}" closed at ${request.expires_at.toISOString()}; the device must ask again` };
        } else if (!secretOk) {
          await client.query('DELETE FROM device_claim_requests WHERE device_id = $1', [device.id]);
          outcome = { result: 'FAILURE', device, reason: 'wrong_secret', detail: `wrong secretKey for device "${deviceName}"; its claim request is cancelled: the device must ask again` };
        } else {
          await client.query('DELETE FROM device_claim_requests WHERE device_id = $1', [device.id]);
          if (currentOwner) {
            outcome = { result: 'CLAIMED', device, detail: `device "${deviceName}" is already claimed` };
          } else {
            await client.query('INSERT INTO device_owners (device_id, owner, claimed_by) VALUES ($1, $2, $3)', [device.id, owner, by]);
            outcome = { result: 'SUCCESS', device, owner };
          }
        }
      }
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      client.release();
    }
    if (outcome.result === 'SUCCESS') this.setOwner(device.id, owner);
    return outcome;
  }

  /** Releases a device from its owner (and drops a pending request); undefined when there is no such device. */
  async release(deviceName: string): Promise<{ device: Device; previousOwner: string | null } | undefined> {
    const device = await this.registry.byName(deviceName);
    if (!device) return undefined;
    const { rows } = await this.pool.query<{ owner: string }>('DELETE FROM device_owners WHERE device_id = $1 RETURNING owner', [device.id]);
    await this.pool.query('DELETE FROM device_claim_requests WHERE device_id = $1', [device.id]);
    this.setOwner(device.id, undefined);
    return { device, previousOwner: rows[0]?.owner ?? null };
  }

  private async reload(): Promise<void> {
    const { rows } = await this.pool.query<{ device_id: number; owner: string }>('SELECT device_id, owner FROM device_owners');
    const next = new Map(rows.map((r) => [r.device_id, r.owner]));
    if (next.size === this.owners.size && [...next].every(([id, owner]) => this.owners.get(id) === owner)) return;
    this.owners = next;
    this.index();
  }

  private setOwner(deviceId: number, owner: string | undefined): void {
    if (this.owners.get(deviceId) === owner) return;
    if (owner === undefined) this.owners.delete(deviceId);
    else this.owners.set(deviceId, owner);
    this.index();
  }

  private index(): void {
    this.byOwner = new Map();
    for (const [id, owner] of this.owners) {
      let set = this.byOwner.get(owner);
      if (!set) this.byOwner.set(owner, (set = new Set()));
      set.add(id);
    }
    for (const l of this.listeners) l();
  }
}
