import type { Geometry } from 'geojson';
import { areaFilterSql } from '../../db/area-query.ts';
import type { Area } from '../../geo/area.ts';
import type { ArithmeticOperator, ComparisonOperator, Expr, LiteralExpr, PathExpr } from './query/ast.ts';
import { filterArea } from './filter-area.ts';
import { StaQueryError } from './query/errors.ts';
import { SOURCES, type EntitySource, type Kind } from './entities.ts';
import { MODEL, navigationOf } from './model.ts';
import type { StaSql } from './sql-context.ts';

/**
 * A parsed `$filter` or `$orderby` expression (query/ast.ts) as SQL over an entity source's row
 * (entities.ts), every value a bind parameter. Typed as it goes: comparing a name with a number
 * is a 400 at the name's position; what parses but is not translated (a value through a to-many
 * path without any(), geo.distance…) is a 501 naming it. JSON members (`properties/x`, `location/geometry/type`,
 * `result`) compare only with a value of the same JSON type: otherwise, or when the member is
 * missing, the comparison is false, never an error (QGIS's type filter relies on it).
 */

type Typed = { sql: string; kind: Kind | 'boolean' | 'null' } | { kind: 'geometry'; geometry: Geometry; at: number } | { kind: 'id'; source: EntitySource; cols: Record<string, string>; at: number };

export interface Columns {
  /** SQL of a column of the current entity's row. */
  (col: string): string;
}

export class FilterCompiler {
  private aliases = 0;
  /** Lambda variables in scope: what `d` in `Datastreams/any(d: d/name eq 'x')` stands for. */
  private readonly variables = new Map<string, { source: EntitySource; col: Columns }>();

  constructor(
    private readonly ctx: StaSql,
    /** The query option being translated, for errors ($filter, or $expand for nested options). */
    private readonly option: string,
  ) {}

  private bad(at: number, reason: string): never {
    throw new StaQueryError(this.option, at, reason);
  }
  private unsupported(at: number, reason: string): never {
    throw new StaQueryError(this.option, at, reason, 'unsupported');
  }

  /** A boolean condition (a $filter). */
  condition(expr: Expr, source: EntitySource, col: Columns): string {
    const t = this.expr(expr, source, col);
    if (t.kind !== 'boolean') this.bad(expr.at, 'a $filter must be a condition (a comparison, a boolean function, and/or/not)');
    return t.sql;
  }

  /** An $orderby key: the SQL values it orders by (an id of several parts is several). */
  orderKey(expr: Expr, source: EntitySource, col: Columns): string[] {
    const t = this.expr(expr, source, col);
    if (t.kind === 'id') return t.source.keys.map((k) => t.cols[k.col]!);
    if (t.kind === 'geometry') return this.bad(expr.at, 'cannot order by a geometry');
    return [t.sql];
  }

  private expr(e: Expr, source: EntitySource, col: Columns): Typed {
    switch (e.kind) {
      case 'literal':
        return this.literal(e);
      case 'path':
        return this.path(e, source, col);
      case 'lambda':
        return this.lambda(e, source, col);
      case 'not': {
        const t = this.expr(e.operand, source, col);
        if (t.kind !== 'boolean') this.bad(e.operand.at, 'not takes a condition');
        return { sql: `(NOT coalesce(${t.sql}, false))`, kind: 'boolean' };
      }
      case 'negate': {
        const t = this.number(this.expr(e.operand, source, col), e.operand.at);
        return { sql: `(- ${t})`, kind: 'number' };
      }
      case 'binary': {
        if (e.op === 'and' || e.op === 'or') {
          const [l, r] = [this.expr(e.left, source, col), this.expr(e.right, source, col)];
          if (l.kind !== 'boolean') this.bad(e.left.at, `${e.op} takes conditions on both sides`);
          if (r.kind !== 'boolean') this.bad(e.right.at, `${e.op} takes conditions on both sides`);
          return { sql: `(${l.sql} ${e.op.toUpperCase()} ${r.sql})`, kind: 'boolean' };
        }
        if (['add', 'sub', 'mul', 'div', 'mod'].includes(e.op)) return this.arithmetic(e.op as ArithmeticOperator, e.left, e.right, source, col);
        return this.compare(e.op as ComparisonOperator, e.left, e.right, e.at, source, col);
      }
      case 'call':
        return this.call(e, source, col);
    }
  }

