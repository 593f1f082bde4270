import type { OrderKey } from './ast.ts';
import { expressionParser } from './filter.ts';
import type { Span } from './span.ts';

/** `$orderby` (18-088 §9.3.3.1): `expr [asc|desc], …`, ascending by default; a key may be any expression (`length(name) desc`). */
export function parseOrderby(span: Span): OrderKey[] {
  const parser = expressionParser(span, 'a property to order by');
  const keys: OrderKey[] = [];
  for (;;) {
    if (keys.length >= span.limits.maxListItems) parser.fail(parser.peek.at, `more than ${span.limits.maxListItems} ordering keys`);
    const expr = parser.expression();
    const direction = parser.keyword();
    if (direction === 'asc' || direction === 'desc') parser.next();
    keys.push({ expr, descending: direction === 'desc' });
    const t = parser.next();
    if (t.type === 'end') return keys;
    if (t.type !== ',') parser.fail(t.at, `expected 'asc', 'desc', ',' or the end, got ${parser.describe(t)}`);
  }
}
