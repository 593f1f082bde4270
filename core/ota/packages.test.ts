import { createHash } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, testPool } from '../../test/support/database.ts';
import { migrate } from '../../db/migrate.ts';
import { createLogger } from '../log.ts';
import { OTA_BLOCK_BYTES, OtaError, OtaPackages } from './packages.ts';

const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 131 + (i >> 9)) % 256));

/** `buffer` in pieces of the given sizes, cycled (as a request body arrives). */
async function* pieces(buffer: Buffer, sizes: number[]): AsyncGenerator<Buffer> {
  for (let at = 0, i = 0; at < buffer.length; i++) {
    const n = sizes[i % sizes.length]!;
    yield buffer.subarray(at, at + n);
    at += n;
  }
}

describe('OtaPackages: streamed upload into blocks, range reads', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  let packages: OtaPackages;
  let n = 0;
  const create = (checksum?: string) => packages.create({ type: 'FIRMWARE', title: `p${++n}`, version: '1', checksumAlgorithm: 'SHA256', checksum });

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 4);
    await migrate(pool, createLogger('silent'));
    packages = new OtaPackages(pool, 1_000_000);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('stores a body arriving in odd pieces as full blocks and reads any range, across block boundaries', async () => {
    const pkg = await create(createHash('sha256').update(data).digest('hex'));
    const stored = await packages.upload(pkg.id, pieces(data, [1000, 70_001, 3, 65_536, 12_345]));
    expect(stored).toMatchObject({ size: data.length, checksum: createHash('sha256').update(data).digest('hex') });
    const { rows } = await pool.query<{ n: number; len: number }>('SELECT n, length(data) AS len FROM ota_package_blocks WHERE package_id = $1 ORDER BY n', [pkg.id]);
    expect(rows.map((r) => r.len)).toEqual([OTA_BLOCK_BYTES, OTA_BLOCK_BYTES, OTA_BLOCK_BYTES, OTA_BLOCK_BYTES, data.length - 4 * OTA_BLOCK_BYTES]);
    for (const [offset, length] of [
      [0, 10],
      [65_530, 20],
      [65_536, 65_536],
      [100_000, 200_000],
      [299_990, 100],
      [0, 300_000],
    ] as const) {
      expect((await packages.read(pkg.id, offset, length)).equals(data.subarray(offset, offset + length)), `${offset}+${length}`).toBe(true);
    }
    expect((await packages.read(pkg.id, 300_000, 10)).length).toBe(0);
    const streamed: Buffer[] = [];
    for await (const b of packages.stream(pkg.id, 1, 200_000)) streamed.push(b);
    expect(Buffer.concat(streamed).equals(data.subarray(1, 200_001))).toBe(true);
    expect(Math.max(...streamed.map((b) => b.length))).toBeLessThanOrEqual(OTA_BLOCK_BYTES);
  });

  it('consumes the body as it comes: an endless one is refused at the limit, with nothing kept', async () => {
    const pkg = await create();
    let produced = 0;
    async function* endless() {
      for (;;) {
        produced += 10_000;
        yield data.subarray(0, 10_000);
      }
    }
    await expect(packages.upload(pkg.id, endless())).rejects.toMatchObject({ code: 'too_large' });
    expect(produced).toBeLessThanOrEqual(1_010_000);
    expect((await pool.query('SELECT count(*)::int AS n FROM ota_package_blocks WHERE package_id = $1', [pkg.id])).rows[0].n).toBe(0);
    expect((await packages.get(pkg.id))?.size).toBeNull();
  });

  it('keeps nothing when the body breaks off or its checksum differs', async () => {
    const pkg = await create(createHash('sha256').update(data).digest('hex'));
    async function* cut() {
      yield data.subarray(0, 200_000);
      throw new Error('aborted');
    }
    await expect(packages.upload(pkg.id, cut())).rejects.toThrow('aborted');
    await expect(packages.upload(pkg.id, pieces(data.subarray(1), [50_000]))).rejects.toBeInstanceOf(OtaError);
    expect((await pool.query('SELECT count(*)::int AS n FROM ota_package_blocks WHERE package_id = $1', [pkg.id])).rows[0].n).toBe(0);
    // The right data is still taken afterwards.
    expect((await packages.upload(pkg.id, pieces(data, [65_536]))).size).toBe(data.length);
  });
});
