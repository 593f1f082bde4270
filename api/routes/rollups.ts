import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Rollups } from '../../db/rollups.ts';

const Instant = Type.Union([Type.String({ format: 'date-time' }), Type.Null()]);

const RollupState = Type.Object({
  done: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'every minute before this is in the 1-minute rollups (hours before its hour in the 1-hour ones)' }),
  announced: Instant,
  pendingInvalidations: Type.Integer({ description: 'minutes with late readings waiting to be recomputed' }),
});

const RefreshReport = Type.Object({
  skipped: Type.Boolean({ description: 'another node was refreshing' }),
  minutes: Type.Number(),
  rows1m: Type.Integer(),
  rows1h: Type.Integer(),
  invalidations: Type.Integer(),
  done: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  ms: Type.Integer(),
});

/** State of the per-device-key rollups, and refreshing them now. */
export const rollupsRoutes: FastifyPluginAsyncTypebox<{ rollups: Rollups }> = async (app, { rollups }) => {
  const iso = (d: Date | null) => (d ? d.toISOString() : null);

  app.get('/rollups', { config: { permission: 'platform:admin' }, schema: { summary: 'Rollup watermark and pending late data', tags: ['rollups'], response: { 200: RollupState } } }, async () => {
    const s = await rollups.state();
    return { done: iso(s.done), announced: iso(s.announced), pendingInvalidations: s.pendingInvalidations };
  });

  app.post(
    '/rollups/refresh',
    {
      config: { permission: 'platform:admin' }, schema: {
        summary: 'Roll up every closed minute and late reading now',
        description: 'Runs every ROLLUP_REFRESH_MS anyway; useful after a bulk import.',
        tags: ['rollups'],
        response: { 200: RefreshReport },
      },
    },
    async () => {
      const r = await rollups.refresh();
      return { ...r, done: iso(r.done) };
    },
  );
};
