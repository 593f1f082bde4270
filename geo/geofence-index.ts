import type { MultiPolygon, Polygon } from 'geojson';
import { polygonContains } from './area.ts';
import { storageCell } from './cell.ts';
import { coverArea, type Cover, type CoverOptions } from './cover.ts';

/** What the index needs of a geofence: an id and its (validated) polygon. */
export interface IndexedFence {
  id: number;
  geometry: Polygon | MultiPolygon;
}

/** A fence whose cover holds a cell: surely inside (`edge` false) or to be tested exactly (`edge` true). */
interface Hit<F> {
  fence: F;
  edge: boolean;
}

/**
 * Which geofences contain a position, answered from the fences' exact H3 covers (geo/cover.ts):
 * the position's res-15 cell is looked up among the cover ranges of every fence at once (the
 * ranges are cut into disjoint segments, each with the fences covering it, and searched by
 * bisection), so a position far from every fence costs one binary search. A fence whose
 * interior range holds the cell contains the position; one whose boundary band holds it is
 * decided by the exact point-in-polygon test (Turf's, boundary inclusive; a large fence's through
 * its band index, geo/polygon-index.ts). The result is the same
 * as testing every fence with `booleanPointInPolygon`. Immutable: build a new index when the
 * fences change.
 */
export class GeofenceIndex<F extends IndexedFence> {
  /** Segment starts, ascending; segment i is [starts[i], ends[i]]. */
  private readonly starts: bigint[] = [];
  private readonly ends: bigint[] = [];
  private readonly hits: Hit<F>[][] = [];
  readonly fences: readonly F[];

  /**
   * `coverOf` supplies a fence's cover when the caller keeps them (a cover costs tens of
   * milliseconds for a large fence; unchanged fences need not be covered again).
   */
  constructor(fences: readonly F[], options: CoverOptions & { coverOf?: (fence: F) => Cover } = {}) {
    this.fences = fences;
    const { coverOf, ...coverOptions } = options;
    type Bound = { at: bigint; fence: number; edge: boolean; delta: 1 | -1 };
    const bounds: Bound[] = [];
    fences.forEach((fence, i) => {
      const cover = coverOf ? coverOf(fence) : coverArea({ kind: 'polygon', geometry: fence.geometry }, coverOptions);
      for (const [lo, hi] of cover.inside) bounds.push({ at: lo, fence: i, edge: false, delta: 1 }, { at: hi + 1n, fence: i, edge: false, delta: -1 });
      for (const [lo, hi] of cover.edge) bounds.push({ at: lo, fence: i, edge: true, delta: 1 }, { at: hi + 1n, fence: i, edge: true, delta: -1 });
    });
    bounds.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    // Sweep: after the bounds at one value are applied, the fences active there hold every cell
    // up to the next bound (exclusive). Counts, not flags: a fence's inside and edge ranges are
    // disjoint, but counting keeps this right even if they were not (edge wins: tested exactly).
    const inside = new Map<number, number>();
    const edge = new Map<number, number>();
    const bump = (m: Map<number, number>, k: number, d: number) => {
      const n = (m.get(k) ?? 0) + d;
      if (n === 0) m.delete(k);
      else m.set(k, n);
    };
    for (let i = 0; i < bounds.length; ) {
      const at = bounds[i]!.at;
      for (; i < bounds.length && bounds[i]!.at === at; i++) {
        const b = bounds[i]!;
        bump(b.edge ? edge : inside, b.fence, b.delta);
      }
      if (inside.size === 0 && edge.size === 0) continue;
      const next = bounds[i]?.at;
      if (next === undefined) break; // cannot happen: every range closes
      const active: Hit<F>[] = [];
      for (const f of edge.keys()) active.push({ fence: fences[f]!, edge: true });
      for (const f of inside.keys()) if (!edge.has(f)) active.push({ fence: fences[f]!, edge: false });
      this.starts.push(at);
      this.ends.push(next - 1n);
      this.hits.push(active);
    }
  }

  /** Segments in the index (for tests and metrics). */
  get segments(): number {
    return this.starts.length;
  }

  /** Fences whose cover holds `cell` (a res-15 cell integer), without the exact test. */
  candidates(cell: bigint): readonly Hit<F>[] {
    let lo = 0;
    let hi = this.starts.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.starts[mid]! <= cell) {
        found = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    return found >= 0 && cell <= this.ends[found]! ? this.hits[found]! : [];
  }

  /**
   * The fences containing the position (boundary inclusive). `cell` is the position's res-15
   * cell when known (readings carry it); it must be the cell of exactly this position.
   */
  containing(lng: number, lat: number, cell: bigint = storageCell(lat, lng)): F[] {
    const out: F[] = [];
    for (const hit of this.candidates(cell)) {
      if (!hit.edge || polygonContains(hit.fence.geometry, lng, lat)) out.push(hit.fence);
    }
    return out;
  }
}
