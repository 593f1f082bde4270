import { describe, expect, it } from 'vitest';
import { parseRequestLimit } from './access/rate-limits.ts';
import { AuthThrottle, NegativeCache, credentialId, sourceKey, type Attempt } from './auth-throttle.ts';

/** A throttle on a clock the test moves (the leak and the blocks are functions of time). */
function throttle(perSource = '10/10min', perCredential = '3/10min', backoffMaxMs = 900_000, maxEntries = 1000) {
  const clock = { now: 1_000_000 };
  const counts = { failures: [] as string[], throttled: [] as string[] };
  const t = new AuthThrottle(
    { perSource: parseRequestLimit(perSource), perCredential: parseRequestLimit(perCredential), backoffMaxMs, maxEntries },
    { failures: { inc: (l) => counts.failures.push(`${l.via}:${l.reason}`) }, throttled: { inc: (l) => counts.throttled.push(`${l.via}:${l.limit}`) } },
    () => clock.now,
  );
  return { t, clock, counts };
}
const attempt = (source: string | undefined, credential: string | undefined): Attempt => ({ via: 'mqtt', source, credential });

describe('AuthThrottle', () => {
  it('blocks a credential after N failures for window/N, then twice as long after each further failure', () => {
    const { t, clock, counts } = throttle('off', '3/10min');
    const a = attempt('10.0.0.1', credentialId('username', 'pump-7'));
    for (let i = 0; i < 3; i++) {
      expect(t.admit(a)).toEqual({ ok: true });
      t.failed(a, 'wrong_password');
    }
    // 3 failures: blocked for 10 min / 3 = 200 s, whatever the address.
    expect(t.admit(a)).toEqual({ ok: false, limit: 'credential', retryAfterMs: 200_000 });
    expect(t.admit({ ...a, source: '10.9.9.9' })).toMatchObject({ ok: false, limit: 'credential' });
    expect(counts.throttled).toEqual(['mqtt:credential', 'mqtt:credential']);
    expect(counts.failures).toEqual(['mqtt:wrong_password', 'mqtt:wrong_password', 'mqtt:wrong_password']);
    clock.now += 199_999;
    expect(t.admit(a).ok).toBe(false);
    clock.now += 1;
    expect(t.admit(a).ok).toBe(true);
    // The bucket did not drain during the block: the next failure blocks again, for twice as long.
    t.failed(a, 'wrong_password');
    expect(t.admit(a)).toEqual({ ok: false, limit: 'credential', retryAfterMs: 400_000 });
    clock.now += 400_000;
    t.failed(a, 'wrong_password');
    expect(t.admit(a)).toEqual({ ok: false, limit: 'credential', retryAfterMs: 800_000 });
    clock.now += 800_000;
    t.failed(a, 'wrong_password');
    expect(t.admit(a)).toEqual({ ok: false, limit: 'credential', retryAfterMs: 900_000 }); // AUTH_BACKOFF_MAX_MS
  });

  it('blocks at the Nth failure even though the bucket drains a little between failures', () => {
    const { t, clock } = throttle('off', '3/10min');
    const a = attempt(undefined, credentialId('token', 'retrying'));
    for (let i = 0; i < 3; i++) {
      expect(t.admit(a).ok).toBe(true);
      t.failed(a, 'unknown_token');
      clock.now += 1_000; // a device retrying every second
    }
    expect(t.admit(a)).toMatchObject({ ok: false, limit: 'credential' });
  });

  it('forgets a record once its bucket has drained, and a success clears its credential (not its source)', () => {
    const { t, clock } = throttle('4/10min', '3/10min');
    const a = attempt('10.0.0.1', credentialId('token', 'wrong'));
    t.failed(a, 'unknown_token');
    t.failed(a, 'unknown_token');
    expect(t.entries).toBe(2);
    clock.now += 400_000; // two failures drain in 2 × 200 s (credential) and 2 × 150 s (source)
    expect(t.admit(a).ok).toBe(true);
    expect(t.entries).toBe(0);

    const b = attempt('10.0.0.2', credentialId('username', 'gate-9'));
    t.failed(b, 'wrong_password');
    t.failed(b, 'wrong_password');
    t.succeeded(b);
    t.failed(b, 'wrong_password');
    t.failed(b, 'wrong_password');
    // Without the reset the credential would be at 4 ≥ 3; the source keeps counting: 4 ≥ 4.
    expect(t.admit({ ...b, source: '10.0.0.3' }).ok).toBe(true);
    expect(t.admit(b)).toMatchObject({ ok: false, limit: 'source' });
  });

  it('counts a source’s failures across credentials; another source is not affected', () => {
    const { t } = throttle('5/10min', '3/10min');
    for (let i = 0; i < 5; i++) t.failed(attempt('192.0.2.7', credentialId('token', `guess-${i}`)), 'unknown_token');
    expect(t.admit(attempt('192.0.2.7', credentialId('token', 'guess-99')))).toEqual({ ok: false, limit: 'source', retryAfterMs: 120_000 });
    expect(t.admit(attempt('::ffff:192.0.2.7', undefined)).ok).toBe(false); // the same address over IPv6 sockets
    expect(t.admit(attempt('192.0.2.8', credentialId('token', 'guess-99'))).ok).toBe(true);
  });

  it('never blocks with limits off', () => {
    const { t } = throttle('off', 'off');
    const a = attempt('10.0.0.1', credentialId('token', 'x'));
    for (let i = 0; i < 100; i++) t.failed(a, 'unknown_token');
    expect(t.admit(a).ok).toBe(true);
    expect(t.entries).toBe(0);
  });

  it('keeps at most maxEntries records of each kind', () => {
    const { t } = throttle('10/10min', '3/10min', 900_000, 100);
    for (let i = 0; i < 1000; i++) t.failed(attempt(`10.0.${i >> 8}.${i & 255}`, credentialId('token', `t${i}`)), 'unknown_token');
    expect(t.entries).toBe(200);
  });
});

