import pg from 'pg';
import { latLngToCell, cellToParent } from 'h3-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { areaContains, circlePolygon, parsePolygon, type Area } from '../geo/area.ts';
import { cellToBigInt } from '../geo/cell.ts';
import { createRng } from '../simulators/random.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../test/support/database.ts';
import { INLINE_EDGES, exactAreaSql, type Bbox } from './spatial-sql.ts';
import { Params } from './area-query.ts';
import { DEFAULT_TOWNS } from '../geo/towns.ts';

/** Points on and right next to every edge of the area's outline, plus some anywhere near it. */
function probes(outline: number[][][], seed: number, n: number): [number, number][] {
  const rng = createRng(seed);
  const all = outline.flat();
  const xs = all.map((p) => p[0]!);
  const ys = all.map((p) => p[1]!);
  const [minX, maxX, minY, maxY] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const out: [number, number][] = all.map((p) => [p[0]!, p[1]!]); // vertices: on the boundary
  for (let i = 0; i < n; i++) {
    if (i % 4 === 0) {
      out.push([minX - 0.001 + rng.next() * (maxX - minX + 0.002), minY - 0.001 + rng.next() * (maxY - minY + 0.002)]);
      continue;
    }
    const ring = outline[rng.int(outline.length)]!;
    const j = 1 + rng.int(ring.length - 1);
    const [a, b] = [ring[j - 1]!, ring[j]!];
    const t = rng.next();
    // Exactly on axis-parallel edges; next to slanted ones (on them, floating point decides: see pointInPolygonSql).
    const axisParallel = a[0] === b[0] || a[1] === b[1];
    const off = i % 4 === 1 && axisParallel ? 0 : (rng.next() < 0.5 ? -1 : 1) * (1e-9 + rng.next() * 2e-6);
    out.push([a[0]! + (b[0]! - a[0]!) * t + off, a[1]! + (b[1]! - a[1]!) * t - off]);
  }
  return out;
}

