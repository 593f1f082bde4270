/**
 * Which readings table shape? Writes the same located readings into each candidate shape with
 * the same COPY path as ingest, then times the two reads GuanLink serves most: one device's key
 * over time, and everything in a place over a time window. Run: `npm run bench:schema`
 * (DATABASE_URL to use TimescaleDB; else the embedded PostgreSQL).
 */
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import pg from 'pg';
import copyStreams from 'pg-copy-streams';
import { latLngToCell, cellToParent } from 'h3-js';
import { cellToBigInt, descendantRange } from '../geo/cell.ts';
import { createRng } from '../simulators/random.ts';
import { benchDatabase, formatRate } from './support.ts';

const DEVICES = Number(process.env.BENCH_DEVICES ?? 2000);
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 400_000);
const KEYS = ['water_level', 'flow_rate', 'rainfall_1h', 'battery'];
const BATCH = 5000;
const SPAN_MS = 2 * 86_400_000;
const T0 = Date.UTC(2026, 9, 1);

interface Msg {
  device: number;
  ts: number;
  lat: number;
  lng: number;
  cell: bigint;
  values: number[];
}

interface Shape {
  name: string;
  ddl: (table: string, hypertable: string) => string;
  columns: string;
  rows: (m: Msg) => string;
  deviceKeyQuery: (table: string) => string;
  placeQuery: (table: string) => string;
}

const iso = (ms: number) => new Date(ms).toISOString();

const SHAPES: Shape[] = [
  {
    name: 'narrow (one row per key)',
    ddl: (t, ht) => `CREATE TABLE ${t} (device_id int4 NOT NULL, key_id int2 NOT NULL, ts timestamptz NOT NULL, value float8 NOT NULL, cell int8);
      ${ht}
      CREATE UNIQUE INDEX ON ${t} (device_id, key_id, ts DESC); CREATE INDEX ON ${t} (cell, ts);`,
    columns: '(device_id, key_id, ts, value, cell)',
    rows: (m) => m.values.map((v, k) => `${m.device}\t${k}\t${iso(m.ts)}\t${v}\t${m.cell}\n`).join(''),
    deviceKeyQuery: (t) => `SELECT ts, value FROM ${t} WHERE device_id = $1 AND key_id = $2 AND ts <= $3 ORDER BY ts DESC LIMIT 100`,
    placeQuery: (t) => `SELECT count(*) FROM ${t} WHERE cell BETWEEN $1 AND $2 AND ts >= $3 AND ts < $4`,
  },
  {
    name: 'medium, jsonb values (one row per message)',
    ddl: (t, ht) => `CREATE TABLE ${t} (device_id int4 NOT NULL, ts timestamptz NOT NULL, cell int8, lat float8, lng float8, alt real, vals jsonb NOT NULL);
      ${ht}
      CREATE UNIQUE INDEX ON ${t} (device_id, ts DESC); CREATE INDEX ON ${t} (cell, ts);`,
    columns: '(device_id, ts, cell, lat, lng, alt, vals)',
    rows: (m) => `${m.device}\t${iso(m.ts)}\t${m.cell}\t${m.lat}\t${m.lng}\t\\N\t${JSON.stringify(Object.fromEntries(KEYS.map((k, i) => [k, m.values[i]])))}\n`,
    deviceKeyQuery: (t) => `SELECT ts, (vals ->> (ARRAY['water_level','flow_rate','rainfall_1h','battery'])[$2::int + 1])::float8 FROM ${t}
       WHERE device_id = $1 AND ts <= $3 AND vals ? (ARRAY['water_level','flow_rate','rainfall_1h','battery'])[$2::int + 1] ORDER BY ts DESC LIMIT 100`,
    placeQuery: (t) => `SELECT count(*) FROM ${t} WHERE cell BETWEEN $1 AND $2 AND ts >= $3 AND ts < $4`,
  },
  {
    name: 'medium, key/value arrays',
    ddl: (t, ht) => `CREATE TABLE ${t} (device_id int4 NOT NULL, ts timestamptz NOT NULL, cell int8, lat float8, lng float8, alt real, keys int2[] NOT NULL, vals float8[] NOT NULL);
      ${ht}
      CREATE UNIQUE INDEX ON ${t} (device_id, ts DESC); CREATE INDEX ON ${t} (cell, ts);`,
    columns: '(device_id, ts, cell, lat, lng, alt, keys, vals)',
    rows: (m) => `${m.device}\t${iso(m.ts)}\t${m.cell}\t${m.lat}\t${m.lng}\t\\N\t{0,1,2,3}\t{${m.values.join(',')}}\n`,
    deviceKeyQuery: (t) => `SELECT ts, vals[array_position(keys, $2::int2)] FROM ${t} WHERE device_id = $1 AND ts <= $3 AND $2::int2 = ANY (keys) ORDER BY ts DESC LIMIT 100`,
    placeQuery: (t) => `SELECT count(*) FROM ${t} WHERE cell BETWEEN $1 AND $2 AND ts >= $3 AND ts < $4`,
  },
  {
    name: 'wide (one column per key, per device type)',
    ddl: (t, ht) => `CREATE TABLE ${t} (device_id int4 NOT NULL, ts timestamptz NOT NULL, cell int8, lat float8, lng float8, alt real,
        water_level float8, flow_rate float8, rainfall_1h float8, battery float8);
      ${ht}
      CREATE UNIQUE INDEX ON ${t} (device_id, ts DESC); CREATE INDEX ON ${t} (cell, ts);`,
    columns: '(device_id, ts, cell, lat, lng, alt, water_level, flow_rate, rainfall_1h, battery)',
    rows: (m) => `${m.device}\t${iso(m.ts)}\t${m.cell}\t${m.lat}\t${m.lng}\t\\N\t${m.values.join('\t')}\n`,
    deviceKeyQuery: (t) => `SELECT ts, (ARRAY[water_level, flow_rate, rainfall_1h, battery])[$2::int + 1] FROM ${t} WHERE device_id = $1 AND ts <= $3 ORDER BY ts DESC LIMIT 100`,
    placeQuery: (t) => `SELECT count(*) FROM ${t} WHERE cell BETWEEN $1 AND $2 AND ts >= $3 AND ts < $4`,
  },
];

