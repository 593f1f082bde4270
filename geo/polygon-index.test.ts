import type { MultiPolygon, Polygon, Position } from 'geojson';
import { booleanPointInPolygon } from '@turf/turf';
import { describe, expect, it } from 'vitest';
import { createRng } from '../simulators/random.ts';
import { indexContains, indexPolygon } from './polygon-index.ts';

/** A jagged ring around (cx, cy): radii vary per vertex, so edges slant every way. */
function jagged(random: () => number, cx: number, cy: number, r: number, n: number): Position[] {
  const ring: Position[] = [];
  for (let i = 0; i < n; i++) {
    const a = (2 * Math.PI * i) / n;
    const rr = r * (0.6 + 0.4 * random());
    ring.push([cx + rr * Math.cos(a), cy + rr * Math.sin(a)]);
  }
  ring.push(ring[0]!);
  return ring;
}

const square = (x: number, y: number, s: number): Position[] => [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]];

/** Points that probe every case of the test: vertices, edge midpoints, points on the vertices' latitudes and random ones. */
function probes(random: () => number, g: Polygon | MultiPolygon): Position[] {
  const rings = g.type === 'Polygon' ? g.coordinates : g.coordinates.flat();
  const all = rings.flat();
  const xs = all.map((p) => p[0]!);
  const ys = all.map((p) => p[1]!);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const out: Position[] = [];
  for (const ring of rings) {
    for (let i = 0; i + 1 < ring.length; i += 3) {
      const [a, b] = [ring[i]!, ring[i + 1]!];
      out.push(a, [(a[0]! + b[0]!) / 2, (a[1]! + b[1]!) / 2], [minX + random() * (maxX - minX), a[1]!], [a[0]!, minY + random() * (maxY - minY)]);
    }
  }
  for (let i = 0; i < 3000; i++) out.push([minX - 0.01 + random() * (maxX - minX + 0.02), minY - 0.01 + random() * (maxY - minY + 0.02)]);
  return out;
}

describe('indexContains', () => {
  const random = createRng(11).next;
  const cases: [string, Polygon | MultiPolygon][] = [
    ['a jagged 2000-vertex polygon', { type: 'Polygon', coordinates: [jagged(random, 113.75, 23.02, 0.1, 2000)] }],
    ['a polygon with holes', { type: 'Polygon', coordinates: [square(113.6, 22.9, 0.3), square(113.65, 22.95, 0.05).reverse(), square(113.8, 23.0, 0.05).reverse()] }],
    [
      'a multipolygon of 400 small squares on shared latitudes',
      { type: 'MultiPolygon', coordinates: Array.from({ length: 400 }, (_, i) => [square(113.5 + (i % 20) * 0.02, 22.8 + Math.floor(i / 20) * 0.02, 0.01)]) },
    ],
    ['a star (long edges over many bands)', { type: 'Polygon', coordinates: [Array.from({ length: 401 }, (_, i) => { const a = (2 * Math.PI * (i % 400)) / 400; const r = i % 2 ? 0.2 : 0.02; return [113.75 + r * Math.cos(a), 23 + r * Math.sin(a)]; })] }],
  ];
  it.each(cases)('gives exactly booleanPointInPolygon on %s (boundary inclusive)', (_name, geometry) => {
    const index = indexPolygon(geometry);
    expect(index.maxBandEdges).toBeLessThan(index.edges + 1);
    let inside = 0;
    let disagreements = 0;
    for (const p of probes(random, geometry)) {
      const want = booleanPointInPolygon(p, geometry);
      if (indexContains(index, p[0]!, p[1]!) !== want) disagreements++;
      if (want) inside++;
    }
    expect(disagreements).toBe(0);
    expect(inside).toBeGreaterThan(100); // the probes do reach the inside
  });

  it('examines a few edges per test on a large regular polygon, however many it has', () => {
    const ring = Array.from({ length: 10_001 }, (_, i) => { const a = (2 * Math.PI * (i % 10_000)) / 10_000; return [113.75 + 0.1 * Math.cos(a), 23 + 0.1 * Math.sin(a)]; });
    const index = indexPolygon({ type: 'Polygon', coordinates: [ring] });
    expect(index.edges).toBe(10_000);
    expect(index.maxBandEdges).toBeLessThan(50);
    expect(index.x1.length).toBeLessThanOrEqual(4 * index.edges);
  });
});