  private literal(e: LiteralExpr): Typed {
    switch (e.type) {
      case 'null':
        return { sql: 'NULL', kind: 'null' };
      case 'boolean':
        return { sql: this.ctx.add(e.value, '::boolean'), kind: 'boolean' };
      case 'string':
        return { sql: this.ctx.add(e.value, '::text'), kind: 'text' };
      case 'integer':
      case 'decimal':
        return { sql: this.ctx.add(e.text, '::float8'), kind: 'number' };
      case 'datetime':
        return { sql: this.ctx.add(e.text, '::timestamptz'), kind: 'time' };
      case 'date':
        return { sql: this.ctx.add(`${e.text}T00:00:00Z`, '::timestamptz'), kind: 'time' };
      case 'duration':
        return this.unsupported(e.at, 'durations are not implemented');
      case 'geometry':
        return { kind: 'geometry', geometry: e.geometry, at: e.at };
    }
  }

  /** A property path from the current entity: a property, a JSON member in one, or a to-one navigation followed further. */
  private path(e: PathExpr, source: EntitySource, col: Columns): Typed {
    if (e.variable !== undefined) {
      const bound = this.variables.get(e.variable);
      if (!bound) return this.bad(e.at, `"${e.variable}" is not a lambda variable here`);
      if (e.segments.length === 0) return this.bad(e.at, `${e.variable} is an entity: name one of its properties (${e.variable}/id)`);
      return this.path({ ...e, variable: undefined }, bound.source, bound.col);
    }
    const [first, ...rest] = e.segments;
    if (typeof first !== 'string') return this.bad(e.at, 'a path starts with a name');
    if (first === 'id' || first === '@iot.id') {
      if (rest.length > 0) this.bad(e.at, `${first} has no members`);
      return { kind: 'id', source, cols: Object.fromEntries(source.keys.map((k) => [k.col, col(k.col)])), at: e.at };
    }
    const navigation = navigationOf(source.type, first);
    if (navigation) {
      if (navigation.many) this.unsupported(e.at, `a value through the collection ${first} is not implemented: ask with ${first}/any(x: x/…)`);
      const target = SOURCES[navigation.target];
      const pairs = source.links[first];
      if (!target || !pairs) return this.unsupported(e.at, `${source.type}/${first} is not served`);
      if (rest.length === 0) this.bad(e.at, `${first} is an entity: name one of its properties (${first}/id)`);
      const local = Object.fromEntries(pairs.map(([theirs, ours]) => [theirs, col(ours)]));
      // `Datastream/id`: the target's key columns are ours; no subquery (and the readings' indexes serve it).
      if ((rest[0] === 'id' || rest[0] === '@iot.id') && rest.length === 1 && target.keys.every((k) => k.col in local)) return { kind: 'id', source: target, cols: local, at: e.at };
      const alias = `n${++this.aliases}`;
      const inner = this.path({ ...e, segments: rest }, target, (c) => `${alias}.${c}`);
      if (inner.kind === 'geometry') return this.unsupported(e.at, 'geometries across a navigation are not implemented');
      const where = pairs.map(([theirs, ours]) => `${alias}.${theirs} = ${col(ours)}`).join(' AND ');
      // An id further on (`Datastream/Thing/id`) is a value: a number for an integer id, else its text.
      const [value, kind]: [string, Kind | 'boolean' | 'null'] =
        inner.kind === 'id' ? (inner.source.keys.length === 1 && inner.source.keys[0]!.type === 'int4' ? [inner.cols[inner.source.keys[0]!.col]!, 'number'] : [this.idText(inner), 'text']) : [inner.sql, inner.kind];
      return { sql: `(SELECT ${value} FROM (${target.sql(this.ctx)}) ${alias} WHERE ${where} LIMIT 1)`, kind };
    }
    const property = source.properties[first];
    if (!property) {
      const known = [...Object.keys(source.properties), ...Object.keys(source.links)];
      return this.bad(e.at, `${source.type} has no property "${first}" here (${known.join(', ')})`);
    }
    if (rest.length === 0) return { sql: col(property.col), kind: property.kind };
    if (property.kind !== 'json') this.bad(e.at, `${first} is not a JSON value: it has no members`);
    return { sql: `(${col(property.col)} #> ${this.ctx.add(rest.map(String), '::text[]')})`, kind: 'json' };
  }