function* messages(): Generator<Msg> {
  const rng = createRng(7);
  const sites = Array.from({ length: DEVICES }, () => {
    const lat = 22.7 + rng.next() * 0.42;
    const lng = 113.55 + rng.next() * 0.65;
    return { lat, lng, cell: cellToBigInt(latLngToCell(lat, lng, 15)) };
  });
  const perDevice = Math.ceil(MESSAGES / DEVICES);
  const step = Math.floor(SPAN_MS / perDevice);
  for (let i = 0; i < MESSAGES; i++) {
    const device = i % DEVICES;
    const site = sites[device]!;
    const ts = T0 + Math.floor(i / DEVICES) * step + (device % 1000);
    yield { device: device + 1, ts, ...site, values: [rng.next() * 10, rng.next() * 500, rng.next() * 20, 50 + rng.next() * 50] };
  }
}

async function copy(client: pg.PoolClient, table: string, columns: string, text: string): Promise<void> {
  await pipeline(Readable.from([text]), client.query(copyStreams.from(`COPY ${table} ${columns} FROM STDIN`)));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main() {
  const db = await benchDatabase();
  const pool = new pg.Pool({ connectionString: db.url, max: 2 });
  const timescale = (await pool.query(`SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'`)).rowCount === 1;
  if (timescale) await pool.query('CREATE EXTENSION IF NOT EXISTS timescaledb');
  const version = (await pool.query(`SELECT current_setting('server_version') AS v`)).rows[0].v;
  console.log(`# readings table shapes — ${MESSAGES.toLocaleString()} messages × ${KEYS.length} values, ${DEVICES} devices, ${timescale ? 'TimescaleDB hypertables (1-day chunks)' : 'plain PostgreSQL'} ${version}`);
  console.log('| shape | COPY messages/s | Node encoding messages/s | values/s | table+indexes | device+key, last 100 (median ms) | place, 1 h window (median ms) |');
  console.log('|---|---|---|---|---|---|---|');
  const all = [...messages()];
  const rng = createRng(11);
  const probeDevices = Array.from({ length: 200 }, () => 1 + rng.int(DEVICES));
  const placeCells = Array.from({ length: 50 }, () => {
    const m = all[rng.int(all.length)]!;
    return descendantRange(cellToParent(latLngToCell(m.lat, m.lng, 15), 7));
  });
  for (const [i, shape] of SHAPES.entries()) {
    const table = `bench_shape_${i}`;
    await pool.query(`DROP TABLE IF EXISTS ${table}`);
    const ht = timescale ? `SELECT create_hypertable('${table}', 'ts', chunk_time_interval => interval '1 day', create_default_indexes => false);` : '';
    await pool.query(shape.ddl(table, ht));
    const client = await pool.connect();
    // Encoding is timed apart: ingest encodes one batch while the database writes the previous one.
    const encodeStarted = process.hrtime.bigint();
    const batches: string[] = [];
    for (let b = 0; b < all.length; b += BATCH) batches.push(all.slice(b, b + BATCH).map(shape.rows).join(''));
    const encodeSeconds = Number(process.hrtime.bigint() - encodeStarted) / 1e9;
    const started = process.hrtime.bigint();
    for (const text of batches) {
      await client.query('BEGIN');
      await copy(client, table, shape.columns, text);
      await client.query('COMMIT');
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    client.release();
    await pool.query(`ANALYZE ${table}`);
    const size = (await pool.query(timescale ? `SELECT hypertable_size('${table}') AS b` : `SELECT pg_total_relation_size('${table}') AS b`)).rows[0].b;
    const deviceKey: number[] = [];
    for (const [n, d] of probeDevices.entries()) {
      const t = process.hrtime.bigint();
      await pool.query(shape.deviceKeyQuery(table), [d, n % KEYS.length, new Date(T0 + SPAN_MS)]);
      deviceKey.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    const place: number[] = [];
    for (const [n, [lo, hi]] of placeCells.entries()) {
      const from = T0 + ((n * 3_600_000) % SPAN_MS);
      const t = process.hrtime.bigint();
      await pool.query(shape.placeQuery(table), [lo.toString(), hi.toString(), new Date(from), new Date(from + 3_600_000)]);
      place.push(Number(process.hrtime.bigint() - t) / 1e6);
    }
    console.log(
      `| ${shape.name} | ${formatRate(all.length / seconds)} | ${formatRate(all.length / encodeSeconds)} | ${formatRate((all.length * KEYS.length) / seconds)} | ${(Number(size) / 1048576).toFixed(0)} MB | ${median(deviceKey).toFixed(2)} | ${median(place).toFixed(2)} |`,
    );
    await pool.query(`DROP TABLE ${table}`);
  }
  await pool.end();
  await db.stop();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
