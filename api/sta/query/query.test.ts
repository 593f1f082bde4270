import { describe, expect, it } from 'vitest';
import type { Expr } from './ast.ts';
import { StaQueryError } from './errors.ts';
import { FUNCTIONS, type FunctionName } from './functions.ts';
import { parseStaQuery } from './query.ts';

const filter = (f: string) => parseStaQuery({ $filter: f }).filter!;

/** The tree as compact prefix text, to pin structure (precedence) without positions. */
function show(e: Expr): string {
  switch (e.kind) {
    case 'binary':
      return `(${e.op} ${show(e.left)} ${show(e.right)})`;
    case 'not':
      return `(not ${show(e.operand)})`;
    case 'negate':
      return `(- ${show(e.operand)})`;
    case 'call':
      return `${e.name}(${e.args.map(show).join(', ')})`;
    case 'path':
      return (e.variable ? [e.variable, ...e.segments] : e.segments).map((s) => (typeof s === 'number' ? `[${s}]` : s)).join('/').replace('/[', '[');
    case 'lambda':
      return `${show(e.collection)}/${e.quantifier}(${e.variable ? `${e.variable}: ${show(e.predicate!)}` : ''})`;
    case 'literal':
      switch (e.type) {
        case 'null':
          return 'null';
        case 'boolean':
          return String(e.value);
        case 'string':
          return `'${e.value}'`;
        case 'integer':
        case 'decimal':
          return e.text;
        case 'geometry':
          return `${e.geometry.type}`;
        default:
          return `${e.type}:${e.text}`;
      }
  }
}

