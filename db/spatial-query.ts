import type pg from 'pg';
import type { Domain } from '../core/domains.ts';
import { visibleDomains, type Scope } from '../core/access/scope.ts';
import type { DeviceRegistry } from '../core/registry.ts';
import { areaContains, type Area } from '../geo/area.ts';
import type { LatestTracker } from '../ingest/latest.ts';
import type { GeometryWork } from '../core/geometry-pool.ts';
import { areaRowsSql, planScoped, planScopedWith, type ScopedPlan, type Params } from './area-query.ts';
import type { KeyDictionary } from './keys.ts';
import { inTransaction } from './pool.ts';
import { BusyError } from '../core/busy.ts';
import { readingsTable } from './readings-tables.ts';

/** What a spatial request selects, checked (api/spatial-selection.ts parses it): window is [from, to). */
export interface Selection {
  area: Area;
  from: Date;
  to: Date;
  domains: Domain[];
  types: string[] | undefined;
  keys: string[] | undefined;
  /** The asking principal's scope (core/access/scope.ts): rows outside its area are left out. */
  scope?: Scope;
}

/** The selection narrowed to a scope: its domains only, and its area applied to every row. */
export const withinScope = (sel: Selection, scope: Scope): Selection => ({ ...sel, domains: visibleDomains(scope, sel.domains), scope });

/** A spatial request made concrete for SQL: the tables to read, device ids and key ids to keep. */
export interface ResolvedSelection extends Pick<Selection, 'area' | 'from' | 'to' | 'scope'> {
  /** Domains whose readings tables are read (narrowed by the device types asked for). */
  domains: Domain[];
  /** Only these devices (the device types asked for); undefined: all. */
  deviceIds: number[] | undefined;
  /** Only rows holding at least one of these keys; undefined: all. */
  keyIds: number[] | undefined;
  /** The area whose plan drives the query and the one that filters (db/area-query.ts planScoped). */
  reading: ScopedPlan;
}

export interface SpatialDeps {
  pool: pg.Pool;
  registry: DeviceRegistry;
  keys: KeyDictionary;
  positions: DevicePositions;
  /** Longest a spatial statement may run (SPATIAL_STATEMENT_TIMEOUT_MS); past it PostgreSQL cancels it. */
  statementTimeoutMs: number;
  /** Where a request's geometry work runs (core/geometry-pool.ts); without it, on this thread. */
  geometry?: GeometryWork;
  /** How many heavy queries (history, aggregates) use the database at once (runHeavy); without it, no limit. */
  queries?: QueryGate;
}

/**
 * At most `max` heavy spatial queries use the database at once, and at most `queue` wait for a
 * turn; beyond that QueryBusyError (503, Retry-After). On a small machine the database's cores are
 * also ingest's: four concurrent polygon queries delayed PUBACKs (the commits) to a 200 ms p99 in
 * bench:hostile, while the API kept answering.
 */
export class QueryGate {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly max: number,
    readonly queue: number,
  ) {}

  get busy(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Runs `fn` in turn; `wait`: never refused for a full queue (a streaming export must not break mid-way; exports have their own bound). */
  async run<T>(fn: () => Promise<T>, options: { wait?: boolean } = {}): Promise<T> {
    if (this.running >= this.max) {
      if (!options.wait && this.waiting.length >= this.queue) throw new QueryBusyError(`${this.running} heavy spatial queries are running and ${this.waiting.length} waiting (SPATIAL_MAX_CONCURRENT_QUERIES=${this.max}); retry shortly`);
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    } else this.running++;
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      if (next) next(); // the slot passes on
      else this.running--;
    }
  }
}

export const QUERY_RETRY_AFTER_S = 2;

/** Too many heavy queries running and waiting: answered 503 with Retry-After. */
export class QueryBusyError extends BusyError {
  override readonly name = 'QueryBusyError';
  constructor(message: string) {
    super('queries_busy', message, QUERY_RETRY_AFTER_S);
  }
}

