import { createHash, createHmac, randomBytes, randomInt, scrypt, timingSafeEqual } from 'node:crypto';
import os from 'node:os';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/** A new random access token: 32 alphanumeric characters (~190 bits), safe in an MQTT username. */
export function generateToken(length = 32): string {
  let token = '';
  for (let i = 0; i < length; i++) token += ALPHABET[randomInt(ALPHABET.length)];
  return token;
}

/** Keyed lookups start with this (version 1 of the lookup key); older rows hold a bare legacy lookup. */
const KEYED_LOOKUP = 'k1.';

/**
 * Finds a credential row without storing the token: a 132-bit HMAC-SHA-256 of the token under the
 * server's lookup key (table platform_secrets, shared by all nodes), prefixed `k1.`. Unlike an
 * unsalted hash, it cannot be used to test guesses of a token offline without the key (the
 * scrypt hash in token_hash proves the token; collisions are verified away).
 */
export function tokenLookup(key: Buffer, token: string): string {
  return KEYED_LOOKUP + createHmac('sha256', key).update(token).digest('base64url').slice(0, 22);
}

/**
 * The lookup of rows written before keyed lookups (migration 015): a 64-bit SHA-256 prefix. Still
 * accepted, and replaced by the keyed form when the device next authenticates.
 */
export function legacyTokenLookup(token: string): string {
  return createHash('sha256').update(token).digest('hex').slice(0, 16);
}

export const isLegacyLookup = (lookup: string): boolean => !lookup.startsWith(KEYED_LOOKUP);

// scrypt cost: N=2^10 costs ~2.5 ms here, so a city-wide reconnect storm (100k devices) takes minutes,
// not hours, while a leaked table still gives nothing for ~190-bit random tokens. Stored with the hash,
// so it can be raised later without breaking existing tokens.
const COST = { N: 1024, r: 8, p: 1 };
const KEY_LENGTH = 32;

function scryptAsync(secret: string, salt: Buffer, params: { N: number; r: number; p: number }): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(secret, salt, KEY_LENGTH, { ...params, maxmem: 256 * params.N * params.r }, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

/** `scrypt$N$r$p$salt$hash` (base64url). */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scryptAsync(secret, salt, COST);
  return ['scrypt', COST.N, COST.r, COST.p, salt.toString('base64url'), key.toString('base64url')].join('$');
}

/**
 * Hashes many secrets (a bulk import's new tokens) at most `concurrency` at a time. scrypt runs in
 * libuv's thread pool (UV_THREADPOOL_SIZE, default 4): the default uses the cores but leaves at
 * least one pool thread free, so devices connecting meanwhile (their token checks use the same
 * pool), file and DNS work are not queued behind thousands of hashes.
 */
export async function hashSecrets(secrets: readonly string[], concurrency = defaultHashConcurrency()): Promise<string[]> {
  const hashes = new Array<string>(secrets.length);
  let next = 0;
  const worker = async () => {
    while (next < secrets.length) {
      const i = next++;
      hashes[i] = await hashSecret(secrets[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, secrets.length)) }, worker));
  return hashes;
}

function defaultHashConcurrency(): number {
  const poolThreads = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(1, Math.min(os.availableParallelism(), poolThreads - 1));
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const [scheme, N, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await scryptAsync(secret, Buffer.from(salt, 'base64url'), { N: Number(N), r: Number(r), p: Number(p) });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** Constant-time comparison of two strings (e.g. the admin key). */
export function safeEqual(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}
