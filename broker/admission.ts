import net from 'node:net';

/**
 * Who may hold one of the broker's connections. The connection budget (core/descriptors.ts) is
 * the number of MQTT sessions held at once; a few connections more (`refusalSlots`) may be held
 * briefly, long enough to read their CONNECT and answer it. A connection is one of:
 *
 * - pending: accepted, its CONNECT not yet read or not yet answered (authentication running);
 * - anonymous: a provisioning session (ThingsBoard's `provision` username, no credentials);
 * - a session: authenticated as a device or an application.
 *
 * Pending and anonymous connections are the *unauthenticated* ones: anyone can open them, so
 * they are the ones given up when room is needed. Each is closed, oldest first, when:
 * - a new connection arrives and every connection slot (budget + refusal slots) is held
 *   (reason `displaced`): a device whose CONNECT is answered promptly still gets in during an
 *   anonymous flood, while an idle one never holds a slot for long;
 * - its source address already has `perAddress` unauthenticated connections (`address_limit`).
 * Sessions are never displaced; the devices behind one NAT share an address, so their
 * authenticated sessions do not count against it.
 *
 * Each source address also has a connect rate (a token bucket of `rate.max` tokens refilled over
 * `rate.windowMs`): a new connection takes a token, and gives it back once it authenticates as a
 * device or application — what the rate limits is anonymous, refused and abandoned connections.
 * A connection arriving with the bucket empty is closed at once (`address_rate`).
 *
 * IPv6 clients are grouped by /64 (one subscriber's network), IPv4-mapped addresses as IPv4.
 */
export interface AdmissionOptions {
  /** Sessions (devices, applications, provisioning) held at once; beyond it CONNACK 3. */
  budget: number;
  /** Connections beyond the budget held until their CONNECT is answered (CONNACK 3). */
  refusalSlots: number;
  /** Unauthenticated connections (pending or provisioning) held per source address. */
  perAddress: number;
  /** New connections per source address that do not authenticate (token bucket); undefined: no limit. */
  rate?: { max: number; windowMs: number };
}

/** Why a new connection is closed on arrival. */
export type Refusal = 'address_rate' | 'budget_full';
/** Why an unauthenticated connection is closed to make room. */
export type Eviction = 'address_limit' | 'displaced';

export interface Ticket {
  readonly address: string;
  state: 'pending' | 'anonymous' | 'session' | 'closed';
  /** Closes the connection (called when it is evicted; the admission has already let it go). */
  readonly evict: (reason: Eviction) => void;
}

interface AddressEntry {
  /** Unauthenticated connections from this address, oldest first. */
  unauthenticated: Set<Ticket>;
  tokens: number;
  refilledAt: number;
}

export class Admission {
  private open = 0;
  private sessionCount = 0;
  /** Pending and anonymous connections, oldest first. */
  private readonly unauthenticated = new Set<Ticket>();
  /** Provisioning sessions, oldest first. */
  private readonly anonymousSessions = new Set<Ticket>();
  private readonly addresses = new Map<string, AddressEntry>();
  private readonly keys = new WeakMap<Ticket, string>();

  constructor(private readonly opts: AdmissionOptions) {}

  /** Connections held (every state but closed). */
  get connections(): number {
    return this.open;
  }
  /** Sessions held: devices, applications and provisioning sessions. */
  get sessions(): number {
    return this.sessionCount;
  }
  /** Pending and provisioning connections held. */
  get unauthenticatedCount(): number {
    return this.unauthenticated.size;
  }
  /** Source addresses tracked (for tests and metrics). */
  get trackedAddresses(): number {
    return this.addresses.size;
  }

