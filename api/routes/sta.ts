import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { Access } from '../../core/access/access.ts';
import { QUERY_CANCELED, runHeavy, withSpatialSession, type SpatialDeps } from '../../db/spatial-query.ts';
import { answer, StaError } from '../sta/engine.ts';
import { prepareCovers } from '../sta/filter-area.ts';
import { SOURCES } from '../sta/entities.ts';
import { ENTITY_TYPES, MODEL } from '../sta/model.ts';
import { parseResourcePath } from '../sta/resource-path.ts';
import { parseStaQuery } from '../sta/query/query.ts';

export const STA_ROOT = '/sta/v1.1';
const REQ = 'http://www.opengis.net/spec/iot_sensing/1.1/req/';

/**
 * What this server implements, exactly (18-088 §9.2.1 serverSettings): read-only sensing
 * entities (no create-update-delete, batch, MultiDatastream, dataArray nor MQTT yet).
 */
const CONFORMANCE = [
  `${REQ}datamodel/thing`,
  `${REQ}datamodel/location`,
  `${REQ}datamodel/historical-location`,
  `${REQ}datamodel/datastream`,
  `${REQ}datamodel/sensor`,
  `${REQ}datamodel/observed-property`,
  `${REQ}datamodel/observation`,
  `${REQ}datamodel/feature-of-interest`,
  `${REQ}datamodel/entity-control-information`,
  `${REQ}resource-path/resource-path-to-entities`,
  `${REQ}request-data`,
];

/**
 * The OGC SensorThings API v1.1 (read-only) at /sta/v1.1, for GIS tools (QGIS's SensorThings
 * provider, pygeoapi): see api/sta/engine.ts. Every answer says `Cache-Control: no-store`: QGIS
 * keeps anything else in its network cache across sessions, and re-serves stale counts and
 * Observations (only no-store stops it; no-cache does not). Not in the OpenAPI document: its
 * paths are the standard's grammar (`Datastreams('1-5')/Observations`), documented by OGC 18-088.
 */
export const staRoutes: FastifyPluginAsync<{ access: Access; spatial: SpatialDeps; publicUrl: string | undefined }> = async (app, { access, spatial, publicUrl }) => {
  app.addHook('onSend', async (_request, reply, payload) => {
    reply.header('cache-control', 'no-store');
    return payload;
  });

  const serverOf = (request: FastifyRequest) => publicUrl ?? `${request.protocol}://${request.host}`;

  const root = async (request: FastifyRequest) => {
    const base = `${serverOf(request)}${STA_ROOT}`;
    return {
      value: ENTITY_TYPES.filter((t) => SOURCES[t]).map((t) => ({ name: MODEL[t].set, url: `${base}/${MODEL[t].set}` })),
      serverSettings: { conformance: CONFORMANCE },
    };
  };
  const config = { permission: 'read' as const };
  app.get(STA_ROOT, { config, schema: { hide: true } }, root);
  app.get(`${STA_ROOT}/`, { config, schema: { hide: true } }, root);

  // Each request may read readings: it takes a heavy-query slot of its principal (QUERY_CONCURRENCY_PER_PRINCIPAL).
  app.get(`${STA_ROOT}/*`, { config: { ...config, concurrency: 'query' }, schema: { hide: true } }, async (request, reply) => {
    const pathText = (request.params as { '*': string })['*'];
    const path = parseResourcePath(pathText);
    const query = parseStaQuery(request.query as Record<string, unknown>);
    await prepareCovers(query, spatial.geometry);
    const principal = request.principal;
    const visible = await access.visibleDevices(principal);
    const server = serverOf(request);
    try {
      const result = await runHeavy(spatial, () =>
        withSpatialSession(spatial, undefined, (client, next) =>
          answer(
            {
              client,
              next,
              visible: visible === null ? null : [...visible],
              readingsArea: (cols) => access.readingsOfAnySql(principal, cols),
              root: `${server}${STA_ROOT}`,
              server,
              rawQuery: request.query as Record<string, unknown>,
            },
            pathText,
            path,
            query,
          ),
        ),
      );
      // For the audit log: the entities the answer holds (expanded ones not counted).
      const value = (result.body as { value?: unknown }).value;
      request.auditRows = Array.isArray(value) ? value.length : 1;
      if (result.raw) return reply.type('text/plain; charset=utf-8').send(result.body as string);
      return result.body;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === QUERY_CANCELED) {
        return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', code: 'sta_query_timeout', message: `the query ran longer than ${spatial.statementTimeoutMs} ms (SPATIAL_STATEMENT_TIMEOUT_MS); narrow it with $filter (a time window on phenomenonTime, a Datastream) or a smaller $top` });
      }
      // A data exception of the client's own expression (a number out of range in arithmetic): its fault, said plainly.
      if (typeof code === 'string' && code.startsWith('22')) {
        return reply.code(400).send({ statusCode: 400, error: 'Bad Request', code: 'sta_query_invalid', message: `$filter cannot be evaluated: ${(err as Error).message}` });
      }
      throw err;
    }
  });

  const readOnly = async () => {
    throw new StaError(405, 'this SensorThings service is read-only: devices send Observations over MQTT (README, "Device API"), and Things are managed through /api/v1/devices');
  };
  for (const url of [STA_ROOT, `${STA_ROOT}/*`]) app.route({ method: ['POST', 'PUT', 'PATCH', 'DELETE'], url, config, schema: { hide: true }, handler: readOnly });
};
