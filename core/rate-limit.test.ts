import { describe, expect, it } from 'vitest';
import { RateLimiter, parseRateLimit } from './rate-limit.ts';

describe('rate limits', () => {
  it('parses ThingsBoard capacity:seconds pairs and refuses nonsense', () => {
    expect(parseRateLimit('200:1, 6000:60')).toEqual([
      { capacity: 200, seconds: 1 },
      { capacity: 6000, seconds: 60 },
    ]);
    for (const bad of ['', '200', '0:1', '5:0', 'a:b', '1:1,', '-1:5']) {
      if (bad === '1:1,') expect(parseRateLimit(bad)).toEqual([{ capacity: 1, seconds: 1 }]);
      else expect(() => parseRateLimit(bad), bad).toThrow();
    }
  });

  it('allows a burst up to capacity, then refills at capacity per period, honouring every bucket', () => {
    const t0 = 1_000_000;
    const limiter = new RateLimiter(parseRateLimit('5:1,8:60'), t0);
    expect(Array.from({ length: 6 }, () => limiter.take(t0))).toEqual([true, true, true, true, true, false]);
    expect(limiter.take(t0 + 400)).toBe(true); // 2 tokens back in the per-second bucket (5/s)
    expect(limiter.take(t0 + 400)).toBe(true);
    expect(limiter.take(t0 + 400)).toBe(false); // per second: empty again
    expect(limiter.take(t0 + 2000)).toBe(true); // per second full; the minute bucket's last token (8 spent)
    expect(limiter.take(t0 + 2000)).toBe(false); // per minute: empty (8/60 tokens per second come back)
    expect(limiter.take(t0 + 9000)).toBe(true); // 7 s later: about one token back per minute
  });

  it('knows when every bucket is full again (an idle device\'s limiter can be forgotten)', () => {
    const t0 = 1_000_000;
    const limiter = new RateLimiter(parseRateLimit('5:1,60:60'), t0);
    expect(limiter.refilled(t0)).toBe(true);
    limiter.take(t0);
    expect(limiter.refilled(t0 + 500)).toBe(false); // the minute bucket needs a second for its token
    expect(limiter.refilled(t0 + 1000)).toBe(true);
  });
});
