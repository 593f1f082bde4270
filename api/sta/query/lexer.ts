import type { DurationParts } from './ast.ts';
import { StaQueryError } from './errors.ts';

/**
 * Tokens of one expression ($filter, a $orderby key, a $select list), read from
 * `source.slice(from, to)` with positions into the whole `source` (the option's value).
 * Literals follow 18-088 §9.3.3.5.1 and FROST-Server's grammar: strings in single quotes with `''`
 * for a quote; numbers; ISO 8601 date-times with an offset, unquoted; dates; `duration'P1D'`;
 * `geography'WKT'` and `geometry'WKT'` (kept as text here, parsed by wkt.ts).
 */
export type Token =
  | { type: 'name'; text: string; at: number }
  | { type: 'string'; value: string; at: number }
  | { type: 'number'; value: number; text: string; integer: boolean; at: number }
  | { type: 'datetime'; text: string; epochMs: number; offsetMinutes: number; at: number }
  | { type: 'date'; text: string; at: number }
  | { type: 'duration'; text: string; negative: boolean; parts: DurationParts; at: number }
  | { type: 'geometry'; geography: boolean; wkt: string; wktAt: number; at: number }
  | { type: 'index'; value: number; at: number }
  | { type: '(' | ')' | ',' | '/' | ':' | '-' | 'end'; at: number };

export interface LexContext {
  option: string;
  where: string;
  maxTokens: number;
}