describe('exactAreaSql agrees with areaContains (Turf) in PostgreSQL', () => {
  let db: TestDatabase;
  let pool: pg.Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 2);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  async function compare(area: Area, points: [number, number][], within?: Bbox, bind = false): Promise<number> {
    const params = new Params();
    params.add(points.map((p) => p[0]));
    params.add(points.map((p) => p[1]));
    params.add(points.map(([lng, lat]) => cellToBigInt(latLngToCell(lat, lng, 15)).toString()));
    const sql = exactAreaSql(area, { lng: 'p.lng', lat: 'p.lat', cell: 'p.cell' }, within, bind ? params : undefined);
    const { rows } = await pool.query<{ i: number; inside: boolean }>(
      `SELECT p.i, ${sql} AS inside FROM unnest($1::float8[], $2::float8[], $3::int8[]) WITH ORDINALITY AS p(lng, lat, cell, i)`,
      params.values,
    );
    let inside = 0;
    for (const r of rows) {
      const [lng, lat] = points[Number(r.i) - 1]!;
      expect(r.inside, `${lng},${lat}`).toBe(areaContains(area, lng, lat));
      if (r.inside) inside++;
    }
    return inside;
  }

  it('for a concave polygon with a hole, and a multipolygon', async () => {
    const concave = parsePolygon({
      type: 'Polygon',
      coordinates: [
        [[113.74, 23.0], [113.78, 23.0], [113.78, 23.005], [113.745, 23.005], [113.745, 23.02], [113.78, 23.02], [113.78, 23.025], [113.74, 23.025], [113.74, 23.0]],
        [[113.741, 23.01], [113.743, 23.01], [113.743, 23.012], [113.741, 23.012], [113.741, 23.01]],
      ],
    });
    const multi = parsePolygon({
      type: 'MultiPolygon',
      coordinates: [
        [[[113.6, 22.8], [113.61, 22.8], [113.605, 22.81], [113.6, 22.8]]],
        [[[113.9, 22.9], [113.92, 22.905], [113.91, 22.93], [113.9, 22.9]]],
      ],
    });
    for (const [seed, geometry] of [[1, concave], [2, multi]] as const) {
      const rings = geometry.type === 'Polygon' ? geometry.coordinates : geometry.coordinates.flat();
      expect(await compare({ kind: 'polygon', geometry }, probes(rings, seed, 4000))).toBeGreaterThan(500);
    }
  });

  it(`for polygons of more than ${INLINE_EDGES} edges (the banded test), with bound or literal arrays`, async () => {
    const rng = createRng(9);
    // A jagged ring of the most vertices an area may have, and 300 squares on shared latitudes (members, holes of none).
    const ring: number[][] = [];
    for (let i = 0; i < 9_999; i++) {
      const a = (2 * Math.PI * i) / 9_999;
      const r = 0.05 * (0.7 + 0.3 * rng.next());
      ring.push([113.75 + r * Math.cos(a), 23.02 + r * Math.sin(a)]);
    }
    ring.push(ring[0]!);
    const jagged = parsePolygon({ type: 'Polygon', coordinates: [ring] });
    const square = (x: number, y: number, s: number) => [[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]];
    const squares = parsePolygon({
      type: 'MultiPolygon',
      coordinates: Array.from({ length: 300 }, (_, i) => (i % 7 === 0 ? [square(113.5 + (i % 20) * 0.02, 22.8 + Math.floor(i / 20) * 0.02, 0.01), square(113.502 + (i % 20) * 0.02, 22.802 + Math.floor(i / 20) * 0.02, 0.003).reverse()] : [square(113.5 + (i % 20) * 0.02, 22.8 + Math.floor(i / 20) * 0.02, 0.01)])),
    });
    for (const [seed, geometry] of [[10, jagged], [11, squares]] as const) {
      const rings = geometry.type === 'Polygon' ? geometry.coordinates : geometry.coordinates.flat();
      const points = probes(rings, seed, 6000);
      const sql = exactAreaSql({ kind: 'polygon', geometry }, { lng: 'x', lat: 'y', cell: 'c' });
      expect(sql).toContain('width_bucket');
      expect(exactAreaSql({ kind: 'polygon', geometry }, { lng: 'x', lat: 'y', cell: 'c' }, undefined, new Params()).length).toBeLessThan(2000);
      const inside = await compare({ kind: 'polygon', geometry }, points, undefined, true);
      expect(inside).toBeGreaterThan(1000);
      expect(await compare({ kind: 'polygon', geometry }, points.slice(0, 2000))).toBeGreaterThan(100);
      // Points known to lie in a box: the edges east, above and below it left out.
      const box: Bbox = [113.74, 22.9, 113.8, 23.03];
      const inBox = points.filter(([lng, lat]) => lng >= box[0] && lng <= box[2] && lat >= box[1] && lat <= box[3]);
      expect(inBox.length).toBeGreaterThan(100);
      await compare({ kind: 'polygon', geometry }, inBox, box, true);
    }
  });

  it('for a bbox, boundary and corners included', async () => {
    const area: Area = { kind: 'bbox', bbox: [113.7, 22.98, 113.8, 23.05] };
    const ring = [[113.7, 22.98], [113.8, 22.98], [113.8, 23.05], [113.7, 23.05], [113.7, 22.98]];
    expect(await compare(area, probes([ring], 3, 4000))).toBeGreaterThan(1000);
  });

  it('for a circle', async () => {
    const area: Area = { kind: 'circle', center: [113.75, 23.02], radiusM: 800 };
    expect(await compare(area, probes(circlePolygon(area.center, 1000).coordinates, 4, 2000).concat(probes(circlePolygon(area.center, 800).coordinates, 5, 2000)))).toBeGreaterThan(200);
  });

  it('for cells of several resolutions', async () => {
    const a = cellToParent(latLngToCell(23.02, 113.75, 15), 9);
    const b = cellToParent(latLngToCell(23.03, 113.76, 15), 12);
    const area: Area = { kind: 'cells', cells: [a, b] };
    const rng = createRng(6);
    const points: [number, number][] = [];
    for (let i = 0; i < 3000; i++) points.push([113.745 + rng.next() * 0.02, 23.015 + rng.next() * 0.02]);
    expect(await compare(area, points)).toBeGreaterThan(20);
  });

  it('for points known to lie in a box, with the edges that cannot matter there left out', async () => {
    // Towns with their neighbours: the boundary crosses each box, with edges on every side of it.
    const geometry = DEFAULT_TOWNS.union(['虎门镇', '厚街镇', '东城街道', '莞城街道', '南城街道']).geometry;
    const rings = geometry.type === 'Polygon' ? geometry.coordinates : geometry.coordinates.flat();
    const all = probes(rings, 7, 20_000);
    for (const box of [[113.6, 22.76, 113.76, 22.92], [113.74, 23.0, 113.77, 23.03], [113.5, 22.6, 114.3, 23.2]] as Bbox[]) {
      const rng = createRng(8);
      const inBox = all.filter(([lng, lat]) => lng >= box[0] && lng <= box[2] && lat >= box[1] && lat <= box[3]);
      for (let i = 0; i < 2000; i++) inBox.push([box[0] + rng.next() * (box[2] - box[0]), box[1] + rng.next() * (box[3] - box[1])]);
      await compare({ kind: 'polygon', geometry }, inBox, box);
    }
    // A box the polygon does not reach: nothing inside, and no edge in the statement.
    expect(exactAreaSql({ kind: 'polygon', geometry }, { lng: 'x', lat: 'y', cell: 'c' }, [114.2, 23.1, 114.3, 23.2])).toBe('(false)');
  });
});
