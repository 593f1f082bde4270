import { distance } from '@turf/turf';
import type { TrackPoint } from './track.ts';

/** A dwell: consecutive positions that stayed together long enough. */
export interface Stop {
  /** Index of the stop's first and last position in the track. */
  first: number;
  last: number;
  /** Epoch ms of the first and last position. */
  from: number;
  to: number;
  /** Centroid (mean position) of its positions, a single stray position left out. */
  lng: number;
  lat: number;
  /** Positions from the first to the last (a stray one within included). */
  points: number;
}

export interface StopOptions {
  /** A stop lasts at least this long, from its first to its last position. */
  minDurationMs: number;
  /** Each position of a stop lies within this many metres of the centroid of the positions before it. */
  radiusMetres: number;
}

/**
 * Stay points of a track (oldest first), by sequential clustering (Kang et al., "Extracting places
 * from traces of locations", 2004): a cluster grows while each next position lies within
 * `radiusMetres` (great-circle) of the centroid of the cluster so far. As in Kang et al., one
 * position farther away is held pending: if the next one is back within the radius, the stray
 * position is ignored (a GPS spike does not cut a dwell in two); two in a row close the cluster at
 * its last member, and the next cluster starts at the first position after it. A closed cluster of
 * at least two positions whose first and last positions are `minDurationMs` or more apart is a
 * stop; a dwell still going on at the end of the track counts too. O(n): each position is looked
 * at twice at most, unlike anchor-based detection (every position tried as an anchor), whose work
 * grows with the square of a long dwell's length.
 */
export function detectStops(points: readonly TrackPoint[], options: StopOptions): Stop[] {
  const stops: Stop[] = [];
  const n = points.length;
  let first = 0;
  /** Last position that joined the cluster. */
  let last = 0;
  let members = 1;
  let sumLng = 0;
  let sumLat = 0;
  const start = (i: number) => {
    first = last = i;
    members = 1;
    sumLng = points[i]!.lng;
    sumLat = points[i]!.lat;
  };
  const close = () => {
    if (members < 2 || points[last]!.ts - points[first]!.ts < options.minDurationMs) return;
    const p = points;
    stops.push({ first, last, from: p[first]!.ts, to: p[last]!.ts, lng: wrapLongitude(sumLng / members), lat: sumLat / members, points: last - first + 1 });
  };
  if (n === 0) return stops;
  start(0);
  for (let i = 1; i < n; i++) {
    const p = points[i]!;
    const centroid = [wrapLongitude(sumLng / members), sumLat / members];
    if (distance(centroid, [p.lng, p.lat], { units: 'meters' }) <= options.radiusMetres) {
      // Longitudes are summed unwrapped around the cluster's first one (a dwell on the antimeridian).
      sumLng += unwrap(p.lng, points[first]!.lng);
      sumLat += p.lat;
      members++;
      last = i;
    } else if (i === last + 1) {
      // The first position outside: pending until the next one tells a spike from a departure.
    } else {
      close();
      start(last + 1);
      i = last; // the loop goes on with the position after the new cluster's first
    }
  }
  close();
  return stops;
}

/** `lng` shifted by whole turns to lie within 180° of `reference`. */
const unwrap = (lng: number, reference: number): number => lng + 360 * Math.round((reference - lng) / 360);

/** A longitude brought into [-180, 180]. */
const wrapLongitude = (lng: number): number => (lng >= -180 && lng <= 180 ? lng : ((((lng + 180) % 360) + 360) % 360) - 180);
