import { distance } from '@turf/turf';

/** One position of a moving device, oldest first in a track. */
export interface TrackPoint {
  /** Epoch milliseconds. */
  ts: number;
  lng: number;
  lat: number;
  /** Metres, when the device sent one. */
  alt?: number | null;
}

/**
 * Great-circle length of each segment in metres (Turf's haversine distance): `lengths[i]` runs
 * from `points[i]` to `points[i + 1]`. Horizontal: altitude is ignored.
 */
export function segmentLengths(points: readonly TrackPoint[]): number[] {
  const lengths = new Array<number>(Math.max(0, points.length - 1));
  for (let i = 1; i < points.length; i++) {
    const a = points[i - 1]!;
    const b = points[i]!;
    lengths[i - 1] = distance([a.lng, a.lat], [b.lng, b.lat], { units: 'meters' });
  }
  return lengths;
}

/** Length of the whole track in metres: the sum of its segments. */
export function trackLength(points: readonly TrackPoint[], lengths: readonly number[] = segmentLengths(points)): number {
  let total = 0;
  for (const l of lengths) total += l;
  return total;
}

/** Speed statistics in metres per second; null where there is nothing to measure. */
export interface SpeedStats {
  /** Track length / time from the first to the last position (stops included). */
  mean: number | null;
  /** Fastest segment. */
  max: number | null;
  /** Median of the segments' speeds (each segment counts once, whatever its duration). */
  median: number | null;
}

/**
 * Speeds of a track (oldest first). A segment's speed is its great-circle length over its duration;
 * segments of zero (or negative) duration have no speed and are left out of max and median.
 */
export function speedStats(points: readonly TrackPoint[], lengths: readonly number[] = segmentLengths(points)): SpeedStats {
  const speeds: number[] = [];
  for (let i = 1; i < points.length; i++) {
    const seconds = (points[i]!.ts - points[i - 1]!.ts) / 1000;
    if (seconds > 0) speeds.push(lengths[i - 1]! / seconds);
  }
  const seconds = points.length < 2 ? 0 : (points[points.length - 1]!.ts - points[0]!.ts) / 1000;
  return {
    mean: seconds > 0 ? trackLength(points, lengths) / seconds : null,
    max: speeds.length > 0 ? speeds.reduce((m, s) => (s > m ? s : m), 0) : null,
    median: median(speeds),
  };
}

/** Median of a list of numbers (the mean of the two middle ones for an even count); null when empty. */
export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = Float64Array.from(values).sort();
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
