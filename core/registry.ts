import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { BUILTIN_DEVICE_TYPES, POSITION_KEYS, type DeviceType, type DeviceTypeDefinition } from './device-types.ts';
import type { Domain } from './domains.ts';
import { generateToken, hashSecret, hashSecrets, legacyTokenLookup, tokenLookup, verifySecret } from './credentials.ts';
import { NegativeCache, noAuthWork, type Admission, type AuthWorkCounters } from './auth-throttle.ts';
import { storageCell } from '../geo/cell.ts';
import { readingsTable } from '../db/readings-tables.ts';

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
    readonly code: 'not_found' | 'conflict' | 'invalid' | 'read_only',
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

/** A custom device type was created or replaced (`saved`) or deleted. */
export type DeviceTypeEvent = { kind: 'saved'; type: DeviceType; previous: DeviceType | undefined } | { kind: 'deleted'; type: DeviceType };

/** Why a device's credentials were refused (guanlink_auth_failures_total{reason}). */
export type DeviceAuthFailure = 'malformed' | 'unknown_token' | 'unknown_username' | 'wrong_password' | 'wrong_client_id' | 'unknown_client_id';

/** A device's credentials checked: the device, or why not; `throttled`: refused unchecked (the admit gate said no). */
export type DeviceAuthOutcome =
  | { ok: true; device: DeviceContext }
  | { ok: false; reason: DeviceAuthFailure }
  | { ok: false; reason: 'throttled'; admission: Extract<Admission, { ok: false }> };

export interface DeviceAuthOptions {
  /**
   * Asked before a credential this node has not verified yet is looked up (a database query and a
   * scrypt hash): a refusal is answered `throttled` at once. Credentials verified before skip it.
   */
  admit?: () => Admission;
}

export interface RegistryOptions {
  /** Counts credential lookups and hash checks (guanlink_auth_lookups_total, guanlink_auth_hash_checks_total). */
  work?: AuthWorkCounters;
  /** How long an unknown token, username or client id is answered from memory (0: never). */
  negativeCacheMs?: number;
}

/** Filters of the device list and export; all optional, combined with AND. */
export interface DeviceFilter {
  domain?: Domain;
  type?: string;
  namePrefix?: string;
  /** Connected now (device_connectivity.online); a device that never connected is offline. */
  online?: boolean;
  /** Registered location within [minLng, minLat, maxLng, maxLat], edges included. */
  bbox?: readonly [number, number, number, number];
  /** Only these devices (a principal's scope: core/access/access.ts visibleDevices). */
  ids?: readonly number[];
}

/** What a bulk import does with one entry (see importDevices). */
export type ImportOutcome =
  | { status: 'created'; device: Device; accessToken: string }
  | { status: 'updated' | 'unchanged'; device: Device }
  | { status: 'error'; error: string };

/** New devices of an import written per statement (and hashed while the previous batch is written). */
const IMPORT_BATCH = 500;
const QUALIFIED_COLUMNS = DEVICE_COLUMNS.split(', ')
  .map((c) => `d.${c}`)
  .join(', ');
const escapeLike = (s: string): string => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/** What a custom type's declaration must satisfy beyond its schema. */
function checkDefinition(definition: DeviceTypeDefinition): void {
  for (const [key, spec] of Object.entries(definition.keys)) {
    if (Object.hasOwn(POSITION_KEYS, key)) {
      throw new RegistryError('invalid', `keys.${key}: latitude, longitude and altitude are not declared; every device may send its position`);
    }
    // The rules ingest applies to key names (ingest/validate.ts).
    // eslint-disable-next-line no-control-regex
    if (key.length === 0 || key.length > 100 || /[\u0000-\u001f\u007f]/.test(key) || !key.isWellFormed()) {
      throw new RegistryError('invalid', `keys: "${key}" is not a valid telemetry key name (1 to 100 characters, no control characters)`);
    }
    if ((spec.type ?? 'number') !== 'number' && (spec.min !== undefined || spec.max !== undefined || spec.unit !== undefined)) {
      throw new RegistryError('invalid', `keys.${key}: min, max and unit apply to numbers only, not to a ${spec.type} key`);
    }
    if (spec.min !== undefined && spec.max !== undefined && spec.min > spec.max) {
      throw new RegistryError('invalid', `keys.${key}: min ${spec.min} is greater than max ${spec.max}`);
    }
  }
}

