import { describe, expect, it } from 'vitest';
import { filterArea } from './filter-area.ts';

const polygon = (ring: number[][]) => ({ type: 'Polygon' as const, coordinates: [ring] });

describe('filterArea: the area a $filter geometry literal selects', () => {
  it("QGIS's world extent (latitudes ±135) is everywhere, once clamped", () => {
    expect(filterArea(polygon([[-180, -135], [180, -135], [180, 135], [-180, 135], [-180, -135]]))).toBe('everywhere');
  });

  it('an axis-aligned rectangle is a bbox, whatever its size; its latitudes clamped', () => {
    expect(filterArea(polygon([[113.742, 23], [113.766, 23], [113.766, 23.053], [113.742, 23.053], [113.742, 23]]))).toEqual({ kind: 'bbox', bbox: [113.742, 23, 113.766, 23.053] });
    expect(filterArea(polygon([[0, -100], [170, -100], [170, 10], [0, 10], [0, -100]]))).toEqual({ kind: 'bbox', bbox: [0, -90, 170, 10] });
  });

  it('any other polygon is checked as the spatial API checks it', () => {
    expect(filterArea(polygon([[113.8, 22.8], [114, 22.8], [113.9, 23], [113.8, 22.8]]))).toMatchObject({ kind: 'polygon' });
    expect(filterArea(polygon([[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]))).toEqual({ invalid: expect.stringMatching(/intersects itself/) });
    expect(filterArea(polygon([[-190, 0], [10, 0], [10, 1], [-190, 1], [-190, 0]]))).toEqual({ invalid: 'longitudes are between -180 and 180' });
    expect(filterArea(polygon([[1, 1], [2, 1], [2, 1], [1, 1], [1, 1]]))).toMatchObject({ invalid: expect.any(String) });
  });

  it('points and lines are not areas: not implemented (501), not malformed', () => {
    expect(filterArea({ type: 'Point', coordinates: [113, 23] })).toEqual({ unsupported: expect.stringMatching(/not a Point/) });
    expect(filterArea({ type: 'LineString', coordinates: [[113, 23], [114, 23]] })).toEqual({ unsupported: expect.stringMatching(/not a LineString/) });
  });
});
