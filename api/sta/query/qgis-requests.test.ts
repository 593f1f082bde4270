import { readFileSync } from 'node:fs';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CallExpr, Expr, StaQuery } from './ast.ts';
import { parseStaQuery } from './query.ts';

// Every request of the QGIS 3.40 reference note, sent as QGIS sends it (only spaces encoded) through
// a real fastify, so the parser sees exactly the query object a route will.
const lines = readFileSync(new URL('./fixtures/qgis-3.40-requests.txt', import.meta.url), 'utf8')
  .split('\n')
  .filter((l) => l.trim() !== '' && !l.startsWith('#'));

const app = Fastify();
app.get('/sta/v1.1/*', async (request) => request.query);
beforeAll(() => app.ready());
afterAll(() => app.close());

async function queryOf(line: string): Promise<Record<string, unknown>> {
  const res = await app.inject({ method: 'GET', url: `/sta/v1.1/${line.replaceAll(' ', '%20')}` });
  expect(res.statusCode).toBe(200);
  return res.json();
}

/** Every call to `name` in the tree. */
function calls(e: Expr | undefined, name: string): CallExpr[] {
  if (!e) return [];
  switch (e.kind) {
    case 'call':
      return [...(e.name === name ? [e] : []), ...e.args.flatMap((a) => calls(a, name))];
    case 'binary':
      return [...calls(e.left, name), ...calls(e.right, name)];
    case 'not':
    case 'negate':
      return calls(e.operand, name);
    default:
      return [];
  }
}

const typeFilter = (field: string, type: string): Expr => ({
  kind: 'binary',
  op: 'or',
  left: { kind: 'binary', op: 'eq', left: { kind: 'path', segments: [field, 'type'], at: expect.any(Number) as number }, right: { kind: 'literal', type: 'string', value: type, at: expect.any(Number) as number }, at: expect.any(Number) as number },
  right: { kind: 'binary', op: 'eq', left: { kind: 'path', segments: [field, 'geometry', 'type'], at: expect.any(Number) as number }, right: { kind: 'literal', type: 'string', value: type, at: expect.any(Number) as number }, at: expect.any(Number) as number },
  at: expect.any(Number) as number,
});

