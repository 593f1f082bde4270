import { describe, expect, it } from 'vitest';
import { Admission, addressKey, type Eviction, type Ticket } from './admission.ts';

/** An admission whose evictions are recorded (as the broker closes the connection). */
function setup(opts: ConstructorParameters<typeof Admission>[0]) {
  const admission = new Admission(opts);
  const evicted: [string, Eviction][] = [];
  const arrive = (address: string, name = address, now?: number) => {
    const t = admission.arrive(address, (reason) => evicted.push([name, reason]), now);
    return t;
  };
  return { admission, evicted, arrive };
}

const ticket = (t: Ticket | string): Ticket => {
  if (typeof t === 'string') throw new Error(`refused: ${t}`);
  return t;
};

describe('admission: the connection budget', () => {
  it('holds budget + refusal slots; beyond, the oldest unauthenticated connection makes room', () => {
    const { admission, evicted, arrive } = setup({ budget: 3, refusalSlots: 1, perAddress: 100 });
    const a = ticket(arrive('10.0.0.1', 'a'));
    ticket(arrive('10.0.0.2', 'b'));
    ticket(arrive('10.0.0.3', 'c'));
    ticket(arrive('10.0.0.4', 'd'));
    expect(admission.connections).toBe(4);
    ticket(arrive('10.0.0.5', 'e'));
    expect(evicted).toEqual([['a', 'displaced']]);
    expect(a.state).toBe('closed');
    expect(admission.connections).toBe(4);
    admission.left(a); // the evicted connection's close arrives later: no double count
    expect(admission.connections).toBe(4);
  });

  it('never displaces sessions: beyond the budget CONNACK 3, and with every slot held by sessions a new connection is refused on arrival', () => {
    const { admission, evicted, arrive } = setup({ budget: 2, refusalSlots: 1, perAddress: 100 });
    const s1 = ticket(arrive('10.0.0.1', 's1'));
    const s2 = ticket(arrive('10.0.0.2', 's2'));
    expect(admission.startSession(s1, 'session')).toBe(true);
    expect(admission.startSession(s2, 'session')).toBe(true);
    const over = ticket(arrive('10.0.0.3', 'over')); // a refusal slot: held to answer its CONNECT
    expect(admission.startSession(over, 'session')).toBe(false); // CONNACK 3; the broker closes it
    admission.left(over);
    ticket(arrive('10.0.0.4', 'p'));
    ticket(arrive('10.0.0.5', 'q')); // the slot is taken by a pending connection: it makes room
    expect(evicted).toEqual([['p', 'displaced']]);
    expect([s1.state, s2.state]).toEqual(['session', 'session']);

    const full = setup({ budget: 2, refusalSlots: 0, perAddress: 100 });
    for (const a of ['10.0.1.1', '10.0.1.2']) full.admission.startSession(ticket(full.arrive(a)), 'session');
    expect(full.arrive('10.0.1.3')).toBe('budget_full');
    expect(full.evicted).toEqual([]);
  });

  it('a device takes the place of the oldest provisioning session when the budget is full; a provisioning session does not', () => {
    const { admission, evicted, arrive } = setup({ budget: 2, refusalSlots: 2, perAddress: 100 });
    const p1 = ticket(arrive('10.0.0.1', 'p1'));
    const p2 = ticket(arrive('10.0.0.2', 'p2'));
    expect(admission.startSession(p1, 'anonymous')).toBe(true);
    expect(admission.startSession(p2, 'anonymous')).toBe(true);
    const p3 = ticket(arrive('10.0.0.3', 'p3'));
    expect(admission.startSession(p3, 'anonymous')).toBe(false);
    const device = ticket(arrive('10.0.0.4', 'device'));
    expect(admission.startSession(device, 'session')).toBe(true);
    expect(evicted).toEqual([['p1', 'displaced']]);
    expect(admission.sessions).toBe(2);
  });

  it('a device taking over its own session is admitted even when the budget is full', () => {
    const { admission, arrive } = setup({ budget: 1, refusalSlots: 1, perAddress: 100 });
    const old = ticket(arrive('10.0.0.1'));
    admission.startSession(old, 'session');
    const again = ticket(arrive('10.0.0.1'));
    expect(admission.startSession(again, 'session')).toBe(false);
    const third = ticket(arrive('10.0.0.1'));
    expect(admission.startSession(third, 'session', { replacing: true })).toBe(true);
  });

  it('counts every state once and forgets what closed', () => {
    const { admission, arrive } = setup({ budget: 10, refusalSlots: 0, perAddress: 100, rate: { max: 5, windowMs: 1000 } });
    const t0 = 1_000_000;
    const a = ticket(arrive('10.0.0.1', 'a', t0));
    const b = ticket(arrive('10.0.0.1', 'b', t0));
    admission.startSession(a, 'session');
    admission.startSession(b, 'anonymous');
    expect([admission.connections, admission.sessions, admission.unauthenticatedCount]).toEqual([2, 2, 1]);
    admission.left(a, t0);
    admission.left(b, t0);
    expect([admission.connections, admission.sessions, admission.unauthenticatedCount]).toEqual([0, 0, 0]);
    admission.sweep(t0 + 1000); // the bucket is full again: the address is forgotten
    expect(admission.trackedAddresses).toBe(0);
  });
});

