import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { essentialsOf, type AuditLog, type Essentials } from '../core/audit.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Rows the answer holds, for the audit log: list, spatial and export routes set it (`request.auditRows = n`). */
    auditRows: number | null;
  }
}

const DEVICE_ROUTE = /^\/api\/v1\/devices\/:id(\/|$)/;
/** Refusals recorded even without a principal: no or a bad credential, a missing permission, a rate limit. */
const REFUSALS = new Set([401, 403, 429]);

interface Tracking {
  /** Body bytes written (counted for authenticated requests: streamed answers have no Content-Length). */
  bytes: number;
  counting: boolean;
  recorded: boolean;
  /** The error message of a 4xx/5xx answer. */
  reason?: string;
}

const byteLength = (chunk: unknown, encoding?: unknown): number =>
  typeof chunk === 'string' ? Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8') : chunk instanceof Uint8Array ? chunk.byteLength : 0;

/**
 * Records REST requests in the audit log (core/audit.ts): every request with a principal
 * (authenticated), and every refused attempt (401, 403, 429) — who, the route pattern, the device
 * of a /devices/:id… route, the request's essentials (never a header, query string or body), the
 * status and reason, rows (when the route sets `request.auditRows`), body bytes, duration, source
 * address and user agent. A response cut off because the client went away is recorded when the
 * connection closes (status 499 if nothing was sent).
 *
 * Registered after the access plugin, so its onRequest hook sees the principal.
 */
export const auditPlugin = fp<{ audit: AuditLog }>(async (app, { audit }) => {
  app.decorateRequest('auditRows', null);
  const tracked = new WeakMap<FastifyRequest, Tracking>();

  const track = (request: FastifyRequest): Tracking => {
    let t = tracked.get(request);
    if (!t) {
      t = { bytes: 0, counting: false, recorded: false };
      tracked.set(request, t);
    }
    return t;
  };

  const record = (request: FastifyRequest, reply: FastifyReply, t: Tracking | undefined, aborted: boolean) => {
    const principal = request.principal ?? null;
    const status = aborted && !reply.raw.headersSent ? 499 : reply.statusCode;
    if (!principal && !REFUSALS.has(status)) return;
    if (t) {
      if (t.recorded) return;
      t.recorded = true;
    }
    const route = request.routeOptions.url ?? request.url.split('?')[0]!;
    const params = (request.params ?? {}) as Record<string, unknown>;
    let deviceId: number | null = null;
    const essentials: Essentials = essentialsOf(route, request.query, request.body);
    const otherParams: Record<string, unknown> = {};
    for (const [name, value] of Object.entries(params)) {
      if (name === 'id' && DEVICE_ROUTE.test(route)) {
        const id = Number(value);
        if (Number.isSafeInteger(id) && id > 0 && id <= 2_147_483_647) deviceId = id;
      } else if (typeof value === 'number' || (typeof value === 'string' && value.length <= 100)) {
        otherParams[name] = value;
      }
    }
    if (Object.keys(otherParams).length > 0) essentials.params = otherParams;
    const length = Number(reply.getHeader('content-length'));
    const ms = reply.elapsedTime;
    audit.record({
      kind: 'http',
      at: Date.now() - ms,
      principal,
      method: request.method,
      route,
      deviceId,
      essentials,
      status,
      reason: aborted ? `the client closed the connection ${reply.raw.headersSent ? 'before the answer was complete' : 'before an answer was sent'}` : (t?.reason ?? null),
      rows: request.auditRows,
      bytes: t?.counting ? t.bytes : Number.isFinite(length) ? length : null,
      durationMs: Math.round(ms * 1000) / 1000,
      sourceIp: request.ip,
      userAgent: typeof request.headers['user-agent'] === 'string' ? request.headers['user-agent'] : null,
    });
  };

  // After access's onRequest: the principal is known. Counts the body bytes written (exports
  // write to the raw response) and records a response cut off by the client at close.
  app.addHook('onRequest', async (request, reply) => {
    if (!request.principal) return;
    const t = track(request);
    t.counting = true;
    const res = reply.raw;
    const write = res.write;
    const end = res.end;
    res.write = function (this: typeof res, chunk: unknown, ...rest: unknown[]) {
      t.bytes += byteLength(chunk, rest[0]);
      return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof res.write;
    res.end = function (this: typeof res, chunk?: unknown, ...rest: unknown[]) {
      if (typeof chunk !== 'function') t.bytes += byteLength(chunk, rest[0]);
      return (end as (...a: unknown[]) => typeof res).call(this, chunk, ...rest);
    } as typeof res.end;
    res.once('close', () => {
      if (!t.recorded && !res.writableFinished) record(request, reply, t, true);
    });
  });

  // The reason of a refusal or failure, from the error body (`message`): never anything else of it.
  app.addHook('onSend', async (request, reply, payload) => {
    if (reply.statusCode < 400 || typeof payload !== 'string' || payload.length > 10_000) return payload;
    if (!request.principal && !REFUSALS.has(reply.statusCode)) return payload;
    try {
      const message = (JSON.parse(payload) as { message?: unknown }).message;
      if (typeof message === 'string') track(request).reason = message;
    } catch {
      // not JSON: no reason
    }
    return payload;
  });

  app.addHook('onResponse', async (request, reply) => {
    record(request, reply, tracked.get(request), false);
  });
});
