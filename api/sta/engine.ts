import type pg from 'pg';
import type { ExpandItem, QueryOptions, StaQuery } from './query/ast.ts';
import { StaQueryError } from './query/errors.ts';
import { SOURCES, type EntitySource, type Row } from './entities.ts';
import { FilterCompiler } from './filter-sql.ts';
import { MODEL, navigationOf, type EntityType } from './model.ts';
import { pathResult, type EntityId, type ResourcePath } from './resource-path.ts';
import { StaSql } from './sql-context.ts';

/**
 * Answers a SensorThings request (a resource path and its query options) from the entity sources
 * (entities.ts): resolves the path step by step (each step's entity must exist and be in scope,
 * else 404), reads one page in the set's stable order (its id), counts, expands level by level —
 * one statement per level for all the parents of the page, a LATERAL per parent so that each
 * parent's `$top` is an index scan — and renders the JSON with absolute links.
 */

/** `$top` when none is given, and the most one page holds (FROST's defaults). */
export const DEFAULT_TOP = 100;
export const MAX_TOP = 10_000;

/** A SensorThings answer that is not a query-option error: 404 (names nothing), 501 (not served). */
export class StaError extends Error {
  readonly expose = true as const;
  constructor(
    readonly statusCode: 404 | 405 | 501,
    message: string,
    readonly code = statusCode === 404 ? 'sta_not_found' : statusCode === 405 ? 'sta_read_only' : 'sta_not_implemented',
  ) {
    super(message);
  }
}

export interface StaEnv {
  client: pg.PoolClient;
  /** Called before every statement after the first: keeps the request's statements within one time budget. */
  next: () => Promise<void>;
  visible: readonly number[] | null;
  readingsArea: ConstructorParameters<typeof StaSql>[1];
  /** The service root's absolute URL (`https://host/sta/v1.1`). */
  root: string;
  /** The server's absolute URL (`https://host`). */
  server: string;
  /** The request's query parameters as received, for nextLinks. */
  rawQuery: Readonly<Record<string, unknown>>;
}

export const sourceOf = (type: EntityType): EntitySource => {
  const source = SOURCES[type];
  if (!source) throw new StaError(501, `${MODEL[type].set} are not implemented yet by this server (see the service root's conformance)`);
  return source;
};

/** Columns equal to values: one parent's (or the path's) restriction. */
interface Restriction {
  cols: string[];
  tuples: unknown[][];
}

const COLUMN_TYPES: Record<string, string> = { device_id: 'int4', key_id: 'int4', type_name: 'text', ts: 'timestamptz', foi_ts: 'timestamptz', loc_ts: 'timestamptz', current_ts: 'timestamptz' };
/** A column value as a parameter: node-pg reads PostgreSQL's ±infinity timestamps as ±Infinity, which JSON cannot carry. */
const asParameter = (v: unknown): unknown => (v === -Infinity ? '-infinity' : v === Infinity ? 'infinity' : v);

/** The entity set's listing condition (entities.ts `listed`), as a prefix of a WHERE. */
const listed = (source: EntitySource): string => (source.listed ? `e.${source.listed} AND ` : '');

class Reader {
  private statements = 0;
  constructor(private readonly env: StaEnv) {}

  private async query<T extends pg.QueryResultRow>(sql: string, values: unknown[]): Promise<T[]> {
    if (this.statements++ > 0) await this.env.next();
    return (await this.env.client.query<T>(sql, values)).rows;
  }

  private ctx(): StaSql {
    return new StaSql(this.env.visible, this.env.readingsArea);
  }

  /** WHERE and ORDER BY of one level's options; errors name the option (`$expand` for a nested level's). */
  private clauses(ctx: StaSql, source: EntitySource, options: QueryOptions, level: 'top' | 'nested') {
    const option = (name: string) => (level === 'nested' ? '$expand' : name);
    checkSelect(source, options, option('$select'));
    const col = (c: string) => `e.${c}`;
    const filter = options.filter ? new FilterCompiler(ctx, option('$filter')).condition(options.filter, source, col) : 'true';
    const orderCompiler = new FilterCompiler(ctx, option('$orderby'));
    const order = [
      ...options.orderby.flatMap((k) => orderCompiler.orderKey(k.expr, source, col).map((sql) => `${sql} ${k.descending ? 'DESC' : 'ASC'}`)),
      ...source.order.map((c) => `e.${c}`),
    ].join(', ');
    return { filter, order };
  }

