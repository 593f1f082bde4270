import { destination, distance } from '@turf/turf';
import { describe, expect, it } from 'vitest';
import type { TrackPoint } from './track.ts';
import { detectStops } from './track-stops.ts';

const MIN = 60_000;
type LngLat = [number, number];
const move = (from: LngLat, metres: number, heading: number): LngLat =>
  destination(from, metres, heading, { units: 'meters' }).geometry.coordinates as LngLat;

/** A track built by driving north and dwelling, one position every `every` ms. */
function trip(start: LngLat, t0 = Date.UTC(2026, 10, 26, 8)) {
  const points: TrackPoint[] = [{ ts: t0, lng: start[0], lat: start[1] }];
  let at = start;
  let ts = t0;
  const api = {
    points,
    drive(ms: number, speed = 10, every = 10_000) {
      for (let t = every; t <= ms; t += every) {
        at = move(at, (speed * every) / 1000, 0);
        ts += every;
        points.push({ ts, lng: at[0], lat: at[1] });
      }
      return api;
    },
    dwell(ms: number, jitter = 10, every = 30_000) {
      for (let t = every, k = 1; t <= ms; t += every, k++) {
        const [lng, lat] = move(at, (jitter * (k % 10)) / 10, (k * 137) % 360);
        ts += every;
        points.push({ ts, lng, lat });
      }
      return api;
    },
    spike(metres: number, every = 30_000) {
      const [lng, lat] = move(at, metres, 90);
      ts += every;
      points.push({ ts, lng, lat });
      return api;
    },
    get at() {
      return at;
    },
  };
  return api;
}

const options = { minDurationMs: 5 * MIN, radiusMetres: 30 };

describe('detectStops', () => {
  it('finds a 10-minute dwell in a 30 m circle and not a 4-minute one', () => {
    const t = trip([113.75, 23.0]).drive(2 * MIN);
    const stopAt = t.at;
    const arrived = t.points.at(-1)!.ts;
    t.dwell(10 * MIN).drive(2 * MIN);
    const shortStopAt = t.at;
    t.dwell(4 * MIN).drive(2 * MIN);

    const stops = detectStops(t.points, options);
    expect(stops).toHaveLength(1);
    const [stop] = stops;
    expect(stop!.from).toBe(arrived);
    expect(stop!.to).toBe(arrived + 10 * MIN);
    expect(stop!.points).toBe(21); // arrival + 20 dwell positions
    expect(t.points[stop!.first]!.ts).toBe(stop!.from);
    expect(t.points[stop!.last]!.ts).toBe(stop!.to);
    expect(distance([stop!.lng, stop!.lat], stopAt, { units: 'meters' })).toBeLessThan(5);

    // A shorter minimum finds the short stop too, where it was
    const both = detectStops(t.points, { ...options, minDurationMs: 3 * MIN });
    expect(both).toHaveLength(2);
    expect(distance([both[1]!.lng, both[1]!.lat], shortStopAt, { units: 'meters' })).toBeLessThan(5);
  });

  it('a dwell wider than the radius is not a stop', () => {
    const t = trip([113.75, 23.0]).drive(MIN).dwell(10 * MIN, 80).drive(MIN);
    expect(detectStops(t.points, options)).toEqual([]);
    expect(detectStops(t.points, { ...options, radiusMetres: 100 })).toHaveLength(1);
  });

  it('driving slowly in traffic is not a stop', () => {
    const t = trip([113.75, 23.0]).drive(20 * MIN, 0.5, 20_000); // 10 m per position, 600 m in all
    expect(detectStops(t.points, options)).toEqual([]);
  });

  it('a single GPS spike does not cut a dwell in two; two positions away in a row do', () => {
    const spiked = trip([113.75, 23.0]).drive(MIN);
    const stopAt = spiked.at;
    spiked.dwell(5 * MIN).spike(300).dwell(5 * MIN).drive(MIN);
    const one = detectStops(spiked.points, { ...options, minDurationMs: 8 * MIN });
    expect(one).toHaveLength(1);
    expect(one[0]!.to - one[0]!.from).toBe(10.5 * MIN);
    expect(one[0]!.points).toBe(22); // arrival, 10 + 10 dwell positions, and the spike between them
    // the spike is within the stop's time span but left out of its centroid (it would pull it 14 m east)
    expect(distance([one[0]!.lng, one[0]!.lat], stopAt, { units: 'meters' })).toBeLessThan(5);

    const left = trip([113.75, 23.0]).drive(MIN).dwell(5 * MIN).spike(300).spike(300).dwell(5 * MIN).drive(MIN);
    expect(detectStops(left.points, { ...options, minDurationMs: 8 * MIN })).toEqual([]);
    expect(detectStops(left.points, { ...options, minDurationMs: 4 * MIN })).toHaveLength(2);
  });

  it('counts a dwell still going on at the end of the track, and a stop made of two sparse positions', () => {
    const t = trip([113.75, 23.0]).drive(2 * MIN).dwell(6 * MIN);
    const stops = detectStops(t.points, options);
    expect(stops).toHaveLength(1);
    expect(stops[0]!.last).toBe(t.points.length - 1);

    const sparse = [
      { ts: 0, lng: 113.75, lat: 23 },
      { ts: 10 * MIN, lng: 113.7501, lat: 23 },
    ];
    expect(detectStops(sparse, options)).toMatchObject([{ first: 0, last: 1, from: 0, to: 10 * MIN, points: 2 }]);
    expect(detectStops(sparse, { ...options, minDurationMs: 11 * MIN })).toEqual([]);
  });

  it('nothing from an empty track or a single position', () => {
    expect(detectStops([], options)).toEqual([]);
    expect(detectStops([{ ts: 0, lng: 113.75, lat: 23 }], options)).toEqual([]);
  });

  it('a dwell on the antimeridian has its centroid there, not at longitude 0', () => {
    const points = Array.from({ length: 12 }, (_, i) => ({ ts: i * MIN, lng: i % 2 === 0 ? 179.9999 : -179.9999, lat: 10 }));
    const stops = detectStops(points, options);
    expect(stops).toHaveLength(1);
    expect(Math.abs(stops[0]!.lng)).toBeGreaterThan(179.99);
    expect(stops[0]!.points).toBe(12);
  });
});
