/**
 * Douglas–Peucker simplification of a track with a tolerance in metres, on the sphere.
 *
 * Turf's `simplify` measures its tolerance in coordinate units (degrees: 1° of longitude is 102 km
 * in Dongguan but 111 km of latitude) and returns coordinates, not which positions it kept. Here
 * distances are great-circle distances from a position to the arc between two kept vertices
 * (exact on Turf's spherical Earth, valid anywhere: a satellite's ground track crosses the poles
 * and the antimeridian), and the result is the indices kept, so each kept vertex keeps its
 * timestamp. The first and last positions are always kept.
 */

/** Turf's Earth radius (metres), so that distances agree with `@turf/turf`'s `distance`. */
export const EARTH_RADIUS_METRES = 6_371_008.8;

const RAD = Math.PI / 180;

interface UnitVectors {
  x: Float64Array;
  y: Float64Array;
  z: Float64Array;
}

function unitVectors(points: readonly { lng: number; lat: number }[]): UnitVectors {
  const n = points.length;
  const v: UnitVectors = { x: new Float64Array(n), y: new Float64Array(n), z: new Float64Array(n) };
  for (let i = 0; i < n; i++) {
    const lat = points[i]!.lat * RAD;
    const lng = points[i]!.lng * RAD;
    const c = Math.cos(lat);
    v.x[i] = c * Math.cos(lng);
    v.y[i] = c * Math.sin(lng);
    v.z[i] = Math.sin(lat);
  }
  return v;
}

/** Angle (radians) between unit vectors i and j. */
function angle(v: UnitVectors, i: number, j: number): number {
  const cx = v.y[i]! * v.z[j]! - v.z[i]! * v.y[j]!;
  const cy = v.z[i]! * v.x[j]! - v.x[i]! * v.z[j]!;
  const cz = v.x[i]! * v.y[j]! - v.y[i]! * v.x[j]!;
  return Math.atan2(Math.sqrt(cx * cx + cy * cy + cz * cz), v.x[i]! * v.x[j]! + v.y[i]! * v.y[j]! + v.z[i]! * v.z[j]!);
}

/** Angular distance (radians) from point p to the minor great-circle arc a–b. */
function arcAngle(v: UnitVectors, p: number, a: number, b: number): number {
  const ax = v.x[a]!, ay = v.y[a]!, az = v.z[a]!;
  const bx = v.x[b]!, by = v.y[b]!, bz = v.z[b]!;
  const px = v.x[p]!, py = v.y[p]!, pz = v.z[p]!;
  // n: normal of the arc's plane.
  let nx = ay * bz - az * by;
  let ny = az * bx - ax * bz;
  let nz = ax * by - ay * bx;
  const nn = Math.sqrt(nx * nx + ny * ny + nz * nz);
  // a and b coincide (a closed loop), or are antipodal (no single arc): the distance to the nearer
  // of them, which keeps positions rather than dropping them.
  if (nn < 1e-15) return Math.min(angle(v, p, a), angle(v, p, b));
  nx /= nn;
  ny /= nn;
  nz /= nn;
  // p's projection on the plane lies between a and b (going the short way) iff (a × p)·n ≥ 0 and (p × b)·n ≥ 0.
  const aTimesP = (ay * pz - az * py) * nx + (az * px - ax * pz) * ny + (ax * py - ay * px) * nz;
  const pTimesB = (py * bz - pz * by) * nx + (pz * bx - px * bz) * ny + (px * by - py * bx) * nz;
  if (aTimesP >= 0 && pTimesB >= 0) {
    const s = Math.abs(px * nx + py * ny + pz * nz); // sine of the cross-track angle
    return Math.asin(s > 1 ? 1 : s);
  }
  return Math.min(angle(v, p, a), angle(v, p, b));
}

/** Great-circle distance in metres from `p` to the shorter arc between `a` and `b` (all [lng, lat]). */
export function pointToArcDistance(p: readonly [number, number], a: readonly [number, number], b: readonly [number, number]): number {
  const v = unitVectors([p, a, b].map(([lng, lat]) => ({ lng, lat })));
  return arcAngle(v, 0, 1, 2) * EARTH_RADIUS_METRES;
}

/**
 * Indices (ascending) of the positions Douglas–Peucker keeps with `toleranceMetres`: every dropped
 * position lies within the tolerance of the arc between the kept vertices around it. The first and
 * last positions are always kept. Iterative (no recursion depth limit on long tracks).
 */
export function simplifyTrack(points: readonly { lng: number; lat: number }[], toleranceMetres: number): number[] {
  if (!(toleranceMetres >= 0)) throw new RangeError(`tolerance must be a non-negative number of metres, not ${toleranceMetres}`);
  const n = points.length;
  if (n <= 2) return Array.from({ length: n }, (_, i) => i);
  const v = unitVectors(points);
  const tolerance = toleranceMetres / EARTH_RADIUS_METRES;
  const keep = new Uint8Array(n);
  keep[0] = 1;
  keep[n - 1] = 1;
  const stack: number[] = [0, n - 1];
  while (stack.length > 0) {
    const last = stack.pop()!;
    const first = stack.pop()!;
    let farthest = -1;
    let farthestAngle = tolerance;
    for (let i = first + 1; i < last; i++) {
      const d = arcAngle(v, i, first, last);
      if (d > farthestAngle) {
        farthestAngle = d;
        farthest = i;
      }
    }
    if (farthest < 0) continue;
    keep[farthest] = 1;
    if (farthest - first > 1) stack.push(first, farthest);
    if (last - farthest > 1) stack.push(farthest, last);
  }
  const kept: number[] = [];
  for (let i = 0; i < n; i++) if (keep[i]) kept.push(i);
  return kept;
}
