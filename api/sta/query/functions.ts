/**
 * The built-in functions of $filter and $orderby with their number of arguments: 18-088 Table 23
 * ("Built-in Query Functions", after OData 4.0 URL conventions §5.1.1.4), plus OData's `contains`.
 * `returns` is what a later stage needs to type-check a comparison.
 */
export const FUNCTIONS = {
  // string
  substringof: { min: 2, max: 2, returns: 'boolean' },
  startswith: { min: 2, max: 2, returns: 'boolean' },
  endswith: { min: 2, max: 2, returns: 'boolean' },
  contains: { min: 2, max: 2, returns: 'boolean' },
  length: { min: 1, max: 1, returns: 'number' },
  indexof: { min: 2, max: 2, returns: 'number' },
  substring: { min: 2, max: 3, returns: 'string' },
  tolower: { min: 1, max: 1, returns: 'string' },
  toupper: { min: 1, max: 1, returns: 'string' },
  trim: { min: 1, max: 1, returns: 'string' },
  concat: { min: 2, max: 2, returns: 'string' },
  // date and time
  year: { min: 1, max: 1, returns: 'number' },
  month: { min: 1, max: 1, returns: 'number' },
  day: { min: 1, max: 1, returns: 'number' },
  hour: { min: 1, max: 1, returns: 'number' },
  minute: { min: 1, max: 1, returns: 'number' },
  second: { min: 1, max: 1, returns: 'number' },
  fractionalseconds: { min: 1, max: 1, returns: 'number' },
  date: { min: 1, max: 1, returns: 'date' },
  time: { min: 1, max: 1, returns: 'time' },
  totaloffsetminutes: { min: 1, max: 1, returns: 'number' },
  now: { min: 0, max: 0, returns: 'datetime' },
  mindatetime: { min: 0, max: 0, returns: 'datetime' },
  maxdatetime: { min: 0, max: 0, returns: 'datetime' },
  // math
  round: { min: 1, max: 1, returns: 'number' },
  floor: { min: 1, max: 1, returns: 'number' },
  ceiling: { min: 1, max: 1, returns: 'number' },
  // geospatial (OData)
  'geo.distance': { min: 2, max: 2, returns: 'number' },
  'geo.length': { min: 1, max: 1, returns: 'number' },
  'geo.intersects': { min: 2, max: 2, returns: 'boolean' },
  // spatial relationships (OGC 06-104r4 §6.1.2.3)
  st_equals: { min: 2, max: 2, returns: 'boolean' },
  st_disjoint: { min: 2, max: 2, returns: 'boolean' },
  st_touches: { min: 2, max: 2, returns: 'boolean' },
  st_within: { min: 2, max: 2, returns: 'boolean' },
  st_overlaps: { min: 2, max: 2, returns: 'boolean' },
  st_crosses: { min: 2, max: 2, returns: 'boolean' },
  st_intersects: { min: 2, max: 2, returns: 'boolean' },
  st_contains: { min: 2, max: 2, returns: 'boolean' },
  st_relate: { min: 3, max: 3, returns: 'boolean' },
} as const satisfies Record<string, { min: number; max: number; returns: string }>;

export type FunctionName = keyof typeof FUNCTIONS;

export const isFunctionName = (name: string): name is FunctionName => Object.hasOwn(FUNCTIONS, name);

/** "takes 2 arguments", "takes 2 or 3 arguments", "takes no arguments". */
export function arityText(name: FunctionName): string {
  const { min, max } = FUNCTIONS[name];
  if (max === 0) return 'takes no arguments';
  const n = min === max ? `${min}` : `${min} or ${max}`;
  return `takes ${n} argument${max === 1 ? '' : 's'}`;
}
