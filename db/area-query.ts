import { bbox as turfBbox } from '@turf/turf';
import { areaOutline, type Area } from '../geo/area.ts';
import { coverArea, mergeRanges, type Cover } from '../geo/cover.ts';
import { CHEAP_EXACT_EDGES, exactAreaSql, exactTestEdges, type Bbox } from './spatial-sql.ts';

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
export type AreaPlan =
  /** `ranges`, when given, replaces the cover's own (a cover intersected with another area's: planScoped). */
  | { strategy: 'ranges'; cover: Cover; ranges?: PairRange[] }
  | { strategy: 'scan'; cover?: Cover };

/** A res-15 cell range and whether its rows need the exact test (boundary band). */
export type TaggedRange = [lo: bigint, hi: bigint, edge: boolean];
/** A range of the intersection of two covers, with whether its rows need the first area's exact test and the second's. */
export type PairRange = [lo: bigint, hi: bigint, edge: boolean, alsoEdge: boolean];

/** Above this share of the devices inside the area, reading the window is cheaper than range scans. */
export const SCAN_FRACTION = 0.25;
/** More ranges than this (a huge or very jagged area): plan a scan whatever the share. */
export const MAX_RANGES = 4000;

const COVER_CACHE_SIZE = 64;
/** Covers by area text (the same area asked again), least recently used first. */
const coverCache = new Map<string, Cover>();
/** Covers of an area object, kept as long as it lives: a request's (or a scope's) area never loses its covers to other requests. */
const coversOf = new WeakMap<Area, Map<number, Cover>>();
const keys = new WeakMap<Area, string>();
const keyOf = (area: Area): string => {
  let key = keys.get(area);
  if (key === undefined) keys.set(area, (key = JSON.stringify(area)));
  return key;
};

/**
 * Boundary cells of the cover by window length. Each range costs an index probe per chunk; finer
 * boundary cells mean fewer rows to test exactly. Over a short window there are few rows per
 * range, so fewer, coarser ranges win; over days the finer cover does (bench/README.md).
 */
export const edgeCellBudget = (windowMs: number): number => (windowMs <= 6 * 3_600_000 ? 400 : 1500);

/** The area's cover when it has been computed (by this object, or for an equal area), else undefined. */
export function knownCover(area: Area, maxEdgeCells = 1500): Cover | undefined {
  const own = coversOf.get(area)?.get(maxEdgeCells);
  if (own) return own;
  const key = `${maxEdgeCells}:${keyOf(area)}`;
  const hit = coverCache.get(key);
  if (hit) {
    coverCache.delete(key);
    coverCache.set(key, hit);
    remember(area, maxEdgeCells, hit, undefined);
  }
  return hit;
}

function remember(area: Area, maxEdgeCells: number, cover: Cover, key: string | undefined): void {
  let own = coversOf.get(area);
  if (!own) coversOf.set(area, (own = new Map()));
  own.set(maxEdgeCells, cover);
  if (key === undefined) return;
  coverCache.set(key, cover);
  if (coverCache.size > COVER_CACHE_SIZE) coverCache.delete(coverCache.keys().next().value!);
}

/** The area's cover, computed once for repeated queries (on this thread: see ensureCover for requests). */
export function cachedCover(area: Area, maxEdgeCells = 1500): Cover {
  const known = knownCover(area, maxEdgeCells);
  if (known) return known;
  const cover = coverArea(area, { maxEdgeCells });
  remember(area, maxEdgeCells, cover, `${maxEdgeCells}:${keyOf(area)}`);
  return cover;
}

/** Computes a cover elsewhere (core/geometry-pool.ts: a worker thread). */
export type CoverSource = (area: Area, maxEdgeCells: number) => Promise<Cover>;

/** The area's cover, from the caches or `source`; afterwards cachedCover(area, maxEdgeCells) finds it without computing. */
export async function ensureCover(area: Area, maxEdgeCells: number, source: CoverSource): Promise<Cover> {
  const known = knownCover(area, maxEdgeCells);
  if (known) return known;
  const cover = await source(area, maxEdgeCells);
  remember(area, maxEdgeCells, cover, `${maxEdgeCells}:${keyOf(area)}`);
  return cover;
}

/** A cover the plan needs that is not computed yet (planScopedWith). */
class MissingCover {
  constructor(
    readonly area: Area,
    readonly maxEdgeCells: number,
  ) {}
}

/**
 * planScoped with every cover it needs computed by `source` (a worker thread) rather than here:
 * planning runs with the known covers only; a missing one is computed and planning starts again
 * (at most once per cover; covers stay with their area object). Also readies the covers that
 * areaRowsSql and the scope's filter will ask for.
 */
