import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { loggedPath } from './logged-path.ts';

/**
 * One error shape for every HTTP answer ≥ 400: RFC 9457 problem details
 * (`application/problem+json`) with the members GuanLink answered before kept as extension
 * members (RFC 9457 §3.2), so existing clients keep working:
 *
 *   {"type": "about:blank", "title": "Bad Request", "status": 400, "detail": "…",
 *    "instance": "urn:uuid:…", "statusCode": 400, "error": "Bad Request", "message": "…"}
 *
 * plus what a route adds (`code`, `permission` on a 403, …). `instance` names this occurrence:
 * the request id that the server's log lines of the request carry (`reqId`). A 5xx caused by an
 * unexpected error (a database error, a bug) says only "internal error" and that reference; the
 * cause is in the log, never in the answer.
 *
 * Done here once, for every route: routes keep sending `{statusCode, error, message}` (or
 * throwing: the error handler below), and an onSend hook completes such bodies into problem
 * details after serialization, whatever schema or serializer wrote them (api/schemas.ts
 * ErrorResponse documents every member and keeps them when the error handler's body is written).
 */

export const PROBLEM_CONTENT_TYPE = 'application/problem+json; charset=utf-8';

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  statusCode: number;
  error: string;
  message: string;
  [extension: string]: unknown;
}

/** An error a route or plugin throws on purpose, whose message may be shown even with a 5xx status. */
export interface ExposedError extends Error {
  statusCode: number;
  expose: true;
}

const titleOf = (status: number): string => STATUS_CODES[status] ?? (status >= 500 ? 'Server Error' : 'Client Error');

/** The request's occurrence URI (RFC 9457 §3.1.5): a URN of the request id (a UUID, api/server.ts genReqId). */
export const instanceOf = (request: FastifyRequest): string => (/^[0-9a-f-]{36}$/.test(request.id) ? `urn:uuid:${request.id}` : `urn:guanlink:request:${encodeURIComponent(request.id)}`);

/** Problem details for `status` with `detail`, and extension members (`code`, `permission`, …). */
export function problem(status: number, detail: string, request?: FastifyRequest, extensions: Record<string, unknown> = {}): Problem {
  const title = titleOf(status);
  return {
    // RFC 9457 §4.2.1: "about:blank" — no semantics beyond the status code; title is its phrase.
    type: 'about:blank',
    title,
    status,
    detail,
    ...(request ? { instance: instanceOf(request) } : {}),
    ...extensions,
    statusCode: status,
    error: title,
    message: detail,
  };
}

/** The body a route sent in the old shape (`statusCode` and `message`), not yet problem details. */
function isLegacyError(payload: unknown): payload is { statusCode: number; message: string } & Record<string, unknown> {
  if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) return false;
  const p = payload as Record<string, unknown>;
  return typeof p.statusCode === 'number' && typeof p.message === 'string' && p.type === undefined;
}

function fromLegacy(body: { statusCode: number; message: string } & Record<string, unknown>, status: number, request: FastifyRequest): Problem {
  const { statusCode: _s, error: _e, message, ...extensions } = body;
  return problem(status, message, request, extensions);
}

/** `/api/v1/devices/:id` → a matcher of concrete paths (for 405: which methods a path has). */
function pathPattern(url: string): RegExp {
  const source = url
    .split('/')
    .map((part) => (part.startsWith(':') ? '[^/]+' : part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
    .join('/');
  return new RegExp(`^${source}$`);
}

/**
 * Registered first on the root instance (before any route), so that its hooks, error handler and
 * not-found handler apply to every route.
 */
export const problemDetailsPlugin = fp(async (app) => {
  // Routes by path, for a 405 naming the methods a path has (RFC 9110 §15.5.6: with an Allow header).
  // Catch-alls (the static files under /) are left out: they would make every path "exist".
  const routes: { method: string; pattern: RegExp }[] = [];
  app.addHook('onRoute', (route: RouteOptions) => {
    if (route.url.includes('*')) return;
    for (const method of [route.method].flat()) routes.push({ method, pattern: pathPattern(route.url) });
  });

  app.setErrorHandler((err: FastifyError & { status?: number; expose?: boolean; headers?: Record<string, string> }, request, reply) => {
    const declared = err.statusCode ?? err.status;
    const status = Number.isInteger(declared) && declared! >= 400 && declared! <= 599 ? declared! : reply.statusCode >= 400 ? reply.statusCode : 500;
    if (reply.raw.headersSent) {
      // The answer had started (a stream failed midway): nothing can be said any more but to cut it.
      request.log.error({ err, path: loggedPath(request) }, 'response failed after it started');
      reply.raw.destroy();
      return reply;
    }
    if (status >= 500 && err.expose !== true) {
      request.log.error({ err, method: request.method, path: loggedPath(request) }, 'internal error');
      return reply.code(status).type(PROBLEM_CONTENT_TYPE).send(problem(status, `internal error; reference ${instanceOf(request)} (the server log has the cause)`, request));
    }
    if (err.headers) reply.headers(err.headers);
    const code = typeof err.code === 'string' && err.code !== '' ? { code: err.code } : {};
    const detail =
      err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
        ? `${request.method} ${request.routeOptions.url ?? request.url.split('?')[0]} does not take a body of type ${JSON.stringify(request.headers['content-type'] ?? '')}`
        : err.message;
    return reply.code(status).type(PROBLEM_CONTENT_TYPE).send(problem(status, detail, request, code));
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0]!;
    const allowed = [...new Set(routes.filter((r) => r.method !== request.method && r.pattern.test(path)).map((r) => r.method))];
    if (allowed.length > 0 && !routes.some((r) => r.method === request.method && r.pattern.test(path))) {
      return reply
        .code(405)
        .header('allow', allowed.join(', '))
        .type(PROBLEM_CONTENT_TYPE)
        .send(problem(405, `${request.method} is not allowed on ${path}; it takes ${allowed.join(', ')}`, request));
    }
    return reply.code(404).type(PROBLEM_CONTENT_TYPE).send(problem(404, `no route ${request.method} ${path}`, request));
  });

  // Bodies routes send in the old shape (their response schema or serializer wrote them as they
  // are): completed here, after serialization, whatever schema wrote them; and the media type.
  app.addHook('onSend', async (request: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    if (reply.statusCode < 400 || typeof payload !== 'string' || payload.length > 65_536) return payload;
    const type = String(reply.getHeader('content-type') ?? '');
    if (!/^application\/(problem\+)?json/.test(type)) return payload;
    let body: unknown;
    try {
      body = JSON.parse(payload);
    } catch {
      return payload;
    }
    if (isLegacyError(body)) {
      reply.type(PROBLEM_CONTENT_TYPE);
      return JSON.stringify(fromLegacy(body, reply.statusCode, request));
    }
    const p = body as Partial<Problem> | null;
    if (p && typeof p === 'object' && p.type !== undefined && typeof p.status === 'number') reply.type(PROBLEM_CONTENT_TYPE);
    return payload;
  });
});
