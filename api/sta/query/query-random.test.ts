import { describe, expect, it } from 'vitest';
import { StaQueryError } from './errors.ts';
import { parseStaQuery } from './query.ts';
import { createRng } from '../../../simulators/random.ts';

const SEEDS: [string, string][] = [
  ['$filter', "(location/type eq 'Point' or location/geometry/type eq 'Point') and (geo.intersects(location, geography'Polygon ((-180 -135, 180 -135, 180 135, -180 135, -180 -135))'))"],
  ['$filter', "Datastreams/any(d: d/Observations/any(o: o/phenomenonTime ge now() sub duration'PT10M' and o/result gt d/properties/threshold))"],
  ['$filter', "concat(concat(unitOfMeasurement/symbol,', '), unitOfMeasurement/name) eq 'degree, Celsius' and phenomenonTime ge 2022-12-23T13:21:31+01:00"],
  ['$filter', "st_relate(location, geography'MULTIPOLYGON (((40 40, 20 45, 45 30, 40 40)), ((20 35, 10 30, 10 10, 30 5, 45 20, 20 35), (30 20, 20 15, 20 25, 30 20)))', 'T********')"],
  ['$filter', 'not (result sub 5) mul -2 gt 10 or substring(description,2,4) eq properties/tags[0]'],
  ['$expand', 'Things($top=100;$expand=Datastreams($top=10;$expand=Observations($orderby=phenomenonTime desc;$top=100;$filter=result gt 1)))'],
  ['$expand', "Locations($select=name,@iot.id),Datastreams($select=name;$expand=Sensor,Observations($orderby=phenomenonTime desc;$top=2;$count=true;$filter=name eq 'a;b)'))"],
  ['$orderby', 'Datastream/id desc, length(name) asc, phenomenonTime'],
];
const FRAGMENTS = ['(', ')', "'", "''", ',', '/', ';', ':', '$', '=', ' ', '-', '.', '@', '[0]', 'eq', 'and', 'or', 'not', 'add', 'any(', 'd:', 'geo.intersects(', 'now()', "geography'", "duration'P", 'POLYGON((', 'POINT(', '1', '1.5e3', '2020-01-01T00:00:00Z', '$filter=', '$expand=', 'Things(', '\u0000', '‘', '东', '\uD800'];
const OPTIONS = ['$filter', '$expand', '$select', '$orderby', '$top', '$skip', '$count', '$resultFormat'];

function mutate(text: string, next: () => number): string {
  let s = text;
  const edits = 1 + Math.floor(next() * 4);
  for (let k = 0; k < edits; k++) {
    const at = Math.floor(next() * (s.length + 1));
    const r = next();
    const piece = next() < 0.7 ? FRAGMENTS[Math.floor(next() * FRAGMENTS.length)]! : String.fromCharCode(Math.floor(next() * 0x3000));
    if (r < 0.4) s = s.slice(0, at) + piece + s.slice(at);
    else if (r < 0.7) s = s.slice(0, at) + s.slice(at + 1 + Math.floor(next() * 8));
    else s = s.slice(0, at) + piece + s.slice(at + piece.length);
  }
  return s;
}

describe('random input', () => {
  it('never throws anything but a StaQueryError pointing inside the value (seeded, 6000 cases)', () => {
    const next = createRng(20261207).next; // seeded, so a failure reproduces
    let accepted = 0;
    let refused = 0;
    for (let n = 0; n < 6000; n++) {
      let option = OPTIONS[Math.floor(next() * OPTIONS.length)]!;
      let value: string;
      if (next() < 0.75) {
        const [seedOption, seed] = SEEDS[Math.floor(next() * SEEDS.length)]!;
        option = seedOption;
        value = mutate(seed, next);
      } else value = Array.from({ length: Math.floor(next() * 40) }, () => FRAGMENTS[Math.floor(next() * FRAGMENTS.length)]).join('');
      try {
        parseStaQuery({ [option]: value });
        accepted++;
      } catch (e) {
        if (!(e instanceof StaQueryError)) throw new Error(`${option}=${JSON.stringify(value)} threw ${String(e)}`);
        expect(e.option).toBe(option);
        expect(e.position).toBeGreaterThanOrEqual(0);
        expect(e.position).toBeLessThanOrEqual(value.length);
        expect([400, 501]).toContain(e.statusCode);
        refused++;
      }
    }
    // The generator exercises both outcomes, not only one.
    expect(accepted).toBeGreaterThan(100);
    expect(refused).toBeGreaterThan(1000);
  });
});
