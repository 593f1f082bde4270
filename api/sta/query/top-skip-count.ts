import { StaQueryError } from './errors.ts';
import type { Span } from './span.ts';

const text = (span: Span) => span.source.slice(span.from, span.to);
const fail = (span: Span, reason: string): never => {
  throw new StaQueryError(span.option, span.from, `${span.where}${reason}`);
};

/** `$top` (§9.3.3.2) and `$skip` (§9.3.3.3): a non-negative integer, at most `max`. */
export function parseCountLimit(span: Span, name: '$top' | '$skip', max: number): number {
  const t = text(span);
  if (!/^\d{1,16}$/.test(t)) return fail(span, `${name} must be a non-negative integer, got ${JSON.stringify(t.slice(0, 40))}`);
  const n = Number(t);
  if (n > max) fail(span, `${name} must be at most ${max}, got ${t}`);
  return n;
}

/** `$count` (§9.3.3.4): true or false; anything else is a 400, as the standard says. */
export function parseCount(span: Span): boolean {
  const t = text(span).toLowerCase();
  if (t === 'true') return true;
  if (t === 'false') return false;
  return fail(span, `$count must be true or false, got ${JSON.stringify(text(span).slice(0, 40))}`);
}
