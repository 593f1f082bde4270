import type pg from 'pg';
import type { EndReason, SessionEnd } from '../broker/session.ts';
import type { DeviceSession } from '../broker/session.ts';
import type { Rejection } from '../ingest/readings.ts';
import type { Logger } from './log.ts';
import type { Metrics } from './metrics.ts';
import { RegistryError, type Device, type DeviceContext, type DeviceRegistry } from './registry.ts';

/**
 * Gateways' sub-devices (ThingsBoard's gateway API): which sub-devices each gateway session
 * relays for, found by name and created on first use under the gateway (`devices.gateway_id`).
 *
 * A sub-device connected through its gateway has a session of its own here: a DeviceSession on
 * the gateway's connection (same client, address and client id), handed to the same hooks as a
 * device's own session (`onConnect` / `onDisconnect`: connection state and its events, queued
 * commands…), so it is online, has a last-seen time and gets its commands like any device. It
 * ends when the gateway sends `v1/gateway/disconnect` for it, when the gateway's own session
 * ends, or when the registry says it is no longer this gateway's. Its `client` is the gateway's:
 * whoever holds such a session must never close it (that would close the gateway).
 *
 * A gateway may only write for its own sub-devices: a name that belongs to a standalone device
 * or to another gateway's sub-device is refused (`device_not_owned`), never taken over.
 */

export interface GatewaySessionsOptions {
  registry: DeviceRegistry;
  pool: pg.Pool;
  log: Logger;
  /** Type of sub-devices created without one (GATEWAY_DEFAULT_DEVICE_TYPE). */
  defaultType: string;
  /** Sub-devices one gateway may have (GATEWAY_MAX_DEVICES); beyond it new names are refused. */
  maxDevicesPerGateway: number;
  /** A sub-device is connected through its gateway. */
  onConnect: (session: DeviceSession) => void;
  /** A sub-device's session through its gateway ended. */
  onDisconnect: (session: DeviceSession, end: SessionEnd) => void;
  metrics?: Metrics;
}

/** A sub-device connected through a gateway session. */
export interface SubDevice {
  /** The sub-device's own session, on its gateway's connection. */
  session: DeviceSession;
  /** The gateway's session. */
  gateway: DeviceSession;
}

export type Resolution =
  | { ok: true; sub: SubDevice; created: boolean }
  /** `missing`: no device has the name (and none was created). */
  | { ok: false; rejection: Rejection; missing?: boolean };

interface GatewayState {
  gateway: DeviceSession;
  /** Connected sub-devices by name. */
  devices: Map<string, SubDevice>;
  /** Names being looked up or created (one lookup per name at a time). */
  pending: Map<string, Promise<Resolution>>;
  /** Creations run one at a time per gateway, so its sub-device limit holds. */
  creating: Promise<unknown>;
}

type Found = { ok: true; device: DeviceContext; created: boolean } | { ok: false; rejection: Rejection; missing?: boolean };

export class GatewaySessions {
  private readonly states = new Map<DeviceSession, GatewayState>();
  /** Connected sub-devices by device id (the latest connection of each). */
  private readonly byId = new Map<number, SubDevice>();

  constructor(private readonly opts: GatewaySessionsOptions) {
    opts.registry.onChange((event) => {
      if (event.kind === 'deleted') this.deviceGone(event.device.id, 'deleted');
      else if (event.kind === 'updated') void this.deviceUpdated(event.device);
    });
    opts.registry.onTypeChange((event) => {
      if (event.kind !== 'saved') return;
      for (const sub of this.byId.values()) {
        if (sub.session.device.type.name === event.type.name) sub.session.device = { ...sub.session.device, type: event.type };
      }
    });
    if (!opts.registry.deviceType(opts.defaultType)) {
      opts.log.warn({ type: opts.defaultType }, `GATEWAY_DEFAULT_DEVICE_TYPE "${opts.defaultType}" is not a device type (yet): gateways cannot create sub-devices without naming a type`);
    }
    opts.metrics?.liveGauge('guanlink_gateway_sub_devices_connected', 'Sub-devices connected through a gateway on this node.', () => this.byId.size);
  }

  /** Sub-devices connected through gateways on this node. */
  get connected(): number {
    return this.byId.size;
  }

  /** The sub-device's connection through a gateway on this node, if any. */
  subDevice(deviceId: number): SubDevice | undefined {
    const sub = this.byId.get(deviceId);
    return sub && !sub.gateway.client.closed ? sub : undefined;
  }

