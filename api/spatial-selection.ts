import { Type, type Static } from 'typebox';
import { DOMAINS, type Domain } from '../core/domains.ts';
import { AREA_LIMITS, AreaError, parseBbox, parseCells, parseCircle, parsePolygon, type Area } from '../geo/area.ts';
import { polygonIndexOf } from '../geo/polygon-index.ts';
import { GeometryTimeoutError, type GeometryWork } from '../core/geometry-pool.ts';
import { BusyError } from '../core/busy.ts';
import type { Selection } from '../db/spatial-query.ts';
import { parseInstant } from './routes/telemetry.ts';
import { SafeText } from './schemas.ts';

/**
 * What every spatial request selects (latest, history, aggregates, export): an area — exactly one
 * of bbox, lat+lng+radius, cells, geometry — a time window, and filters. GET takes them as query
 * parameters (lists comma-separated, geometry as GeoJSON text); POST takes the same names in a JSON
 * body with typed values (bbox and cells as arrays, geometry as a GeoJSON object), for polygons
 * too long for a URL.
 */

/** Longest time window one request may cover (the database must never be asked a query that cannot finish). */
export const MAX_WINDOW_DAYS = 366;
const MAX_WINDOW_MS = MAX_WINDOW_DAYS * 86_400_000;

const AreaFields = {
  bbox: Type.Optional(Type.Unknown({ description: 'minLng,minLat,maxLng,maxLat (WGS 84 degrees); POST: an array of four numbers' })),
  lat: Type.Optional(Type.Number({ description: 'circle centre latitude (with lng and radius)' })),
  lng: Type.Optional(Type.Number({ description: 'circle centre longitude' })),
  radius: Type.Optional(Type.Number({ description: 'circle radius in metres' })),
  cells: Type.Optional(Type.Unknown({ description: 'H3 cells of any resolutions, comma-separated; POST: an array of strings' })),
  geometry: Type.Optional(Type.Unknown({ description: 'GeoJSON Polygon, MultiPolygon or a Feature of one (RFC 7946); GET: URL-encoded JSON text' })),
};

const FilterFields = {
  from: Type.Optional(SafeText(40, { description: 'ISO 8601 date-time or epoch ms; start of the window (inclusive)' })),
  to: Type.Optional(SafeText(40, { description: 'ISO 8601 date-time or epoch ms; end of the window (exclusive); default now' })),
  domain: Type.Optional(Type.Unknown({ description: `${DOMAINS.join(', ')}; several comma-separated (POST: array); default all` })),
  type: Type.Optional(Type.Unknown({ description: 'device types, comma-separated (POST: array); default all' })),
  keys: Type.Optional(Type.Unknown({ description: 'telemetry keys, comma-separated (POST: array); default all. An unknown key is an error.' })),
};

/** The selection as query parameters or JSON body (each route adds its own fields). */
export const SelectionFields = { ...AreaFields, ...FilterFields };
export const SelectionSchema = Type.Object(SelectionFields);
export type SelectionInput = Static<typeof SelectionSchema>;

/** A request that cannot be answered as asked; the message says exactly why (HTTP 400). */
export class SelectionError extends Error {
  override readonly name = 'SelectionError';
}

function list(raw: unknown, what: string): string[] | undefined {
  if (raw === undefined) return undefined;
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',') : undefined;
  if (!items || items.some((i) => typeof i !== 'string')) throw new SelectionError(`${what}: a comma-separated list (or, in a JSON body, an array of strings)`);
  const out = [...new Set((items as string[]).map((i) => i.trim()).filter((i) => i.length > 0))];
  if (out.length === 0) throw new SelectionError(`${what}: empty list`);
  return out;
}

function numbers(raw: unknown, what: string): number[] {
  const items = Array.isArray(raw) ? raw : typeof raw === 'string' ? raw.split(',').map((s) => (s.trim() === '' ? NaN : Number(s))) : [];
  if (!items.every((n) => typeof n === 'number' && Number.isFinite(n))) throw new SelectionError(`${what}: numbers only`);
  return items as number[];
}

