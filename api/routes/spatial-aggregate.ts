import { STATUS_CODES } from 'node:http';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { area as turfArea } from '@turf/turf';
import { cellToBoundary, cellToParent, getHexagonAreaAvg, getResolution } from 'h3-js';
import { Type, type Static } from 'typebox';
import { POSITION_KEYS } from '../../core/device-types.ts';
import { BUCKET_ORIGIN, formatInterval, parseInterval } from '../../db/buckets.ts';
import { spatialAggregate, type AggregateRow, type PositionColumn } from '../../db/spatial-aggregate.ts';
import { QUERY_CANCELED, resolveSelection, runHeavy, selectsNothing, withSpatialSession, withinScope, type SpatialDeps } from '../../db/spatial-query.ts';
import type { Scope } from '../../core/access/scope.ts';
import { bboxPolygon, type Area } from '../../geo/area.ts';
import { SelectionError, SelectionFields, geometryRefusal, parseSelectionWith, type SelectionInput } from '../spatial-selection.ts';
import { SafeText } from '../schemas.ts';

/** Most time buckets one request may ask for. */
export const MAX_BUCKETS = 10_000;
/** Most (possible cells of the area at the resolution) × (buckets) one request may ask for. */
export const MAX_CELL_BUCKETS = 50_000;
/** Window when `from` is left out: the 24 hours before `to`. */
const DEFAULT_SPAN_MS = 86_400_000;
const DEFAULT_STATS = ['count', 'avg', 'min', 'max'] as const;
const PLAIN_STATS = ['count', 'sum', 'avg', 'min', 'max'] as const;
type PlainStat = (typeof PLAIN_STATS)[number];

/** Reasons of a 400 (field `code`), then 503 query_timeout. */
export const AGGREGATE_ERRORS = [
  'invalid_selection',
  'unknown_key',
  'invalid_stats',
  'invalid_percentile',
  'invalid_interval',
  'too_many_buckets',
  'area_too_large',
  'query_timeout',
] as const;
/** Codes of the answers to an area too costly (413) and to busy or slow geometry workers (503: api/spatial-selection.ts geometryRefusal). */
const GEOMETRY_ERRORS = ['area_too_complex', 'geometry_busy', 'geometry_timeout'];
type AggregateErrorCode = (typeof AGGREGATE_ERRORS)[number];

class AggregateError extends Error {
  constructor(
    readonly code: AggregateErrorCode,
    message: string,
  ) {
    super(message);
  }
}

const AggregateErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String({ description: `${[...AGGREGATE_ERRORS, ...GEOMETRY_ERRORS].join(', ')}, or FST_ERR_VALIDATION` })),
  error: Type.String(),
  message: Type.String(),
});

const Meta = {
  key: Type.String(),
  resolution: Type.Integer(),
  interval: Type.Union([Type.String(), Type.Null()], { description: 'the bucket length; null: one bucket over the whole window' }),
  from: Type.String({ format: 'date-time', description: 'the window (after defaults)' }),
  to: Type.String({ format: 'date-time' }),
  stats: Type.Array(Type.String(), { description: 'the statistics in each row, e.g. count, avg, min, max, p90' }),
  sources: Type.Array(Type.String(), { description: '1h, 1m (rollups), raw: what was read' }),
  truncated: Type.Boolean({ description: `true when more than ${MAX_CELL_BUCKETS * 2} rows matched (only the first are returned)` }),
};
const Row = Type.Object(
  {
    cell: Type.String({ description: 'H3 index at the requested resolution' }),
    bucket: Type.Number({ description: 'bucket start, epoch ms' }),
  },
  { additionalProperties: Type.Number(), description: 'and one number per statistic asked for (count, avg, min, max, sum, p90 …)' },
);
const AggregateRows = Type.Object({ ...Meta, rows: Type.Array(Row) }, { description: 'format=json' });
const AggregateHexagons = Type.Object(
  {
    type: Type.Literal('FeatureCollection'),
    ...Meta,
    features: Type.Array(
      Type.Object({
        type: Type.Literal('Feature'),
        geometry: Type.Object({ type: Type.Literal('Polygon'), coordinates: Type.Array(Type.Array(Type.Array(Type.Number()))) }, { description: "the cell's hexagon (pentagon): [lng, lat], closed ring" }),
        properties: Row,
      }),
    ),
  },
  { description: 'format=geojson (default), application/geo+json: one Feature per cell × bucket' },
);

