import { describe, expect, it } from 'vitest';
import { generateToken, hashSecret, hashSecrets, safeEqual, tokenLookup, verifySecret } from './credentials.ts';

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

  it('hashes many secrets concurrently, each with its own salt, in order', async () => {
    const secrets = Array.from({ length: 9 }, (_, i) => `secret-${i % 3}`);
    const hashes = await hashSecrets(secrets, 2);
    expect(new Set(hashes).size).toBe(9);
    for (let i = 0; i < secrets.length; i++) expect(await verifySecret(secrets[i]!, hashes[i]!)).toBe(true);
    expect(await verifySecret(secrets[1]!, hashes[0]!)).toBe(false);
    expect(await hashSecrets([])).toEqual([]);
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
