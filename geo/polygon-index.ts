import type { MultiPolygon, Polygon } from 'geojson';
import { orient2d } from 'robust-predicates';

/**
 * A (multi)polygon's edges sorted into latitude bands, so that deciding whether a point is inside
 * looks only at the edges of the point's band instead of every edge: a point-in-polygon test of
 * a 10 000-vertex polygon costs tens of edges instead of 10 000.
 *
 * Why it is the same answer as Turf's `booleanPointInPolygon` (point-in-polygon-hao, boundary
 * inclusive): hao looks at an edge only when the point's latitude lies between the edge's end
 * latitudes (inclusive) — every other edge adds nothing to the crossing count and cannot be a
 * boundary hit. A band [lo, hi] holds every edge whose latitudes overlap it, so it holds every
 * edge that can matter for a point whose latitude is in the band. Each edge is then examined
 * with hao's own arithmetic (the same differences, the same exact orientation), per member
 * polygon: inside when some member has an odd count or the point is on an edge.
 */
export interface PolygonIndex {
  /** Band bounds, ascending: band j holds the edges meeting [bounds[j], bounds[j + 1]] (closed). */
  bounds: Float64Array;
  /** Band j's entries are offsets[j] … offsets[j + 1] − 1 of the entry arrays. */
  offsets: Uint32Array;
  /** Entries, band by band, and within a band member by member: each an edge (x1, y1) → (x2, y2) as in its ring. */
  x1: Float64Array;
  y1: Float64Array;
  x2: Float64Array;
  y2: Float64Array;
  /** Member polygon (0-based) of each entry. */
  member: Uint32Array;
  /** Member polygons (1 for a Polygon). */
  members: number;
  /** Edges of the polygon. */
  edges: number;
  /** Most entries in one band: the edges one test may examine (what a test costs). */
  maxBandEdges: number;
  /** [minLng, minLat, maxLng, maxLat] of the edges indexed. */
  bbox: [number, number, number, number];
}

/** Most bands: the finest banding has a band between each two consecutive vertex latitudes. */
const MAX_BANDS = 2048;
/**
 * Entries (edges repeated in every band they meet) allowed per edge: bands are made wider (twice
 * the vertex latitudes each time) until the entries fit, so memory stays linear in the edges.
 */
const ENTRIES_PER_EDGE = 4;

export interface EdgeFilter {
  (x1: number, y1: number, x2: number, y2: number): boolean;
}

/**
 * Indexes the polygon's edges (those `keep` accepts, all by default: a caller that knows its
 * points lie in some box may leave out the edges that cannot matter there).
 */
export function indexPolygon(geometry: Polygon | MultiPolygon, keep?: EdgeFilter): PolygonIndex {
  const polygons = geometry.type === 'Polygon' ? [geometry.coordinates] : geometry.coordinates;
  const ex1: number[] = [];
  const ey1: number[] = [];
  const ex2: number[] = [];
  const ey2: number[] = [];
  const em: number[] = [];
  polygons.forEach((rings, m) => {
    for (const ring of rings) {
      for (let i = 0; i + 1 < ring.length; i++) {
        const [x1, y1] = ring[i] as [number, number];
        const [x2, y2] = ring[i + 1] as [number, number];
        if (keep && !keep(x1, y1, x2, y2)) continue;
        ex1.push(x1);
        ey1.push(y1);
        ex2.push(x2);
        ey2.push(y2);
        em.push(m);
      }
    }
  });
  const n = ex1.length;
  let [minX, minY, maxX, maxY] = [Infinity, Infinity, -Infinity, -Infinity];
  const ys: number[] = [];
  for (let e = 0; e < n; e++) {
    minX = Math.min(minX, ex1[e]!, ex2[e]!);
    maxX = Math.max(maxX, ex1[e]!, ex2[e]!);
    minY = Math.min(minY, ey1[e]!, ey2[e]!);
    maxY = Math.max(maxY, ey1[e]!, ey2[e]!);
    ys.push(ey1[e]!, ey2[e]!);
  }
  ys.sort((a, b) => a - b);
  const distinct: number[] = [];
  for (const y of ys) if (distinct.length === 0 || distinct[distinct.length - 1] !== y) distinct.push(y);
  if (distinct.length === 0) distinct.push(0, 0);
  if (distinct.length === 1) distinct.push(distinct[0]!);

  const maxEntries = Math.max(ENTRIES_PER_EDGE * n, 4096);
  for (let per = Math.max(1, Math.ceil((distinct.length - 1) / MAX_BANDS)); ; per *= 2) {
    const b: number[] = [];
    for (let i = 0; i < distinct.length - 1; i += per) b.push(distinct[i]!);
    b.push(distinct[distinct.length - 1]!);
    const bounds = Float64Array.from(b);
    const bands = bounds.length - 1;
    // Count, then fill: band j gets every edge with minY ≤ bounds[j + 1] and maxY ≥ bounds[j].
    const counts = new Uint32Array(bands + 1);
    let total = 0;
    const range = (e: number): [number, number] => {
      const lo = Math.min(ey1[e]!, ey2[e]!);
      const hi = Math.max(ey1[e]!, ey2[e]!);
      return [firstBandEndingAtOrAbove(bounds, lo), lastBandStartingAtOrBelow(bounds, hi)];
    };
    for (let e = 0; e < n; e++) {
      const [j0, j1] = range(e);
      for (let j = j0; j <= j1; j++) counts[j]!++;
      total += Math.max(0, j1 - j0 + 1);
    }
    if (total > maxEntries && bands > 1) continue;
    const offsets = new Uint32Array(bands + 1);
    let maxBandEdges = 0;
    for (let j = 0; j < bands; j++) {
      offsets[j + 1] = offsets[j]! + counts[j]!;
      maxBandEdges = Math.max(maxBandEdges, counts[j]!);
    }
    const at = offsets.slice(0, bands);
    const x1 = new Float64Array(total);
    const y1 = new Float64Array(total);
    const x2 = new Float64Array(total);
    const y2 = new Float64Array(total);
    const member = new Uint32Array(total);
    // Edges in member order, so each band's entries stay grouped by member.
    for (let e = 0; e < n; e++) {
      const [j0, j1] = range(e);
      for (let j = j0; j <= j1; j++) {
        const k = at[j]!++;
        x1[k] = ex1[e]!;
        y1[k] = ey1[e]!;
        x2[k] = ex2[e]!;
        y2[k] = ey2[e]!;
        member[k] = em[e]!;
      }
    }
    return { bounds, offsets, x1, y1, x2, y2, member, members: polygons.length, edges: n, maxBandEdges, bbox: [minX, minY, maxX, maxY] };
  }
}

