import type { MultiPolygon, Polygon } from 'geojson';
import { cellToParent, getResolution, latLngToCell } from 'h3-js';
import { Type, type Static } from 'typebox';
import { DOMAINS, type Domain } from '../domains.ts';
import { AreaError, areaContains, parsePolygon, type Area } from '../../geo/area.ts';
import { areaFilterSql, cachedCover } from '../../db/area-query.ts';
import { exactAreaSql } from '../../db/spatial-sql.ts';

/**
 * What data a principal may see: some domains and, optionally, an area — a GeoJSON (Multi)Polygon
 * or a list of Dongguan towns/districts (镇街) by name. With an area, a device is visible when its
 * registered location is inside (a moving device: its latest position), and a reading only when
 * it is positioned inside.
 */
export const ScopeInput = Type.Object(
  {
    domains: Type.Optional(Type.Array(Type.Enum(DOMAINS), { minItems: 1, uniqueItems: true, description: 'default: every domain' })),
    towns: Type.Optional(
      Type.Array(Type.String({ minLength: 1, maxLength: 50 }), { minItems: 1, maxItems: 40, uniqueItems: true, description: 'Dongguan towns/districts by name (虎门镇, 虎门 or Humen)' }),
    ),
    area: Type.Optional(Type.Unknown({ description: 'a GeoJSON Polygon or MultiPolygon (or a Feature of one)' })),
  },
  { additionalProperties: false, description: 'Empty: everything. `towns` and `area` exclude each other.' },
);
export type ScopeInput = Static<typeof ScopeInput>;

export interface Scope {
  /** Domains visible; null: all. */
  domains: readonly Domain[] | null;
  /** The area's description as given (town names), for display. */
  towns: readonly string[] | null;
  /** Visible region; null: everywhere. */
  area: (Area & { kind: 'polygon' }) | null;
  /** Identifies the scope for caches: equal keys mean equal scopes. */
  key: string;
  /** The input it was parsed from (stored with a key). */
  input: ScopeInput;
}

export const UNRESTRICTED: Scope = { domains: null, towns: null, area: null, key: '*', input: {} };

/** A scope that cannot be used; the message says exactly why (HTTP 400). */
export class ScopeError extends Error {
  override readonly name = 'ScopeError';
}

/** Resolves town names to one area (core/access/towns: shipped approximate areas or an operator's official ones). */
export interface TownAreas {
  union(names: readonly string[]): { geometry: Polygon | MultiPolygon | undefined; unknown: string[] };
}

/** Checks a scope input (see ScopeInput) and makes it a Scope; unknown towns and invalid geometry are ScopeErrors. */
export function parseScope(input: ScopeInput, towns: TownAreas): Scope {
  if (input.towns && input.area !== undefined) throw new ScopeError('scope: give towns or area, not both');
  const domains = input.domains && input.domains.length < DOMAINS.length ? [...input.domains].sort() : null;
  let area: Scope['area'] = null;
  if (input.towns) {
    const { geometry, unknown } = towns.union(input.towns);
    if (unknown.length > 0) throw new ScopeError(`scope.towns: unknown town${unknown.length > 1 ? 's' : ''} ${unknown.map((t) => `"${t}"`).join(', ')} (GET /api/v1/towns lists them)`);
    if (!geometry) throw new ScopeError('scope.towns: no town given');
    area = { kind: 'polygon', geometry };
  } else if (input.area !== undefined) {
    try {
      area = { kind: 'polygon', geometry: parsePolygon(input.area) };
    } catch (err) {
      if (err instanceof AreaError) throw new ScopeError(`scope.area: ${err.message}`);
      throw err;
    }
  }
  const normal: ScopeInput = {};
  if (domains) normal.domains = domains as Domain[];
  if (input.towns) normal.towns = [...input.towns];
  else if (area) normal.area = area.geometry;
  const key = domains === null && area === null ? '*' : JSON.stringify([domains, area?.geometry ?? null]);
  return { domains, towns: input.towns ?? null, area, key, input: normal };
}

export const domainVisible = (scope: Scope, domain: Domain): boolean => scope.domains === null || scope.domains.includes(domain);

/** The domains of `wanted` (default all) that the scope lets through. */
export const visibleDomains = (scope: Scope, wanted: readonly Domain[] = DOMAINS): Domain[] =>
  scope.domains === null ? [...wanted] : wanted.filter((d) => scope.domains!.includes(d));

/** The cover a scope's area is tested with (cached: the same few scopes are used again and again). */
const scopeCover = (area: Area) => cachedCover(area, 1500);

/**
 * Whether a position is inside the scope's area (true without an area): the H3 cover decides
 * cells well inside, the exact test (Turf, as everywhere) only the boundary band.
 */
export function scopeContains(scope: Scope, lng: number, lat: number): boolean {
  if (!scope.area) return true;
  const index = insideIndex(scope.area);
  const cell = latLngToCell(lat, lng, 15);
  for (const [res, cells] of index.inside) if (cells.has(cellToParent(cell, res))) return true;
  if (!index.edge.has(cellToParent(cell, index.edgeResolution))) return false;
  return areaContains(scope.area, lng, lat);
}

interface InsideIndex {
  inside: Map<number, Set<string>>;
  edge: Set<string>;
  edgeResolution: number;
}
const indexes = new WeakMap<Area, InsideIndex>();
function insideIndex(area: Area): InsideIndex {
  let index = indexes.get(area);
  if (index) return index;
  const cover = scopeCover(area);
  const inside = new Map<number, Set<string>>();
  for (const c of cover.insideCells) {
    const res = getResolution(c);
    let set = inside.get(res);
    if (!set) inside.set(res, (set = new Set()));
    set.add(c);
  }
  index = { inside, edge: new Set(cover.edgeCells), edgeResolution: cover.edgeResolution };
  indexes.set(area, index);
  return index;
}

/** SQL: the exact test of a position against the scope's area, for rows without an H3 cell (events); undefined without an area. */
export function scopeExactSql(scope: Scope, cols: { lng: string; lat: string }): string | undefined {
  return scope.area ? exactAreaSql(scope.area, { ...cols, cell: 'NULL' }) : undefined;
}

/**
 * SQL: true when a row's position is inside the scope's area — the same exact H3 cover machinery
 * as spatial queries (db/area-query.ts): cells well inside by membership, only the boundary band
 * with the exact point-in-polygon test. Undefined when the scope has no area. A row without a
 * position is outside.
 */
export function scopeAreaSql(scope: Scope, cols: { lng: string; lat: string; cell: string }): string | undefined {
  return scope.area ? areaFilterSql(scope.area, cols) : undefined;
}