describe('sourceKey', () => {
  it('counts IPv4 as it is, IPv4-mapped IPv6 as IPv4, IPv6 by its /64', () => {
    expect(sourceKey('203.0.113.9')).toBe('203.0.113.9');
    expect(sourceKey('::ffff:203.0.113.9')).toBe('203.0.113.9');
    expect(sourceKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:db8:1:2::99')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:0db8:0001:0002:ffff::1')).toBe('2001:db8:1:2::/64');
    expect(sourceKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(sourceKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(sourceKey('::1')).toBe('0:0:0:0::/64');
  });
});

describe('credentialId', () => {
  it('names a credential by kind and digest, never by the secret', () => {
    const id = credentialId('token', 'a-secret-device-token-0001');
    expect(id).toMatch(/^token:[A-Za-z0-9_-]{22}$/);
    expect(id).not.toContain('secret');
    expect(credentialId('username', 'x')).not.toBe(credentialId('client', 'x'));
  });
});

describe('NegativeCache', () => {
  it('remembers a miss for its TTL, forgets on demand, and is off at 0', () => {
    const clock = { now: 0 };
    const cache = new NegativeCache(30_000, 3, () => clock.now);
    cache.add('t:a');
    expect(cache.has('t:a')).toBe(true);
    clock.now += 30_000;
    expect(cache.has('t:a')).toBe(false);
    cache.add('t:b');
    cache.forget('t:b');
    expect(cache.has('t:b')).toBe(false);
    for (const n of ['1', '2', '3', '4']) cache.add(n);
    expect(cache.has('1')).toBe(false); // bounded: the oldest went
    expect(cache.has('4')).toBe(true);
    const off = new NegativeCache(0);
    off.add('x');
    expect(off.has('x')).toBe(false);
  });
});
