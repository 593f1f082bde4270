/**
 * Bounds on everything a client controls in the query options, so that no request makes the parser
 * (or the SQL built from its tree) large, deep or slow. Every bound breached is a 400 naming it.
 */
export interface StaQueryLimits {
  /** Characters in one option's value. Node's default request-line and header limit is 16 KiB anyway. */
  maxOptionLength: number;
  /** Tokens in one expression ($filter, one $orderby key): bounds the number of terms. */
  maxTokens: number;
  /** Nesting of parentheses, function calls, `not`, unary minus and lambdas within one expression. */
  maxNesting: number;
  /** Levels of `$expand` (a path `A/B/C` is three). */
  maxExpandDepth: number;
  /** Items of one $select, $orderby or $expand list (at one level). */
  maxListItems: number;
  /** Segments of one property path (`Thing/Locations/location/geometry/type` is five). */
  maxPathSegments: number;
  /** Positions in one WKT literal, all its rings and parts together. */
  maxWktVertices: number;
  /** Largest `$top` accepted (the route still caps it at its page size, as the standard asks). */
  maxTop: number;
  /** Largest `$skip` accepted. */
  maxSkip: number;
}

export const DEFAULT_STA_QUERY_LIMITS: Readonly<StaQueryLimits> = Object.freeze({
  maxOptionLength: 16_384,
  maxTokens: 2_000,
  maxNesting: 32,
  maxExpandDepth: 8,
  maxListItems: 64,
  maxPathSegments: 16,
  maxWktVertices: 5_000,
  maxTop: 2_147_483_647,
  maxSkip: 2_147_483_647,
});
