import type { MultiPolygon, Polygon } from 'geojson';
import { booleanPointInPolygon, distance } from '@turf/turf';
import { cellToBoundary, cellToChildren, getHexagonEdgeLengthAvg, latLngToCell } from 'h3-js';
import { describe, expect, it } from 'vitest';
import { createRng } from '../simulators/random.ts';
import { descendantRange, storageCell } from './cell.ts';
import { areaContains, type Area } from './area.ts';
import { boundaryCells, coverArea, mergeRanges, nextValidCell, type CellRange } from './cover.ts';

const square: Polygon = { type: 'Polygon', coordinates: [[[113.70, 22.98], [113.80, 22.98], [113.80, 23.05], [113.70, 23.05], [113.70, 22.98]]] };
// A concave "C" with a hole, a thin sliver and a separate island: the awkward cases.
const concaveWithHole: Polygon = {
  type: 'Polygon',
  coordinates: [
    [[113.74, 23.00], [113.78, 23.00], [113.78, 23.005], [113.745, 23.005], [113.745, 23.02], [113.78, 23.02], [113.78, 23.025], [113.74, 23.025], [113.74, 23.00]],
    [[113.741, 23.01], [113.743, 23.01], [113.743, 23.012], [113.741, 23.012], [113.741, 23.01]],
  ],
};
const islands: MultiPolygon = {
  type: 'MultiPolygon',
  coordinates: [
    [[[113.60, 22.80], [113.6003, 22.80], [113.6003, 22.83], [113.60, 22.83], [113.60, 22.80]]], // ~30 m wide sliver
    [[[113.90, 22.90], [113.92, 22.905], [113.91, 22.93], [113.90, 22.90]]],
  ],
};

const inRanges = (ranges: CellRange[], v: bigint) => ranges.some(([lo, hi]) => v >= lo && v <= hi);

/** Points clustered on both sides of every edge (the hard part), plus uniform ones in the bbox. */
function probePoints(area: Polygon | MultiPolygon, n: number, seed: number): [number, number][] {
  const rng = createRng(seed);
  const rings = area.type === 'Polygon' ? area.coordinates : area.coordinates.flat();
  const all = rings.flat();
  const [minX, maxX] = [Math.min(...all.map((p) => p[0]!)), Math.max(...all.map((p) => p[0]!))];
  const [minY, maxY] = [Math.min(...all.map((p) => p[1]!)), Math.max(...all.map((p) => p[1]!))];
  const points: [number, number][] = [];
  for (let i = 0; i < n; i++) {
    if (i % 3 === 0) {
      points.push([minX - 0.002 + rng.next() * (maxX - minX + 0.004), minY - 0.002 + rng.next() * (maxY - minY + 0.004)]);
    } else {
      const ring = rings[rng.int(rings.length)]!;
      const j = 1 + rng.int(ring.length - 1);
      const [a, b] = [ring[j - 1]!, ring[j]!];
      const t = rng.next();
      const off = (rng.next() - 0.5) * 0.0004 * rng.next() ** 3; // within ~20 m, mostly much closer
      points.push([a[0]! + (b[0]! - a[0]!) * t + off, a[1]! + (b[1]! - a[1]!) * t - off]);
    }
  }
  return points;
}

describe('coverArea', () => {
  it.each([
    ['a square', square, undefined],
    ['a concave polygon with a hole', concaveWithHole, undefined],
    ['islands, one thinner than a cell', islands, undefined],
    ['a square at a coarse edge resolution', square, 8],
    ['a concave polygon at a fine edge resolution', concaveWithHole, 12],
  ] as const)('finds every point of %s, and "inside" holds only points inside', (_name, area, edgeResolution) => {
    const cover = coverArea({ kind: 'polygon', geometry: area }, edgeResolution === undefined ? {} : { edgeResolution });
    let truths = 0;
    for (const [lng, lat] of probePoints(area, 20_000, 7)) {
      const v = storageCell(lat, lng);
      const truth = booleanPointInPolygon([lng, lat], area);
      if (truth) {
        truths++;
        expect(inRanges(cover.inside, v) || inRanges(cover.edge, v), `missed ${lng},${lat}`).toBe(true);
      }
      if (inRanges(cover.inside, v)) expect(truth, `"inside" but outside: ${lng},${lat}`).toBe(true);
    }
    expect(truths).toBeGreaterThan(1000);
    for (const ranges of [cover.inside, cover.edge]) {
      for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0] > ranges[i - 1]![1] + 1n).toBe(true); // merged, sorted
    }
  });

  it('is coarse inside and fine along the boundary', () => {
    const cover = coverArea({ kind: 'polygon', geometry: square }, { edgeResolution: 10 });
    const resolutions = new Set(cover.insideCells.map((c) => Number.parseInt(c[1]!, 16)));
    expect(Math.min(...resolutions)).toBeLessThan(9);
    expect(cover.edge.length).toBeLessThan(cover.edgeCells.length); // adjacent cells merged into ranges
  });

  it('merges touching and overlapping ranges, and ranges with only unused index values between them', () => {
    expect(mergeRanges([[10n, 20n], [1n, 5n], [21n, 30n], [25n, 26n], [40n, 41n]])).toEqual([[1n, 5n], [10n, 30n], [40n, 41n]]);
    // Sibling cells: the values between one sibling's last descendant and the next one's first all
    // contain the unused digit 7, so no reading can lie there.
    const parent = latLngToCell(23.0, 113.7, 12);
    const [a, b, c] = cellToChildren(parent, 13).map(descendantRange);
    expect(mergeRanges([a!, c!])).toEqual([a!, c!]); // a gap holding sibling b's cells stays a gap
    expect(mergeRanges([a!, b!, c!])).toEqual([[a![0], c![1]]]);
    expect(nextValidCell(a![1])).toBe(b![0]);
  });

  it('includes every cell the boundary crosses, even when it only clips a corner', () => {
    const band = boundaryCells(square, 10);
    const ring = square.coordinates[0]!;
    for (let i = 1; i < ring.length; i++) {
      for (let t = 0; t <= 1; t += 0.0005) {
        const [a, b] = [ring[i - 1]!, ring[i]!];
        expect(band.has(latLngToCell(a[1]! + (b[1]! - a[1]!) * t, a[0]! + (b[0]! - a[0]!) * t, 10))).toBe(true);
      }
    }
  });

  it('relies on res-15 descendants sticking out of their ancestor by well under one cell edge', () => {
    // The boundary band is widened by one ring for this; measured ~0.15 × edge at every resolution.
    const parent = latLngToCell(23.02, 113.75, 10);
    const hex = cellToBoundary(parent, true); // closed loop
    const polygon: Polygon = { type: 'Polygon', coordinates: [hex] };
    let worst = 0;
    for (const child of cellToChildren(parent, 15)) {
      for (const v of cellToBoundary(child, true)) {
        if (booleanPointInPolygon(v, polygon)) continue;
        const d = Math.min(...hex.slice(1).map((p, i) => segmentDistance(v, hex[i]!, p)));
        worst = Math.max(worst, d);
      }
    }
    const edge = getHexagonEdgeLengthAvg(10, 'm');
    expect(worst / edge).toBeGreaterThan(0.05);
    expect(worst / edge).toBeLessThan(0.25);
  });
});

