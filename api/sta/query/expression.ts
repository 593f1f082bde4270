import type { BinaryOperator, CallExpr, ComparisonOperator, Expr, LambdaExpr, PathExpr } from './ast.ts';
import { StaQueryError } from './errors.ts';
import { arityText, FUNCTIONS, isFunctionName } from './functions.ts';
import type { Token } from './lexer.ts';
import type { StaQueryLimits } from './limits.ts';
import { parseWkt } from './wkt.ts';

/**
 * Recursive descent over the tokens of one expression, with these levels (loosest first):
 *
 *   or  <  and  <  not  <  eq ne gt ge lt le  <  add sub  <  mul div mod  <  unary -  <  primary
 *
 * OData 4.0 URL conventions §5.1.1.9 (18-088 cites it) order the arithmetic and logical operators
 * the same way. Two choices follow FROST-Server, the reference implementation: `not` applies to a
 * whole comparison (`not name eq 'x'` is `not (name eq 'x')`, where OData's table would make it
 * `(not name) eq 'x'`), and comparisons do not chain (`a eq b eq c` is refused, not guessed).
 * Keywords and function names are case-insensitive, as in FROST; property names are not.
 * Recursion is bounded by limits.maxNesting and the token count by the lexer.
 */
export interface ExpressionContext {
  option: string;
  /** Prefix for reasons (`Observations($filter): `) inside $expand. */
  where: string;
  limits: StaQueryLimits;
}

const COMPARISONS = new Set<string>(['eq', 'ne', 'gt', 'ge', 'lt', 'le']);
const ADDITIVE = new Set<string>(['add', 'sub']);
const MULTIPLICATIVE = new Set<string>(['mul', 'div', 'mod']);
const OPERATORS = new Set<string>([...COMPARISONS, ...ADDITIVE, ...MULTIPLICATIVE, 'and', 'or', 'not']);
const DE9IM = /^[TF*012]{9}$/i;

export class ExpressionParser {
  private i = 0;
  private depth = 0;
  private readonly variables: string[] = [];

  constructor(
    readonly tokens: Token[],
    private readonly ctx: ExpressionContext,
  ) {}

  get peek(): Token {
    return this.tokens[this.i]!;
  }

  /** The lower-case keyword at the cursor, when it is a name. */
  keyword(offset = 0): string | undefined {
    const t = this.tokens[this.i + offset];
    return t?.type === 'name' ? t.text.toLowerCase() : undefined;
  }

  next(): Token {
    const t = this.tokens[this.i]!;
    if (t.type !== 'end') this.i++;
    return t;
  }

  fail(at: number, reason: string, kind: 'malformed' | 'unsupported' = 'malformed'): never {
    throw new StaQueryError(this.ctx.option, at, `${this.ctx.where}${reason}`, kind);
  }

  /** What the token is, for "expected …, got …". */
  describe(t: Token): string {
    switch (t.type) {
      case 'end':
        return 'the end';
      case 'name':
        return `'${t.text}'`;
      case 'string':
        return 'a string';
      case 'number':
        return `the number ${t.text}`;
      case 'index':
        return `'[${t.value}]'`;
      case 'datetime':
      case 'date':
        return `the time ${t.text}`;
      case 'duration':
        return 'a duration';
      case 'geometry':
        return 'a geometry';
      default:
        return `'${t.type}'`;
    }
  }

  /** A whole expression, up to (not including) the first token that cannot continue it. */
  expression(): Expr {
    return this.or();
  }

  private enter(at: number) {
    if (++this.depth > this.ctx.limits.maxNesting) this.fail(at, `nested more than ${this.ctx.limits.maxNesting} deep`);
  }

  private or(): Expr {
    let left = this.and();
    while (this.keyword() === 'or') {
      const at = this.next().at;
      left = { kind: 'binary', op: 'or', left, right: this.and(), at };
    }
    return left;
  }

