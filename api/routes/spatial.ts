import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply } from 'fastify';
import { Type, type Static } from 'typebox';
import { areaContains } from '../../geo/area.ts';
import { bigIntToCell } from '../../geo/cell.ts';
import { Params } from '../../db/area-query.ts';
import { QUERY_CANCELED, resolveSelection, runHeavy, selectionRowsSql, selectsNothing, withSpatialSession, withinScope, type SpatialDeps } from '../../db/spatial-query.ts';
import { scopeContains, type Scope } from '../../core/access/scope.ts';
import type { LatestTracker } from '../../ingest/latest.ts';
import { ErrorResponse, badRequest, Limit, SafeText, INT32_MAX } from '../schemas.ts';
import { MAX_WINDOW_DAYS, SelectionError, SelectionFields, geometryRefusal, parseSelectionWith, type SelectionInput } from '../spatial-selection.ts';
import type { NonNumericValue, TelemetryValue } from '../../ingest/readings.ts';

/** Readings one history page may hold. */
export const MAX_HISTORY_LIMIT = 100_000;
const DEFAULT_HISTORY_LIMIT = 1000;
/** History's default window when `from` is left out. */
const DEFAULT_HISTORY_SPAN_MS = 3_600_000;
/** The first time slice a history page reads; it grows ×4 while the page is not full. */
const FIRST_SLICE_MS = 3_600_000;

const Format = Type.Union([Type.Literal('geojson'), Type.Literal('json')], { description: 'geojson (default): a FeatureCollection; json: plain rows' });

const LatestQuery = Type.Object({
  ...SelectionFields,
  format: Type.Optional(Format),
  limit: Type.Optional(Limit(MAX_HISTORY_LIMIT, { description: `devices per page (default ${DEFAULT_HISTORY_LIMIT}, at most ${MAX_HISTORY_LIMIT})` })),
  cursor: Type.Optional(Type.String({ maxLength: 20, pattern: '^[0-9]{1,10}$', description: 'the `next` of the previous page (devices are in id order)' })),
});
const HistoryQuery = Type.Object({
  ...SelectionFields,
  format: Type.Optional(Format),
  limit: Type.Optional(Limit(MAX_HISTORY_LIMIT, { description: `readings per page (default ${DEFAULT_HISTORY_LIMIT}, at most ${MAX_HISTORY_LIMIT})` })),
  cursor: Type.Optional(SafeText(200, { description: 'the `next` of the previous page' })),
});


/** A history position: readings strictly older than (ts, device) in (ts DESC, device DESC) order. */
interface Position {
  ts: string;
  device: number;
}

const encodeCursor = (p: Position): string => Buffer.from(`${p.ts}|${p.device}`).toString('base64url');
function decodeCursor(raw: string): Position {
  const [ts, device] = Buffer.from(raw, 'base64url').toString('utf8').split('|');
  // As far as the query takes it (a real instant, as encodeCursor writes it; an int4 device id): a forged cursor is a 400, not a database error.
  const instant = ts && /^(19[7-9]\d|[2-9]\d{3})-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(ts) ? Date.parse(ts) : NaN;
  if (!ts || Number.isNaN(instant) || new Date(instant).toISOString().slice(0, 23) !== ts.slice(0, 23) || !device || !/^\d{1,10}$/.test(device) || Number(device) > INT32_MAX) {
    throw new SelectionError('cursor: not a cursor returned by this endpoint');
  }
  return { ts, device: Number(device) };
}

interface HistoryRow {
  device_id: number;
  name: string;
  type: string;
  ts: Date;
  pos: string;
  lat: number;
  lng: number;
  alt: number | null;
  cell: string;
  keys: number[];
  vals: number[];
  jvals: Record<string, NonNumericValue> | null;
}

/**
 * Spatial queries over REST: the latest reading of each device in an area, and the readings of a
 * time window in an area, newest first, paginated. GET with query parameters, POST with the same
 * names in a JSON body (long polygons).
 */
