import { createHash, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { BUILTIN_DEVICE_TYPES, type DeviceType } from './device-types.ts';
import type { Domain } from './domains.ts';
import { generateToken, hashSecret, tokenLookup, verifySecret } from './credentials.ts';
import { storageCell } from '../geo/cell.ts';

export interface Location {
  lat: number;
  lng: number;
  alt?: number;
}

export interface Device {
  id: number;
  name: string;
  label: string | null;
  type: string;
  domain: Domain;
  location: Location | null;
  isGateway: boolean;
  /** The gateway this sub-device belongs to. */
  gatewayId: number | null;
  createdAt: string;
  updatedAt: string;
}

/** What the broker and ingest keep for a connected device. */
export interface DeviceContext {
  id: number;
  name: string;
  type: DeviceType;
  lat: number | null;
  lng: number | null;
  alt: number | null;
  cell: bigint | null;
  isGateway: boolean;
  gatewayId: number | null;
}

/** Fields a device may be created or updated with. */
export interface DeviceInput {
  name: string;
  type: string;
  label?: string | null;
  location?: Location | null;
  isGateway?: boolean;
  gatewayId?: number | null;
}

/** MQTT basic credentials (ThingsBoard's three schemes: client id only; username + password; all three). */
export interface BasicCredentials {
  clientId?: string | null;
  username?: string | null;
  password?: string | null;
}

export class RegistryError extends Error {
  constructor(
    readonly code: 'not_found' | 'conflict' | 'invalid',
    message: string,
  ) {
    super(message);
  }
}

interface DeviceRow {
  id: number;
  name: string;
  label: string | null;
  type: string;
  lat: number | null;
  lng: number | null;
  alt: number | null;
  cell: string | null;
  is_gateway: boolean;
  gateway_id: number | null;
  token_hash: string;
  mqtt_client_id: string | null;
  mqtt_username: string | null;
  mqtt_password_hash: string | null;
  created_at: Date;
  updated_at: Date;
}

const DEVICE_COLUMNS =
  'id, name, label, type, lat, lng, alt, cell, is_gateway, gateway_id, token_hash, mqtt_client_id, mqtt_username, mqtt_password_hash, created_at, updated_at';
const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * Changes to the registry, for whoever must follow them: the broker drops a deleted device's
 * session or one whose credentials changed, and refreshes a connected device's context on update.
 */
export type RegistryEvent =
  | { kind: 'created'; device: Device }
  | { kind: 'updated'; device: Device }
  | { kind: 'deleted'; device: Device }
  | { kind: 'credentials'; device: Device };

/** Device types and devices: creation, lookup, and authentication of access tokens. */
export class DeviceRegistry {
  private types = new Map<string, DeviceType>();
  private listeners: ((event: RegistryEvent) => void)[] = [];
  /** token lookup → (SHA-256 of a token that passed scrypt, device id): reconnects skip the slow hash. */
  private verified = new Map<string, { digest: Buffer; deviceId: number }>();

  constructor(private readonly pool: pg.Pool) {}

  /** Saves the built-in device types (code is their source of truth) and loads all types. */
  async init(): Promise<void> {
    for (const t of BUILTIN_DEVICE_TYPES) {
      const { name, domain, ...definition } = t;
      await this.pool.query(
        `INSERT INTO device_types (name, domain, definition, builtin) VALUES ($1, $2, $3, true)
         ON CONFLICT (name) DO UPDATE SET domain = excluded.domain, definition = excluded.definition, builtin = true, updated_at = now()
         WHERE device_types.definition IS DISTINCT FROM excluded.definition OR device_types.domain IS DISTINCT FROM excluded.domain`,
        [name, domain, JSON.stringify(definition)],
      );
    }
    const { rows } = await this.pool.query<{ name: string; domain: Domain; definition: Omit<DeviceType, 'name' | 'domain'>; builtin: boolean }>(
      'SELECT name, domain, definition, builtin FROM device_types',
    );
    this.types = new Map(rows.map((r) => [r.name, { ...r.definition, name: r.name, domain: r.domain, builtin: r.builtin }]));
  }

  /** Called after each change to the registry (the live map shows new devices at once). */
  onChange(listener: (event: RegistryEvent) => void): void {
    this.listeners.push(listener);
  }

  private emit(event: RegistryEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  deviceTypes(): DeviceType[] {
    return [...this.types.values()];
  }

  deviceType(name: string): DeviceType | undefined {
    return this.types.get(name);
  }

  async create(input: DeviceInput): Promise<{ device: Device; accessToken: string }> {
    const type = this.requireType(input.type);
    const loc = input.location ?? null;
    for (let attempt = 0; ; attempt++) {
      const accessToken = generateToken();
      try {
        const { rows } = await this.pool.query<DeviceRow>(
          `INSERT INTO devices (name, label, type, lat, lng, alt, cell, is_gateway, gateway_id, token_lookup, token_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${DEVICE_COLUMNS}`,
          [
            input.name,
            input.label ?? null,
            type.name,
            loc?.lat ?? null,
            loc?.lng ?? null,
            loc?.alt ?? null,
            loc ? storageCell(loc.lat, loc.lng).toString() : null,
            input.isGateway ?? false,
            input.gatewayId ?? null,
            tokenLookup(accessToken),
            await hashSecret(accessToken),
          ],
        );
        const device = this.toDevice(rows[0]!);
        this.emit({ kind: 'created', device });
        return { device, accessToken };
      } catch (err) {
        const e = err as { code?: string; constraint?: string };
        if (e.code === '23505' && e.constraint === 'devices_name_key') {
          throw new RegistryError('conflict', `a device named "${input.name}" already exists`);
        }
        if (e.code === '23503') throw new RegistryError('invalid', `gateway ${input.gatewayId} does not exist`);
        if (e.code === '23505' && e.constraint === 'devices_token_lookup_key' && attempt < 3) continue;
        throw err;
      }
    }
  }

  /** Replaces the device's description (name, label, type, location, gateway flag); its credentials are kept. */
  async update(id: number, input: DeviceInput): Promise<Device> {
    const type = this.requireType(input.type);
    const loc = input.location ?? null;
    try {
      const { rows } = await this.pool.query<DeviceRow>(
        `UPDATE devices SET name = $2, label = $3, type = $4, lat = $5, lng = $6, alt = $7, cell = $8, is_gateway = $9,
                gateway_id = $10, updated_at = now()
          WHERE id = $1 RETURNING ${DEVICE_COLUMNS}`,
        [
          id,
          input.name,
          input.label ?? null,
          type.name,
          loc?.lat ?? null,
          loc?.lng ?? null,
          loc?.alt ?? null,
          loc ? storageCell(loc.lat, loc.lng).toString() : null,
          input.isGateway ?? false,
          input.gatewayId ?? null,
        ],
      );
      if (!rows[0]) throw new RegistryError('not_found', `no device ${id}`);
      const device = this.toDevice(rows[0]);
      this.emit({ kind: 'updated', device });
      return device;
    } catch (err) {
      const e = err as { code?: string; constraint?: string };
      if (e.code === '23505' && e.constraint === 'devices_name_key') throw new RegistryError('conflict', `a device named "${input.name}" already exists`);
      if (e.code === '23503') throw new RegistryError('invalid', `gateway ${input.gatewayId} does not exist`);
      throw err;
    }
  }

  /** Deletes the device and its state; its session (if connected) is closed by the broker at once. */
  async delete(id: number): Promise<Device> {
    const { rows } = await this.pool.query<DeviceRow>(`DELETE FROM devices WHERE id = $1 RETURNING ${DEVICE_COLUMNS}`, [id]);
    if (!rows[0]) throw new RegistryError('not_found', `no device ${id}`);
    this.forget(id);
    const device = this.toDevice(rows[0]);
    this.emit({ kind: 'deleted', device });
    return device;
  }

  /** A new access token (returned once); the old one stops working and the live session is closed. */
  async rotateToken(id: number): Promise<{ device: Device; accessToken: string }> {
    for (let attempt = 0; ; attempt++) {
      const accessToken = generateToken();
      try {
        const { rows } = await this.pool.query<DeviceRow>(
          `UPDATE devices SET token_lookup = $2, token_hash = $3, updated_at = now() WHERE id = $1 RETURNING ${DEVICE_COLUMNS}`,
          [id, tokenLookup(accessToken), await hashSecret(accessToken)],
        );
        if (!rows[0]) throw new RegistryError('not_found', `no device ${id}`);
        this.forget(id);
        const device = this.toDevice(rows[0]);
        this.emit({ kind: 'credentials', device });
        return { device, accessToken };
      } catch (err) {
        const e = err as { code?: string; constraint?: string };
        if (e.code === '23505' && e.constraint === 'devices_token_lookup_key' && attempt < 3) continue;
        throw err;
      }
    }
  }

  /**
   * Sets (or, with all fields null, removes) the device's MQTT basic credentials. Schemes: client id
   * only; username + password (any client id); client id + username + password.
   */
  async setBasicCredentials(id: number, creds: BasicCredentials): Promise<Device> {
    const clientId = creds.clientId || null;
    const username = creds.username || null;
    const password = creds.password || null;
    if ((username === null) !== (password === null)) throw new RegistryError('invalid', 'a username needs a password, and a password a username');
    try {
      const { rows } = await this.pool.query<DeviceRow>(
        `UPDATE devices SET mqtt_client_id = $2, mqtt_username = $3, mqtt_password_hash = $4, updated_at = now() WHERE id = $1 RETURNING ${DEVICE_COLUMNS}`,
        [id, clientId, username, password === null ? null : await hashSecret(password)],
      );
      if (!rows[0]) throw new RegistryError('not_found', `no device ${id}`);
      const device = this.toDevice(rows[0]);
      this.emit({ kind: 'credentials', device });
      return device;
    } catch (err) {
      const e = err as { code?: string; constraint?: string };
      if (e.code === '23505') throw new RegistryError('conflict', e.constraint === 'devices_mqtt_username' ? `username "${username}" is taken` : `client id "${clientId}" is taken`);
      throw err;
    }
  }

  /** Which basic-credential scheme the device has, without the secret (for the REST API). */
  async basicCredentials(id: number): Promise<{ clientId: string | null; username: string | null; hasPassword: boolean } | undefined> {
    const row = await this.row(id);
    return row && { clientId: row.mqtt_client_id, username: row.mqtt_username, hasPassword: row.mqtt_password_hash !== null };
  }

  async get(id: number): Promise<Device | undefined> {
    const row = await this.row(id);
    return row && this.toDevice(row);
  }

  /** Devices in id order, `limit` at a time after `afterId` (cursor pagination). */
  async list(options: { limit: number; afterId?: number }): Promise<Device[]> {
    const { rows } = await this.pool.query<DeviceRow>(
      `SELECT ${DEVICE_COLUMNS} FROM devices WHERE id > $1 ORDER BY id LIMIT $2`,
      [options.afterId ?? 0, options.limit],
    );
    return rows.map((r) => this.toDevice(r));
  }

  async context(id: number): Promise<DeviceContext | undefined> {
    const row = await this.row(id);
    return row && this.toContext(row);
  }

  /** The device an access token belongs to, or undefined. */
  async authenticate(token: string): Promise<DeviceContext | undefined> {
    if (token.length === 0 || token.length > 256) return undefined;
    const lookup = tokenLookup(token);
    const digest = sha256(token);
    const cached = this.verified.get(lookup);
    if (cached && timingSafeEqual(cached.digest, digest)) {
      const row = await this.row(cached.deviceId);
      if (row) return this.toContext(row);
      this.verified.delete(lookup);
      return undefined;
    }
    const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE token_lookup = $1`, [lookup]);
    const row = rows[0];
    if (!row || !(await verifySecret(token, row.token_hash))) return undefined;
    this.verified.set(lookup, { digest, deviceId: row.id });
    return this.toContext(row);
  }

  /**
   * The device MQTT basic credentials identify (ThingsBoard's schemes): a username and password
   * (the stored client id, if any, must match too), or a client id alone.
   */
  async authenticateBasic(clientId: string, username: string | undefined, password: string | undefined): Promise<DeviceContext | undefined> {
    if (username) {
      if (password === undefined || username.length > 256 || password.length > 256) return undefined;
      const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE mqtt_username = $1`, [username]);
      const row = rows[0];
      if (!row || !row.mqtt_password_hash || !(await verifySecret(password, row.mqtt_password_hash))) return undefined;
      if (row.mqtt_client_id !== null && row.mqtt_client_id !== clientId) return undefined;
      return this.toContext(row);
    }
    if (!clientId || clientId.length > 256) return undefined;
    const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE mqtt_client_id = $1 AND mqtt_username IS NULL`, [clientId]);
    return rows[0] && this.toContext(rows[0]);
  }

  /** A device by its (unique) name. */
  async byName(name: string): Promise<Device | undefined> {
    const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE name = $1`, [name]);
    return rows[0] && this.toDevice(rows[0]);
  }

  private requireType(name: string): DeviceType {
    const type = this.types.get(name);
    if (!type) throw new RegistryError('invalid', `unknown device type "${name}"; known: ${[...this.types.keys()].join(', ')}`);
    return type;
  }

  /** Drops cached token verifications of a device (its token changed or it is gone). */
  private forget(id: number): void {
    for (const [lookup, v] of this.verified) if (v.deviceId === id) this.verified.delete(lookup);
  }

  private async row(id: number): Promise<DeviceRow | undefined> {
    const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = $1`, [id]);
    return rows[0];
  }

  private toContext(row: DeviceRow): DeviceContext {
    const type = this.types.get(row.type);
    if (!type) throw new Error(`device ${row.id} has unknown type ${row.type}`);
    return {
      id: row.id,
      name: row.name,
      type,
      lat: row.lat,
      lng: row.lng,
      alt: row.alt,
      cell: row.cell === null ? null : BigInt(row.cell),
      isGateway: row.is_gateway,
      gatewayId: row.gateway_id,
    };
  }

  private toDevice(row: DeviceRow): Device {
    const location: Location | null = row.lat === null || row.lng === null ? null : { lat: row.lat, lng: row.lng };
    if (location && row.alt !== null) location.alt = row.alt;
    return {
      id: row.id,
      name: row.name,
      label: row.label,
      type: row.type,
      domain: this.types.get(row.type)?.domain ?? 'generic',
      location,
      isGateway: row.is_gateway,
      gatewayId: row.gateway_id,
      createdAt: row.created_at.toISOString(),
      updatedAt: row.updated_at.toISOString(),
    };
  }
}
