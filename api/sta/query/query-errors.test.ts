import { describe, expect, it } from 'vitest';
import { StaQueryError } from './errors.ts';
import { DEFAULT_STA_QUERY_LIMITS } from './limits.ts';
import { parseStaQuery } from './query.ts';

/** The StaQueryError the query raises, as [status, option, position, reason]. */
function refusal(query: Record<string, unknown>, limits = DEFAULT_STA_QUERY_LIMITS): [number, string, number, string] {
  try {
    parseStaQuery(query, limits);
  } catch (e) {
    if (!(e instanceof StaQueryError)) throw e;
    expect(e.message).toBe(`${e.option}: at ${e.position}: ${e.reason}`);
    expect(e.expose).toBe(true);
    return [e.statusCode, e.option, e.position, e.reason];
  }
  throw new Error(`accepted: ${JSON.stringify(query)}`);
}

describe('bad $filter: position and reason', () => {
  const QGIS = "geo.intersects(location, geography'Polygon ((-180 -135, 180 -135, 180 135, -180 135, -180 -135))')";
  const cases: [string, number, string][] = [
    ['', 0, 'is empty: expected a condition'],
    ['   ', 0, 'is empty: expected a condition'],
    ["geo.intersects(location, geography'POINT(1 2)' x", 47, "expected ')' after the arguments of geo.intersects, got 'x'"],
    ["geo.intersects(location, geography'POINT(1 2)'", 46, "expected ')' after the arguments of geo.intersects, got the end"],
    ['geo.intersects(location', 23, "expected ',' after argument 1 of geo.intersects, got the end"],
    ['geo.intersects(location)', 0, 'geo.intersects takes 2 arguments, got 1'],
    ['substring(name)', 0, 'substring takes 2 or 3 arguments, got 1'],
    ['substring(name, 1, 2, 3) eq 1', 22, 'substring takes 2 or 3 arguments, got more'],
    ['now(1)', 4, 'now() takes no arguments'],
    ['length() eq 1', 0, 'length takes 1 argument, got 0'],
    ["st_relate(location, location, 'X')", 30, "the third argument of st_relate must be a DE-9IM pattern string of 9 characters from T F * 0 1 2, like 'T********'"],
    ['frobnicate(x) eq 1', 0, "unknown function 'frobnicate'"],
    ["name eq 'abc", 8, 'this string has no closing quote'],
    ['(result gt 1', 12, "expected ')' to close the '(' at 0, got the end"],
    ['(result gt 1))', 13, "expected an operator ('and', 'or', 'eq', …) or the end, got ')'"],
    ['result gt', 9, 'expected a value, got the end'],
    ['result gt and 1', 10, "expected a value before 'and'"],
    ['result 5', 7, "expected an operator ('and', 'or', 'eq', …) or the end, got the number 5"],
    ["properties/countryCode in ('IT','NL')", 23, "the operator 'in' is not supported (a FROST-Server and OData 4.01 extension; use 'or' of 'eq')"],
    ['a eq b eq c', 7, 'comparisons do not chain: put parentheses around one of them'],
    ['a lt b gt c', 7, 'comparisons do not chain: put parentheses around one of them'],
    ['result eq 12abc', 12, 'unexpected "a" after the number 12'],
    ['result eq 1e999', 10, 'the number 1e999 is out of range'],
    ["Datastream/id eq ‘1’", 17, "unexpected character ‘: strings are quoted with ' (U+0027)"],
    ['name eq "x"', 8, 'unexpected character ": strings are quoted with \''],
    ['result eq 1 & $top=3', 12, 'unexpected character "&"'],
    ['phenomenonTime ge 2022-01-01T00:00:00 08:00', 18, "a date-time needs a time-zone offset; a '+' in the URL reads as a space, send it as %2B"],
    ['phenomenonTime ge 2022-01-01T00:00:00', 18, 'a date-time needs a time-zone offset (Z, or +hh:mm / -hh:mm)'],
    ['phenomenonTime ge 2022-02-30T00:00:00Z', 18, '2022-02-30 is not a calendar date'],
    ['phenomenonTime ge 2022-01-01T24:00:00Z', 18, '2022-01-01T24:00:00Z is not a time of day (hours 00-23, minutes and seconds 00-59)'],
    ['phenomenonTime ge 2022-01-01T00:00:00+24:00', 18, '+24:00 is not a time-zone offset'],
    ["phenomenonTime gt now() sub duration'1D'", 37, '"1D" is not an ISO 8601 duration (like P1D, PT10M or P1Y2M3DT4H5M6.5S)'],
    ["phenomenonTime gt now() sub duration'PT'", 37, '"PT" is not an ISO 8601 duration (like P1D, PT10M or P1Y2M3DT4H5M6.5S)'],
    ["name eq point'x'", 13, "unexpected quote after point (typed literals are geography'…', geometry'…' and duration'…')"],
    ["Datastream/'x' eq 1", 11, "expected a property name after '/', got a string"],
    // A keyword after '/' is a property name (as in FROST): `Datastream/ eq` names a property "eq".
    ['Datastream/ eq 1', 15, "expected an operator ('and', 'or', 'eq', …) or the end, got the number 1"],
    ['Datastreams/all()', 16, 'all() needs a variable and a condition: all(x: x/result gt 0)'],
    ['Datastreams/any(d d/result gt 1)', 18, "expected ':' after the lambda variable 'd'"],
    ['Datastreams/any(d: d/Observations/any(d: d/result gt 1))', 38, "the lambda variable 'd' is already in use"],
    ['Datastreams/any(d: d/result gt 1', 32, "expected ')' to close any(, got the end"],
    ['properties/tags[x] eq 1', 15, "expected an array index like '[0]'"],
    [`${QGIS.slice(0, -2)}`, 34, 'this string has no closing quote'],
    [`(location/type eq 'Point') and (${QGIS.replace('-180 -135))', '-180 -136))')})`, 76, 'a polygon ring must be closed (its last position equal to its first)'],
  ];
  it.each(cases)('%s → at %i: %s', (text, position, reason) => {
    expect(refusal({ $filter: text })).toEqual([400, '$filter', position, reason]);
  });
});