  /**
   * A new connection from `address`: a ticket, or why it is closed at once. May evict older
   * unauthenticated connections (their `evict` is called before this returns).
   */
  arrive(address: string | undefined, evict: (reason: Eviction) => void, now = Date.now()): Ticket | Refusal {
    const key = addressKey(address);
    let entry = this.addresses.get(key);
    if (!entry) {
      entry = { unauthenticated: new Set(), tokens: this.opts.rate?.max ?? 0, refilledAt: now };
      this.addresses.set(key, entry);
    }
    const rate = this.opts.rate;
    if (rate) {
      this.refill(entry, now);
      if (entry.tokens < 1) {
        this.forgetIfIdle(key, entry, now);
        return 'address_rate';
      }
    }
    if (entry.unauthenticated.size >= this.opts.perAddress) this.evictTicket(first(entry.unauthenticated)!, 'address_limit');
    if (this.open >= this.opts.budget + this.opts.refusalSlots) {
      const oldest = first(this.unauthenticated);
      if (!oldest) {
        this.forgetIfIdle(key, entry, now);
        return 'budget_full';
      }
      this.evictTicket(oldest, 'displaced');
    }
    if (rate) entry.tokens -= 1;
    const ticket: Ticket = { address: address ?? 'unknown', state: 'pending', evict };
    this.keys.set(ticket, key);
    entry.unauthenticated.add(ticket);
    this.unauthenticated.add(ticket);
    this.open++;
    return ticket;
  }

  /**
   * The CONNECT authenticated: as a device or application (`session`) or a provisioning session
   * (`anonymous`). False: beyond the budget (answer CONNACK 3). A device or application takes
   * the place of the oldest provisioning session when the budget is full; `replacing` (a device
   * taking over its own session, which is about to close) is always admitted.
   */
  startSession(ticket: Ticket, kind: 'session' | 'anonymous', options: { replacing?: boolean } = {}): boolean {
    if (ticket.state !== 'pending') return ticket.state !== 'closed';
    if (this.sessionCount >= this.opts.budget && !options.replacing) {
      const oldest = kind === 'session' ? first(this.anonymousSessions) : undefined;
      if (!oldest) return false;
      this.evictTicket(oldest, 'displaced');
    }
    this.sessionCount++;
    if (kind === 'anonymous') {
      ticket.state = 'anonymous';
      this.anonymousSessions.add(ticket);
      return true;
    }
    ticket.state = 'session';
    this.unauthenticated.delete(ticket);
    const key = this.keys.get(ticket)!;
    const entry = this.addresses.get(key);
    if (entry) {
      entry.unauthenticated.delete(ticket);
      if (this.opts.rate) entry.tokens = Math.min(this.opts.rate.max, entry.tokens + 1); // authenticated: its connect is free
    }
    return true;
  }

  /** The connection closed (idempotent). */
  left(ticket: Ticket, now = Date.now()): void {
    if (ticket.state === 'closed') return;
    this.release(ticket);
    const key = this.keys.get(ticket)!;
    const entry = this.addresses.get(key);
    if (entry) this.forgetIfIdle(key, entry, now);
  }

  /** Forgets addresses with nothing open whose bucket is full again (call now and then). */
  sweep(now = Date.now()): void {
    for (const [key, entry] of this.addresses) this.forgetIfIdle(key, entry, now);
  }

  private evictTicket(ticket: Ticket, reason: Eviction): void {
    this.release(ticket);
    ticket.evict(reason);
  }

  private release(ticket: Ticket): void {
    const was = ticket.state;
    ticket.state = 'closed';
    this.open--;
    if (was === 'session' || was === 'anonymous') this.sessionCount--;
    this.unauthenticated.delete(ticket);
    this.anonymousSessions.delete(ticket);
    this.addresses.get(this.keys.get(ticket)!)?.unauthenticated.delete(ticket);
  }

  private refill(entry: AddressEntry, now: number): void {
    const rate = this.opts.rate!;
    const elapsed = Math.max(0, now - entry.refilledAt);
    entry.tokens = Math.min(rate.max, entry.tokens + (elapsed * rate.max) / rate.windowMs);
    entry.refilledAt = now;
  }

  private forgetIfIdle(key: string, entry: AddressEntry, now: number): void {
    if (entry.unauthenticated.size > 0) return;
    if (this.opts.rate) {
      this.refill(entry, now);
      if (entry.tokens < this.opts.rate.max) return;
    }
    this.addresses.delete(key);
  }
}

function first<T>(set: Set<T>): T | undefined {
  for (const item of set) return item;
  return undefined;
}

/** The key a source address is limited under: IPv4 as is (also when IPv4-mapped), IPv6 by its /64. */
export function addressKey(address: string | undefined): string {
  if (!address) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (net.isIPv4(address)) return address;
  if (!net.isIPv6(address)) return address;
  const [head, tail] = address.split('%')[0]!.split('::') as [string, string | undefined];
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}
