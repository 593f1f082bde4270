import net from 'node:net';
import tls from 'node:tls';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Aedes, type AuthenticateError, type Client, type PublishPacket } from 'aedes';
import { WebSocketServer, createWebSocketStream, type WebSocket } from 'ws';
import type { Principal } from '../core/access/principal.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import { RateLimiter, type RateLimitSpec } from '../core/rate-limit.ts';
import { watchAcceptErrors } from '../core/descriptors.ts';
import { Admission, type Eviction, type Refusal, type Ticket } from './admission.ts';
import type { DeviceContext } from '../core/registry.ts';
import { APPLICATION_USERNAME, type AuthResult, type ConnectCredentials } from './auth.ts';
import { PLATFORM_EVENTS_PREFIX, UNSUPPORTED_TOPIC_PUBACK, maySubscribe, outboundTopic, routePublish, type DeviceApiHandlers } from './device-api.ts';
import { ERRORS_TOPIC } from './handlers/telemetry.ts';
import { mqtt5FrontEnd, whenProtocolKnown } from './mqtt5/front-end.ts';
import { REASON } from './mqtt5/reason-codes.ts';
import type { ApplicationSession, Deliver, DeliverToSession, DeliverTracked, DeviceSession, EndReason, Outbound, Session, SessionEnd } from './session.ts';

export interface BrokerOptions {
  log: Logger;
  metrics: Metrics;
  authenticate: (credentials: ConnectCredentials) => Promise<AuthResult>;
  handlers: (deliver: Deliver, deliverToSession: DeliverToSession) => DeviceApiHandlers;
  /**
   * An MQTT packet announcing more than this is refused as soon as its header arrives: the
   * connection is closed before the body is buffered. Smaller packets whose payload exceeds the
   * ingest limit are answered with a reason instead (see ingest).
   */
  maxPacketBytes: number;
  /**
   * Sessions held at once — the connection budget (core/descriptors.ts derives it from the
   * open-file limit); beyond it CONNACK 3 (server unavailable). See admission.ts.
   */
  maxConnections: number;
  /** Connections beyond maxConnections held until their CONNECT is answered with CONNACK 3 (default 32). */
  refusalSlots?: number;
  /** A connection not authenticated this long after it was opened (no CONNECT, or no answer yet) is closed (default 10 s). */
  connectTimeoutMs?: number;
  /** A provisioning session is closed this long after it connected (default 20 s). */
  provisionTimeoutMs?: number;
  /**
   * Largest packet before the connection is authenticated (its CONNECT) and in provisioning
   * sessions, and the WebSocket frame limit meanwhile (default min(maxPacketBytes, 16 KiB)).
   */
  maxUnauthenticatedPacketBytes?: number;
  /** Unauthenticated connections (no session yet, or provisioning) held per source address (default 64). */
  unauthenticatedPerAddress?: number;
  /** New connections per source address that do not authenticate as a device or application (token bucket); unset: no limit. */
  connectRatePerAddress?: { max: number; windowMs: number };
  /** Per-device publish rate; beyond it the connection is closed, the publish unacknowledged. */
  publishRate?: RateLimitSpec[];
  /** Keeps a device's publish refused by the broker (a topic it may not use) with the other refusals (rejected_messages, counted). */
  recordRefusal?: (deviceId: number, topic: string, payload: Buffer, rejection: { reason: 'topic_not_allowed'; detail: string }) => void;
  /** Told when a device session starts and ends (connection state, events, live streams). */
  onSessionStart?: (session: DeviceSession) => void;
  onSessionEnd?: (session: DeviceSession, end: SessionEnd) => void;
  /** Told of every application session's connect (accepted or refused) and subscription, for the audit log. */
  onApplicationAccess?: (event: ApplicationAccess) => void;
}

/** An application session connected, was refused, or subscribed (status as in HTTP: 200, 401, 403). */
export interface ApplicationAccess {
  action: 'connect' | 'subscribe';
  principal: Principal | null;
  status: 200 | 401 | 403;
  clientId: string;
  address: string | undefined;
  topic?: string;
  reason?: string;
}

export interface Broker {
  /** Starts the MQTT-over-TCP listener; resolves with the bound port. */
  listen(port: number, host: string): Promise<number>;
  /** Starts MQTT over TLS (mqtts); resolves with the bound port. */
  listenTls(port: number, host: string, credentials: { cert: Buffer; key: Buffer }): Promise<number>;
  /** Upgrades an HTTP request to MQTT over WebSocket. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  deliver: Deliver;
  deliverToSession: DeliverToSession;
  /** Sends to a session and tracks the device's PUBACK (server-side RPC). */
  deliverTracked: DeliverTracked;
  session(deviceId: number): DeviceSession | undefined;
  /** Closes a device's session now (deleted, credentials changed…); false when it had none. */
  disconnect(deviceId: number, reason: EndReason): boolean;
  /** A connected device's registry entry changed (type, location, gateway flag…). */
  updateDevice(device: DeviceContext): void;
  /**
   * Publishes a platform event (QoS 1, not retained) to the application sessions subscribed to
   * `topic`, which must be under `guanlink/events/`. Resolves once handed to every subscriber.
   * With `visibleTo`, only to the sessions whose principal it accepts (the event is inside their
   * scope): asked once per distinct scope, before delivery; events are delivered in order.
   */
  publishEvent(topic: string, payload: Buffer | string, visibleTo?: (principal: Principal) => boolean | Promise<boolean>): Promise<void>;
  /**
   * Closes at once the application sessions opened with an API key (revoked, rotated or changed);
   * a session still being authenticated with it is refused. Returns how many were closed.
   */
  closeApplicationSessions(keyId: number, reason: string): number;
  readonly connectedClients: number;
  /** MQTT connections held on every transport: all, sessions (devices, applications, provisioning), unauthenticated (no session yet, or provisioning). */
  readonly connections: { open: number; sessions: number; unauthenticated: number };
  readonly listening: boolean;
  /** Stops taking new connections and new messages; in-flight publishes still complete. */
  stopAccepting(): Promise<void>;
  /** Disconnects everyone and closes the broker. */
  close(): Promise<void>;
}

