/** Small spherical-earth helpers for the simulators: distances, bearings, walking a polyline. */

export interface LatLng {
  lat: number;
  lng: number;
}

export const EARTH_RADIUS_M = 6_371_008.8;
const RAD = Math.PI / 180;

/** Great-circle distance in metres. */
export function distance(a: LatLng, b: LatLng): number {
  const dLat = (b.lat - a.lat) * RAD;
  const dLng = (b.lng - a.lng) * RAD;
  const s = Math.sin(dLat / 2) ** 2 + Math.cos(a.lat * RAD) * Math.cos(b.lat * RAD) * Math.sin(dLng / 2) ** 2;
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(s)));
}

/** Initial bearing from a to b, degrees clockwise from north, [0, 360). */
export function bearing(a: LatLng, b: LatLng): number {
  const φ1 = a.lat * RAD;
  const φ2 = b.lat * RAD;
  const Δλ = (b.lng - a.lng) * RAD;
  const y = Math.sin(Δλ) * Math.cos(φ2);
  const x = Math.cos(φ1) * Math.sin(φ2) - Math.sin(φ1) * Math.cos(φ2) * Math.cos(Δλ);
  return normaliseDegrees(Math.atan2(y, x) / RAD);
}

export function normaliseDegrees(d: number): number {
  const r = ((d % 360) + 360) % 360;
  return r >= 360 ? 0 : r;
}

/** The point `metres` away from p in direction `bearingDeg` (good enough for a few km). */
export function offset(p: LatLng, metres: number, bearingDeg: number): LatLng {
  const dNorth = metres * Math.cos(bearingDeg * RAD);
  const dEast = metres * Math.sin(bearingDeg * RAD);
  return {
    lat: p.lat + (dNorth / EARTH_RADIUS_M) / RAD,
    lng: p.lng + (dEast / (EARTH_RADIUS_M * Math.cos(p.lat * RAD))) / RAD,
  };
}

export interface BBox {
  minLat: number;
  maxLat: number;
  minLng: number;
  maxLng: number;
}

export const inBBox = (p: LatLng, b: BBox): boolean => p.lat >= b.minLat && p.lat <= b.maxLat && p.lng >= b.minLng && p.lng <= b.maxLng;

/** A polyline with precomputed cumulative lengths, for walking along it by distance. */
export class Polyline {
  readonly points: readonly LatLng[];
  /** cumulative[i] = metres from the start to points[i]. */
  readonly cumulative: readonly number[];
  readonly length: number;

  constructor(points: readonly LatLng[]) {
    if (points.length < 2) throw new Error('a polyline needs at least two points');
    this.points = points;
    const cumulative = [0];
    for (let i = 1; i < points.length; i++) cumulative.push(cumulative[i - 1]! + distance(points[i - 1]!, points[i]!));
    this.cumulative = cumulative;
    this.length = cumulative[cumulative.length - 1]!;
  }

  /** The point `d` metres from the start (clamped to the ends) and the heading of the line there. */
  at(d: number): LatLng & { heading: number } {
    const pts = this.points;
    const cum = this.cumulative;
    if (d <= 0) return { ...pts[0]!, heading: bearing(pts[0]!, pts[1]!) };
    if (d >= this.length) {
      const n = pts.length;
      return { ...pts[n - 1]!, heading: bearing(pts[n - 2]!, pts[n - 1]!) };
    }
    // binary search for the segment holding d
    let lo = 0;
    let hi = cum.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (cum[mid]! <= d) lo = mid;
      else hi = mid;
    }
    const a = pts[lo]!;
    const b = pts[hi]!;
    const seg = cum[hi]! - cum[lo]!;
    const f = seg > 0 ? (d - cum[lo]!) / seg : 0;
    return { lat: a.lat + (b.lat - a.lat) * f, lng: a.lng + (b.lng - a.lng) * f, heading: bearing(a, b) };
  }

  /** The same line walked from the other end. */
  reversed(): Polyline {
    return new Polyline([...this.points].reverse());
  }
}