/** A heavy query (history, aggregates; an export's fetches, waiting) through the gate, when there is one. */
export const runHeavy = <T>(deps: Pick<SpatialDeps, 'queries'>, fn: () => Promise<T>, options: { wait?: boolean } = {}): Promise<T> =>
  deps.queries ? deps.queries.run(fn, options) : fn();

/** PostgreSQL's code for a statement cancelled by statement_timeout. */
export const QUERY_CANCELED = '57014';

/**
 * Runs `fn` on one connection in a read-only transaction with the spatial session settings:
 * statement_timeout bounds every statement, and JIT is off (it compiles these generated
 * predicates for longer than they run). A cursor may be used inside `fn`. A request whose
 * statements together must stay within the timeout (history pages, aggregates) calls `next()`
 * before each further statement: it lowers statement_timeout to what is left, or fails with
 * QueryTimeout when nothing is (a streamed export does not: each of its statements is bounded).
 */
export function withSpatialSession<T>(
  deps: Pick<SpatialDeps, 'pool' | 'statementTimeoutMs'>,
  window: { from: Date; to: Date } | undefined,
  fn: (client: pg.PoolClient, next: () => Promise<void>) => Promise<T>,
): Promise<T> {
  return inTransaction(deps.pool, async (client) => {
    const started = Date.now();
    const limit = Math.max(1, Math.round(deps.statementTimeoutMs));
    await client.query(`SET TRANSACTION READ ONLY; SET LOCAL statement_timeout = ${limit}; SET LOCAL jit = off${sessionSettings(window)}`);
    return fn(client, async () => {
      const left = limit - (Date.now() - started);
      if (left <= 0) throw new QueryTimeout(`the query ran longer than ${limit} ms (SPATIAL_STATEMENT_TIMEOUT_MS)`);
      await client.query(`SET LOCAL statement_timeout = ${left}`);
    });
  });
}

/**
 * A request of several statements ran out of SPATIAL_STATEMENT_TIMEOUT_MS between two of them:
 * answered as a statement PostgreSQL cancelled (same code).
 */
export class QueryTimeout extends Error {
  override readonly name = 'QueryTimeout';
  readonly code = QUERY_CANCELED;
}

/** Windows this short read too few rows for parallel workers to pay for their start. */
export const SHORT_WINDOW_MS = 6 * 3_600_000;

/**
 * Settings for a window: no parallel workers over a short one. Their start costs 10–20 ms on a
 * busy machine, more than such a window's whole scan; the planner still chooses them when a
 * scope's filter raises its cost estimate (bench:spatial, scoped whole-city hour: 35 → 10 ms).
 */
export const sessionSettings = (window?: { from: Date; to: Date }): string =>
  window && window.to.getTime() - window.from.getTime() <= SHORT_WINDOW_MS ? '; SET LOCAL max_parallel_workers_per_gather = 0' : '';

/**
 * Where devices are, for the planner's estimate of how much of the data an area holds: each
 * device's latest position (LatestTracker), re-read at most every `refreshMs`.
 */
export class DevicePositions {
  private snapshot: { at: number; points: [number, number][] } | undefined;
  private loading: Promise<[number, number][]> | undefined;

  constructor(
    private readonly latest: Pick<LatestTracker, 'all'>,
    private readonly refreshMs = 60_000,
  ) {}

  /** The share of device positions in the area, tested on `geometry`'s threads when given. */
  async fractionInside(area: Area, geometry?: GeometryWork): Promise<number> {
    const points = await this.points();
    if (points.length === 0) return 0;
    // A sample is enough for an estimate; a fixed stride keeps it deterministic.
    const stride = Math.max(1, Math.floor(points.length / 4000));
    const n = Math.ceil(points.length / stride);
    if (geometry) {
      const sample = new Float64Array(2 * n);
      for (let i = 0, k = 0; i < points.length; i += stride, k += 2) [sample[k], sample[k + 1]] = points[i]!;
      const flags = await geometry.inside(area, sample);
      return flags.reduce((a, b) => a + b, 0) / n;
    }
    let inside = 0;
    for (let i = 0; i < points.length; i += stride) if (areaContains(area, points[i]![0], points[i]![1])) inside++;
    return inside / n;
  }

