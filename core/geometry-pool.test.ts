import { afterAll, describe, expect, it } from 'vitest';
import { parseCircle, type Area } from '../geo/area.ts';
import { coverArea } from '../geo/cover.ts';
import { GeometryBusyError, GeometryPool, GeometryTimeoutError, workerFile } from './geometry-pool.ts';

const SQUARE = { type: 'Polygon', coordinates: [[[113.7, 22.98], [113.8, 22.98], [113.8, 23.05], [113.7, 23.05], [113.7, 22.98]]] };
const BOWTIE = { type: 'Polygon', coordinates: [[[113, 23], [113.1, 23.1], [113.1, 23], [113, 23.1], [113, 23]]] };
/** Covering a 200 km circle with boundary cells of ~10 m: seconds of work on any machine. */
const SLOW: [Area, number] = [parseCircle(23, 113.75, 200_000), 2_000_000];

/** A small task until one succeeds: the first thread may take longer to start than a short timeout allows. */
async function warm(pool: GeometryPool): Promise<void> {
  for (let i = 0; i < 50; i++) {
    try {
      await pool.parseArea({ geometry: SQUARE });
      return;
    } catch (err) {
      if (!(err instanceof GeometryTimeoutError)) throw err;
    }
  }
  throw new Error('no geometry thread started');
}

describe('GeometryPool', () => {
  const pools: GeometryPool[] = [];
  const pool = (options: ConstructorParameters<typeof GeometryPool>[0]) => {
    const p = new GeometryPool(options);
    pools.push(p);
    return p;
  };
  afterAll(async () => {
    await Promise.all(pools.map((p) => p.close()));
  });

  it('runs the geometry of geo/ on a worker thread (from the sources here), with the same answers', async () => {
    expect(workerFile()).toMatch(/geometry-worker\.source\.mjs$/);
    const p = pool({ threads: 1, maxQueue: 10, taskTimeoutMs: 60_000 });
    const parsed = await p.parseArea({ geometry: { type: 'Feature', properties: {}, geometry: SQUARE } });
    expect(parsed).toEqual({ area: { kind: 'polygon', geometry: SQUARE }, index: expect.anything(), texts: expect.any(Array) });
    expect(await p.parseArea({ geometry: BOWTIE })).toEqual({ error: expect.stringMatching(/intersects itself near \[113.05, 23.05/) });
    expect(await p.parseArea({ cells: ['nope'] })).toEqual({ error: expect.stringMatching(/not a valid H3 cell/) });
    const area: Area = { kind: 'polygon', geometry: SQUARE as never };
    expect(await p.cover(area, 400)).toEqual(coverArea(area, { maxEdgeCells: 400 }));
    const inside = await p.inside(area, Float64Array.from([113.75, 23, 113.9, 23, 113.7, 22.98]));
    expect([...inside]).toEqual([1, 0, 1]);
    expect(p.threads).toBe(1);
  });

  it('refuses a task at once when its threads are busy and its queue is full', async () => {
    const p = pool({ threads: 1, maxQueue: 1, taskTimeoutMs: 3_000 });
    await warm(p);
    const running = p.cover(...SLOW).catch((err: unknown) => err);
    const waiting = p.cover(...SLOW).catch((err: unknown) => err);
    expect(p.load).toEqual({ running: 1, waiting: 1 });
    await expect(p.parseArea({ geometry: SQUARE })).rejects.toThrow(GeometryBusyError);
    // Each finishes or times out (then its thread is ended); either way the pool works on.
    for (const outcome of [await running, await waiting]) if (outcome instanceof Error) expect(outcome).toBeInstanceOf(GeometryTimeoutError);
    expect(p.load).toEqual({ running: 0, waiting: 0 });
    await warm(p);
  }, 60_000);

  it('abandons a task that runs longer than its timeout, ending its thread', async () => {
    const p = pool({ threads: 1, maxQueue: 4, taskTimeoutMs: 500 });
    await warm(p);
    const started = Date.now();
    await expect(p.cover(...SLOW)).rejects.toThrow(/took longer than 500 ms \(GEOMETRY_TASK_TIMEOUT_MS\)/);
    expect(Date.now() - started).toBeLessThan(30_000);
    await warm(p);
  }, 60_000);
});