describe('bad WKT inside geography literals: positions point into the $filter value', () => {
  const at = (wkt: string) => refusal({ $filter: `st_within(location, geography'${wkt}')` });
  const base = "st_within(location, geography'".length;
  const cases: [string, number, string][] = [
    ['CIRCLE(1 2)', 0, 'expected a WKT geometry type (POINT, LINESTRING, POLYGON, MULTIPOINT, MULTILINESTRING, MULTIPOLYGON), got CIRCLE'],
    ['', 0, 'expected a WKT geometry type (POINT, LINESTRING, POLYGON, MULTIPOINT, MULTILINESTRING, MULTIPOLYGON)'],
    ['POINT(1)', 7, 'expected a coordinate (a number) in the WKT'],
    ['POINT(1 2', 9, "expected ')' to close the point in the WKT"],
    ['POINT(1 2) x', 11, 'unexpected text after the end of the WKT geometry'],
    ['POINT EMPTY', 5, 'empty geometries are not supported'],
    ['POINT M (1 2 3)', 5, 'unsupported WKT dimension M (2D or Z only)'],
    ['POINT Z (1 2)', 9, 'every position must have 3 coordinates, as Z says'],
    ['POINT(1e400 2)', 6, 'coordinate 1e400 is out of range'],
    ['LINESTRING(1 2)', 10, 'a line needs at least 2 positions, got 1'],
    ['LINESTRING(1 2, 3 4 5)', 16, 'every position must have 2 coordinates, like the first'],
    ['POLYGON((0 0, 1 0, 0 0))', 8, 'a polygon ring needs at least 4 positions, got 3'],
    ['POLYGON((0 0, 1 0, 1 1, 0 1))', 8, 'a polygon ring must be closed (its last position equal to its first)'],
    ['POLYGON((0 0, 1 0, 1 1, 0 0), (0.1 0.1, 0.2 0.1, 0.2 0.2))', 30, 'a polygon ring needs at least 4 positions, got 3'],
    ['SRID=3857;POINT(1 2)', 5, 'only SRID=4326 (WGS 84 longitude latitude) is supported'],
    ['MULTIPOLYGON(((0 0, 1 0, 1 1, 0 0))', 35, "expected ')' to close the list of polygons in the WKT"],
  ];
  it.each(cases)('%s → +%i: %s', (wkt, offset, reason) => {
    expect(at(wkt)).toEqual([400, '$filter', base + offset, reason]);
  });
});