  private async points(): Promise<[number, number][]> {
    if (this.snapshot && Date.now() - this.snapshot.at < this.refreshMs) return this.snapshot.points;
    this.loading ??= this.latest
      .all()
      .then((all) => all.flatMap((d): [number, number][] => (d.position ? [[d.position.lng, d.position.lat]] : [])))
      .finally(() => (this.loading = undefined));
    const points = await this.loading;
    this.snapshot = { at: Date.now(), points };
    return points;
  }
}

/** Resolves types to device ids and key names to ids, and plans the area. */
export async function resolveSelection(
  deps: SpatialDeps,
  sel: Selection,
): Promise<ResolvedSelection> {
  let domains = [...sel.domains];
  let deviceIds: number[] | undefined;
  if (sel.types) {
    const typeDomains = new Set(sel.types.map((t) => deps.registry.deviceType(t)?.domain));
    domains = domains.filter((d) => typeDomains.has(d));
    deviceIds = (await Promise.all(sel.types.map((t) => deps.registry.deviceIdsOfType(t)))).flat();
  }
  const keyIds = sel.keys?.map((k) => deps.keys.id(k)).filter((id): id is number => id !== undefined);
  const windowMs = sel.to.getTime() - sel.from.getTime();
  const scopeArea = sel.scope?.area ?? undefined;
  const { geometry } = deps;
  const [requestFraction, scopeFraction] = await Promise.all([
    deps.positions.fractionInside(sel.area, geometry),
    scopeArea ? deps.positions.fractionInside(scopeArea, geometry) : 1,
  ]);
  const reading = geometry
    ? await planScopedWith((area, cells) => geometry.cover(area, cells), sel.area, requestFraction, scopeArea, scopeFraction, windowMs)
    : planScoped(sel.area, requestFraction, scopeArea, scopeFraction, windowMs);
  return { area: sel.area, from: sel.from, to: sel.to, domains, deviceIds, keyIds, reading, scope: sel.scope };
}

/**
 * One domain's readings of the selection in [from, to): a SELECT of `columns` over the readings
 * row `r` (device_id, ts, cell, lat, lng, alt, keys, vals), with the selection's filters and any
 * `where` conditions of the caller (e.g. a keyset position). `from`/`to` may be narrowed by the
 * caller (time slices) as long as they stay inside the selection's window.
 */
export function selectionRowsSql(
  sel: ResolvedSelection,
  domain: Domain,
  columns: string,
  params: Params,
  options: { from?: Date; to?: Date; where?: readonly string[] } = {},
): string {
  const where = [...(options.where ?? [])];
  if (sel.deviceIds) where.push(`r.device_id = ANY (${params.add(sel.deviceIds, '::int4[]')})`);
  if (sel.keyIds) {
    // A key's value is in keys/vals (a number) or in jvals under its id (another type).
    where.push(`(r.keys && ${params.add(sel.keyIds, '::int2[]')} OR r.jvals ?| ${params.add(sel.keyIds.map(String), '::text[]')})`);
  }
  const { drive, plan, also } = sel.reading;
  return areaRowsSql({
    also,
    table: readingsTable(domain),
    area: drive,
    plan,
    from: params.add(options.from ?? sel.from),
    to: params.add(options.to ?? sel.to),
    columns,
    where,
    params,
  });
}

/** True when nothing can match (types of other domains, no such devices, unknown keys). */
export const selectsNothing = (sel: ResolvedSelection): boolean =>
  sel.domains.length === 0 || sel.deviceIds?.length === 0 || sel.keyIds?.length === 0;