/** Which area a request gives, not yet checked. */
type AreaRequest =
  | { kind: 'circle'; lat: number; lng: number; radius: number }
  | { kind: 'bbox'; raw: unknown }
  | { kind: 'cells'; raw: unknown }
  | { kind: 'geometry'; geometry: unknown };

function areaRequest(input: Pick<SelectionInput, 'bbox' | 'lat' | 'lng' | 'radius' | 'cells' | 'geometry'>): AreaRequest {
  const given = (['bbox', 'cells', 'geometry'] as const).filter((k) => input[k] !== undefined);
  const circle = input.lat !== undefined || input.lng !== undefined || input.radius !== undefined;
  if (given.length + (circle ? 1 : 0) !== 1) {
    throw new SelectionError('give exactly one area: bbox, lat+lng+radius, cells or geometry');
  }
  if (circle) {
    if (input.lat === undefined || input.lng === undefined || input.radius === undefined) throw new SelectionError('a circle needs lat, lng and radius (metres)');
    return { kind: 'circle', lat: input.lat, lng: input.lng, radius: input.radius };
  }
  if (input.bbox !== undefined) return { kind: 'bbox', raw: input.bbox };
  if (input.cells !== undefined) return { kind: 'cells', raw: input.cells };
  let geometry = input.geometry;
  if (typeof geometry === 'string') {
    try {
      geometry = JSON.parse(geometry);
    } catch {
      throw new SelectionError('geometry: not JSON (URL-encode the GeoJSON text, or POST it in the body)');
    }
  }
  return { kind: 'geometry', geometry };
}

function parseAreaRequest(req: AreaRequest): Area {
  try {
    switch (req.kind) {
      case 'circle':
        return parseCircle(req.lat, req.lng, req.radius);
      case 'bbox':
        return parseBbox(numbers(req.raw, 'bbox'));
      case 'cells':
        return parseCells(list(req.raw, 'cells') ?? []);
      case 'geometry':
        return { kind: 'polygon', geometry: parsePolygon(req.geometry) };
    }
  } catch (err) {
    if (err instanceof AreaError) throw new SelectionError(err.message);
    throw err;
  }
}

/** The area of a request: exactly one of bbox, lat+lng+radius, cells or geometry. */
export function parseArea(input: Pick<SelectionInput, 'bbox' | 'lat' | 'lng' | 'radius' | 'cells' | 'geometry'>): Area {
  return parseAreaRequest(areaRequest(input));
}

/**
 * Most polygon edges one test of a position may have to examine (the edges of its latitude band,
 * geo/polygon-index.ts): what testing a reading costs, in the database and here. A boundary that a
 * line of latitude crosses this often is not a real area; it is refused (413) before any work.
 */
export const MAX_TEST_EDGES = 2000;

/** An area whose cost is beyond the documented limits (HTTP 413, code area_too_complex); the message says which and by how much. */
export class AreaCostError extends Error {
  override readonly name = 'AreaCostError';
  readonly statusCode = 413;
  readonly code = 'area_too_complex';
}

/** Refuses an area too costly to test (AreaCostError). */
export function checkAreaCost(area: Area): void {
  if (area.kind !== 'polygon') return;
  const index = polygonIndexOf(area.geometry);
  if (index.maxBandEdges > MAX_TEST_EDGES) {
    throw new AreaCostError(
      `the area is too complex to test: a line of latitude meets up to ${index.maxBandEdges} of its ${index.edges} edges, and testing a position examines them all; ` +
        `at most ${MAX_TEST_EDGES}: simplify the boundary or split the area into several requests`,
    );
  }
}

/**
 * parseArea with the costly checks (a polygon's validity, H3 cells) on `geometry`'s worker
 * threads, then the cost limit (checkAreaCost); boxes and circles are cheap and checked here.
 */
