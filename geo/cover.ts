import type { MultiPolygon, Polygon, Position } from 'geojson';
import { area as turfArea, distance } from '@turf/turf';
import {
  cellToChildren,
  cellToLatLng,
  cellToParent,
  getHexagonAreaAvg,
  getHexagonEdgeLengthAvg,
  gridDisk,
  latLngToCell,
  polygonToCellsExperimental,
} from 'h3-js';
import { areaContains, areaOutline, type Area } from './area.ts';
import { descendantRange } from './cell.ts';

/** An inclusive range of res-15 cell integers. */
export type CellRange = [bigint, bigint];

export interface Cover {
  /** Readings in these ranges are inside the area: no exact test needed. */
  inside: CellRange[];
  /** Readings in these ranges are near the boundary: test each one exactly (point in polygon). */
  edge: CellRange[];
  insideCells: string[];
  edgeCells: string[];
  /** Resolution of the edge cells. */
  edgeResolution: number;
}

export interface CoverOptions {
  /** Resolution of the boundary band (finer: fewer readings to test exactly, more ranges). Default: chosen by size. */
  edgeResolution?: number;
  /** Upper bound on boundary cells when choosing the resolution (default 1500). */
  maxEdgeCells?: number;
}

const ringsOf = (outline: Polygon | MultiPolygon): Position[][] => (outline.type === 'Polygon' ? outline.coordinates : outline.coordinates.flat());

function perimeterMeters(outline: Polygon | MultiPolygon): number {
  let total = 0;
  for (const ring of ringsOf(outline)) for (let i = 1; i < ring.length; i++) total += metres(ring[i - 1]!, ring[i]!);
  return total;
}

const metres = (a: Position, b: Position): number => distance(a, b, { units: 'meters' });

/** The finest resolution (≤ 12) whose boundary band stays within `maxCells` cells (band ≈ 3 cells wide). */
export function chooseEdgeResolution(outline: Polygon | MultiPolygon, maxCells = DEFAULT_MAX_EDGE_CELLS): number {
  const perimeter = perimeterMeters(outline);
  for (let r = 12; r > 5; r--) if ((perimeter / getHexagonEdgeLengthAvg(r, 'm')) * 3 <= maxCells) return r;
  return 5;
}

const DEFAULT_MAX_EDGE_CELLS = 1500;

/**
 * The cells at `res` that a boundary passes through, widened by one ring. Edges are sampled at a
 * quarter of the cell edge: a cell the boundary only clips between two samples is next to sampled
 * ones, so the ring catches it. The ring also covers the way res-15 descendants stick out of
 * their ancestor's hexagon (~0.15 of its edge, measured in cover.test.ts).
 */
export function boundaryCells(outline: Polygon | MultiPolygon, res: number): Set<string> {
  const step = getHexagonEdgeLengthAvg(res, 'm') / 4;
  const crossed = new Set<string>();
  for (const ring of ringsOf(outline)) {
    for (let i = 1; i < ring.length; i++) {
      const a = ring[i - 1]!;
      const b = ring[i]!;
      const n = Math.max(1, Math.ceil(metres(a, b) / step));
      for (let s = 0; s <= n; s++) {
        const t = s / n;
        crossed.add(latLngToCell(a[1]! + (b[1]! - a[1]!) * t, a[0]! + (b[0]! - a[0]!) * t, res));
      }
    }
  }
  const band = new Set<string>();
  for (const c of crossed) for (const n of gridDisk(c, 1)) band.add(n);
  return band;
}

/**
 * An exact H3 cover of an area for range scans on res-15 cell integers.
 *
 * Cells whose every res-15 descendant is surely inside are "inside" (as coarse as possible: no
 * per-reading test); cells along the boundary, at `edgeResolution`, are "edge" (each reading
 * there is tested exactly). Why it is exact: a point's res-15 cell has one ancestor at the edge
 * resolution; if that ancestor is in the boundary band its readings are tested; otherwise the
 * boundary crosses neither it nor its neighbours, so its whole region lies on one side and the
 * side of its centre (which descends from it) decides. A coarser cell with no band cell below it
 * is likewise wholly on one side. Coarse cells containing band cells are split level by level.
 * A cells area is its own cover, all inside: membership of a res-15 cell is exact by integer range.
 */
