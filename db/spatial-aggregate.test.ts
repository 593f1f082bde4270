import { cellToParent, latLngToCell } from 'h3-js';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bigIntToCell, cellToBigInt } from '../geo/cell.ts';
import { createRng } from '../simulators/random.ts';
import { createTestDatabase, type TestDatabase, testPool } from '../test/support/database.ts';
import { parentCellSql } from './spatial-aggregate.ts';

describe('parentCellSql computes H3 parents in PostgreSQL as h3-js cellToParent does', () => {
  let db: TestDatabase;
  let pool: pg.Pool;

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 1);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('for positions all over the Earth (both hemispheres, poles, antimeridian, pentagons) at every resolution', async () => {
    const rng = createRng(7);
    const points: [number, number][] = [
      [22.98, 113.75], // Dongguan
      [89.9999, 0],
      [-89.9999, 179.9],
      [0, 180],
      [0, -180],
      [-33.9, 18.4],
      [64.7, 10.5], // near the base cell 14 pentagon centre
      [58.3977, -9.0], // near the base cell 4 pentagon
    ];
    for (let i = 0; i < 300; i++) points.push([rng.range(-90, 90), rng.range(-180, 180)]);
    const cells = points.map(([lat, lng]) => latLngToCell(lat, lng, 15));
    for (let r = 0; r <= 15; r++) {
      const { rows } = await pool.query<{ parent: string }>(`SELECT ${parentCellSql('c', r)}::text AS parent FROM unnest($1::int8[]) WITH ORDINALITY AS u(c, i) ORDER BY i`, [
        cells.map((c) => cellToBigInt(c).toString()),
      ]);
      expect(rows.map((row) => bigIntToCell(row.parent))).toEqual(cells.map((c) => cellToParent(c, r)));
    }
  });

  it('refuses a resolution that is not 0…15', () => {
    expect(() => parentCellSql('c', 16)).toThrow(RangeError);
    expect(() => parentCellSql('c', -1)).toThrow(RangeError);
    expect(() => parentCellSql('c', 7.5)).toThrow(RangeError);
  });
});