  /**
   * `EXISTS` an entity reached from `source` through the navigation `segments` (any cardinality)
   * for which `inner` holds: lambdas and spatial functions on another entity's geometry.
   */
  private exists(source: EntitySource, col: Columns, segments: readonly (string | number)[], at: number, inner: (target: EntitySource, col: Columns) => string): string {
    const [first, ...rest] = segments;
    const navigation = typeof first === 'string' ? navigationOf(source.type, first) : undefined;
    if (!navigation) return this.bad(at, `${source.type} has no navigation property "${String(first)}" (${Object.keys(MODEL[source.type].navigation).join(', ')})`);
    const target = SOURCES[navigation.target];
    const pairs = source.links[first as string];
    if (!target || !pairs) return this.unsupported(at, `${source.type}/${String(first)} is not served`);
    const alias = `n${++this.aliases}`;
    const tcol: Columns = (c) => `${alias}.${c}`;
    const where = pairs.map(([theirs, ours]) => `${alias}.${theirs} = ${col(ours)}`).join(' AND ');
    const body = rest.length === 0 ? inner(target, tcol) : this.exists(target, tcol, rest, at, inner);
    return `EXISTS (SELECT 1 FROM (${target.sql(this.ctx)}) ${alias} WHERE ${where} AND ${body})`;
  }

  /** `Datastreams/any(d: d/name eq 'x')`, `…/all(…)` (OData 4.0 §5.1.1.10): EXISTS, and NOT EXISTS of a counter-example. */
  private lambda(e: Extract<Expr, { kind: 'lambda' }>, source: EntitySource, col: Columns): Typed {
    const start = e.collection.variable !== undefined ? this.variables.get(e.collection.variable) : { source, col };
    if (!start) return this.bad(e.at, `"${e.collection.variable}" is not a lambda variable here`);
    const sql = this.exists(start.source, start.col, e.collection.segments, e.collection.at, (target, tcol) => {
      if (!e.predicate || e.variable === undefined) return 'true';
      if (this.variables.has(e.variable)) this.bad(e.at, `the lambda variable "${e.variable}" is already in use`);
      this.variables.set(e.variable, { source: target, col: tcol });
      try {
        // Paths without the variable still name the outer entity (OData's $it).
        const t = this.expr(e.predicate, source, col);
        if (t.kind !== 'boolean') this.bad(e.predicate.at, `${e.quantifier}() takes a condition`);
        return e.quantifier === 'all' ? `NOT coalesce(${t.sql}, false)` : t.sql;
      } finally {
        this.variables.delete(e.variable);
      }
    });
    return { sql: e.quantifier === 'all' ? `(NOT ${sql})` : sql, kind: 'boolean' };
  }

  /** Geometry paths: the entity's point position, for the spatial functions. */
  private geometryOperand(e: Expr, source: EntitySource, col: Columns): { lng: string; lat: string; cell: string } | undefined {
    if (e.kind !== 'path' || e.segments.length !== 1 || source.geometry?.property !== e.segments[0]) return undefined;
    const g = source.geometry!;
    return { lng: col(g.lng), lat: col(g.lat), cell: col(g.cell) };
  }

  private number(t: Typed, at: number): string {
    if (t.kind === 'number') return t.sql;
    if (t.kind === 'json') return `(CASE WHEN jsonb_typeof(${t.sql}) = 'number' THEN (${t.sql})::float8 END)`;
    if (t.kind === 'id' && t.source.keys.length === 1 && t.source.keys[0]!.type === 'int4') return `${t.cols[t.source.keys[0]!.col]}::float8`;
    return this.bad(at, 'a number is needed here');
  }

