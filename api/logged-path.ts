import type { FastifyRequest } from 'fastify';

/**
 * A request's path as it may be written to a log: without the query string, and without a device's
 * access token when the path carries one (ThingsBoard's HTTP device API, `/api/v1/{token}/firmware`):
 * then the route's pattern is written instead (`/api/v1/:token/firmware`).
 */
export function loggedPath(request: FastifyRequest): string {
  const params = request.params as Record<string, unknown> | null | undefined;
  if (params && typeof params === 'object' && Object.hasOwn(params, 'token')) return request.routeOptions.url ?? '(a path with a token)';
  return request.url.split('?')[0]!;
}