describe('the examples of OGC 18-088 (§9.3, Tables 22 and 23)', () => {
  // Written as the standard's text has them, except its typographic quotes (‘1’) and the comma in
  // `POINT(-122, 43)` of §9.3.3.5 example 3, which are typesetting slips (the prose says POINT(-122 43)).
  const cases: [string, string][] = [
    ['result lt 10.00', '(lt result 10.00)'],
    ["Datastream/id eq '1'", "(eq Datastream/id '1')"],
    ["geo.distance(Locations/location, geography'POINT(-122 43)') gt 1", '(gt geo.distance(Locations/location, Point) 1)'],
    [
      "Datastreams/Observations/FeatureOfInterest/id eq 'FOI_1' and Datastreams/Observations/resultTime ge 2010-06-01T00:00:00Z and Datastreams/Observations/resultTime le 2010-07-01T00:00:00Z",
      "(and (and (eq Datastreams/Observations/FeatureOfInterest/id 'FOI_1') (ge Datastreams/Observations/resultTime datetime:2010-06-01T00:00:00Z)) (le Datastreams/Observations/resultTime datetime:2010-07-01T00:00:00Z))",
    ],
    ["unitOfMeasurement/name eq 'degree Celsius'", "(eq unitOfMeasurement/name 'degree Celsius')"],
    ["unitOfMeasurement/name ne 'degree Celsius'", "(ne unitOfMeasurement/name 'degree Celsius')"],
    ['result gt 20.0', '(gt result 20.0)'],
    ['result ge 20.0', '(ge result 20.0)'],
    ['result lt 100', '(lt result 100)'],
    ['result le 100', '(le result 100)'],
    ['result le 3.5 and FeatureOfInterest/id eq 1', '(and (le result 3.5) (eq FeatureOfInterest/id 1))'],
    ['result gt 20 or result le 3.5', '(or (gt result 20) (le result 3.5))'],
    ["not startswith(description,'test')", "(not startswith(description, 'test'))"],
    ['result add 5 gt 10', '(gt (add result 5) 10)'],
    ['result sub 5 gt 10', '(gt (sub result 5) 10)'],
    ['result mul 2 gt 2000', '(gt (mul result 2) 2000)'],
    ['result div 2 gt 4', '(gt (div result 2) 4)'],
    ['result mod 2 eq 0', '(eq (mod result 2) 0)'],
    ['(result sub 5) gt 10', '(gt (sub result 5) 10)'],
    ["substringof('Sensor Things',description)", "substringof('Sensor Things', description)"],
    ["endswith(description,'Things')", "endswith(description, 'Things')"],
    ["startswith(description,'Sensor')", "startswith(description, 'Sensor')"],
    ['length(description) eq 13', '(eq length(description) 13)'],
    ["indexof(description,'Sensor') eq 1", "(eq indexof(description, 'Sensor') 1)"],
    ["substring(description,1) eq 'ensor Things'", "(eq substring(description, 1) 'ensor Things')"],
    ["tolower(description) eq 'sensor things'", "(eq tolower(description) 'sensor things')"],
    ["toupper(description) eq 'SENSOR THINGS'", "(eq toupper(description) 'SENSOR THINGS')"],
    ["trim(description) eq 'Sensor Things'", "(eq trim(description) 'Sensor Things')"],
    ["concat(concat(unitOfMeasurement/symbol,', '), unitOfMeasurement/name) eq 'degree, Celsius'", "(eq concat(concat(unitOfMeasurement/symbol, ', '), unitOfMeasurement/name) 'degree, Celsius')"],
    ['year(resultTime) eq 2015', '(eq year(resultTime) 2015)'],
    ['month(resultTime) eq 12', '(eq month(resultTime) 12)'],
    ['day(resultTime) eq 8', '(eq day(resultTime) 8)'],
    ['hour(resultTime) eq 1', '(eq hour(resultTime) 1)'],
    ['minute(resultTime) eq 0', '(eq minute(resultTime) 0)'],
    ['second(resultTime) eq 0', '(eq second(resultTime) 0)'],
    ['date(resultTime) ne date(validTime)', '(ne date(resultTime) date(validTime))'],
    ['time(resultTime) le validTime', '(le time(resultTime) validTime)'],
    ['totaloffsetminutes(resultTime) eq 60', '(eq totaloffsetminutes(resultTime) 60)'],
    ['resultTime ge now()', '(ge resultTime now())'],
    ['resultTime eq mindatetime()', '(eq resultTime mindatetime())'],
    ['resultTime eq maxdatetime()', '(eq resultTime maxdatetime())'],
    ['round(result) eq 32', '(eq round(result) 32)'],
    ['floor(result) eq 32', '(eq floor(result) 32)'],
    ['ceiling(result) eq 33', '(eq ceiling(result) 33)'],
    ["geo.distance(location, geography'POINT (30 10)')", 'geo.distance(location, Point)'],
    ["geo.length(geography'LINESTRING (30 10, 10 30, 40 40)')", 'geo.length(LineString)'],
    ["geo.intersects(location, geography'POLYGON ((30 10, 10 20, 20 40, 40 40, 30 10))')", 'geo.intersects(location, Polygon)'],
    ["st_equals(location, geography'POINT (30 10)')", 'st_equals(location, Point)'],
    ["st_disjoint(location, geography'POLYGON ((30 10, 10 20, 20 40, 40 40, 30 10))')", 'st_disjoint(location, Polygon)'],
    ["st_touches(location, geography'LINESTRING (30 10, 10 30, 40 40)')", 'st_touches(location, LineString)'],
    ["st_within(location, geography'POLYGON ((30 10, 10 20, 20 40, 40 40, 30 10))')", 'st_within(location, Polygon)'],
    ["st_overlaps(location, geography'POLYGON ((30 10, 10 20, 20 40, 40 40, 30 10))')", 'st_overlaps(location, Polygon)'],
    ["st_crosses(location, geography'LINESTRING (30 10, 10 30, 40 40)')", 'st_crosses(location, LineString)'],
    ["st_intersects(location, geography'LINESTRING (30 10, 10 30, 40 40)')", 'st_intersects(location, LineString)'],
    ["st_contains(location, geography'POINT (30 10)')", 'st_contains(location, Point)'],
    ["st_relate(location, geography'POLYGON ((30 10, 10 20, 20 40, 40 40, 30 10))', 'T********')", "st_relate(location, Polygon, 'T********')"],
  ];
  it.each(cases)('%s', (text, tree) => {
    expect(show(filter(text))).toBe(tree);
  });

  it('reads the other options of §9.3 as the standard describes them', () => {
    expect(parseStaQuery({ $expand: 'Datastreams' }).expand).toEqual([{ navigation: 'Datastreams', at: 0, options: { expand: [], orderby: [] } }]);
    expect(parseStaQuery({ $expand: 'Datastreams/ObservedProperty' }).expand).toEqual([
      { navigation: 'Datastreams', at: 0, options: { expand: [{ navigation: 'ObservedProperty', at: 12, options: { expand: [], orderby: [] } }], orderby: [] } },
    ]);
    expect(parseStaQuery({ $expand: 'Observations,ObservedProperty' }).expand.map((e) => e.navigation)).toEqual(['Observations', 'ObservedProperty']);
    expect(show(parseStaQuery({ $expand: 'Observations($filter=result eq 1)' }).expand[0]!.options.filter!)).toBe('(eq result 1)');
    expect(parseStaQuery({ $select: 'result,resultTime' }).select!.map(show)).toEqual(['result', 'resultTime']);
    const q = parseStaQuery({ $select: 'id,Observations', $expand: 'Observations/FeatureOfInterest' });
    expect(q.select!.map(show)).toEqual(['id', 'Observations']);
    expect(q.expand[0]!.options.expand[0]!.navigation).toBe('FeatureOfInterest');
    expect(parseStaQuery({ $expand: 'Observations($select=result)' }).expand[0]!.options.select!.map(show)).toEqual(['result']);
    expect(parseStaQuery({ $orderby: 'result' }).orderby.map((k) => [show(k.expr), k.descending])).toEqual([['result', false]]);
    expect(parseStaQuery({ $orderby: 'Datastreams/id desc, phenomenonTime' }).orderby.map((k) => [show(k.expr), k.descending])).toEqual([
      ['Datastreams/id', true],
      ['phenomenonTime', false],
    ]);
    expect(parseStaQuery({ $top: '5' }).top).toBe(5);
    expect(parseStaQuery({ $top: '5', $orderby: 'phenomenonTime desc' })).toMatchObject({ top: 5, orderby: [{ descending: true }] });
    expect(parseStaQuery({ $skip: '5' }).skip).toBe(5);
    expect(parseStaQuery({ $skip: '2', $top: '2', $orderby: 'resultTime' })).toMatchObject({ skip: 2, top: 2 });
    expect(parseStaQuery({ $count: 'true' }).count).toBe(true);
    expect(parseStaQuery({ $count: 'false' }).count).toBe(false);
    expect(parseStaQuery({ $resultFormat: 'dataArray', $select: 'result,phenomenonTime' })).toMatchObject({ resultFormat: 'dataArray' });
  });

  it("reads ets-sta10's option-priority request", () => {
    const q = parseStaQuery({ $count: 'true', $top: '1', $skip: '2', $orderby: 'phenomenonTime asc', $filter: "result gt '3'" });
    expect(q).toMatchObject({ count: true, top: 1, skip: 2, orderby: [{ descending: false }] });
    expect(show(q.filter!)).toBe("(gt result '3')");
  });
});

