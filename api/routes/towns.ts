import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { TownIndex } from '../../geo/towns.ts';

/** The towns/districts (镇街) a scope may name, with their areas as GeoJSON. */
export const townsRoutes: FastifyPluginAsyncTypebox<{ towns: TownIndex }> = async (app, { towns }) => {
  app.get(
    '/towns',
    {
      config: { permission: 'read' },
      schema: {
        summary: 'Towns and districts (镇街) that scopes may name, as a GeoJSON FeatureCollection',
        description:
          'Unless the operator loaded official boundaries (TOWNS_GEOJSON), the areas are approximate: the Voronoi cell of each town centre, clipped to the city outline.',
        tags: ['access'],
        response: { 200: Type.Unknown({ description: 'FeatureCollection; properties name, nameEn, kind' }) },
      },
    },
    async (_request, reply) => {
      const features = towns.names().map((name) => {
        const t = towns.find(name)!;
        return { type: 'Feature', properties: { name: t.name, nameEn: t.nameEn, kind: t.kind, center: t.center ?? null }, geometry: t.geometry };
      });
      return reply.type('application/geo+json').send({ type: 'FeatureCollection', features });
    },
  );
};
