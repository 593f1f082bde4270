import { describe, expect, it } from 'vitest';
import { median, segmentLengths, speedStats, trackLength, type TrackPoint } from './track.ts';

/** 1° of great circle on Turf's sphere (R = 6 371 008.8 m): R·π/180. */
const ONE_DEGREE = 111_195.080_2;

const at = (ts: number, lng: number, lat: number): TrackPoint => ({ ts, lng, lat });

describe('segmentLengths and trackLength', () => {
  it('measures known great-circle distances in metres', () => {
    expect(segmentLengths([at(0, 0, 0), at(1, 0, 1)])[0]).toBeCloseTo(ONE_DEGREE, 1); // 1° of latitude
    expect(segmentLengths([at(0, 113.75, 23), at(1, 113.75, 24)])[0]).toBeCloseTo(ONE_DEGREE, 1); // anywhere on a meridian
    expect(segmentLengths([at(0, 0, 0), at(1, 1, 0)])[0]).toBeCloseTo(ONE_DEGREE, 1); // 1° of longitude on the equator
    // 1° of longitude at 60°N: 2R·asin(cos 60° · sin 0.5°), about half a degree of latitude
    expect(segmentLengths([at(0, 10, 60), at(1, 11, 60)])[0]).toBeCloseTo(55_597.01, 1);
    // across the antimeridian: 0.2°, not 359.8°
    expect(segmentLengths([at(0, 179.9, 0), at(1, -179.9, 0)])[0]).toBeCloseTo(0.2 * ONE_DEGREE, 1);
  });

  it('gives one length per segment, aligned with the points, ignoring altitude', () => {
    const track = [at(0, 0, 0), at(1, 0, 1), at(2, 0, 1), { ...at(3, 0, 3), alt: 5000 }];
    const lengths = segmentLengths(track);
    expect(lengths).toHaveLength(3);
    expect(lengths[0]).toBeCloseTo(ONE_DEGREE, 1);
    expect(lengths[1]).toBe(0);
    expect(lengths[2]).toBeCloseTo(2 * ONE_DEGREE, 1);
    expect(trackLength(track)).toBeCloseTo(3 * ONE_DEGREE, 1);
    expect(trackLength(track, lengths)).toBe(lengths[0]! + lengths[1]! + lengths[2]!);
  });

  it('is empty for fewer than two points', () => {
    expect(segmentLengths([])).toEqual([]);
    expect(segmentLengths([at(0, 113, 23)])).toEqual([]);
    expect(trackLength([])).toBe(0);
    expect(trackLength([at(0, 113, 23)])).toBe(0);
  });
});

describe('speedStats', () => {
  it('max and median over segments with a duration, mean over the whole time including stops', () => {
    // 0.01° of latitude = 1111.95 m per step
    const step = ONE_DEGREE / 100;
    const track = [
      at(0, 113.7, 23.0),
      at(100_000, 113.7, 23.01), // 100 s: 11.12 m/s
      at(200_000, 113.7, 23.01), // stopped: 0 m/s
      at(250_000, 113.7, 23.02), // 50 s: 22.24 m/s
      at(250_000, 113.7, 23.02), // same instant: no speed, left out
    ];
    const s = speedStats(track);
    expect(s.max).toBeCloseTo(step / 50, 3);
    expect(s.median).toBeCloseTo(step / 100, 3); // of [11.12, 0, 22.24]
    expect(s.mean).toBeCloseTo((2 * step) / 250, 3);
  });

  it('is null where nothing can be measured', () => {
    expect(speedStats([])).toEqual({ mean: null, max: null, median: null });
    expect(speedStats([at(0, 113, 23)])).toEqual({ mean: null, max: null, median: null });
    expect(speedStats([at(5, 113, 23), at(5, 113.1, 23)])).toEqual({ mean: null, max: null, median: null });
  });

  it('a stationary device has speed 0, not null', () => {
    expect(speedStats([at(0, 113, 23), at(60_000, 113, 23)])).toEqual({ mean: 0, max: 0, median: 0 });
  });
});

describe('median', () => {
  it('sorts numerically and averages the two middle values of an even count', () => {
    expect(median([10, 9, 100])).toBe(10); // a text sort would put "100" in the middle
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([-1])).toBe(-1);
    expect(median([])).toBeNull();
  });
});