describe("the examples of FROST-Server's documentation (docs/sensorthingsapi/requestingData)", () => {
  const cases: [string, string][] = [
    ['result gt 5', '(gt result 5)'],
    ["name eq 'Hylke''s Thing'", "(eq name 'Hylke's Thing')"],
    ['phenomenonTime ge 2022-12-23T13:21:31+01:00', '(ge phenomenonTime datetime:2022-12-23T13:21:31+01:00)'],
    ["phenomenonTime gt now() sub duration'P1D'", '(gt phenomenonTime (sub now() duration:P1D))'],
    ["st_within(location, geography'POLYGON ((30 10, 10 20, 20 40, 40 40, 30 10))')", 'st_within(location, Polygon)'],
    ["result le 5 and FeatureOfInterest/id eq '1'", "(and (le result 5) (eq FeatureOfInterest/id '1'))"],
    ["not startswith(description,'test')", "(not startswith(description, 'test'))"],
    ["substringof('room', name)", "substringof('room', name)"],
    ["endswith(name, 'room')", "endswith(name, 'room')"],
    ["substring(description,2,4) eq 'nsor'", "(eq substring(description, 2, 4) 'nsor')"],
    ['geo.length(location) lt 2', '(lt geo.length(location) 2)'],
    ["geo.distance(location, geography'POINT (30 10)') lt 1", '(lt geo.distance(location, Point) 1)'],
    ['time(phenomenonTime) le time(1990-01-01T12:00:00Z)', '(le time(phenomenonTime) time(datetime:1990-01-01T12:00:00Z))'],
    ['fractionalseconds(phenomenonTime) eq 0', '(eq fractionalseconds(phenomenonTime) 0)'],
    ['phenomenonTime ge 2022-01-01T00:00:00+00:00', '(ge phenomenonTime datetime:2022-01-01T00:00:00+00:00)'],
    ["Datastreams/any(d: d/ObservedProperty/name eq 'NO2')", "Datastreams/any(d: (eq d/ObservedProperty/name 'NO2'))"],
    [
      "Datastreams/any(d1: d1/ObservedProperty/name eq 'NO2') and Datastreams/any(d2: d2/ObservedProperty/name eq 'O3')",
      "(and Datastreams/any(d1: (eq d1/ObservedProperty/name 'NO2')) Datastreams/any(d2: (eq d2/ObservedProperty/name 'O3')))",
    ],
    [
      "Datastreams/any(d: d/Observations/any(o: o/phenomenonTime ge now() sub duration'PT10m' and o/result gt d/properties/threshold))",
      'Datastreams/any(d: d/Observations/any(o: (and (ge o/phenomenonTime (sub now() duration:PT10m)) (gt o/result d/properties/threshold))))',
    ],
    ['id ge 15 and id le 20', '(and (ge id 15) (le id 20))'],
    ["phenomenonTime gt now() sub duration'P1D' mul Datastream/properties/days", '(gt phenomenonTime (sub now() (mul duration:P1D Datastream/properties/days)))'],
    ['ObservedProperty/@iot.id eq 1', '(eq ObservedProperty/@iot.id 1)'],
    ["Datastreams/Thing/Datastreams/ObservedProperty/name eq 'Temperature'", "(eq Datastreams/Thing/Datastreams/ObservedProperty/name 'Temperature')"],
    ['result gt Datastream/properties/max add 0', '(gt result (add Datastream/properties/max 0))'],
    ["properties/type eq 'station' and properties/gewaesser.Location/name eq 'Rhein'", "(and (eq properties/type 'station') (eq properties/gewaesser.Location/name 'Rhein'))"],
  ];
  it.each(cases)('%s', (text, tree) => {
    expect(show(filter(text))).toBe(tree);
  });

  it('reads "Give me EVERYTHING!", line breaks and all', () => {
    const q = parseStaQuery({
      $select: 'name,description,@iot.id',
      $expand: `Locations
      ($select=name,description,location,@iot.id)
    ,Datastreams
      ($select=name,description,@iot.id
      ;$expand=
        Sensor
          ($select=name,description,@iot.id)
        ,ObservedProperty
          ($select=name,description,@iot.id)
        ,Observations
          ($select=result,phenomenonTime,@iot.id
          ;$orderby=phenomenonTime desc
          ;$top=2
          )
      )`,
    });
    expect(q.select!.map(show)).toEqual(['name', 'description', '@iot.id']);
    expect(q.expand.map((e) => e.navigation)).toEqual(['Locations', 'Datastreams']);
    expect(q.expand[0]!.options.select!.map(show)).toEqual(['name', 'description', 'location', '@iot.id']);
    const ds = q.expand[1]!.options;
    expect(ds.expand.map((e) => e.navigation)).toEqual(['Sensor', 'ObservedProperty', 'Observations']);
    expect(ds.expand[2]!.options).toMatchObject({ top: 2, orderby: [{ descending: true }] });
    expect(ds.expand[2]!.options.select!.map(show)).toEqual(['result', 'phenomenonTime', '@iot.id']);
  });

  it('reads the nested $count of "Expanding Entities" and an $orderby by function', () => {
    const q = parseStaQuery({ $select: '@iot.id,description', $expand: 'Datastreams($select=@iot.id,description;$expand=Observations($select=result,phenomenonTime;$orderby=phenomenonTime desc;$top=1;$count=true))' });
    expect(q.expand[0]!.options.expand[0]!.options).toMatchObject({ top: 1, count: true });
    expect(parseStaQuery({ $orderby: 'length(name) desc' }).orderby.map((k) => [show(k.expr), k.descending])).toEqual([['length(name)', true]]);
  });
});

