import type { Geometry } from 'geojson';
import type { FunctionName } from './functions.ts';

/**
 * The typed tree the query parser produces. Every node carries `at`, its 0-based position in the
 * option's value, so that a later stage (resolving paths against the entity model, building SQL)
 * can report its own 400 at the right place with StaQueryError. Names of properties and navigation
 * links are kept as written: only the model knows whether `id` (alias of `@iot.id`) names the
 * entity's id or a member of a JSON object (`properties/id`).
 */

/** The options of one level: the request itself, or one `$expand` item's parentheses. */
export interface QueryOptions {
  filter?: Expr;
  /** Empty when there is no $expand. */
  expand: ExpandItem[];
  /** Undefined: all properties. */
  select?: PathExpr[];
  /** Empty when there is no $orderby. */
  orderby: OrderKey[];
  top?: number;
  skip?: number;
  count?: boolean;
}

/** The whole request: one level of options, plus what only the top level may say. */
export interface StaQuery extends QueryOptions {
  /** `$resultFormat=dataArray` (18-088 §13); never together with $expand. */
  resultFormat?: 'dataArray';
}

export interface ExpandItem {
  /** A navigation property as written: `Datastreams`, `Thing`, … */
  navigation: string;
  at: number;
  /** Its own options; `$expand=A/B` is A with `options.expand` = [B]. */
  options: QueryOptions;
}

export interface OrderKey {
  expr: Expr;
  descending: boolean;
}

export type Expr = LiteralExpr | PathExpr | LambdaExpr | CallExpr | BinaryExpr | NotExpr | NegateExpr;

export type ComparisonOperator = 'eq' | 'ne' | 'gt' | 'ge' | 'lt' | 'le';
export type ArithmeticOperator = 'add' | 'sub' | 'mul' | 'div' | 'mod';
export type LogicalOperator = 'and' | 'or';
export type BinaryOperator = ComparisonOperator | ArithmeticOperator | LogicalOperator;

export interface BinaryExpr {
  kind: 'binary';
  op: BinaryOperator;
  left: Expr;
  right: Expr;
  at: number;
}

export interface NotExpr {
  kind: 'not';
  operand: Expr;
  at: number;
}

/** Unary minus on something that is not a number literal (`-result`); `-5` is a literal. */
export interface NegateExpr {
  kind: 'negate';
  operand: Expr;
  at: number;
}

export interface CallExpr {
  kind: 'call';
  /** Lower case, as in the standard's table (`geo.intersects`, `st_within`, `now`). */
  name: FunctionName;
  args: Expr[];
  at: number;
}

/**
 * A property path: `result`, `Datastream/id`, `Thing/Locations/location`, `properties/tags[0]`
 * (a number is an array index). Inside a lambda, a path that starts with its variable has the
 * variable in `variable` and the rest in `segments` (`d/ObservedProperty/name`).
 */
export interface PathExpr {
  kind: 'path';
  segments: (string | number)[];
  variable?: string;
  at: number;
}

/** `Datastreams/any(d: d/ObservedProperty/name eq 'NO2')` (OData 4.0 lambda; FROST ≥ 2.4). */
export interface LambdaExpr {
  kind: 'lambda';
  quantifier: 'any' | 'all';
  collection: PathExpr;
  /** Absent only for `any()` (the collection is not empty). */
  variable?: string;
  predicate?: Expr;
  at: number;
}

export type LiteralExpr =
  | { kind: 'literal'; type: 'null'; at: number }
  | { kind: 'literal'; type: 'boolean'; value: boolean; at: number }
  | { kind: 'literal'; type: 'string'; value: string; at: number }
  /** `text` as written, for exact numeric SQL parameters; `value` may round beyond 2^53. */
  | { kind: 'literal'; type: 'integer' | 'decimal'; value: number; text: string; at: number }
  /** ISO 8601 with an offset, as written (`text`, PostgreSQL's timestamptz takes it as is). */
  | { kind: 'literal'; type: 'datetime'; text: string; epochMs: number; offsetMinutes: number; at: number }
  /** A calendar date `2024-03-01`. */
  | { kind: 'literal'; type: 'date'; text: string; at: number }
  /** `duration'P1DT2H'`: ISO 8601 duration text (PostgreSQL's interval takes it as is) and its parts. */
  | { kind: 'literal'; type: 'duration'; text: string; negative: boolean; parts: DurationParts; at: number }
  /**
   * `geography'…'` / `geometry'…'`: the WKT parsed to a GeoJSON geometry in the order written
   * (longitude latitude), nothing clamped (QGIS's world rectangle has latitudes of ±135).
   */
  | { kind: 'literal'; type: 'geometry'; geography: boolean; geometry: Geometry; wkt: string; at: number };

export interface DurationParts {
  years: number;
  months: number;
  weeks: number;
  days: number;
  hours: number;
  minutes: number;
  seconds: number;
}
