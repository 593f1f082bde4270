import type { MultiPolygon, Polygon, Position } from 'geojson';
import { kinks } from '@turf/turf';
import { describe, expect, it } from 'vitest';
import { createRng } from '../simulators/random.ts';
import { findKink } from './kinks.ts';

describe('findKink', () => {
  it('finds a crossing exactly when Turf kinks does (random rings, some crossing, some touching)', () => {
    const random = createRng(5).next;
    let crossing = 0;
    for (let t = 0; t < 300; t++) {
      const n = 4 + Math.floor(random() * 12);
      const ring: Position[] = [];
      // Coordinates on a coarse grid: shared vertices, touching and collinear segments happen.
      for (let i = 0; i < n; i++) ring.push([113 + Math.floor(random() * 6) / 100, 23 + Math.floor(random() * 6) / 100]);
      ring.push(ring[0]!);
      const deduped = ring.filter((p, i) => i === 0 || p[0] !== ring[i - 1]![0] || p[1] !== ring[i - 1]![1]);
      if (deduped.length < 4) continue;
      const other: Position[] = [[113.02, 23.02], [113.035, 23.02], [113.035, 23.035], [113.02, 23.02]];
      const g: Polygon | MultiPolygon = t % 3 === 0 ? { type: 'MultiPolygon', coordinates: [[deduped], [other]] } : { type: 'Polygon', coordinates: [deduped] };
      const turf = kinks(g).features.length > 0;
      expect(findKink(g) !== undefined, JSON.stringify(g)).toBe(turf);
      if (turf) crossing++;
    }
    expect(crossing).toBeGreaterThan(50);
    expect(crossing).toBeLessThan(300);
  });

  it('returns where a bow tie crosses', () => {
    expect(findKink({ type: 'Polygon', coordinates: [[[113, 23], [113.1, 23.1], [113.1, 23], [113, 23.1], [113, 23]]] })).toEqual([113.05, 23.05]);
  });

  it('accepts a simple 10 000-vertex ring', () => {
    const ring = Array.from({ length: 10_001 }, (_, i) => { const a = (2 * Math.PI * (i % 10_000)) / 10_000; return [113.75 + 0.1 * Math.cos(a), 23 + 0.1 * Math.sin(a)]; });
    expect(findKink({ type: 'Polygon', coordinates: [ring] })).toBeUndefined();
    ring[5_000] = [113.9, 23.05]; // a spike across its neighbours
    expect(findKink({ type: 'Polygon', coordinates: [ring] })).toBeDefined();
  });
});