/** The first band j whose upper bound bounds[j + 1] is ≥ y. */
function firstBandEndingAtOrAbove(bounds: Float64Array, y: number): number {
  let lo = 0;
  let hi = bounds.length - 2;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (bounds[mid + 1]! >= y) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/** The last band j whose lower bound bounds[j] is ≤ y. */
function lastBandStartingAtOrBelow(bounds: Float64Array, y: number): number {
  let lo = 0;
  let hi = bounds.length - 2;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (bounds[mid]! <= y) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** The band a latitude falls in (the last band for its upper bound), or −1 outside the bands. */
export function bandOf(index: PolygonIndex, lat: number): number {
  const { bounds } = index;
  if (!(lat >= bounds[0]! && lat <= bounds[bounds.length - 1]!)) return -1;
  return lastBandStartingAtOrBelow(bounds, lat);
}

/**
 * Whether (lng, lat) is inside the indexed polygon or on its boundary: exactly Turf's
 * `booleanPointInPolygon` (see PolygonIndex), in time proportional to the edges of one band.
 */
export function indexContains(index: PolygonIndex, lng: number, lat: number): boolean {
  const band = bandOf(index, lat);
  if (band < 0) return false;
  const { x1, y1, x2, y2, member } = index;
  const end = index.offsets[band + 1]!;
  let current = -1;
  let k = 0;
  for (let i = index.offsets[band]!; i < end; i++) {
    const m = member[i]!;
    if (m !== current) {
      if (k % 2 === 1) return true;
      current = m;
      k = 0;
    }
    // point-in-polygon-hao, one edge: u/v are the edge's ends relative to the point.
    const u1 = x1[i]! - lng;
    const v1 = y1[i]! - lat;
    const u2 = x2[i]! - lng;
    const v2 = y2[i]! - lat;
    if (v1 === 0 && v2 === 0) {
      if ((u2 <= 0 && u1 >= 0) || (u1 <= 0 && u2 >= 0)) return true;
    } else if ((v2 >= 0 && v1 <= 0) || (v2 <= 0 && v1 >= 0)) {
      const f = orient2d(u1, u2, v1, v2, 0, 0);
      if (f === 0) return true;
      if ((f > 0 && v2 > 0 && v1 <= 0) || (f < 0 && v2 <= 0 && v1 > 0)) k++;
    }
  }
  return k % 2 === 1;
}

const indexes = new WeakMap<Polygon | MultiPolygon, PolygonIndex>();

/** The index of a geometry object, built on first use and kept as long as the object lives. */
export function polygonIndexOf(geometry: Polygon | MultiPolygon): PolygonIndex {
  let index = indexes.get(geometry);
  if (!index) indexes.set(geometry, (index = indexPolygon(geometry)));
  return index;
}

/** Attaches an index built elsewhere (a worker thread) to this copy of its geometry. */
export function adoptPolygonIndex(geometry: Polygon | MultiPolygon, index: PolygonIndex): void {
  indexes.set(geometry, index);
}
