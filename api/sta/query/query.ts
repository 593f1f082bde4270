import type { StaQuery } from './ast.ts';
import { StaQueryError } from './errors.ts';
import { isLevelOption, parseOptionInto } from './expand.ts';
import { DEFAULT_STA_QUERY_LIMITS, type StaQueryLimits } from './limits.ts';

/**
 * The SensorThings API v1.1 request options (OGC 18-088 §9.3, "requesting data") as a typed tree.
 * Pure: no I/O, no knowledge of the entity model — resolving names (`Datastream/id`, `location`),
 * typing comparisons and building SQL are the next stage's work, which reports its own 400s with
 * StaQueryError and the `at` each node carries.
 *
 *   parseStaQuery({ $filter: "result gt 5 and Datastream/id eq 3", $expand: "Datastream($select=name)", $top: "10" })
 *   → { filter: { kind: 'binary', op: 'and', left: { kind: 'binary', op: 'gt',
 *         left: { kind: 'path', segments: ['result'], at: 0 },
 *         right: { kind: 'literal', type: 'integer', value: 5, text: '5', at: 10 }, at: 7 }, right: …, at: 12 },
 *       expand: [{ navigation: 'Datastream', at: 0, options: { select: [{ kind: 'path', segments: ['name'], at: 19 }], expand: [], orderby: [] } }],
 *       orderby: [], top: 10 }
 *
 * What the next stage decides, not this one: whether a path resolves (and `id` = `@iot.id` on an
 * entity, but a plain member inside `properties/…`); operand types; `$top` above the page size
 * (the page size wins, 18-088 §9.3.3.2); clamping geography latitudes beyond ±90.
 *
 * Input: the query object fastify hands a route (already percent-decoded; a repeated parameter is
 * an array). Parameters not starting with `$` are ignored (OData 4.0 §5.1: custom options); `$`
 * names are case-insensitive. Output: StaQuery (ast.ts). Errors: only StaQueryError — 400 for
 * malformed text or a breached bound (limits.ts), 501 for a `$` option or extension this server
 * does not implement, each naming the option, the position in its value and the reason.
 *
 * Hand-written, not an npm OData parser: `@odata/parser` (and `odata-v4-parser`, which it forks)
 * reject QGIS's own request `(… ) and (geo.intersects(location, geography'Polygon ((…))'))`, `st_*`
 * functions and `@iot.id`, and report no positions; FROST-Server's grammar is Java (JavaCC).
 * Files: lexer.ts (tokens and literals), wkt.ts (geometry literals), expression.ts ($filter
 * grammar, precedence), functions.ts (names and arities), filter/orderby/select.ts,
 * top-skip-count.ts, expand.ts (nesting and per-level options), span.ts, limits.ts, errors.ts,
 * ast.ts. Fixtures and tests sit beside them (fixtures/qgis-3.40-requests.txt: what QGIS sends).
 */
export function parseStaQuery(query: Readonly<Record<string, unknown>>, limits: StaQueryLimits = DEFAULT_STA_QUERY_LIMITS): StaQuery {
  const result: StaQuery = { expand: [], orderby: [] };
  const seen = new Map<string, string>();
  for (const [key, raw] of Object.entries(query)) {
    if (!key.startsWith('$')) continue;
    const name = key.toLowerCase();
    const earlier = seen.get(name);
    if (earlier !== undefined || Array.isArray(raw)) throw new StaQueryError(key, 0, `given more than once${earlier !== undefined && earlier !== key ? ` (also as ${earlier})` : ''}`);
    seen.set(name, key);
    if (name !== '$resultformat' && !isLevelOption(name)) {
      throw new StaQueryError(key, 0, `the query option ${key} is not supported (supported: $filter, $expand, $select, $orderby, $top, $skip, $count, $resultFormat)`, 'unsupported');
    }
    if (typeof raw !== 'string') throw new StaQueryError(key, 0, 'must be text');
    if (raw.length > limits.maxOptionLength) throw new StaQueryError(key, limits.maxOptionLength, `longer than ${limits.maxOptionLength} characters`);
    const span = { source: raw, from: 0, to: raw.length, option: key, where: '', limits };
    if (name === '$resultformat') {
      if (raw.toLowerCase() !== 'dataarray') {
        throw new StaQueryError(key, 0, `the result format ${JSON.stringify(raw.slice(0, 40))} is not supported (supported: dataArray)`, 'unsupported');
      }
      result.resultFormat = 'dataArray';
    } else parseOptionInto(result, name, span, 1);
  }
  if (result.resultFormat === 'dataArray' && result.expand.length > 0) {
    throw new StaQueryError(seen.get('$resultformat')!, 0, '$resultFormat=dataArray cannot be combined with $expand (18-088, data array extension)');
  }
  return result;
}
