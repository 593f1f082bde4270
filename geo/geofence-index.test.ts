import type { MultiPolygon, Polygon, Position } from 'geojson';
import { booleanPointInPolygon, circle } from '@turf/turf';
import { describe, expect, it } from 'vitest';
import { storageCell } from './cell.ts';
import { GeofenceIndex, type IndexedFence } from './geofence-index.ts';

/** A deterministic generator (mulberry32), so a failure can be replayed. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// A concave "L" near Songshan Lake, a square with a hole, a two-part multipolygon, and a circle
// overlapping the L: overlapping fences, holes and parts must all be answered per fence.
const lShape: Polygon = {
  type: 'Polygon',
  coordinates: [[[113.88, 22.92], [113.9, 22.92], [113.9, 22.93], [113.89, 22.93], [113.89, 22.95], [113.88, 22.95], [113.88, 22.92]]],
};
const withHole: Polygon = {
  type: 'Polygon',
  coordinates: [
    [[113.7, 23.0], [113.72, 23.0], [113.72, 23.02], [113.7, 23.02], [113.7, 23.0]],
    [[113.705, 23.005], [113.715, 23.005], [113.715, 23.015], [113.705, 23.015], [113.705, 23.005]],
  ],
};
const twoParts: MultiPolygon = {
  type: 'MultiPolygon',
  coordinates: [
    [[[113.6, 23.05], [113.61, 23.05], [113.61, 23.06], [113.6, 23.05]]],
    [[[113.62, 23.05], [113.63, 23.05], [113.625, 23.06], [113.62, 23.05]]],
  ],
};
const disc = circle([113.892, 22.935], 800, { steps: 48, units: 'meters' }).geometry;

const FENCES: IndexedFence[] = [
  { id: 1, geometry: lShape },
  { id: 2, geometry: withHole },
  { id: 3, geometry: twoParts },
  { id: 4, geometry: disc },
];

const truth = (lng: number, lat: number) => FENCES.filter((f) => booleanPointInPolygon([lng, lat], f.geometry)).map((f) => f.id);
const ids = (index: GeofenceIndex<IndexedFence>, lng: number, lat: number) =>
  index
    .containing(lng, lat)
    .map((f) => f.id)
    .sort((a, b) => a - b);

function ringsOf(g: Polygon | MultiPolygon): Position[][] {
  return g.type === 'Polygon' ? g.coordinates : g.coordinates.flat();
}

describe('GeofenceIndex', () => {
  const index = new GeofenceIndex(FENCES);

  it('classifies points a centimetre either side of every boundary exactly like booleanPointInPolygon', () => {
    let checked = 0;
    let inside = 0;
    for (const fence of FENCES) {
      for (const ring of ringsOf(fence.geometry)) {
        for (let i = 1; i < ring.length; i++) {
          const [x1, y1] = ring[i - 1]! as [number, number];
          const [x2, y2] = ring[i]! as [number, number];
          for (const t of [0.01, 0.37, 0.5, 0.93]) {
            const x = x1 + (x2 - x1) * t;
            const y = y1 + (y2 - y1) * t;
            const len = Math.hypot(x2 - x1, y2 - y1);
            const nx = -(y2 - y1) / len;
            const ny = (x2 - x1) / len;
            for (const d of [1e-7, -1e-7, 2e-6, -2e-6]) {
              const lng = x + nx * d;
              const lat = y + ny * d;
              const expected = truth(lng, lat);
              expect(ids(index, lng, lat), `[${lng}, ${lat}] near fence ${fence.id}`).toEqual(expected);
              if (expected.includes(fence.id)) inside++;
              checked++;
            }
          }
        }
      }
    }
    expect(checked).toBeGreaterThan(500);
    // Both sides were exercised: about half the probes are inside their fence.
    expect(inside).toBeGreaterThan(checked / 4);
    expect(inside).toBeLessThan((checked * 3) / 4);
  });

  it('counts a point exactly on the boundary or on a vertex as inside, as Turf does', () => {
    expect(ids(index, 113.88, 22.92)).toEqual(truth(113.88, 22.92));
    expect(ids(index, 113.88, 22.92)).toContain(1);
    expect(ids(index, 113.885, 22.92)).toContain(1); // on an edge
    expect(ids(index, 113.71, 23.005)).toEqual(truth(113.71, 23.005)); // on the hole's edge: inside the fence
    expect(ids(index, 113.71, 23.01)).toEqual([]); // in the hole
  });

  it('agrees with booleanPointInPolygon on random points around all fences', () => {
    const random = rng(7);
    let hits = 0;
    for (let i = 0; i < 4000; i++) {
      const lng = 113.59 + random() * 0.32;
      const lat = 22.91 + random() * 0.16;
      const expected = truth(lng, lat);
      expect(ids(index, lng, lat), `[${lng}, ${lat}]`).toEqual(expected);
      if (expected.length > 0) hits++;
    }
    expect(hits).toBeGreaterThan(50);
  });

  it('answers deep-interior points from the cover alone and far-away points with no candidates', () => {
    // The centre of the square's solid part, far from any edge: an interior range, no exact test.
    const cell = storageCell(23.001, 113.719);
    expect(index.candidates(storageCell(23.0185, 113.7015)).map((h) => [h.fence.id, h.edge])).toEqual([[2, false]]);
    expect(index.candidates(cell).map((h) => h.fence.id)).toContain(2);
    expect(index.candidates(storageCell(39.9, 116.4))).toEqual([]); // Beijing
    expect(index.containing(116.4, 39.9)).toEqual([]);
  });

  it('returns both fences where two overlap', () => {
    expect(ids(index, 113.892, 22.929)).toEqual([1, 4]);
    expect(ids(index, 113.895, 22.94)).toEqual([4]);
  });

  it('is empty without fences', () => {
    const empty = new GeofenceIndex([]);
    expect(empty.segments).toBe(0);
    expect(empty.containing(113.7, 23.0)).toEqual([]);
  });
});