  private text(t: Typed, at: number): string {
    if (t.kind === 'text') return t.sql;
    if (t.kind === 'json') return `(CASE WHEN jsonb_typeof(${t.sql}) = 'string' THEN ${t.sql} #>> '{}' END)`;
    if (t.kind === 'id') return this.idText(t);
    return this.bad(at, 'a string is needed here');
  }

  private idText(t: Extract<Typed, { kind: 'id' }>): string {
    // As idOf writes it: parts joined by '-'; a time in ms, and none for -infinity (a station's FeatureOfInterest).
    return t.source.keys
      .map((k, i) => {
        const c = t.cols[k.col]!;
        if (k.type !== 'timestamptz') return i === 0 ? `${c}::text` : `'-' || ${c}::text`;
        return `CASE WHEN isfinite(${c}) THEN '-' || (extract(epoch FROM ${c}) * 1000)::int8::text ELSE '' END`;
      })
      .join(' || ');
  }

  private arithmetic(op: ArithmeticOperator, left: Expr, right: Expr, source: EntitySource, col: Columns): Typed {
    const l = this.number(this.expr(left, source, col), left.at);
    const r = this.number(this.expr(right, source, col), right.at);
    // Division by zero is null (no match), not a database error.
    const sql = {
      add: `(${l} + ${r})`,
      sub: `(${l} - ${r})`,
      mul: `(${l} * ${r})`,
      div: `(${l} / nullif(${r}, 0))`,
      mod: `(${l} - ${r} * trunc(${l} / nullif(${r}, 0)))`,
    }[op];
    return { sql, kind: 'number' };
  }

  private compare(op: ComparisonOperator, left: Expr, right: Expr, at: number, source: EntitySource, col: Columns): Typed {
    // An id against a literal id: the literal is split into the key columns, never bound whole (each
    // side is translated once: a parameter bound and not used would fail the statement).
    const idLike = (x: Expr) => x.kind === 'path' && ['id', '@iot.id'].includes(String(x.segments.at(-1)));
    const literalId = (x: Expr) => x.kind === 'literal' && (x.type === 'string' || x.type === 'integer' || x.type === 'decimal' || x.type === 'null');
    let l: Typed;
    let r: Typed;
    if (idLike(left) && literalId(right)) {
      l = this.expr(left, source, col);
      if (l.kind === 'id') return this.compareId(op, l, right as LiteralExpr, true);
      r = this.expr(right, source, col);
    } else if (idLike(right) && literalId(left)) {
      r = this.expr(right, source, col);
      if (r.kind === 'id') return this.compareId(op, r, left as LiteralExpr, false);
      l = this.expr(left, source, col);
    } else {
      l = this.expr(left, source, col);
      r = this.expr(right, source, col);
    }
    const sqlOp = { eq: '=', ne: '<>', gt: '>', ge: '>=', lt: '<', le: '<=' }[op];
    if (l.kind === 'geometry' || r.kind === 'geometry') return this.unsupported(at, 'comparing geometries is not implemented: use geo.intersects or st_equals');
    if (l.kind === 'id' || r.kind === 'id') {
      const [id, other, otherAt] = l.kind === 'id' ? [l, r, right.at] : [r as Extract<Typed, { kind: 'id' }>, l, left.at];
      if (other.kind === 'id') return this.unsupported(left.at, 'comparing two ids is not implemented');
      if (other.kind !== 'number' && other.kind !== 'text') return this.bad(otherAt, 'an id compares with an integer or a string');
      if (op === 'eq' || op === 'ne') return this.unsupported(otherAt, 'an id compares with a literal id (an integer or a string) here');
      const single = id.source.keys.length === 1 ? id.source.keys[0]! : undefined;
      if (single?.type !== 'int4') return this.unsupported(left.at, `${op} on this entity's string ids is not implemented (eq and ne are)`);
      const [a, b] = l.kind === 'id' ? [this.number(l, left.at), this.number(r, right.at)] : [this.number(l, left.at), this.number(r, right.at)];
      return { sql: `(${a} ${sqlOp} ${b})`, kind: 'boolean' };
    }
    if (l.kind === 'null' || r.kind === 'null') {
      const other = l.kind === 'null' ? r : l;
      if (op !== 'eq' && op !== 'ne') this.bad(at, `null compares only with eq or ne`);
      if (other.kind === 'null') return { sql: op === 'eq' ? 'true' : 'false', kind: 'boolean' };
      const value = other.kind === 'json' ? `nullif(${other.sql}, 'null'::jsonb)` : other.sql;
      return { sql: `(${value} IS ${op === 'eq' ? '' : 'NOT '}NULL)`, kind: 'boolean' };
    }
    if (l.kind === 'json' || r.kind === 'json') {
      const [a, b] = [this.jsonOf(l), this.jsonOf(r)];
      return { sql: `coalesce(CASE WHEN jsonb_typeof(${a}) = jsonb_typeof(${b}) THEN ${a} ${sqlOp} ${b} END, false)`, kind: 'boolean' };
    }
    if (l.kind !== r.kind) this.bad(right.at, `cannot compare ${describe(l.kind)} with ${describe(r.kind)}`);
    if (l.kind === 'boolean' && op !== 'eq' && op !== 'ne') this.bad(at, 'conditions compare only with eq or ne');
    return { sql: `(${l.sql} ${sqlOp} ${r.sql})`, kind: 'boolean' };
  }

