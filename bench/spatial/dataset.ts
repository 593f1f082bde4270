import type pg from 'pg';
import { storageCell } from '../../geo/cell.ts';
import { copyReadings } from '../../ingest/copy.ts';
import type { Reading } from '../../ingest/readings.ts';
import { createRng } from '../../simulators/random.ts';
import { reorderChunk } from '../../db/chunk-layout.ts';

/** Shape of the benchmark's data; change any of it and the table is rebuilt. */
export interface DatasetSpec {
  staticDevices: number;
  movingDevices: number;
  days: number;
  intervalMinutes: number;
  seed: number;
  /** Last timestamp of the data (queries' windows end here). */
  end: number;
}

/** The obvious PostGIS design: rows in arrival order, GiST index on the point. */
export const POSTGIS_TABLE = 'bench_spatial_postgis';
/** GuanLink's design: the same rows, B-tree on (cell, ts), closed chunks rewritten by db/chunk-layout.ts. */
export const H3_TABLE = 'bench_spatial_h3';
const TABLE = POSTGIS_TABLE;
const DICTIONARY = { id: () => 1 };

// Approximate town centres of Dongguan (lat, lng, weight): readings cluster where the city is.
const TOWNS: [number, number, number][] = [
  [23.021, 113.752, 6], [23.006, 113.783, 4], [23.043, 113.762, 4], [22.987, 113.738, 3], [22.823, 113.672, 5],
  [22.807, 113.823, 4], [22.906, 113.898, 3], [22.779, 114.082, 3], [22.977, 114.003, 3], [23.112, 113.851, 3],
  [22.928, 113.665, 2], [22.96, 113.92, 4], [23.07, 113.95, 2], [23.1, 113.7, 2], [22.85, 113.95, 2],
  [22.72, 113.98, 2], [23.05, 113.6, 2], [22.88, 113.78, 3],
];
export const DONGGUAN_BBOX = { minLng: 113.52, minLat: 22.66, maxLng: 114.26, maxLat: 23.16 };

function pickTown(rng: ReturnType<typeof createRng>): [number, number] {
  const total = TOWNS.reduce((s, t) => s + t[2], 0);
  let x = rng.next() * total;
  for (const [lat, lng, w] of TOWNS) {
    x -= w;
    if (x <= 0) return [lat, lng];
  }
  return [TOWNS[0]![0], TOWNS[0]![1]];
}

const clampLat = (v: number) => Math.min(DONGGUAN_BBOX.maxLat, Math.max(DONGGUAN_BBOX.minLat, v));
const clampLng = (v: number) => Math.min(DONGGUAN_BBOX.maxLng, Math.max(DONGGUAN_BBOX.minLng, v));

interface Track {
  lat: number;
  lng: number;
  cell: bigint;
  heading: number;
  phase: number;
  moving: boolean;
}

/**
 * Every reading of the dataset in batches, in time order as ingest writes them (so the table's
 * physical layout is the real one), deterministic for a spec.
 */
export function* readings(spec: DatasetSpec, batch = 50_000): Generator<Reading[]> {
  const rng = createRng(spec.seed);
  const interval = spec.intervalMinutes * 60_000;
  const steps = Math.floor((spec.days * 24 * 60) / spec.intervalMinutes);
  const start = spec.end - steps * interval;
  const tracks: Track[] = [];
  for (let d = 0; d < spec.staticDevices + spec.movingDevices; d++) {
    const [tLat, tLng] = pickTown(rng);
    const lat = clampLat(tLat + rng.gauss() * 0.03);
    const lng = clampLng(tLng + rng.gauss() * 0.03);
    tracks.push({ lat, lng, cell: storageCell(lat, lng), heading: rng.next() * 2 * Math.PI, phase: rng.int(interval), moving: d >= spec.staticDevices });
  }
  const km = (30 * spec.intervalMinutes) / 60; // vehicles wander at ~30 km/h, turning now and then
  let out: Reading[] = [];
  for (let s = 0; s < steps; s++) {
    tracks.forEach((t, d) => {
      if (t.moving) {
        t.heading += rng.gauss() * 0.4;
        t.lat = clampLat(t.lat + (Math.cos(t.heading) * km) / 111);
        t.lng = clampLng(t.lng + (Math.sin(t.heading) * km) / (111 * Math.cos((t.lat * Math.PI) / 180)));
        if (t.lat <= DONGGUAN_BBOX.minLat || t.lat >= DONGGUAN_BBOX.maxLat || t.lng <= DONGGUAN_BBOX.minLng || t.lng >= DONGGUAN_BBOX.maxLng) t.heading += Math.PI;
        t.cell = storageCell(t.lat, t.lng);
      }
      out.push({ deviceId: d + 1, domain: 'generic', ts: start + s * interval + t.phase, values: { v: s % 100 }, lat: t.lat, lng: t.lng, cell: t.cell });
    });
    if (out.length >= batch) {
      yield out;
      out = [];
    }
  }
  if (out.length > 0) yield out;
}

