import type { MultiPolygon, Polygon, Position } from 'geojson';
import { area as turfArea, booleanPointInPolygon, circle as turfCircle, distance } from '@turf/turf';
import { cellToParent, getResolution, isValidCell, latLngToCell } from 'h3-js';
import { findKink } from './kinks.ts';
import { indexContains, indexPolygon, polygonIndexOf } from './polygon-index.ts';


/** Documented limits on what an area may be (README, "Spatial queries"). */
export const AREA_LIMITS = {
  /** Vertices of a polygon or multipolygon, all rings together. */
  maxVertices: 10_000,
  /** Largest area (km²): a province (Guangdong is ~180 000 km²). */
  maxAreaKm2: 250_000,
  maxRadiusM: 200_000,
  maxCells: 10_000,
} as const;

/** A region of the Earth's surface that queries select readings in. Boundaries count as inside. */
export type Area =
  | { kind: 'polygon'; geometry: Polygon | MultiPolygon }
  | { kind: 'bbox'; bbox: [minLng: number, minLat: number, maxLng: number, maxLat: number] }
  | { kind: 'circle'; center: [lng: number, lat: number]; radiusM: number }
  | { kind: 'cells'; cells: string[] };

/** Input that is not a usable area; `message` says exactly what is wrong. */
export class AreaError extends Error {
  override readonly name = 'AreaError';
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function checkPosition(p: unknown, where: string): [number, number] {
  if (!Array.isArray(p) || p.length < 2 || p.length > 3 || !p.every((x) => typeof x === 'number' && Number.isFinite(x))) {
    throw new AreaError(`${where}: a position is [longitude, latitude] (optionally altitude), finite numbers`);
  }
  const [lng, lat] = p as [number, number];
  if (lng < -180 || lng > 180) throw new AreaError(`${where}: longitude ${lng} is outside -180…180`);
  if (lat < -90 || lat > 90) throw new AreaError(`${where}: latitude ${lat} is outside -90…90`);
  return [lng, lat];
}

function checkRing(raw: unknown, where: string): Position[] {
  if (!Array.isArray(raw)) throw new AreaError(`${where}: a ring is an array of positions`);
  const ring: Position[] = [];
  raw.forEach((p, i) => {
    const pos = checkPosition(p, `${where}, position ${i}`);
    const last = ring[ring.length - 1];
    if (!last || last[0] !== pos[0] || last[1] !== pos[1]) ring.push(pos); // repeated vertices are harmless: drop them
  });
  const first = raw[0] as number[] | undefined;
  const lastRaw = raw[raw.length - 1] as number[] | undefined;
  if (!first || !lastRaw || first[0] !== lastRaw[0] || first[1] !== lastRaw[1]) {
    throw new AreaError(`${where} is not closed: its last position must equal its first (RFC 7946 §3.1.6)`);
  }
  if (ring.length < 4) throw new AreaError(`${where} has ${ring.length} distinct positions; a ring needs at least 4 (the first repeated last)`);
  return ring;
}

/**
 * A GeoJSON Polygon or MultiPolygon (or a Feature holding one), checked: closed rings of valid
 * positions, at most `AREA_LIMITS.maxVertices`, no self-intersection (rings crossing or touching
 * themselves or each other), holes inside their outer ring, and not larger than a province.
 * Consecutive repeated positions are dropped.
 */
export function parsePolygon(input: unknown): Polygon | MultiPolygon {
  const geometry = isObject(input) && input.type === 'Feature' ? input.geometry : input;
  if (!isObject(geometry) || (geometry.type !== 'Polygon' && geometry.type !== 'MultiPolygon')) {
    throw new AreaError('the area must be a GeoJSON Polygon or MultiPolygon (or a Feature holding one)');
  }
  if (!Array.isArray(geometry.coordinates) || geometry.coordinates.length === 0) throw new AreaError(`${geometry.type}: coordinates must be a non-empty array`);
  const polygonsRaw = geometry.type === 'Polygon' ? [geometry.coordinates] : (geometry.coordinates as unknown[]);
  let vertices = 0;
  const polygons = polygonsRaw.map((rings, pi) => {
    const where = geometry.type === 'Polygon' ? 'polygon' : `polygon ${pi}`;
    if (!Array.isArray(rings) || rings.length === 0) throw new AreaError(`${where}: a polygon is a non-empty array of rings`);
    return rings.map((ring, ri) => {
      const checked = checkRing(ring, `${where}, ring ${ri}${ri === 0 ? ' (outer)' : ' (hole)'}`);
      vertices += checked.length;
      if (vertices > AREA_LIMITS.maxVertices) throw new AreaError(`the area has more than ${AREA_LIMITS.maxVertices} vertices; simplify it`);
      return checked;
    });
  });
  const result: Polygon | MultiPolygon = geometry.type === 'Polygon' ? { type: 'Polygon', coordinates: polygons[0]! } : { type: 'MultiPolygon', coordinates: polygons };

  const crossing = findKink(result);
  if (crossing) {
    const [lng, lat] = crossing;
    throw new AreaError(`the area's boundary intersects itself near [${lng}, ${lat}] (rings must not cross or touch)`);
  }
  polygons.forEach((rings, pi) => {
    if (rings.length < 2) return;
    const outer: Polygon = { type: 'Polygon', coordinates: [rings[0]!] };
    const index = rings[0]!.length > INDEXED_EDGES ? indexPolygon(outer) : undefined;
    rings.slice(1).forEach((hole, hi) => {
      const [lng, lat] = hole[0] as [number, number];
      if (!(index ? indexContains(index, lng, lat) : booleanPointInPolygon([lng, lat], outer))) throw new AreaError(`polygon ${pi}: hole ${hi + 1} is not inside its outer ring`);
    });
  });
  const km2 = turfArea(result) / 1e6;
  if (km2 > AREA_LIMITS.maxAreaKm2) throw new AreaError(`the area is ${Math.round(km2)} km²; at most ${AREA_LIMITS.maxAreaKm2} km²`);
  return result;
}

/** `minLng,minLat,maxLng,maxLat` (as in GeoJSON bbox), checked. */
export function parseBbox(values: readonly number[]): Area & { kind: 'bbox' } {
  if (values.length !== 4 || !values.every(Number.isFinite)) throw new AreaError('bbox is minLng,minLat,maxLng,maxLat: four numbers');
  const [minLng, minLat, maxLng, maxLat] = values as [number, number, number, number];
  checkPosition([minLng, minLat], 'bbox');
  checkPosition([maxLng, maxLat], 'bbox');
  if (minLng >= maxLng) throw new AreaError(`bbox: minLng ${minLng} must be less than maxLng ${maxLng}`);
  if (minLat >= maxLat) throw new AreaError(`bbox: minLat ${minLat} must be less than maxLat ${maxLat}`);
  const km2 = turfArea(bboxPolygon([minLng, minLat, maxLng, maxLat])) / 1e6;
  if (km2 > AREA_LIMITS.maxAreaKm2) throw new AreaError(`bbox covers ${Math.round(km2)} km²; at most ${AREA_LIMITS.maxAreaKm2} km²`);
  return { kind: 'bbox', bbox: [minLng, minLat, maxLng, maxLat] };
}

export function parseCircle(lat: number, lng: number, radiusM: number): Area & { kind: 'circle' } {
  checkPosition([lng, lat], 'circle centre');
  if (!Number.isFinite(radiusM) || radiusM <= 0 || radiusM > AREA_LIMITS.maxRadiusM) {
    throw new AreaError(`radius must be a number of metres above 0 and at most ${AREA_LIMITS.maxRadiusM}`);
  }
  return { kind: 'circle', center: [lng, lat], radiusM };
}

export function parseCells(cells: readonly string[]): Area & { kind: 'cells' } {
  if (cells.length === 0) throw new AreaError('cells: give at least one H3 cell');
  if (cells.length > AREA_LIMITS.maxCells) throw new AreaError(`cells: at most ${AREA_LIMITS.maxCells} cells`);
  const normal = cells.map((c) => c.trim().toLowerCase());
  const bad = normal.find((c) => !isValidCell(c));
  if (bad !== undefined) throw new AreaError(`cells: "${bad}" is not a valid H3 cell index`);
  return { kind: 'cells', cells: [...new Set(normal)] };
}

export const bboxPolygon = ([minLng, minLat, maxLng, maxLat]: readonly [number, number, number, number]): Polygon => ({
  type: 'Polygon',
  coordinates: [[[minLng, minLat], [maxLng, minLat], [maxLng, maxLat], [minLng, maxLat], [minLng, minLat]]],
});

/**
 * A polygon following the circle closely enough (≤ 1 m between chord and arc) for sampling its
 * boundary; membership itself is always decided by the exact distance.
 */
export function circlePolygon(center: readonly [number, number], radiusM: number): Polygon {
  const steps = Math.min(4096, Math.max(32, Math.ceil(Math.PI / Math.acos(Math.max(-1, 1 - 1 / radiusM)))));
  return turfCircle([center[0], center[1]], radiusM, { steps, units: 'meters' }).geometry;
}

/** The polygon used to sample an area's boundary (a cells area has none). */
export function areaOutline(area: Area): Polygon | MultiPolygon | undefined {
  switch (area.kind) {
    case 'polygon':
      return area.geometry;
    case 'bbox':
      return bboxPolygon(area.bbox);
    case 'circle':
      return circlePolygon(area.center, area.radiusM);
    case 'cells':
      return undefined;
  }
}

/** Polygons with more edges than this are tested through their band index (geo/polygon-index.ts: the same answer, far fewer edges per test). */
const INDEXED_EDGES = 64;

const edgeCount = (g: Polygon | MultiPolygon): number =>
  (g.type === 'Polygon' ? g.coordinates : g.coordinates.flat()).reduce((n, ring) => n + ring.length - 1, 0);
const largePolygons = new WeakMap<Polygon | MultiPolygon, boolean>();

/** Turf's `booleanPointInPolygon` (boundary inclusive); a large polygon through its band index, with the same answer. */
export function polygonContains(geometry: Polygon | MultiPolygon, lng: number, lat: number): boolean {
  let large = largePolygons.get(geometry);
  if (large === undefined) largePolygons.set(geometry, (large = edgeCount(geometry) > INDEXED_EDGES));
  return large ? indexContains(polygonIndexOf(geometry), lng, lat) : booleanPointInPolygon([lng, lat], geometry);
}

/** A cells area's cells by resolution: membership of a position costs one lookup per resolution present. */
const cellSets = new WeakMap<readonly string[], Map<number, Set<string>>>();
function cellSetsOf(cells: readonly string[]): Map<number, Set<string>> {
  let sets = cellSets.get(cells);
  if (!sets) {
    sets = new Map();
    for (const c of cells) {
      const r = getResolution(c);
      let set = sets.get(r);
      if (!set) sets.set(r, (set = new Set()));
      set.add(c);
    }
    cellSets.set(cells, sets);
  }
  return sets;
}

/**
 * Exact membership of a position (boundary inclusive), the reference for every other test: Turf's
 * `booleanPointInPolygon` for a polygon (a large one through its band index, with the same
 * answer), the haversine distance for a circle, and for cells whether the position's res-15 cell
 * descends from one of them.
 */
export function areaContains(area: Area, lng: number, lat: number): boolean {
  switch (area.kind) {
    case 'polygon':
      return polygonContains(area.geometry, lng, lat);
    case 'bbox': {
      const [minLng, minLat, maxLng, maxLat] = area.bbox;
      return lng >= minLng && lng <= maxLng && lat >= minLat && lat <= maxLat;
    }
    case 'circle':
      return distance(area.center, [lng, lat], { units: 'meters' }) <= area.radiusM;
    case 'cells': {
      const cell = latLngToCell(lat, lng, 15);
      for (const [res, set] of cellSetsOf(area.cells)) if (set.has(cellToParent(cell, res))) return true;
      return false;
    }
  }
}
