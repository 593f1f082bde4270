import { along, bearing, destination, distance, lineString, midpoint } from '@turf/turf';
import { describe, expect, it } from 'vitest';
import { pointToArcDistance, simplifyTrack } from './track-simplify.ts';

const ONE_DEGREE = 111_195.080_2;
type LngLat = [number, number];
const pt = ([lng, lat]: readonly number[]) => ({ lng: lng!, lat: lat! });

/** `metres` to the left (bearing − 90°) of the middle of the great-circle arc a–b. */
function offsetFromMiddle(a: LngLat, b: LngLat, metres: number): LngLat {
  const mid = midpoint(a, b);
  return destination(mid, metres, bearing(mid, b) - 90, { units: 'meters' }).geometry.coordinates as LngLat;
}

/**
 * Distance from p to the arc a–b measured without the code under test: the nearest of 501 points
 * spaced along the arc by Turf (so at most length/1000 too long).
 */
function sampledDistance(p: LngLat, a: LngLat, b: LngLat): { metres: number; slack: number } {
  const line = lineString([a, b]);
  const length = distance(a, b, { units: 'meters' });
  let best = Infinity;
  for (let i = 0; i <= 500; i++) best = Math.min(best, distance(p, along(line, (length * i) / 500, { units: 'meters' }), { units: 'meters' }));
  return { metres: best, slack: length / 1000 };
}

/** A deterministic PRNG (mulberry32). */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('pointToArcDistance', () => {
  it('is the cross-track distance where the foot of the perpendicular falls on the arc', () => {
    expect(pointToArcDistance([0, 1], [-1, 0], [1, 0])).toBeCloseTo(ONE_DEGREE, 1); // 1° north of the equator
    expect(pointToArcDistance([0, 0], [-1, 0], [1, 0])).toBeCloseTo(0, 6);
  });

  it('measures metres the same way in every direction (Turf simplify’s degrees do not: 1° of longitude is 102 km here)', () => {
    const dongguan: LngLat = [113.75, 23.02];
    for (const heading of [0, 90, 45, 135]) {
      const b = destination(dongguan, 1000, heading, { units: 'meters' }).geometry.coordinates as LngLat;
      expect(pointToArcDistance(offsetFromMiddle(dongguan, b, 50), dongguan, b)).toBeCloseTo(50, 2);
    }
  });

  it('beyond the ends of the arc it is the distance to the nearer end', () => {
    // On the arc's own meridian, 1 km past its northern end
    expect(pointToArcDistance([113.75, 23.02 + 1000 / ONE_DEGREE], [113.75, 23.0], [113.75, 23.02])).toBeCloseTo(1000, 0);
    // Before its southern end
    expect(pointToArcDistance([113.75, 22.99], [113.75, 23.0], [113.75, 23.02])).toBeCloseTo(ONE_DEGREE / 100, 1);
  });

  it('works across the antimeridian and for an arc of length zero', () => {
    expect(pointToArcDistance([180, 0.001], [179.99, 0], [-179.99, 0])).toBeCloseTo(ONE_DEGREE / 1000, 2);
    expect(pointToArcDistance([113.76, 23], [113.75, 23], [113.75, 23])).toBeCloseTo(distance([113.76, 23], [113.75, 23], { units: 'meters' }), 3);
  });
});

describe('simplifyTrack', () => {
  it('keeps every position of a track of two or fewer', () => {
    expect(simplifyTrack([], 10)).toEqual([]);
    expect(simplifyTrack([pt([113, 23])], 10)).toEqual([0]);
    expect(simplifyTrack([pt([113, 23]), pt([113, 23])], 10)).toEqual([0, 1]);
  });

  it('refuses a negative or non-numeric tolerance, whatever the track', () => {
    expect(() => simplifyTrack([], -1)).toThrow(RangeError);
    expect(() => simplifyTrack([pt([113, 23]), pt([113, 23.1]), pt([113, 23.2])], -0.5)).toThrow(/non-negative/);
    expect(() => simplifyTrack([pt([113, 23]), pt([113, 23.1]), pt([113, 23.2])], Number.NaN)).toThrow(RangeError);
  });

  it('drops positions on the great circle and keeps both ends', () => {
    const meridian = Array.from({ length: 50 }, (_, i) => pt([113.75, 23 + i * 0.001]));
    expect(simplifyTrack(meridian, 0.01)).toEqual([0, 49]);
    expect(simplifyTrack(meridian, 0.001)).toEqual([0, 49]); // 1 mm: the arithmetic is good to about a micrometre
  });

  it('keeps a position just beyond the tolerance and drops one just within, in metres, whatever the direction', () => {
    const a: LngLat = [113.75, 23.02];
    for (const heading of [0, 90]) {
      const b = destination(a, 2000, heading, { units: 'meters' }).geometry.coordinates as LngLat;
      const track = [a, offsetFromMiddle(a, b, 50), b].map(pt);
      expect(simplifyTrack(track, 50.5)).toEqual([0, 2]);
      expect(simplifyTrack(track, 49.5)).toEqual([0, 1, 2]);
    }
  });

  it('keeps the turning point of an out-and-back trip (first and last positions the same)', () => {
    const out = Array.from({ length: 11 }, (_, i) => [113.75, 23 + i * 0.001]);
    const back = out.slice(0, -1).reverse();
    const track = [...out, ...back].map(pt);
    expect(simplifyTrack(track, 10)).toEqual([0, 10, 20]);
    // Back not quite to the start: every position is on the same meridian, but the turn is 100 m from the arc's end
    expect(simplifyTrack(track.slice(0, -1), 10)).toEqual([0, 10, 19]);
  });

  it('simplifies across the antimeridian', () => {
    const track = [[179.99, 0], [180, 0.0001], [-179.99, 0]].map(pt); // the middle one is 11.1 m north of the arc
    expect(simplifyTrack(track, 20)).toEqual([0, 2]);
    expect(simplifyTrack(track, 5)).toEqual([0, 1, 2]);
  });

  it('never lets a dropped position lie farther than the tolerance from its kept neighbours’ arc (random walks)', () => {
    const next = random(7);
    let [lng, lat] = [113.75, 23.02];
    let heading = 0;
    const track: LngLat[] = [];
    for (let i = 0; i < 400; i++) {
      track.push([lng, lat]);
      heading += (next() - 0.5) * 90;
      [lng, lat] = destination([lng, lat], 5 + next() * 30, heading, { units: 'meters' }).geometry.coordinates as LngLat;
    }
    let previous: number[] | undefined;
    for (const tolerance of [100, 25, 5]) {
      const kept = simplifyTrack(track.map(pt), tolerance);
      expect(kept[0]).toBe(0);
      expect(kept.at(-1)).toBe(track.length - 1);
      for (let k = 1; k < kept.length; k++) {
        expect(kept[k]!).toBeGreaterThan(kept[k - 1]!);
        const a = track[kept[k - 1]!]!;
        const b = track[kept[k]!]!;
        for (let i = kept[k - 1]! + 1; i < kept[k]!; i++) {
          const { metres, slack } = sampledDistance(track[i]!, a, b);
          expect(metres).toBeLessThanOrEqual(tolerance + slack + 1e-6);
        }
      }
      // A smaller tolerance keeps everything a larger one kept, and more.
      if (previous) {
        expect(kept.length).toBeGreaterThan(previous.length);
        expect(previous.every((i) => kept.includes(i))).toBe(true);
      }
      previous = kept;
    }
    expect(previous!.length).toBeLessThan(track.length);
  });
});
