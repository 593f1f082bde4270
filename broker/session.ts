import type { Client } from 'aedes';
import type { Principal } from '../core/access/principal.ts';
import type { DeviceContext } from '../core/registry.ts';

/**
 * One authenticated MQTT connection: a device (or gateway), an anonymous provisioning session, or
 * an application session (an operator's system subscribed to platform events).
 */
export type Session = DeviceSession | ProvisionSession | ApplicationSession;

interface SessionBase {
  client: Client;
  /** The client id the device sent; the broker keys sessions by device instead. */
  clientId: string;
  address: string | undefined;
  connectedAt: number;
  /** When the client's last packet was read (epoch ms): the device's "last seen". */
  lastActivity: number;
  /** Publishes of this session waiting on a handler (ingest, the database). */
  waiting: number;
  /** Topic filters the client subscribed to, with the QoS granted. */
  subscriptions: Map<string, 0 | 1>;
}

export interface DeviceSession extends SessionBase {
  kind: 'device';
  device: DeviceContext;
  /** Set when aedes published the device's last will (its connection ended uncleanly). */
  willPublished?: boolean;
}

/** ThingsBoard's provisioning session: CONNECT with username or client id `provision`, no credentials. */
export interface ProvisionSession extends SessionBase {
  kind: 'provision';
  /** Its request was answered: the server closes the session shortly (PROVISION_SESSION_CLOSE_MS), a normal end. */
  answered?: boolean;
}

/**
 * Username `guanlink-app` with a credential (API key, OpenID Connect access token or the admin
 * key): subscribes to `guanlink/events/…` only, never publishes, and is sent only the events
 * inside its principal's scope. Closed when its key is revoked, rotated or changed, or expires.
 */
export interface ApplicationSession extends SessionBase {
  kind: 'application';
  principal: Principal;
}

/**
 * Where a message to a device goes: a literal topic, or a kind of ThingsBoard message whose topic
 * follows the form the device subscribed with (`v1/devices/me/…` or the `v2/…` short form).
 */
export type Outbound = string | { kind: 'attributes' | 'attributesResponse' | 'rpcRequest' | 'rpcResponse'; suffix?: string };

/**
 * Sends a message to one device's connection only (never through topic routing: every device
 * shares `v1/devices/me/...`). QoS defaults to what the device subscribed with (at most 1), else 1.
 * Resolves false when the device has no session here or the write failed.
 */
export type Deliver = (deviceId: number, to: Outbound, payload: Buffer | string, qos?: 0 | 1) => Promise<boolean>;

/** The same, for a session in hand (e.g. an anonymous provisioning session). */
export type DeliverToSession = (session: Session, to: Outbound, payload: Buffer | string, qos?: 0 | 1) => Promise<boolean>;

/**
 * A message written with delivery tracking (server-side RPC): `written` once it is on the wire
 * (false: the session is gone or the write failed); `acknowledged` once the device PUBACKed it —
 * at QoS 0 (the device subscribed with QoS 0), once written — false when it was never written or
 * the connection ended first.
 */
export interface TrackedDelivery {
  written: Promise<boolean>;
  acknowledged: Promise<boolean>;
}

/** Sends a message to a session and tracks its PUBACK (see TrackedDelivery). */
export type DeliverTracked = (session: Session, to: Outbound, payload: Buffer | string, qos?: 0 | 1) => TrackedDelivery;

/** Why a device's session ended. */
export type EndReason =
  | 'client_disconnect'
  | 'connection_lost'
  | 'keepalive_timeout'
  | 'taken_over'
  | 'deleted'
  | 'credentials_changed'
  | 'rate_limited'
  | 'protocol_error'
  // An OTA chunk request the server refused (broker/handlers/ota.ts), as ThingsBoard closes it:
  // after an error on v2/fw/error, or for a chunk number or size that is not a 32-bit integer.
  | 'ota_error'
  | 'ota_bad_request'
  | 'server_shutdown'
  // A provisioning session closed by the server once its request was answered (MQTT 5: a normal disconnection).
  | 'provisioned'
  // A gateway's sub-device (core/gateways.ts): the gateway sent v1/gateway/disconnect for it; the
  // gateway's own session ended; the sub-device was moved to another gateway (or its gateway is no
  // longer one).
  | 'gateway_disconnect'
  | 'gateway_offline'
  | 'gateway_changed';

export interface SessionEnd {
  reason: EndReason;
  /** The device's last will was published (an unclean end with a will set). */
  willPublished: boolean;
  at: number;
}
