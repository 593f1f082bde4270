import type { PathExpr } from './ast.ts';
import { expressionParser } from './filter.ts';
import type { Span } from './span.ts';

/** `$select` (18-088 §9.3.2.2): a comma list of property (or navigation) names; FROST's deep paths (`properties/type`) pass too. */
export function parseSelect(span: Span): PathExpr[] {
  const parser = expressionParser(span, 'a property name');
  const paths: PathExpr[] = [];
  for (;;) {
    const t = parser.peek;
    if (paths.length >= span.limits.maxListItems) parser.fail(t.at, `more than ${span.limits.maxListItems} properties`);
    if (t.type !== 'name') parser.fail(t.at, `expected a property name, got ${parser.describe(t)}`);
    if (paths.length === 0 && t.type === 'name' && t.text.toLowerCase() === 'distinct' && parser.tokens[1]?.type === ':') {
      parser.fail(t.at, 'distinct: (a FROST-Server extension) is not supported', 'unsupported');
    }
    const expr = parser.expression();
    if (expr.kind !== 'path') parser.fail(t.at, `expected a property name, got an expression`);
    paths.push(expr as PathExpr);
    const sep = parser.next();
    if (sep.type === 'end') return paths;
    if (sep.type !== ',') parser.fail(sep.at, `expected ',' or the end, got ${parser.describe(sep)}`);
  }
}