export function coverArea(area: Area, options: CoverOptions = {}): Cover {
  const outline = areaOutline(area);
  if (!outline) {
    const cells = area.kind === 'cells' ? area.cells : [];
    return { inside: mergeRanges(cells.map(descendantRange)), edge: [], insideCells: [...cells], edgeCells: [], edgeResolution: 15 };
  }
  const edgeRes = options.edgeResolution ?? chooseEdgeResolution(outline, options.maxEdgeCells);
  const band = boundaryCells(outline, edgeRes);

  // Coarsest starting level with a manageable number of cells over the area.
  const areaM2 = turfArea(outline);
  let startRes = edgeRes;
  while (startRes > 0 && areaM2 / getHexagonAreaAvg(startRes - 1, 'm2') >= 4) startRes--;
  startRes = Math.max(startRes, Math.min(edgeRes, 2));

  // Ancestors of band cells, per level: those cells are "mixed" and get split.
  const mixed: Set<string>[] = [];
  let below: Set<string> = band;
  for (let r = edgeRes - 1; r >= startRes; r--) {
    mixed[r] = new Set([...below].map((c) => cellToParent(c, r)));
    below = mixed[r]!;
  }

  const inside: string[] = [];
  const edge: string[] = [];
  const start = new Set<string>(startRes < edgeRes ? mixed[startRes] : band);
  for (const polygon of outline.type === 'Polygon' ? [outline.coordinates] : outline.coordinates) {
    for (const c of polygonToCellsExperimental(polygon, startRes, 'containmentOverlapping', true)) start.add(c);
  }
  const isInside = (cell: string) => {
    const [lat, lng] = cellToLatLng(cell);
    return areaContains(area, lng, lat);
  };
  let level = startRes;
  let frontier = [...start];
  while (frontier.length > 0) {
    const next: string[] = [];
    for (const cell of frontier) {
      if (level === edgeRes) {
        if (band.has(cell)) edge.push(cell);
        else if (isInside(cell)) inside.push(cell);
      } else if (mixed[level]!.has(cell)) {
        next.push(...cellToChildren(cell, level + 1));
      } else if (isInside(cell)) {
        inside.push(cell);
      }
    }
    frontier = next;
    level++;
  }
  return { inside: mergeRanges(inside.map(descendantRange)), edge: mergeRanges(edge.map(descendantRange)), insideCells: inside, edgeCells: edge, edgeResolution: edgeRes };
}

/**
 * Sorts ranges and joins those that overlap, touch, or have only unused index values between
 * them (sibling cells' ranges are separated by values containing the unused digit 7): fewer,
 * longer index scans, and no reading can be in such a gap.
 */
export function mergeRanges(ranges: CellRange[]): CellRange[] {
  const sorted = [...ranges].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const out: CellRange[] = [];
  for (const [lo, hi] of sorted) {
    const last = out[out.length - 1];
    if (last && lo <= nextValidCell(last[1])) {
      if (hi > last[1]) last[1] = hi;
    } else out.push([lo, hi]);
  }
  return out;
}

/**
 * The smallest value above `v` whose 15 resolution digits are all 0–6 (3 bits each, the lowest
 * 45 bits), i.e. that could be a res-15 cell of the same base cell. Conservative: pentagons'
 * deleted subsequences count as valid, which only means fewer merges.
 */
export function nextValidCell(v: bigint): bigint {
  let x = v + 1n;
  for (let digit = 0n; digit < 15n; digit++) {
    const shift = 3n * digit;
    if (((x >> shift) & 7n) === 7n) x = ((x >> (shift + 3n)) + 1n) << (shift + 3n); // carry: this digit → 0
    else break;
  }
  return x;
}
