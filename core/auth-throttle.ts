import { createHash } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import type { RequestLimit } from './access/rate-limits.ts';

/** Where a credential was presented: an MQTT CONNECT, a REST request (or live stream), device provisioning. */
export type AuthVia = 'mqtt' | 'rest' | 'provision';

/** One credential check: who presented it (source address) and which credential it names. */
export interface Attempt {
  via: AuthVia;
  /** The client's address as the socket reports it (normalised here: IPv4, or an IPv6 /64). */
  source: string | undefined;
  /** What the credential names, from credentialId(): a token, a username, a key. */
  credential: string | undefined;
}

/** Whether a credential may be checked now; a refusal says which limit and for how long. */
export type Admission = { ok: true } | { ok: false; limit: 'source' | 'credential'; retryAfterMs: number };

export interface AuthThrottleSettings {
  /** Failed checks one source address may make per window before it is blocked (generous: devices share NAT addresses). */
  perSource: RequestLimit;
  /** Failed checks per credential (token, username, client id, API key, provision key) per window (strict). */
  perCredential: RequestLimit;
  /** Longest block: the first lasts window/max (the time one failure takes to drain), each further one twice as long as the last, up to this. */
  backoffMaxMs: number;
  /** Entries kept per kind (sources, credentials); the least recently used go first. */
  maxEntries: number;
}

/** Counters (core/metrics.ts) of failures by reason and of attempts refused unchecked. */
export interface AuthThrottleCounters {
  failures?: { inc(labels: { via: AuthVia; reason: string }): void };
  throttled?: { inc(labels: { via: AuthVia; limit: 'source' | 'credential' }): void };
}

/** Counters of the work a credential check costs: database lookups and (scrypt) hash checks, by store. */
export interface AuthWorkCounters {
  lookup(store: 'devices' | 'api_keys' | 'provision_keys'): void;
  hashCheck(store: 'devices' | 'provision_keys'): void;
}

export const noAuthWork: AuthWorkCounters = { lookup() {}, hashCheck() {} };

interface Entry {
  /** Failures not yet leaked away: the bucket's level (it drains at max/window, never while blocked). */
  score: number;
  /** When score was last brought up to date. */
  at: number;
  /** Blocks in a row: the next lasts window/max × 2^strikes. Forgotten once the score has drained to 0. */
  strikes: number;
  blockedUntil: number;
}

/** A map that keeps at most `cap` entries, dropping the least recently used. */
class Lru<V> {
  private readonly map = new Map<string, V>();
  constructor(private readonly cap: number) {}
  get(key: string): V | undefined {
    const value = this.map.get(key);
    if (value !== undefined) {
      this.map.delete(key);
      this.map.set(key, value);
    }
    return value;
  }
  set(key: string, value: V): void {
    this.map.delete(key);
    this.map.set(key, value);
    if (this.map.size > this.cap) this.map.delete(this.map.keys().next().value!);
  }
  delete(key: string): void {
    this.map.delete(key);
  }
  clear(): void {
    this.map.clear();
  }
  get size(): number {
    return this.map.size;
  }
}

/**
 * Throttling of failed credential checks (MQTT CONNECT, REST API keys, device provisioning), per
 * source address and per credential, in this node's memory.
 *
 * Each source and each credential has a leaky bucket of `max` failures per `window`: every
 * failure adds one, the level drains at max/window. A failure that fills it blocks the source (or
 * credential) for window/max × 2^k (the time one failure takes to drain, then twice, four times…
 * up to backoffMaxMs), k counting the blocks in a row; the bucket does not drain while blocked, so
 * the next failure after a block blocks again, twice as long. While blocked, attempts are refused at once, without a database query or a scrypt
 * hash, and are not counted as failures. A success clears its credential's record (not its
 * source's: otherwise one valid credential would reset an attacker's count between guesses); a
 * record is forgotten once its bucket has drained.
 *
 * Callers let a credential this node has already verified (held in memory, compared without a
 * hash or a query) through without asking: a blocked address or username never locks out a device
 * that connected before. Both maps are bounded (LRU), so no flood of addresses or names grows them.
 */
export class AuthThrottle {
  private readonly sources: Lru<Entry>;
  private readonly credentials: Lru<Entry>;

  constructor(
    private readonly settings: AuthThrottleSettings,
    private readonly counters: AuthThrottleCounters = {},
    private readonly now: () => number = Date.now,
  ) {
    this.sources = new Lru(settings.maxEntries);
    this.credentials = new Lru(settings.maxEntries);
  }

  /** May this attempt be checked? Counts a refusal in guanlink_auth_throttled_total. */
  admit(attempt: Attempt): Admission {
    const now = this.now();
    const source = attempt.source && this.blockedFor(this.sources, sourceKey(attempt.source), this.settings.perSource, now);
    if (source) return this.refused(attempt, 'source', source);
    const credential = attempt.credential && this.blockedFor(this.credentials, attempt.credential, this.settings.perCredential, now);
    if (credential) return this.refused(attempt, 'credential', credential);
    return { ok: true };
  }

  /** A credential check failed (a guess: unknown or wrong secret): counted, and it fills both buckets. */
  failed(attempt: Attempt, reason: string): void {
    this.counters.failures?.inc({ via: attempt.via, reason });
    const now = this.now();
    if (attempt.source) this.fill(this.sources, sourceKey(attempt.source), this.settings.perSource, now);
    if (attempt.credential) this.fill(this.credentials, attempt.credential, this.settings.perCredential, now);
  }