/** What the broker keeps per connection from its arrival on (before aedes has a Client for it). */
interface Connection {
  ticket: Ticket;
  /** The TCP socket underneath (TLS and WebSocket included): destroying it closes the connection. */
  socket: net.Socket;
  /** The deadline: for the CONNECT to be answered, then for a provisioning session. */
  timer: NodeJS.Timeout | undefined;
  /** MQTT over WebSocket: the WebSocket (its frame limit grows once authenticated). */
  ws: WebSocket | undefined;
}

/** Why the broker closed or refused a connection (guanlink_mqtt_refusals_total{reason}), and its log line. */
type ConnectionRefusal = Refusal | Eviction | 'max_connections' | 'connect_timeout' | 'provision_timeout';
const CONNECTION_REFUSALS: Record<ConnectionRefusal, string> = {
  max_connections: 'MQTT connect refused (CONNACK 3): the connection budget is full',
  budget_full: 'MQTT connection closed on arrival: the connection budget and its refusal slots are held by sessions',
  displaced: 'unauthenticated MQTT connection closed to make room: the connection budget is full',
  address_limit: 'unauthenticated MQTT connection closed: its source address holds MQTT_UNAUTHENTICATED_PER_ADDRESS unauthenticated connections',
  address_rate: 'MQTT connection closed on arrival: its source address is over MQTT_CONNECT_RATE_PER_ADDRESS',
  connect_timeout: 'MQTT connection closed: not authenticated within MQTT_CONNECT_TIMEOUT_MS (no CONNECT, or not answered yet)',
  provision_timeout: 'provisioning session closed: PROVISION_SESSION_TIMEOUT_MS reached',
};

/** The longest MQTT fixed header: one byte, and a remaining length of at most four (MQTT 3.1.1 §2.2.3). */
const MQTT_FIXED_HEADER_MAX = 5;

/**
 * A WebSocket's frame (message) limit, changed on a live connection: ws reads it from its
 * receiver at each frame header (an internal of ws 8, as the parser hooks are of aedes).
 */
function setFrameLimit(ws: WebSocket | undefined, packetBytes: number): void {
  const receiver = (ws as (WebSocket & { _receiver?: { _maxPayload: number } | null }) | undefined)?._receiver;
  if (receiver) receiver._maxPayload = packetBytes + MQTT_FIXED_HEADER_MAX;
}

/** Stops reading a client's socket (aedes: no further batches are parsed until resume()). */
function pauseClient(client: Client): void {
  (client as Client & { pause(): void }).pause();
}

/** What GuanLink advertises to MQTT 5 clients beside its packet limit (mqtt5/translate.ts ServerLimits). */
const MQTT5_RECEIVE_MAXIMUM = 1024;
const MQTT5_TOPIC_ALIAS_MAXIMUM = 32;

/** Sentinel error codes for CONNACK, as aedes expects them on the error object. */
function connackError(message: string, returnCode: 2 | 3 | 4 | 5): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

/**
 * The embedded MQTT broker (aedes). Clients authenticate as ThingsBoard devices do (access token,
 * MQTT basic credentials, or an anonymous provisioning session); each device has at most one
 * session (a new connection takes over the old one, as in ThingsBoard). What a client may publish
 * and subscribe to is decided by `device-api.ts`. A publish is acknowledged only when its handler
 * resolves — for telemetry, after commit. Nothing is routed between clients: every device uses the
 * same `v1/devices/me/...` topics, so messages to a device are written to its own connection.
 * aedes 1.2 speaks MQTT 3.1 and 3.1.1; MQTT 5 clients reach it through mqtt5/front-end.ts.
 */
