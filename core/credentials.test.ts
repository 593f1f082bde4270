import { describe, expect, it } from 'vitest';
import { generateToken, hashSecret, safeEqual, tokenLookup, verifySecret } from './credentials.ts';

describe('credentials', () => {
  it('generates distinct alphanumeric tokens', () => {
    const tokens = new Set(Array.from({ length: 200 }, () => generateToken()));
    expect(tokens.size).toBe(200);
    for (const t of tokens) expect(t).toMatch(/^[A-Za-z0-9]{32}$/);
  });

  it('verifies a token against its salted hash and refuses others', async () => {
    const token = generateToken();
    const stored = await hashSecret(token);
    expect(stored).not.toContain(token);
    expect(stored).not.toBe(await hashSecret(token)); // salted
    expect(await verifySecret(token, stored)).toBe(true);
    expect(await verifySecret(`${token}x`, stored)).toBe(false);
    expect(await verifySecret(token, 'garbage')).toBe(false);
  });

  it('derives a stable short lookup key', () => {
    expect(tokenLookup('abc')).toBe(tokenLookup('abc'));
    expect(tokenLookup('abc')).toHaveLength(16);
    expect(tokenLookup('abc')).not.toBe(tokenLookup('abd'));
  });

  it('compares strings of any length in constant time', () => {
    expect(safeEqual('key', 'key')).toBe(true);
    expect(safeEqual('key', 'kez')).toBe(false);
    expect(safeEqual('key', 'longer key')).toBe(false);
  });
});
