import { createHash, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';
import { credentialId, describeRefusal, NegativeCache, noAuthWork, type Attempt, type AuthThrottle, type AuthWorkCounters } from './auth-throttle.ts';
import { generateToken, hashSecret, verifySecret } from './credentials.ts';
import type { Logger } from './log.ts';
import { RegistryError, type Device, type DeviceRegistry, type Location } from './registry.ts';

/** Shortest secret a device may choose for itself: a password, or a client id used alone. */
export const MIN_CHOSEN_SECRET_LENGTH = 16;
/**
 * Shortest access token a device may choose. A token is its own lookup (no username to go with
 * it): at least 20 characters, of which at least MIN_CHOSEN_TOKEN_DISTINCT different ones.
 */
export const MIN_CHOSEN_TOKEN_LENGTH = 20;
export const MIN_CHOSEN_TOKEN_DISTINCT = 5;

export interface ProvisionKey {
  id: number;
  /** ThingsBoard's provisionDeviceKey: an identifier shared by a batch of devices. */
  key: string;
  name: string | null;
  /** Devices provisioned with this key get this type. */
  deviceType: string;
  /** true: devices register themselves; false: only devices registered beforehand (same type) claim credentials, once each. */
  allowCreate: boolean;
  /** At most this many devices (null: no limit). */
  maxDevices: number | null;
  devicesProvisioned: number;
  createdAt: string;
  lastUsedAt: string | null;
}

export interface ProvisionKeyInput {
  deviceType: string;
  name?: string | null;
  allowCreate?: boolean;
  maxDevices?: number | null;
}

/** ThingsBoard's provisioning response, field for field (the same over MQTT and HTTP). */
export type ProvisionResponse =
  | { credentialsValue: string; credentialsType: 'ACCESS_TOKEN'; status: 'SUCCESS' }
  | { credentialsValue: { clientId: string | null; userName: string | null; password: string | null }; credentialsType: 'MQTT_BASIC'; status: 'SUCCESS' }
  | { errorMsg: string; status: 'NOT_FOUND' | 'FAILURE' };

export interface ProvisionContext {
  /** The client's address, kept with the record of who provisioned what. */
  address: string | undefined;
  via: 'mqtt' | 'http';
}

export interface ProvisioningOptions {
  pool: pg.Pool;
  registry: DeviceRegistry;
  log: Logger;
  counter?: { inc(labels: { status: string }): void };
  /** Failed key/secret checks throttled per source address and per provision key. */
  throttle?: AuthThrottle;
  /** Counts key lookups and secret hash checks. */
  work?: AuthWorkCounters;
  /** How long an unknown provision key is answered from memory (0: never). */
  negativeCacheMs?: number;
}

const NOT_FOUND: ProvisionResponse = { errorMsg: 'Provision data was not found!', status: 'NOT_FOUND' };
const NAME = /^[^\u0000-\u001f\u007f]{1,200}$/;
const CHOSEN = /^[\u0021-\u007e\u00a0-\uffff]+$/; // printable, no whitespace or control characters

class Refusal extends Error {}
const refuse = (message: string): never => {
  throw new Refusal(message);
};

type Credentials = { type: 'ACCESS_TOKEN'; token: string | undefined } | { type: 'MQTT_BASIC'; clientId: string | null; username: string | null; password: string | null };

interface KeyRow {
  id: number;
  key: string;
  secret_hash: string;
  name: string | null;
  device_type: string;
  allow_create: boolean;
  max_devices: number | null;
  devices_provisioned: number;
  created_at: Date;
  last_used_at: Date | null;
}
const KEY_COLUMNS = 'id, key, secret_hash, name, device_type, allow_create, max_devices, devices_provisioned, created_at, last_used_at';
const toKey = (r: KeyRow): ProvisionKey => ({
  id: r.id,
  key: r.key,
  name: r.name,
  deviceType: r.device_type,
  allowCreate: r.allow_create,
  maxDevices: r.max_devices,
  devicesProvisioned: r.devices_provisioned,
  createdAt: r.created_at.toISOString(),
  lastUsedAt: r.last_used_at?.toISOString() ?? null,
});

/**
 * Device self-provisioning, ThingsBoard-compatible (its "device provisioning" with a provision
 * key and secret): a device sends the key, the secret and optionally its name and the
 * credentials it wants, and receives its credentials. Keys are managed over REST; the secret is
 * shown once and stored only as a salted scrypt hash.
 *
 * Semantics follow ThingsBoard's DeviceProvisionServiceImpl: a missing or unknown key or a wrong
 * secret is NOT_FOUND; with a key that creates devices, a name that already exists is a FAILURE
 * (an existing device's credentials are never handed out); with a key for pre-registered devices
 * the device must exist with the key's type. Unlike ThingsBoard (which keeps tokens in clear and
 * returns the existing one), GuanLink stores only hashes: a pre-registered device receives new
 * credentials, and only once (a second claim is a FAILURE).
 */
export class Provisioning {
  /** Provision keys whose secret passed scrypt → (SHA-256 of the secret, the hash it passed, key id): a fleet provisioning with one key pays one scrypt. */
  private readonly verified = new Map<string, { digest: Buffer; secretHash: string; id: number }>();
  /** Provision keys that did not exist a moment ago. */
  private readonly unknownKeys: NegativeCache;
  private readonly work: AuthWorkCounters;

  constructor(private readonly opts: ProvisioningOptions) {
    this.work = opts.work ?? noAuthWork;
    this.unknownKeys = new NegativeCache(opts.negativeCacheMs ?? 30_000);
  }

  /** A new key; its secret is returned only here. */
  async createKey(input: ProvisionKeyInput): Promise<{ key: ProvisionKey; secret: string }> {
    if (!this.opts.registry.deviceType(input.deviceType)) {
      throw new RegistryError('invalid', `unknown device type "${input.deviceType}"; known: ${this.opts.registry.deviceTypes().map((t) => t.name).join(', ')}`);
    }
    const secret = generateToken(32);
    const secretHash = await hashSecret(secret);
    for (let attempt = 0; ; attempt++) {
      try {
        const { rows } = await this.opts.pool.query<KeyRow>(
          `INSERT INTO provision_keys (key, secret_hash, name, device_type, allow_create, max_devices) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${KEY_COLUMNS}`,
          [generateToken(20), secretHash, input.name ?? null, input.deviceType, input.allowCreate ?? true, input.maxDevices ?? null],
        );
        const key = toKey(rows[0]!);
        this.unknownKeys.forget(key.key);
        this.opts.log.info({ provisionKey: key.id, deviceType: key.deviceType, allowCreate: key.allowCreate }, 'provision key created');
        return { key, secret };
      } catch (err) {
        if ((err as { code?: string }).code === '23505' && attempt < 3) continue;
        throw err;
      }
    }
  }

  async listKeys(): Promise<ProvisionKey[]> {
    const { rows } = await this.opts.pool.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM provision_keys ORDER BY id`);
    return rows.map(toKey);
  }

  async getKey(id: number): Promise<ProvisionKey | undefined> {
    const { rows } = await this.opts.pool.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM provision_keys WHERE id = $1`, [id]);
    return rows[0] && toKey(rows[0]);
  }

  /** Revokes a key (the devices it provisioned keep their credentials); false when there was none. */
  async deleteKey(id: number): Promise<boolean> {
    const { rowCount } = await this.opts.pool.query('DELETE FROM provision_keys WHERE id = $1', [id]);
    for (const [text, v] of this.verified) if (v.id === id) this.verified.delete(text);
    if (rowCount) this.opts.log.info({ provisionKey: id }, 'provision key deleted');
    return (rowCount ?? 0) > 0;
  }

  /** Answers a provisioning request (a parsed JSON body); never throws for a bad request. */
  async provision(request: unknown, context: ProvisionContext): Promise<ProvisionResponse> {
    const log = this.opts.log;
    const outcome = (response: ProvisionResponse, details: Record<string, unknown>) => {
      this.opts.counter?.inc({ status: response.status });
      if (response.status === 'SUCCESS') log.info({ ...details, via: context.via, address: context.address }, 'device provisioned');
      else log.info({ ...details, via: context.via, address: context.address, status: response.status, reason: 'errorMsg' in response ? response.errorMsg : undefined }, 'provisioning refused');
      return response;
    };
    if (typeof request !== 'object' || request === null || Array.isArray(request)) {
      return outcome({ errorMsg: 'Failed to provision device! The request must be a JSON object', status: 'FAILURE' }, {});
    }
    const r = request as Record<string, unknown>;
    const keyText = r.provisionDeviceKey;
    const secret = r.provisionDeviceSecret;
    if (typeof keyText !== 'string' || keyText === '' || typeof secret !== 'string' || secret === '' || keyText.length > 256 || secret.length > 256) {
      return outcome(NOT_FOUND, { reason: 'provisionDeviceKey or provisionDeviceSecret missing' });
    }
    // A key and secret that passed here before skip the throttle's gate and the hash; any other
    // pair is first admitted, then looked up and proved. Throttled per source address and per
    // key-and-secret pair, not per key: a secret is 190 random bits (nothing to guess per key), and
    // whoever knows a batch's key (it is in the firmware) must not be able to block its rollout.
    const throttle = this.opts.throttle;
    const attempt: Attempt = { via: 'provision', source: context.address, credential: credentialId('provision', `${keyText}\n${secret}`) };
    const digest = createHash('sha256').update(secret).digest();
    const known = this.verified.get(keyText);
    const recognised = known !== undefined && timingSafeEqual(known.digest, digest);
    if (!recognised) {
      const admission = throttle?.admit(attempt);
      if (admission && !admission.ok) {
        return outcome({ errorMsg: `Failed to provision device! ${describeRefusal(admission, 'provision key')}`, status: 'FAILURE' }, { reason: 'throttled' });
      }
      if (this.unknownKeys.has(keyText)) {
        throttle?.failed(attempt, 'unknown_provision_key');
        return outcome(NOT_FOUND, { reason: 'unknown provision key' });
      }
    }
    this.work.lookup('provision_keys');
    const { rows } = await this.opts.pool.query<KeyRow>(`SELECT ${KEY_COLUMNS} FROM provision_keys WHERE key = $1`, [keyText]);
    const key = rows[0];
    if (!key) {
      this.unknownKeys.add(keyText);
      this.verified.delete(keyText);
      throttle?.failed(attempt, 'unknown_provision_key');
      return outcome(NOT_FOUND, { reason: 'unknown provision key' });
    }
    if (!(recognised && known.secretHash === key.secret_hash)) {
      this.work.hashCheck('provision_keys');
      if (!(await verifySecret(secret, key.secret_hash))) {
        throttle?.failed(attempt, 'wrong_provision_secret');
        return outcome(NOT_FOUND, { provisionKey: key.id, reason: 'wrong provision secret' });
      }
      this.verified.delete(keyText);
      this.verified.set(keyText, { digest, secretHash: key.secret_hash, id: key.id });
      if (this.verified.size > 10_000) this.verified.delete(this.verified.keys().next().value!);
    }
    throttle?.succeeded(attempt);

    try {
      const name = parseName(r.deviceName);
      const credentials = parseCredentials(r);
      const location = parseLocation(r.location);
      if (r.gateway !== undefined && typeof r.gateway !== 'boolean') refuse('gateway must be true or false');
      if (!this.opts.registry.deviceType(key.device_type)) refuse(`the key's device type "${key.device_type}" no longer exists`);
      const { device, response } = key.allow_create
        ? await this.createDevice(key, name ?? generateToken(20), credentials, { location, isGateway: r.gateway === true }, context)
        : await this.claimDevice(key, name, credentials, context);
      return outcome(response, { provisionKey: key.id, device: device.id, name: device.name, credentialsType: 'credentialsType' in response ? response.credentialsType : undefined });
    } catch (err) {
      if (err instanceof Refusal) return outcome({ errorMsg: `Failed to provision device! ${err.message}`, status: 'FAILURE' }, { provisionKey: key.id });
      log.error({ err, provisionKey: key.id }, 'provisioning failed');
      return outcome({ errorMsg: 'Failed to provision device!', status: 'FAILURE' }, { provisionKey: key.id });
    }
  }

  /** ThingsBoard's "allow create new devices". */
  private async createDevice(
    key: KeyRow,
    name: string,
    credentials: Credentials,
    extra: { location: Location | undefined; isGateway: boolean },
    context: ProvisionContext,
  ): Promise<{ device: Device; response: ProvisionResponse }> {
    if (await this.opts.registry.byName(name)) refuse(`a device named "${name}" already exists and cannot be provisioned again`);
    await this.reserve(key);
    let device: Device | undefined;
    try {
      const input = { name, type: key.device_type, location: extra.location ?? null, isGateway: extra.isGateway };
      const created = await this.opts.registry
        .create(input, credentials.type === 'ACCESS_TOKEN' ? { accessToken: credentials.token } : {})
        .catch((err: unknown) => (err instanceof RegistryError ? refuse(err.message) : Promise.reject(err)));
      device = created.device;
      const response = await this.issue(device, credentials, created.accessToken);
      await this.record(device.id, key.id, credentials.type, context);
      return { device, response };
    } catch (err) {
      // Undo: no half-provisioned device, and the key's count stays right.
      if (device) await this.opts.registry.delete(device.id).catch(() => {});
      await this.release(key);
      throw err;
    }
  }

  /** ThingsBoard's "check pre-provisioned devices": the device was registered beforehand with the key's type. */
  private async claimDevice(key: KeyRow, name: string | undefined, credentials: Credentials, context: ProvisionContext): Promise<{ device: Device; response: ProvisionResponse }> {
    if (name === undefined) refuse('deviceName is required: this key provisions devices registered beforehand');
    const device = await this.opts.registry.byName(name!);
    if (!device || device.type !== key.device_type) refuse(`no device "${name}" of type ${key.device_type} was registered for this key`);
    const claimed = await this.opts.pool.query(
      `INSERT INTO device_provisioning (device_id, key_id, credentials_type, address) VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO NOTHING`,
      [device!.id, key.id, credentials.type, context.address ?? null],
    );
    if (claimed.rowCount === 0) refuse(`device "${name}" was already provisioned`);
    try {
      await this.reserve(key);
      try {
        let token: string | undefined;
        if (credentials.type === 'ACCESS_TOKEN') {
          token = (
            await this.opts.registry.rotateToken(device!.id, credentials.token).catch((err: unknown) => (err instanceof RegistryError ? refuse(err.message) : Promise.reject(err)))
          ).accessToken;
        }
        return { device: device!, response: await this.issue(device!, credentials, token) };
      } catch (err) {
        await this.release(key);
        throw err;
      }
    } catch (err) {
      await this.opts.pool.query('DELETE FROM device_provisioning WHERE device_id = $1', [device!.id]).catch(() => {});
      throw err;
    }
  }

  /** Sets MQTT basic credentials when asked for, and builds the SUCCESS response. */
  private async issue(device: Device, credentials: Credentials, token: string | undefined): Promise<ProvisionResponse> {
    if (credentials.type === 'ACCESS_TOKEN') return { credentialsValue: token!, credentialsType: 'ACCESS_TOKEN', status: 'SUCCESS' };
    await this.opts.registry
      .setBasicCredentials(device.id, { clientId: credentials.clientId, username: credentials.username, password: credentials.password })
      .catch((err: unknown) => (err instanceof RegistryError ? refuse(err.message) : Promise.reject(err)));
    return {
      credentialsValue: { clientId: credentials.clientId, userName: credentials.username, password: credentials.password },
      credentialsType: 'MQTT_BASIC',
      status: 'SUCCESS',
    };
  }

  /** Counts the device against the key's limit. */
  private async reserve(key: KeyRow): Promise<void> {
    const { rowCount } = await this.opts.pool.query(
      `UPDATE provision_keys SET devices_provisioned = devices_provisioned + 1, last_used_at = now()
        WHERE id = $1 AND (max_devices IS NULL OR devices_provisioned < max_devices)`,
      [key.id],
    );
    if (rowCount === 0) refuse(`this provision key has provisioned its maximum of ${key.max_devices} devices`);
  }

  private async release(key: KeyRow): Promise<void> {
    await this.opts.pool.query('UPDATE provision_keys SET devices_provisioned = devices_provisioned - 1 WHERE id = $1 AND devices_provisioned > 0', [key.id]).catch(() => {});
  }

  private async record(deviceId: number, keyId: number, credentialsType: string, context: ProvisionContext): Promise<void> {
    await this.opts.pool.query(`INSERT INTO device_provisioning (device_id, key_id, credentials_type, address) VALUES ($1, $2, $3, $4)`, [
      deviceId,
      keyId,
      credentialsType,
      context.address ?? null,
    ]);
  }
}

