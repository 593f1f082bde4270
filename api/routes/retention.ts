import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Domain } from '../../core/domains.ts';
import { RetentionPolicy, RetentionReport, RetentionUpdate, type Retention } from '../../db/retention.ts';
import { ErrorResponse, badRequest } from '../schemas.ts';

/**
 * Validation messages without the noise of the `null | integer` unions ("must be equal to
 * constant", "must match a schema in anyOf"): `body/rawDays must be >= 1 (or null: kept forever)`; enums list their values.
 */
const daysErrorFormatter = (errors: { keyword: string; instancePath: string; message?: string; params: Record<string, unknown> }[], dataVar: string): Error => {
  const union = errors.some((e) => e.keyword === 'anyOf');
  const useful = errors.filter((e) => e.keyword !== 'anyOf' && !(e.keyword === 'const' && e.params.allowedValue === null));
  const text = (useful.length > 0 ? useful : errors)
    .map((e) => `${dataVar}${e.instancePath} ${e.message ?? 'is invalid'}${Array.isArray(e.params.allowedValues) ? `: ${e.params.allowedValues.join(', ')}` : ''}`)
    .join(', ');
  return new Error(union ? `${text} (or null: kept forever)` : text);
};

/** Per-domain retention: how long raw readings and rollups are kept, and applying it now. */
export const retentionRoutes: FastifyPluginAsyncTypebox<{ retention: Retention }> = async (app, { retention }) => {
  app.get(
    '/retention',
    { config: { permission: 'platform:admin' }, schema: { summary: 'Retention policy of every domain', tags: ['retention'], response: { 200: Type.Array(RetentionPolicy) } } },
    async () => retention.list(),
  );

  app.put(
    '/retention/:domain',
    {
      config: { permission: 'platform:admin' }, schema: {
        summary: "Replace one domain's retention policy",
        description: 'Days each level is kept (null: forever). 1-minute rollups must be kept at least as long as raw readings, 1-hour rollups at least as long as 1-minute ones.',
        tags: ['retention'],
        params: Type.Object({ domain: Domain }),
        body: RetentionUpdate,
        response: { 200: RetentionPolicy, 400: ErrorResponse },
      },
      schemaErrorFormatter: daysErrorFormatter,
    },
    async (request, reply) => {
      try {
        return await retention.update(request.params.domain, request.body);
      } catch (err) {
        if (err instanceof RangeError) return reply.code(400).send(badRequest(err.message));
        throw err;
      }
    },
  );

  app.post(
    '/retention/apply',
    {
      config: { permission: 'platform:admin' }, schema: {
        summary: 'Apply every retention policy now',
        description: 'TimescaleDB: drops whole chunks older than each cutoff. PostgreSQL: deletes older rows in bounded batches. Runs hourly anyway (RETENTION_INTERVAL_MS).',
        tags: ['retention'],
        response: { 200: RetentionReport },
      },
    },
    async () => retention.apply(),
  );
};
