import type { Expr } from './ast.ts';
import { ExpressionParser } from './expression.ts';
import { tokenize } from './lexer.ts';
import type { Span } from './span.ts';

/** `$filter` (18-088 §9.3.3.5): one boolean expression, nothing after it. */
export function parseFilter(span: Span): Expr {
  const parser = expressionParser(span, 'a condition');
  const expr = parser.expression();
  if (parser.peek.type !== 'end') {
    const word = parser.keyword();
    if (word === 'in' || word === 'has') parser.fail(parser.peek.at, `the operator '${word}' is not supported (a FROST-Server and OData 4.01 extension; use 'or' of 'eq')`);
    parser.fail(parser.peek.at, `expected an operator ('and', 'or', 'eq', …) or the end, got ${parser.describe(parser.peek)}`);
  }
  return expr;
}

/** A parser over the span's tokens; refuses an empty span, naming `what` was expected. */
export function expressionParser(span: Span, what: string): ExpressionParser {
  const tokens = tokenize(span.source, span.from, span.to, { option: span.option, where: span.where, maxTokens: span.limits.maxTokens });
  const parser = new ExpressionParser(tokens, { option: span.option, where: span.where, limits: span.limits });
  if (parser.peek.type === 'end') parser.fail(span.from, `is empty: expected ${what}`);
  return parser;
}
