import type { Geometry, Position } from 'geojson';
import { StaQueryError } from './errors.ts';

/**
 * WKT (OGC 06-103r4 §7) of a `geography'…'` literal to a GeoJSON geometry: POINT, LINESTRING,
 * POLYGON (holes as further rings), MULTIPOINT (both `(1 2, 3 4)` and `((1 2), (3 4))`),
 * MULTILINESTRING, MULTIPOLYGON; keywords in any case with or without a space before `(` (QGIS
 * sends `Polygon ((…))`), an optional `Z` and 3-coordinate positions, an optional `SRID=4326;`
 * prefix (OData's form). Coordinates are kept as sent, unclamped.
 *
 * Hand-written rather than a library: @terraformer/wkt refuses the mixed-case `Polygon` QGIS sends;
 * betterknown and wellknown accept trailing garbage, turn `1e400` into Infinity and report no
 * position; none bounds the vertex count before building arrays. This is one flat loop per level.
 */
export interface WktContext {
  option: string;
  /** Position of the WKT's first character in the option's value. */
  base: number;
  maxVertices: number;
  /** Prefix for reasons (`Observations($filter): `) when parsing inside $expand. */
  where: string;
}

const NUMBER = /[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/y;
const WORD = /[A-Za-z]+/y;

const TYPES = {
  POINT: 'Point',
  LINESTRING: 'LineString',
  POLYGON: 'Polygon',
  MULTIPOINT: 'MultiPoint',
  MULTILINESTRING: 'MultiLineString',
  MULTIPOLYGON: 'MultiPolygon',
} as const;

export function parseWkt(wkt: string, ctx: WktContext): Geometry {
  let i = 0;
  let vertices = 0;
  let dimension = 0;
  let zDeclared = false;
  const fail = (at: number, reason: string): never => {
    throw new StaQueryError(ctx.option, ctx.base + at, `${ctx.where}${reason}`);
  };
  const skipSpace = () => {
    while (i < wkt.length && (wkt[i] === ' ' || wkt[i] === '\t' || wkt[i] === '\n' || wkt[i] === '\r')) i++;
  };
  const peek = (): string | undefined => (skipSpace(), wkt[i]);
  const expect = (c: string, what: string) => {
    if (peek() !== c) fail(i, `expected '${c}' ${what} in the WKT`);
    i++;
  };
  const word = (): string | undefined => {
    skipSpace();
    WORD.lastIndex = i;
    const m = WORD.exec(wkt);
    if (!m) return undefined;
    i += m[0].length;
    return m[0].toUpperCase();
  };
  const number = (): number => {
    skipSpace();
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(wkt);
    if (!m) return fail(i, 'expected a coordinate (a number) in the WKT');
    const v = Number(m[0]);
    if (!Number.isFinite(v)) fail(i, `coordinate ${m[0]} is out of range`);
    i += m[0].length;
    return v;
  };
  const position = (): Position => {
    const at = (skipSpace(), i);
    const p: Position = [number(), number()];
    const c = peek();
    if (c !== undefined && /[-+.\d]/.test(c)) p.push(number());
    if (dimension === 0) dimension = p.length;
    else if (p.length !== dimension) fail(at, `every position must have ${dimension} coordinates, ${zDeclared ? 'as Z says' : 'like the first'}`);
    if (++vertices > ctx.maxVertices) fail(at, `more than ${ctx.maxVertices} positions in a WKT literal`);
    return p;
  };
  /** `(p, p, …)` — at least `min` positions; a ring must also be closed. */
  const positions = (min: number, ring: boolean): Position[] => {
    const at = (skipSpace(), i);
    expect('(', ring ? 'to open a ring' : 'to open a list of positions');
    const list = [position()];
    while (peek() === ',') {
      i++;
      list.push(position());
    }
    expect(')', 'after the last position');
    if (list.length < min) fail(at, ring ? `a polygon ring needs at least 4 positions, got ${list.length}` : `a line needs at least 2 positions, got ${list.length}`);
    if (ring) {
      const a = list[0]!;
      const b = list[list.length - 1]!;
      if (a.some((v, k) => v !== b[k])) fail(at, 'a polygon ring must be closed (its last position equal to its first)');
    }
    return list;
  };
  /** `(x, x, …)` of `item`. */
  const many = <T>(item: () => T, what: string): T[] => {
    expect('(', `to open the ${what}`);
    const list = [item()];
    while (peek() === ',') {
      i++;
      list.push(item());
    }
    expect(')', `to close the ${what}`);
    return list;
  };

  const start = (skipSpace(), i);
  let keyword = word();
  if (keyword === 'SRID') {
    if (peek() !== '=') fail(i, "expected '=' after SRID");
    i++;
    const at = (skipSpace(), i);
    const srid = /\d+/y;
    srid.lastIndex = i;
    const m = srid.exec(wkt);
    if (!m || m[0] !== '4326') fail(at, 'only SRID=4326 (WGS 84 longitude latitude) is supported');
    i += m![0].length;
    expect(';', 'after SRID=4326');
    keyword = word();
  }
  if (keyword === undefined || !Object.hasOwn(TYPES, keyword)) {
    return fail(start, `expected a WKT geometry type (${Object.keys(TYPES).join(', ')})${keyword ? `, got ${keyword}` : ''}`);
  }
  const type = TYPES[keyword as keyof typeof TYPES];
  const afterType = i;
  const modifier = word();
  if (modifier === 'Z') {
    dimension = 3;
    zDeclared = true;
  }
  else if (modifier === 'EMPTY') fail(afterType, 'empty geometries are not supported');
  else if (modifier !== undefined) fail(afterType, `unsupported WKT dimension ${modifier} (2D or Z only)`);
  if (word() === 'EMPTY') fail(afterType, 'empty geometries are not supported');

  let geometry: Geometry;
  switch (type) {
    case 'Point': {
      expect('(', 'to open the point');
      geometry = { type, coordinates: position() };
      expect(')', 'to close the point');
      break;
    }
    case 'LineString':
      geometry = { type, coordinates: positions(2, false) };
      break;
    case 'Polygon':
      geometry = { type, coordinates: many(() => positions(4, true), 'list of rings') };
      break;
    case 'MultiPoint':
      geometry = {
        type,
        coordinates: many(() => {
          if (peek() !== '(') return position();
          i++;
          const p = position();
          expect(')', 'to close the point');
          return p;
        }, 'list of points'),
      };
      break;
    case 'MultiLineString':
      geometry = { type, coordinates: many(() => positions(2, false), 'list of lines') };
      break;
    case 'MultiPolygon':
      geometry = { type, coordinates: many(() => many(() => positions(4, true), 'list of rings'), 'list of polygons') };
      break;
  }
  if (peek() !== undefined) fail(i, 'unexpected text after the end of the WKT geometry');
  return geometry;
}