export async function planScopedWith(source: CoverSource, request: Area, requestFraction: number, scope: Area | undefined, scopeFraction: number, windowMs: number): Promise<ScopedPlan> {
  const known = (area: Area, maxEdgeCells = 1500): Cover => {
    const cover = knownCover(area, maxEdgeCells);
    if (!cover) throw new MissingCover(area, maxEdgeCells);
    return cover;
  };
  for (;;) {
    try {
      const plan = planScoped(request, requestFraction, scope, scopeFraction, windowMs, known);
      // A scan filters by the other area through its cover (areaFilterSql); so does a scope's filter elsewhere (scopeAreaSql).
      for (const area of [plan.plan.strategy === 'scan' ? plan.also : undefined, scope]) {
        if (area && area.kind !== 'cells' && !cheapExactTest(area)) await ensureCover(area, ALSO_EDGE_CELLS, source);
      }
      return plan;
    } catch (err) {
      if (!(err instanceof MissingCover)) throw err;
      await ensureCover(err.area, err.maxEdgeCells, source);
    }
  }
}

const cheapExactTest = (area: Area): boolean => exactTestEdges(area) <= CHEAP_EXACT_EDGES;

/** Chooses the strategy from the share (0…1) of devices whose latest position is inside the area, and the window's length. */
export function planArea(area: Area, insideFraction: number, windowMs: number, covers: (area: Area, maxEdgeCells?: number) => Cover = cachedCover): AreaPlan {
  if (insideFraction >= SCAN_FRACTION && cheapExactTest(area)) return { strategy: 'scan' };
  const cover = covers(area, edgeCellBudget(windowMs));
  if (insideFraction >= SCAN_FRACTION || cover.inside.length + cover.edge.length > MAX_RANGES) return { strategy: 'scan', cover };
  return { strategy: 'ranges', cover };
}

/**
 * SQL: true when a row's position is in the area, as a filter beside another area that drives the
 * query (a principal's scope, or the request's area when the scope drives): cells well inside by
 * membership of the cover, only the boundary band with the exact test. A row without a cell
 * (unlocated) is outside.
 */
export function areaFilterSql(area: Area, cols: { lng: string; lat: string; cell: string }, params?: Params, within?: Bbox): string {
  const exact = exactAreaSql(area, cols, within, params);
  if (area.kind === 'cells' || cheapExactTest(area)) return `(${cols.cell} IS NOT NULL AND ${exact})`;
  return rangesFilterSql(rangesWithEdgeFlag(cachedCover(area, ALSO_EDGE_CELLS)), cols.cell, exact, params);
}

/**
 * SQL: whether `cell` lies in one of the sorted, disjoint `ranges`, and for an edge range whether
 * `exact` holds — one binary search per row (`width_bucket` over the ranges' bounds; the bucket's
 * tag says outside, inside or edge), whatever the number of ranges. Measured 3–5× cheaper per row
 * than membership of the cover's cells per resolution. The arrays are bind parameters when
 * `params` is given, else literals.
 */
export function rangesFilterSql(ranges: readonly TaggedRange[], cell: string, exact: string, params?: Params): string {
  const bounds: string[] = [];
  const tags: number[] = [0];
  for (const [lo, hi, edge] of ranges) {
    bounds.push(lo.toString(), (hi + 1n).toString());
    tags.push(edge ? 2 : 1, 0);
  }
  const [b, t] = params
    ? [params.add(bounds, '::int8[]'), params.add(tags, '::int2[]')]
    : [`'{${bounds.join(',')}}'::int8[]`, `'{${tags.join(',')}}'::int2[]`];
  return `(CASE (${t})[width_bucket(${cell}, ${b}) + 1] WHEN 1 THEN true WHEN 2 THEN ${exact} ELSE false END)`;
}

/** How a query of `request` limited to `scope` reads: the area that drives the plan, and the one every row must also lie in. */
export interface ScopedPlan {
  drive: Area;
  plan: AreaPlan;
  also: Area | undefined;
}

/**
 * Both areas apply to every row. The one holding fewer devices (`…Fraction`: the share of device
 * positions inside) drives the plan, so a town-scoped key asking for the whole city reads only its
 * town. A ranges plan reads only the intersection of the two covers (inside both: no test; in
 * either's boundary band: both exact tests); a scan tests the other area on each row.
 */
export function planScoped(
  request: Area,
  requestFraction: number,
  scope: Area | undefined,
  scopeFraction: number,
  windowMs: number,
  covers: (area: Area, maxEdgeCells?: number) => Cover = cachedCover,
): ScopedPlan {
  if (!scope) return { drive: request, plan: planArea(request, requestFraction, windowMs, covers), also: undefined };
  let [drive, also, fraction] = scopeFraction < requestFraction ? [scope, request, scopeFraction] : [request, scope, requestFraction];
  let plan = planArea(drive, fraction, windowMs, covers);
  // A scan reads the whole window whichever area drives: let the request's (often cheap) test drive it.
  if (plan.strategy === 'scan' && drive === scope) [drive, also, plan] = [request, scope, planArea(request, requestFraction, windowMs, covers)];
  if (plan.strategy === 'ranges') {
    const ranges = intersectRanges(rangesWithEdgeFlag(plan.cover), rangesWithEdgeFlag(covers(also, ALSO_EDGE_CELLS)));
    plan = ranges.length <= MAX_RANGES ? { ...plan, ranges } : { strategy: 'scan', cover: plan.cover };
  }
  return { drive, plan, also };
}

