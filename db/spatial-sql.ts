import type { MultiPolygon, Polygon } from 'geojson';
import { getResolution } from 'h3-js';
import type { Area } from '../geo/area.ts';
import { descendantRange } from '../geo/cell.ts';

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
export function pointInPolygonSql(area: Polygon | MultiPolygon, lng: string, lat: string, within?: Bbox): string {
  const polygons = area.type === 'Polygon' ? [area.coordinates] : area.coordinates;
  return `(${polygons.map((rings) => memberSql(rings, lng, lat, within)).join(' OR ')})`;
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
 * that cannot matter there are left out of the statement.
 */
export function exactAreaSql(area: Area, cols: { lng: string; lat: string; cell: string }, within?: Bbox): string {
  switch (area.kind) {
    case 'polygon':
      return pointInPolygonSql(area.geometry, cols.lng, cols.lat, within);
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