describe('QGIS 3.40 request sequence (fixtures/qgis-3.40-requests.txt)', () => {
  it('has the requests of the reference note', () => {
    expect(lines.length).toBe(30);
  });

  it.each(lines)('%s', async (line) => {
    const query = await queryOf(line);
    const parsed = parseStaQuery(query);
    // What every QGIS request carries: $top and $count, never $orderby/$select at the top.
    expect(parsed.top).toBe(Number(query.$top));
    expect(parsed.count).toBe(query.$count === 'true');
    expect(parsed.orderby).toEqual([]);
    expect(parsed.select).toBeUndefined();
    if (typeof query.$skip === 'string') expect(parsed.skip).toBe(Number(query.$skip));
    // A type filter is `F/type eq 'T' or F/geometry/type eq 'T'`, alone or as the left of an `and`.
    const m = /\$filter=\(?(location|feature|observedArea)\/type eq '(\w+)'/.exec(line);
    if (m) {
      const f = parsed.filter!;
      const typePart = f.kind === 'binary' && f.op === 'and' ? f.left : f;
      expect(typePart).toEqual(typeFilter(m[1]!, m[2]!));
    }
    // The extent: geo.intersects(field, geography'Polygon ((…))') with five positions, first = last, kept as sent.
    for (const call of calls(parsed.filter, 'geo.intersects')) {
      expect(call.args[0]).toMatchObject({ kind: 'path', segments: [m![1]] });
      const g = call.args[1]!;
      expect(g).toMatchObject({ kind: 'literal', type: 'geometry', geography: true, geometry: { type: 'Polygon' } });
      const ring = (g as { geometry: { coordinates: number[][][] } }).geometry.coordinates[0]!;
      expect(ring).toHaveLength(5);
      expect(ring[4]).toEqual(ring[0]);
    }
  });

  it('keeps the world rectangle latitudes of ±135 as sent', async () => {
    const parsed = parseStaQuery(await queryOf(lines[1]!));
    const [call] = calls(parsed.filter, 'geo.intersects');
    expect(call!.args[1]).toMatchObject({
      geometry: { type: 'Polygon', coordinates: [[[-180, -135], [180, -135], [180, 135], [-180, 135], [-180, -135]]] },
      wkt: 'Polygon ((-180 -135, 180 -135, 180 135, -180 135, -180 -135))',
    });
  });

  it('reads map-extent coordinates at full double precision', async () => {
    const line = lines.find((l) => l.includes('113.74179999999999779'))!;
    const [call] = calls(parseStaQuery(await queryOf(line)).filter, 'geo.intersects');
    const ring = (call!.args[1] as { geometry: { coordinates: number[][][] } }).geometry.coordinates[0]!;
    expect(ring[0]).toEqual([113.7418, 23]);
    expect(ring[2]).toEqual([113.7655, 23.053]);
  });

  it('reads the three-level expansion with per-level $top and $orderby, $expand before or after $filter', async () => {
    const expected: StaQuery['expand'] = [
      {
        navigation: 'Things',
        at: 0,
        options: {
          top: 100,
          orderby: [],
          expand: [
            {
              navigation: 'Datastreams',
              at: 24,
              options: {
                top: 10,
                orderby: [],
                expand: [{ navigation: 'Observations', at: 52, options: { top: 100, expand: [], orderby: [{ expr: { kind: 'path', segments: ['phenomenonTime'], at: 74 }, descending: true }] } }],
              },
            },
          ],
        },
      },
    ];
    const withExpand = lines.filter((l) => l.includes('$expand=Things'));
    expect(withExpand).toHaveLength(2);
    for (const line of withExpand) {
      const parsed = parseStaQuery(await queryOf(line));
      expect(parsed.expand).toEqual(expected);
      expect(parsed.filter).toBeDefined();
    }
  });

  it('reads per-level expansion filters in the order asQueryString builds them ($orderby;$top;$filter;$expand)', async () => {
    // qgssensorthingsutils.cpp QgsSensorThingsExpansionDefinition::asQueryString; the filter text is the user's, passed as written.
    const line =
      "Locations?$top=200&$count=false&$expand=Things($top=100;$filter=name eq 'a;b)';$expand=Datastreams($top=10;$filter=startswith(name, 'water');$expand=Observations($orderby=phenomenonTime desc;$top=100;$filter=phenomenonTime ge 2026-12-01T00:00:00Z and result gt 5)))";
    const [things] = parseStaQuery(await queryOf(line)).expand;
    expect(things).toMatchObject({ navigation: 'Things', options: { top: 100, filter: { op: 'eq', right: { value: 'a;b)' } } } });
    const [datastreams] = things!.options.expand;
    expect(datastreams).toMatchObject({ navigation: 'Datastreams', options: { top: 10, filter: { kind: 'call', name: 'startswith' } } });
    const [observations] = datastreams!.options.expand;
    expect(observations).toMatchObject({
      navigation: 'Observations',
      options: { top: 100, orderby: [{ descending: true }], filter: { op: 'and', left: { op: 'ge', right: { type: 'datetime', epochMs: Date.UTC(2026, 11, 1) } } } },
    });
  });

  it('reads the subset string as a plain comparison', async () => {
    const parsed = parseStaQuery(await queryOf(lines.find((l) => l.includes('DG-WL-001'))!));
    expect(parsed.filter).toEqual({
      kind: 'binary',
      op: 'eq',
      left: { kind: 'path', segments: ['name'], at: 0 },
      right: { kind: 'literal', type: 'string', value: 'DG-WL-001', at: 8 },
      at: 5,
    });
  });
});