const AggregateQuery = Type.Object({
  ...SelectionFields,
  key: SafeText(200, { minLength: 1, description: 'the numeric telemetry key to aggregate (latitude, longitude, altitude work too, from raw readings)' }),
  resolution: Type.Integer({ minimum: 0, maximum: 15, description: 'H3 resolution of the output cells, 0 (continents) … 15 (~1 m²); 7 ≈ 5 km², 8 ≈ 0.7 km², 9 ≈ 0.1 km²' }),
  interval: Type.Optional(
    SafeText(20, {
      description: 'bucket length (30s, 15m, 1h, 1d: a whole number of s, m, h or d), aligned to UTC like telemetry buckets; omitted: one bucket, the whole window',
    }),
  ),
  stats: Type.Optional(
    Type.Unknown({ description: `comma-separated (POST: array) of ${PLAIN_STATS.join(', ')} and percentiles p0…p100 (p50, p90, p99.9); default ${DEFAULT_STATS.join(',')}` }),
  ),
  percentile: Type.Optional(Type.Unknown({ description: 'percentiles as fractions 0…1, comma-separated (POST: a number or an array): 0.9 adds p90' })),
  format: Type.Optional(Type.Union([Type.Literal('geojson'), Type.Literal('json')], { description: 'geojson (default): hexagon Polygons; json: rows' })),
  source: Type.Optional(Type.Union([Type.Literal('auto'), Type.Literal('raw')], { description: 'auto (default): rollups where exact; raw: raw readings only' })),
});
type AggregateInput = Static<typeof AggregateQuery>;

interface Stats {
  plain: PlainStat[];
  /** [output name, fraction] */
  percentiles: [string, number][];
}

/** `p90` for 0.9, `p99.9` for 0.999, `p0.5` for 0.005. */
export const percentileName = (fraction: number): string => `p${Number((fraction * 100).toPrecision(12))}`;

function listOf(raw: unknown, what: string, code: AggregateErrorCode): unknown[] {
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',').map((s) => s.trim()) : typeof raw === 'number' ? [raw] : undefined;
  if (!items || items.length === 0) throw new AggregateError(code, `${what}: a comma-separated list (or, in a JSON body, an array)`);
  return items;
}

export function parseStats(statsRaw: unknown, percentileRaw: unknown): Stats {
  const plain: PlainStat[] = [];
  const percentiles: [string, number][] = [];
  const addPercentile = (q: number) => {
    const name = percentileName(q);
    if (!percentiles.some(([n]) => n === name)) percentiles.push([name, q]);
  };
  const names = statsRaw === undefined ? (percentileRaw === undefined ? [...DEFAULT_STATS] : ['count']) : listOf(statsRaw, 'stats', 'invalid_stats');
  for (const s of names) {
    if (typeof s !== 'string' || s === '') throw new AggregateError('invalid_stats', `stats: ${JSON.stringify(s)} is not a statistic name`);
    if ((PLAIN_STATS as readonly string[]).includes(s)) {
      if (!plain.includes(s as PlainStat)) plain.push(s as PlainStat);
      continue;
    }
    const m = /^p(\d{1,3}(?:\.\d{1,6})?)$/.exec(s);
    if (!m) throw new AggregateError('invalid_stats', `stats: "${s}" is not one of ${PLAIN_STATS.join(', ')} or a percentile p0…p100 (e.g. p90)`);
    const pct = Number(m[1]);
    if (pct > 100) throw new AggregateError('invalid_percentile', `stats: ${s} is not a percentile between p0 and p100`);
    addPercentile(Number((pct / 100).toPrecision(12))); // p99.9 → 0.999, not 0.9990000000000001
  }
  if (percentileRaw !== undefined) {
    for (const p of listOf(percentileRaw, 'percentile', 'invalid_percentile')) {
      const q = typeof p === 'number' ? p : typeof p === 'string' && p !== '' ? Number(p) : NaN;
      if (!Number.isFinite(q) || q < 0 || q > 1) throw new AggregateError('invalid_percentile', `percentile: ${JSON.stringify(p)} is not a fraction between 0 and 1 (0.9 for the 90th percentile)`);
      addPercentile(q);
    }
  }
  return { plain, percentiles };
}

const CIRCLE = (radiusM: number): number => (Math.PI * radiusM * radiusM) / 1e6;

/**
 * Upper estimate of the output cells an area can have at `resolution`: for a cells area, the
 * cells themselves (their descendants at finer resolutions, 7 per level, or distinct parents);
 * otherwise the area in km² over the average hexagon area at that resolution (at least 1).
 */
