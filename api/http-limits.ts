import type { Socket } from 'node:net';
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, type Registry } from 'prom-client';
import { ConfigError } from '../core/config.ts';
import { problem, PROBLEM_CONTENT_TYPE } from './problem.ts';
import { loggedPath } from './logged-path.ts';

/** The HTTP server's limits, as configured (core/config.ts). */
export interface HttpSettings {
  /** HTTP_HEADERS_TIMEOUT_MS: a request's headers must have arrived within this. */
  httpHeadersTimeoutMs: number;
  /** HTTP_REQUEST_TIMEOUT_MS: a whole request (headers and body) must have arrived within this. */
  httpRequestTimeoutMs: number;
  /** HTTP_IDLE_TIMEOUT_MS: a connection on which the client moves nothing for this long is closed. */
  httpIdleTimeoutMs: number;
  /** HTTP_KEEPALIVE_TIMEOUT_MS: an idle keep-alive connection is closed after this. */
  httpKeepAliveTimeoutMs: number;
  /** HTTP_MAX_UNAUTHENTICATED: requests without a verified credential in progress at once. */
  httpMaxUnauthenticated: number;
  /** HTTP_MAX_UNAUTHENTICATED_PER_ADDRESS: the same, from one source address. */
  httpMaxUnauthenticatedPerAddress: number;
}

/** Seconds a client refused for the unauthenticated limits is told to wait (Retry-After). */
export const UNAUTHENTICATED_RETRY_AFTER_S = 2;

/**
 * The timeouts, as fastify and Node's HTTP server take them. Node's request timeout covers
 * receiving the request only (its check stops once the request is complete), so a long streamed
 * export is not cut by it; the idle timeout is refined per request below (idleTimeoutPlugin).
 */
export function httpServerOptions(s: HttpSettings): Pick<FastifyServerOptions, 'connectionTimeout' | 'keepAliveTimeout' | 'requestTimeout'> & { http: Record<string, number> } {
  if (s.httpHeadersTimeoutMs > s.httpRequestTimeoutMs) {
    throw new ConfigError(`HTTP_HEADERS_TIMEOUT_MS (${s.httpHeadersTimeoutMs}) must not exceed HTTP_REQUEST_TIMEOUT_MS (${s.httpRequestTimeoutMs}): the headers are part of the request`);
  }
  return {
    connectionTimeout: s.httpIdleTimeoutMs,
    keepAliveTimeout: s.httpKeepAliveTimeoutMs,
    requestTimeout: s.httpRequestTimeoutMs,
    http: {
      headersTimeout: s.httpHeadersTimeoutMs,
      requestTimeout: s.httpRequestTimeoutMs,
      // How often Node looks for requests past those timeouts (its default, 30 s, would let a
      // 10 s headers timeout run to 40 s): a quarter of the shorter one, at most a second.
      connectionsCheckingInterval: Math.max(25, Math.min(1000, Math.floor(Math.min(s.httpHeadersTimeoutMs, s.httpRequestTimeoutMs) / 4))),
    },
  };
}

/**
 * Node's 'clientError' (a request past its timeout, headers too large, bytes that are not HTTP):
 * answered as problem details (408, 431 or 400) and the connection closed — only when nothing
 * of a response was written yet, as Node itself does.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (socket.writable && !inFlight?.headersSent) {
    const [status, detail] =
      err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'the request did not arrive in time (HTTP_HEADERS_TIMEOUT_MS for its headers, HTTP_REQUEST_TIMEOUT_MS for all of it)']
        : err.code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'the request headers are too large']
          : [400, 'the request is not valid HTTP/1.1'];
    const body = JSON.stringify(problem(status, detail));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: ${PROBLEM_CONTENT_TYPE}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}

/**
 * The idle timeout (HTTP_IDLE_TIMEOUT_MS, fastify's connectionTimeout) closes a connection on
 * which nothing moved for that long — when it is the client's turn: a request body that stopped
 * arriving, or an answer the client stopped reading (its send buffer full: a stalled export keeps
 * no database connection forever). While the server prepares the answer (a query, a command
 * waiting for its device) the connection is kept: those have their own time limits. An idle
 * keep-alive connection has no request, so Node closes it (HTTP_KEEPALIVE_TIMEOUT_MS, sooner).
 */