  private jsonOf(t: Typed): string {
    if (t.kind === 'json') return t.sql;
    if (t.kind === 'time') return `to_jsonb(to_char(${t.sql} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))`;
    if (t.kind === 'id') return `to_jsonb(${this.idText(t)})`;
    return `to_jsonb(${(t as { sql: string }).sql})`;
  }

  /** `id eq 5`, `Datastream/id eq '12-5'`: the literal is split into the key columns, so indexes serve it. */
  private compareId(op: ComparisonOperator, id: Extract<Typed, { kind: 'id' }>, literal: LiteralExpr, idOnLeft: boolean): Typed {
    if (literal.type === 'null') {
      if (op !== 'eq' && op !== 'ne') this.bad(literal.at, 'null compares only with eq or ne');
      return { sql: op === 'eq' ? 'false' : 'true', kind: 'boolean' };
    }
    const single = id.source.keys.length === 1 ? id.source.keys[0]! : undefined;
    if (op !== 'eq' && op !== 'ne') {
      if (single?.type !== 'int4' || literal.type === 'string') return this.unsupported(id.at, `${op} on ${id.source.type} ids is not implemented (eq and ne are)`);
      const sqlOp = { gt: '>', ge: '>=', lt: '<', le: '<=' }[op];
      const [a, b] = [id.cols[single.col]!, this.ctx.add((literal as { text: string }).text, '::numeric')];
      return { sql: idOnLeft ? `(${a} ${sqlOp} ${b})` : `(${b} ${sqlOp} ${a})`, kind: 'boolean' };
    }
    const values = id.source.parseId(literal.type === 'string' ? literal.value : Number((literal as { text: string }).text));
    const match = values ? `(${id.source.keys.map((k, i) => `${id.cols[k.col]} = ${this.ctx.add(values[i], `::${k.type}`)}`).join(' AND ')})` : 'false';
    return { sql: op === 'eq' ? match : `(NOT ${match})`, kind: 'boolean' };
  }

