import type { MultiPolygon, Polygon } from 'geojson';
import { getResolution } from 'h3-js';
import type { Area } from '../geo/area.ts';
import { descendantRange } from '../geo/cell.ts';
import { indexPolygon, polygonIndexOf, type PolygonIndex } from '../geo/polygon-index.ts';

/**
 * SQL expressions that decide membership of a row's position (or H3 cell) in an area, with the
 * area's numbers inlined as constants: PostgreSQL evaluates them in C, no PostGIS needed, and
 * they agree with geo/area.ts `areaContains` (Turf), boundary included (tested in
 * spatial-sql.test.ts against real PostgreSQL).
 */

/** Above this many polygon edges the exact test is only applied where the H3 cover says it is needed. */
export const CHEAP_EXACT_EDGES = 32;

/**
 * A typed float8 literal: an untyped one is numeric, and each `numeric - float8` then costs the
 * parser an operator resolution and a cast (measured: a 43-edge polygon test took 2 ms to parse
 * with numeric literals). The value is the same double either way (strtod of the same text).
 */
const num = (v: number): string => {
  if (!Number.isFinite(v)) throw new Error(`not a finite coordinate: ${v}`);
  return `float8 '${v}'`;
};

/**
 * True when (`lng`, `lat`) lies in the polygon or on its boundary, computed as Turf does
 * (point-in-polygon-hao: per edge, the crossing rule and the sign of the same floating-point
 * orientation; where that sign is within rounding of zero — a position within ~1e-9 m of a
 * slanted edge — Turf refines it with exact arithmetic and the two may differ). Per member
 * polygon: a bounding-box check, then every ring's edges add 1 per crossing or BOUNDARY when the
 * point is on the edge; inside when the sum is odd or holds a BOUNDARY. Members are OR-ed, so
 * overlapping members mean their union, as in Turf.
 */
export function pointInPolygonSql(area: Polygon | MultiPolygon, lng: string, lat: string, within?: Bbox, params?: SqlParams): string {
  const polygons = area.type === 'Polygon' ? [area.coordinates] : area.coordinates;
  const rings = polygons.flat();
  const edges = rings.reduce((n, ring) => n + ring.length - 1, 0);
  if (edges > INLINE_EDGES) return bandedPointInPolygonSql(area, lng, lat, within, params);
  return `(${polygons.map((rings) => memberSql(rings, lng, lat, within)).join(' OR ')})`;
}

/**
 * Polygons with more edges than this get the banded test (bandedPointInPolygonSql) instead of
 * every edge inlined: a statement of 10 000 inlined edges is 3.5 MB that PostgreSQL parses for
 * seconds (per domain table, per statement) and evaluates 10 000 terms per row.
 */
export const INLINE_EDGES = 256;

/** Where a statement's large constants go: bind parameters when the caller collects them (Params), else literals. */
export interface SqlParams {
  add(value: unknown, cast?: string): string;
}

function boxOfGeometry(g: Polygon | MultiPolygon): Bbox {
  let [minX, minY, maxX, maxY] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const ring of g.type === 'Polygon' ? g.coordinates : g.coordinates.flat()) {
    for (const [x, y] of ring as [number, number][]) [minX, minY, maxX, maxY] = [Math.min(minX, x), Math.min(minY, y), Math.max(maxX, x), Math.max(maxY, y)];
  }
  return [minX, minY, maxX, maxY];
}

/** The band arrays of an index, in the order the SQL uses them, with their element types. */
const bandArrays = (index: PolygonIndex): [ArrayLike<number>, string][] => [
  [index.bounds, 'float8'],
  [index.offsets, 'int4'],
  [index.x1, 'float8'],
  [index.y1, 'float8'],
  [index.x2, 'float8'],
  [index.y2, 'float8'],
  [index.member, 'int4'],
];

const arrayTexts = new WeakMap<PolygonIndex, string[]>();

/**
 * The band arrays as PostgreSQL array text ('{…}', each number as JavaScript writes it: the
 * shortest text that reads back as the same double), made once per index: a request's statements
 * then send text, without converting tens of thousands of numbers for each.
 */