  /** The restriction's tuples as rows `p` (p.i their index, p.c0… the values), and SQL equating `e`'s columns with them. */
  private parents(ctx: StaSql, restriction: Restriction): { from: string; equal: string } {
    const records = restriction.tuples.map((t, i) => Object.fromEntries([['i', i], ...t.map((v, j) => [`c${j}`, asParameter(v)])]));
    const columns = restriction.cols.map((c, j) => `c${j} ${COLUMN_TYPES[c]}`).join(', ');
    return {
      from: `jsonb_to_recordset(${ctx.add(JSON.stringify(records), '::jsonb')}) AS p(i int4, ${columns})`,
      equal: restriction.cols.map((c, j) => `e.${c} = p.c${j}`).join(' AND '),
    };
  }

  /** Rows of `source` per restriction tuple (one list per tuple; one list when there is none). */
  async rows(source: EntitySource, options: QueryOptions, level: 'top' | 'nested', restriction: Restriction | undefined, limit: number, skip: number): Promise<Row[][]> {
    const ctx = this.ctx();
    const { filter, order } = this.clauses(ctx, source, options, level);
    if (!restriction) {
      const sql = `SELECT e.* FROM (${source.sql(ctx)}) e WHERE ${listed(source)}${filter} ORDER BY ${order} LIMIT ${ctx.add(limit, '::int8')} OFFSET ${ctx.add(skip, '::int8')}`;
      return [await this.query<Row>(sql, ctx.params.values)];
    }
    if (restriction.tuples.length === 0) return [];
    const { from, equal } = this.parents(ctx, restriction);
    const sql = `SELECT p.i AS "__parent", c.* FROM ${from}
      CROSS JOIN LATERAL (SELECT e.* FROM (${source.sql(ctx)}) e WHERE ${equal} AND ${filter} ORDER BY ${order} LIMIT ${ctx.add(limit, '::int8')} OFFSET ${ctx.add(skip, '::int8')}) c`;
    const grouped: Row[][] = restriction.tuples.map(() => []);
    for (const row of await this.query<Row>(sql, ctx.params.values)) grouped[row.__parent as number]!.push(row);
    return grouped;
  }

  async count(source: EntitySource, options: QueryOptions, restriction: Restriction | undefined): Promise<number> {
    const ctx = this.ctx();
    if (source.countAll && !options.filter && !restriction) return Number((await this.query<{ n: string }>(source.countAll(ctx), ctx.params.values))[0]!.n);
    const { filter } = this.clauses(ctx, source, { ...options, orderby: [] }, 'top');
    const equal = restriction ? restriction.cols.map((c, j) => `e.${c} = ${ctx.add(asParameter(restriction.tuples[0]![j]), `::${COLUMN_TYPES[c]}`)}`) : [];
    const rows = await this.query<{ n: string }>(`SELECT count(*) AS n FROM (${source.sql(ctx)}) e WHERE ${restriction ? '' : listed(source)}${[...equal, filter].join(' AND ')}`, ctx.params.values);
    return Number(rows[0]!.n);
  }

  /** How many entities each restriction tuple has (a `$count` inside `$expand`). */
  async counts(source: EntitySource, options: QueryOptions, restriction: Restriction): Promise<number[]> {
    if (restriction.tuples.length === 0) return [];
    const ctx = this.ctx();
    const { filter } = this.clauses(ctx, source, { ...options, orderby: [] }, 'nested');
    const { from, equal } = this.parents(ctx, restriction);
    const rows = await this.query<{ i: number; n: string }>(`SELECT p.i, (SELECT count(*) FROM (${source.sql(ctx)}) e WHERE ${equal} AND ${filter}) AS n FROM ${from}`, ctx.params.values);
    const out = restriction.tuples.map(() => 0);
    for (const r of rows) out[r.i] = Number(r.n);
    return out;
  }