  private call(e: Extract<Expr, { kind: 'call' }>, source: EntitySource, col: Columns): Typed {
    const args = e.args;
    const arg = (i: number) => this.expr(args[i]!, source, col);
    const text = (i: number) => this.text(arg(i), args[i]!.at);
    const num = (i: number) => this.number(arg(i), args[i]!.at);
    const time = (i: number) => {
      const t = arg(i);
      if (t.kind !== 'time') this.bad(args[i]!.at, 'a date-time is needed here');
      return `(${(t as { sql: string }).sql} AT TIME ZONE 'UTC')`;
    };
    const bool = (sql: string): Typed => ({ sql: `coalesce(${sql}, false)`, kind: 'boolean' });
    switch (e.name) {
      case 'substringof':
        return bool(`strpos(${text(1)}, ${text(0)}) > 0`);
      case 'contains':
        return bool(`strpos(${text(0)}, ${text(1)}) > 0`);
      case 'startswith':
        return bool(`starts_with(${text(0)}, ${text(1)})`);
      case 'endswith': {
        const [s, suffix] = [text(0), text(1)];
        return bool(`right(${s}, length(${suffix})) = ${suffix}`);
      }
      case 'length':
        return { sql: `length(${text(0)})::float8`, kind: 'number' };
      case 'indexof':
        return { sql: `(strpos(${text(0)}, ${text(1)}) - 1)::float8`, kind: 'number' };
      case 'substring': {
        const s = text(0);
        // Clamped before the integer casts: an out-of-range argument selects nothing, it is not an error.
        const clamp = (x: string) => `least(greatest(floor(${x}), 0), 2147483646)::int4`;
        const from = `${clamp(num(1))} + 1`;
        return { sql: args.length === 3 ? `substr(${s}, ${from}, ${clamp(num(2))})` : `substr(${s}, ${from})`, kind: 'text' };
      }
      case 'tolower':
        return { sql: `lower(${text(0)})`, kind: 'text' };
      case 'toupper':
        return { sql: `upper(${text(0)})`, kind: 'text' };
      case 'trim':
        return { sql: `btrim(${text(0)})`, kind: 'text' };
      case 'concat':
        return { sql: `(${text(0)} || ${text(1)})`, kind: 'text' };
      case 'year':
      case 'month':
      case 'day':
      case 'hour':
      case 'minute':
        return { sql: `extract(${e.name} FROM ${time(0)})::float8`, kind: 'number' };
      case 'second':
        return { sql: `floor(extract(second FROM ${time(0)}))::float8`, kind: 'number' };
      case 'fractionalseconds':
        return { sql: `(extract(second FROM ${time(0)}) - floor(extract(second FROM ${time(0)})))::float8`, kind: 'number' };
      case 'now':
        return { sql: 'now()', kind: 'time' };
      case 'round':
      case 'floor':
        return { sql: `${e.name}(${num(0)})`, kind: 'number' };
      case 'ceiling':
        return { sql: `ceil(${num(0)})`, kind: 'number' };
      case 'geo.intersects':
      case 'st_intersects':
      case 'st_within':
        return this.spatial(e, source, col);
      case 'st_contains': {
        // A polygon contains a point: the point is within it (a point contains no polygon).
        const [a, b] = e.args as [Expr, Expr];
        if (!this.geometryOperand(b, source, col)) return this.unsupported(e.at, `st_contains is implemented for a geometry literal and ${source.geometry?.property ?? 'a position'}: st_contains(geography'POLYGON ((…))', ${source.geometry?.property ?? 'location'})`);
        return this.spatial({ ...e, name: 'st_within', args: [b, a] }, source, col);
      }
      case 'st_disjoint': {
        const t = this.spatial({ ...e, name: 'st_intersects' }, source, col) as { sql: string };
        return { sql: `(NOT ${t.sql})`, kind: 'boolean' };
      }
      case 'geo.distance':
        return this.distance(e, source, col);
      default:
        return this.unsupported(e.at, `the function ${e.name} is not implemented`);
    }
  }