  /** Names of the sub-devices a gateway session relays for now. */
  connectedThrough(gateway: DeviceSession): string[] {
    return [...(this.states.get(gateway)?.devices.keys() ?? [])];
  }

  /**
   * The gateway's sub-device of this name, connected through this gateway session (marked online
   * the first time). Unknown names are created under the gateway when `create` (ThingsBoard: on
   * connect, and on telemetry, attributes or an attribute request for a name not yet connected),
   * with `type` or the default type.
   */
  async resolve(gateway: DeviceSession, name: string, options: { type?: string; create: boolean }): Promise<Resolution> {
    let state = this.states.get(gateway);
    const known = state?.devices.get(name);
    if (known) {
      known.session.lastActivity = Date.now();
      return { ok: true, sub: known, created: false };
    }
    if (!state) {
      if (gateway.client.closed) return this.detached(gateway, name, options);
      state = { gateway, devices: new Map(), pending: new Map(), creating: Promise.resolve() };
      this.states.set(gateway, state);
    }
    let pending = state.pending.get(name);
    if (!pending) {
      const s = state;
      pending = this.find(s, name, options)
        .then((found): Resolution => (found.ok ? { ok: true, sub: this.register(s, found.device), created: found.created } : found))
        .finally(() => s.pending.delete(name));
      state.pending.set(name, pending);
    }
    return pending;
  }

  /** The gateway says the sub-device is gone (`v1/gateway/disconnect`); false when it was not connected. */
  disconnect(gateway: DeviceSession, name: string, reason: EndReason = 'gateway_disconnect'): boolean {
    const state = this.states.get(gateway);
    const sub = state?.devices.get(name);
    if (!state || !sub) return false;
    this.end(state, sub, reason);
    return true;
  }

  /** A device session ended: if it was a gateway's, every sub-device connected through it goes offline. */
  sessionEnded(session: DeviceSession, end: SessionEnd): void {
    const state = this.states.get(session);
    if (!state) return;
    this.states.delete(session);
    for (const sub of [...state.devices.values()]) this.end(state, sub, 'gateway_offline', end.at);
    if (state.devices.size > 0) this.opts.log.debug({ gateway: session.device.id }, 'gateway session ended: its sub-devices are offline');
  }

  private end(state: GatewayState, sub: SubDevice, reason: EndReason, at = Date.now()): void {
    const name = sub.session.device.name;
    if (state.devices.get(name) === sub) state.devices.delete(name);
    if (this.byId.get(sub.session.device.id) === sub) this.byId.delete(sub.session.device.id);
    this.opts.log.debug({ gateway: state.gateway.device.id, device: sub.session.device.id, reason }, 'sub-device disconnected');
    this.opts.onDisconnect(sub.session, { reason, willPublished: false, at });
  }

  private register(state: GatewayState, device: DeviceContext): SubDevice {
    const gateway = state.gateway;
    const session = subDeviceSession(gateway, device);
    const sub: SubDevice = { session, gateway };
    // The gateway's session ended while the name was looked up: nothing is marked online.
    if (this.states.get(gateway) !== state || gateway.client.closed) return sub;
    const already = state.devices.get(device.name);
    if (already) return already;
    state.devices.set(device.name, sub);
    this.byId.set(device.id, sub);
    this.opts.log.debug({ gateway: gateway.device.id, device: device.id, name: device.name }, 'sub-device connected through its gateway');
    this.opts.onConnect(session);
    return sub;
  }

  /** A message processed after its gateway's session ended: the device, never marked online. */
  private async detached(gateway: DeviceSession, name: string, options: { type?: string; create: boolean }): Promise<Resolution> {
    const state: GatewayState = { gateway, devices: new Map(), pending: new Map(), creating: Promise.resolve() };
    const found = await this.find(state, name, options);
    return found.ok ? { ok: true, sub: { session: subDeviceSession(gateway, found.device), gateway }, created: found.created } : found;
  }

