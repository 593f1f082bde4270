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
  type: string;
  domain: Domain;
  location: Location | null;
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
  type: string;
  lat: number | null;
  lng: number | null;
  alt: number | null;
  cell: string | null;
  token_hash: string;
  created_at: Date;
  updated_at: Date;
}

const DEVICE_COLUMNS = 'id, name, type, lat, lng, alt, cell, token_hash, created_at, updated_at';
const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

export type RegistryEvent = { kind: 'created'; device: Device };

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

  async create(input: { name: string; type: string; location?: Location | null }): Promise<{ device: Device; accessToken: string }> {
    const type = this.types.get(input.type);
    if (!type) throw new RegistryError('invalid', `unknown device type "${input.type}"; known: ${[...this.types.keys()].join(', ')}`);
    const loc = input.location ?? null;
    for (let attempt = 0; ; attempt++) {
      const accessToken = generateToken();
      try {
        const { rows } = await this.pool.query<DeviceRow>(
          `INSERT INTO devices (name, type, lat, lng, alt, cell, token_lookup, token_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${DEVICE_COLUMNS}`,
          [
            input.name,
            type.name,
            loc?.lat ?? null,
            loc?.lng ?? null,
            loc?.alt ?? null,
            loc ? storageCell(loc.lat, loc.lng).toString() : null,
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
        if (e.code === '23505' && e.constraint === 'devices_token_lookup_key' && attempt < 3) continue;
        throw err;
      }
    }
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

  private async row(id: number): Promise<DeviceRow | undefined> {
    const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE id = $1`, [id]);
    return rows[0];
  }

  private toContext(row: DeviceRow): DeviceContext {
    const type = this.types.get(row.type);
    if (!type) throw new Error(`device ${row.id} has unknown type ${row.type}`);
    return { id: row.id, name: row.name, type, lat: row.lat, lng: row.lng, alt: row.alt, cell: row.cell === null ? null : BigInt(row.cell) };
  }

  private toDevice(row: DeviceRow): Device {
    const location: Location | null = row.lat === null || row.lng === null ? null : { lat: row.lat, lng: row.lng };
    if (location && row.alt !== null) location.alt = row.alt;
    return {
      id: row.id,
      name: row.name,
      type: row.type,
      domain: this.types.get(row.type)?.domain ?? 'generic',
      location,
      createdAt: row.created_at.toISOString(),
      updatedAt: row.updated_at.toISOString(),
    };
  }
}