  /**
   * geo.intersects / st_intersects / st_within of an entity's point position and a polygon:
   * for a point they are the same test (inside or on the boundary). The polygon goes through
   * the H3 area path (db/area-query.ts areaFilterSql); latitudes beyond ±90 are clamped (QGIS
   * sends its world extent with ±135), and an axis-aligned rectangle is a bbox (no cover needed).
   */
  private spatial(e: Extract<Expr, { kind: 'call' }>, source: EntitySource, col: Columns): Typed {
    const [a, b] = e.args as [Expr, Expr];
    const position = this.geometryOperand(a, source, col);
    const within = e.name === 'st_within';
    // Another entity's geometry (`Locations/location`, `FeatureOfInterest/feature`, as pygeoapi sends): EXISTS one that passes.
    if (!position && a.kind === 'path' && a.variable === undefined && a.segments.length >= 2 && typeof a.segments[0] === 'string' && navigationOf(source.type, a.segments[0])) {
      const navs = a.segments.slice(0, -1);
      const last = a.segments.at(-1);
      return {
        sql: this.exists(source, col, navs, a.at, (target, tcol) => {
          const t = this.spatial({ ...e, args: [{ kind: 'path', segments: [last as string], at: a.at }, b] }, target, tcol);
          return (t as { sql: string }).sql;
        }),
        kind: 'boolean',
      };
    }
    if (!position) {
      const g = this.geometryOperand(b, source, col);
      if (g && !within) return this.spatial({ ...e, args: [b, a] }, source, col);
      return this.unsupported(a.at, `${e.name} is implemented for ${source.geometry ? `${source.geometry.property}` : 'no property of this entity'} and a geometry literal`);
    }
    const other = this.expr(b, source, col);
    if (other.kind !== 'geometry') return this.bad(b.at, `${e.name} needs a geometry literal here (geography'POLYGON ((…))')`);
    const area = this.areaOf(other.geometry, b.at);
    if (area === 'everywhere') return { sql: `(${position.lat} IS NOT NULL)`, kind: 'boolean' };
    return { sql: `coalesce(${areaFilterSql(area, position, this.ctx.params)}, false)`, kind: 'boolean' };
  }

  /**
   * geo.distance of an entity's position and a POINT literal: metres on the great circle (earth
   * radius 6 371 008.8 m, as Turf and the spatial API's circles use), whether the literal is
   * geography or geometry.
   */
  private distance(e: Extract<Expr, { kind: 'call' }>, source: EntitySource, col: Columns): Typed {
    const [a, b] = e.args as [Expr, Expr];
    const position = this.geometryOperand(a, source, col) ?? this.geometryOperand(b, source, col);
    const literal = this.geometryOperand(a, source, col) ? b : a;
    if (!position) return this.unsupported(e.at, `geo.distance is implemented for ${source.geometry?.property ?? 'a position'} and a POINT literal`);
    const other = this.expr(literal, source, col);
    if (other.kind !== 'geometry') return this.bad(literal.at, `geo.distance needs a geometry literal here (geography'POINT (lng lat)')`);
    if (other.geometry.type !== 'Point') return this.unsupported(literal.at, `geo.distance to a ${other.geometry.type} is not implemented (to a Point is)`);
    const [lng, lat] = other.geometry.coordinates as [number, number];
    if (!(lat >= -90 && lat <= 90 && lng >= -180 && lng <= 180)) return this.bad(literal.at, 'the point is [longitude -180…180, latitude -90…90]');
    const [x, y] = [this.ctx.add(lng, '::float8'), this.ctx.add(lat, '::float8')];
    // Haversine; least(1, …) keeps rounding from taking asin out of its domain.
    const h = `power(sin(radians(${y} - ${position.lat}) / 2), 2) + cos(radians(${position.lat})) * cos(radians(${y})) * power(sin(radians(${x} - ${position.lng}) / 2), 2)`;
    return { sql: `(2 * 6371008.8 * asin(least(1, sqrt(${h}))))`, kind: 'number' };
  }

  private areaOf(geometry: Geometry, at: number): Area | 'everywhere' {
    const area = filterArea(geometry);
    if (typeof area === 'object' && 'unsupported' in area) return this.unsupported(at, area.unsupported);
    if (typeof area === 'object' && 'invalid' in area) return this.bad(at, area.invalid);
    return area;
  }
}

const describe = (kind: string): string => ({ number: 'a number', text: 'a string', time: 'a date-time', boolean: 'a condition', json: 'a JSON value', null: 'null' })[kind] ?? kind;