describe('precedence and associativity', () => {
  const cases: [string, string][] = [
    ['a or b and c', '(or a (and b c))'],
    ['a and b or c', '(or (and a b) c)'],
    ['a and (b or c)', '(and a (or b c))'],
    ['a or b or c', '(or (or a b) c)'],
    ['x add y mul z eq 7', '(eq (add x (mul y z)) 7)'],
    ['x mul y add z eq 7', '(eq (add (mul x y) z) 7)'],
    ['x sub y sub z eq 1', '(eq (sub (sub x y) z) 1)'],
    ['x div y mod z eq 1', '(eq (mod (div x y) z) 1)'],
    ['(x add y) mul z eq 7', '(eq (mul (add x y) z) 7)'],
    ["not name eq 'x'", "(not (eq name 'x'))"],
    ['not a and b', '(and (not a) b)'],
    ['not not a', '(not (not a))'],
    ['not (a or b)', '(not (or a b))'],
    ['-result gt -5', '(gt (- result) -5)'],
    ['- (x add 1) eq 2', '(eq (- (add x 1)) 2)'],
    ['result gt 1 and result lt 2 or result eq 3', '(or (and (gt result 1) (lt result 2)) (eq result 3))'],
    ['((((result)))) eq 1', '(eq result 1)'],
    ['A AND B Or NOT C', '(or (and A B) (not C))'],
    ["GEO.INTERSECTS(location, geography'POINT(1 2)') eq true", '(eq geo.intersects(location, Point) true)'],
    ['result Eq null', '(eq result null)'],
  ];
  it.each(cases)('%s', (text, tree) => {
    expect(show(filter(text))).toBe(tree);
  });
});