export function bandArrayTexts(index: PolygonIndex): string[] {
  let texts = arrayTexts.get(index);
  if (!texts) arrayTexts.set(index, (texts = bandArrays(index).map(([values]) => `{${Array.prototype.join.call(values, ',')}}`)));
  return texts;
}

/** Attaches texts made elsewhere (a worker thread, with the index) to this copy of the index. */
export function adoptBandArrayTexts(index: PolygonIndex, texts: string[]): void {
  arrayTexts.set(index, texts);
}

/** The band arrays of an index, per statement: a polygon read from several tables is sent once. */
const boundArrays = new WeakMap<SqlParams, Map<PolygonIndex, string[]>>();
/** Indexes of the edges that matter in a box (see edgeMatters), per polygon and box. */
const prunedIndexes = new WeakMap<Polygon | MultiPolygon, Map<string, PolygonIndex>>();

function prunedIndex(area: Polygon | MultiPolygon, within: Bbox): PolygonIndex {
  let byBox = prunedIndexes.get(area);
  if (!byBox) prunedIndexes.set(area, (byBox = new Map()));
  const key = within.join(',');
  let index = byBox.get(key);
  if (!index) {
    index = indexPolygon(area, (x1, y1, x2, y2) => edgeMatters(within, x1, y1, x2, y2));
    if (byBox.size >= 8) byBox.delete(byBox.keys().next().value!);
    byBox.set(key, index);
  }
  return index;
}

/**
 * The same test as the inlined one, per member polygon and with the same arithmetic on the same
 * doubles, over only the edges of the row's latitude band (geo/polygon-index.ts): the edges go
 * to the database as arrays sorted by band (bind parameters, or array literals), the row's band
 * is found by `width_bucket` over the band bounds, and its slice of the arrays is unnested. The
 * statement stays small whatever the polygon, and a row costs the edges of one band
 * (`maxBandEdges`, bounded for requests by api/spatial-selection.ts MAX_TEST_EDGES). Boundary and
 * crossing rules as in memberSql; a member's count is odd or holds a BOUNDARY → inside.
 */
export function bandedPointInPolygonSql(area: Polygon | MultiPolygon, lng: string, lat: string, within?: Bbox, params?: SqlParams): string {
  const index = within ? prunedIndex(area, within) : polygonIndexOf(area);
  if (index.edges === 0) return '(false)'; // no edge can be crossed west of a point in `within`: outside
  const types = bandArrays(index).map(([, type]) => type);
  const texts = bandArrayTexts(index);
  let names: string[];
  if (params) {
    let byIndex = boundArrays.get(params);
    if (!byIndex) boundArrays.set(params, (byIndex = new Map()));
    names = byIndex.get(index) ?? texts.map((text, i) => params.add(text, `::${types[i]}[]`));
    byIndex.set(index, names);
  } else names = texts.map((text, i) => `'${text}'::${types[i]}[]`);
  const [b, o, x1, y1, x2, y2, m] = names as [string, string, string, string, string, string, string];
  const bands = index.bounds.length - 1;
  // The whole polygon's box: the edges left out for `within` may be the eastern ones of a member the point is in.
  const [minX, minY, maxX, maxY] = within ? boxOfGeometry(area) : index.bbox;
  const slice = (a: string) => `(${a})[(${o})[w.j] + 1:(${o})[w.j + 1]]`;
  const term =
    `CASE WHEN e.y1 = e.y2 THEN CASE WHEN ${lat} = e.y1 AND ${lng} BETWEEN least(e.x1, e.x2) AND greatest(e.x1, e.x2) THEN ${BOUNDARY} ELSE 0 END` +
    ` WHEN ${lat} BETWEEN least(e.y1, e.y2) AND greatest(e.y1, e.y2) THEN CASE sign((e.x2 - ${lng}) * (e.y1 - ${lat}) - (e.x1 - ${lng}) * (e.y2 - ${lat})) WHEN 0 THEN ${BOUNDARY}` +
    ` WHEN CASE WHEN e.y1 < e.y2 THEN 1 ELSE -1 END THEN (${lat} < greatest(e.y1, e.y2))::int ELSE 0 END ELSE 0 END`;
  return (
    `(${lat} BETWEEN ${num(minY)} AND ${num(maxY)} AND ${lng} BETWEEN ${num(minX)} AND ${num(maxX)} AND EXISTS (` +
    `SELECT 1 FROM (SELECT least(width_bucket(${lat}, ${b}), ${bands}) AS j) w ` +
    `CROSS JOIN LATERAL unnest(${[x1, y1, x2, y2, m].map(slice).join(', ')}) AS e(x1, y1, x2, y2, m)` +
    `${index.members > 1 ? ' GROUP BY e.m' : ''} HAVING sum(${term}) & ${-(BOUNDARY - 1)} <> 0))`
  );
}

