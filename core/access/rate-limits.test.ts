import { describe, expect, it } from 'vitest';
import { PERMISSION_NAMES } from './permissions.ts';
import { bootstrapPrincipal, type Principal } from './principal.ts';
import { describeLimit, limitOf, parseRequestLimit, parseRoleLimits, type LimitSettings } from './rate-limits.ts';
import { UNRESTRICTED } from './scope.ts';

describe('parseRequestLimit', () => {
  it('reads <count>/<window> and off', () => {
    expect(parseRequestLimit('600/min')).toEqual({ max: 600, windowMs: 60_000, text: '600/min' });
    expect(parseRequestLimit(' 50 / s ')).toEqual({ max: 50, windowMs: 1000, text: '50/s' });
    expect(parseRequestLimit('1000/10min')).toEqual({ max: 1000, windowMs: 600_000, text: '1000/10min' });
    expect(parseRequestLimit('20000/h').windowMs).toBe(3_600_000);
    expect(parseRequestLimit('100000/day').windowMs).toBe(86_400_000);
    expect(parseRequestLimit('off').max).toBe(Infinity);
  });

  it('refuses anything else, saying what is expected', () => {
    for (const bad of ['', '600', 'min', '600/fortnight', '0/min', '-5/min', '10/500ms', '10/8day', '600/min,']) {
      expect(() => parseRequestLimit(bad), bad).toThrow(/rate limit|count|window/);
    }
  });

  it('reads role lists', () => {
    const roles = parseRoleLimits('admin=6000/min, operator=1200/min,agency=off');
    expect([...roles.keys()]).toEqual(['admin', 'operator', 'agency']);
    expect(roles.get('agency')!.max).toBe(Infinity);
    expect(() => parseRoleLimits('admin')).toThrow(/role=limit/);
    expect(() => parseRoleLimits('admin=1/s,admin=2/s')).toThrow(/twice/);
    expect(() => parseRoleLimits('agency=lots')).toThrow(/not a rate limit/);
  });

  it('describes a limit in words', () => {
    expect(describeLimit(parseRequestLimit('600/min'))).toBe('600 requests per minute');
    expect(describeLimit(parseRequestLimit('1/10s'))).toBe('1 request per 10 seconds');
    expect(describeLimit(parseRequestLimit('5/2h'))).toBe('5 requests per 2 hours');
  });
});

describe('limitOf', () => {
  const settings: LimitSettings = {
    roles: parseRoleLimits('admin=6000/min,operator=1200/min,agency=600/min,burst=100/s'),
    fallback: parseRequestLimit('300/min'),
    bootstrap: parseRequestLimit('off'),
  };
  const key = (roles: string[], rateLimit: string | null = null): Principal => ({
    kind: 'key',
    id: 'key:1',
    keyId: 1,
    name: 'k',
    owner: 'o',
    roles,
    permissions: new Set(['read']),
    scope: UNRESTRICTED,
    expiresAt: null,
    rateLimit,
  });

  it("takes the most generous of the principal's roles; an unlisted role counts as the default", () => {
    expect(limitOf(key(['agency']), settings)).toMatchObject({ max: 600, source: 'role agency (RATE_LIMITS)' });
    expect(limitOf(key(['agency', 'operator']), settings)).toMatchObject({ max: 1200, source: 'role operator (RATE_LIMITS)' });
    // 100/s is 6000/min: more generous than 1200/min although its count is smaller.
    expect(limitOf(key(['operator', 'burst']), settings)).toMatchObject({ max: 100, windowMs: 1000 });
    expect(limitOf(key(['inspector']), settings)).toMatchObject({ max: 300, source: 'role inspector (RATE_LIMIT_DEFAULT)' });
    expect(limitOf(key([]), settings)).toMatchObject({ max: 300, source: 'RATE_LIMIT_DEFAULT' });
  });

  it("lets a key's own limit override its roles', stricter or looser; one that does not parse is ignored", () => {
    expect(limitOf(key(['admin'], '10/min'), settings)).toMatchObject({ max: 10, source: "the key's own rate limit" });
    expect(limitOf(key(['agency'], 'off'), settings).max).toBe(Infinity);
    expect(limitOf(key(['agency'], 'plenty'), settings)).toMatchObject({ max: 600 });
  });

  it('gives the bootstrap admin key its own limit', () => {
    expect(limitOf(bootstrapPrincipal(new Set(PERMISSION_NAMES)), settings)).toMatchObject({ max: Infinity, source: 'BOOTSTRAP_RATE_LIMIT' });
  });
});