  private and(): Expr {
    let left = this.not();
    while (this.keyword() === 'and') {
      const at = this.next().at;
      left = { kind: 'binary', op: 'and', left, right: this.not(), at };
    }
    return left;
  }

  private not(): Expr {
    if (this.keyword() !== 'not') return this.comparison();
    const at = this.next().at;
    this.enter(at);
    const operand = this.not();
    this.depth--;
    return { kind: 'not', operand, at };
  }

  private comparison(): Expr {
    const left = this.additive();
    const op = this.keyword();
    if (op === undefined || !COMPARISONS.has(op)) return left;
    const at = this.next().at;
    const right = this.additive();
    const again = this.keyword();
    if (again !== undefined && COMPARISONS.has(again)) this.fail(this.peek.at, `comparisons do not chain: put parentheses around one of them`);
    return { kind: 'binary', op: op as ComparisonOperator, left, right, at };
  }

  private additive(): Expr {
    let left = this.multiplicative();
    for (let op = this.keyword(); op !== undefined && ADDITIVE.has(op); op = this.keyword()) {
      const at = this.next().at;
      left = { kind: 'binary', op: op as BinaryOperator, left, right: this.multiplicative(), at };
    }
    return left;
  }

  private multiplicative(): Expr {
    let left = this.unary();
    for (let op = this.keyword(); op !== undefined && MULTIPLICATIVE.has(op); op = this.keyword()) {
      const at = this.next().at;
      left = { kind: 'binary', op: op as BinaryOperator, left, right: this.unary(), at };
    }
    return left;
  }

  private unary(): Expr {
    if (this.peek.type !== '-') return this.primary();
    const at = this.next().at;
    this.enter(at);
    const operand = this.unary();
    this.depth--;
    return { kind: 'negate', operand, at };
  }

  private primary(): Expr {
    const t = this.next();
    switch (t.type) {
      case '(': {
        this.enter(t.at);
        const inner = this.expression();
        if (this.peek.type !== ')') this.fail(this.peek.at, `expected ')' to close the '(' at ${t.at}, got ${this.describe(this.peek)}`);
        this.next();
        this.depth--;
        return inner;
      }
      case 'string':
        return { kind: 'literal', type: 'string', value: t.value, at: t.at };
      case 'number':
        return { kind: 'literal', type: t.integer ? 'integer' : 'decimal', value: t.value, text: t.text, at: t.at };
      case 'datetime':
        return { kind: 'literal', type: 'datetime', text: t.text, epochMs: t.epochMs, offsetMinutes: t.offsetMinutes, at: t.at };
      case 'date':
        return { kind: 'literal', type: 'date', text: t.text, at: t.at };
      case 'duration':
        return { kind: 'literal', type: 'duration', text: t.text, negative: t.negative, parts: t.parts, at: t.at };
      case 'geometry': {
        const geometry = parseWkt(t.wkt, { option: this.ctx.option, base: t.wktAt, maxVertices: this.ctx.limits.maxWktVertices, where: this.ctx.where });
        return { kind: 'literal', type: 'geometry', geography: t.geography, geometry, wkt: t.wkt, at: t.at };
      }
      case 'name': {
        const word = t.text.toLowerCase();
        if (this.peek.type === '(') return this.call(t.text, t.at);
        if (word === 'true' || word === 'false') return { kind: 'literal', type: 'boolean', value: word === 'true', at: t.at };
        if (word === 'null') return { kind: 'literal', type: 'null', at: t.at };
        if (OPERATORS.has(word)) this.fail(t.at, `expected a value before '${t.text}'`);
        return this.path(t.text, t.at);
      }
      case 'end':
        return this.fail(t.at, 'expected a value, got the end');
      default:
        return this.fail(t.at, `expected a value, got ${this.describe(t)}`);
    }
  }

