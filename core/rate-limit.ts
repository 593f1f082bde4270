/**
 * ThingsBoard-style rate limits: a string of `capacity:seconds` pairs, e.g. `"200:1,6000:60"` =
 * at most 200 per second and 6000 per minute. Each pair is a token bucket refilled continuously.
 */
export interface RateLimitSpec {
  capacity: number;
  seconds: number;
}

export function parseRateLimit(raw: string): RateLimitSpec[] {
  const pairs = raw
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean);
  if (pairs.length === 0) throw new Error('expected "capacity:seconds" pairs, e.g. 200:1,6000:60');
  return pairs.map((pair) => {
    const m = /^(\d{1,9}):(\d{1,7})$/.exec(pair);
    if (!m || Number(m[1]) < 1 || Number(m[2]) < 1) throw new Error(`"${pair}" is not capacity:seconds (positive integers)`);
    return { capacity: Number(m[1]), seconds: Number(m[2]) };
  });
}

/** One client's buckets. `take()` spends one token from each, or none when any is empty. */
export class RateLimiter {
  private readonly tokens: number[];
  private last: number;

  constructor(
    private readonly spec: RateLimitSpec[],
    now = Date.now(),
  ) {
    this.tokens = spec.map((s) => s.capacity);
    this.last = now;
  }

  take(now = Date.now()): boolean {
    const elapsed = Math.max(0, now - this.last) / 1000;
    this.last = now;
    let ok = true;
    for (let i = 0; i < this.spec.length; i++) {
      const s = this.spec[i]!;
      this.tokens[i] = Math.min(s.capacity, this.tokens[i]! + (elapsed * s.capacity) / s.seconds);
      if (this.tokens[i]! < 1) ok = false;
    }
    if (ok) for (let i = 0; i < this.tokens.length; i++) this.tokens[i]! -= 1;
    return ok;
  }

  /** Whether every bucket is full again by `now` (an idle limiter that can be forgotten). */
  refilled(now = Date.now()): boolean {
    const elapsed = Math.max(0, now - this.last) / 1000;
    return this.spec.every((s, i) => this.tokens[i]! + (elapsed * s.capacity) / s.seconds >= s.capacity);
  }
}
