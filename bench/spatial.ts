/**
 * The H3 path against the obvious PostGIS design, on the same ~10M located readings (TimescaleDB):
 * district polygon, town polygon and whole-city bbox, each over 1 h and 7 d. Each query runs
 * through GuanLink's area query engine (db/area-query.ts, the one the REST API uses) on the
 * GuanLink table, and as `ST_Intersects` with a GiST index on the PostGIS table; both return a
 * count and a digest of every (device, ts) — computed from the rows, so both read them — and for
 * the 1 h windows the full sorted key lists are compared. Sides alternate; medians of 7 runs.
 *
 * A scoped case: the same H3 query as an agency key limited to a few towns asks it (the scope's
 * area applied to every row, db/area-query.ts planScoped), timed against the unscoped H3 query
 * (target ≤ 1.2×), and its rows checked against an independent filter of the unscoped rows.
 *
 * Run: `npm run bench:spatial` (DATABASE_URL: a TimescaleDB with PostGIS; unset: the project's
 * TimescaleDB from scripts/timescaledb.sh, which must be up). The data is kept between runs.
 */
import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { planArea, planScoped, areaRowsSql, Params, type AreaPlan, type ScopedPlan } from '../db/area-query.ts';
import { DEFAULT_TOWNS } from '../geo/towns.ts';
import { areaContains, parseBbox, parsePolygon, type Area } from '../geo/area.ts';
import { coverArea } from '../geo/cover.ts';
import { benchDatabase } from './support.ts';
import { sessionSettings } from '../db/spatial-query.ts';
import { DONGGUAN_BBOX, H3_TABLE, POSTGIS_TABLE, ensureDataset, type DatasetSpec } from './spatial/dataset.ts';

const SPEC: DatasetSpec = { staticDevices: 2500, movingDevices: 1000, days: 30, intervalMinutes: 15, seed: 7, end: Date.UTC(2026, 9, 31) };
const RUNS = Number(process.env.BENCH_RUNS ?? 7);

const DISTRICT = [[113.745, 23.005], [113.762, 23.004], [113.765, 23.018], [113.75, 23.022], [113.742, 23.015], [113.745, 23.005]];
const TOWN = [[113.62, 22.78], [113.72, 22.76], [113.76, 22.82], [113.74, 22.9], [113.66, 22.92], [113.6, 22.86], [113.62, 22.78]];
const AREAS: { name: string; area: Area }[] = [
  { name: 'district polygon (~2.6 km²)', area: { kind: 'polygon', geometry: parsePolygon({ type: 'Polygon', coordinates: [DISTRICT] }) } },
  { name: 'town polygon (~150 km²)', area: { kind: 'polygon', geometry: parsePolygon({ type: 'Polygon', coordinates: [TOWN] }) } },
  { name: 'whole-city bbox', area: parseBbox([DONGGUAN_BBOX.minLng, DONGGUAN_BBOX.minLat, DONGGUAN_BBOX.maxLng, DONGGUAN_BBOX.maxLat]) },
];
// An agency of the south-west and the centre: five towns/subdistricts (the shipped approximate areas).
const SCOPE_TOWNS = ['虎门镇', '厚街镇', '东城街道', '莞城街道', '南城街道'];
const SCOPE_AREA: Area = { kind: 'polygon', geometry: DEFAULT_TOWNS.union(SCOPE_TOWNS).geometry };

const WINDOWS = [
  { name: '1 h', ms: 3_600_000 },
  { name: '7 d', ms: 7 * 86_400_000 },
];

const DIGEST = `count(*)::int8 AS n, coalesce(sum(hashint4(device_id) # timestamp_hash(ts::timestamp)), 0)::int8 AS digest`;
const KEYS = `device_id, (extract(epoch FROM ts) * 1000)::int8 AS ms`;

