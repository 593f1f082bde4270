/**
 * Seeded randomness for the simulators. Nothing here reads the clock or Math.random, so a
 * simulated fleet is the same for the same seed.
 *
 * Two kinds:
 *  - `createRng(seed)`: a sequential stream (mulberry32), used once to lay out a fleet.
 *  - `hash*` / `noise`: stateless, keyed by integers (seed, device, time step…). Readings use
 *    these, so the n-th reading of a device can be computed on its own, in any order.
 */

/** 32-bit FNV-1a of a string, for turning names into hash keys. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** murmur3's finaliser: a good 32-bit avalanche. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const TWO_32 = 2 ** 32;

/**
 * Hashes integer keys to an unsigned 32-bit integer. Keys may be any safe integers (timestamps
 * in milliseconds included): the high and low 32 bits are both mixed in.
 */
export function hash(...keys: number[]): number {
  let h = 0x9e3779b9;
  for (const key of keys) {
    const k = Math.trunc(key);
    const lo = k >>> 0;
    const hi = Math.floor(k / TWO_32) >>> 0;
    h = fmix32(h ^ Math.imul(lo, 0xcc9e2d51)) + 0x6b43a9b5;
    h = fmix32(h ^ Math.imul(hi + 0x27d4eb2f, 0x1b873593)) + 0x165667b1;
  }
  return fmix32(h);
}

/** Uniform in [0, 1) from integer keys. */
export function hashUnit(...keys: number[]): number {
  return hash(...keys) / TWO_32;
}

/** Uniform in [-1, 1) from integer keys. */
export function hashSigned(...keys: number[]): number {
  return hashUnit(...keys) * 2 - 1;
}

/** Standard normal from integer keys (Box–Muller on two hashes). */
export function hashGauss(...keys: number[]): number {
  const u1 = (hash(...keys, 1) + 1) / (TWO_32 + 1); // (0, 1): log() stays finite
  const u2 = hash(...keys, 2) / TWO_32;
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/**
 * Smooth value noise in [-1, 1]: random values at every `periodMs` step of time, joined by a
 * cosine ease so the curve has no corners. `key` separates independent noise curves.
 */
export function noise(key: number, t: number, periodMs: number): number {
  const x = t / periodMs;
  const i = Math.floor(x);
  const f = x - i;
  const a = hashSigned(key, i);
  const b = hashSigned(key, i + 1);
  const w = (1 - Math.cos(Math.PI * f)) / 2;
  return a + (b - a) * w;
}

/** Sum of noise at three scales (periods p, p/3, p/9), still within [-1, 1]. */
export function fractalNoise(key: number, t: number, periodMs: number): number {
  return 0.6 * noise(key, t, periodMs) + 0.3 * noise(key ^ 0x5bd1e995, t, periodMs / 3) + 0.1 * noise(key ^ 0x1b873593, t, periodMs / 9);
}

export interface Rng {
  /** Uniform in [0, 1). */
  next(): number;
  /** Uniform in [min, max). */
  range(min: number, max: number): number;
  /** Integer in [0, n). */
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
  /** A new array with the items in a random order (Fisher–Yates). */
  shuffle<T>(items: readonly T[]): T[];
  gauss(): number;
}

/** mulberry32: tiny, fast, good enough for laying out a simulated fleet. */
export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / TWO_32;
  };
  const rng: Rng = {
    next,
    range: (min, max) => min + (max - min) * next(),
    int: (n) => Math.floor(next() * n),
    pick: (items) => {
      if (items.length === 0) throw new Error('pick from an empty list');
      return items[Math.floor(next() * items.length)]!;
    },
    shuffle: (items) => {
      const out = [...items];
      for (let i = out.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [out[i], out[j]] = [out[j]!, out[i]!];
      }
      return out;
    },
    gauss: () => {
      const u1 = 1 - next();
      const u2 = next();
      return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    },
  };
  return rng;
}

export const clamp = (x: number, min: number, max: number): number => (x < min ? min : x > max ? max : x);

/** Rounds to `digits` decimals (readings are sent with sensible precision, not 17 digits). */
export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  const r = Math.round(x * f) / f;
  return Object.is(r, -0) ? 0 : r;
}
