import type { FastifyReply, FastifyRequest, RouteOptions } from 'fastify';
import fp from 'fastify-plugin';
import { Access, AccessError } from '../core/access/access.ts';
import type { Permission } from '../core/access/permissions.ts';
import type { Principal } from '../core/access/principal.ts';

/**
 * What a route declares next to its schema: the permission it needs, or `public` (health, the
 * device-facing provisioning endpoint, the OpenAPI document). Every route under /api/v1 must
 * declare one, and so must every route in the OpenAPI document: registering one without it fails at start.
 */
export type RouteAccess = Permission | 'public';

declare module 'fastify' {
  interface FastifyContextConfig {
    permission?: RouteAccess;
  }
  interface FastifyRequest {
    /** Who is asking; set before the handler runs on every non-public route. */
    principal: Principal;
  }
}

/** `Authorization: Bearer <credential>`, or `X-API-Key: <key>` (for tools that can only set a header, such as QGIS). */
export function presentedCredential(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (typeof header === 'string') {
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    return match ? match[1] : undefined;
  }
  const apiKey = request.headers['x-api-key'];
  return typeof apiKey === 'string' ? apiKey : undefined;
}

/** The permission each route (`METHOD url`) declared, for the OpenAPI document and the route walk test. */
export const routePermissions = new WeakMap<object, Map<string, RouteAccess>>();

const DEVICE_ROUTE = /^\/api\/v1\/devices\/:id(\/|$)/;

/**
 * The REST side of access: every request to a route that is not public is authenticated
 * (401 with the reason), checked for the route's permission (403 naming it) and, on
 * `/devices/:id…`, for the device being inside the principal's scope (404, as for a device that
 * does not exist). Lists and queries narrow themselves to the scope through `request.principal`.
 */
export const accessPlugin = fp<{ access: Access }>(async (app, { access }) => {
  const declared = new Map<string, RouteAccess>();
  routePermissions.set(app, declared);
  app.decorateRequest('principal', null as unknown as Principal);

  app.addHook('onRoute', (route: RouteOptions) => {
    const documented = route.schema !== undefined && !route.schema.hide;
    if (!documented && !route.url.startsWith('/api/v1') && !route.url.startsWith('/sta/')) return;
    const permission = route.config?.permission;
    if (permission === undefined) throw new Error(`route ${String(route.method)} ${route.url} declares no permission (config.permission)`);
    for (const method of [route.method].flat()) declared.set(`${method} ${route.url}`, permission);
    if (route.schema && !route.schema.hide) {
      const note = permission === 'public' ? 'No credential needed.' : `Permission: \`${permission}\`.`;
      route.schema.description = route.schema.description ? `${route.schema.description}\n\n${note}` : note;
      if (permission === 'public') route.schema.security = [];
    }
  });

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const permission = request.routeOptions.config.permission;
    if (permission === undefined || permission === 'public') return;
    try {
      const credential = presentedCredential(request);
      if (credential === undefined) throw new AccessError(401, 'a credential is required: Authorization: Bearer <API key or token>');
      request.principal = await access.authenticate(credential, { source: request.ip, via: 'rest' });
      access.require(request.principal, permission);
      const url = request.routeOptions.url ?? '';
      if (DEVICE_ROUTE.test(url)) {
        const id = Number((request.params as { id?: string }).id);
        if (Number.isSafeInteger(id) && id > 0) await access.requireDevice(request.principal, id);
      }
    } catch (err) {
      if (!(err instanceof AccessError)) throw err;
      if (err.statusCode === 401) reply.header('www-authenticate', 'Bearer realm="guanlink"');
      if (err.retryAfterSeconds !== undefined) reply.header('retry-after', String(err.retryAfterSeconds)); // RFC 6585 §4
      await reply.code(err.statusCode).send(accessErrorBody(err));
    }
  });
});

export const accessErrorBody = (err: AccessError) => ({
  statusCode: err.statusCode,
  error: err.statusCode === 401 ? 'Unauthorized' : err.statusCode === 403 ? 'Forbidden' : err.statusCode === 429 ? 'Too Many Requests' : 'Not Found',
  message: err.message,
  ...(err.permission ? { permission: err.permission } : {}),
});

/** Adds each operation's declared permission to the OpenAPI document as `x-permission`. */
export function documentPermissions(app: object, document: { paths?: Record<string, Record<string, Record<string, unknown>>> }): void {
  const declared = routePermissions.get(app);
  if (!declared || !document.paths) return;
  for (const [key, permission] of declared) {
    const [method, url] = key.split(' ') as [string, string];
    const path = url.replace(/:(\w+)/g, '{$1}');
    const op = document.paths[path]?.[method.toLowerCase()];
    if (op) op['x-permission'] = permission;
  }
}
