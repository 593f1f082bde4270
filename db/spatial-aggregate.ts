import type pg from 'pg';
import type { Domain } from '../core/domains.ts';
import { bigIntToCell } from '../geo/cell.ts';
import { Params } from './area-query.ts';
import { HOUR, MINUTE, planSources, type Segment, type Source } from './buckets.ts';
import { rollupTable } from './rollups.ts';
import { selectionRowsSql, type ResolvedSelection, type SpatialDeps } from './spatial-query.ts';
import { exactAreaSql } from './spatial-sql.ts';
import { scopeAreaSql } from '../core/access/scope.ts';

/**
 * Spatial aggregates (heatmaps): one numeric key per (H3 cell at a chosen resolution) × (time
 * bucket) over an area and window — count, sum, avg, min, max and percentiles. Readings are
 * stored with their res-15 cell as an integer; the parent cell is computed in SQL with bit
 * operations (parentCellSql), so no extension is needed.
 */

/** More raw segments than this (many minutes with pending late data): one raw scan instead. */
const MAX_RAW_SEGMENTS = 20;

/**
 * The H3 parent at `resolution` (0…15) of the res-15 cell in `cell` (an int8 SQL expression), as
 * an int8 H3 index. H3 index bits: resolution in bits 52–55, then 3 bits per digit from
 * resolution 1 (bits 42–44) to 15 (bits 0–2); a cell's digits below its resolution are 7. So the
 * parent keeps digits 1…R, sets the resolution field to R and every finer digit to 7.
 */
export function parentCellSql(cell: string, resolution: number): string {
  if (!Number.isInteger(resolution) || resolution < 0 || resolution > 15) throw new RangeError(`H3 resolution must be 0…15, not ${resolution}`);
  const finer = (1n << BigInt(3 * (15 - resolution))) - 1n;
  const keep = BigInt.asIntN(64, ~((0xfn << 52n) | finer));
  const set = (BigInt(resolution) << 52n) | finer;
  return `((${cell} & (${keep})::int8) | (${set})::int8)`;
}

/** Position columns that can be aggregated like keys (raw readings only: they are not rolled up). */
export type PositionColumn = 'lat' | 'lng' | 'alt';

export interface AggregateQuery {
  /** The selection (its keyIds already narrowed to the aggregated key, when it is a telemetry key). */
  sel: ResolvedSelection;
  /** The aggregated value: a telemetry key id, or a position column. */
  value: { keyId: number } | { column: PositionColumn };
  resolution: number;
  /** Buckets of `intervalMs` aligned to `originMs` (date_bin); one bucket for the whole window: intervalMs = to − from, originMs = from. */
  intervalMs: number;
  originMs: number;
  /** Fractions 0…1; any percentile makes the query read raw readings only. */
  percentiles: readonly number[];
  /** Read the raw readings only (`source=raw`, and the reference in tests). */
  rawOnly: boolean;
  /** At most this many rows are returned; `truncated` says when there were more. */
  maxRows: number;
  /** Called before each statement after the first (withSpatialSession's `next`: the statements together stay within the timeout). */
  next?: () => Promise<void>;
}

export interface AggregateRow {
  /** H3 index (hex string) at the requested resolution. */
  cell: string;
  /** Bucket start, epoch ms. */
  bucket: number;
  count: number;
  sum: number;
  avg: number;
  min: number;
  max: number;
  /** Aligned with the query's percentiles. */
  percentiles: number[];
}

export interface AggregateResult {
  /** Ordered by bucket, then cell. */
  rows: AggregateRow[];
  /** Sources read, coarsest first. */
  sources: Source[];
  truncated: boolean;
}

/** Devices whose buckets may come from rollups: they stand still at their registered location. */
interface FixedDevices {
  /** Inside the area: their rollups count at their registered cell. */
  insideIds: number[];
  insideCells: string[];
  /** Devices (existing, of the selection's types) that are not fixed: always read raw. */
  otherIds: number[];
}

