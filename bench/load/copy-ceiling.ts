import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import type pg from 'pg';
import copyStreams from 'pg-copy-streams';
import type { KeyDictionary } from '../../db/keys.ts';
import { readingsTable } from '../../db/readings-tables.ts';
import { byDomain, copyReadings } from '../../ingest/copy.ts';
import type { Reading } from '../../ingest/readings.ts';

export interface CopyResult {
  rows: number;
  seconds: number;
}

/**
 * Part (a), the ceiling: the readings written the way GuanLink's writer writes a batch — grouped
 * by domain table, encoded by ingest's `copyReadings` (binary COPY) with the key dictionary, one COPY per table in one
 * transaction per batch — with `connections` batches in flight, and nothing else (no MQTT, no
 * parsing or validation, no merge or retry logic). Encoding is timed: GuanLink must do it too,
 * and it overlaps with the other connection's COPY as in the writer. `keys` must already hold
 * every key name.
 */
export async function copyCeiling(pool: pg.Pool, readings: readonly Reading[], keys: KeyDictionary, opts: { batchSize: number; connections: number }): Promise<CopyResult> {
  const clients = await Promise.all(Array.from({ length: opts.connections }, () => pool.connect()));
  const batches = Math.ceil(readings.length / opts.batchSize);
  let next = 0;
  const worker = async (client: pg.PoolClient) => {
    for (let b = next++; b < batches; b = next++) {
      const batch = readings.slice(b * opts.batchSize, (b + 1) * opts.batchSize);
      await client.query('BEGIN');
      for (const [domain, rows] of byDomain(batch)) await copyReadings(client, readingsTable(domain), rows, keys);
      await client.query('COMMIT');
    }
  };
  const started = process.hrtime.bigint();
  let failed = false;
  try {
    await Promise.all(clients.map(worker));
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    for (const c of clients) c.release(failed); // a failed COPY leaves its connection mid-transaction: discard it
  }
  return { rows: readings.length, seconds: Number(process.hrtime.bigint() - started) / 1e9 };
}