describe('coverArea of circles, boxes and cells', () => {
  const probe = (area: Area, cover: ReturnType<typeof coverArea>, points: [number, number][]) => {
    let truths = 0;
    for (const [lng, lat] of points) {
      const v = storageCell(lat, lng);
      const truth = areaContains(area, lng, lat);
      if (truth) {
        truths++;
        expect(inRanges(cover.inside, v) || inRanges(cover.edge, v), `missed ${lng},${lat}`).toBe(true);
      }
      if (inRanges(cover.inside, v)) expect(truth, `"inside" but outside: ${lng},${lat}`).toBe(true);
    }
    return truths;
  };

  it.each([
    ['a 150 m circle', 150],
    ['a 3 km circle', 3000],
  ])('%s: every point within the radius is found, "inside" only holds points within it', (_name, radiusM) => {
    const area: Area = { kind: 'circle', center: [113.75, 23.02], radiusM };
    const cover = coverArea(area);
    const rng = createRng(11);
    const points: [number, number][] = [];
    const deg = radiusM / 111_000;
    for (let i = 0; i < 20_000; i++) {
      // Mostly within 2 % of the radius from the circle, where mistakes would be.
      const bearing = rng.next() * 2 * Math.PI;
      const r = (i % 4 === 0 ? rng.next() * 1.2 : 0.98 + rng.next() * 0.04) * deg;
      points.push([113.75 + (r * Math.sin(bearing)) / Math.cos((23.02 * Math.PI) / 180), 23.02 + r * Math.cos(bearing)]);
    }
    expect(probe(area, cover, points)).toBeGreaterThan(5000);
  });

  it('a bbox: exact on its straight edges', () => {
    const area: Area = { kind: 'bbox', bbox: [113.70, 22.98, 113.80, 23.05] };
    const cover = coverArea(area);
    const rng = createRng(3);
    const points: [number, number][] = [];
    for (let i = 0; i < 10_000; i++) {
      const onX = rng.next() < 0.5;
      const edge = rng.next() < 0.5;
      const t = rng.next();
      const jitter = (rng.next() - 0.5) * 1e-5;
      points.push(onX ? [(edge ? 113.70 : 113.80) + jitter, 22.98 + t * 0.07] : [113.70 + t * 0.1, (edge ? 22.98 : 23.05) + jitter]);
    }
    points.push([113.70, 22.98], [113.80, 23.05]); // corners are inside
    expect(probe(area, cover, points)).toBeGreaterThan(4000);
  });

  it('a list of cells is its own cover, exactly, whatever their resolutions', () => {
    const a = latLngToCell(23.02, 113.75, 9);
    const b = latLngToCell(22.9, 113.8, 12);
    const cover = coverArea({ kind: 'cells', cells: [a, b] });
    expect(cover.edge).toEqual([]);
    expect(cover.inside).toEqual(mergeRanges([descendantRange(a), descendantRange(b)]));
  });
});

/** Distance from p to segment ab in metres (local flat approximation). */
function segmentDistance(p: number[], a: number[], b: number[]): number {
  const k = Math.cos((p[1]! * Math.PI) / 180);
  const [px, py, ax, ay, bx, by] = [p[0]! * k, p[1]!, a[0]! * k, a[1]!, b[0]! * k, b[1]!];
  const t = Math.max(0, Math.min(1, ((px - ax) * (bx - ax) + (py - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2)));
  return distance([(ax + t * (bx - ax)) / k, ay + t * (by - ay)], [p[0]!, p[1]!], { units: 'meters' });
}
