import { describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { generateToken, hashSecret, hashSecrets, isLegacyLookup, legacyTokenLookup, safeEqual, tokenLookup, verifySecret } from './credentials.ts';

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
    expect(legacyTokenLookup('abc')).toBe(legacyTokenLookup('abc'));
    expect(legacyTokenLookup('abc')).toHaveLength(16);
    expect(legacyTokenLookup('abc')).not.toBe(legacyTokenLookup('abd'));
  });

  it('keys the lookup with the server secret: nothing to test guesses against without it', () => {
    const key = randomBytes(32);
    const lookup = tokenLookup(key, 'dg-aq-0000-0000-0001');
    expect(lookup).toBe(tokenLookup(key, 'dg-aq-0000-0000-0001'));
    expect(lookup).toMatch(/^k1\.[A-Za-z0-9_-]{22}$/);
    expect(lookup).not.toBe(tokenLookup(key, 'dg-aq-0000-0000-0002'));
    expect(lookup).not.toBe(tokenLookup(randomBytes(32), 'dg-aq-0000-0000-0001'));
    // Neither the unkeyed SHA-256 prefix nor any other plain digest of the token.
    const sha = createHash('sha256').update('dg-aq-0000-0000-0001').digest();
    expect(lookup).not.toContain(sha.toString('hex').slice(0, 16));
    expect(lookup).not.toContain(sha.toString('base64url').slice(0, 16));
    expect(isLegacyLookup(lookup)).toBe(false);
    expect(isLegacyLookup(legacyTokenLookup('dg-aq-0000-0000-0001'))).toBe(true);
  });

  it('compares strings of any length in constant time', () => {
    expect(safeEqual('key', 'key')).toBe(true);
    expect(safeEqual('key', 'kez')).toBe(false);
    expect(safeEqual('key', 'longer key')).toBe(false);
  });
});
