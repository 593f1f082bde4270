import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readingsTable } from '../db/readings-tables.ts';
import { createTestDatabase, testPool, type TestDatabase } from '../test/support/database.ts';
import { byDomain, copyReadings, encodeCopyBinary, mergeSameInstant } from './copy.ts';
import type { Reading } from './readings.ts';

const dictionary = { id: (name: string) => ({ a: 1, b: 2, c: 3 })[name] };

describe('binary COPY of readings', () => {
  let db: TestDatabase;
  let pool: ReturnType<typeof testPool>;
  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url);
    await pool.query(`CREATE TABLE r (device_id int4, ts timestamptz, cell int8, lat float8, lng float8, alt real, keys int2[], vals float8[], jvals jsonb)`);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('round-trips every column through PostgreSQL: NULLs, key ids ascending, extreme values', async () => {
    const rows: Reading[] = [
      { deviceId: 1, domain: 'generic', ts: Date.UTC(2026, 0, 1, 12, 30, 15, 123), values: { c: 3.5, a: -1.25e-7 } },
      { deviceId: 2_000_000_000, domain: 'generic', ts: Date.UTC(2000, 0, 1), values: { b: Number.MAX_VALUE }, lat: -89.999999, lng: 179.123456789, alt: 12.5, cell: 644_245_094_400_000_000n },
      { deviceId: 3, domain: 'generic', ts: Date.UTC(2099, 11, 31, 23, 59, 59, 999), values: {}, lat: 23, lng: 113.7, cell: 1n },
      { deviceId: 4, domain: 'generic', ts: 1, values: { b: 1 }, jsonValues: { c: 'ÜTF-8 ✓ "quoted"', a: { on: true, list: [1, 'x', null] } } },
    ];
    const client = await pool.connect();
    try {
      await copyReadings(client, 'r', rows, dictionary);
    } finally {
      client.release();
    }
    const { rows: back } = await pool.query(`SELECT device_id, ts, cell::text, lat, lng, alt, keys, vals, jvals FROM r ORDER BY device_id`);
    expect(back).toEqual([
      { device_id: 1, ts: new Date(rows[0]!.ts), cell: null, lat: null, lng: null, alt: null, keys: [1, 3], vals: [-1.25e-7, 3.5], jvals: null },
      { device_id: 3, ts: new Date(rows[2]!.ts), cell: '1', lat: 23, lng: 113.7, alt: null, keys: [], vals: [], jvals: null },
      { device_id: 4, ts: new Date(1), cell: null, lat: null, lng: null, alt: null, keys: [2], vals: [1], jvals: { 3: 'ÜTF-8 ✓ "quoted"', 1: { on: true, list: [1, 'x', null] } } },
      { device_id: 2_000_000_000, ts: new Date(rows[1]!.ts), cell: '644245094400000000', lat: -89.999999, lng: 179.123456789, alt: 12.5, keys: [2], vals: [Number.MAX_VALUE], jvals: null },
    ]);
  });

  it('refuses a key without an id rather than writing a wrong one', () => {
    expect(() => encodeCopyBinary([{ deviceId: 1, domain: 'generic', ts: 0, values: { zz: 1 } }], dictionary)).toThrow(/no id/);
  });

  it('routes each domain to its own table', () => {
    const groups = byDomain([
      { deviceId: 1, domain: 'water', ts: 0, values: {} },
      { deviceId: 2, domain: 'air-space-ground', ts: 0, values: {} },
      { deviceId: 3, domain: 'water', ts: 1, values: {} },
    ]);
    expect([...groups.keys()].map(readingsTable)).toEqual(['readings_water', 'readings_air_space_ground']);
    expect(groups.get('water')!.map((r) => r.deviceId)).toEqual([1, 3]);
  });

  it('folds readings of one device at one instant into one row, later values winning', () => {
    const merged = mergeSameInstant([
      { deviceId: 1, domain: 'generic', ts: 10, values: { a: 1, b: 1 } },
      { deviceId: 2, domain: 'generic', ts: 10, values: { a: 9 } },
      { deviceId: 1, domain: 'generic', ts: 10, values: { b: 2 }, lat: 1, lng: 2, cell: 3n },
    ]);
    expect(merged).toEqual([
      { deviceId: 1, domain: 'generic', ts: 10, values: { a: 1, b: 2 }, lat: 1, lng: 2, cell: 3n },
      { deviceId: 2, domain: 'generic', ts: 10, values: { a: 9 } },
    ]);
    // a key has one value per instant whatever its type: the later one replaces the other type
    expect(
      mergeSameInstant([
        { deviceId: 1, domain: 'generic', ts: 10, values: { a: 1, b: 1 }, jsonValues: { c: 'x' } },
        { deviceId: 1, domain: 'generic', ts: 10, values: { c: 3 }, jsonValues: { a: true } },
      ]),
    ).toEqual([{ deviceId: 1, domain: 'generic', ts: 10, values: { b: 1, c: 3 }, jsonValues: { a: true } }]);
    const distinct: Reading[] = [
      { deviceId: 1, domain: 'generic', ts: 10, values: { a: 1 } },
      { deviceId: 1, domain: 'generic', ts: 11, values: { a: 2 } },
    ];
    expect(mergeSameInstant(distinct)).toBe(distinct);
  });
});