describe('literals', () => {
  it('reads numbers: integer and decimal kept as written', () => {
    expect(filter('result eq 12345678901234567890')).toMatchObject({ right: { type: 'integer', text: '12345678901234567890' } });
    expect(filter('result eq -0.5e-3')).toMatchObject({ right: { type: 'decimal', value: -0.0005, text: '-0.5e-3' } });
  });

  it('reads date-times with Z, +08:00 and fractions to the instant they name', () => {
    expect(filter('t eq 2026-12-07T08:00:00+08:00')).toMatchObject({ right: { type: 'datetime', epochMs: Date.UTC(2026, 11, 7), offsetMinutes: 480 } });
    expect(filter('t eq 2026-12-07T00:00:00.250Z')).toMatchObject({ right: { type: 'datetime', epochMs: Date.UTC(2026, 11, 7, 0, 0, 0, 250), offsetMinutes: 0 } });
    expect(filter('t eq 2026-12-06T19:30-04:30')).toMatchObject({ right: { type: 'datetime', epochMs: Date.UTC(2026, 11, 7), offsetMinutes: -270 } });
    expect(filter('date(t) eq 2024-02-29')).toMatchObject({ right: { type: 'date', text: '2024-02-29' } });
    expect(filter('t ge 0099-12-31T23:59:59Z')).toMatchObject({ right: { type: 'datetime', epochMs: Date.parse('0099-12-31T23:59:59Z') } });
    expect(filter('t ge 2026-12-07T08:00:00.123456789+08:00')).toMatchObject({ right: { text: '2026-12-07T08:00:00.123456789+08:00', epochMs: Date.UTC(2026, 11, 7, 0, 0, 0, 123) } });
  });

  it('reads durations into their parts', () => {
    expect(filter("t gt now() sub duration'P1Y2M3W4DT5H6M7.5S'")).toMatchObject({
      right: { right: { type: 'duration', text: 'P1Y2M3W4DT5H6M7.5S', negative: false, parts: { years: 1, months: 2, weeks: 3, days: 4, hours: 5, minutes: 6, seconds: 7.5 } } },
    });
    expect(filter("t gt now() add duration'-PT1H'")).toMatchObject({ right: { right: { negative: true, parts: { hours: 1 } } } });
  });

  it('reads strings with doubled quotes and any characters, geometry vs geography', () => {
    expect(filter("name eq 'a''b,c;)(d 东莞'")).toMatchObject({ right: { type: 'string', value: "a'b,c;)(d 东莞" } });
    expect(filter("name eq ''")).toMatchObject({ right: { type: 'string', value: '' } });
    expect(filter("st_within(location, geometry'POINT(1 2)')")).toMatchObject({ args: [{}, { type: 'geometry', geography: false }] });
  });

  it('reads paths with array indexes, JSON members and non-Latin names', () => {
    expect(show(filter("properties/tags[0] eq 'x'"))).toBe("(eq properties/tags[0] 'x')");
    expect(show(filter("properties/站点/类型 eq '水位'"))).toBe("(eq properties/站点/类型 '水位')");
    expect(show(filter("properties/sensor-type eq 'x'"))).toBe("(eq properties/sensor-type 'x')");
  });

  it('reads a bare any() and any() over a lambda variable', () => {
    expect(show(filter('Datastreams/any()'))).toBe('Datastreams/any()');
    expect(filter('Datastreams/any()')).toMatchObject({ kind: 'lambda', quantifier: 'any', collection: { segments: ['Datastreams'] } });
    expect(show(filter('Things/all(t: t/Datastreams/any())'))).toBe('Things/all(t: t/Datastreams/any())');
  });
});