/**
 * Boundary cells of the second area's cover: finer than a driving cover's, since only its ranges
 * that meet the driving ones are kept, and its band decides how many rows get its exact test.
 */
export const ALSO_EDGE_CELLS = 6000;

/** The ranges in both sorted lists, with both tags; touching ranges of the same tags merged. */
export function intersectRanges(a: readonly TaggedRange[], b: readonly TaggedRange[]): PairRange[] {
  const out: PairRange[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const [alo, ahi, aedge] = a[i]!;
    const [blo, bhi, bedge] = b[j]!;
    const lo = alo > blo ? alo : blo;
    const hi = ahi < bhi ? ahi : bhi;
    if (lo <= hi) {
      const last = out[out.length - 1];
      if (last && last[2] === aedge && last[3] === bedge && last[1] + 1n >= lo) last[1] = hi;
      else out.push([lo, hi, aedge, bedge]);
    }
    if (ahi < bhi) i++;
    else j++;
  }
  return out;
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
  /**
   * A second area every row must also lie in (a principal's scope, or the request's area when the
   * scope drives). With a ranges plan, `plan.ranges` must be the intersection (planScoped) and the
   * edge rows get both exact tests; a scan tests it on each row (areaFilterSql), after the range
   * of the window: TimescaleDB re-evaluates a rescanned subquery's quals on every rescan
   * (measured: 0.24 ms per range with such a filter inside the LATERAL scan, 0.007 outside).
   */
  also?: Area;
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
  const cols = { lng: 'r.lng', lat: 'r.lat', cell: 'r.cell' };
  const exact = exactAreaSql(area, cols, undefined, params);
  if (plan.strategy === 'scan') {
    const filter = spec.also ? ` AND ${areaFilterSql(spec.also, cols, params, boxOf(area))}` : '';
    let predicate = exact;
    if (plan.cover && area.kind !== 'cells' && !cheapExactTest(area)) predicate = rangesFilterSql(rangesWithEdgeFlag(plan.cover), 'r.cell', exact, params);
    return `SELECT ${spec.columns} FROM ${table} r WHERE ${window} AND r.cell IS NOT NULL AND ${predicate}${extra}${filter}`;
  }
  if (spec.also) {
    if (!plan.ranges) throw new Error('areaRowsSql: a ranges plan with a second area needs the intersected ranges (planScoped)');
    const r = plan.ranges;
    const [lo, hi, edge, alsoEdge] = [0, 1, 2, 3].map((k) => params.add(r.map((g) => (typeof g[k] === 'bigint' ? g[k].toString() : g[k])), k < 2 ? '::int8[]' : '::bool[]'));
    return (
      `SELECT ${spec.columns} FROM unnest(${lo}, ${hi}, ${edge}, ${alsoEdge}) AS g(lo, hi, edge, also_edge) ` +
      `CROSS JOIN LATERAL (SELECT * FROM ${table} r WHERE r.cell BETWEEN g.lo AND g.hi AND ${window}${extra} OFFSET 0) r ` +
      // A test no range needs is left out of the statement: parsing a polygon's test costs more than running it on a few rows.
      `WHERE ${r.some((g) => g[2]) ? `(NOT g.edge OR ${exact})` : 'true'} AND ${r.some((g) => g[3]) ? `(NOT g.also_edge OR ${exactAreaSql(spec.also, cols, boxOf(area), params)})` : 'true'}`
    );
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

/** The box an area's rows lie in, with a margin (a circle's outline is a polygon inside it by up to 1 m); none for a cells area. */
function boxOf(area: Area): Bbox | undefined {
  const outline = areaOutline(area);
  if (!outline) return undefined;
  const [minX, minY, maxX, maxY] = turfBbox(outline);
  return [minX - BOX_MARGIN, minY - BOX_MARGIN, maxX + BOX_MARGIN, maxY + BOX_MARGIN];
}
const BOX_MARGIN = 0.001; // degrees, ~100 m

const taggedRanges = new WeakMap<Cover, TaggedRange[]>();

/** Inside and edge ranges in one sorted list; touching ranges of the same kind are merged. Computed once per cover (covers are cached). */
export function rangesWithEdgeFlag(cover: Cover): TaggedRange[] {
  let tagged = taggedRanges.get(cover);
  if (!tagged) taggedRanges.set(cover, (tagged = sortedTaggedRanges(cover)));
  return tagged;
}

function sortedTaggedRanges(cover: Cover): TaggedRange[] {
  const tagged: TaggedRange[] = [
    ...mergeRanges(cover.inside.map((r) => [r[0], r[1]])).map(([a, b]): [bigint, bigint, boolean] => [a, b, false]),
    ...mergeRanges(cover.edge.map((r) => [r[0], r[1]])).map(([a, b]): [bigint, bigint, boolean] => [a, b, true]),
  ];
  return tagged.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
}
