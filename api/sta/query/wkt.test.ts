import { describe, expect, it } from 'vitest';
import { parseWkt } from './wkt.ts';

const parse = (wkt: string) => parseWkt(wkt, { option: '$filter', base: 0, maxVertices: 100, where: '' });

describe('WKT to GeoJSON', () => {
  it.each([
    ['POINT (30 10)', { type: 'Point', coordinates: [30, 10] }],
    ['point(30 10)', { type: 'Point', coordinates: [30, 10] }],
    ['POINT Z (1 2 3)', { type: 'Point', coordinates: [1, 2, 3] }],
    ['POINT(1 2 3)', { type: 'Point', coordinates: [1, 2, 3] }],
    ['POINT(+1.5 -.5)', { type: 'Point', coordinates: [1.5, -0.5] }],
    ['POINT(1e2 2E-1)', { type: 'Point', coordinates: [100, 0.2] }],
    ['SRID=4326;POINT(113.75 23.02)', { type: 'Point', coordinates: [113.75, 23.02] }],
    ['  POINT  (  1   2  )  ', { type: 'Point', coordinates: [1, 2] }],
    ['LINESTRING (30 10, 10 30, 40 40)', { type: 'LineString', coordinates: [[30, 10], [10, 30], [40, 40]] }],
    ['LineString(30 10,10 30)', { type: 'LineString', coordinates: [[30, 10], [10, 30]] }],
    ['Polygon ((-180 -135, 180 -135, 180 135, -180 135, -180 -135))', { type: 'Polygon', coordinates: [[[-180, -135], [180, -135], [180, 135], [-180, 135], [-180, -135]]] }],
    [
      'POLYGON ((35 10, 45 45, 15 40, 10 20, 35 10), (20 30, 35 35, 30 20, 20 30))',
      { type: 'Polygon', coordinates: [[[35, 10], [45, 45], [15, 40], [10, 20], [35, 10]], [[20, 30], [35, 35], [30, 20], [20, 30]]] },
    ],
    ['MULTIPOINT ((10 40), (40 30))', { type: 'MultiPoint', coordinates: [[10, 40], [40, 30]] }],
    ['MULTIPOINT (10 40, 40 30)', { type: 'MultiPoint', coordinates: [[10, 40], [40, 30]] }],
    ['MULTILINESTRING ((10 10, 20 20), (40 40, 30 30, 40 20))', { type: 'MultiLineString', coordinates: [[[10, 10], [20, 20]], [[40, 40], [30, 30], [40, 20]]] }],
    [
      'MULTIPOLYGON (((40 40, 20 45, 45 30, 40 40)), ((20 35, 10 30, 10 10, 30 5, 45 20, 20 35), (30 20, 20 15, 20 25, 30 20)))',
      {
        type: 'MultiPolygon',
        coordinates: [
          [[[40, 40], [20, 45], [45, 30], [40, 40]]],
          [
            [[20, 35], [10, 30], [10, 10], [30, 5], [45, 20], [20, 35]],
            [[30, 20], [20, 15], [20, 25], [30, 20]],
          ],
        ],
      },
    ],
  ])('%s', (wkt, geometry) => {
    expect(parse(wkt)).toEqual(geometry);
  });

  it('counts positions across rings and parts against the bound', () => {
    const ring = (n: number) => `(${Array.from({ length: n - 1 }, (_, k) => `${k} ${k * k}`).join(', ')}, 0 0)`;
    expect(() => parse(`POLYGON(${ring(50)}, ${ring(50)})`)).not.toThrow();
    expect(() => parse(`POLYGON(${ring(50)}, ${ring(51)})`)).toThrow('more than 100 positions in a WKT literal');
  });
});