/** Whether an import entry describes the device as it is (credentials and gateway aside). */
function sameDescription(row: DeviceRow, input: Omit<DeviceInput, 'gatewayId'>): boolean {
  const loc = input.location ?? null;
  return (
    row.type === input.type &&
    row.label === (input.label ?? null) &&
    row.is_gateway === (input.isGateway ?? false) &&
    row.lat === (loc?.lat ?? null) &&
    row.lng === (loc?.lng ?? null) &&
    row.alt === (loc?.alt ?? null)
  );
}

/** Import entries as column arrays for unnest(). */
function columnsOf(inputs: Omit<DeviceInput, 'gatewayId'>[]) {
  return {
    name: inputs.map((d) => d.name),
    label: inputs.map((d) => d.label ?? null),
    type: inputs.map((d) => d.type),
    lat: inputs.map((d) => d.location?.lat ?? null),
    lng: inputs.map((d) => d.location?.lng ?? null),
    alt: inputs.map((d) => d.location?.alt ?? null),
    cell: inputs.map((d) => (d.location ? storageCell(d.location.lat, d.location.lng).toString() : null)),
    isGateway: inputs.map((d) => d.isGateway ?? false),
  };
}

/** device_types.definition: the declaration without its name and domain (columns of their own). */
const storedDefinition = ({ label, moving, acceptsUndeclaredKeys, keys }: DeviceTypeDefinition): string => JSON.stringify({ label, moving, acceptsUndeclaredKeys, keys });

/** Device types and devices: creation, lookup, and authentication of access tokens. */
export class DeviceRegistry {
  private types = new Map<string, DeviceType>();
  private listeners: ((event: RegistryEvent) => void)[] = [];
  private typeListeners: ((event: DeviceTypeEvent) => Promise<void> | void)[] = [];
  /**
   * Credentials that passed scrypt (`t:` token lookup, `u:` username, `c:` client id used alone) →
   * (SHA-256 of the secret, device id, the stored hash or client id it was proved against):
   * reconnects skip the slow hash and the throttle's gate while the device's row still holds it
   * (a change made on another node is seen too).
   */
  private verified = new Map<string, { digest: Buffer; deviceId: number; proof: string }>();
  /** Tokens (`t:` lookup), usernames (`u:`) and client ids (`c:`) that matched no device a moment ago. */
  private readonly unknown: NegativeCache;
  private readonly work: AuthWorkCounters;
  /** The HMAC key of token lookups (platform_secrets), loaded by init(). */
  private lookupKey: Buffer | undefined;

  constructor(
    private readonly pool: pg.Pool,
    options: RegistryOptions = {},
  ) {
    this.work = options.work ?? noAuthWork;
    this.unknown = new NegativeCache(options.negativeCacheMs ?? 30_000);
  }

