import { describe, expect, it } from 'vitest';
import { BUS_ROUTES, DONGGUAN_BBOX, DRONE_CORRIDORS, RIVERS, allDefinedPoints, inDongguan } from './dongguan.ts';
import { Polyline, bearing, distance, offset } from './geometry.ts';

describe('Dongguan places', () => {
  it('every defined coordinate lies within Dongguan', () => {
    const outside = allDefinedPoints().filter((p) => !inDongguan(p));
    expect(outside).toEqual([]);
    expect(DONGGUAN_BBOX.minLng).toBe(113.52);
  });

  it('routes, rivers and corridors have sensible lengths; bus routes start and end at stops', () => {
    for (const r of BUS_ROUTES) {
      const len = new Polyline(r.points).length;
      expect(len, r.id).toBeGreaterThan(8_000);
      expect(len, r.id).toBeLessThan(45_000);
      expect(r.points[0]!.stop, r.id).toBeDefined();
      expect(r.points[r.points.length - 1]!.stop, r.id).toBeDefined();
    }
    for (const r of RIVERS) expect(new Polyline(r.points).length, r.id).toBeGreaterThan(10_000);
    for (const c of DRONE_CORRIDORS) {
      const len = new Polyline(c.points).length;
      expect(len, c.id).toBeGreaterThan(1_500);
      expect(len, c.id).toBeLessThan(12_000);
    }
  });
});

describe('geometry', () => {
  const a = { lat: 23.0, lng: 113.7 };
  const b = { lat: 23.0, lng: 113.8 };

  it('measures distances and bearings', () => {
    expect(distance(a, b)).toBeCloseTo(10_237, -1); // 0.1° of longitude at 23° N
    expect(bearing(a, b)).toBeCloseTo(90, 0);
    expect(bearing(b, a)).toBeCloseTo(270, 0);
    expect(distance(a, offset(a, 1000, 45))).toBeCloseTo(1000, 0);
  });

  it('walks along a polyline by distance, with the heading of the segment', () => {
    const line = new Polyline([a, b, { lat: 23.1, lng: 113.8 }]);
    const mid = line.at(line.cumulative[1]! / 2);
    expect(mid.lat).toBeCloseTo(23.0, 6);
    expect(mid.lng).toBeCloseTo(113.75, 6);
    expect(mid.heading).toBeCloseTo(90, 0);
    const up = line.at(line.cumulative[1]! + 100);
    expect(up.heading).toBeCloseTo(0, 0);
    expect(line.at(-5)).toMatchObject(a);
    expect(line.at(line.length + 5)).toMatchObject({ lat: 23.1, lng: 113.8 });
    expect(line.reversed().at(0)).toMatchObject({ lat: 23.1, lng: 113.8 });
  });
});
