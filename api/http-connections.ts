import { STATUS_CODES, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../core/log.ts';
import { problem, PROBLEM_CONTENT_TYPE } from './problem.ts';

export type UpgradeHandler = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

export interface HttpConnections {
  /** Connections handed over by an upgrade (WebSocket) and still open. */
  readonly upgraded: number;
  /**
   * Shutdown, first part: stops accepting (`close` — fastify's and socket.io's), closes idle
   * keep-alive connections, gives requests in progress up to the grace period, then closes their
   * connections. Connections upgraded to WebSocket are left to their owners (socket.io closes its
   * own; the broker closes MQTT over WebSocket later, after its final messages).
   */
  drain(close: () => Promise<unknown>): Promise<void>;
  /** Shutdown, last part: waits (bounded) for the server to be closed, destroying upgraded connections still open. */
  finish(boundMs?: number): Promise<void>;
}

/**
 * The HTTP server's connections beyond fastify: protocol upgrades and shutdown.
 *
 * Upgrades: `handlers` take their paths (`/mqtt`: MQTT over WebSocket); `passThrough` prefixes
 * are answered by a listener of their own (socket.io's engine, attached with destroyUpgrade off).
 * Every other upgrade request is answered 400 with problem details and closed: RFC 9110 §7.8 lets
 * a server ignore Upgrade, but once the request has been handed to the 'upgrade' event nobody else
 * would ever answer or close it (it held the connection, and shutdown, forever).
 */
export function httpConnections(
  server: Server,
  opts: { log: Logger; graceMs: number; handlers: Record<string, UpgradeHandler>; passThrough: string[] },
): HttpConnections {
  const { log } = opts;
  const upgraded = new Set<Duplex>();
  let closing: Promise<unknown> | undefined;

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    upgraded.add(socket);
    socket.once('close', () => upgraded.delete(socket));
    socket.on('error', () => socket.destroy());
    const url = req.url ?? '/';
    const path = url.split('?')[0]!;
    const handler = opts.handlers[path];
    if (handler) return handler(req, socket, head);
    if (opts.passThrough.some((prefix) => url.startsWith(prefix))) return;
    refuseUpgrade(socket, 400, `no protocol upgrade is offered at ${path}: WebSocket is at ${[...Object.keys(opts.handlers), ...opts.passThrough].join(' and ')}`);
  });

  const httpConnectionsOpen = () =>
    new Promise<number>((resolve) => server.getConnections((err, count) => resolve(err ? 0 : Math.max(0, count - upgraded.size))));

  return {
    get upgraded() {
      return upgraded.size;
    },
    async drain(close) {
      closing = close().catch((err: unknown) => log.warn({ err }, 'HTTP server: error while closing'));
      const deadline = Date.now() + opts.graceMs;
      for (;;) {
        // Keep-alive connections that finish their request while the server closes become idle: closed at once.
        server.closeIdleConnections();
        const open = await httpConnectionsOpen();
        if (open === 0) return;
        if (Date.now() >= deadline) {
          log.warn({ connections: open, graceMs: opts.graceMs }, 'shutting down: HTTP requests still in progress after the grace period (HTTP_SHUTDOWN_GRACE_MS); closing their connections');
          server.closeAllConnections();
          return;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    },
    async finish(boundMs = 2000) {
      if (!closing) return;
      const done = await settlesWithin(closing, boundMs);
      if (done) return;
      log.warn({ upgraded: upgraded.size }, 'shutting down: upgraded (WebSocket) connections still open; closing them');
      for (const socket of upgraded) socket.destroy();
      server.closeAllConnections();
      if (!(await settlesWithin(closing, boundMs))) log.error('shutting down: the HTTP server did not close; carrying on');
    },
  };
}

/** Answers an upgrade request that nobody takes with `status` and closes the connection. */
export function refuseUpgrade(socket: Duplex, status: number, detail: string): void {
  if (!socket.writable) return void socket.destroy();
  const body = JSON.stringify(problem(status, detail));
  setTimeout(() => socket.destroy(), 5000).unref(); // a client that does not even take the answer
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    // The server's sockets allow half-open connections: without this the client could keep it open by never closing its side.
    () => socket.destroy(),
  );
}

async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
