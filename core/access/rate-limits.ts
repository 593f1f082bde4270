import type { Principal } from './principal.ts';

/**
 * Request rate limits per principal: `<count>/<window>`, e.g. `600/min`, `50/s`, `1000/10min`,
 * `20000/h`, `100000/day`, or `off` (no limit). Each principal has one counter per window
 * (a fixed window: the count restarts when the window has passed since its first request).
 */
export interface RequestLimit {
  /** Requests allowed per window; Infinity: no limit. */
  max: number;
  /** Window length in milliseconds. */
  windowMs: number;
  /** As written (`600/min`, `off`). */
  text: string;
}

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  sec: 1000,
  second: 1000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  h: 3_600_000,
  hour: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
};

export const OFF: RequestLimit = { max: Infinity, windowMs: 60_000, text: 'off' };

/** Parses `600/min`, `50/s`, `1000/10min`, `off`; throws an Error saying what is wrong. */
export function parseRequestLimit(raw: string): RequestLimit {
  const text = raw.trim();
  if (text === 'off') return OFF;
  const m = /^(\d{1,9})\s*\/\s*(\d{0,6})\s*([a-z]+)$/i.exec(text);
  const unit = m ? UNITS[m[3]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new Error(`"${raw}" is not a rate limit: expected <count>/<window> such as 600/min, 50/s, 1000/10min, 20000/h or 100000/day, or off`);
  const max = Number(m[1]);
  const windowMs = (m[2] === '' ? 1 : Number(m[2])) * unit;
  if (max < 1) throw new Error(`"${raw}": the count must be at least 1 (use off for no limit)`);
  if (windowMs < 1000 || windowMs > 7 * 86_400_000) throw new Error(`"${raw}": the window must be between 1 s and 7 days`);
  return { max, windowMs, text: `${max}/${m[2]}${m[3]!.toLowerCase()}` };
}

/** `admin=6000/min,operator=1200/min` → role → limit; throws an Error saying what is wrong. */
export function parseRoleLimits(raw: string): Map<string, RequestLimit> {
  const out = new Map<string, RequestLimit>();
  for (const part of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf('=');
    if (at <= 0) throw new Error(`"${part}" is not role=limit (e.g. agency=600/min)`);
    const role = part.slice(0, at).trim();
    if (out.has(role)) throw new Error(`role "${role}" is given twice`);
    out.set(role, parseRequestLimit(part.slice(at + 1)));
  }
  return out;
}

/** Requests per millisecond: how two limits compare (the more generous wins). */
const rate = (l: RequestLimit) => l.max / l.windowMs;

export interface LimitSettings {
  /** Per role (RATE_LIMITS). */
  roles: ReadonlyMap<string, RequestLimit>;
  /** A role not listed (RATE_LIMIT_DEFAULT). */
  fallback: RequestLimit;
  /** The bootstrap admin key (BOOTSTRAP_RATE_LIMIT). */
  bootstrap: RequestLimit;
}

/** A principal's limit and where it comes from (for the 429's message). */
export interface PrincipalLimit extends RequestLimit {
  source: string;
}

/**
 * The limit of a principal: the bootstrap key's own; else an API key's own `rate_limit`; else the
 * most generous of its roles' limits (a role not in RATE_LIMITS counts as RATE_LIMIT_DEFAULT).
 * A key's own limit that does not parse (written behind the API's back) is ignored.
 */
export function limitOf(p: Principal, settings: LimitSettings): PrincipalLimit {
  if (p.kind === 'bootstrap') return { ...settings.bootstrap, source: 'BOOTSTRAP_RATE_LIMIT' };
  if (p.rateLimit) {
    try {
      return { ...parseRequestLimit(p.rateLimit), source: "the key's own rate limit" };
    } catch {
      // fall through to the roles
    }
  }
  let best: PrincipalLimit | undefined;
  for (const role of p.roles) {
    const listed = settings.roles.get(role);
    const limit: PrincipalLimit = listed ? { ...listed, source: `role ${role} (RATE_LIMITS)` } : { ...settings.fallback, source: `role ${role} (RATE_LIMIT_DEFAULT)` };
    if (!best || rate(limit) > rate(best)) best = limit;
  }
  return best ?? { ...settings.fallback, source: 'RATE_LIMIT_DEFAULT' };
}

/** `600 requests per minute`, `50 requests per 10 seconds`. */
export function describeLimit(l: RequestLimit): string {
  if (l.max === Infinity) return 'no limit';
  const [n, unit] =
    l.windowMs % 86_400_000 === 0 ? [l.windowMs / 86_400_000, 'day'] : l.windowMs % 3_600_000 === 0 ? [l.windowMs / 3_600_000, 'hour'] : l.windowMs % 60_000 === 0 ? [l.windowMs / 60_000, 'minute'] : [l.windowMs / 1000, 'second'];
  return `${l.max} request${l.max === 1 ? '' : 's'} per ${n === 1 ? unit : `${n} ${unit}s`}`;
}
