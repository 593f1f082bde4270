import type { ExpandItem, QueryOptions } from './ast.ts';
import { StaQueryError } from './errors.ts';
import { parseFilter } from './filter.ts';
import { parseOrderby } from './orderby.ts';
import { parseSelect } from './select.ts';
import type { Span } from './span.ts';
import { parseCount, parseCountLimit } from './top-skip-count.ts';

/** The options one level takes: the request's own, and those allowed in `$expand=X(…)` (18-088 §9.3.2.1). */
export const LEVEL_OPTIONS = ['$filter', '$expand', '$select', '$orderby', '$top', '$skip', '$count'] as const;
export type LevelOption = (typeof LEVEL_OPTIONS)[number];
export const isLevelOption = (name: string): name is LevelOption => (LEVEL_OPTIONS as readonly string[]).includes(name);

/** Parses one option of a level into `target`. `level` is how deep this level's $expand items sit (1 at the top). */
export function parseOptionInto(target: QueryOptions, name: LevelOption, span: Span, level: number): void {
  switch (name) {
    case '$filter':
      target.filter = parseFilter(span);
      return;
    case '$expand':
      target.expand = parseExpand(span, level);
      return;
    case '$select':
      target.select = parseSelect(span);
      return;
    case '$orderby':
      target.orderby = parseOrderby(span);
      return;
    case '$top':
      target.top = parseCountLimit(span, '$top', span.limits.maxTop);
      return;
    case '$skip':
      target.skip = parseCountLimit(span, '$skip', span.limits.maxSkip);
      return;
    case '$count':
      target.count = parseCount(span);
      return;
  }
}

const NAVIGATION = /[\p{L}_][\p{L}\p{N}_]*/uy;
const isSpace = (c: string | undefined) => c === ' ' || c === '\t' || c === '\n' || c === '\r';

/**
 * `$expand` (18-088 §9.3.2.1): `Nav[(options)][/Nav[(options)]…], …`, options separated by `;`.
 * A path `A/B` is A expanded with B inside; the same navigation named twice at one level is one
 * item (`Datastreams/Sensor,Datastreams/ObservedProperty`), as long as its options do not clash.
 * Each level's parentheses are found by a quote-aware scan, then parsed as a level of their own.
 */
export function parseExpand(span: Span, level: number): ExpandItem[] {
  const { source, to, option, limits } = span;
  const fail = (at: number, reason: string, kind: 'malformed' | 'unsupported' = 'malformed'): never => {
    throw new StaQueryError(option, at, `${span.where}${reason}`, kind);
  };
  const items: ExpandItem[] = [];
  let i = span.from;
  const skipSpace = () => {
    while (i < to && isSpace(source[i])) i++;
  };
  skipSpace();
  if (i >= to) fail(span.from, '$expand is empty: expected a navigation property');
  for (let count = 0; ; count++) {
    if (count >= limits.maxListItems) fail(i, `more than ${limits.maxListItems} items in one $expand`);
    const chain: ExpandItem[] = [];
    for (;;) {
      skipSpace();
      NAVIGATION.lastIndex = i;
      const m = NAVIGATION.exec(source);
      if (!m || m.index + m[0].length > to) return fail(i, `expected a navigation property (like Datastreams or Thing), got ${i < to ? JSON.stringify(source[i]) : 'the end'}`);
      const at = i;
      const depth = level + chain.length;
      if (depth > limits.maxExpandDepth) fail(at, `$expand nested more than ${limits.maxExpandDepth} deep`);
      const item: ExpandItem = { navigation: m[0], at, options: { expand: [], orderby: [] } };
      i += m[0].length;
      skipSpace();
      if (source[i] === '(' && i < to) {
        const close = matchingParen(source, i, to, () => fail(i, `expected ')' to close the options of ${item.navigation}`));
        const path = [...chain.map((c) => c.navigation), item.navigation].join('/');
        parseNestedOptions(item.options, { ...span, from: i + 1, to: close }, depth + 1, path);
        i = close + 1;
        skipSpace();
      }
      chain.push(item);
      if (source[i] !== '/' || i >= to) break;
      i++;
    }
    for (let k = chain.length - 1; k > 0; k--) mergeInto(chain[k - 1]!.options.expand, chain[k]!, fail);
    mergeInto(items, chain[0]!, fail);
    if (i >= to) return items;
    if (source[i] !== ',') fail(i, `expected ',' or '(' or '/' after ${chain[chain.length - 1]!.navigation}, got ${JSON.stringify(source[i])}`);
    i++;
  }
}