export async function parseAreaWith(input: Pick<SelectionInput, 'bbox' | 'lat' | 'lng' | 'radius' | 'cells' | 'geometry'>, geometry: GeometryWork | undefined): Promise<Area> {
  const req = areaRequest(input);
  let area: Area;
  if (!geometry || req.kind === 'circle' || req.kind === 'bbox') area = parseAreaRequest(req);
  else {
    let cells: string[] | undefined;
    if (req.kind === 'cells') {
      cells = list(req.raw, 'cells') ?? [];
      if (cells.length > AREA_LIMITS.maxCells) throw new SelectionError(`cells: at most ${AREA_LIMITS.maxCells} cells`);
    }
    const parsed = await geometry.parseArea(cells ? { cells } : { geometry: (req as { geometry: unknown }).geometry });
    if ('error' in parsed) throw new SelectionError(parsed.error);
    area = parsed.area;
  }
  checkAreaCost(area);
  return area;
}

/** The time window: `to` defaults to now, `from` to `to` minus `defaultSpanMs`; inverted, empty or longer than MAX_WINDOW_DAYS is an error. */
export function parseWindow(input: Pick<SelectionInput, 'from' | 'to'>, defaultSpanMs: number, now = Date.now()): { from: Date; to: Date } {
  const to = input.to === undefined ? new Date(now) : parseInstant(input.to);
  if (!to) throw new SelectionError(`to: "${input.to}" is not an ISO 8601 date-time or epoch milliseconds`);
  const from = input.from === undefined ? new Date(to.getTime() - defaultSpanMs) : parseInstant(input.from);
  if (!from) throw new SelectionError(`from: "${input.from}" is not an ISO 8601 date-time or epoch milliseconds`);
  if (from.getTime() >= to.getTime()) throw new SelectionError(`from (${from.toISOString()}) must be before to (${to.toISOString()})`);
  if (to.getTime() - from.getTime() > MAX_WINDOW_MS) throw new SelectionError(`the window is longer than ${MAX_WINDOW_DAYS} days; ask for a shorter one`);
  return { from, to };
}

export interface SelectionContext {
  /** Device types that exist (a filter naming another is an error). */
  knownTypes: (name: string) => boolean;
  /** Telemetry keys that exist. */
  knownKey: (name: string) => boolean;
}

export function parseSelection(input: SelectionInput, ctx: SelectionContext, defaultSpanMs: number): Selection {
  return selectionIn(parseArea(input), input, ctx, defaultSpanMs);
}

/** parseSelection with the area's geometry work on `geometry`'s threads and its cost checked (parseAreaWith). */
export async function parseSelectionWith(input: SelectionInput, ctx: SelectionContext, defaultSpanMs: number, geometry: GeometryWork | undefined): Promise<Selection> {
  return selectionIn(await parseAreaWith(input, geometry), input, ctx, defaultSpanMs);
}

function selectionIn(area: Area, input: SelectionInput, ctx: SelectionContext, defaultSpanMs: number): Selection {
  const { from, to } = parseWindow(input, defaultSpanMs);
  const domains = list(input.domain, 'domain') ?? [...DOMAINS];
  const badDomain = domains.find((d) => !(DOMAINS as readonly string[]).includes(d));
  if (badDomain !== undefined) throw new SelectionError(`domain: "${badDomain}" is not one of ${DOMAINS.join(', ')}`);
  const types = list(input.type, 'type');
  const badType = types?.find((t) => !ctx.knownTypes(t));
  if (badType !== undefined) throw new SelectionError(`type: no device type is named "${badType}"`);
  const keys = list(input.keys, 'keys');
  const badKey = keys?.find((k) => !ctx.knownKey(k));
  if (badKey !== undefined) throw new SelectionError(`keys: no device has ever sent "${badKey}"`);
  return { area, from, to, domains: domains as Domain[], types, keys };
}

/** How a spatial route answers an area too costly (413), geometry workers or database turns busy (503, Retry-After) or geometry too slow (503); undefined for other errors. */
export function geometryRefusal(err: unknown): { statusCode: 413 | 503; code: string; error: string; message: string; retryAfterS?: number } | undefined {
  if (err instanceof AreaCostError) return { statusCode: 413, code: err.code, error: 'Content Too Large', message: err.message };
  if (err instanceof BusyError) return { statusCode: 503, code: err.code, error: 'Service Unavailable', message: err.message, retryAfterS: err.retryAfterS };
  if (err instanceof GeometryTimeoutError) return { statusCode: 503, code: err.code, error: 'Service Unavailable', message: err.message };
  return undefined;
}