  /** Expands `items` on `rows` of `source`, in place (under `__expanded`), level by level. */
  async expand(source: EntitySource, rows: Row[], items: readonly ExpandItem[]): Promise<void> {
    for (const item of items) {
      const navigation = navigationOf(source.type, item.navigation);
      if (!navigation) throw new StaQueryError('$expand', item.at, `${source.type} has no navigation property "${item.navigation}" (${Object.keys(MODEL[source.type].navigation).join(', ')})`);
      const target = sourceOf(navigation.target);
      const pairs = source.links[item.navigation];
      if (!pairs) throw new StaError(501, `${source.type}/${item.navigation} is not implemented yet`);
      const limit = navigation.many ? Math.min(item.options.top ?? DEFAULT_TOP, MAX_TOP) : 1;
      const restriction = { cols: pairs.map(([theirs]) => theirs), tuples: rows.map((r) => pairs.map(([, ours]) => r[ours])) };
      const children = await this.rows(target, item.options, 'nested', restriction, limit, item.options.skip ?? 0);
      const counts = item.options.count && navigation.many ? await this.counts(target, item.options, restriction) : undefined;
      await this.expand(target, children.flat(), item.options.expand);
      rows.forEach((row, i) => {
        const expanded = ((row.__expanded as Record<string, unknown> | undefined) ??= {});
        expanded[item.navigation] = { many: navigation.many, source: target, rows: children[i] ?? [], options: item.options, count: counts?.[i] };
      });
    }
  }
}

/** $select names properties, `id`, or navigation properties served (18-088 §9.3.2.2). */
function checkSelect(source: EntitySource, options: QueryOptions, option: string): void {
  for (const p of options.select ?? []) {
    if (p.segments.length !== 1) throw new StaQueryError(option, p.at, 'selecting a member of a property is not implemented', 'unsupported');
    const name = String(p.segments[0]);
    const rendered = ['id', '@iot.id', ...Object.keys(source.properties), ...Object.keys(source.links)];
    if (!rendered.includes(name)) {
      if (name in MODEL[source.type].navigation || MODEL[source.type].properties.includes(name)) throw new StaQueryError(option, p.at, `${source.type}/${name} is not served by this server`, 'unsupported');
      throw new StaQueryError(option, p.at, `${source.type} has no property "${name}" (${rendered.join(', ')})`);
    }
  }
}

interface Expanded {
  many: boolean;
  /** `$count=true` inside the expansion: how many there are in all. */
  count: number | undefined;
  source: EntitySource;
  rows: Row[];
  options: QueryOptions;
}

/** How an id is written in a resource path: `5`, or `'12-5'` (a quote doubled). */
export const idInPath = (id: EntityId): string => (typeof id === 'number' ? String(id) : `'${encodeURIComponent(id.replaceAll("'", "''")).replaceAll('%27', "'")}'`);

export function selfLink(root: string, source: EntitySource, row: Row): string {
  return `${root}/${MODEL[source.type].set}(${idInPath(source.idOf(row))})`;
}

/** An entity's JSON: @iot.id, @iot.selfLink, its properties ($select), navigation links and what was expanded. */
function entityJson(env: StaEnv, source: EntitySource, row: Row, options: QueryOptions): Record<string, unknown> {
  const self = selfLink(env.root, source, row);
  const selected = options.select?.map((p) => String(p.segments[0]));
  const want = (name: string) => !selected || selected.includes(name) || (name === '@iot.id' && selected.includes('id'));
  const out: Record<string, unknown> = {};
  if (want('@iot.id')) out['@iot.id'] = source.idOf(row);
  if (!selected) out['@iot.selfLink'] = self;
  for (const [name, value] of Object.entries(source.render(row, env.server))) if (want(name)) out[name] = value;
  const expanded = (row.__expanded ?? {}) as Record<string, Expanded>;
  for (const nav of Object.keys(source.links)) {
    if (expanded[nav]) {
      const x = expanded[nav];
      if (x.count !== undefined) out[`${nav}@iot.count`] = x.count;
      out[nav] = x.many ? x.rows.map((r) => entityJson(env, x.source, r, x.options)) : x.rows[0] ? entityJson(env, x.source, x.rows[0], x.options) : null;
    } else if (want(nav)) out[`${nav}@iot.navigationLink`] = `${self}/${nav}`;
  }
  return out;
}

/** Query text as QGIS sends it: only what must be encoded is (`$ ' ( ) , / ; :` stay as they are). */
const encodeQueryValue = (v: string): string =>
  encodeURIComponent(v).replace(/%(24|27|28|29|2C|2F|3B|3A|3D|40)/gi, (m) => decodeURIComponent(m));

