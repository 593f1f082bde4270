/**
 * The tasks of the geometry worker threads (core/geometry-pool.ts): the pure functions of geo/,
 * run off the main thread. Each takes and returns structured-cloneable values; an invalid area is
 * answered `{ error }` (the AreaError's message), never thrown, so the caller's message is exact.
 * Loaded from the sources (tests, `tsx`) or as dist/geometry-worker.mjs (scripts/build.mjs).
 */
import type { MultiPolygon, Polygon } from 'geojson';
import { AreaError, areaContains, parseCells, parsePolygon, type Area } from '../geo/area.ts';
import { coverArea, type Cover } from '../geo/cover.ts';
import { polygonIndexOf, type PolygonIndex } from '../geo/polygon-index.ts';
import { bandArrayTexts } from '../db/spatial-sql.ts';

/** A checked area; a polygon comes with its band index and the index's arrays as SQL text (made here, not on the main thread). */
export type ParsedArea = { area: Area; index?: PolygonIndex; texts?: string[] } | { error: string };

/** A GeoJSON (Multi)Polygon, or H3 cells, checked as geo/area.ts does; a polygon comes with its band index. */
export function parseArea(input: { geometry: unknown } | { cells: string[] }): ParsedArea {
  try {
    if ('cells' in input) return { area: parseCells(input.cells) };
    const geometry: Polygon | MultiPolygon = parsePolygon(input.geometry);
    const index = polygonIndexOf(geometry);
    return { area: { kind: 'polygon', geometry }, index, texts: bandArrayTexts(index) };
  } catch (err) {
    if (err instanceof AreaError) return { error: err.message };
    throw err;
  }
}

export function cover(input: { area: Area; maxEdgeCells: number }): Cover {
  return coverArea(input.area, { maxEdgeCells: input.maxEdgeCells });
}

/** For each point (lng, lat pairs), 1 when it is in `area` (and in `also`, when given). */
export function inside(input: { area: Area; also?: Area; points: Float64Array }): Uint8Array {
  const { area, also, points } = input;
  const out = new Uint8Array(points.length / 2);
  for (let i = 0; i < out.length; i++) {
    const lng = points[2 * i]!;
    const lat = points[2 * i + 1]!;
    out[i] = areaContains(area, lng, lat) && (!also || areaContains(also, lng, lat)) ? 1 : 0;
  }
  return out;
}