/** `deviceName`: optional (a name is generated); when given it is trimmed and must not be empty (ThingsBoard: FAILURE). */
function parseName(raw: unknown): string | undefined {
  if (raw === undefined || raw === null) return undefined;
  if (typeof raw !== 'string') refuse('deviceName must be a string');
  const name = (raw as string).trim();
  if (name === '') refuse('deviceName is empty');
  if (!NAME.test(name)) refuse('deviceName must be 1–200 characters without control characters');
  return name;
}

function chosenSecret(what: string, raw: unknown): string {
  if (typeof raw !== 'string') refuse(`${what} must be a string`);
  const value = raw as string;
  if (value.length < MIN_CHOSEN_SECRET_LENGTH) refuse(`${what} must be at least ${MIN_CHOSEN_SECRET_LENGTH} characters`);
  if (value.length > 256 || !CHOSEN.test(value)) refuse(`${what} must be at most 256 printable characters without spaces`);
  return value;
}

function optionalText(what: string, raw: unknown): string | null {
  if (raw === undefined || raw === null || raw === '') return null;
  if (typeof raw !== 'string' || raw.length > 256 || !CHOSEN.test(raw)) refuse(`${what} must be at most 256 printable characters without spaces`);
  if (raw === 'provision') refuse(`${what} "provision" is reserved for provisioning sessions`);
  return raw as string;
}

