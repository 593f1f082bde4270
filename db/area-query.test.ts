import pg from 'pg';
import { cellToParent, latLngToCell } from 'h3-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { areaContains, parseBbox, parseCells, parseCircle, parsePolygon, type Area } from '../geo/area.ts';
import { storageCell } from '../geo/cell.ts';
import { createRng } from '../simulators/random.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../test/support/database.ts';
import { MAX_RANGES, Params, SCAN_FRACTION, areaRowsSql, cachedCover, edgeCellBudget, planArea, rangesWithEdgeFlag, type AreaPlan } from './area-query.ts';

const HOUR = 3_600_000;
const T0 = Date.UTC(2026, 10, 1);

// A concave town-sized polygon with a hole, and one of many edges (the scan plan then goes through cell membership).
const CONCAVE = parsePolygon({
  type: 'Polygon',
  coordinates: [
    [[113.70, 22.95], [113.80, 22.95], [113.80, 23.05], [113.75, 23.0], [113.70, 23.05], [113.70, 22.95]],
    [[113.72, 22.96], [113.74, 22.96], [113.74, 22.98], [113.72, 22.98], [113.72, 22.96]],
  ],
});
const JAGGED = parsePolygon({
  type: 'Polygon',
  coordinates: [[...Array.from({ length: 60 }, (_, i) => {
    const a = (2 * Math.PI * i) / 60;
    const r = i % 2 === 0 ? 0.05 : 0.03;
    return [113.75 + r * Math.cos(a), 23.0 + r * Math.sin(a)];
  }), [113.8, 23.0]]],
});
const AREAS: [string, Area][] = [
  ['concave polygon with a hole', { kind: 'polygon', geometry: CONCAVE }],
  ['60-edge star', { kind: 'polygon', geometry: JAGGED }],
  ['bbox', parseBbox([113.71, 22.97, 113.77, 23.02])],
  ['circle', parseCircle(23.0, 113.75, 3000)],
  ['cells of mixed resolutions', parseCells([cellToParent(latLngToCell(23.0, 113.75, 15), 8), cellToParent(latLngToCell(22.98, 113.78, 15), 7)])],
];

describe('planArea', () => {
  const area: Area = { kind: 'polygon', geometry: JAGGED };
  it('reads ranges for areas holding little of the data, scans the window otherwise', () => {
    expect(planArea(area, 0.01, HOUR).strategy).toBe('ranges');
    expect(planArea(area, SCAN_FRACTION, HOUR).strategy).toBe('scan');
    // A cheap exact test needs no cover at all for a scan.
    const box = parseBbox([113, 22, 115, 24]);
    expect(planArea(box, 0.9, HOUR)).toEqual({ strategy: 'scan' });
    // A costly one scans through the cover's cells.
    const scan = planArea(area, 0.9, HOUR) as AreaPlan & { strategy: 'scan' };
    expect(scan.cover?.edge.length).toBeGreaterThan(0);
  });

  it('uses coarser boundary cells for short windows', () => {
    expect(edgeCellBudget(HOUR)).toBeLessThan(edgeCellBudget(7 * 24 * HOUR));
    const short = cachedCover(area, edgeCellBudget(HOUR));
    const long = cachedCover(area, edgeCellBudget(7 * 24 * HOUR));
    expect(short.edgeResolution).toBeLessThan(long.edgeResolution);
    expect(cachedCover(area, edgeCellBudget(HOUR))).toBe(short);
  });

  it('never hands overlapping ranges to the ranges plan (a row would be counted twice)', () => {
    for (const [, a] of AREAS) {
      if (a.kind === 'cells') continue;
      const ranges = rangesWithEdgeFlag(cachedCover(a));
      for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0] > ranges[i - 1]![1]).toBe(true);
      expect(ranges.length).toBeLessThan(MAX_RANGES);
    }
  });
});

describe('areaRowsSql: both plans select exactly what areaContains (Turf) accepts', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  const points: { id: number; lng: number; lat: number; ts: number }[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 2);
    await pool.query(`CREATE TABLE t (device_id int4 NOT NULL, ts timestamptz NOT NULL, cell int8, lat float8, lng float8)`);
    await pool.query(`CREATE INDEX ON t (cell, ts) WHERE cell IS NOT NULL`);
    const rng = createRng(11);
    const vertices = [CONCAVE, JAGGED].flatMap((g) => (g.type === 'Polygon' ? g.coordinates.flat() : g.coordinates.flat(2))) as number[][];
    for (let i = 0; i < 6000; i++) {
      // Mostly near the areas, a quarter exactly on a vertex or a hair from one, over 3 hours.
      let lng = 113.68 + rng.next() * 0.14;
      let lat = 22.93 + rng.next() * 0.14;
      if (i % 4 === 0) {
        const v = vertices[rng.int(vertices.length)]!;
        const off = i % 8 === 0 ? 0 : (rng.next() - 0.5) * 2e-7;
        [lng, lat] = [v[0]! + off, v[1]! - off];
      }
      points.push({ id: i + 1, lng, lat, ts: T0 + rng.int(3 * HOUR) });
    }
    // One row with no position: never selected.
    await pool.query(`INSERT INTO t (device_id, ts) VALUES (0, $1)`, [new Date(T0)]);
    await pool.query(`INSERT INTO t SELECT * FROM unnest($1::int4[], $2::timestamptz[], $3::int8[], $4::float8[], $5::float8[])`, [
      points.map((p) => p.id),
      points.map((p) => new Date(p.ts)),
      points.map((p) => storageCell(p.lat, p.lng).toString()),
      points.map((p) => p.lat),
      points.map((p) => p.lng),
    ]);
    await pool.query('ANALYZE t');
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  async function select(area: Area, plan: AreaPlan, from: number, to: number): Promise<number[]> {
    const params = new Params();
    const sql = areaRowsSql({ table: 't', area, plan, from: params.add(new Date(from)), to: params.add(new Date(to)), columns: 'r.device_id', params });
    const { rows } = await pool.query<{ device_id: number }>(`${sql} ORDER BY 1`, params.values);
    return rows.map((r) => r.device_id);
  }

  const insideCell = (area: Area & { kind: 'cells' }, p: { lng: number; lat: number }) => areaContains(area, p.lng, p.lat);

  for (const [name, area] of AREAS) {
    it(name, async () => {
      const from = T0 + HOUR / 2;
      const to = T0 + 2 * HOUR;
      const expected = points
        .filter((p) => p.ts >= from && p.ts < to && (area.kind === 'cells' ? insideCell(area, p) : areaContains(area, p.lng, p.lat)))
        .map((p) => p.id)
        .sort((a, b) => a - b);
      expect(expected.length).toBeGreaterThan(20);
      const cover = cachedCover(area);
      const plans: AreaPlan[] = [{ strategy: 'ranges', cover }, { strategy: 'scan', cover }, { strategy: 'scan' }, { strategy: 'ranges', cover: cachedCover(area, 30) }];
      for (const plan of plans) expect(await select(area, plan, from, to), JSON.stringify({ s: plan.strategy, c: !!('cover' in plan && plan.cover) })).toEqual(expected);
    });
  }
});