describe('bad $expand, $select, $orderby, $top, $skip, $count', () => {
  const cases: [Record<string, string>, [number, string, number, string]][] = [
    [{ $expand: '' }, [400, '$expand', 0, '$expand is empty: expected a navigation property']],
    [{ $expand: 'Datastreams(' }, [400, '$expand', 11, "expected ')' to close the options of Datastreams"]],
    [{ $expand: 'Datastreams($top=1' }, [400, '$expand', 11, "expected ')' to close the options of Datastreams"]],
    [{ $expand: 'Datastreams,' }, [400, '$expand', 12, 'expected a navigation property (like Datastreams or Thing), got the end']],
    [{ $expand: 'Datastreams Observations' }, [400, '$expand', 12, "expected ',' or '(' or '/' after Datastreams, got \"O\""]],
    [{ $expand: 'Datastreams($top=x)' }, [400, '$expand', 17, 'Datastreams($top): $top must be a non-negative integer, got "x"']],
    [{ $expand: 'Datastreams(top=1)' }, [400, '$expand', 12, 'expected a query option like $top=10 inside the parentheses of Datastreams, got "top"']],
    [{ $expand: 'Datastreams($top=1;$top=2)' }, [400, '$expand', 19, '$top given twice for Datastreams']],
    [{ $expand: 'Datastreams($top=1;)' }, [400, '$expand', 19, 'empty option inside the parentheses of Datastreams']],
    [{ $expand: 'Datastreams($top)' }, [400, '$expand', 12, "expected '=' after $top inside the parentheses of Datastreams"]],
    [{ $expand: 'Datastreams($apply=x)' }, [501, '$expand', 12, '$apply is not supported inside $expand (allowed: $filter, $expand, $select, $orderby, $top, $skip, $count)']],
    [{ $expand: 'Datastreams($resultFormat=dataArray)' }, [400, '$expand', 12, '$resultFormat is not allowed inside $expand (allowed: $filter, $expand, $select, $orderby, $top, $skip, $count)']],
    [{ $expand: 'Observations($filter=result gt)' }, [400, '$expand', 30, 'Observations($filter): expected a value, got the end']],
    [
      { $expand: 'Things($expand=Datastreams($expand=Observations($filter=geo.intersects(location))))' },
      [400, '$expand', 56, 'Things($expand): Datastreams($expand): Observations($filter): geo.intersects takes 2 arguments, got 1'],
    ],
    [{ $expand: 'Datastreams($top=1),Datastreams($top=2)' }, [400, '$expand', 20, 'Datastreams is expanded twice, both times with $top']],
    [{ $expand: 'A/B/C/D/E/F/G/H/I' }, [400, '$expand', 16, '$expand nested more than 8 deep']],
    [{ $expand: 'Datastreams.x' }, [400, '$expand', 11, "expected ',' or '(' or '/' after Datastreams, got \".\""]],
    [{ $select: '' }, [400, '$select', 0, 'is empty: expected a property name']],
    [{ $select: 'name,' }, [400, '$select', 5, 'expected a property name, got the end']],
    [{ $select: "name,'x'" }, [400, '$select', 5, 'expected a property name, got a string']],
    [{ $select: 'name eq 1' }, [400, '$select', 0, 'expected a property name, got an expression']],
    [{ $select: 'distinct:name' }, [501, '$select', 0, 'distinct: (a FROST-Server extension) is not supported']],
    [{ $orderby: 'name sideways' }, [400, '$orderby', 5, "expected 'asc', 'desc', ',' or the end, got 'sideways'"]],
    [{ $orderby: 'name desc,' }, [400, '$orderby', 10, 'expected a value, got the end']],
    [{ $top: '-1' }, [400, '$top', 0, '$top must be a non-negative integer, got "-1"']],
    [{ $top: '1.5' }, [400, '$top', 0, '$top must be a non-negative integer, got "1.5"']],
    [{ $top: '' }, [400, '$top', 0, '$top must be a non-negative integer, got ""']],
    [{ $top: '2147483648' }, [400, '$top', 0, '$top must be at most 2147483647, got 2147483648']],
    [{ $top: '99999999999999999999' }, [400, '$top', 0, '$top must be a non-negative integer, got "99999999999999999999"']],
    [{ $skip: '1e3' }, [400, '$skip', 0, '$skip must be a non-negative integer, got "1e3"']],
    [{ $count: 'yes' }, [400, '$count', 0, '$count must be true or false, got "yes"']],
    [{ $count: '' }, [400, '$count', 0, '$count must be true or false, got ""']],
  ];
  it.each(cases)('%o', (query, expected) => {
    expect(refusal(query)).toEqual(expected);
  });
});

describe('the request as a whole', () => {
  it('answers 501 naming an unsupported $ option', () => {
    for (const name of ['$apply', '$search', '$format', '$skiptoken', '$resultMetadata', '$levels']) {
      expect(refusal({ $top: '1', [name]: 'x' })).toEqual([501, name, 0, `the query option ${name} is not supported (supported: $filter, $expand, $select, $orderby, $top, $skip, $count, $resultFormat)`]);
    }
    expect(refusal({ $resultFormat: 'GeoJSON' })).toEqual([501, '$resultFormat', 0, 'the result format "GeoJSON" is not supported (supported: dataArray)']);
  });

  it('refuses an option given twice, in any case', () => {
    expect(refusal({ $top: ['1', '2'] })).toEqual([400, '$top', 0, 'given more than once']);
    expect(refusal({ $top: '1', $TOP: '2' })).toEqual([400, '$TOP', 0, 'given more than once (also as $top)']);
  });

  it('refuses dataArray with $expand (18-088 data array extension)', () => {
    expect(refusal({ $resultFormat: 'dataArray', $expand: 'Datastream' })).toEqual([400, '$resultFormat', 0, '$resultFormat=dataArray cannot be combined with $expand (18-088, data array extension)']);
  });

  it('refuses a value that is not text', () => {
    expect(refusal({ $filter: { a: 1 } })).toEqual([400, '$filter', 0, 'must be text']);
  });
});