/** [minLng, minLat, maxLng, maxLat]. */
export type Bbox = readonly [number, number, number, number];

/**
 * Whether an edge can change the count for a point inside `within`: one wholly east of it, or
 * wholly above or below it, never does (the count follows a ray going west: an edge is counted
 * when the point lies on its east side), so the test of points known to lie in `within` leaves it out.
 */
const edgeMatters = (within: Bbox | undefined, x1: number, y1: number, x2: number, y2: number): boolean =>
  !within || (Math.min(x1, x2) <= within[2] && Math.max(y1, y2) >= within[1] && Math.min(y1, y2) <= within[3]);

/** Larger than any crossing count (AREA_LIMITS.maxVertices), so the low bits keep the parity. */
const BOUNDARY = 65_536;

function memberSql(rings: number[][][], lng: string, lat: string, within?: Bbox): string {
  const terms: string[] = [];
  let [minX, minY, maxX, maxY] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const ring of rings) {
    for (let i = 1; i < ring.length; i++) {
      const [x1, y1] = ring[i - 1] as [number, number];
      const [x2, y2] = ring[i] as [number, number];
      [minX, maxX, minY, maxY] = [Math.min(minX, x1, x2), Math.max(maxX, x1, x2), Math.min(minY, y1, y2), Math.max(maxY, y1, y2)];
      if (!edgeMatters(within, x1, y1, x2, y2)) continue;
      if (y1 === y2) {
        terms.push(`CASE WHEN ${lat} = ${num(y1)} AND ${lng} BETWEEN ${num(Math.min(x1, x2))} AND ${num(Math.max(x1, x2))} THEN ${BOUNDARY} ELSE 0 END`);
        continue;
      }
      // Orientation of the edge seen from the point, with the operations (and so the rounding) of point-in-polygon-hao.
      const f = `(${num(x2)} - ${lng}) * (${num(y1)} - ${lat}) - (${num(x1)} - ${lng}) * (${num(y2)} - ${lat})`;
      const up = y1 < y2;
      terms.push(
        `CASE WHEN ${lat} BETWEEN ${num(Math.min(y1, y2))} AND ${num(Math.max(y1, y2))} THEN CASE sign(${f}) WHEN 0 THEN ${BOUNDARY}` +
          ` WHEN ${up ? 1 : -1} THEN (${lat} < ${num(up ? y2 : y1)})::int ELSE 0 END ELSE 0 END`,
      );
    }
  }
  if (within && (maxX < within[0] || minX > within[2] || maxY < within[1] || minY > within[3])) return 'false';
  const bbox = `${lat} BETWEEN ${num(minY)} AND ${num(maxY)} AND ${lng} BETWEEN ${num(minX)} AND ${num(maxX)}`;
  // Odd, or at least one BOUNDARY: some bit other than 1 … BOUNDARY/2 is set.
  return `(${bbox} AND (${balancedSum(terms)}) & ${-(BOUNDARY - 1)} <> 0)`;
}

