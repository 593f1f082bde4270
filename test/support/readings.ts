import pg from 'pg';
import { copyReadings } from '../../ingest/copy.ts';
import type { NonNumericValue, Reading } from '../../ingest/readings.ts';

export interface StoredReading {
  ts: Date;
  cell: string | null;
  lat: number | null;
  lng: number | null;
  alt: number | null;
  /** The numbers. */
  values: Record<string, number>;
  /** The values of the other types (strings, booleans, JSON). */
  others: Record<string, NonNumericValue>;
}

/** What the database holds for one device, values by key name, oldest first (read straight from the tables). */
export async function storedReadings(db: pg.Pool | pg.Client, deviceId: number): Promise<StoredReading[]> {
  const { rows } = await db.query<StoredReading>(
    `SELECT r.ts, r.cell::text AS cell, r.lat, r.lng, r.alt,
            coalesce((SELECT jsonb_object_agg(k.name, u.v) FROM unnest(r.keys, r.vals) AS u(id, v) JOIN telemetry_keys k ON k.id = u.id), '{}') AS values,
            coalesce((SELECT jsonb_object_agg(k.name, e.value) FROM jsonb_each(r.jvals) AS e JOIN telemetry_keys k ON k.id = e.key::smallint), '{}') AS others
       FROM readings r WHERE r.device_id = $1 ORDER BY r.ts`,
    [deviceId],
  );
  return rows;
}

/** Environment readings loaded straight into the table (test setup, not the thing under test). */
export async function loadReadings(db: pg.Pool | pg.Client, rows: Reading[]): Promise<void> {
  const { rows: keys } = await db.query<{ id: number; name: string }>('SELECT id, name FROM telemetry_keys');
  const ids = new Map(keys.map((k) => [k.name, k.id]));
  const client = db instanceof pg.Pool ? await db.connect() : db;
  try {
    for (let i = 0; i < rows.length; i += 50_000) await copyReadings(client, 'readings_environment', rows.slice(i, i + 50_000), { id: (name) => ids.get(name) });
    await client.query('ANALYZE readings_environment');
  } finally {
    if (db instanceof pg.Pool) (client as pg.PoolClient).release();
  }
}