describe('bounds', () => {
  const small = { ...DEFAULT_STA_QUERY_LIMITS, maxOptionLength: 100, maxTokens: 20, maxNesting: 3, maxExpandDepth: 2, maxListItems: 2, maxPathSegments: 3, maxWktVertices: 4, maxTop: 100, maxSkip: 1000 };
  it.each([
    [{ $filter: 'a'.repeat(101) }, [400, '$filter', 100, 'longer than 100 characters']],
    [{ $filter: 'a eq 1 and b eq 2 and c eq 3 and d eq 4 and e eq 5 and f eq 6' }, [400, '$filter', 55, 'more than 20 terms']],
    [{ $filter: '((((a)))) eq 1' }, [400, '$filter', 3, 'nested more than 3 deep']],
    [{ $filter: 'not not not not a' }, [400, '$filter', 12, 'nested more than 3 deep']],
    [{ $filter: 'length(length(length(length(a)))) eq 1' }, [400, '$filter', 27, 'nested more than 3 deep']],
    [{ $filter: 'a/b/c/d eq 1' }, [400, '$filter', 6, 'a path of more than 3 segments']],
    [{ $filter: "st_within(l, geography'POLYGON((0 0, 1 0, 1 1, 0 1, 0 0))')" }, [400, '$filter', 52, 'more than 4 positions in a WKT literal']],
    [{ $expand: 'A/B/C' }, [400, '$expand', 4, '$expand nested more than 2 deep']],
    [{ $expand: 'A($expand=B($expand=C))' }, [400, '$expand', 20, 'A($expand): B($expand): $expand nested more than 2 deep']],
    [{ $expand: 'A,B,C' }, [400, '$expand', 4, 'more than 2 items in one $expand']],
    [{ $select: 'a,b,c' }, [400, '$select', 4, 'more than 2 properties']],
    [{ $orderby: 'a,b,c' }, [400, '$orderby', 4, 'more than 2 ordering keys']],
    [{ $top: '101' }, [400, '$top', 0, '$top must be at most 100, got 101']],
    [{ $skip: '1001' }, [400, '$skip', 0, '$skip must be at most 1000, got 1001']],
  ] as [Record<string, string>, [number, string, number, string]][])('%o', (query, expected) => {
    expect(refusal(query, small)).toEqual(expected);
  });

  it('takes what is just within the bounds', () => {
    expect(() => parseStaQuery({ $filter: '(((a))) eq 1', $expand: 'A/B', $select: 'a,b', $orderby: 'a,b', $top: '100', $skip: '1000' }, small)).not.toThrow();
    expect(() => parseStaQuery({ $filter: "st_within(l, geography'POLYGON((0 0, 1 0, 1 1, 0 0))')" }, small)).not.toThrow();
  });

  it('refuses default-sized abuse quickly and without a stack overflow', () => {
    // Within the token bound, so that the nesting bound is what stops them.
    const deep = `${'('.repeat(900)}a${')'.repeat(900)}`;
    expect(refusal({ $filter: deep })[3]).toBe('nested more than 32 deep');
    expect(refusal({ $filter: 'not '.repeat(1900) + 'a' })[3]).toBe('nested more than 32 deep');
    expect(refusal({ $filter: '- '.repeat(40) + '1' })[3]).toBe('nested more than 32 deep');
    expect(refusal({ $filter: '-'.repeat(16000) + '1' })[3]).toBe('more than 2000 terms');
    expect(refusal({ $expand: `${'A($expand='.repeat(1000)}B${')'.repeat(1000)}` })[3]).toMatch(/: \$expand nested more than 8 deep$/);
    expect(refusal({ $filter: 'a eq 1 or '.repeat(1600) + 'a eq 1' })[3]).toBe('more than 2000 terms');
    const manyVertices = `st_within(l, geography'LINESTRING(${Array.from({ length: 3000 }, (_, k) => `${k % 10} ${k % 7}`).join(",")})')`;
    expect(manyVertices.length).toBeLessThan(16384);
    expect(() => parseStaQuery({ $filter: manyVertices })).not.toThrow();
  });
});