  /** Saves the built-in device types (code is their source of truth), loads all types and the token lookup key. */
  async init(): Promise<void> {
    this.lookupKey = await loadSecret(this.pool, 'token_lookup');
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

  /**
   * Told of each change to a custom device type, and awaited before the change takes effect here
   * (before deviceType() and newly connecting devices see it): the key dictionary learns the
   * declared keys first, and connected devices' contexts are refreshed.
   */
  onTypeChange(listener: (event: DeviceTypeEvent) => Promise<void> | void): void {
    this.typeListeners.push(listener);
  }

  /** Creates a custom device type. */
  async createType(type: DeviceType): Promise<DeviceType> {
    const { name, builtin: _builtin, ...definition } = type;
    checkDefinition(definition);
    if (this.types.has(name)) throw new RegistryError('conflict', `device type "${name}" already exists`);
    try {
      await this.pool.query('INSERT INTO device_types (name, domain, definition, builtin) VALUES ($1, $2, $3, false)', [
        name,
        definition.domain,
        storedDefinition(definition),
      ]);
    } catch (err) {
      if ((err as { code?: string }).code === '23505') throw new RegistryError('conflict', `device type "${name}" already exists`);
      throw err;
    }
    return this.typeSaved({ name, ...definition, builtin: false }, undefined);
  }

  /**
   * Replaces a custom type's declaration; ingest checks its devices against it from their next
   * message. Its domain may change only while no device has the type (readings are stored per domain).
   */
  async updateType(name: string, definition: DeviceTypeDefinition): Promise<DeviceType> {
    const previous = this.customType(name);
    checkDefinition(definition);
    if (definition.domain !== previous.domain) {
      const n = await this.countOfType(name);
      if (n > 0) {
        throw new RegistryError('conflict', `device type "${name}" has ${n} device(s): its domain cannot change from ${previous.domain} to ${definition.domain} (readings are stored per domain)`);
      }
    }
    const { rowCount } = await this.pool.query(
      `UPDATE device_types SET domain = $2, definition = $3, updated_at = now()
        WHERE name = $1 AND NOT builtin AND (domain = $2 OR NOT EXISTS (SELECT 1 FROM devices WHERE type = $1))`,
      [name, definition.domain, storedDefinition(definition)],
    );
    if (rowCount === 0) throw new RegistryError('conflict', `device type "${name}" changed meanwhile (deleted, or a device now has it); try again`);
    return this.typeSaved({ name, ...definition, builtin: false }, previous);
  }

  /** Deletes a custom type that no device has. */
  async deleteType(name: string): Promise<DeviceType> {
    const type = this.customType(name);
    const n = await this.countOfType(name);
    if (n > 0) throw new RegistryError('conflict', `device type "${name}" is used by ${n} device(s); delete them or change their type first`);
    try {
      await this.pool.query('DELETE FROM device_types WHERE name = $1 AND NOT builtin', [name]);
    } catch (err) {
      if ((err as { code?: string }).code === '23503') throw new RegistryError('conflict', `device type "${name}" is used by a device created meanwhile`);
      throw err;
    }
    this.types.delete(name);
    for (const listener of this.typeListeners) await listener({ kind: 'deleted', type });
    return type;
  }

  /** Ids of the devices of a type (to refresh connected ones when it changes). */
  async deviceIdsOfType(name: string): Promise<number[]> {
    const { rows } = await this.pool.query<{ id: number }>('SELECT id FROM devices WHERE type = $1', [name]);
    return rows.map((r) => r.id);
  }

  private customType(name: string): DeviceType {
    const type = this.types.get(name);
    if (!type) throw new RegistryError('not_found', `no device type "${name}"`);
    if (type.builtin) throw new RegistryError('read_only', `device type "${name}" is built in and read-only; create a custom type instead`);
    return type;
  }

  private async countOfType(name: string): Promise<number> {
    const { rows } = await this.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM devices WHERE type = $1', [name]);
    return rows[0]!.n;
  }

  /** Tells the type listeners (awaited), then makes the new declaration current here. */
  private async typeSaved(type: DeviceType, previous: DeviceType | undefined): Promise<DeviceType> {
    try {
      for (const listener of this.typeListeners) await listener({ kind: 'saved', type, previous });
    } finally {
      this.types.set(type.name, type);
    }
    return type;
  }

  /** Registers a device with a new random access token, or with `options.accessToken` (device provisioning: a token the device chose). */
  async create(input: DeviceInput, options: { accessToken?: string } = {}): Promise<{ device: Device; accessToken: string }> {
    const type = this.requireType(input.type);
    if (options.accessToken !== undefined && (await this.takenByLegacyRow(options.accessToken))) throw new RegistryError('conflict', 'that access token is taken');
    for (let attempt = 0; ; attempt++) {
      const accessToken = options.accessToken ?? generateToken();
      const lookup = this.lookup(accessToken);
      try {
        const { rows } = await this.pool.query<DeviceRow>(
          `INSERT INTO devices (name, label, type, lat, lng, alt, cell, is_gateway, gateway_id, token_lookup, token_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING ${DEVICE_COLUMNS}`,
          [...descriptionValues(input, type), lookup, await hashSecret(accessToken)],
        );
        this.unknown.forget(`t:${lookup}`);
        const device = this.toDevice(rows[0]!);
        this.emit({ kind: 'created', device });
        return { device, accessToken };
      } catch (err) {
        throwDescriptionConflict(err, input);
        const e = err as { code?: string; constraint?: string };
        if (e.code === '23505' && e.constraint === 'devices_token_lookup_key' && options.accessToken !== undefined) throw new RegistryError('conflict', 'that access token is taken');
        if (e.code === '23505' && e.constraint === 'devices_token_lookup_key' && attempt < 3) continue;
        throw err;
      }
    }
  }

  /** Replaces the device's description (name, label, type, location, gateway flag); its credentials are kept. */
  async update(id: number, input: DeviceInput): Promise<Device> {
    const type = this.requireType(input.type);
    const current = await this.row(id);
    if (current) await this.checkDomainKept(current, type);
    try {
      const { rows } = await this.pool.query<DeviceRow>(
        `UPDATE devices SET name = $2, label = $3, type = $4, lat = $5, lng = $6, alt = $7, cell = $8, is_gateway = $9,
                gateway_id = $10, updated_at = now()
          WHERE id = $1 RETURNING ${DEVICE_COLUMNS}`,
        [id, ...descriptionValues(input, type)],
      );
      if (!rows[0]) throw new RegistryError('not_found', `no device ${id}`);
      const device = this.toDevice(rows[0]);
      this.emit({ kind: 'updated', device });
      return device;
    } catch (err) {
      throwDescriptionConflict(err, input);
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
  async rotateToken(id: number, chosen?: string): Promise<{ device: Device; accessToken: string }> {
    if (chosen !== undefined && (await this.takenByLegacyRow(chosen, id))) throw new RegistryError('conflict', 'that access token is taken');
    for (let attempt = 0; ; attempt++) {
      const accessToken = chosen ?? generateToken();
      const lookup = this.lookup(accessToken);
      try {
        const { rows } = await this.pool.query<DeviceRow>(
          `UPDATE devices SET token_lookup = $2, token_hash = $3, updated_at = now() WHERE id = $1 RETURNING ${DEVICE_COLUMNS}`,
          [id, lookup, await hashSecret(accessToken)],
        );
        if (!rows[0]) throw new RegistryError('not_found', `no device ${id}`);
        this.forget(id);
        this.unknown.forget(`t:${lookup}`);
        const device = this.toDevice(rows[0]);
        this.emit({ kind: 'credentials', device });
        return { device, accessToken };
      } catch (err) {
        const e = err as { code?: string; constraint?: string };
        if (e.code === '23505' && e.constraint === 'devices_token_lookup_key' && chosen !== undefined) throw new RegistryError('conflict', 'that access token is taken');
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
      this.forget(id);
      if (username !== null) this.unknown.forget(`u:${username}`);
      if (clientId !== null) this.unknown.forget(`c:${clientId}`);
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

  /** Devices in id order, `limit` at a time after `afterId` (cursor pagination), optionally filtered. */
  async list(options: DeviceFilter & { limit: number; afterId?: number }): Promise<Device[]> {
    const params: unknown[] = [options.afterId ?? 0, options.limit];
    const param = (value: unknown): string => `$${params.push(value)}`;
    const where = ['d.id > $1'];
    if (options.domain !== undefined) where.push(`d.type IN (SELECT name FROM device_types WHERE domain = ${param(options.domain)})`);
    if (options.type !== undefined) where.push(`d.type = ${param(options.type)}`);
    if (options.ids !== undefined) where.push(`d.id = ANY (${param(options.ids)}::int4[])`);
    // LIKE 'prefix%' uses the text_pattern_ops index on name.
    if (options.namePrefix) where.push(`d.name LIKE ${param(`${escapeLike(options.namePrefix)}%`)}`);
    if (options.online !== undefined) {
      where.push(`${options.online ? '' : 'NOT '}EXISTS (SELECT 1 FROM device_connectivity c WHERE c.device_id = d.id AND c.online)`);
    }
    if (options.bbox) {
      const [minLng, minLat, maxLng, maxLat] = options.bbox;
      where.push(`d.lat BETWEEN ${param(minLat)} AND ${param(maxLat)} AND d.lng BETWEEN ${param(minLng)} AND ${param(maxLng)}`);
    }
    const { rows } = await this.pool.query<DeviceRow>(
      `SELECT ${QUALIFIED_COLUMNS} FROM devices d WHERE ${where.join(' AND ')} ORDER BY d.id LIMIT $2`,
      params,
    );
    return rows.map((r) => this.toDevice(r));
  }

  /**
   * Creates or updates devices by name: importing the same entries twice changes nothing the
   * second time. An existing device is updated when its label, type, location or gateway flag
   * differ (its credentials and gateway are kept); an entry that cannot be applied gets an error
   * and the others are applied anyway. New devices' tokens are hashed concurrently (hashSecrets)
   * while the previous batch is written, one statement per batch.
   */
  async importDevices(inputs: readonly Omit<DeviceInput, 'gatewayId'>[]): Promise<ImportOutcome[]> {
    const outcomes: ImportOutcome[] = new Array(inputs.length);
    const firstOfName = new Map<string, number>();
    inputs.forEach((input, i) => {
      const earlier = firstOfName.get(input.name);
      if (!this.types.has(input.type)) outcomes[i] = { status: 'error', error: `unknown device type "${input.type}"` };
      else if (earlier !== undefined) outcomes[i] = { status: 'error', error: `"${input.name}" appears earlier in this import (entry ${earlier + 1})` };
      else firstOfName.set(input.name, i);
    });

    const existing = new Map<string, DeviceRow>();
    const names = [...firstOfName.keys()];
    for (let i = 0; i < names.length; i += 10_000) {
      const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE name = ANY($1::text[])`, [names.slice(i, i + 10_000)]);
      for (const row of rows) existing.set(row.name, row);
    }
    const changed: number[] = [];
    const fresh: number[] = [];
    for (const [name, i] of firstOfName) {
      const row = existing.get(name);
      if (!row) fresh.push(i);
      else if (sameDescription(row, inputs[i]!)) outcomes[i] = { status: 'unchanged', device: this.toDevice(row) };
      else changed.push(i);
    }

    const blocked = await this.domainChangesRefused(changed.map((i) => [existing.get(inputs[i]!.name)!, this.types.get(inputs[i]!.type)!]));
    const updates = changed.filter((i) => {
      const refusal = blocked.get(existing.get(inputs[i]!.name)!.id);
      if (refusal) outcomes[i] = { status: 'error', error: refusal };
      return !refusal;
    });
    // A batch the database refuses is reported row by row; the report still carries the tokens of
    // the devices created before it (they would be lost with a 500).
    const failed = (batch: number[]) => (err: Error) => {
      for (const i of batch) outcomes[i] = { status: 'error', error: `not imported: database error (${err.message}); import again` };
    };
    for (let b = 0; b < updates.length; b += IMPORT_BATCH) {
      const batch = updates.slice(b, b + IMPORT_BATCH);
      await this.importUpdates(batch, inputs, existing, outcomes).catch(failed(batch));
    }
    // Hash batch k+1 while batch k is written.
    let writing = Promise.resolve();
    for (let b = 0; b < fresh.length; b += IMPORT_BATCH) {
      const batch = fresh.slice(b, b + IMPORT_BATCH);
      const tokens = batch.map(() => generateToken());
      const hashes = await hashSecrets(tokens);
      await writing;
      writing = this.importCreates(batch, inputs, tokens, hashes, outcomes).catch(failed(batch));
    }
    await writing;
    return outcomes;
  }

  private async importUpdates(
    batch: number[],
    inputs: readonly Omit<DeviceInput, 'gatewayId'>[],
    existing: Map<string, DeviceRow>,
    outcomes: ImportOutcome[],
  ): Promise<void> {
    const cols = columnsOf(batch.map((i) => inputs[i]!));
    const { rows } = await this.pool.query<DeviceRow>(
      `UPDATE devices d SET label = u.label, type = u.type, lat = u.lat, lng = u.lng, alt = u.alt, cell = u.cell, is_gateway = u.is_gateway, updated_at = now()
         FROM unnest($1::int[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::bigint[], $8::bool[])
              AS u (id, label, type, lat, lng, alt, cell, is_gateway)
        WHERE d.id = u.id RETURNING ${QUALIFIED_COLUMNS}`,
      [batch.map((i) => existing.get(inputs[i]!.name)!.id), cols.label, cols.type, cols.lat, cols.lng, cols.alt, cols.cell, cols.isGateway],
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const i of batch) {
      const row = byId.get(existing.get(inputs[i]!.name)!.id);
      if (!row) {
        outcomes[i] = { status: 'error', error: 'the device was deleted during the import' };
        continue;
      }
      const device = this.toDevice(row);
      outcomes[i] = { status: 'updated', device };
      this.emit({ kind: 'updated', device });
    }
  }

  private async importCreates(
    batch: number[],
    inputs: readonly Omit<DeviceInput, 'gatewayId'>[],
    tokens: string[],
    hashes: string[],
    outcomes: ImportOutcome[],
  ): Promise<void> {
    const cols = columnsOf(batch.map((i) => inputs[i]!));
    let rows: DeviceRow[];
    for (let attempt = 0; ; attempt++) {
      try {
        ({ rows } = await this.pool.query<DeviceRow>(
          `INSERT INTO devices (name, label, type, lat, lng, alt, cell, is_gateway, token_lookup, token_hash)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::bigint[], $8::bool[], $9::text[], $10::text[])
           ON CONFLICT (name) DO NOTHING RETURNING ${DEVICE_COLUMNS}`,
          [cols.name, cols.label, cols.type, cols.lat, cols.lng, cols.alt, cols.cell, cols.isGateway, tokens.map((t) => this.lookup(t)), hashes],
        ));
        for (const t of tokens) this.unknown.forget(`t:${this.lookup(t)}`);
        break;
      } catch (err) {
        const e = err as { code?: string; constraint?: string };
        // Two tokens with the same lookup: new tokens for the batch.
        if (!(e.code === '23505' && e.constraint === 'devices_token_lookup_key' && attempt < 3)) throw err;
        tokens = batch.map(() => generateToken());
        hashes = await hashSecrets(tokens);
      }
    }
    const byName = new Map(rows.map((r) => [r.name, r]));
    batch.forEach((i, k) => {
      const row = byName.get(inputs[i]!.name);
      if (!row) {
        outcomes[i] = { status: 'error', error: 'a device of this name was created by another request during the import; import again to update it' };
        return;
      }
      const device = this.toDevice(row);
      outcomes[i] = { status: 'created', device, accessToken: tokens[k]! };
      this.emit({ kind: 'created', device });
    });
  }

  /**
   * Readings are stored per domain and read by the device's current one: a device with readings
   * may not change to a type of another domain (its history would vanish from its queries).
   * Answers the refused device ids with the reason.
   */
  private async domainChangesRefused(changes: [DeviceRow, DeviceType][]): Promise<Map<number, string>> {
    const refused = new Map<number, string>();
    const byDomain = new Map<Domain, [DeviceRow, DeviceType][]>();
    for (const change of changes) {
      const from = this.types.get(change[0].type)?.domain;
      if (!from || from === change[1].domain) continue;
      const moves = byDomain.get(from);
      if (moves) moves.push(change);
      else byDomain.set(from, [change]);
    }
    for (const [domain, moves] of byDomain) {
      const { rows } = await this.pool.query<{ id: number }>(
        `SELECT u.id FROM unnest($1::int[]) AS u (id) WHERE EXISTS (SELECT 1 FROM ${readingsTable(domain)} r WHERE r.device_id = u.id)`,
        [moves.map(([row]) => row.id)],
      );
      const withReadings = new Set(rows.map((r) => r.id));
      for (const [row, type] of moves) {
        if (withReadings.has(row.id)) {
          refused.set(
            row.id,
            `device ${row.name} has readings in domain ${domain}: its type cannot change to ${type.name} (domain ${type.domain}), readings are kept per domain; register a new device instead`,
          );
        }
      }
    }
    return refused;
  }

  private async checkDomainKept(row: DeviceRow, type: DeviceType): Promise<void> {
    const refusal = (await this.domainChangesRefused([[row, type]])).get(row.id);
    if (refusal) throw new RegistryError('conflict', refusal);
  }

  async context(id: number): Promise<DeviceContext | undefined> {
    const row = await this.row(id);
    return row && this.toContext(row);
  }

  /**
   * The device an access token belongs to, or why not. A token verified before is recognised in
   * memory; any other is first put to `options.admit`, then answered from the negative cache or
   * looked up (one query) and proved with scrypt. A row written before keyed lookups (migration
   * 015) is found by its legacy SHA-256 prefix and given the keyed lookup once the token is proved.
   */
  async authenticate(token: string, options: DeviceAuthOptions = {}): Promise<DeviceAuthOutcome> {
    if (token.length === 0 || token.length > 256) return { ok: false, reason: 'malformed' };
    const lookup = this.lookup(token);
    const known = await this.recognised(`t:${lookup}`, sha256(token), (row) => row.token_hash);
    if (known !== undefined) return known ? { ok: true, device: this.toContext(known) } : { ok: false, reason: 'unknown_token' };
    const admission = options.admit?.();
    if (admission && !admission.ok) return { ok: false, reason: 'throttled', admission };
    if (this.unknown.has(`t:${lookup}`)) return { ok: false, reason: 'unknown_token' };
    this.work.lookup('devices');
    const { rows } = await this.pool.query<DeviceRow & { token_lookup: string }>(`SELECT ${DEVICE_COLUMNS}, token_lookup FROM devices WHERE token_lookup = ANY ($1::text[])`, [
      [lookup, legacyTokenLookup(token)],
    ]);
    if (rows.length === 0) {
      this.unknown.add(`t:${lookup}`);
      return { ok: false, reason: 'unknown_token' };
    }
    for (const row of rows) {
      this.work.hashCheck('devices');
      if (!(await verifySecret(token, row.token_hash))) continue;
      if (row.token_lookup !== lookup) {
        // A legacy lookup: rewritten now that the token is proved (unless the token changed meanwhile).
        await this.pool.query('UPDATE devices SET token_lookup = $2 WHERE id = $1 AND token_lookup = $3', [row.id, lookup, row.token_lookup]).catch(() => {});
      }
      this.verified.set(`t:${lookup}`, { digest: sha256(token), deviceId: row.id, proof: row.token_hash });
      return { ok: true, device: this.toContext(row) };
    }
    return { ok: false, reason: 'unknown_token' };
  }

  /**
   * The device MQTT basic credentials identify (ThingsBoard's schemes): a username and password
   * (the stored client id, if any, must match too), or a client id alone. Verified credentials,
   * `options.admit` and the negative cache as for tokens.
   */
  async authenticateBasic(clientId: string, username: string | undefined, password: string | undefined, options: DeviceAuthOptions = {}): Promise<DeviceAuthOutcome> {
    if (username) {
      if (password === undefined || username.length > 256 || password.length > 256) return { ok: false, reason: 'malformed' };
      const clientMatches = (row: DeviceRow): DeviceAuthOutcome =>
        row.mqtt_client_id !== null && row.mqtt_client_id !== clientId ? { ok: false, reason: 'wrong_client_id' } : { ok: true, device: this.toContext(row) };
      const known = await this.recognised(`u:${username}`, sha256(password), (row) => (row.mqtt_username === username ? row.mqtt_password_hash : null));
      if (known !== undefined) return known ? clientMatches(known) : { ok: false, reason: 'unknown_username' };
      const admission = options.admit?.();
      if (admission && !admission.ok) return { ok: false, reason: 'throttled', admission };
      if (this.unknown.has(`u:${username}`)) return { ok: false, reason: 'unknown_username' };
      this.work.lookup('devices');
      const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE mqtt_username = $1`, [username]);
      const row = rows[0];
      if (!row || !row.mqtt_password_hash) {
        if (!row) this.unknown.add(`u:${username}`);
        return { ok: false, reason: 'unknown_username' };
      }
      this.work.hashCheck('devices');
      if (!(await verifySecret(password, row.mqtt_password_hash))) return { ok: false, reason: 'wrong_password' };
      this.verified.set(`u:${username}`, { digest: sha256(password), deviceId: row.id, proof: row.mqtt_password_hash });
      return clientMatches(row);
    }
    if (!clientId || clientId.length > 256) return { ok: false, reason: 'unknown_client_id' };
    const known = await this.recognised(`c:${clientId}`, sha256(clientId), (row) => (row.mqtt_username === null ? row.mqtt_client_id : null));
    if (known !== undefined) return known ? { ok: true, device: this.toContext(known) } : { ok: false, reason: 'unknown_client_id' };
    const admission = options.admit?.();
    if (admission && !admission.ok) return { ok: false, reason: 'throttled', admission };
    if (this.unknown.has(`c:${clientId}`)) return { ok: false, reason: 'unknown_client_id' };
    this.work.lookup('devices');
    const { rows } = await this.pool.query<DeviceRow>(`SELECT ${DEVICE_COLUMNS} FROM devices WHERE mqtt_client_id = $1 AND mqtt_username IS NULL`, [clientId]);
    if (!rows[0]) {
      this.unknown.add(`c:${clientId}`);
      return { ok: false, reason: 'unknown_client_id' };
    }
    this.verified.set(`c:${clientId}`, { digest: sha256(clientId), deviceId: rows[0].id, proof: clientId });
    return { ok: true, device: this.toContext(rows[0]) };
  }

  /**
   * A credential verified before (same secret digest): its device's current row (undefined when
   * the credential is not known here; null when its device is gone or no longer holds what it was
   * proved against: `proof` reads that from the row).
   */
  private async recognised(key: string, digest: Buffer, proof: (row: DeviceRow) => string | null): Promise<DeviceRow | null | undefined> {
    const cached = this.verified.get(key);
    if (!cached || !timingSafeEqual(cached.digest, digest)) return undefined;
    this.work.lookup('devices');
    const row = await this.row(cached.deviceId);
    if (row && proof(row) === cached.proof) return row;
    this.verified.delete(key);
    return null;
  }

  /** The keyed lookup of a token (init() loads the key). */
  private lookup(token: string): string {
    if (!this.lookupKey) throw new Error('DeviceRegistry.init() must run first: the token lookup key is not loaded');
    return tokenLookup(this.lookupKey, token);
  }

  /** Whether a device other than `exceptId` still has this token under its legacy lookup (a chosen token must be unique). */
  private async takenByLegacyRow(token: string, exceptId?: number): Promise<boolean> {
    const { rows } = await this.pool.query<{ id: number }>('SELECT id FROM devices WHERE token_lookup = $1', [legacyTokenLookup(token)]);
    return rows.some((r) => r.id !== exceptId);
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

  /** Drops cached verifications of a device's credentials (they changed or it is gone). */
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

/** Values of a device's description columns: name, label, type, lat, lng, alt, cell, is_gateway, gateway_id. */
function descriptionValues(input: DeviceInput, type: DeviceType): unknown[] {
  const loc = input.location ?? null;
  return [
    input.name,
    input.label ?? null,
    type.name,
    loc?.lat ?? null,
    loc?.lng ?? null,
    loc?.alt ?? null,
    loc ? storageCell(loc.lat, loc.lng).toString() : null,
    input.isGateway ?? false,
    input.gatewayId ?? null,
  ];
}

/** A taken name or a missing gateway, as the registry's own error; anything else returns. */
function throwDescriptionConflict(err: unknown, input: DeviceInput): void {
  const e = err as { code?: string; constraint?: string };
  if (e.code === '23505' && e.constraint === 'devices_name_key') throw new RegistryError('conflict', `a device named "${input.name}" already exists`);
  if (e.code === '23503') throw new RegistryError('invalid', `gateway ${input.gatewayId} does not exist`);
}

/**
 * A server secret shared by every node (table platform_secrets): created by the first node to
 * start (INSERT … ON CONFLICT DO NOTHING: nodes starting together agree on one), then read.
 */
async function loadSecret(pool: pg.Pool, name: string): Promise<Buffer> {
  await pool.query('INSERT INTO platform_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [name, randomBytes(32)]);
  const { rows } = await pool.query<{ value: Buffer }>('SELECT value FROM platform_secrets WHERE name = $1', [name]);
  return rows[0]!.value;
}
