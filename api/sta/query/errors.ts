import type { ExposedError } from '../../problem.ts';

/**
 * Why a SensorThings request's query options cannot be served: `malformed` (400: the text breaks
 * the grammar or a bound) or `unsupported` (501: a `$` option this server does not implement — the
 * standard's answer, 18-088 §9.3 "requesting data"). The only error the query parser throws.
 *
 * `option` is the query parameter (`$filter`, `$expand`, …); `position` the 0-based index (UTF-16
 * code units) in that parameter's value, as the route received it, of where the trouble starts —
 * for an option nested in `$expand=…(…)` it is still an index into the whole `$expand` value.
 */
export class StaQueryError extends Error implements ExposedError {
  readonly statusCode: 400 | 501;
  readonly expose = true as const;
  readonly code: 'sta_query_malformed' | 'sta_query_unsupported';

  constructor(
    readonly option: string,
    readonly position: number,
    readonly reason: string,
    readonly kind: 'malformed' | 'unsupported' = 'malformed',
  ) {
    super(`${option}: at ${position}: ${reason}`);
    this.name = 'StaQueryError';
    this.statusCode = kind === 'malformed' ? 400 : 501;
    this.code = kind === 'malformed' ? 'sta_query_malformed' : 'sta_query_unsupported';
  }
}