/**
 * Devices of the selection that are "fixed": of a type that does not move, with a registered
 * location, and whose description has not changed since the window began (a relocated device's
 * earlier readings are elsewhere). Ingest stores the registered location with each of their
 * readings, so a rollup bucket of such a device is exactly its readings at that cell.
 */
async function fixedDevices(client: pg.ClientBase, deps: Pick<SpatialDeps, 'registry'>, sel: ResolvedSelection, domain: Domain): Promise<FixedDevices> {
  const types = deps.registry.deviceTypes().filter((t) => t.domain === domain);
  const still = types.filter((t) => !t.moving).map((t) => t.name);
  const params = new Params();
  const scoped = sel.scope && scopeAreaSql(sel.scope, { lng: 'd.lng', lat: 'd.lat', cell: 'd.cell' });
  const inside = exactAreaSql(sel.area, { lng: 'd.lng', lat: 'd.lat', cell: 'd.cell' }, undefined, params) + (scoped ? ` AND ${scoped}` : '');
  const fixed = `d.type = ANY (${params.add(still, '::text[]')}) AND d.cell IS NOT NULL AND d.updated_at <= ${params.add(sel.from, '::timestamptz')}`;
  const where = [`d.type = ANY (${params.add(types.map((t) => t.name), '::text[]')})`];
  if (sel.deviceIds) where.push(`d.id = ANY (${params.add(sel.deviceIds, '::int4[]')})`);
  const { rows } = await client.query<{ inside_ids: number[] | null; inside_cells: string[] | null; other_ids: number[] | null }>(
    `SELECT array_agg(d.id) FILTER (WHERE ${fixed} AND ${inside}) AS inside_ids,
            array_agg(d.cell::text) FILTER (WHERE ${fixed} AND ${inside}) AS inside_cells,
            array_agg(d.id) FILTER (WHERE NOT (${fixed})) AS other_ids
       FROM devices d WHERE ${where.join(' AND ')}`,
    params.values,
  );
  const r = rows[0];
  return { insideIds: r?.inside_ids ?? [], insideCells: r?.inside_cells ?? [], otherIds: r?.other_ids ?? [] };
}

/** The rollup watermark and the minutes with late readings of these devices not rolled up yet. */
async function rollupState(client: pg.ClientBase, deviceIds: number[], from: number, to: number): Promise<{ done: number | undefined; invalid: number[] }> {
  const { rows } = await client.query<{ done: number | null; invalid: number[] }>(
    `SELECT (extract(epoch FROM (SELECT done FROM rollup_state)) * 1000)::float8 AS done,
            ARRAY(SELECT DISTINCT (extract(epoch FROM bucket) * 1000)::float8 FROM rollup_invalidations
                   WHERE device_id = ANY ($1::int4[]) AND bucket >= $2 AND bucket < $3) AS invalid`,
    [deviceIds, new Date(Math.floor(from / MINUTE) * MINUTE), new Date(to)],
  );
  return { done: rows[0]?.done ?? undefined, invalid: rows[0]?.invalid ?? [] };
}

/** The rollup unit the buckets allow: whole hours → 1 h rollups, whole minutes → 1 min, else none. */
function rollupUnit(q: AggregateQuery): number {
  const wholeWindow = q.originMs === q.sel.from.getTime() && q.intervalMs === q.sel.to.getTime() - q.sel.from.getTime();
  // One bucket over the whole window: every rollup bucket inside the window nests in it.
  if (wholeWindow) return q.intervalMs >= HOUR ? HOUR : q.intervalMs >= MINUTE ? MINUTE : 0;
  // Buckets aligned to the origin (a whole hour) nest rollup buckets of the unit they are multiples of.
  if (q.originMs % HOUR !== 0) return 0;
  return q.intervalMs % HOUR === 0 ? HOUR : q.intervalMs % MINUTE === 0 ? MINUTE : 0;
}

