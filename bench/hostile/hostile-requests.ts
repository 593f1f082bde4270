import type { createRng } from '../../simulators/random.ts';
import { BODIES, JSON_CORE, JSON_MORE, URL_CORE, URL_MORE } from '../../test/support/hostile-values.ts';

export interface HostileRequest {
  method: string;
  path: string;
  contentType?: string;
  body?: string | Uint8Array;
}

type Schema = { type?: string | string[]; properties?: Record<string, Schema>; items?: Schema; anyOf?: Schema[]; oneOf?: Schema[] };
type Operation = { parameters?: { name: string; in: string; schema?: Schema }[]; requestBody?: { content?: Record<string, { schema?: Schema }> } };
type Document = { paths: Record<string, Record<string, Operation>> };

const RESOURCE_IDS = ['1', '2', '999999', '0', '-1', '2147483648', '1e23', 'Infinity', '%00'];

/**
 * Hostile requests for every operation of an OpenAPI document, with the fuzz test's values
 * (test/support/hostile-values.ts): each path, query parameter and body property in turn takes
 * each hostile value while the others stay plausible; plus malformed bodies. The same document gives the same requests (`rng` only shuffles their order).
 */
export function hostileRequests(doc: Document, rng: ReturnType<typeof createRng>): HostileRequest[] {
  const out: HostileRequest[] = [];
  for (const [template, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const upper = method.toUpperCase();
      const pathParams = (op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
      const query = (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name);
      const fill = (hostile?: { name: string; value: string }) =>
        template.replace(/\{(\w+)\}/g, (_, name: string) => (hostile?.name === name ? hostile.value : '1'));
      for (const name of pathParams) for (const value of RESOURCE_IDS) out.push({ method: upper, path: fill({ name, value: encodeURIComponent(value) }) });
      for (const name of query) {
        for (const value of [...URL_CORE, ...URL_MORE]) out.push({ method: upper, path: `${fill()}?${name}=${value}` });
        out.push({ method: upper, path: `${fill()}?${name}=1&${name}=2` });
      }
      const schema = op.requestBody?.content?.['application/json']?.schema;
      if (schema) {
        const props = Object.keys(schema.properties ?? {});
        for (const name of props) for (const value of [...JSON_CORE, ...JSON_MORE]) out.push({ method: upper, path: fill(), contentType: 'application/json', body: `{${JSON.stringify(name)}:${value}}` });
        for (const [contentType, body] of BODIES) out.push({ method: upper, path: fill(), contentType, body });
      }
    }
  }
  for (let i = out.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