/** A property or function name: letters (any script), digits, `_ . @ -`; `@iot.id`, `geo.intersects`. */
const NAME = /[\p{L}_@][\p{L}\p{N}_.@-]*/uy;
const NUMBER = /-?\d+(\.\d+)?([eE][+-]?\d+)?/y;
const DATE_TIME = /(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?/y;
const DURATION = /^(-)?P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$/i;
const NAME_CHAR = /[\p{L}\p{N}_.@]/u;
const SINGLE = new Set(['(', ')', ',', '/', ':']);

export function tokenize(source: string, from: number, to: number, ctx: LexContext): Token[] {
  const tokens: Token[] = [];
  const fail = (at: number, reason: string): never => {
    throw new StaQueryError(ctx.option, at, `${ctx.where}${reason}`);
  };
  const push = (t: Token) => {
    if (tokens.length >= ctx.maxTokens) fail(t.at, `more than ${ctx.maxTokens} terms`);
    tokens.push(t);
  };
  let i = from;
  while (i < to) {
    const c = source[i]!;
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    const at = i;
    if (SINGLE.has(c)) {
      push({ type: c as '(' | ')' | ',' | '/' | ':', at });
      i++;
    } else if (c === "'") {
      const { value, end } = quoted(source, i, to, fail);
      push({ type: 'string', value, at });
      i = end;
    } else if (c === '[') {
      const m = /\[(\d{1,9})\]/y;
      m.lastIndex = i;
      const r = m.exec(source);
      if (!r || r.index + r[0].length > to) fail(at, "expected an array index like '[0]'");
      push({ type: 'index', value: Number(r![1]), at });
      i += r![0].length;
    } else if (c >= '0' && c <= '9') {
      i = dateOrNumber(source, i, to, push, fail);
    } else if (c === '-') {
      if (i + 1 < to && source[i + 1]! >= '0' && source[i + 1]! <= '9') i = dateOrNumber(source, i, to, push, fail);
      else {
        push({ type: '-', at });
        i++;
      }
    } else {
      NAME.lastIndex = i;
      const m = NAME.exec(source);
      if (!m) return fail(at, unexpected(c));
      const text = m[0].length <= to - i ? m[0] : source.slice(i, to);
      i += text.length;
      if (source[i] === "'" && i < to) {
        const kind = text.toLowerCase();
        if (kind !== 'geography' && kind !== 'geometry' && kind !== 'duration') fail(i, `unexpected quote after ${text} (typed literals are geography'…', geometry'…' and duration'…')`);
        const { value, end } = quoted(source, i, to, fail);
        if (kind === 'duration') push(duration(value, at, i + 1, fail));
        else push({ type: 'geometry', geography: kind === 'geography', wkt: value, wktAt: i + 1, at });
        i = end;
      } else push({ type: 'name', text, at });
    }
  }
  tokens.push({ type: 'end', at: to });
  return tokens;
}

function unexpected(c: string): string {
  if (c === '‘' || c === '’') return `unexpected character ${c}: strings are quoted with ' (U+0027)`;
  if (c === '"') return `unexpected character ": strings are quoted with '`;
  if (c === '$') return "unexpected character $ (a query option cannot start here; options are separated by '&', or by ';' inside $expand)";
  return `unexpected character ${JSON.stringify(c)}`;
}

/** A `'…'` string from its opening quote: value with `''` undoubled, and the index after the closing quote. */
function quoted(source: string, open: number, to: number, fail: (at: number, reason: string) => never): { value: string; end: number } {
  let value = '';
  let i = open + 1;
  for (;;) {
    const close = source.indexOf("'", i);
    if (close < 0 || close >= to) return fail(open, 'this string has no closing quote');
    value += source.slice(i, close);
    if (source[close + 1] === "'" && close + 1 < to) {
      value += "'";
      i = close + 2;
    } else return { value, end: close + 1 };
  }
}

function dateOrNumber(source: string, i: number, to: number, push: (t: Token) => void, fail: (at: number, reason: string) => never): number {
  const at = i;
  DATE_TIME.lastIndex = i;
  const d = source[i] === '-' ? null : DATE_TIME.exec(source);
  if (d && d.index + d[0].length <= to) {
    const end = i + d[0].length;
    if (end < to && NAME_CHAR.test(source[end]!)) fail(end, `unexpected ${JSON.stringify(source[end])} in a date or time`);
    const [, y, mo, da, h, mi, s, frac, zone] = d;
    const back = new Date(0);
    back.setUTCFullYear(Number(y), Number(mo) - 1, Number(da)); // not Date.UTC: it reads years 0-99 as 1900-1999
    const day = back.getTime();
    if (back.getUTCFullYear() !== Number(y) || back.getUTCMonth() !== Number(mo) - 1 || back.getUTCDate() !== Number(da)) fail(at, `${y}-${mo}-${da} is not a calendar date`);
    if (h === undefined) {
      push({ type: 'date', text: d[0], at });
      return end;
    }
    if (zone === undefined) {
      const plusLost = / \d{2}:\d{2}/y;
      plusLost.lastIndex = end;
      return fail(at, plusLost.test(source)
        ? "a date-time needs a time-zone offset; a '+' in the URL reads as a space, send it as %2B"
        : 'a date-time needs a time-zone offset (Z, or +hh:mm / -hh:mm)');
    }
    if (Number(h) > 23 || Number(mi) > 59 || Number(s ?? 0) > 59) fail(at, `${d[0]} is not a time of day (hours 00-23, minutes and seconds 00-59)`);
    let offsetMinutes = 0;
    if (zone !== 'Z') {
      const oh = Number(zone.slice(1, 3));
      const om = Number(zone.slice(4, 6));
      if (oh > 23 || om > 59) fail(at, `${zone} is not a time-zone offset`);
      offsetMinutes = (zone[0] === '-' ? -1 : 1) * (oh * 60 + om);
    }
    const ms = frac ? Math.floor(Number(`0${frac}`) * 1000) : 0;
    const epochMs = day + ((Number(h) * 60 + Number(mi) - offsetMinutes) * 60 + Number(s ?? 0)) * 1000 + ms;
    push({ type: 'datetime', text: d[0], epochMs, offsetMinutes, at });
    return end;
  }
  NUMBER.lastIndex = i;
  const n = NUMBER.exec(source)!;
  const text = n[0].length <= to - i ? n[0] : source.slice(i, to);
  const end = i + text.length;
  if (end < to && NAME_CHAR.test(source[end]!)) fail(end, `unexpected ${JSON.stringify(source[end])} after the number ${text}`);
  const value = Number(text);
  if (!Number.isFinite(value)) fail(at, `the number ${text} is out of range`);
  push({ type: 'number', value, text, integer: n[1] === undefined && n[2] === undefined, at });
  return end;
}

function duration(text: string, at: number, textAt: number, fail: (at: number, reason: string) => never): Token {
  const m = DURATION.exec(text);
  if (!m || text.replace(/^-/, '').toUpperCase() === 'P' || /T$/i.test(text)) {
    return fail(textAt, `${JSON.stringify(text)} is not an ISO 8601 duration (like P1D, PT10M or P1Y2M3DT4H5M6.5S)`);
  }
  const n = (k: number) => (m[k] === undefined ? 0 : Number(m[k]));
  return {
    type: 'duration',
    text,
    negative: m[1] === '-',
    parts: { years: n(2), months: n(3), weeks: n(4), days: n(5), hours: n(6), minutes: n(7), seconds: n(8) },
    at,
  };
}