export const spatialRoutes: FastifyPluginAsyncTypebox<{ spatial: SpatialDeps; latest: LatestTracker }> = async (app, { spatial, latest }) => {
  const context = {
    knownTypes: (t: string) => spatial.registry.deviceType(t) !== undefined,
    knownKey: (k: string) => spatial.keys.id(k) !== undefined,
  };

  const fail = (reply: FastifyReply, err: unknown) => {
    if (err instanceof SelectionError) return reply.code(400).send(badRequest(err.message));
    const refused = geometryRefusal(err);
    if (refused) {
      const { retryAfterS, ...body } = refused;
      if (retryAfterS !== undefined) void reply.header('retry-after', String(retryAfterS));
      return reply.code(body.statusCode).send(body);
    }
    if ((err as { code?: string }).code === QUERY_CANCELED) {
      return reply.code(503).send({ statusCode: 503, error: 'Service Unavailable', message: `the query ran longer than ${spatial.statementTimeoutMs} ms (SPATIAL_STATEMENT_TIMEOUT_MS); ask for a smaller area or window` });
    }
    throw err;
  };

  const latestHandler = async (input: Static<typeof LatestQuery>, reply: FastifyReply, scope: Scope) => {
    try {
      // The window only filters when asked: devices whose latest position is at least that recent.
      const sel = withinScope(await parseSelectionWith(input, context, MAX_WINDOW_DAYS * 86_400_000, spatial.geometry), scope);
      const since = input.from === undefined ? -Infinity : sel.from.getTime();
      const afterId = input.cursor === undefined ? 0 : Number(input.cursor);
      const all = await latest.all();
      const inWindow = all.filter((d) => d.deviceId > afterId && d.position && d.position.ts >= since && d.position.ts < sel.to.getTime() + 1);
      let candidates: typeof inWindow;
      if (spatial.geometry) {
        // Every device's position against the area (and the scope's): on the geometry threads.
        const points = new Float64Array(2 * inWindow.length);
        inWindow.forEach((d, i) => [points[2 * i], points[2 * i + 1]] = [d.position!.lng, d.position!.lat]);
        const inside = inWindow.length === 0 ? new Uint8Array(0) : await spatial.geometry.inside(sel.area, points, scope.area ?? undefined);
        candidates = inWindow.filter((_, i) => inside[i] === 1);
      } else {
        candidates = inWindow.filter((d) => areaContains(sel.area, d.position!.lng, d.position!.lat) && scopeContains(scope, d.position!.lng, d.position!.lat));
      }
      const { rows } = await spatial.pool.query<{ id: number; name: string; type: string }>(`SELECT id, name, type FROM devices WHERE id = ANY ($1::int4[])`, [candidates.map((d) => d.deviceId)]);
      const described = new Map(rows.map((r) => [r.id, r]));
      const devices = candidates.flatMap((d) => {
        const device = described.get(d.deviceId);
        const type = device && spatial.registry.deviceType(device.type);
        if (!device || !type || !sel.domains.includes(type.domain) || (sel.types && !sel.types.includes(device.type))) return [];
        const entries = Object.entries(d.values).filter(([k]) => !sel.keys || sel.keys.includes(k));
        if (sel.keys && entries.length === 0) return [];
        const p = d.position!;
        return [
          {
            deviceId: d.deviceId,
            name: device.name,
            type: device.type,
            domain: type.domain,
            position: { ts: p.ts, lng: p.lng, lat: p.lat, alt: p.alt ?? null, cell: bigIntToCell(p.cell) },
            values: Object.fromEntries(entries.map(([k, [ts, value]]) => [k, { ts, value }])),
          },
        ];
      });
      devices.sort((a, b) => a.deviceId - b.deviceId);
      const limit = input.limit ?? DEFAULT_HISTORY_LIMIT;
      const next = devices.length > limit ? String(devices[limit - 1]!.deviceId) : null;
      devices.length = Math.min(devices.length, limit);
      reply.request.auditRows = devices.length;
      if (input.format === 'json') return { devices, next };
      return {
        type: 'FeatureCollection',
        next,
        features: devices.map(({ position, ...rest }) => ({
          type: 'Feature',
          id: rest.deviceId,
          geometry: { type: 'Point', coordinates: position.alt === null ? [position.lng, position.lat] : [position.lng, position.lat, position.alt] },
          properties: { ...rest, ts: position.ts, cell: position.cell },
        })),
      };
    } catch (err) {
      return fail(reply, err);
    }
  };

  const historyHandler = async (input: Static<typeof HistoryQuery>, reply: FastifyReply, scope: Scope) => {
    try {
      const sel = withinScope(await parseSelectionWith(input as SelectionInput, context, DEFAULT_HISTORY_SPAN_MS, spatial.geometry), scope);
      const limit = input.limit ?? DEFAULT_HISTORY_LIMIT;
      const after = input.cursor === undefined ? undefined : decodeCursor(input.cursor);
      const resolved = await resolveSelection(spatial, sel);
      const rows: HistoryRow[] = [];
      if (!selectsNothing(resolved)) {
        await runHeavy(spatial, () => withSpatialSession(spatial, resolved, async (client, next) => {
          // Newest first, one time slice at a time, so a page never sorts the whole window.
          let to = after ? Math.min(sel.to.getTime(), Date.parse(after.ts) + 1) : sel.to.getTime();
          let span = FIRST_SLICE_MS;
          for (let slice = 0; rows.length < limit && to > sel.from.getTime(); slice++) {
            // The page's statements together stay within SPATIAL_STATEMENT_TIMEOUT_MS.
            if (slice > 0) await next();
            const from = Math.max(sel.from.getTime(), to - span);
            const params = new Params();
            const where = after ? [`(r.ts, r.device_id) < (${params.add(after.ts)}::timestamptz, ${params.add(after.device)}::int4)`] : [];
            const parts = resolved.domains.map((domain) =>
              selectionRowsSql(resolved, domain, 'r.device_id, r.ts, r.lat, r.lng, r.alt, r.cell, r.keys, r.vals, r.jvals', params, { from: new Date(from), to: new Date(to), where }),
            );
            const sql =
              `SELECT q.device_id, d.name, d.type, q.ts, to_char(q.ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS pos, q.lat, q.lng, q.alt, q.cell::text AS cell, q.keys, q.vals, q.jvals ` +
              `FROM (${parts.join(' UNION ALL ')}) q JOIN devices d ON d.id = q.device_id ORDER BY q.ts DESC, q.device_id DESC LIMIT ${params.add(limit - rows.length)}`;
            const { rows: page } = await client.query<HistoryRow>(sql, params.values);
            rows.push(...page);
            to = from;
            span *= 4;
          }
        }));
      }
      const last = rows[rows.length - 1];
      const next = rows.length === limit && last ? encodeCursor({ ts: last.pos, device: last.device_id }) : null;
      reply.request.auditRows = rows.length;
      const readings = rows.map((r) => {
        const values: Record<string, TelemetryValue> = {};
        r.keys.forEach((id, i) => {
          const name = spatial.keys.nameSync(id);
          if (name !== undefined && (!sel.keys || sel.keys.includes(name))) values[name] = r.vals[i]!;
        });
        for (const id in r.jvals) {
          const name = spatial.keys.nameSync(Number(id));
          if (name !== undefined && (!sel.keys || sel.keys.includes(name))) values[name] = r.jvals[id]!;
        }
        return { deviceId: r.device_id, name: r.name, type: r.type, ts: r.ts.getTime(), lng: r.lng, lat: r.lat, alt: r.alt, cell: bigIntToCell(r.cell), values };
      });
      if (input.format === 'json') return { readings, next };
      return {
        type: 'FeatureCollection',
        features: readings.map(({ lng, lat, alt, ...properties }) => ({
          type: 'Feature',
          geometry: { type: 'Point', coordinates: alt === null ? [lng, lat] : [lng, lat, alt] },
          properties,
        })),
        next,
      };
    } catch (err) {
      return fail(reply, err);
    }
  };

  const latestSchema = {
    summary: 'Latest reading of each device whose latest position is in an area (GeoJSON Points)',
    description:
      'Area: exactly one of bbox, lat+lng+radius, cells or geometry. Filters: domain, type, keys (devices without any of the keys are left out), from/to (devices whose latest position is in that window). Boundaries count as inside.',
    tags: ['spatial'],
    response: {
      200: Type.Unknown({ description: 'geojson: FeatureCollection of Points, one per device (properties deviceId, name, type, domain, ts, cell, values {key: {ts, value}}); json: {devices: [...], next}; `next` is the cursor of the following page (null on the last)' }),
      400: ErrorResponse,
      413: ErrorResponse,
      503: ErrorResponse,
    },
  };
  const historySchema = {
    summary: 'Readings in an area and time window, newest first, paginated (GeoJSON Points)',
    description:
      `Window: from (default to − 1 h) … to (default now), at most 366 days. Each page holds up to limit readings ordered by (ts, device) descending; ` +
      'pass the returned `next` as cursor (with the same other parameters) for the following page; `next` is null on the last page. Exact: a reading is in the result when its position is inside the area or on its boundary.',
    tags: ['spatial'],
    response: {
      200: Type.Unknown({ description: 'geojson: FeatureCollection of Points (properties deviceId, name, type, ts, cell, values {key: value}) with `next`; json: {readings: [...], next}' }),
      400: ErrorResponse,
      413: ErrorResponse,
      503: ErrorResponse,
    },
  };

  app.get('/spatial/latest', { config: { permission: 'read' }, schema: { ...latestSchema, querystring: LatestQuery } }, async (request, reply) => latestHandler(request.query, reply, request.principal.scope));
  app.post('/spatial/latest', { config: { permission: 'read' }, schema: { ...latestSchema, body: LatestQuery } }, async (request, reply) => latestHandler(request.body, reply, request.principal.scope));
  app.get('/spatial/history', { config: { permission: 'read', concurrency: 'query' }, schema: { ...historySchema, querystring: HistoryQuery } }, async (request, reply) => historyHandler(request.query, reply, request.principal.scope));
  app.post('/spatial/history', { config: { permission: 'read', concurrency: 'query' }, schema: { ...historySchema, body: HistoryQuery } }, async (request, reply) => historyHandler(request.body, reply, request.principal.scope));
};
