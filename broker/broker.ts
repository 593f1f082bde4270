import net from 'node:net';
import tls from 'node:tls';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Aedes, type AuthenticateError, type Client, type PublishPacket } from 'aedes';
import { WebSocketServer, createWebSocketStream } from 'ws';
import type { Principal } from '../core/access/principal.ts';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import { RateLimiter, type RateLimitSpec } from '../core/rate-limit.ts';
import type { DeviceContext } from '../core/registry.ts';
import { APPLICATION_USERNAME, type AuthResult, type ConnectCredentials } from './auth.ts';
import { PLATFORM_EVENTS_PREFIX, maySubscribe, outboundTopic, routePublish, type DeviceApiHandlers } from './device-api.ts';
import { ERRORS_TOPIC } from './handlers/telemetry.ts';
import type { ApplicationSession, Deliver, DeliverToSession, DeliverTracked, DeviceSession, Outbound, Session } from './session.ts';

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
  /** Connections beyond this get CONNACK 3 (server unavailable). */
  maxConnections: number;
  /** Per-device publish rate; beyond it the connection is closed, the publish unacknowledged. */
  publishRate?: RateLimitSpec[];
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
  | 'server_shutdown'
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
  readonly listening: boolean;
  /** Stops taking new connections and new messages; in-flight publishes still complete. */
  stopAccepting(): Promise<void>;
  /** Disconnects everyone and closes the broker. */
  close(): Promise<void>;
}

/** Stops reading a client's socket (aedes: no further batches are parsed until resume()). */
function pauseClient(client: Client): void {
  (client as Client & { pause(): void }).pause();
}

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
 */
export function createBroker(opts: BrokerOptions): Broker {
  const { log, metrics } = opts;
  const sessions = new WeakMap<Client, Session>();
  const byDevice = new Map<number, DeviceSession>();
  const endReasons = new WeakMap<Client, EndReason>();
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
  let connections = 0;
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
    connectTimeout: 10_000,
    authenticate(client, username, password, done) {
      if (!accepting) return done(connackError('server is shutting down', 3), false);
      if (connections > opts.maxConnections) {
        refuse('max_connections');
        log.warn({ limit: opts.maxConnections, address: (client.conn as net.Socket).remoteAddress }, 'MQTT connect refused: connection limit reached');
        return done(connackError('server unavailable: connection limit reached', 3), false);
      }
      const address = (client.conn as net.Socket).remoteAddress ?? client.req?.socket.remoteAddress;
      authSeqs.set(client, keySeq);
      opts
        .authenticate({ clientId: client.id, username, password })
        .then((result) => {
          if (result.kind === 'refused') {
            if (username === APPLICATION_USERNAME) {
              opts.onApplicationAccess?.({ action: 'connect', principal: null, status: 401, clientId: client.id, address, reason: result.reason });
            }
            refuse(result.returnCode === 2 ? 'no_credentials' : 'bad_credentials');
            log.info({ clientId: client.id, address, reason: result.reason }, 'MQTT connect refused');
            return done(connackError(result.reason, result.returnCode), false);
          }
          const now = Date.now();
          const base = { client, clientId: client.id, address, connectedAt: now, lastActivity: now, waiting: 0, subscriptions: new Map<string, 0 | 1>() };
          if (result.kind === 'provision') {
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
            sessions.set(client, { ...base, kind: 'application', principal: result.principal });
            (client as { id: string }).id = `app:${client.id}`; // never collides with device:<id> sessions
            log.info({ clientId: base.clientId, address, principal: result.principal.id }, 'application session connected');
            opts.onApplicationAccess?.({ action: 'connect', principal: result.principal, status: 200, clientId: base.clientId, address });
            return done(null, true);
          }
          const previous = byDevice.get(result.device.id);
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
        return done(null); // acknowledged (the device must not resend it forever), not processed
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

  /** Hands a connection to aedes, refusing oversized packets as soon as their header is read. */
  function handle(conn: Duplex, req?: IncomingMessage, address?: string): void {
    connections++;
    conn.once('close', () => connections--);
    type Parser = {
      parse(buf: Buffer): number;
      _parseLength(): boolean;
      packet: { length: number };
      on(event: 'packet', listener: (packet: { cmd: string; messageId?: number }) => void): void;
    };
    const client = aedes.handle(conn, req) as Client & { _parser: Parser };
    client._parser.on('packet', (packet) => {
      if (packet.cmd === 'puback') pubackReceived(client, packet.messageId);
    });
    // aedes 1.2 has no packet-size limit for MQTT 3.1.1 and would buffer a 256 MB body. mqtt-packet
    // knows the announced length once the fixed header's remaining length is read (`_parseLength`,
    // one state of its parse loop): refuse there. Checking only after parse(buf) returned missed
    // every oversized packet that arrived whole in one socket read (up to ~64 kB): it had already
    // been parsed and handed to aedes.
    const parser = client._parser;
    const parse = parser.parse.bind(parser);
    const parseLength = parser._parseLength.bind(parser);
    let refused = false;
    parser._parseLength = () => {
      const complete = parseLength();
      if (!complete || parser.packet.length <= opts.maxPacketBytes) return complete;
      refused = true;
      refuse('packet_too_large');
      log.info({ clientId: client.id, address, announced: parser.packet.length, limit: opts.maxPacketBytes }, 'MQTT packet too large: connection closed');
      conn.destroy();
      return false; // stops this parse loop: the body is never read
    };
    parser.parse = (buf: Buffer) => {
      if (refused) return 0;
      // Last seen: the time of the client's last packet (one store per socket read, not per message).
      const session = sessions.get(client);
      if (session) session.lastActivity = Date.now();
      return parse(buf);
    };
  }

  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    handle(socket, undefined, socket.remoteAddress);
  });
  let tlsServer: tls.Server | undefined;
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

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
      return listenOn(tcp, port, host);
    },
    async listenTls(port, host, credentials) {
      tlsServer = tls.createServer({ cert: credentials.cert, key: credentials.key, minVersion: 'TLSv1.2' }, (socket) => {
        socket.setNoDelay(true);
        handle(socket, undefined, socket.remoteAddress);
      });
      tlsServer.on('tlsClientError', (err) => {
        refuse('tls_error');
        log.debug({ err: err.message }, 'TLS handshake failed');
      });
      return listenOn(tlsServer, port, host);
    },
    handleUpgrade(req, socket, head) {
      if (!accepting) return void socket.destroy();
      wss.handleUpgrade(req, socket, head, (ws) => {
        const stream = createWebSocketStream(ws);
        stream.on('error', () => stream.destroy());
        handle(stream, req, req.socket.remoteAddress);
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