export const idleTimeoutPlugin = fp(async (app) => {
  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const res = reply.raw;
    // A 'timeout' listener on the response keeps Node from destroying the socket on its own.
    res.on('timeout', (socket: Socket) => {
      const clientStalled = !request.raw.complete || (res.headersSent && res.writableNeedDrain);
      if (!clientStalled) return;
      request.log.info({ path: loggedPath(request), receiving: !request.raw.complete }, 'HTTP connection idle past HTTP_IDLE_TIMEOUT_MS on the client side: closed');
      socket.destroy();
    });
  });
});

/**
 * Requests without a verified credential in progress at once: those to public routes (the
 * provisioning endpoint, health, the live map's files, the OpenAPI document and /docs) for their
 * whole duration, and every other request until its credential is verified. Beyond
 * HTTP_MAX_UNAUTHENTICATED: 503; beyond HTTP_MAX_UNAUTHENTICATED_PER_ADDRESS from one source
 * address: 429 (so that one client cannot take the whole budget); both with Retry-After. Counted
 * when the headers are complete (slow headers are bounded by HTTP_HEADERS_TIMEOUT_MS), released
 * when the credential is verified or the response ends, whichever comes first.
 *
 * Registered before the access plugin: its onRequest hook runs before the credential is checked.
 */
export const unauthenticatedLimitPlugin = fp<{ max: number; perAddress: number; registry: Registry; onInFlight?: (read: () => number) => void }>(async (app, opts) => {
  let inFlight = 0;
  const byAddress = new Map<string, number>();
  const held = new WeakSet<FastifyRequest>();
  const refused = new Counter({
    name: 'guanlink_http_unauthenticated_refused_total',
    help: 'HTTP requests refused because too many without a verified credential were in progress (reason: total 503, address 429).',
    labelNames: ['reason'],
    registers: [opts.registry],
  });
  opts.onInFlight?.(() => inFlight);

  const release = (request: FastifyRequest, address: string) => {
    if (!held.has(request)) return;
    held.delete(request);
    inFlight--;
    const left = (byAddress.get(address) ?? 1) - 1;
    if (left > 0) byAddress.set(address, left);
    else byAddress.delete(address);
  };

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const address = request.ip;
    const fromAddress = byAddress.get(address) ?? 0;
    if (inFlight >= opts.max || fromAddress >= opts.perAddress) {
      const total = inFlight >= opts.max;
      refused.inc({ reason: total ? 'total' : 'address' });
      const detail = total
        ? `too many requests without a verified credential are in progress (HTTP_MAX_UNAUTHENTICATED=${opts.max}); retry in ${UNAUTHENTICATED_RETRY_AFTER_S} s (Retry-After)`
        : `this address (${address}) has too many requests without a verified credential in progress (HTTP_MAX_UNAUTHENTICATED_PER_ADDRESS=${opts.perAddress}); retry in ${UNAUTHENTICATED_RETRY_AFTER_S} s (Retry-After)`;
      const status = total ? 503 : 429;
      return reply.code(status).header('retry-after', String(UNAUTHENTICATED_RETRY_AFTER_S)).type(PROBLEM_CONTENT_TYPE).send(problem(status, detail, request));
    }
    inFlight++;
    byAddress.set(address, fromAddress + 1);
    held.add(request);
    reply.raw.once('close', () => release(request, address));
  });

  // After every onRequest hook (the access plugin's included): a verified credential leaves the budget.
  app.addHook('preParsing', async (request: FastifyRequest, _reply: FastifyReply, payload) => {
    if (request.principal) release(request, request.ip);
    return payload;
  });
});