/** The index of the `)` closing the `(` at `open`, skipping quoted text ('' inside quotes toggles twice). */
function matchingParen(source: string, open: number, to: number, unclosed: () => never): number {
  let depth = 0;
  let quoted = false;
  for (let j = open; j < to; j++) {
    const c = source[j];
    if (c === "'") quoted = !quoted;
    else if (quoted) continue;
    else if (c === '(') depth++;
    else if (c === ')' && --depth === 0) return j;
  }
  return unclosed();
}

/** The `[from, to)` ranges between the `;` of `source.slice(from, to)` outside parentheses and quotes, trimmed. */
function splitOptions(source: string, from: number, to: number): [number, number][] {
  const pieces: [number, number][] = [];
  let depth = 0;
  let quoted = false;
  let start = from;
  for (let j = from; j <= to; j++) {
    const c = j < to ? source[j] : ';';
    if (c === "'") quoted = !quoted;
    else if (quoted) continue;
    else if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === ';' && (depth === 0 || j === to)) {
      let a = start;
      let b = j;
      while (a < b && isSpace(source[a])) a++;
      while (b > a && isSpace(source[b - 1])) b--;
      pieces.push([a, b]);
      start = j + 1;
    }
  }
  return pieces;
}

/** `$filter=…;$top=…;…` inside `Nav(…)`: each a level option, each once; `Nav()` has none. */
function parseNestedOptions(target: QueryOptions, span: Span, level: number, path: string): void {
  const { source, option } = span;
  const fail = (at: number, reason: string, kind: 'malformed' | 'unsupported' = 'malformed'): never => {
    throw new StaQueryError(option, at, `${span.where}${reason}`, kind);
  };
  const pieces = splitOptions(source, span.from, span.to);
  if (pieces.length === 1 && pieces[0]![0] === pieces[0]![1]) return;
  const seen = new Set<string>();
  for (const [a, b] of pieces) {
    if (a === b) fail(a, `empty option inside the parentheses of ${path}`);
    const eq = source.indexOf('=', a);
    const hasValue = eq >= 0 && eq < b;
    const name = source.slice(a, hasValue ? eq : b).trim();
    const lower = name.toLowerCase();
    if (!name.startsWith('$')) fail(a, `expected a query option like $top=10 inside the parentheses of ${path}, got ${JSON.stringify(name.slice(0, 40))}`);
    if (!isLevelOption(lower)) {
      const known = lower === '$resultformat';
      fail(a, `${name} is not ${known ? 'allowed' : 'supported'} inside $expand (allowed: ${LEVEL_OPTIONS.join(', ')})`, known ? 'malformed' : 'unsupported');
    }
    if (!hasValue) fail(a, `expected '=' after ${name} inside the parentheses of ${path}`);
    if (seen.has(lower)) fail(a, `${name} given twice for ${path}`);
    seen.add(lower);
    parseOptionInto(target, lower as LevelOption, { ...span, from: eq + 1, to: b, where: `${span.where}${path}(${lower}): ` }, level);
  }
}

/** Adds `item` to `items`, merging it into an item for the same navigation. */
function mergeInto(items: ExpandItem[], item: ExpandItem, fail: (at: number, reason: string) => never): void {
  const same = items.find((x) => x.navigation === item.navigation);
  if (!same) {
    items.push(item);
    return;
  }
  const a = same.options;
  const b = item.options;
  for (const key of ['filter', 'select', 'top', 'skip', 'count'] as const) {
    if (b[key] === undefined) continue;
    if (a[key] !== undefined) fail(item.at, `${item.navigation} is expanded twice, both times with $${key}`);
    (a as unknown as Record<string, unknown>)[key] = b[key];
  }
  if (b.orderby.length > 0) {
    if (a.orderby.length > 0) fail(item.at, `${item.navigation} is expanded twice, both times with $orderby`);
    a.orderby = b.orderby;
  }
  for (const inner of b.expand) mergeInto(a.expand, inner, fail);
}
