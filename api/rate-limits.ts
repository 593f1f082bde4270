import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import rateLimit from '@fastify/rate-limit';
import { describeLimit, limitOf, parseRequestLimit, parseRoleLimits, type LimitSettings, type PrincipalLimit } from '../core/access/rate-limits.ts';
import { concurrencyPlugin, who, type ConcurrencyLimits } from './concurrency.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A public route limited per source address (PROVISION_RATE_LIMIT) rather than per principal. */
    limitByAddress?: boolean;
  }
}

/** The settings, as configured (core/config.ts). */
export interface ApiLimitSettings {
  rateLimits: string;
  rateLimitDefault: string;
  bootstrapRateLimit: string;
  provisionRateLimit: string;
  exportConcurrencyPerPrincipal: number;
  queryConcurrencyPerPrincipal: number;
}

/**
 * Request rate limits (@fastify/rate-limit): per principal on every authenticated route — the
 * API key's own limit, else the most generous of its roles' (RATE_LIMITS, RATE_LIMIT_DEFAULT),
 * the bootstrap admin key BOOTSTRAP_RATE_LIMIT — and per source address on public routes that
 * declare `config: { limitByAddress: true }` (provisioning: PROVISION_RATE_LIMIT). Every limited
 * answer carries RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset (IETF draft); beyond the
 * limit, 429 with Retry-After. Counted in this node's memory: with several nodes behind a load
 * balancer each allows the limit.
 *
 * Also the per-principal concurrency of exports and heavy queries (api/concurrency.ts).
 *
 * Registered after the access plugin: its hook runs after the principal is known.
 */
export const rateLimitsPlugin = fp<{ settings: ApiLimitSettings }>(async (app, { settings }) => {
  const limits: LimitSettings = {
    roles: parseRoleLimits(settings.rateLimits),
    fallback: parseRequestLimit(settings.rateLimitDefault),
    bootstrap: parseRequestLimit(settings.bootstrapRateLimit),
  };
  const provision: PrincipalLimit = { ...parseRequestLimit(settings.provisionRateLimit), source: 'PROVISION_RATE_LIMIT, per source address' };
  const chosen = new WeakMap<FastifyRequest, PrincipalLimit | null>();

  /** The request's limit; null: not limited (public routes other than provisioning, static files). */
  const limitFor = (request: FastifyRequest): PrincipalLimit | null => {
    let limit = chosen.get(request);
    if (limit === undefined) {
      limit = request.principal ? limitOf(request.principal, limits) : request.routeOptions.config.limitByAddress ? provision : null;
      chosen.set(request, limit);
    }
    return limit;
  };

  await app.register(rateLimit, {
    global: true,
    hook: 'onRequest',
    enableDraftSpec: true,
    cache: 50_000,
    keyGenerator: (request) => (request.principal ? `principal ${request.principal.id}` : `address ${rateLimit.normalizeIP(request.ip)}`),
    allowList: (request) => {
      const limit = limitFor(request);
      return limit === null || limit.max === Infinity;
    },
    max: (request) => limitFor(request)!.max,
    timeWindow: (request) => limitFor(request)!.windowMs,
    errorResponseBuilder: (request, context) => {
      const limit = limitFor(request)!;
      const retry = Math.max(1, Math.ceil(context.ttl / 1000));
      const subject = request.principal ? who(request.principal) : `this address (${request.ip})`;
      return Object.assign(new Error(`rate limit exceeded: ${subject} may make ${describeLimit(limit)} (${limit.source}); retry in ${retry} s (Retry-After)`), {
        statusCode: 429,
      });
    },
  });

  const concurrency: ConcurrencyLimits = { export: settings.exportConcurrencyPerPrincipal, query: settings.queryConcurrencyPerPrincipal };
  await app.register(concurrencyPlugin, { limits: concurrency });
});