export function estimateCells(area: Area, resolution: number): number {
  if (area.kind === 'cells') {
    let n = 0;
    const parents = new Set<string>();
    for (const c of area.cells) {
      const r = getResolution(c);
      if (r <= resolution) n += 7 ** (resolution - r);
      else parents.add(cellToParent(c, resolution));
    }
    return n + parents.size;
  }
  const km2 = area.kind === 'circle' ? CIRCLE(area.radiusM) : turfArea(area.kind === 'bbox' ? bboxPolygon(area.bbox) : area.geometry) / 1e6;
  return Math.max(1, Math.ceil(km2 / getHexagonAreaAvg(resolution, 'km2')));
}

const round = (x: number) => Number(x.toPrecision(3));

/** Spatial aggregates (heatmaps): one key per H3 cell × time bucket over an area and window. */
export const spatialAggregateRoutes: FastifyPluginAsyncTypebox<{ spatial: SpatialDeps }> = async (app, { spatial }) => {
  const context = {
    knownTypes: (t: string) => spatial.registry.deviceType(t) !== undefined,
    knownKey: (k: string) => spatial.keys.id(k) !== undefined,
  };

  const fail = (reply: FastifyReply, err: unknown) => {
    if (err instanceof AggregateError) return reply.code(400).send({ statusCode: 400, code: err.code, error: 'Bad Request', message: err.message });
    if (err instanceof SelectionError) return reply.code(400).send({ statusCode: 400, code: 'invalid_selection', error: 'Bad Request', message: err.message });
    const refused = geometryRefusal(err);
    if (refused) {
      const { retryAfterS, ...body } = refused;
      if (retryAfterS !== undefined) void reply.header('retry-after', String(retryAfterS));
      return reply.code(body.statusCode).send(body);
    }
    if ((err as { code?: string }).code === QUERY_CANCELED) {
      return reply.code(503).send({
        statusCode: 503,
        code: 'query_timeout',
        error: 'Service Unavailable',
        message: `the query ran longer than ${spatial.statementTimeoutMs} ms (SPATIAL_STATEMENT_TIMEOUT_MS); ask for a smaller area, a shorter window or a coarser resolution`,
      });
    }
    throw err;
  };

  const handler = async (input: AggregateInput, reply: FastifyReply, scope: Scope) => {
    try {
      if (input.keys !== undefined) throw new AggregateError('invalid_selection', 'keys: not used here; name the one key to aggregate with key');
      const key = input.key.trim();
      const column = Object.hasOwn(POSITION_KEYS, key) ? (POSITION_KEYS[key as keyof typeof POSITION_KEYS] as PositionColumn) : undefined;
      const keyId = spatial.keys.id(key);
      if (column === undefined && keyId === undefined) throw new AggregateError('unknown_key', `key: no device has ever sent "${key}"`);
      const stats = parseStats(input.stats, input.percentile);
      const sel = withinScope(await parseSelectionWith(input as SelectionInput, context, DEFAULT_SPAN_MS, spatial.geometry), scope);
      const from = sel.from.getTime();
      const to = sel.to.getTime();

      let intervalMs = to - from;
      let originMs = from;
      if (input.interval !== undefined) {
        const parsed = parseInterval(input.interval);
        if (parsed === 'auto') throw new AggregateError('invalid_interval', 'interval: auto is not available here; give a duration (15m, 1h, 1d) or leave it out for one bucket over the whole window');
        if (typeof parsed === 'object') throw new AggregateError('invalid_interval', parsed.error);
        intervalMs = parsed;
        originMs = BUCKET_ORIGIN;
      }
      const first = Math.floor((from - originMs) / intervalMs);
      const last = Math.floor((to - 1 - originMs) / intervalMs);
      const buckets = last - first + 1;
      if (buckets > MAX_BUCKETS) {
        throw new AggregateError(
          'too_many_buckets',
          `interval ${formatInterval(intervalMs)} over ${sel.from.toISOString()} … ${sel.to.toISOString()} makes ${buckets} buckets; at most ${MAX_BUCKETS}: ask for a longer interval or a shorter window`,
        );
      }
      const cells = estimateCells(sel.area, input.resolution);
      if (cells * buckets > MAX_CELL_BUCKETS) {
        throw new AggregateError(
          'area_too_large',
          `an area too large for the requested resolution: ~${cells} cells at resolution ${input.resolution} (${round(getHexagonAreaAvg(input.resolution, 'km2'))} km² each) × ` +
            `${buckets} bucket(s) = ~${cells * buckets} cell-buckets; at most ${MAX_CELL_BUCKETS}: choose a coarser resolution, a longer interval, a smaller area or a shorter window`,
        );
      }

      const resolved = await resolveSelection(spatial, { ...sel, keys: keyId === undefined ? undefined : [key] });
      const result = selectsNothing(resolved)
        ? { rows: [] as AggregateRow[], sources: [], truncated: false }
        : await runHeavy(spatial, () => withSpatialSession(spatial, resolved, (client, next) =>
            spatialAggregate(client, spatial, {
              next,
              sel: resolved,
              value: column !== undefined ? { column } : { keyId: keyId! },
              resolution: input.resolution,
              intervalMs,
              originMs,
              percentiles: stats.percentiles.map(([, q]) => q),
              rawOnly: input.source === 'raw',
              // The estimate leaves out cells only partly inside the area: leave room for them.
              maxRows: MAX_CELL_BUCKETS * 2,
            }),
          ));

      const properties = (r: AggregateRow) => {
        const p: Record<string, string | number> = { cell: r.cell, bucket: r.bucket };
        for (const s of stats.plain) p[s] = r[s];
        stats.percentiles.forEach(([name], i) => (p[name] = r.percentiles[i]!));
        return p;
      };
      const interval = input.interval === undefined ? null : formatInterval(intervalMs);
      const meta = {
        key,
        resolution: input.resolution,
        interval,
        from: sel.from.toISOString(),
        to: sel.to.toISOString(),
        stats: [...stats.plain, ...stats.percentiles.map(([name]) => name)],
        sources: result.sources,
        truncated: result.truncated,
      };
      void reply.header('guanlink-sources', result.sources.join(',')).header('guanlink-interval', interval ?? formatInterval(intervalMs));
      if (input.format === 'json') return reply.send({ ...meta, rows: result.rows.map(properties) });
      return reply.type('application/geo+json').send({
        type: 'FeatureCollection',
        ...meta,
        features: result.rows.map((r) => ({
          type: 'Feature',
          // RFC 7946: [lng, lat], closed ring, counter-clockwise exterior (h3-js returns it so).
          geometry: { type: 'Polygon', coordinates: [cellToBoundary(r.cell, true)] },
          properties: properties(r),
        })),
      });
    } catch (err) {
      return fail(reply, err);
    }
  };

  const schema = {
    summary: 'Heatmap: one numeric key per H3 cell × time bucket in an area and window (avg, min, max, count, sum, percentiles), as rows or hexagons',
    description:
      'Area: exactly one of bbox, lat+lng+radius, cells or geometry; window from (default to − 24 h) … to (default now), at most 366 days; filters domain and type. ' +
      'Readings count in the cell of their position at `resolution` and the bucket of their time. Only cells and buckets with readings are returned, ordered by bucket then cell. ' +
      `Refused (400 area_too_large) when the area's estimated cells at the resolution × buckets exceed ${MAX_CELL_BUCKETS}; at most ${MAX_BUCKETS} buckets. ` +
      'count, sum, avg, min and max of devices that do not move come from the 1-hour or 1-minute rollups where those are complete (whole-hour or whole-minute buckets); ' +
      'percentiles (linear interpolation, PostgreSQL percentile_cont) and moving devices always come from raw readings. Header GuanLink-Sources and field `sources` say what was read.',
    tags: ['spatial'],
    response: { 200: Type.Union([AggregateHexagons, AggregateRows]), 400: AggregateErrorResponse, 413: AggregateErrorResponse, 503: AggregateErrorResponse },
  };
  // The 200 schema documents the answer; plain JSON.stringify writes it (tens of thousands of rows,
  // keys that depend on the request). Fastify hands its own errors (schema validation) over as Error objects.
  const serializerCompiler = () => (data: unknown) => {
    if (!(data instanceof Error)) return JSON.stringify(data);
    const { statusCode = 500, code } = data as Error & { statusCode?: number; code?: string };
    return JSON.stringify({ statusCode, code, error: STATUS_CODES[statusCode] ?? 'Error', message: data.message });
  };
  app.get('/spatial/aggregate', { config: { permission: 'read', concurrency: 'query' }, schema: { ...schema, querystring: AggregateQuery }, serializerCompiler }, async (request, reply) => handler(request.query, reply, request.principal.scope));
  app.post('/spatial/aggregate', { config: { permission: 'read', concurrency: 'query' }, schema: { ...schema, body: AggregateQuery }, serializerCompiler }, async (request, reply) => handler(request.body, reply, request.principal.scope));
};
