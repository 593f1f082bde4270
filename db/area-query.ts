import type { Area } from '../geo/area.ts';
import { coverArea, mergeRanges, type Cover } from '../geo/cover.ts';
import { CHEAP_EXACT_EDGES, cellMembershipSql, exactAreaSql, exactTestEdges } from './spatial-sql.ts';

/**
 * How a query finds the readings of an area in a readings table (device_id, ts, cell, lat, lng, …;
 * B-tree on (cell, ts), BRIN on ts, chunks by day on TimescaleDB):
 *
 * - `ranges`: the area's exact H3 cover as res-15 integer ranges, one index range scan of
 *   (cell, ts) per range; only rows of boundary ranges get the exact test. Best when the area
 *   holds a small part of the data.
 * - `scan`: the time window first (chunks, BRIN), every located row tested: exactly when the test
 *   is cheap (bbox, circle, a polygon of few edges), else through the cover's cell membership,
 *   exactly only near the boundary. Best when the area holds much of the data.
 *
 * Both return exactly the rows whose position `areaContains` (Turf) accepts.
 */
export type AreaPlan = { strategy: 'ranges'; cover: Cover } | { strategy: 'scan'; cover?: Cover };

/** Above this share of the devices inside the area, reading the window is cheaper than range scans. */
export const SCAN_FRACTION = 0.25;
/** More ranges than this (a huge or very jagged area): plan a scan whatever the share. */
export const MAX_RANGES = 4000;

const COVER_CACHE_SIZE = 64;
const coverCache = new Map<string, Cover>();

/**
 * Boundary cells of the cover by window length. Each range costs an index probe per chunk; finer
 * boundary cells mean fewer rows to test exactly. Over a short window there are few rows per
 * range, so fewer, coarser ranges win; over days the finer cover does (bench/README.md).
 */
export const edgeCellBudget = (windowMs: number): number => (windowMs <= 6 * 3_600_000 ? 400 : 1500);

/** The area's cover, computed once for repeated queries (covering a city polygon takes ~0.1 s). */
export function cachedCover(area: Area, maxEdgeCells = 1500): Cover {
  const key = `${maxEdgeCells}:${JSON.stringify(area)}`;
  const hit = coverCache.get(key);
  if (hit) {
    coverCache.delete(key);
    coverCache.set(key, hit);
    return hit;
  }
  const cover = coverArea(area, { maxEdgeCells });
  coverCache.set(key, cover);
  if (coverCache.size > COVER_CACHE_SIZE) coverCache.delete(coverCache.keys().next().value!);
  return cover;
}

const cheapExactTest = (area: Area): boolean => exactTestEdges(area) <= CHEAP_EXACT_EDGES;

/** Chooses the strategy from the share (0…1) of devices whose latest position is inside the area, and the window's length. */
export function planArea(area: Area, insideFraction: number, windowMs: number): AreaPlan {
  if (insideFraction >= SCAN_FRACTION && cheapExactTest(area)) return { strategy: 'scan' };
  const cover = cachedCover(area, edgeCellBudget(windowMs));
  if (insideFraction >= SCAN_FRACTION || cover.inside.length + cover.edge.length > MAX_RANGES) return { strategy: 'scan', cover };
  return { strategy: 'ranges', cover };
}

/** Positional parameters of a statement being built: `add` returns the placeholder. */
export class Params {
  readonly values: unknown[] = [];
  add(value: unknown, cast = ''): string {
    this.values.push(value);
    return `$${this.values.length}${cast}`;
  }
}

export interface AreaRowsSpec {
  table: string;
  area: Area;
  plan: AreaPlan;
  /** Placeholders (from `params`) of the window's bounds: `from <= ts < to`. */
  from: string;
  to: string;
  /** Select list over the readings row, aliased `r` (e.g. `r.device_id, r.ts`). */
  columns: string;
  /** Further conditions on `r`, AND-ed (device ids, keys, a keyset position…). */
  where?: readonly string[];
  params: Params;
}

/**
 * A SELECT of the area's readings in the window (no order). The ranges plan turns each cover
 * range into a LATERAL index scan (OFFSET 0 keeps it from being flattened into one big OR).
 */
export function areaRowsSql(spec: AreaRowsSpec): string {
  const { table, area, plan, params } = spec;
  const extra = (spec.where ?? []).map((c) => ` AND ${c}`).join('');
  const window = `r.ts >= ${spec.from} AND r.ts < ${spec.to}`;
  const exact = exactAreaSql(area, { lng: 'r.lng', lat: 'r.lat', cell: 'r.cell' });
  if (plan.strategy === 'scan') {
    let predicate = exact;
    if (plan.cover && area.kind !== 'cells' && !cheapExactTest(area)) {
      predicate = `(${cellMembershipSql(plan.cover.insideCells, 'r.cell')} OR (${cellMembershipSql(plan.cover.edgeCells, 'r.cell')} AND ${exact}))`;
    }
    return `SELECT ${spec.columns} FROM ${table} r WHERE ${window} AND r.cell IS NOT NULL AND ${predicate}${extra}`;
  }
  const ranges = rangesWithEdgeFlag(plan.cover);
  const lo = params.add(ranges.map((g) => g[0].toString()), '::int8[]');
  const hi = params.add(ranges.map((g) => g[1].toString()), '::int8[]');
  const edge = params.add(ranges.map((g) => g[2]), '::bool[]');
  return (
    `SELECT ${spec.columns} FROM unnest(${lo}, ${hi}, ${edge}) AS g(lo, hi, edge) ` +
    `CROSS JOIN LATERAL (SELECT * FROM ${table} r WHERE r.cell BETWEEN g.lo AND g.hi AND ${window}${extra} OFFSET 0) r ` +
    `WHERE (NOT g.edge OR ${exact})`
  );
}

/** Inside and edge ranges in one sorted list; touching ranges of the same kind are merged. */
export function rangesWithEdgeFlag(cover: Cover): [bigint, bigint, boolean][] {
  const tagged: [bigint, bigint, boolean][] = [
    ...mergeRanges(cover.inside.map((r) => [r[0], r[1]])).map(([a, b]): [bigint, bigint, boolean] => [a, b, false]),
    ...mergeRanges(cover.edge.map((r) => [r[0], r[1]])).map(([a, b]): [bigint, bigint, boolean] => [a, b, true]),
  ];
  return tagged.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
}
