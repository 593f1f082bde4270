/**
 * Route schemas are JSON Schema draft 7 (what fastify's validator applies); the OpenAPI document
 * is 3.0.3, whose Schema Object is an older dialect (OpenAPI 3.0.3 §4.7.24). @fastify/swagger
 * converts most of the difference (`type: 'null'`, `const`); what it leaves is converted here, in
 * the one place the document passes through, so that a route written later cannot make the
 * document invalid (test/e2e/openapi.test.ts validates it):
 *
 * - `exclusiveMinimum: n` / `exclusiveMaximum: n` (draft 6+: the bound itself) become
 *   `minimum: n, exclusiveMinimum: true` (3.0: a flag on minimum/maximum).
 */
export function toOpenApi30<T>(document: T): T {
  // A copy: parts of the document may be the very schema objects the routes validate with.
  const copy = structuredClone(document);
  visit(copy, new Set());
  return copy;
}

function visit(node: unknown, seen: Set<object>): void {
  if (typeof node !== 'object' || node === null || seen.has(node)) return;
  seen.add(node);
  if (Array.isArray(node)) {
    for (const item of node) visit(item, seen);
    return;
  }
  const schema = node as Record<string, unknown>;
  for (const [exclusive, bound, tighter] of [
    ['exclusiveMinimum', 'minimum', Math.max],
    ['exclusiveMaximum', 'maximum', Math.min],
  ] as const) {
    const value = schema[exclusive];
    if (typeof value !== 'number') continue;
    const inclusive = schema[bound];
    // Both given: the exclusive one counts only where it is the tighter bound.
    if (typeof inclusive === 'number' && tighter(inclusive, value) === inclusive && inclusive !== value) {
      delete schema[exclusive];
    } else {
      schema[bound] = value;
      schema[exclusive] = true;
    }
  }
  for (const value of Object.values(schema)) visit(value, seen);
}

type Operation = { responses?: Record<string, { content?: Record<string, { schema?: { properties?: Record<string, unknown> } }> }> };

/**
 * Error answers are RFC 9457 problem details (api/problem.ts), sent as `application/problem+json`:
 * the document says so for every response ≥ 400 whose schema is an error body.
 */
export function documentProblems<T extends { paths?: Record<string, Record<string, unknown>> }>(document: T): T {
  for (const item of Object.values(document.paths ?? {})) {
    for (const op of Object.values(item) as Operation[]) {
      for (const [status, response] of Object.entries(op?.responses ?? {})) {
        const json = response.content?.['application/json'];
        if (!/^[45]/.test(status) || !json?.schema?.properties?.statusCode || !json.schema.properties.message) continue;
        response.content = { 'application/problem+json': json };
      }
    }
  }
  return document;
}