export function createBroker(opts: BrokerOptions): Broker {
  const { log, metrics } = opts;
  const sessions = new WeakMap<Client, Session>();
  const byDevice = new Map<number, DeviceSession>();
  const endReasons = new WeakMap<Client, EndReason>();
  // What an MQTT 5 client is told beyond the 3.1.1 packet aedes writes (mqtt5/front-end.ts): a
  // refusing CONNACK's v5 reason when it is not the one its return code maps to, and the packet
  // ids of publishes to unsupported topics (PUBACK 0x90 under v5; kept for MQTT 5 clients only).
  const connackReasons = new WeakMap<Client, number>();
  const unsupportedPublishes = new WeakMap<Client, Set<number>>();
  // Publish rate limits are per device, not per connection: reconnecting must not refill a
  // device's buckets (ThingsBoard keeps device limits across sessions). A disconnected device's
  // limiter is forgotten once its buckets are full again.
  const limiters = new Map<number, RateLimiter>();
  const forgetRefilled = setInterval(() => {
    const now = Date.now();
    for (const [id, limiter] of limiters) if (!byDevice.has(id) && limiter.refilled(now)) limiters.delete(id);
  }, 60_000);
  forgetRefilled.unref();
  // A rate-limited session: its publishes already accepted are still acknowledged (once
  // committed); then the refused ones fail, which closes the connection without their PUBACK.
  const closing = new WeakMap<Session, (() => void)[]>();
  const serverOriginated = new WeakSet<Buffer>();
  // Tracked deliveries (deliverTracked): aedes reports a client's PUBACK only through its
  // internals. A tracked publish gets its packet id here, in authorizeForward (aedes asks just
  // before it numbers the packet, and keeps an id it finds), and the PUBACK is seen on the
  // client's parser (handle()). Keyed by the payload Buffer, fresh for each tracked publish.
  const trackedPayloads = new WeakMap<Buffer, (messageId: number) => void>();
  const awaitingAck = new WeakMap<Client, Map<number, (acked: boolean) => void>>();
  let accepting = true;
  // The connection budget and the per-address limits (admission.ts); each connection's deadline.
  const preAuthBytes = Math.min(opts.maxPacketBytes, opts.maxUnauthenticatedPacketBytes ?? 16_384);
  const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
  const provisionTimeoutMs = opts.provisionTimeoutMs ?? 20_000;
  const admission = new Admission({
    budget: opts.maxConnections,
    refusalSlots: opts.refusalSlots ?? 32,
    perAddress: opts.unauthenticatedPerAddress ?? 64,
    rate: opts.connectRatePerAddress,
  });
  const forgetAddresses = setInterval(() => admission.sweep(), 60_000);
  forgetAddresses.unref();
  const connectionOf = new WeakMap<Client, Connection>();
  const acceptErrors = { log, count: (listener: string, code: string) => metrics.acceptFailures.inc({ listener, code }) };
  // Refused and closed connections come in floods: each is counted, the log says so at most every 10 s per reason.
  const refusalLog = new Map<string, { at: number; suppressed: number }>();
  const refuseConnection = (reason: ConnectionRefusal, address: string | undefined) => {
    metrics.mqttRefusals.inc({ reason });
    const now = Date.now();
    const last = refusalLog.get(reason);
    if (last && now - last.at < 10_000) {
      last.suppressed++;
      return;
    }
    refusalLog.set(reason, { at: now, suppressed: 0 });
    log.warn({ reason, address, suppressedSinceLastLine: last?.suppressed ?? 0 }, CONNECTION_REFUSALS[reason]);
  };
  /**
   * A new connection on any transport, seen on its TCP socket (before a TLS handshake or a
   * WebSocket upgrade): admitted, with the deadline for its CONNECT, or refused (`onRefused`
   * closes it the transport's way).
   */
  const arrive = (socket: net.Socket, onRefused: (reason: Refusal) => void): Connection | undefined => {
    const address = socket.remoteAddress;
    const outcome = admission.arrive(address, (reason) => {
      refuseConnection(reason, address);
      socket.destroy();
    });
    if (typeof outcome === 'string') {
      refuseConnection(outcome, address);
      onRefused(outcome);
      return undefined;
    }
    const connection: Connection = { ticket: outcome, socket, timer: undefined, ws: undefined };
    // A CONNECT must be read and answered in time: a connection that never sends one, trickles it,
    // or waits on its authentication holds a descriptor for at most connectTimeoutMs.
    connection.timer = setTimeout(() => {
      if (outcome.state !== 'pending') return;
      refuseConnection('connect_timeout', address);
      socket.destroy();
    }, connectTimeoutMs);
    connection.timer.unref();
    socket.once('close', () => {
      clearTimeout(connection.timer);
      admission.left(outcome);
    });
    return connection;
  };
  /** Authenticated as a device or application: no deadline any more, and the full packet (and frame) size. */
  const authenticated = (connection: Connection | undefined) => {
    if (!connection) return;
    clearTimeout(connection.timer);
    setFrameLimit(connection.ws, opts.maxPacketBytes);
  };
  // Sessions with publishes waiting on us (ingest holding them under backpressure, or the
  // database down). aedes reads nothing more from such a connection until they complete — that
  // is the backpressure — so it would not see the device's PINGREQ either: we keep its
  // keepalive alive meanwhile, or aedes would drop a healthy device for our silence.
  const held = new Set<Session>();
  const keepHeldAlive = setInterval(() => {
    for (const session of held) (session.client as Client & { _keepaliveTimer?: NodeJS.Timeout | null })._keepaliveTimer?.refresh();
  }, 1000);
  keepHeldAlive.unref();
  const settled = (session: Session) => {
    if (--session.waiting !== 0) return;
    held.delete(session);
    const refused = closing.get(session);
    if (refused) setImmediate(() => refused.splice(0).forEach((fail) => fail())); // after the last PUBACK is written
  };
  const refuse = (reason: string) => metrics.mqttRefusals.inc({ reason });
  const describe = (session: Session) => (session.kind === 'device' ? { device: session.device.id } : { [session.kind]: session.clientId });
  // Application sessions: events are filtered per principal; closed when their key changes or expires.
  const applications = new Set<ApplicationSession>();
  const expiryTimers = new WeakMap<ApplicationSession, NodeJS.Timeout>();
  // Which clients an event may be forwarded to (keyed by its payload Buffer, fresh per event).
  const eventAudience = new WeakMap<Buffer, WeakSet<Client>>();
  let events: Promise<void> = Promise.resolve();
  // Key changes, numbered: a session whose key changed while it was being authenticated is refused.
  let keySeq = 0;
  const keyChangedAt = new Map<number, number>();
  const authSeqs = new WeakMap<Client, number>();
  const closeApplication = (session: ApplicationSession, reason: string) => {
    log.info({ application: session.clientId, principal: session.principal.id, reason }, 'application session closed by the server');
    endReasons.set(session.client, 'credentials_changed'); // an MQTT 5 client is told: administrative action
    session.client.close();
  };
  const armExpiry = (session: ApplicationSession, expiresAt: number) => {
    const timer = setTimeout(
      () => {
        if (session.client.closed) return;
        if (Date.now() < expiresAt) return armExpiry(session, expiresAt);
        closeApplication(session, `the credential expired at ${new Date(expiresAt).toISOString()}`);
      },
      Math.min(Math.max(expiresAt - Date.now(), 0), 2_147_483_647),
    );
    timer.unref();
    expiryTimers.set(session, timer);
  };

  const aedes = new Aedes({
    connectTimeout: connectTimeoutMs + 1000, // a backstop: the connection's own deadline (arrive) comes first
    authenticate(client, username, password, done) {
      if (!accepting) return done(connackError('server is shutting down', 3), false);
      const connection = connectionOf.get(client);
      const address = connection?.socket.remoteAddress ?? (client.conn as net.Socket).remoteAddress ?? client.req?.socket.remoteAddress;
      // Beyond the connection budget: CONNACK 3, server unavailable (MQTT 3.1.1 §3.2.2.3, Table 3.1).
      const admitted = (kind: 'session' | 'anonymous', replacing = false) => {
        if (!connection || admission.startSession(connection.ticket, kind, { replacing })) return true;
        if (connection.ticket.state === 'closed') return false; // evicted meanwhile: already being closed
        refuseConnection('max_connections', address);
        connackReasons.set(client, REASON.serverBusy);
        done(connackError('server unavailable: connection limit reached', 3), false);
        return false;
      };
      authSeqs.set(client, keySeq);
      opts
        .authenticate({ clientId: client.id, username, password, address })
        .then((result) => {
          if (client.closed) return; // closed meanwhile (its deadline, an eviction): nothing to answer
          if (result.kind === 'refused') {
            if (username === APPLICATION_USERNAME) {
              opts.onApplicationAccess?.({ action: 'connect', principal: null, status: 401, clientId: client.id, address, reason: result.reason });
            }
            refuse(result.returnCode === 2 ? 'no_credentials' : 'bad_credentials');
            // MQTT 5 says why: too many failed connects from this address or for this credential (MQTT 5.0 §3.2.2.2, 0x9F).
            if (result.throttled) connackReasons.set(client, REASON.connectionRateExceeded);
            log.info({ clientId: client.id, address, reason: result.reason }, 'MQTT connect refused');
            return done(connackError(result.reason, result.returnCode), false);
          }
          const now = Date.now();
          const base = { client, clientId: client.id, address, connectedAt: now, lastActivity: now, waiting: 0, subscriptions: new Map<string, 0 | 1>() };
          if (result.kind === 'provision') {
            if (!admitted('anonymous')) return;
            // Anonymous, and anyone can open one: closed provisionTimeoutMs after it connected,
            // whether or not it asked anything (its answer closes it sooner: provision.ts).
            if (connection) {
              clearTimeout(connection.timer);
              connection.timer = setTimeout(() => {
                if (connection.ticket.state !== 'anonymous') return;
                refuseConnection('provision_timeout', address);
                connection.socket.destroy();
              }, provisionTimeoutMs);
              connection.timer.unref();
            }
            sessions.set(client, { ...base, kind: 'provision' });
            (client as { id: string }).id = `provision:${Math.random().toString(36).slice(2)}`;
            return done(null, true);
          }
          if (result.kind === 'application') {
            // Events are for connected subscribers: a persistent session would have aedes queue
            // every event in memory for as long as the application stays away.
            if (!client.clean) {
              refuse('persistent_session');
              log.info({ clientId: client.id, address }, 'MQTT connect refused: application sessions must be clean sessions');
              return done(connackError('application sessions must be clean sessions (clean session flag set)', 2), false);
            }
            if (!admitted('session', (aedes as unknown as { clients: Record<string, Client | undefined> }).clients[`app:${client.id}`] !== undefined)) return;
            authenticated(connection);
            sessions.set(client, { ...base, kind: 'application', principal: result.principal });
            (client as { id: string }).id = `app:${client.id}`; // never collides with device:<id> sessions
            log.info({ clientId: base.clientId, address, principal: result.principal.id }, 'application session connected');
            opts.onApplicationAccess?.({ action: 'connect', principal: result.principal, status: 200, clientId: base.clientId, address });
            return done(null, true);
          }
          const previous = byDevice.get(result.device.id);
          if (!admitted('session', previous !== undefined)) return;
          authenticated(connection);
          if (previous) endReasons.set(previous.client, 'taken_over');
          // Sessions are keyed by device, not by the client id the firmware chose: two devices
          // sharing a hard-coded client id must not knock each other off, and one device gets one session.
          (client as { id: string }).id = `device:${result.device.id}`;
          sessions.set(client, { ...base, kind: 'device', device: result.device });
          if (opts.publishRate && !limiters.has(result.device.id)) limiters.set(result.device.id, new RateLimiter(opts.publishRate));
          done(null, true);
        })
        .catch((err: Error) => {
          log.error({ err }, 'authentication failed');
          done(connackError('server unavailable', 3), false);
        });
    },
    authorizePublish(client, packet, done) {
      const session = client ? sessions.get(client) : undefined;
      if (!session) return done(new Error('publish from an unauthenticated client'));
      // mqtt-packet decodes invalid UTF-8 as U+FFFD. [MQTT-1.5.3-1], [MQTT-1.5.3-2]: close the connection.
      if (/[\u0000\ufffd]/.test(packet.topic)) return done(new Error('topic is not valid UTF-8 or contains U+0000'));
      packet.retain = false; // the device API never retains
      if (client!.closed && session.kind === 'device') session.willPublished = true; // aedes publishes the will on an unclean close
      const route = routePublish(handlers, session, packet.topic);
      if (route.kind === 'refused') {
        refuse('acl');
        log.info({ ...describe(session), topic: packet.topic, reason: route.reason }, 'publish refused');
        // ThingsBoard closes a provisioning session; an application session may not publish at all.
        if (session.kind !== 'device') return done(new Error(route.reason));
        notifyRefusal(session, packet.topic, 'topic_not_allowed', route.reason);
        const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
        opts.recordRefusal?.(session.device.id, packet.topic, payload, { reason: 'topic_not_allowed', detail: route.reason });
        // Acknowledged (the device must not resend it forever), not processed; the connection stays
        // open. The PUBACK is chosen by UNSUPPORTED_TOPIC_PUBACK (device-api.ts): plain under MQTT
        // 3.1.1, its reason code under MQTT 5 (told to the front end by packet id).
        if (packet.qos > 0 && packet.messageId !== undefined) unsupportedPublishes.get(client!)?.add(packet.messageId);
        return done(null);
      }
      const limiter = session.kind === 'device' && !client!.closed ? limiters.get(session.device.id) : undefined;
      const refusedBefore = closing.get(session);
      if (refusedBefore || (limiter && !limiter.take())) {
        refuse('rate_limited');
        const fail = () => done(new Error('publish rate limit exceeded'));
        if (refusedBefore) return session.waiting === 0 ? fail() : void refusedBefore.push(fail);
        log.warn({ ...describe(session), topic: packet.topic }, 'publish rate limit exceeded: connection closed, publish unacknowledged');
        if (session.kind === 'device') notifyRefusal(session, packet.topic, 'rate_limited', 'publish rate limit exceeded; the connection is closed and the message was not acknowledged: send it again later');
        endReasons.set(client!, 'rate_limited');
        if (session.waiting === 0) return fail();
        closing.set(session, [fail]);
        return;
      }
      if (session.waiting++ === 0) held.add(session);
      const handled =
        route.kind === 'provision'
          ? route.handler(session as Extract<Session, { kind: 'provision' }>, packet, undefined)
          : route.handler(session as DeviceSession, packet, route.requestId);
      handled.then(
        () => {
          settled(session);
          done(null);
        },
        (err: Error) => {
          settled(session);
          log.error({ err, ...describe(session), topic: packet.topic }, 'publish handler failed; closing connection unacknowledged');
          done(err);
        },
      );
    },
    authorizeSubscribe(client, sub, done) {
      const session = sessions.get(client);
      const allowed = session !== undefined && maySubscribe(session, sub.topic);
      if (session?.kind === 'application') {
        const { principal, clientId, address } = session;
        opts.onApplicationAccess?.({ action: 'subscribe', principal, status: allowed ? 200 : 403, clientId, address, topic: sub.topic });
      }
      if (session && allowed) {
        const qos = Math.min(sub.qos, 1) as 0 | 1;
        session.subscriptions.set(sub.topic, qos);
        return done(null, { ...sub, qos });
      }
      refuse('subscription');
      log.info({ clientId: client.id, topic: sub.topic }, 'subscription refused');
      done(null, null);
    },
    authorizeForward(client, packet) {
      const payload = packet.payload as Buffer;
      if (!serverOriginated.has(payload)) return null;
      const audience = eventAudience.get(payload);
      if (audience && !audience.has(client)) return null; // outside the session's scope
      const numbered = trackedPayloads.get(payload);
      if (numbered && packet.qos > 0 && !packet.messageId) {
        trackedPayloads.delete(payload);
        packet.messageId = nextPacketId(client);
        numbered(packet.messageId);
      }
      return packet;
    },
  });

  // Once a device's publish is authorized (and, for telemetry, committed), aedes acknowledges it
  // and hands it to aedes.publish for routing to subscribers. Nothing a device publishes is ever
  // routed (every device has the same `v1/devices/me/...` topics; messages to a device go through
  // `deliver`), so skip that step: no retained-message store, no offline queues, no topic matching.
  // (aedes's typings show publish(packet, callback); internally it is publish(packet, client, done).)
  type Publish = (packet: PublishPacket, client?: unknown, done?: (err?: Error | null) => void) => void;
  const route = aedes.publish.bind(aedes) as Publish;
  (aedes as unknown as { publish: Publish }).publish = (packet, client, done) => {
    if (typeof client === 'function' || !client) return route(packet, client, done);
    done?.(null);
  };

  aedes.on('clientReady', (client) => {
    const session = sessions.get(client);
    if (session?.kind === 'application') {
      const { keyId, expiresAt } = session.principal;
      if (keyId !== undefined && (keyChangedAt.get(keyId) ?? 0) > (authSeqs.get(client) ?? 0)) {
        return closeApplication(session, 'the API key changed while the session was being opened');
      }
      applications.add(session);
      if (expiresAt !== null) armExpiry(session, expiresAt);
      return;
    }
    if (session?.kind !== 'device') return;
    byDevice.set(session.device.id, session);
    log.debug({ device: session.device.id, clientId: session.clientId, address: session.address }, 'device connected');
    opts.onSessionStart?.(session);
  });
  aedes.on('unsubscribe', (topics, client) => {
    const session = client && sessions.get(client);
    if (session) for (const t of topics) session.subscriptions.delete(t);
  });
  aedes.on('keepaliveTimeout', (client) => endReasons.set(client, endReasons.get(client) ?? 'keepalive_timeout'));
  aedes.on('clientDisconnect', (client) => {
    pubacksLost(client);
    const session = sessions.get(client);
    if (session?.kind === 'application') {
      applications.delete(session);
      clearTimeout(expiryTimers.get(session));
    }
    if (session?.kind !== 'device') return;
    if (byDevice.get(session.device.id) === session) byDevice.delete(session.device.id);
    const graceful = (client as Client & { _disconnected?: boolean })._disconnected === true;
    const reason = endReasons.get(client) ?? (graceful ? 'client_disconnect' : accepting ? 'connection_lost' : 'server_shutdown');
    opts.onSessionEnd?.(session, { reason, willPublished: session.willPublished === true, at: Date.now() });
  });
  // Protocol violations, keepalive timeouts, sockets reset: the connection is closed, the rest carry on.
  aedes.on('clientError', (client, err) => {
    refuse('client_error');
    if (!endReasons.has(client) && /invalid|malformed|not allowed|unknown/i.test(err.message)) endReasons.set(client, 'protocol_error');
    log.debug({ clientId: client.id, err: err.message }, 'client error: connection closed');
  });
  aedes.on('connectionError', (client, err) => {
    refuse('connection_error');
    log.debug({ clientId: client.id, err: err.message }, 'connection error: connection closed');
  });

  function write(session: Session, to: Outbound, payload: Buffer | string, qos?: 0 | 1): Promise<boolean> {
    return new Promise((resolve) => {
      if (session.client.closed) return resolve(false);
      // Refusal notices (a GuanLink extension) go only to devices that asked for them: firmware
      // that never subscribed gets no unexpected PUBLISH (unread, it turns the device's close
      // into a TCP reset, and the clean disconnect into a lost connection).
      if (to === ERRORS_TOPIC && !session.subscriptions.has(ERRORS_TOPIC)) return resolve(false);
      const topic = typeof to === 'string' ? to : outboundTopic(session, to.kind, to.suffix);
      const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
      serverOriginated.add(body);
      // ThingsBoard: min(the QoS the device subscribed with, 1); 1 when it did not subscribe.
      const granted = qos ?? session.subscriptions.get(typeof to === 'string' ? to : topic) ?? subscribedQos(session, topic) ?? 1;
      session.client.publish({ cmd: 'publish', topic, payload: body, qos: granted, retain: false, dup: false }, (err) => resolve(!err));
    });
  }
  const deliver: Deliver = (deviceId, to, payload, qos) => {
    const session = byDevice.get(deviceId);
    return session ? write(session, to, payload, qos) : Promise.resolve(false);
  };
  const deliverToSession: DeliverToSession = (session, to, payload, qos) => write(session, to, payload, qos);

  /** The connection ended: tracked publishes still awaiting their PUBACK will not get it. */
  function pubacksLost(client: Client): void {
    const pending = awaitingAck.get(client);
    awaitingAck.delete(client);
    for (const acked of pending?.values() ?? []) acked(false);
  }
  function pubackReceived(client: Client, messageId: number | undefined): void {
    const pending = awaitingAck.get(client);
    const acked = messageId === undefined ? undefined : pending?.get(messageId);
    if (!acked) return;
    pending!.delete(messageId!);
    acked(true);
  }
  const deliverTracked: DeliverTracked = (session, to, payload, qos) => {
    const client = session.client;
    let settle!: (acked: boolean) => void;
    const acknowledged = new Promise<boolean>((resolve) => (settle = resolve));
    const body = Buffer.from(payload); // a fresh Buffer: it identifies this publish in authorizeForward
    let awaitingPuback = false;
    trackedPayloads.set(body, (messageId) => {
      awaitingPuback = true;
      let pending = awaitingAck.get(client);
      if (!pending) awaitingAck.set(client, (pending = new Map()));
      pending.set(messageId, settle);
    });
    const written = write(session, to, body, qos).then((ok) => {
      trackedPayloads.delete(body);
      if (!ok || !awaitingPuback) settle(ok); // not written; or QoS 0: delivered once written
      if (!ok) awaitingAck.get(client)?.forEach((acked, id, pending) => acked === settle && pending.delete(id));
      return ok;
    });
    return { written, acknowledged };
  };

  function notifyRefusal(session: DeviceSession, topic: string, reason: string, detail: string): void {
    void write(session, ERRORS_TOPIC, JSON.stringify({ topic, ts: Date.now(), stored: 0, errors: [{ reason, detail }] }), 0);
  }

  const handlers = opts.handlers(deliver, deliverToSession);

  /**
   * Hands a connection to aedes once its CONNECT's protocol level is known: MQTT 3.1 and 3.1.1
   * directly, MQTT 5.0 through the v5 front end (mqtt5/front-end.ts), which translates both ways
   * and is told here why the broker refused or ended something.
   */
  function handle(conn: Duplex, req: IncomingMessage | undefined, address: string | undefined, connection: Connection): void {
    whenProtocolKnown(conn, (level) => {
      if (level !== 5) return void handleCore(conn, req, address, connection, false);
      const packetLimit = () => (connection.ticket.state === 'session' ? opts.maxPacketBytes : preAuthBytes);
      const front = mqtt5FrontEnd(conn, {
        limits: { maximumPacketBytes: opts.maxPacketBytes, receiveMaximum: MQTT5_RECEIVE_MAXIMUM, topicAliasMaximum: MQTT5_TOPIC_ALIAS_MAXIMUM },
        packetLimit,
        onTooLarge: (announced, limit) => {
          refuse('packet_too_large');
          log.info({ address, announced, limit, authenticated: connection.ticket.state === 'session', mqtt: 5 }, 'MQTT packet too large: connection closed');
        },
        onViolation: (reasonCode, detail) => {
          endReasons.set(client, 'protocol_error');
          refuse('protocol_error');
          log.info({ address, reasonCode, detail }, 'MQTT 5 protocol violation: connection closed');
        },
      });
      const client = handleCore(front.inner, req, address, connection, true);
      unsupportedPublishes.set(client, new Set());
      front.attach({
        connackReason: () => connackReasons.get(client),
        pubackReason: (messageId) => (unsupportedPublishes.get(client)!.delete(messageId) ? UNSUPPORTED_TOPIC_PUBACK.mqtt5ReasonCode : undefined),
        endReason: () => {
          const session = sessions.get(client);
          return endReasons.get(client) ?? (session?.kind === 'provision' && session.answered ? 'provisioned' : accepting ? undefined : 'server_shutdown');
        },
      });
    });
  }

  /** Hands a (3.1.1) connection to aedes, refusing oversized packets as soon as their header is read (for MQTT 5, the front end does). */
  function handleCore(conn: Duplex, req: IncomingMessage | undefined, address: string | undefined, connection: Connection, mqtt5: boolean): Client {
    type Parser = {
      parse(buf: Buffer): number;
      _parseHeader(): boolean;
      _parseLength(): boolean;
      _list: { length: number };
      packet: { length: number };
      on(event: 'packet', listener: (packet: { cmd: string; messageId?: number }) => void): void;
    };
    const client = aedes.handle(conn, req) as Client & { _parser: Parser; connackSent: boolean };
    connectionOf.set(client, connection);
    let firstPacketRead = false;
    client._parser.on('packet', (packet) => {
      firstPacketRead = true;
      if (packet.cmd === 'puback') pubackReceived(client, packet.messageId);
    });
    // aedes 1.2 has no packet-size limit for MQTT 3.1.1 and would buffer a 256 MB body. mqtt-packet
    // knows the announced length once the fixed header's remaining length is read (`_parseLength`,
    // one state of its parse loop): refuse there. Checking only after parse(buf) returned missed
    // every oversized packet that arrived whole in one socket read (up to ~64 kB): it had already
    // been parsed and handed to aedes.
    // Until the connection is authenticated as a device or application (a CONNECT, a provisioning
    // session's requests) the limit is the unauthenticated one: what anyone may make the broker hold.
    const parser = client._parser;
    const parse = parser.parse.bind(parser);
    const parseHeader = parser._parseHeader.bind(parser);
    const parseLength = parser._parseLength.bind(parser);
    let refused = false;
    parser._parseLength = () => {
      const complete = parseLength();
      // MQTT 5: the front end checks the packet as the client sent it; here it arrives translated
      // (a topic alias resolved may make it longer than on the wire).
      if (mqtt5) return complete;
      const limit = connection.ticket.state === 'session' ? opts.maxPacketBytes : preAuthBytes;
      if (!complete || parser.packet.length <= limit) return complete;
      refused = true;
      refuse('packet_too_large');
      log.info({ clientId: client.id, address, announced: parser.packet.length, limit, authenticated: connection.ticket.state === 'session' }, 'MQTT packet too large: connection closed');
      conn.destroy();
      return false; // stops this parse loop: the body is never read
    };
    // The first packet must be the CONNECT [MQTT-3.1.0-1]; a client may send more without waiting
    // for the CONNACK, and if the CONNECT is refused none of it may be processed [MQTT-3.1.4-5].
    // aedes would meanwhile parse whatever follows into a queue (up to 42 packets, each up to the
    // packet limit): here parsing stops after the first packet, what follows waits as bytes (the
    // socket's backpressure), and once the CONNACK is sent it is parsed, in order.
    parser._parseHeader = () => (firstPacketRead && !client.connackSent ? false : parseHeader());
    client.once('connected', () =>
      setImmediate(() => {
        if (!client.closed && !refused && parser._list.length > 0) parser.parse(Buffer.alloc(0));
      }),
    );
    parser.parse = (buf: Buffer) => {
      if (refused) return 0;
      // Last seen: the time of the client's last packet (one store per socket read, not per message).
      const session = sessions.get(client);
      if (session) session.lastActivity = Date.now();
      return parse(buf);
    };
    return client;
  }

  const tcp = net.createServer((socket) => {
    const connection = arrive(socket, () => socket.destroy());
    if (!connection) return;
    socket.setNoDelay(true);
    handle(socket, undefined, socket.remoteAddress, connection);
  });
  let tlsServer: tls.Server | undefined;
  // A WebSocket frame carries at most one MQTT packet here: its limit is the packet limit (plus the
  // fixed header, at most 5 bytes: MQTT 3.1.1 §2.2), and before authentication the unauthenticated
  // one (setFrameLimit). ws refuses a longer frame from its header (close code 1009), before
  // buffering it: its default, 100 MiB, let a client make the broker hold 100 MiB per connection.
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: opts.maxPacketBytes + MQTT_FIXED_HEADER_MAX });

  const listenOn = (server: net.Server, port: number, host: string) =>
    new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve((server.address() as net.AddressInfo).port);
      });
    });

  return {
    async listen(port, host) {
      await aedes.listen(); // aedes 1.x: starts the broker (it refuses connections until then)
      const bound = await listenOn(tcp, port, host);
      watchAcceptErrors(tcp, 'mqtt', acceptErrors);
      return bound;
    },
    async listenTls(port, host, credentials) {
      // Admitted on the TCP connection, before the handshake (which holds a descriptor and costs
      // CPU too), and the handshake is bounded by the CONNECT deadline (Node's default: 120 s).
      const handshaking = new Map<string, Connection>();
      const keyOf = (s: net.Socket) => `${s.remoteAddress}|${s.remotePort}`;
      tlsServer = tls.createServer({ cert: credentials.cert, key: credentials.key, minVersion: 'TLSv1.2', handshakeTimeout: connectTimeoutMs }, (socket) => {
        const connection = handshaking.get(keyOf(socket));
        handshaking.delete(keyOf(socket));
        if (!connection || connection.ticket.state === 'closed') return void socket.destroy();
        socket.setNoDelay(true);
        handle(socket, undefined, socket.remoteAddress, connection);
      });
      tlsServer.on('connection', (raw: net.Socket) => {
        const connection = arrive(raw, () => raw.destroy());
        if (!connection) return;
        const key = keyOf(raw);
        handshaking.set(key, connection);
        raw.once('close', () => handshaking.get(key) === connection && handshaking.delete(key));
      });
      tlsServer.on('tlsClientError', (err) => {
        refuse('tls_error');
        log.debug({ err: err.message }, 'TLS handshake failed');
      });
      const bound = await listenOn(tlsServer, port, host);
      watchAcceptErrors(tlsServer, 'mqtts', acceptErrors);
      return bound;
    },
    handleUpgrade(req, socket, head) {
      if (!accepting) return void socket.destroy();
      const raw = req.socket;
      // Refused before the handshake, with an HTTP status a WebSocket client can report.
      const connection = arrive(raw, (reason) => {
        const status = reason === 'address_rate' ? '429 Too Many Requests' : '503 Service Unavailable';
        socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`, () => socket.destroy());
      });
      if (!connection) return;
      wss.handleUpgrade(req, socket, head, (ws) => {
        if (connection.ticket.state === 'closed') return void ws.terminate();
        connection.ws = ws;
        if (connection.ticket.state !== 'session') setFrameLimit(ws, preAuthBytes);
        const stream = createWebSocketStream(ws);
        stream.on('error', () => stream.destroy());
        handle(stream, req, raw.remoteAddress, connection);
      });
    },
    deliver,
    deliverToSession,
    deliverTracked,
    session: (deviceId) => byDevice.get(deviceId),
    disconnect(deviceId, reason) {
      const session = byDevice.get(deviceId);
      if (!session) return false;
      endReasons.set(session.client, reason);
      log.info({ device: deviceId, reason }, 'device session closed by the server');
      session.client.close();
      return true;
    },
    updateDevice(device) {
      const session = byDevice.get(device.id);
      if (session) session.device = device;
    },
    publishEvent(topic, payload, visibleTo) {
      if (!topic.startsWith(PLATFORM_EVENTS_PREFIX)) return Promise.reject(new Error(`platform events are published under ${PLATFORM_EVENTS_PREFIX}, not ${topic}`));
      const body = Buffer.from(payload); // fresh: marks this publish as the server's in authorizeForward
      serverOriginated.add(body);
      const publish = () =>
        new Promise<void>((resolve, reject) => {
          route({ cmd: 'publish', topic, payload: body, qos: 1, retain: false, dup: false } as PublishPacket, undefined, (err) => (err ? reject(err) : resolve()));
        });
      if (!visibleTo) return publish();
      // Who may have it, decided before it is routed: once per distinct scope among the sessions
      // subscribed to anything. A session that connects meanwhile is not in the audience.
      const decide = async () => {
        const audience = new WeakSet<Client>();
        const byScope = new Map<string, Promise<boolean>>();
        for (const session of applications) {
          if (session.subscriptions.size === 0) continue;
          const key = session.principal.scope.key;
          let visible = byScope.get(key);
          if (!visible) {
            visible = Promise.resolve()
              .then(() => visibleTo(session.principal))
              .catch((err: Error) => {
                log.warn({ err: err.message, topic }, 'event scope check failed: not delivered to that scope');
                return false;
              });
            byScope.set(key, visible);
          }
          if (await visible) audience.add(session.client);
        }
        eventAudience.set(body, audience);
        return { delivered: publish() }; // routed now (in order); delivery completes on its own
      };
      // In order: a later event must not overtake an earlier one whose check waits on the database.
      const decided = events.then(decide);
      events = decided.then(
        () => undefined,
        () => undefined,
      );
      return decided.then((r) => r.delivered);
    },
    closeApplicationSessions(keyId, reason) {
      keyChangedAt.set(keyId, ++keySeq);
      let closed = 0;
      for (const session of applications) {
        if (session.principal.keyId !== keyId) continue;
        applications.delete(session);
        closeApplication(session, reason);
        closed++;
      }
      return closed;
    },
    get connectedClients() {
      return aedes.connectedClients;
    },
    get connections() {
      return { open: admission.connections, sessions: admission.sessions, unauthenticated: admission.unauthenticatedCount };
    },
    get listening() {
      return tcp.listening;
    },
    async stopAccepting() {
      accepting = false;
      if (tcp.listening) tcp.close(); // stops listening now; its callback waits for open sockets
      if (tlsServer?.listening) tlsServer.close();
      // Read no further packets; those already read still complete (and are acknowledged). Safe
      // here, unlike under load: aedes's pause() loses track of packets that complete while paused,
      // which only matters if reading were to resume.
      for (const session of byDevice.values()) pauseClient(session.client);
    },
    async close() {
      accepting = false;
      clearInterval(keepHeldAlive);
      clearInterval(forgetRefilled);
      clearInterval(forgetAddresses);
      if (tcp.listening) tcp.close();
      if (tlsServer?.listening) tlsServer.close();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const ws of wss.clients) ws.terminate();
    },
  };
}

/** The next packet id of a client, taken the way aedes numbers a QoS 1 packet (1…65535, wrapping). */
function nextPacketId(client: Client): number {
  const c = client as Client & { _nextId: number };
  const id = c._nextId;
  c._nextId = id >= 65535 ? 1 : id + 1;
  return id;
}

/** The QoS of the subscription that matches a topic (`…/+` filters for request/response topics). */
function subscribedQos(session: Session, topic: string): 0 | 1 | undefined {
  const slash = topic.lastIndexOf('/');
  return slash > 0 ? session.subscriptions.get(`${topic.slice(0, slash)}/+`) : undefined;
}
