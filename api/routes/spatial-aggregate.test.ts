import { cellToChildren, latLngToCell, polygonToCells } from 'h3-js';
import { describe, expect, it } from 'vitest';
import { bboxPolygon, parseBbox, parseCells, parseCircle } from '../../geo/area.ts';
import { estimateCells, parseStats, percentileName } from './spatial-aggregate.ts';

describe('estimateCells: the output cells an area can have at a resolution', () => {
  it('counts a cells area exactly: descendants at finer resolutions, distinct parents at coarser ones', () => {
    const cell7 = latLngToCell(23.02, 113.75, 7);
    expect(estimateCells(parseCells([cell7]), 7)).toBe(1);
    expect(estimateCells(parseCells([cell7]), 9)).toBe(49);
    const children = cellToChildren(cell7, 9);
    expect(estimateCells(parseCells(children), 7)).toBe(1);
    expect(estimateCells(parseCells(children), 8)).toBe(7);
  });

  it('estimates other areas by km² over the average hexagon area, close to the cells whose centres are inside', () => {
    const bbox = parseBbox([113.6, 22.9, 113.9, 23.1]);
    for (const r of [7, 8, 9]) {
      const centres = polygonToCells(bboxPolygon(bbox.bbox).coordinates, r, true).length;
      const estimate = estimateCells(bbox, r);
      expect(estimate / centres).toBeGreaterThan(0.9);
      expect(estimate / centres).toBeLessThan(1.1);
    }
    expect(estimateCells(parseCircle(23, 113.7, 10), 0)).toBe(1);
    expect(estimateCells(parseCircle(23, 113.7, 1000), 9)).toBe(Math.ceil(Math.PI / 0.1053325)); // ~30
  });
});

describe('parseStats', () => {
  it('defaults to count, avg, min, max; names percentiles by their percentage', () => {
    expect(parseStats(undefined, undefined)).toEqual({ plain: ['count', 'avg', 'min', 'max'], percentiles: [] });
    expect(parseStats('max,p90,p99.9,max', '0.5,0.9')).toEqual({ plain: ['max'], percentiles: [['p90', 0.9], ['p99.9', 0.999], ['p50', 0.5]] });
    expect(parseStats(undefined, 0.25)).toEqual({ plain: ['count'], percentiles: [['p25', 0.25]] });
    expect(parseStats(['sum', 'p0', 'p100'], undefined).percentiles).toEqual([['p0', 0], ['p100', 1]]);
    expect(percentileName(0.005)).toBe('p0.5');
    expect(percentileName(0.07)).toBe('p7');
  });

  it('refuses unknown statistics and percentiles outside 0…1', () => {
    expect(() => parseStats('median', undefined)).toThrow(/"median" is not one of/);
    expect(() => parseStats('p100.5', undefined)).toThrow(/between p0 and p100/);
    expect(() => parseStats(undefined, '1.01')).toThrow(/between 0 and 1/);
    expect(() => parseStats(undefined, 'NaN')).toThrow(/between 0 and 1/);
    expect(() => parseStats(undefined, '')).toThrow(/between 0 and 1/);
    expect(() => parseStats([], undefined)).toThrow(/list/);
    expect(() => parseStats([3], undefined)).toThrow(/not a statistic/);
  });
});
