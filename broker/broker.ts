import net from 'node:net';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Aedes, type AuthenticateError, type Client, type PublishPacket } from 'aedes';
import { WebSocketServer, createWebSocketStream } from 'ws';
import type { Logger } from '../core/log.ts';
import type { Metrics } from '../core/metrics.ts';
import type { DeviceContext } from '../core/registry.ts';
import { maySubscribe, routePublish, type DeviceApiRoutes } from './device-api.ts';
import type { Deliver, Session } from './session.ts';

export interface BrokerOptions {
  log: Logger;
  metrics: Metrics;
  authenticate: (token: string) => Promise<DeviceContext | undefined>;
  routes: (deliver: Deliver) => DeviceApiRoutes;
  /**
   * An MQTT packet announcing more than this is refused as soon as its header arrives: the
   * connection is closed before the body is buffered. Smaller packets whose payload exceeds the
   * ingest limit are answered with a reason instead (see ingest).
   */
  maxPacketBytes: number;
}

export interface Broker {
  /** Starts the MQTT-over-TCP listener; resolves with the bound port. */
  listen(port: number, host: string): Promise<number>;
  /** Upgrades an HTTP request to MQTT over WebSocket. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  deliver: Deliver;
  session(deviceId: number): Session | undefined;
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
 * The embedded MQTT broker (aedes). Devices authenticate with their access token as username;
 * each device has at most one session (a new connection takes over the old one, as in
 * ThingsBoard). A publish is acknowledged only when its handler resolves — for telemetry, after
 * commit. Nothing is routed between clients: every device uses the same `v1/devices/me/...`
 * topics, so messages to a device are written to its own connection (`deliver`).
 */
export function createBroker(opts: BrokerOptions): Broker {
  const { log, metrics } = opts;
  const sessions = new WeakMap<Client, Session>();
  const byDevice = new Map<number, Session>();
  const serverOriginated = new WeakSet<Buffer>();
  let accepting = true;
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
    if (--session.waiting === 0) held.delete(session);
  };
  const refuse = (reason: string) => metrics.mqttRefusals.inc({ reason });

  const aedes = new Aedes({
    connectTimeout: 10_000,
    authenticate(client, username, _password, done) {
      if (!accepting) return done(connackError('server is shutting down', 3), false);
      if (!username) {
        refuse('no_token');
        return done(connackError('access token missing (send it as the MQTT username)', 5), false);
      }
      opts
        .authenticate(username)
        .then((device) => {
          if (!device) {
            refuse('bad_token');
            log.info({ clientId: client.id, address: client.conn && (client.conn as net.Socket).remoteAddress }, 'MQTT connect refused: unknown access token');
            return done(connackError('not authorized', 5), false);
          }
          const session: Session = {
            device,
            client,
            clientId: client.id,
            address: (client.conn as net.Socket).remoteAddress ?? client.req?.socket.remoteAddress,
            connectedAt: Date.now(),
            waiting: 0,
          };
          // Sessions are keyed by device, not by the client id the firmware chose: two devices
          // sharing a hard-coded client id must not knock each other off, and one device gets one session.
          (client as { id: string }).id = `device:${device.id}`;
          sessions.set(client, session);
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
      if (packet.topic.startsWith('$SYS')) return done(new Error('$SYS topics are reserved'));
      // mqtt-packet decodes invalid UTF-8 as U+FFFD. [MQTT-1.5.3-1], [MQTT-1.5.3-2]: close the connection.
      if (/[\u0000\ufffd]/.test(packet.topic)) return done(new Error('topic is not valid UTF-8 or contains U+0000'));
      packet.retain = false; // the device API never retains
      const handler = routePublish(routes, packet.topic);
      if (!handler) {
        refuse('topic_outside_api');
        log.info({ device: session.device.id, topic: packet.topic }, 'publish to a topic outside the device API ignored');
        return done(null);
      }
      if (session.waiting++ === 0) held.add(session);
      handler(session, packet).then(
        () => {
          settled(session);
          done(null);
        },
        (err: Error) => {
          settled(session);
          log.error({ err, device: session.device.id, topic: packet.topic }, 'publish handler failed; closing connection unacknowledged');
          done(err);
        },
      );
    },
    authorizeSubscribe(client, sub, done) {
      if (sessions.get(client) && maySubscribe(sub.topic)) return done(null, { ...sub, qos: Math.min(sub.qos, 1) as 0 | 1 });
      refuse('subscription');
      log.info({ clientId: client.id, topic: sub.topic }, 'subscription refused');
      done(null, null);
    },
    authorizeForward(_client, packet) {
      return serverOriginated.has(packet.payload as Buffer) ? packet : null;
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
    if (!session) return;
    byDevice.set(session.device.id, session);
    log.debug({ device: session.device.id, clientId: session.clientId, address: session.address }, 'device connected');
  });
  aedes.on('clientDisconnect', (client) => {
    const session = sessions.get(client);
    if (session && byDevice.get(session.device.id) === session) byDevice.delete(session.device.id);
  });
  // Protocol violations, keepalive timeouts, sockets reset: the connection is closed, the rest carry on.
  aedes.on('clientError', (client, err) => {
    refuse('client_error');
    log.debug({ clientId: client.id, err: err.message }, 'client error: connection closed');
  });
  aedes.on('connectionError', (client, err) => {
    refuse('connection_error');
    log.debug({ clientId: client.id, err: err.message }, 'connection error: connection closed');
  });

  const deliver: Deliver = (deviceId, topic, payload, qos = 1) =>
    new Promise((resolve) => {
      const session = byDevice.get(deviceId);
      if (!session || session.client.closed) return resolve(false);
      const body = typeof payload === 'string' ? Buffer.from(payload) : payload;
      serverOriginated.add(body);
      session.client.publish({ cmd: 'publish', topic, payload: body, qos, retain: false, dup: false }, (err) => resolve(!err));
    });

  const routes = opts.routes(deliver);

  /** Hands a connection to aedes, refusing oversized packets as soon as their header is read. */
  function handle(conn: Duplex, req?: IncomingMessage, address?: string): void {
    type Parser = { parse(buf: Buffer): number; _parseLength(): boolean; packet: { length: number } };
    const client = aedes.handle(conn, req) as Client & { _parser: Parser };
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
    parser.parse = (buf: Buffer) => (refused ? 0 : parse(buf));
  }

  const tcp = net.createServer((socket) => {
    socket.setNoDelay(true);
    handle(socket, undefined, socket.remoteAddress);
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });

  return {
    async listen(port, host) {
      await aedes.listen(); // aedes 1.x: starts the broker (it refuses connections until then)
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(port, host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
      return (tcp.address() as net.AddressInfo).port;
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
    session: (deviceId) => byDevice.get(deviceId),

    get connectedClients() {
      return aedes.connectedClients;
    },
    get listening() {
      return tcp.listening;
    },
    async stopAccepting() {
      accepting = false;
      if (tcp.listening) tcp.close(); // stops listening now; its callback waits for open sockets
      // Read no further packets; those already read still complete (and are acknowledged). Safe
      // here, unlike under load: aedes's pause() loses track of packets that complete while paused,
      // which only matters if reading were to resume.
      for (const session of byDevice.values()) pauseClient(session.client);
    },
    async close() {
      accepting = false;
      clearInterval(keepHeldAlive);
      if (tcp.listening) tcp.close();
      await new Promise<void>((resolve) => aedes.close(() => resolve()));
      for (const ws of wss.clients) ws.terminate();
    },
  };
}