/** a + b + … nested as a balanced tree, so thousands of terms stay within the parser's stack. */
function balancedSum(terms: string[]): string {
  if (terms.length === 0) return '0';
  if (terms.length === 1) return terms[0]!;
  const mid = terms.length >> 1;
  return `(${balancedSum(terms.slice(0, mid))} + ${balancedSum(terms.slice(mid))})`;
}

const EARTH_RADIUS_M = 6_371_008.8; // Turf's, so that both compute the same distance
const rad = (d: number) => (d * Math.PI) / 180;

/**
 * True when (`lng`, `lat`) is within `radiusM` of the centre: the haversine distance written as
 * Turf's `distance` computes it, after a bounding-box check that is wider than the circle.
 */
export function withinRadiusSql(center: readonly [number, number], radiusM: number, lng: string, lat: string): string {
  const [cLng, cLat] = center;
  const dLat = (radiusM / EARTH_RADIUS_M) * (180 / Math.PI) * 1.01 + 1e-9;
  const cos = Math.cos(rad(Math.min(89.9, Math.abs(cLat) + dLat)));
  const dLng = Math.min(180, dLat / Math.max(cos, 1e-6));
  const a = `power(sin(radians(${lat} - ${num(cLat)}) / 2), 2) + power(sin(radians(${lng} - ${num(cLng)}) / 2), 2) * ${num(Math.cos(rad(cLat)))} * cos(radians(${lat}))`;
  return (
    `(${lat} BETWEEN ${num(cLat - dLat)} AND ${num(cLat + dLat)} AND ${lng} BETWEEN ${num(cLng - dLng)} AND ${num(cLng + dLng)}` +
    ` AND ${num(EARTH_RADIUS_M)} * 2 * atan2(sqrt(${a}), sqrt(1 - (${a}))) <= ${num(radiusM)})`
  );
}

/**
 * True when the res-15 `cell` descends from one of `cells` (any resolutions): per resolution,
 * the cell with its finer digits cleared is looked up in a constant array (PostgreSQL hashes
 * arrays of more than a few constants), so the cost does not grow with the number of cells.
 */
export function cellMembershipSql(cells: readonly string[], cell: string): string {
  if (cells.length === 0) return 'false';
  const byResolution = new Map<number, bigint[]>();
  for (const c of cells) {
    const r = getResolution(c);
    let list = byResolution.get(r);
    if (!list) byResolution.set(r, (list = []));
    list.push(descendantRange(c)[0]);
  }
  const terms = [...byResolution].map(([r, firsts]) => `(${cell} & ${-(1n << (3n * BigInt(15 - r)))}::int8) = ANY ('{${firsts.join(',')}}'::int8[])`);
  return `(${terms.join(' OR ')})`;
}

/**
 * The exact membership test of an area on a row's position (or, for a cells area, its cell).
 * `within`: the rows tested are known to lie in this box (another area's), so a polygon's edges
 * that cannot matter there are left out of the statement. `params`: a large polygon's arrays
 * become bind parameters (else literals).
 */
export function exactAreaSql(area: Area, cols: { lng: string; lat: string; cell: string }, within?: Bbox, params?: SqlParams): string {
  switch (area.kind) {
    case 'polygon':
      return pointInPolygonSql(area.geometry, cols.lng, cols.lat, within, params);
    case 'bbox': {
      const [minLng, minLat, maxLng, maxLat] = area.bbox;
      return `(${cols.lat} BETWEEN ${num(minLat)} AND ${num(maxLat)} AND ${cols.lng} BETWEEN ${num(minLng)} AND ${num(maxLng)})`;
    }
    case 'circle':
      return withinRadiusSql(area.center, area.radiusM, cols.lng, cols.lat);
    case 'cells':
      return cellMembershipSql(area.cells, cols.cell);
  }
}

/** Edges of a polygon area (the cost of its exact test); 0 for the other kinds, whose tests are cheap. */
export function exactTestEdges(area: Area): number {
  if (area.kind !== 'polygon') return 0;
  const rings = area.geometry.type === 'Polygon' ? area.geometry.coordinates : area.geometry.coordinates.flat();
  return rings.reduce((n, ring) => n + ring.length - 1, 0);
}
