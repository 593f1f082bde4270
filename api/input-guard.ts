import type { FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

/**
 * The part of the parameter rules (api/schemas.ts) that a JSON Schema cannot carry for every route,
 * checked here once for all of them — routes added later included:
 *  - before validation, every string and member name in the path, query string and body: no
 *    U+0000 (PostgreSQL text and jsonb cannot hold it) and no unpaired UTF-16 surrogate (not
 *    Unicode text; only a JSON body's `\ud800` escape can carry one). This covers the JSON values
 *    no schema describes (RPC params, attributes, geometries, import rows);
 *  - after validation, every number: finite. ajv's coercion turns the query text "Infinity" into
 *    Infinity and then skips minimum/maximum for it, and JSON's 1e999 parses as Infinity.
 * A refusal is a 400 naming the place (`querystring/limit`, `body/params/note`).
 */

/** A NUL, or a surrogate that is not half of a pair (with the `u` flag a pair is one code point above U+FFFF). */
const UNSAFE_TEXT = /[\u0000\uD800-\uDFFF]/u;

const PARTS = ['params', 'querystring', 'body'] as const;
type Part = (typeof PARTS)[number];
const valueOf = (request: FastifyRequest, part: Part): unknown => (part === 'querystring' ? request.query : request[part]);

/** Why the text cannot be taken, or undefined. */
export function unsafeText(text: string): string | undefined {
  const m = UNSAFE_TEXT.exec(text);
  if (!m) return undefined;
  if (m[0] === '\u0000') return 'contains U+0000 (NUL), which cannot be stored';
  return `contains an unpaired UTF-16 surrogate (U+${m[0].charCodeAt(0).toString(16).toUpperCase()}), which is not text`;
}

interface Entry {
  value: unknown;
  parent: Entry | undefined;
  key: string | number;
}
const pathOf = (e: Entry): string => {
  const keys: (string | number)[] = [];
  for (let at: Entry | undefined = e; at; at = at.parent) keys.push(at.key);
  return keys.reverse().join('/');
};

/**
 * The first place in `value` that breaks the rules, with why: `querystring/namePrefix: contains
 * U+0000 …`; undefined when there is none. Walks without recursion (a body may nest thousands deep).
 */
export function unsafeInput(value: unknown, at: string, check: { text: boolean; numbers: boolean }): string | undefined {
  const stack: Entry[] = [{ value, parent: undefined, key: at }];
  for (let e = stack.pop(); e; e = stack.pop()) {
    const v = e.value;
    if (typeof v === 'string') {
      const why = check.text ? unsafeText(v) : undefined;
      if (why) return `${pathOf(e)}: ${why}`;
    } else if (typeof v === 'number') {
      if (check.numbers && !Number.isFinite(v)) return `${pathOf(e)}: must be a finite number`;
    } else if (Array.isArray(v)) {
      // Arrays of numbers (coordinates: a polygon may hold 10,000 positions) are checked in place.
      let i = v.length - 1;
      for (; i >= 0 && typeof v[i] === 'number'; i--) if (check.numbers && !Number.isFinite(v[i])) return `${pathOf(e)}/${i}: must be a finite number`;
      for (; i >= 0; i--) stack.push({ value: v[i], parent: e, key: i });
    } else if (v !== null && typeof v === 'object' && !ArrayBuffer.isView(v)) {
      for (const key of Object.keys(v)) {
        const why = check.text ? unsafeText(key) : undefined;
        if (why) return `${pathOf(e)}: member name ${JSON.stringify(key)} ${why}`;
        stack.push({ value: (v as Record<string, unknown>)[key], parent: e, key });
      }
    }
  }
  return undefined;
}

/** A 400 the way fastify reports a request that breaks its schema. */
const refusal = (message: string) => Object.assign(new Error(message), { statusCode: 400, code: 'FST_ERR_VALIDATION' });

export const inputGuard = fp(async (app) => {
  const check = (request: FastifyRequest, what: { text: boolean; numbers: boolean }) => {
    for (const part of PARTS) {
      const why = unsafeInput(valueOf(request, part), part, what);
      if (why) throw refusal(why);
    }
  };
  app.addHook('preValidation', async (request) => check(request, { text: true, numbers: false }));
  app.addHook('preHandler', async (request) => check(request, { text: false, numbers: true }));
});
