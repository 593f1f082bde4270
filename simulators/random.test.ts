import { describe, expect, it } from 'vitest';
import { createRng, fractalNoise, hash, hashGauss, hashString, hashUnit, noise, round } from './random.ts';

describe('seeded randomness', () => {
  it('a stream is the same for the same seed and differs for another', () => {
    const a = createRng(42);
    const b = createRng(42);
    const c = createRng(43);
    const xs = Array.from({ length: 20 }, () => a.next());
    expect(Array.from({ length: 20 }, () => b.next())).toEqual(xs);
    expect(Array.from({ length: 20 }, () => c.next())).not.toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
  });

  it('shuffles, picks and draws integers within bounds', () => {
    const rng = createRng(1);
    const items = [1, 2, 3, 4, 5, 6, 7, 8];
    expect(rng.shuffle(items).sort()).toEqual(items);
    for (let i = 0; i < 200; i++) {
      expect(items).toContain(rng.pick(items));
      const n = rng.int(5);
      expect(n).toBeGreaterThanOrEqual(0);
      expect(n).toBeLessThan(5);
    }
  });

  it('hashes are stateless, spread evenly and use all bits of large keys', () => {
    expect(hash(1, 2, 3)).toBe(hash(1, 2, 3));
    expect(hash(1, 2, 3)).not.toBe(hash(1, 3, 2));
    const t = Date.UTC(2026, 0, 1);
    expect(hash(7, t)).not.toBe(hash(7, t + 2 ** 32)); // high 32 bits matter
    const n = 20_000;
    let sum = 0;
    const buckets = new Array(10).fill(0);
    for (let i = 0; i < n; i++) {
      const u = hashUnit(99, i);
      sum += u;
      buckets[Math.floor(u * 10)]++;
    }
    expect(sum / n).toBeCloseTo(0.5, 1);
    for (const b of buckets) expect(b).toBeGreaterThan(n / 10 - 300);
    let g2 = 0;
    for (let i = 0; i < n; i++) g2 += hashGauss(5, i) ** 2;
    expect(g2 / n).toBeCloseTo(1, 1);
    expect(hashString('bus')).toBe(hashString('bus'));
    expect(hashString('bus')).not.toBe(hashString('drone'));
  });

  it('noise is smooth and bounded', () => {
    let prev = noise(3, 0, 1000);
    for (let t = 10; t < 20_000; t += 10) {
      const v = noise(3, t, 1000);
      expect(Math.abs(v)).toBeLessThanOrEqual(1);
      expect(Math.abs(v - prev)).toBeLessThan(0.04); // no jumps between close times
      expect(Math.abs(fractalNoise(3, t, 1000))).toBeLessThanOrEqual(1);
      prev = v;
    }
  });

  it('rounds without negative zero', () => {
    expect(round(1.23456, 2)).toBe(1.23);
    expect(Object.is(round(-0.0001, 2), 0)).toBe(true);
  });
});