/**
 * The aggregates of the query, in one read-only statement per call (run it inside
 * withSpatialSession). Where rollups are exact — fixed devices (fixedDevices), whole rollup buckets
 * inside the window, before the rollup watermark, minutes without pending late data — they are
 * read instead of the raw readings; everything else (moving devices, other devices, the window's
 * edges, recent data) is read raw. Each part yields partial aggregates (count, sum, min, max)
 * combined per cell and bucket, so the result equals the raw aggregate (avg and sum up to
 * floating-point rounding). Percentiles and position columns always come from raw readings.
 */
export async function spatialAggregate(client: pg.ClientBase, deps: Pick<SpatialDeps, 'registry'>, q: AggregateQuery): Promise<AggregateResult> {
  const { sel } = q;
  const from = sel.from.getTime();
  const to = sel.to.getTime();
  const params = new Params();
  const interval = params.add(`${q.intervalMs} milliseconds`, '::interval');
  const origin = params.add(new Date(q.originMs).toISOString(), '::timestamptz');
  const parent = (cell: string) => parentCellSql(cell, q.resolution);
  const keyId = 'keyId' in q.value ? params.add(q.value.keyId, '::int2') : undefined;
  // Derived from keyId in SQL, not a parameter of its own: a statement of rollup parts only would leave it unused (untyped).
  const keyText = keyId !== undefined ? `(${keyId})::text` : undefined;
  // A number, or a boolean as 1 or 0 (as the rollups count it: db/rollups.ts NUMBERS_AND_BOOLEANS); strings and JSON are left out.
  const value =
    keyId !== undefined
      ? `coalesce(r.vals[array_position(r.keys, ${keyId})], (r.jvals -> ${keyText} = 'true'::jsonb)::int::float8)`
      : `r.${(q.value as { column: PositionColumn }).column}::float8`;
  const notNull =
    keyId !== undefined
      ? [`(${keyId} = ANY (r.keys) OR jsonb_typeof(r.jvals -> ${keyText}) = 'boolean')`]
      : 'column' in q.value && q.value.column === 'alt'
        ? ['r.alt IS NOT NULL']
        : [];
  const rawColumns = `${parent('r.cell')} AS c, date_bin(${interval}, r.ts, ${origin}) AS b, ${value} AS v`;
  const existing = 'EXISTS (SELECT 1 FROM devices d WHERE d.id = r.device_id)';

  const sources = new Set<Source>();
  const rawParts: string[] = [];
  const rollupParts: string[] = [];
  const unit = q.rawOnly || q.percentiles.length > 0 || keyId === undefined ? 0 : rollupUnit(q);
  let statements = 0;

  for (const domain of sel.domains) {
    let fixed: FixedDevices | undefined;
    let plan: Segment[] = [];
    if (unit !== 0) {
      if (statements++ > 0) await q.next?.();
      fixed = await fixedDevices(client, deps, sel, domain);
      if (fixed.insideIds.length > 0) {
        if (statements++ > 0) await q.next?.();
        const state = await rollupState(client, fixed.insideIds, from, to);
        plan = planSources({ from, to, intervalMs: unit, done: state.done, invalidMinutes: state.invalid });
      }
    }
    const rollupSegments = plan.filter((s) => s.source !== 'raw');
    if (!fixed || rollupSegments.length === 0) {
      // Raw only: the readings of existing devices (deleted devices' readings are left out, as in every spatial query).
      rawParts.push(selectionRowsSql(sel, domain, rawColumns, params, { where: [existing, ...notNull] }));
      continue;
    }
    // Devices that are not fixed: their raw readings over the whole window.
    if (fixed.otherIds.length > 0) {
      rawParts.push(selectionRowsSql(sel, domain, rawColumns, params, { where: [`r.device_id = ANY (${params.add(fixed.otherIds, '::int4[]')})`, ...notNull] }));
    }
    // Fixed devices inside the area: raw where rollups are not complete, rollups elsewhere.
    const insideIds = params.add(fixed.insideIds, '::int4[]');
    const rawSegments = plan.filter((s) => s.source === 'raw');
    const rawRanges =
      rawSegments.length > MAX_RAW_SEGMENTS
        ? [{ start: from, end: to }] // fall back to one raw scan (the rollup parts are then dropped below)
        : rawSegments;
    for (const s of rawRanges) {
      rawParts.push(selectionRowsSql(sel, domain, rawColumns, params, { from: new Date(s.start), to: new Date(s.end), where: [`r.device_id = ANY (${insideIds})`] }));
    }
    if (rawSegments.length > MAX_RAW_SEGMENTS) continue;
    const cells = params.add(fixed.insideCells, '::int8[]');
    for (const s of rollupSegments) {
      sources.add(s.source);
      const [a, z] = [params.add(new Date(s.start).toISOString(), '::timestamptz'), params.add(new Date(s.end).toISOString(), '::timestamptz')];
      // LATERAL … OFFSET 0: one primary-key range scan per device, whatever the planner guesses of the list.
      rollupParts.push(
        `SELECT ${parent('f.cell')} AS c, date_bin(${interval}, x.bucket, ${origin}) AS b, x.count::int8 AS n, x.sum AS s, x.min AS lo, x.max AS hi
           FROM unnest(${insideIds}, ${cells}) AS f(id, cell)
           CROSS JOIN LATERAL (SELECT x.bucket, x.count, x.sum, x.min, x.max FROM ${rollupTable(s.source as '1m' | '1h', domain)} x
                                WHERE x.device_id = f.id AND x.key_id = ${keyId} AND x.bucket >= ${a} AND x.bucket < ${z} OFFSET 0) x`,
      );
    }
  }
  if (rawParts.length === 0 && rollupParts.length === 0) return { rows: [], sources: [], truncated: false };
  if (rawParts.length > 0) sources.add('raw');
  const limit = params.add(q.maxRows + 1);

  let sql: string;
  if (q.percentiles.length > 0) {
    const fractions = params.add(q.percentiles, '::float8[]');
    sql =
      `SELECT p.c::text AS c, (extract(epoch FROM p.b) * 1000)::float8 AS b, count(*)::int8 AS n, sum(p.v) AS s, min(p.v) AS lo, max(p.v) AS hi,` +
      ` percentile_cont(${fractions}) WITHIN GROUP (ORDER BY p.v) AS pct` +
      ` FROM (${rawParts.join(' UNION ALL ')}) p GROUP BY p.c, p.b ORDER BY p.b, p.c LIMIT ${limit}`;
  } else {
    const parts = [...rawParts.map((raw) => `SELECT w.c, w.b, 1::int8 AS n, w.v AS s, w.v AS lo, w.v AS hi FROM (${raw}) w`), ...rollupParts];
    sql =
      `SELECT p.c::text AS c, (extract(epoch FROM p.b) * 1000)::float8 AS b, sum(p.n)::int8 AS n, sum(p.s) AS s, min(p.lo) AS lo, max(p.hi) AS hi` +
      ` FROM (${parts.join(' UNION ALL ')}) p GROUP BY p.c, p.b ORDER BY p.b, p.c LIMIT ${limit}`;
  }
  if (statements > 0) await q.next?.();
  const { rows } = await client.query<{ c: string; b: number; n: string; s: number; lo: number; hi: number; pct?: number[] }>(sql, params.values);
  const truncated = rows.length > q.maxRows;
  return {
    rows: rows.slice(0, q.maxRows).map((r) => {
      const count = Number(r.n);
      return { cell: bigIntToCell(r.c), bucket: r.b, count, sum: r.s, avg: r.s / count, min: r.lo, max: r.hi, percentiles: r.pct ?? [] };
    }),
    sources: (['1h', '1m', 'raw'] as const).filter((s) => sources.has(s)),
    truncated,
  };
}
