import { latLngToCell, cellToParent } from 'h3-js';
import { describe, expect, it } from 'vitest';
import { AREA_LIMITS, AreaError, areaContains, circlePolygon, parseBbox, parseCells, parseCircle, parsePolygon } from './area.ts';
import { distance } from '@turf/turf';

const square = [[113.7, 22.98], [113.8, 22.98], [113.8, 23.05], [113.7, 23.05], [113.7, 22.98]];

const refusal = (input: unknown): string => {
  try {
    parsePolygon(input);
  } catch (err) {
    expect(err).toBeInstanceOf(AreaError);
    return (err as Error).message;
  }
  throw new Error('accepted');
};

describe('parsePolygon', () => {
  it('accepts polygons, multipolygons and a Feature holding one; drops repeated vertices', () => {
    expect(parsePolygon({ type: 'Polygon', coordinates: [square] }).type).toBe('Polygon');
    const withRepeat = [square[0], square[1], square[1], ...square.slice(2)];
    expect(parsePolygon({ type: 'Feature', properties: {}, geometry: { type: 'Polygon', coordinates: [withRepeat] } })).toEqual({ type: 'Polygon', coordinates: [square] });
    const other = square.map(([x, y]) => [x! + 0.2, y!]);
    expect(parsePolygon({ type: 'MultiPolygon', coordinates: [[square], [other]] }).type).toBe('MultiPolygon');
  });

  it.each([
    ['not a polygon', { type: 'Point', coordinates: [113, 23] }, /Polygon or MultiPolygon/],
    ['unclosed', { type: 'Polygon', coordinates: [square.slice(0, 4)] }, /ring 0 \(outer\) is not closed/],
    ['too few positions', { type: 'Polygon', coordinates: [[[113, 23], [113.1, 23], [113, 23]]] }, /at least 4/],
    ['a bow tie', { type: 'Polygon', coordinates: [[[113, 23], [113.1, 23.1], [113.1, 23], [113, 23.1], [113, 23]]] }, /intersects itself near \[113.05, 23.05/],
    ['a bad latitude', { type: 'Polygon', coordinates: [[[113, 23], [113.1, 95], [113.1, 23], [113, 23]]] }, /latitude 95 is outside/],
    ['a string coordinate', { type: 'Polygon', coordinates: [[[113, 23], ['113.1', 23], [113.1, 23.1], [113, 23]]] }, /finite numbers/],
    ['a hole outside', { type: 'Polygon', coordinates: [square, [[114, 23], [114.01, 23], [114.01, 23.01], [114, 23]]] }, /hole 1 is not inside/],
    ['a hole crossing the outer ring', { type: 'Polygon', coordinates: [square, [[113.75, 23], [113.9, 23], [113.9, 23.01], [113.75, 23]]] }, /intersects itself/],
    ['overlapping members', { type: 'MultiPolygon', coordinates: [[square], [square.map(([x, y]) => [x! + 0.05, y!])]] }, /intersects itself/],
    ['a country', { type: 'Polygon', coordinates: [[[100, 20], [120, 20], [120, 40], [100, 40], [100, 20]]] }, /km²; at most/],
  ])('refuses %s with a precise reason', (_name, input, reason) => {
    expect(refusal(input)).toMatch(reason);
  });

  it(`refuses more than ${AREA_LIMITS.maxVertices} vertices`, () => {
    const ring = circlePolygon([113.75, 23], 5000).coordinates[0]!;
    const many = Array.from({ length: AREA_LIMITS.maxVertices + 1 }, (_, i) => {
      const a = (2 * Math.PI * i) / (AREA_LIMITS.maxVertices + 1);
      return [113.75 + 0.05 * Math.cos(a), 23 + 0.05 * Math.sin(a)];
    });
    expect(ring.length).toBeLessThan(AREA_LIMITS.maxVertices);
    expect(refusal({ type: 'Polygon', coordinates: [[...many, many[0]]] })).toMatch(/more than 10000 vertices/);
  });
});

describe('bbox, circle and cells', () => {
  it('checks a bbox', () => {
    expect(parseBbox([113.5, 22.6, 114.3, 23.2]).bbox).toEqual([113.5, 22.6, 114.3, 23.2]);
    expect(() => parseBbox([114.3, 22.6, 113.5, 23.2])).toThrow(/minLng 114.3 must be less than maxLng 113.5/);
    expect(() => parseBbox([113.5, 22.6, 114.3])).toThrow(/four numbers/);
    expect(() => parseBbox([113.5, 22.6, 190, 23])).toThrow(/longitude 190/);
  });

  it('checks a circle', () => {
    expect(() => parseCircle(23, 113.7, 0)).toThrow(/above 0/);
    expect(() => parseCircle(23, 113.7, 1e9)).toThrow(/at most 200000/);
    expect(() => parseCircle(91, 113.7, 10)).toThrow(/latitude 91/);
  });

  it('checks cells and removes duplicates', () => {
    const c = latLngToCell(23, 113.7, 9);
    expect(parseCells([c, c.toUpperCase()]).cells).toEqual([c]);
    expect(() => parseCells(['8a2a1072b59ffff0'])).toThrow(/not a valid H3 cell/);
    expect(() => parseCells([])).toThrow(/at least one/);
  });
});

describe('areaContains', () => {
  it('counts the boundary as inside, for polygons and boxes', () => {
    const polygon = parsePolygon({ type: 'Polygon', coordinates: [square] });
    expect(areaContains({ kind: 'polygon', geometry: polygon }, 113.7, 23.0)).toBe(true);
    expect(areaContains({ kind: 'polygon', geometry: polygon }, 113.6999999, 23.0)).toBe(false);
    expect(areaContains({ kind: 'bbox', bbox: [113.7, 22.98, 113.8, 23.05] }, 113.8, 23.05)).toBe(true);
  });

  it('uses the great-circle distance for circles, and ancestry for cells', () => {
    const circle = parseCircle(23, 113.7, 1000);
    const edge = circlePolygon(circle.center, 1000).coordinates[0]![5]!;
    expect(Math.abs(distance(circle.center, edge, { units: 'meters' }) - 1000)).toBeLessThan(0.01);
    expect(areaContains(circle, 113.7, 23.0089)).toBe(true);
    expect(areaContains(circle, 113.7, 23.0091)).toBe(false);
    const parent = cellToParent(latLngToCell(23, 113.7, 15), 8);
    expect(areaContains({ kind: 'cells', cells: [parent] }, 113.7, 23)).toBe(true);
    expect(areaContains({ kind: 'cells', cells: [parent] }, 113.9, 23)).toBe(false);
  });
});