  /** A refusal that is not a guess (a revoked or expired key, an OIDC token refused): counted only. */
  counted(via: AuthVia, reason: string): void {
    this.counters.failures?.inc({ via, reason });
  }

  /** The credential was verified: its record is cleared. */
  succeeded(attempt: Attempt): void {
    if (attempt.credential) this.credentials.delete(attempt.credential);
  }

  /** Sources and credentials currently tracked. */
  get entries(): number {
    return this.sources.size + this.credentials.size;
  }

  private refused(attempt: Attempt, limit: 'source' | 'credential', retryAfterMs: number): Admission {
    this.counters.throttled?.inc({ via: attempt.via, limit });
    return { ok: false, limit, retryAfterMs };
  }

  /** Milliseconds the key stays blocked (0: not blocked); drains its bucket up to now. */
  private blockedFor(map: Lru<Entry>, key: string, limit: RequestLimit, now: number): number {
    if (limit.max === Infinity) return 0;
    const entry = map.get(key);
    if (!entry) return 0;
    if (now < entry.blockedUntil) return entry.blockedUntil - now;
    if (this.drain(entry, limit, now)) map.delete(key);
    return 0;
  }

  private fill(map: Lru<Entry>, key: string, limit: RequestLimit, now: number): void {
    if (limit.max === Infinity) return;
    let entry = map.get(key);
    if (!entry) {
      entry = { score: 0, at: now, strikes: 0, blockedUntil: 0 };
      map.set(key, entry);
    } else {
      this.drain(entry, limit, now);
    }
    entry.score += 1;
    // Full: no room left for one more failure (the level drains continuously, so N failures in a
    // row leave it just under N). A failure finishing while a block is on (a check that started
    // before it) adds to the level only.
    if (entry.score > limit.max - 1 && now >= entry.blockedUntil) {
      entry.blockedUntil = now + Math.min(this.settings.backoffMaxMs, (limit.windowMs / limit.max) * 2 ** Math.min(entry.strikes, 30));
      entry.strikes += 1;
    }
  }

  /** Drains the bucket for the time since its last update, except while blocked; true when it is empty (forget it). */
  private drain(entry: Entry, limit: RequestLimit, now: number): boolean {
    const since = Math.max(entry.at, entry.blockedUntil);
    if (now > since) entry.score = Math.max(0, entry.score - ((now - since) * limit.max) / limit.windowMs);
    entry.at = now;
    return entry.score === 0 && now >= entry.blockedUntil;
  }
}

/**
 * The key a source address is counted under: an IPv4 address as it is (an IPv4-mapped IPv6
 * address as IPv4), an IPv6 address by its /64 (one subscriber's network: a host there picks any
 * address it likes).
 */
export function sourceKey(address: string): string {
  let a = address.trim();
  const zone = a.indexOf('%');
  if (zone >= 0) a = a.slice(0, zone);
  const lower = a.toLowerCase();
  if (lower.startsWith('::ffff:') && isIPv4(a.slice(7))) return a.slice(7);
  if (!isIPv6(a)) return a;
  const [head, tail] = lower.split('::') as [string, string | undefined];
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':');
  // An embedded IPv4 tail (::1.2.3.4) counts as two groups; only the first four groups matter.
  const tailCount = tailGroups.reduce((n, g) => n + (g.includes('.') ? 2 : 1), 0);
  const groups = tail === undefined ? headGroups : [...headGroups, ...Array<string>(Math.max(0, 8 - headGroups.length - tailCount)).fill('0'), ...tailGroups];
  return `${groups
    .slice(0, 4)
    .map((g) => (g.includes('.') ? g : g.replace(/^0+(?=.)/, '')))
    .join(':')}::/64`;
}

/**
 * The name a credential is throttled under: its kind and a digest, so that a record never holds a
 * secret and has a fixed size whatever was sent.
 */
export function credentialId(kind: 'token' | 'username' | 'client' | 'key' | 'provision', value: string): string {
  return `${kind}:${createHash('sha256').update(value).digest('base64url').slice(0, 22)}`;
}

/** "retry in 30 s" for a refusal's message. */
export function describeRefusal(admission: Extract<Admission, { ok: false }>, what: string): string {
  const seconds = Math.max(1, Math.ceil(admission.retryAfterMs / 1000));
  const who = admission.limit === 'source' ? 'from this address' : `for this ${what}`;
  return `too many failed attempts ${who}: retry in ${seconds} s`;
}

/**
 * Credentials known not to exist, for `ttlMs` (a bounded LRU): the same wrong token, username or
 * key presented again (a misconfigured device reconnecting, a flood replaying one guess) is
 * answered without a database query. Whoever creates or changes credentials removes the matching
 * name (`forget`), so a new device is never refused on this node because of an earlier miss; a
 * credential created on another node may be refused here until its entry expires.
 */
export class NegativeCache {
  private readonly entries: Lru<number>;

  constructor(
    private readonly ttlMs: number,
    cap = 50_000,
    private readonly now: () => number = Date.now,
  ) {
    this.entries = new Lru(cap);
  }

  has(name: string): boolean {
    if (this.ttlMs <= 0) return false;
    const until = this.entries.get(name);
    if (until === undefined) return false;
    if (this.now() < until) return true;
    this.entries.delete(name);
    return false;
  }

  add(name: string): void {
    if (this.ttlMs > 0) this.entries.set(name, this.now() + this.ttlMs);
  }

  forget(name: string): void {
    this.entries.delete(name);
  }

  clear(): void {
    this.entries.clear();
  }
}
