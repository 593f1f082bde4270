import type { StaQueryLimits } from './limits.ts';

/**
 * Where one option's value lies: `source.slice(from, to)`, with positions reported into `source`
 * (the top-level option's value, so a `$filter` nested in `$expand` reports positions in `$expand`).
 */
export interface Span {
  source: string;
  from: number;
  to: number;
  /** The query parameter errors are reported against. */
  option: string;
  /** Prefix for reasons inside $expand (`Observations($filter): `), else ''. */
  where: string;
  limits: StaQueryLimits;
}
