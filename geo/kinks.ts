import type { MultiPolygon, Polygon } from 'geojson';

/**
 * Where a polygon's rings cross or touch themselves or each other, decided as Turf's `kinks` does
 * (the same pairs of segments, the same arithmetic), but without comparing every segment with
 * every other: Turf's `kinks` is quadratic (10 000 vertices: 50 million pairs, about a second) and
 * collects every crossing. Here segments are swept in order of their west end, and only pairs
 * whose bounding boxes overlap (a requirement for two segments to meet) are computed; the first
 * crossing found is returned. Same answer as `kinks(geometry).features.length > 0`
 * (kinks.test.ts compares them), not necessarily the same crossing when there are several.
 */
export function findKink(geometry: Polygon | MultiPolygon): [number, number] | undefined {
  const rings = geometry.type === 'Polygon' ? geometry.coordinates : geometry.coordinates.flat();
  // Segment s: ring[s], index[s] within the ring, and its ends.
  const ringOf: number[] = [];
  const indexOf: number[] = [];
  const ax: number[] = [];
  const ay: number[] = [];
  const bx: number[] = [];
  const by: number[] = [];
  rings.forEach((ring, r) => {
    for (let i = 0; i + 1 < ring.length; i++) {
      ringOf.push(r);
      indexOf.push(i);
      ax.push(ring[i]![0]!);
      ay.push(ring[i]![1]!);
      bx.push(ring[i + 1]![0]!);
      by.push(ring[i + 1]![1]!);
    }
  });
  const n = ax.length;
  const minX = (s: number) => Math.min(ax[s]!, bx[s]!);
  const maxX = (s: number) => Math.max(ax[s]!, bx[s]!);
  const order = Array.from({ length: n }, (_, s) => s).sort((s, t) => minX(s) - minX(t));

  /** Turf's exemptions: a segment and its neighbours in the same ring, and a closed ring's first and last segments. */
  const neighbours = (s: number, t: number): boolean => {
    if (ringOf[s] !== ringOf[t]) return false;
    const [i, k] = indexOf[s]! < indexOf[t]! ? [indexOf[s]!, indexOf[t]!] : [indexOf[t]!, indexOf[s]!];
    if (k - i === 1) return true;
    const ring = rings[ringOf[s]!]!;
    const first = ring[0]!;
    const last = ring[ring.length - 1]!;
    return i === 0 && k === ring.length - 2 && first[0] === last[0] && first[1] === last[1];
  };

  let active: number[] = [];
  for (const s of order) {
    const west = minX(s);
    const sLo = Math.min(ay[s]!, by[s]!);
    const sHi = Math.max(ay[s]!, by[s]!);
    const still: number[] = [];
    for (const t of active) {
      if (maxX(t) < west) continue; // wholly west of this one, so of every later one too
      still.push(t);
      if (Math.max(ay[t]!, by[t]!) < sLo || Math.min(ay[t]!, by[t]!) > sHi) continue;
      if (neighbours(s, t)) continue;
      // Turf tests a pair of different rings in both orders; within a ring, lower index first.
      const [p, q] = ringOf[s] === ringOf[t] && indexOf[t]! > indexOf[s]! ? [s, t] : [t, s];
      const hit = lineIntersects(ax[p]!, ay[p]!, bx[p]!, by[p]!, ax[q]!, ay[q]!, bx[q]!, by[q]!) ?? (ringOf[s] !== ringOf[t] ? lineIntersects(ax[q]!, ay[q]!, bx[q]!, by[q]!, ax[p]!, ay[p]!, bx[p]!, by[p]!) : undefined);
      if (hit) return hit;
    }
    still.push(s);
    active = still;
  }
  return undefined;
}

/** @turf/kinks' segment intersection, as written there: parallel segments never intersect; the ends count. */
function lineIntersects(x1: number, y1: number, x2: number, y2: number, x3: number, y3: number, x4: number, y4: number): [number, number] | undefined {
  const denominator = (y4 - y3) * (x2 - x1) - (x4 - x3) * (y2 - y1);
  if (denominator === 0) return undefined;
  let a = y1 - y3;
  let b = x1 - x3;
  const numerator1 = (x4 - x3) * a - (y4 - y3) * b;
  const numerator2 = (x2 - x1) * a - (y2 - y1) * b;
  a = numerator1 / denominator;
  b = numerator2 / denominator;
  if (a >= 0 && a <= 1 && b >= 0 && b <= 1) return [x1 + a * (x2 - x1), y1 + a * (y2 - y1)];
  return undefined;
}
