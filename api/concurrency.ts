import type { FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Principal } from '../core/access/principal.ts';

/** Heavy routes declare which budget they take: `export` (streamed exports) or `query` (spatial history, aggregates, trajectories). */
export type ConcurrencyClass = 'export' | 'query';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Limits how many of these one principal may run at once (api/concurrency.ts). */
    concurrency?: ConcurrencyClass;
  }
}

export interface ConcurrencyLimits {
  /** Exports one principal may run at once (EXPORT_CONCURRENCY_PER_PRINCIPAL). */
  export: number;
  /** Heavy queries one principal may run at once (QUERY_CONCURRENCY_PER_PRINCIPAL). */
  query: number;
}

const SETTING: Record<ConcurrencyClass, string> = { export: 'EXPORT_CONCURRENCY_PER_PRINCIPAL', query: 'QUERY_CONCURRENCY_PER_PRINCIPAL' };
const WHAT: Record<ConcurrencyClass, [string, string]> = { export: ['export', 'exports'], query: ['heavy query', 'heavy queries'] };
/** Seconds a refused client is told to wait: an export or query usually ends sooner; it may ask again. */
export const CONCURRENCY_RETRY_AFTER_S = 5;

export const who = (p: Principal): string => (p.kind === 'key' ? `API key "${p.name}"` : p.kind === 'oidc' ? `"${p.name}"` : 'the bootstrap admin key');

/**
 * Per-principal concurrency of heavy routes (`config: { concurrency: 'export' | 'query' }`): beyond
 * the limit, 429 with Retry-After. A slot is taken after validation and released when the response
 * ends — completed, failed, or cut off because the client went away.
 */
export const concurrencyPlugin = fp<{ limits: ConcurrencyLimits }>(async (app, { limits }) => {
  const running = new Map<string, number>();

  app.addHook('preHandler', async (request: FastifyRequest, reply: FastifyReply) => {
    const cls = request.routeOptions.config.concurrency;
    const principal = request.principal;
    if (!cls || !principal) return;
    const res = reply.raw;
    // Already gone (the client left during parsing): nothing will run for it.
    if (res.closed || res.destroyed) return;
    const slot = `${cls} ${principal.id}`;
    const now = running.get(slot) ?? 0;
    const max = limits[cls];
    if (now >= max) {
      const [one, many] = WHAT[cls];
      return reply
        .code(429)
        .header('retry-after', String(CONCURRENCY_RETRY_AFTER_S))
        .send({
          statusCode: 429,
          error: 'Too Many Requests',
          message: `${who(principal)} is already running ${now} ${now === 1 ? one : many}, the most it may run at once (${SETTING[cls]}=${max}); retry when one has finished (Retry-After: ${CONCURRENCY_RETRY_AFTER_S} s)`,
        });
    }
    running.set(slot, now + 1);
    res.once('close', () => {
      const left = (running.get(slot) ?? 1) - 1;
      if (left > 0) running.set(slot, left);
      else running.delete(slot);
    });
  });
});
