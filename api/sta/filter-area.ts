import type { Geometry, MultiPolygon, Polygon } from 'geojson';
import type { GeometryWork } from '../../core/geometry-pool.ts';
import { ALSO_EDGE_CELLS, ensureCover } from '../../db/area-query.ts';
import { CHEAP_EXACT_EDGES, exactTestEdges } from '../../db/spatial-sql.ts';
import { AreaError, parsePolygon, type Area } from '../../geo/area.ts';
import type { Expr, QueryOptions } from './query/ast.ts';

/**
 * The area a spatial function's geometry literal selects: latitudes clamped to ±90 (QGIS sends its
 * world extent with ±135); an axis-aligned rectangle is a bbox (no H3 cover needed); the whole
 * world is 'everywhere'; other polygons are checked as the spatial API checks them.
 */
export function filterArea(geometry: Geometry): Area | 'everywhere' | { invalid: string } | { unsupported: string } {
  if (geometry.type !== 'Polygon' && geometry.type !== 'MultiPolygon') return { unsupported: `spatial functions take a Polygon or MultiPolygon here, not a ${geometry.type}` };
  const clamped: Polygon | MultiPolygon = JSON.parse(JSON.stringify(geometry), (_k, v) => (Array.isArray(v) && typeof v[0] === 'number' && v.length >= 2 ? [v[0], Math.max(-90, Math.min(90, v[1] as number))] : v));
  const rect = rectangle(clamped);
  if (rect) {
    const [minLng, minLat, maxLng, maxLat] = rect;
    if (minLng <= -180 && maxLng >= 180 && minLat <= -90 && maxLat >= 90) return 'everywhere';
    if (minLng < -180 || maxLng > 180) return { invalid: 'longitudes are between -180 and 180' };
    if (minLng === maxLng || minLat === maxLat) return { invalid: 'the rectangle has no area' };
    return { kind: 'bbox', bbox: rect };
  }
  try {
    return { kind: 'polygon', geometry: parsePolygon(clamped) };
  } catch (err) {
    if (err instanceof AreaError) return { invalid: err.message };
    throw err;
  }
}

const SPATIAL = new Set(['geo.intersects', 'st_intersects', 'st_within']);

/**
 * Computes, on the geometry worker threads, the H3 covers that the spatial functions of these
 * options (and of their expansions) will use, so that translating them (areaFilterSql) finds the
 * covers cached and never computes one on the main thread.
 */
export async function prepareCovers(options: QueryOptions, geometry: GeometryWork | undefined): Promise<void> {
  if (!geometry) return;
  const areas: Area[] = [];
  const walk = (e: Expr | undefined): void => {
    if (!e) return;
    switch (e.kind) {
      case 'call':
        if (SPATIAL.has(e.name)) {
          for (const a of e.args) {
            if (a.kind !== 'literal' || a.type !== 'geometry') continue;
            const area = filterArea(a.geometry);
            if (typeof area === 'object' && 'kind' in area && exactTestEdges(area) > CHEAP_EXACT_EDGES) areas.push(area);
          }
        }
        e.args.forEach(walk);
        return;
      case 'binary':
        walk(e.left);
        walk(e.right);
        return;
      case 'not':
      case 'negate':
        walk(e.operand);
        return;
      case 'lambda':
        walk(e.predicate);
        return;
      default:
        return;
    }
  };
  const visit = (o: QueryOptions): void => {
    walk(o.filter);
    o.orderby.forEach((k) => walk(k.expr));
    o.expand.forEach((x) => visit(x.options));
  };
  visit(options);
  await Promise.all(areas.map((area) => ensureCover(area, ALSO_EDGE_CELLS, (a, cells) => geometry.cover(a, cells))));
}

/** The bbox of a polygon that is one axis-aligned rectangle (QGIS's extents), else undefined. */
function rectangle(g: Polygon | MultiPolygon): [number, number, number, number] | undefined {
  if (g.type !== 'Polygon' || g.coordinates.length !== 1) return undefined;
  const ring = g.coordinates[0]!;
  if (ring.length !== 5) return undefined;
  const xs = new Set(ring.map((p) => p[0]));
  const ys = new Set(ring.map((p) => p[1]));
  if (xs.size !== 2 || ys.size !== 2) return undefined;
  for (let i = 0; i < 4; i++) if (ring[i]![0] !== ring[i + 1]![0] && ring[i]![1] !== ring[i + 1]![1]) return undefined;
  return [Math.min(...xs as Set<number>), Math.min(...ys as Set<number>), Math.max(...xs as Set<number>), Math.max(...ys as Set<number>)];
}