  private async find(state: GatewayState, name: string, options: { type?: string; create: boolean }): Promise<Found> {
    const gatewayId = state.gateway.device.id;
    const existing = await this.opts.registry.byName(name);
    if (existing) return this.owned(existing, gatewayId);
    if (!options.create) return { ok: false, missing: true, rejection: { reason: 'device_not_owned', detail: `no device is named "${name}"` } };
    const typeName = options.type ?? this.opts.defaultType;
    if (!this.opts.registry.deviceType(typeName)) {
      const known = this.opts.registry.deviceTypes().map((t) => t.name);
      const list = known.length > 30 ? `${known.slice(0, 30).join(', ')}, …` : known.join(', ');
      const what = options.type === undefined ? `the default device type "${typeName}" (GATEWAY_DEFAULT_DEVICE_TYPE)` : `device type "${typeName}"`;
      return { ok: false, rejection: { reason: 'unknown_type', detail: `"${name}" was not created: ${what} does not exist; known types: ${list}` } };
    }
    const created = state.creating.then(() => this.create(gatewayId, name, typeName));
    state.creating = created.catch(() => {});
    return created;
  }

  /** Creates a sub-device under the gateway, within its limit (creations of one gateway run one at a time). */
  private async create(gatewayId: number, name: string, type: string): Promise<Found> {
    const { rows } = await this.opts.pool.query<{ n: number }>('SELECT count(*)::int AS n FROM devices WHERE gateway_id = $1', [gatewayId]);
    const max = this.opts.maxDevicesPerGateway;
    if (rows[0]!.n >= max) {
      return { ok: false, rejection: { reason: 'too_many_devices', detail: `"${name}" was not created: the gateway has ${rows[0]!.n} sub-devices, the limit is ${max} (GATEWAY_MAX_DEVICES)` } };
    }
    let device: Device;
    try {
      ({ device } = await this.opts.registry.create({ name, type, gatewayId }));
    } catch (err) {
      // Created meanwhile (another gateway, the REST API): whose is it?
      if (err instanceof RegistryError && err.code === 'conflict') {
        const now = await this.opts.registry.byName(name);
        if (now) return this.owned(now, gatewayId);
      }
      throw err;
    }
    this.opts.log.info({ gateway: gatewayId, device: device.id, name, type }, 'sub-device created by its gateway');
    const context = await this.opts.registry.context(device.id);
    if (!context) throw new Error(`sub-device ${device.id} was deleted as it was created`);
    return { ok: true, device: context, created: true };
  }

  private async owned(device: Device, gatewayId: number): Promise<Found> {
    if (device.gatewayId !== gatewayId) {
      const whose = device.gatewayId === null ? 'a device that is not a sub-device of this gateway' : "another gateway's sub-device";
      return { ok: false, rejection: { reason: 'device_not_owned', detail: `"${device.name}" is ${whose}: a gateway may only write for its own sub-devices` } };
    }
    const context = await this.opts.registry.context(device.id);
    if (!context) return { ok: false, missing: true, rejection: { reason: 'device_not_owned', detail: `"${device.name}" was deleted` } };
    return { ok: true, device: context, created: false };
  }

  /** A connected sub-device was deleted: its session ends. A deleted gateway's session is closed by the broker. */
  private deviceGone(deviceId: number, reason: EndReason): void {
    const sub = this.byId.get(deviceId);
    const state = sub && this.states.get(sub.gateway);
    if (sub && state) this.end(state, sub, reason);
  }

  /**
   * A device's description changed. A connected sub-device carries on with it, unless it now
   * belongs to another gateway (or none), or was renamed (its gateway knows it by its old name):
   * then its session through this gateway ends. A gateway that is no longer one loses its
   * sub-devices' sessions (the broker refuses its v1/gateway/… messages from now on).
   */
  private async deviceUpdated(device: Device): Promise<void> {
    try {
      for (const state of this.states.values()) {
        if (state.gateway.device.id === device.id && !device.isGateway) {
          for (const sub of [...state.devices.values()]) this.end(state, sub, 'gateway_changed');
        }
      }
      const sub = this.byId.get(device.id);
      const state = sub && this.states.get(sub.gateway);
      if (!sub || !state) return;
      if (device.gatewayId !== sub.gateway.device.id || device.name !== sub.session.device.name) {
        this.end(state, sub, 'gateway_changed');
        return;
      }
      const context = await this.opts.registry.context(device.id);
      if (context && this.byId.get(device.id) === sub) sub.session.device = context;
    } catch (err) {
      this.opts.log.warn({ err, device: device.id }, 'could not refresh a sub-device after a registry change');
    }
  }
}

/** A sub-device's session on its gateway's connection. */
function subDeviceSession(gateway: DeviceSession, device: DeviceContext): DeviceSession {
  const now = Date.now();
  return {
    kind: 'device',
    device,
    client: gateway.client,
    clientId: gateway.clientId,
    address: gateway.address,
    connectedAt: now,
    lastActivity: now,
    waiting: 0,
    subscriptions: new Map(),
  };
}