describe('admission: per source address', () => {
  it('an address holds at most perAddress unauthenticated connections: a new one closes its oldest; other addresses are untouched', () => {
    const { admission, evicted, arrive } = setup({ budget: 100, refusalSlots: 0, perAddress: 3 });
    for (const n of ['n1', 'n2', 'n3']) ticket(arrive('192.0.2.7', n));
    const other = ticket(arrive('192.0.2.8', 'other'));
    ticket(arrive('192.0.2.7', 'n4'));
    expect(evicted).toEqual([['n1', 'address_limit']]);
    expect(other.state).toBe('pending');
    expect(admission.connections).toBe(4);
  });

  it('authenticated devices behind the address (a NAT) do not count against it', () => {
    const { admission, evicted, arrive } = setup({ budget: 100, refusalSlots: 0, perAddress: 2 });
    for (let i = 0; i < 20; i++) expect(admission.startSession(ticket(arrive('198.51.100.1', `device-${i}`)), 'session')).toBe(true);
    ticket(arrive('198.51.100.1', 'anon-1'));
    ticket(arrive('198.51.100.1', 'anon-2'));
    expect(evicted).toEqual([]);
    ticket(arrive('198.51.100.1', 'anon-3'));
    expect(evicted).toEqual([['anon-1', 'address_limit']]);
    expect(admission.sessions).toBe(20);
  });

  it('provisioning sessions count as unauthenticated', () => {
    const { admission, evicted, arrive } = setup({ budget: 100, refusalSlots: 0, perAddress: 1 });
    admission.startSession(ticket(arrive('203.0.113.5', 'prov')), 'anonymous');
    ticket(arrive('203.0.113.5', 'next'));
    expect(evicted).toEqual([['prov', 'address_limit']]);
  });

  it('connect rate: a token bucket per address; a connection that authenticates gives its token back', () => {
    const { admission, arrive } = setup({ budget: 100, refusalSlots: 0, perAddress: 100, rate: { max: 3, windowMs: 60_000 } });
    const t0 = 5_000_000;
    // Devices connecting again and again cost nothing…
    for (let i = 0; i < 10; i++) {
      const t = ticket(arrive('10.1.1.1', `d${i}`, t0));
      expect(admission.startSession(t, 'session')).toBe(true);
      admission.left(t, t0);
    }
    // …anonymous connections take a token each.
    for (let i = 0; i < 3; i++) ticket(arrive('10.1.1.1', `anon${i}`, t0));
    expect(arrive('10.1.1.1', 'anon3', t0)).toBe('address_rate');
    expect(arrive('10.1.1.1', 'anon3', t0 + 19_000)).toBe('address_rate'); // 0.95 token
    expect(typeof arrive('10.1.1.1', 'anon3', t0 + 20_000)).toBe('object'); // one token back after window/max
    expect(typeof arrive('10.1.1.2', 'elsewhere', t0)).toBe('object');
    expect(admission.connections).toBe(5);
  });
});

describe('addressKey', () => {
  it('IPv4 as is, IPv4-mapped IPv6 as IPv4, IPv6 by /64', () => {
    expect(addressKey('127.0.0.2')).toBe('127.0.0.2');
    expect(addressKey('::ffff:10.0.0.1')).toBe('10.0.0.1');
    expect(addressKey('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8:1:2::9')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:0db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey(undefined)).toBe('unknown');
  });
});