/**
 * A token the device chooses: it is the whole credential (MQTT username, no password) and the key
 * of its lookup, so a short or repetitive one is refused (ThingsBoard's FAILURE answer).
 */
function chosenToken(raw: unknown): string {
  if (typeof raw !== 'string') refuse('token must be a string');
  const value = raw as string;
  if (value.length < MIN_CHOSEN_TOKEN_LENGTH) refuse(`token must be at least ${MIN_CHOSEN_TOKEN_LENGTH} characters (omit it to get a random one)`);
  if (value.length > 256 || !CHOSEN.test(value)) refuse('token must be at most 256 printable characters without spaces');
  if (new Set(value).size < MIN_CHOSEN_TOKEN_DISTINCT) refuse(`token is too repetitive: use at least ${MIN_CHOSEN_TOKEN_DISTINCT} different characters (omit it to get a random one)`);
  return value;
}

/** `credentialsType` (default ACCESS_TOKEN) with `token`, or MQTT_BASIC with `clientId`/`username`/`password`. */
function parseCredentials(r: Record<string, unknown>): Credentials {
  const type = r.credentialsType ?? 'ACCESS_TOKEN';
  if (type === 'ACCESS_TOKEN') {
    return { type, token: r.token === undefined || r.token === null || r.token === '' ? undefined : chosenToken(r.token) };
  }
  if (type === 'MQTT_BASIC') {
    const clientId = optionalText('clientId', r.clientId);
    const username = optionalText('username', r.username);
    const password = r.password === undefined || r.password === null || r.password === '' ? null : chosenSecret('password', r.password);
    if ((username === null) !== (password === null)) refuse('MQTT_BASIC needs a username with a password (and a client id optionally), or a client id alone');
    if (username === null && clientId === null) refuse('MQTT_BASIC needs a client id, or a username and password');
    if (username === null) chosenSecret('clientId used alone', clientId);
    return { type, clientId, username, password };
  }
  if (type === 'X509_CERTIFICATE') return refuse('X509_CERTIFICATE is not supported: use ACCESS_TOKEN or MQTT_BASIC');
  return refuse(`unknown credentialsType ${JSON.stringify(type)}: use ACCESS_TOKEN or MQTT_BASIC`);
}

/** GuanLink extension: `location: {lat, lng, alt?}`, the device's registered location. */
function parseLocation(raw: unknown): Location | undefined {
  if (raw === undefined || raw === null) return undefined;
  const l = raw as Record<string, unknown>;
  const ok =
    typeof raw === 'object' &&
    typeof l.lat === 'number' &&
    typeof l.lng === 'number' &&
    Math.abs(l.lat) <= 90 &&
    Math.abs(l.lng) <= 180 &&
    (l.alt === undefined || (typeof l.alt === 'number' && Number.isFinite(l.alt)));
  if (!ok) refuse('location must be {"lat": -90…90, "lng": -180…180, "alt"?: metres}');
  return l.alt === undefined ? { lat: l.lat as number, lng: l.lng as number } : { lat: l.lat as number, lng: l.lng as number, alt: l.alt as number };
}