  private call(written: string, at: number): CallExpr {
    const name = written.toLowerCase();
    if (!isFunctionName(name)) return this.fail(at, `unknown function '${written}'`);
    const { min, max } = FUNCTIONS[name];
    const open = this.next().at;
    this.enter(open);
    const args: Expr[] = [];
    if (this.peek.type !== ')') {
      for (;;) {
        if (args.length === max) {
          this.fail(this.peek.at, max === 0 ? `${name}() ${arityText(name)}` : `${name} ${arityText(name)}, got more`);
        }
        args.push(this.expression());
        const t = this.peek;
        if (t.type === ',') {
          this.next();
          continue;
        }
        if (t.type === ')') break;
        this.fail(t.at, args.length >= min ? `expected ')' after the arguments of ${name}, got ${this.describe(t)}` : `expected ',' after argument ${args.length} of ${name}, got ${this.describe(t)}`);
      }
    }
    this.next();
    this.depth--;
    if (args.length < min) this.fail(at, `${name} ${arityText(name)}, got ${args.length}`);
    if (name === 'st_relate') {
      const pattern = args[2]!;
      if (pattern.kind !== 'literal' || pattern.type !== 'string' || !DE9IM.test(pattern.value)) {
        this.fail(pattern.at, "the third argument of st_relate must be a DE-9IM pattern string of 9 characters from T F * 0 1 2, like 'T********'");
      }
    }
    return { kind: 'call', name, args, at };
  }

  private path(first: string, at: number): PathExpr | LambdaExpr {
    const segments: (string | number)[] = [];
    const variable = this.variables.includes(first) ? first : undefined;
    if (variable === undefined) segments.push(first);
    const push = (s: string | number, sAt: number) => {
      if (segments.length >= this.ctx.limits.maxPathSegments) this.fail(sAt, `a path of more than ${this.ctx.limits.maxPathSegments} segments`);
      segments.push(s);
    };
    for (;;) {
      const t = this.peek;
      if (t.type === 'index') {
        this.next();
        push(t.value, t.at);
      } else if (t.type === '/') {
        this.next();
        const s = this.next();
        if (s.type !== 'name') this.fail(s.at, `expected a property name after '/', got ${this.describe(s)}`);
        const word = s.text;
        const quantifier = word.toLowerCase();
        if ((quantifier === 'any' || quantifier === 'all') && this.peek.type === '(') {
          const collection: PathExpr = { kind: 'path', segments, at };
          if (variable !== undefined) collection.variable = variable;
          if (segments.length === 0) this.fail(s.at, `${quantifier}() needs a collection before it`);
          return this.lambda(quantifier, collection, s.at);
        }
        push(word, s.at);
      } else break;
    }
    const path: PathExpr = { kind: 'path', segments, at };
    if (variable !== undefined) path.variable = variable;
    return path;
  }

  private lambda(quantifier: 'any' | 'all', collection: PathExpr, at: number): LambdaExpr {
    const open = this.next().at;
    this.enter(open);
    const node: LambdaExpr = { kind: 'lambda', quantifier, collection, at };
    if (this.peek.type === ')') {
      if (quantifier === 'all') this.fail(this.peek.at, 'all() needs a variable and a condition: all(x: x/result gt 0)');
    } else {
      const v = this.next();
      const name = v.type === 'name' ? v.text : '';
      if (!/^[\p{L}_][\p{L}\p{N}_]*$/u.test(name)) this.fail(v.at, `expected a lambda variable name, got ${this.describe(v)}`);
      if (this.variables.includes(name)) this.fail(v.at, `the lambda variable '${name}' is already in use`);
      if (this.peek.type !== ':') this.fail(this.peek.at, `expected ':' after the lambda variable '${name}'`);
      this.next();
      this.variables.push(name);
      node.variable = name;
      node.predicate = this.expression();
      this.variables.pop();
    }
    if (this.peek.type !== ')') this.fail(this.peek.at, `expected ')' to close ${quantifier}(, got ${this.describe(this.peek)}`);
    this.next();
    this.depth--;
    return node;
  }
}