function h3Sql(area: Area, plan: AreaPlan, from: Date, to: Date, select: string, table = H3_TABLE): { text: string; values: unknown[] } {
  const params = new Params();
  const inner = areaRowsSql({ table, area, plan, from: params.add(from), to: params.add(to), columns: 'r.device_id, r.ts', params });
  return { text: `SELECT ${select} FROM (${inner}) q`, values: params.values };
}

/** What an agency scoped to SCOPE_TOWNS reads: both areas on every row, the smaller one driving. */
function scopedSql(scoped: ScopedPlan, from: Date, to: Date, select: string): { text: string; values: unknown[] } {
  const params = new Params();
  const inner = areaRowsSql({ table: H3_TABLE, area: scoped.drive, plan: scoped.plan, from: params.add(from), to: params.add(to), columns: 'r.device_id, r.ts', also: scoped.also, params });
  return { text: `SELECT ${select} FROM (${inner}) q`, values: params.values };
}

function postgisSql(area: Area, from: Date, to: Date, select: string, table = POSTGIS_TABLE): { text: string; values: unknown[] } {
  const shape =
    area.kind === 'bbox'
      ? `ST_MakeEnvelope(${area.bbox.join(', ')}, 4326)`
      : area.kind === 'polygon'
        ? `ST_GeomFromGeoJSON('${JSON.stringify(area.geometry)}')`
        : (() => {
            throw new Error('not benchmarked');
          })();
  return { text: `SELECT ${select} FROM ${table} r WHERE r.ts >= $1 AND r.ts < $2 AND ST_Intersects(r.geom, ${shape})`, values: [from, to] };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const now = () => Number(process.hrtime.bigint()) / 1e6;

async function timed(client: pg.Client, build: () => { text: string; values: unknown[] }): Promise<{ ms: number; row: { n: string; digest: string } }> {
  const t = now();
  const { text, values } = build();
  const { rows } = await client.query<{ n: string; digest: string }>(text, values);
  return { ms: now() - t, row: rows[0]! };
}

async function databaseUrl(): Promise<string> {
  if (!process.env.DATABASE_URL) {
    try {
      process.env.DATABASE_URL = execFileSync('scripts/timescaledb.sh', ['url'], { encoding: 'utf8' }).trim();
    } catch {
      throw new Error('bench:spatial needs TimescaleDB with PostGIS: set DATABASE_URL, or run `npm run db:timescale` first');
    }
  }
  return (await benchDatabase('guanlink_bench')).url;
}

async function main() {
  const url = await databaseUrl();
  const pool = new pg.Pool({ connectionString: url, max: 2 });
  await pool.query('CREATE EXTENSION IF NOT EXISTS timescaledb');
  await pool.query('CREATE EXTENSION IF NOT EXISTS postgis');
  const started = Date.now();
  const { rows, reused } = await ensureDataset(pool, SPEC, (m) => console.log(m));
  console.log(`dataset: ${rows.toLocaleString()} readings of ${SPEC.staticDevices + SPEC.movingDevices} devices over ${SPEC.days} days (${reused ? 'reused' : `built in ${Math.round((Date.now() - started) / 1000)} s`})`);

  // What device_state holds in the platform: each device's latest position, for the plan's estimate.
  const positions = (
    await pool.query<{ lng: number; lat: number }>(
      `SELECT DISTINCT ON (device_id) lng, lat FROM ${H3_TABLE} WHERE ts > $1 ORDER BY device_id, ts DESC`,
      [new Date(SPEC.end - 2 * 3_600_000)],
    )
  ).rows;
  await pool.end();

  const sessions: pg.Client[] = [];
  for (let i = 0; i < 2; i++) {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    // The same settings on both sides: JIT compiles these short queries for longer than they run.
    await c.query('SET jit = off');
    sessions.push(c);
  }
  const [h3Client, gisClient] = sessions as [pg.Client, pg.Client];
  const setting = (await h3Client.query<{ w: string }>(`SELECT current_setting('max_parallel_workers_per_gather') AS w`)).rows[0]!.w;
  console.log(`both sessions: jit off, max_parallel_workers_per_gather ${setting}; ${RUNS} runs per side, alternating, median`);
  console.log('');
  console.log(`${'query'.padEnd(36)} ${'rows'.padStart(9)}  ${'plan'.padEnd(22)} ${'H3 ms'.padStart(8)} ${'PostGIS ms'.padStart(11)} ${'ratio'.padStart(6)}   PostGIS on H3 layout`);

  const ratios: number[] = [];
  const scopedRatios: number[] = [];
  const scopedLines: string[] = [];
  let identical = true;
  const scopeInside = positions.filter((p) => areaContains(SCOPE_AREA, p.lng, p.lat)).length / positions.length;
  const end = new Date(SPEC.end);
  for (const { name, area } of AREAS) {
    const coverStarted = now();
    coverArea(area);
    const coverMs = now() - coverStarted;
    const inside = positions.filter((p) => areaContains(area, p.lng, p.lat)).length / positions.length;
    for (const w of WINDOWS) {
      const from = new Date(SPEC.end - w.ms);
      let plan = planArea(area, inside, w.ms);
      const h3 = () => {
        plan = planArea(area, inside, w.ms);
        return h3Sql(area, plan, from, end, DIGEST);
      };
      const gis = () => postgisSql(area, from, end, DIGEST);
      const gisOnH3 = () => postgisSql(area, from, end, DIGEST, H3_TABLE);
      // Warm-up (caches, the cover cache), then alternate.
      const first = [await timed(h3Client, h3), await timed(gisClient, gis), await timed(gisClient, gisOnH3)];
      const times: [number[], number[], number[]] = [[], [], []];
      for (let i = 0; i < RUNS; i++) {
        const order = i % 2 === 0 ? [0, 1, 2] : [1, 2, 0];
        for (const k of order) {
          const r = await timed(k === 0 ? h3Client : gisClient, [h3, gis, gisOnH3][k]!);
          times[k]!.push(r.ms);
          if (r.row.n !== first[k]!.row.n || r.row.digest !== first[k]!.row.digest) identical = false;
        }
      }
      const same = first.every((f) => f.row.n === first[0]!.row.n && f.row.digest === first[0]!.row.digest);
      let setsEqual = true;
      if (w.ms <= 3_600_000) {
        const h = h3Sql(area, plan, from, end, KEYS);
        const a = (await h3Client.query(h.text + ' ORDER BY 1, 2', h.values)).rows;
        const p = postgisSql(area, from, end, KEYS);
        const b = (await gisClient.query(p.text + ' ORDER BY 1, 2', p.values)).rows;
        setsEqual = JSON.stringify(a) === JSON.stringify(b);
      }
      if (!same || !setsEqual) {
        identical = false;
        console.log(`  MISMATCH ${name} ${w.name}: H3 ${first[0]!.row.n}/${first[0]!.row.digest}, PostGIS ${first[1]!.row.n}/${first[1]!.row.digest}, PostGIS on H3 layout ${first[2]!.row.n}/${first[2]!.row.digest}`);
      }
      const [h, g, gh] = times.map(median) as [number, number, number];
      ratios.push(h / g);
      const planText = plan.strategy === 'ranges' ? `ranges (${plan.cover.inside.length + plan.cover.edge.length})` : plan.cover ? 'scan + cells' : 'scan, exact';
      console.log(
        `${`${name}, ${w.name}`.padEnd(36)} ${Number(first[0]!.row.n).toLocaleString().padStart(9)}  ${planText.padEnd(22)} ${h.toFixed(1).padStart(8)} ${g.toFixed(1).padStart(11)} ${(h / g).toFixed(2).padStart(6)}   ${gh.toFixed(1)}`,
      );
    }
    console.log(`  ${name}: ${(inside * 100).toFixed(1)} % of devices inside; cover computed cold in ${coverMs.toFixed(0)} ms (then cached)`);
    // The scoped case: the same query through a town-scoped key, against the unscoped H3 query.
    for (const w of WINDOWS) {
      const from = new Date(SPEC.end - w.ms);
      // The platform's spatial session settings for this window (db/spatial-query.ts), on both sides.
      const settings = sessionSettings({ from, to: end });
      for (const client of sessions) await client.query(`RESET max_parallel_workers_per_gather${settings.replace('LOCAL ', '')}`);
      const unscoped = () => h3Sql(area, planArea(area, inside, w.ms), from, end, DIGEST);
      const scoped = () => scopedSql(planScoped(area, inside, SCOPE_AREA, scopeInside, w.ms), from, end, DIGEST);
      await timed(h3Client, unscoped);
      const firstScoped = await timed(gisClient, scoped);
      const times: [number[], number[]] = [[], []];
      for (let i = 0; i < RUNS; i++) {
        for (const k of i % 2 === 0 ? [0, 1] : [1, 0]) times[k]!.push((await timed(k === 0 ? h3Client : gisClient, k === 0 ? unscoped : scoped)).ms);
      }
      // Exactness: the scoped rows are the unscoped rows whose position Turf places in the scope.
      if (w.ms <= 3_600_000) {
        const all = h3Sql(area, planArea(area, inside, w.ms), from, end, 'device_id, ts');
        const withPos = all.text.replace('r.device_id, r.ts', 'r.device_id, r.ts, r.lng, r.lat').replace('SELECT device_id, ts FROM', 'SELECT device_id, (extract(epoch FROM ts) * 1000)::int8 AS ms, lng, lat FROM');
        const rows = (await h3Client.query<{ device_id: number; ms: string; lng: number; lat: number }>(withPos, all.values)).rows;
        const expected = rows.filter((r) => areaContains(SCOPE_AREA, r.lng, r.lat)).map((r) => `${r.device_id}@${r.ms}`).sort();
        const s = scopedSql(planScoped(area, inside, SCOPE_AREA, scopeInside, w.ms), from, end, KEYS);
        const got = (await gisClient.query<{ device_id: number; ms: string }>(s.text, s.values)).rows.map((r) => `${r.device_id}@${r.ms}`).sort();
        if (JSON.stringify(got) !== JSON.stringify(expected)) {
          identical = false;
          console.log(`  MISMATCH scoped ${name} ${w.name}: ${got.length} rows, expected ${expected.length}`);
        }
      }
      const [u, s] = times.map(median) as [number, number];
      scopedRatios.push(s / u);
      const drive = planScoped(area, inside, SCOPE_AREA, scopeInside, w.ms).drive === SCOPE_AREA ? 'scope drives' : 'request drives';
      scopedLines.push(`${`${name}, ${w.name}`.padEnd(36)} ${Number(firstScoped.row.n).toLocaleString().padStart(9)}  ${drive.padEnd(15)} ${u.toFixed(1).padStart(8)} ${s.toFixed(1).padStart(9)} ${(s / u).toFixed(2).padStart(6)}`);
    }
  }
  for (const c of sessions) await c.end();
  const geomean = (xs: number[]) => Math.exp(xs.reduce((s, r) => s + Math.log(r), 0) / xs.length);
  console.log('');
  console.log(`Scoped: the same H3 queries through a key scoped to ${SCOPE_TOWNS.join(', ')} (${(scopeInside * 100).toFixed(1)} % of devices)`);
  console.log(`${'query'.padEnd(36)} ${'rows'.padStart(9)}  ${'plan'.padEnd(15)} ${'H3 ms'.padStart(8)} ${'scoped ms'.padStart(9)} ${'ratio'.padStart(6)}`);
  for (const line of scopedLines) console.log(line);
  console.log('');
  console.log(`RESULT h3_vs_postgis=${geomean(ratios).toFixed(2)} scoped_vs_unscoped=${geomean(scopedRatios).toFixed(2)} scoped_max=${Math.max(...scopedRatios).toFixed(2)} identical=${identical}`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