describe('functions', () => {
  it.each(Object.entries(FUNCTIONS) as [FunctionName, { min: number; max: number }][])('%s takes %o arguments', (name, { min, max }) => {
    const args = (n: number) => Array.from({ length: n }, (_, k) => (name === 'st_relate' && k === 2 ? "'T********'" : `p${k}`)).join(', ');
    for (let n = min; n <= max; n++) expect(filter(`${name}(${args(n)}) eq 1`)).toMatchObject({ left: { kind: 'call', name } });
    if (min > 0) expect(() => filter(`${name}(${args(min - 1)})`)).toThrow(StaQueryError);
    expect(() => filter(`${name}(${args(max + 1)})`)).toThrow(StaQueryError);
  });
});

describe('$expand merging and the other options', () => {
  it('merges the same navigation named twice at a level', () => {
    const q = parseStaQuery({ $expand: 'Datastreams/Sensor,Datastreams/ObservedProperty,Datastreams($top=3)' });
    expect(q.expand).toHaveLength(1);
    expect(q.expand[0]!.options.top).toBe(3);
    expect(q.expand[0]!.options.expand.map((e) => e.navigation)).toEqual(['Sensor', 'ObservedProperty']);
  });

  it('takes options on each element of a path, and empty parentheses', () => {
    const q = parseStaQuery({ $expand: 'Datastreams($top=1)/Observations($top=2),Thing()' });
    expect(q.expand[0]).toMatchObject({ navigation: 'Datastreams', options: { top: 1, expand: [{ navigation: 'Observations', options: { top: 2 } }] } });
    expect(q.expand[1]).toMatchObject({ navigation: 'Thing', options: { expand: [], orderby: [] } });
  });

  it('finds the end of nested options past quoted parentheses and semicolons', () => {
    const q = parseStaQuery({ $expand: "Things($filter=name eq 'a);b(';$top=1),Locations" });
    expect(q.expand.map((e) => e.navigation)).toEqual(['Things', 'Locations']);
    expect(q.expand[0]!.options).toMatchObject({ top: 1, filter: { right: { value: 'a);b(' } } });
  });

  it('takes spaces after the commas of $select and $orderby, as FROST\'s examples write them', () => {
    expect(parseStaQuery({ $select: 'phenomenonTime, result' }).select!.map(show)).toEqual(['phenomenonTime', 'result']);
    expect(parseStaQuery({ $orderby: 'phenomenonTime asc , result' }).orderby.map((k) => show(k.expr))).toEqual(['phenomenonTime', 'result']);
  });

  it('ignores parameters that do not start with $, takes $ names in any case', () => {
    expect(parseStaQuery({ foo: 'bar', $Top: '3', $COUNT: 'TRUE' })).toEqual({ expand: [], orderby: [], top: 3, count: true });
  });

  it('takes $top=0 and the bounds themselves', () => {
    expect(parseStaQuery({ $top: '0', $skip: '0' })).toMatchObject({ top: 0, skip: 0 });
    expect(parseStaQuery({ $top: '2147483647', $skip: '2147483647' })).toMatchObject({ top: 2147483647, skip: 2147483647 });
  });
});
