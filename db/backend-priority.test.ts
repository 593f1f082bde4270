import os from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { lowerBackendPriority, type PriorityOutcome } from './backend-priority.ts';
import { createPool } from './pool.ts';

const url = inject('databaseUrl');
const local = ['127.0.0.1', 'localhost', '[::1]'].includes(new URL(url).hostname);

describe('spatial query connections at a lower CPU priority', () => {
  const pools: ReturnType<typeof createPool>[] = [];
  afterAll(async () => Promise.all(pools.map((p) => p.end())));

  it.runIf(local)("renices exactly the backends of the pool that asks for it, once each connection is made", async () => {
    const outcomes: PriorityOutcome[] = [];
    const queries = createPool(url, { max: 2, backendNice: 7, onPriority: (o) => outcomes.push(o) });
    const ingest = createPool(url, { max: 2 });
    pools.push(queries, ingest);
    const pidOf = async (pool: typeof queries) => (await pool.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
    const queryPid = await pidOf(queries);
    const ingestPid = await pidOf(ingest);
    await expect.poll(() => outcomes.length).toBe(1);
    expect(outcomes[0]).toEqual({ lowered: true, pid: queryPid });
    expect(os.getPriority(queryPid)).toBe(7);
    expect(os.getPriority(ingestPid)).toBe(0);
  });

  it('leaves a server that is not on this machine alone, and says why', async () => {
    const pool = createPool(url, { max: 1 });
    pools.push(pool);
    const client = await pool.connect();
    try {
      expect(await lowerBackendPriority(client, 7, 'db.example.org')).toEqual({ lowered: false, reason: 'the database is not on this machine' });
      // A pid that is not this connection's backend (our own process) is never reniced.
      const before = os.getPriority();
      const fake = { ...client, connection: (client as unknown as { connection: unknown }).connection, query: async () => ({ rows: [{ pid: process.pid }] }) };
      const outcome = await lowerBackendPriority(fake as unknown as typeof client, 7, '127.0.0.1');
      expect(outcome.lowered).toBe(false);
      expect(os.getPriority()).toBe(before);
    } finally {
      client.release();
    }
  });
});