/** The next page's absolute link: `$top` first (QGIS rewrites the first `$top=`), then `$skip`, then the other options as given. */
function nextLink(env: StaEnv, path: string, top: number, skip: number): string {
  const rest = Object.entries(env.rawQuery)
    .filter(([k, v]) => !['$top', '$skip'].includes(k.toLowerCase()) && typeof v === 'string')
    .map(([k, v]) => `${encodeQueryValue(k)}=${encodeQueryValue(v as string)}`);
  return `${env.root}/${path}?${[`$top=${top}`, `$skip=${skip}`, ...rest].join('&')}`;
}

export interface StaAnswer {
  /** A JSON body, or raw text for `/$value`. */
  body: unknown;
  raw?: boolean;
}

/** The answer to one GET of `path` (after the service root) with `query`. */
export async function answer(env: StaEnv, pathText: string, path: ResourcePath, query: StaQuery): Promise<StaAnswer> {
  if (query.resultFormat) throw new StaQueryError('$resultFormat', 0, '$resultFormat=dataArray is not implemented', 'unsupported');
  const reader = new Reader(env);
  const [first, ...steps] = path.steps;
  let source = sourceOf(first!.type);
  let restriction: Restriction | undefined;
  let what = MODEL[first!.type].set;
  const withId = (src: EntitySource, id: EntityId | undefined, base: Restriction | undefined, label: string): Restriction | undefined => {
    if (id === undefined) return base;
    const values = src.parseId(id);
    if (!values) throw new StaError(404, `no ${src.type} ${label}(${idInPath(id)}): ${src.type} ids look like ${src.idForm}`);
    return { cols: [...(base?.cols ?? []), ...src.keys.map((k) => k.col)], tuples: [[...(base?.tuples[0] ?? []), ...values]] };
  };
  restriction = withId(source, first!.id, undefined, what);
  if (first!.id !== undefined) what += `(${idInPath(first!.id)})`;
  for (const step of steps) {
    const [row] = (await reader.rows(source, { expand: [], orderby: [] }, 'top', restriction, 1, 0))[0] ?? [];
    if (!row) throw new StaError(404, `no ${what} (or it is outside this credential's scope)`);
    const nav = (step.via as { navigation: string }).navigation;
    const target = sourceOf(step.type);
    const pairs = source.links[nav];
    if (!pairs) throw new StaError(501, `${source.type}/${nav} is not implemented yet`);
    restriction = withId(target, step.id, { cols: pairs.map(([theirs]) => theirs), tuples: [pairs.map(([, ours]) => row[ours])] }, nav);
    what += `/${nav}${step.id !== undefined ? `(${idInPath(step.id)})` : ''}`;
    source = target;
  }

  const kind = pathResult(path);
  if (kind === 'collection') {
    const top = Math.min(query.top ?? DEFAULT_TOP, MAX_TOP);
    const skip = query.skip ?? 0;
    const body: Record<string, unknown> = {};
    if (query.count) body['@iot.count'] = await reader.count(source, query, restriction);
    const rows = top === 0 ? [] : ((await reader.rows(source, query, 'top', restriction, top + 1, skip))[0] ?? []);
    const more = rows.length > top;
    if (more) rows.length = top;
    if (more) body['@iot.nextLink'] = nextLink(env, pathText, top, skip + top);
    if (path.ref) {
      body.value = rows.map((r) => ({ '@iot.selfLink': selfLink(env.root, source, r) }));
      return { body };
    }
    await reader.expand(source, rows, query.expand);
    body.value = rows.map((r) => entityJson(env, source, r, query));
    return { body };
  }
  const [row] = (await reader.rows(source, { expand: [], orderby: [] }, 'top', restriction, 1, 0))[0] ?? [];
  if (!row) throw new StaError(404, `no ${what} (or it is outside this credential's scope)`);
  if (path.ref) return { body: { '@iot.selfLink': selfLink(env.root, source, row) } };
  if (kind === 'property') {
    const property = path.property!;
    const all = entityJson(env, source, row, { expand: [], orderby: [] });
    if (!(property in all)) throw new StaError(501, `${source.type}/${property} is not served by this server`);
    const value = all[property];
    if (path.rawValue) return { body: value === null ? '' : typeof value === 'object' ? JSON.stringify(value) : String(value), raw: true };
    return { body: { [property]: value } };
  }
  checkSelect(source, query, '$select');
  await reader.expand(source, [row], query.expand);
  return { body: entityJson(env, source, row, query) };
}