/**
 * Creates (or reuses, when its recorded spec is the same) the benchmark's two tables, with the
 * same rows: POSTGIS_TABLE as ingest writes it (arrival order) with a PostGIS point and its GiST
 * index, and H3_TABLE in GuanLink's layout (each daily chunk rewritten by `reorderChunk`, as the
 * platform's chunk-layout job does once a chunk is closed). Both keep every index, so either
 * query can also run on the other layout.
 */
export async function ensureDataset(pool: pg.Pool, spec: DatasetSpec, log: (m: string) => void): Promise<{ rows: number; reused: boolean }> {
  const key = JSON.stringify(spec);
  await pool.query(`CREATE TABLE IF NOT EXISTS bench_spatial_meta (spec text NOT NULL, rows bigint NOT NULL)`);
  const meta = (await pool.query<{ spec: string; rows: string }>(`SELECT spec, rows FROM bench_spatial_meta`)).rows[0];
  const exists = (await pool.query(`SELECT 1 FROM pg_class WHERE relname = ANY ($1)`, [[POSTGIS_TABLE, H3_TABLE]])).rowCount === 2;
  if (exists && meta?.spec === key) return { rows: Number(meta.rows), reused: true };
  await pool.query(`DELETE FROM bench_spatial_meta`);
  for (const t of ['bench_spatial_readings', H3_TABLE]) await pool.query(`DROP TABLE IF EXISTS ${t}`);
  const built = await buildIngestOrder(pool, spec, log);
  log(`copying into ${H3_TABLE} and rewriting its chunks in hour/cell order (db/chunk-layout.ts)`);
  await pool.query(`CREATE TABLE ${H3_TABLE} (LIKE ${POSTGIS_TABLE} INCLUDING GENERATED)`);
  await pool.query(`SELECT create_hypertable('${H3_TABLE}', 'ts', chunk_time_interval => interval '1 day', create_default_indexes => false)`);
  await pool.query(`INSERT INTO ${H3_TABLE} (device_id, ts, cell, lat, lng, alt, keys, vals) SELECT device_id, ts, cell, lat, lng, alt, keys, vals FROM ${POSTGIS_TABLE} ORDER BY ts`);
  await createIndexes(pool, H3_TABLE);
  const chunks = (await pool.query<{ c: string }>(`SELECT format('%I.%I', chunk_schema, chunk_name) AS c FROM timescaledb_information.chunks WHERE hypertable_name = $1 ORDER BY range_start`, [H3_TABLE])).rows;
  const client = await pool.connect();
  try {
    for (const { c } of chunks) await reorderChunk(client, c, 60_000);
  } finally {
    client.release();
  }
  await pool.query(`VACUUM ANALYZE ${H3_TABLE}`);
  await pool.query(`INSERT INTO bench_spatial_meta (spec, rows) VALUES ($1, $2)`, [key, built]);
  return { rows: built, reused: false };
}

async function createIndexes(pool: pg.Pool, table: string): Promise<void> {
  await pool.query(`CREATE UNIQUE INDEX ${table}_device_ts ON ${table} (device_id, ts DESC)`);
  await pool.query(`CREATE INDEX ${table}_cell_ts ON ${table} (cell, ts) WHERE cell IS NOT NULL`);
  await pool.query(`CREATE INDEX ${table}_ts_brin ON ${table} USING brin (ts)`);
  await pool.query(`CREATE INDEX ${table}_geom ON ${table} USING gist (geom)`);
}

async function buildIngestOrder(pool: pg.Pool, spec: DatasetSpec, log: (m: string) => void): Promise<number> {
  log(`building ${TABLE} (${spec.staticDevices + spec.movingDevices} devices, ${spec.days} days every ${spec.intervalMinutes} min)`);
  await pool.query(`DROP TABLE IF EXISTS ${TABLE}`);
  // GuanLink's readings columns, plus the PostGIS point computed from lat/lng as rows arrive.
  await pool.query(
    `CREATE TABLE ${TABLE} (device_id int4 NOT NULL, ts timestamptz NOT NULL, cell int8, lat float8, lng float8, alt real, keys int2[] NOT NULL, vals float8[] NOT NULL, jvals jsonb,
       geom geometry(Point, 4326) GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lng, lat), 4326)) STORED)`,
  );
  await pool.query(`SELECT create_hypertable('${TABLE}', 'ts', chunk_time_interval => interval '1 day', create_default_indexes => false)`);
  const client = await pool.connect();
  let rows = 0;
  const started = Date.now();
  try {
    for (const batch of readings(spec)) {
      await client.query('BEGIN');
      await copyReadings(client, TABLE, batch, DICTIONARY);
      await client.query('COMMIT');
      rows += batch.length;
      if (rows % 1_000_000 < batch.length) log(`  ${rows.toLocaleString()} rows (${Math.round(rows / ((Date.now() - started) / 1000)).toLocaleString()}/s)`);
    }
  } finally {
    client.release();
  }
  log('  indexes: those of the readings tables ((device_id, ts), (cell, ts), BRIN (ts)), plus GiST (geom) for PostGIS; VACUUM ANALYZE');
  await createIndexes(pool, TABLE);
  await pool.query(`VACUUM ANALYZE ${TABLE}`);
  return rows;
}
