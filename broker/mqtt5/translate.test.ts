import mqtt, { type Packet } from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { fromClient, mqtt5State, plainPublish, pubackToClient, toClient, type BrokerSignals } from './translate.ts';

const limits = { maximumPacketBytes: 65_536, receiveMaximum: 2, topicAliasMaximum: 4 };
const noSignals: BrokerSignals = { connackReason: () => undefined, pubackReason: () => undefined };

/** Parses wire bytes as a server would (v5), or as a v5 client reads the server's packet. */
function parse(bytes: Buffer, protocolVersion: 4 | 5): Packet {
  const parser = mqtt.parser({ protocolVersion });
  let packet: Packet | undefined;
  parser.on('packet', (p: Packet) => (packet = p));
  parser.on('error', (err: Error) => {
    throw err;
  });
  parser.parse(bytes);
  if (!packet) throw new Error('incomplete packet');
  return packet;
}
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const v4 = (p: Packet) => mqtt.generate(p, { protocolVersion: 4 }).toString('hex');
const v5 = (p: Packet) => mqtt.generate(p, { protocolVersion: 5 }).toString('hex');

describe('MQTT 5 → 3.1.1 (what the core reads)', () => {
  it('CONNECT: level 4, clean session, properties dropped; an empty client id is assigned', () => {
    // CONNECT v5: "MQTT" level 5, flags 0x82 (user name, clean start), keepalive 60, properties: Session Expiry Interval 0x11 = 3600, client id "", user name "tok".
    const wire = hex('10 17 0004 4d515454 05 82 003c 05 11 00000e10 0000 0003 746f6b');
    const state = mqtt5State(limits);
    const result = fromClient(parse(wire, 5), state);
    if (!('packet' in result)) throw new Error(JSON.stringify(result));
    expect(state.askedSessionExpiry).toBe(true);
    expect(state.assignedClientId).toMatch(/^guanlink-[0-9a-f]{16}$/);
    const id = Buffer.from(state.assignedClientId!).toString('hex');
    // CONNECT 3.1.1: level 4, flags 0x82, keepalive 60, no properties, the assigned id, user name "tok".
    expect(v4(result.packet)).toBe(`102a 0004 4d515454 04 82 003c 0019 ${id} 0003 746f6b`.replace(/ /g, ''));
  });

  it('PUBLISH with a topic alias: set, then used with an empty topic; the 3.1.1 packet carries the topic', () => {
    const state = mqtt5State(limits);
    // PUBLISH QoS 1 "a/b" id 1, properties: Topic Alias (0x23) = 3; payload "1".
    const set = fromClient(parse(hex('32 0c 0003 612f62 0001 03 23 0003 31'), 5), state);
    // PUBLISH QoS 1 "" id 2, Topic Alias 3; payload "2".
    const used = fromClient(parse(hex('32 09 0000 0002 03 23 0003 32'), 5), state);
    expect('packet' in set && v4(set.packet)).toBe('3208' + '0003612f62' + '0001' + '31');
    expect('packet' in used && v4(used.packet)).toBe('3208' + '0003612f62' + '0002' + '32');
  });

  it('refuses alias 0 and aliases above the maximum (0x94), an alias never set (0x82), QoS 2 (0x9B), RETAIN (0x9A)', () => {
    const state = mqtt5State(limits);
    expect(fromClient(parse(hex('32 0c 0003 612f62 0001 03 23 0000 31'), 5), state)).toMatchObject({ violation: 0x94 });
    expect(fromClient(parse(hex('32 0c 0003 612f62 0001 03 23 0005 31'), 5), state)).toMatchObject({ violation: 0x94 });
    expect(fromClient(parse(hex('32 09 0000 0002 03 23 0001 32'), 5), state)).toMatchObject({ violation: 0x82 });
    expect(fromClient(parse(hex('34 09 0003 612f62 0001 00 31'), 5), state)).toMatchObject({ violation: 0x9b });
    expect(fromClient(parse(hex('31 07 0003 612f62 00 31'), 5), state)).toMatchObject({ violation: 0x9a });
  });

  it('more QoS 1 publishes unacknowledged than the Receive Maximum: 0x93; a PUBACK frees a slot', () => {
    const state = mqtt5State(limits);
    const publish = (id: number) => fromClient(parse(hex(`32 09 0003 612f62 ${id.toString(16).padStart(4, '0')} 00 31`), 5), state);
    expect(publish(1)).toHaveProperty('packet');
    expect(publish(2)).toHaveProperty('packet');
    pubackToClient(hex('40 02 0001'), state, noSignals);
    expect(publish(3)).toHaveProperty('packet');
    expect(publish(4)).toMatchObject({ violation: 0x93 });
  });

  it('refuses a retained will (0x9A) and enhanced authentication (0x8C) before the session', () => {
    const will = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'c', keepalive: 10, will: { topic: 'w', payload: Buffer.from('x'), qos: 0, retain: true } } as const;
    expect(fromClient(parse(mqtt.generate(will, { protocolVersion: 5 }), 5), mqtt5State(limits))).toMatchObject({ violation: 0x9a });
    const auth = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'c', keepalive: 10, properties: { authenticationMethod: 'SCRAM-SHA-1' } } as const;
    expect(fromClient(parse(mqtt.generate(auth, { protocolVersion: 5 }), 5), mqtt5State(limits))).toMatchObject({ violation: 0x8c });
  });

  it('DISCONNECT 0x04 closes without a 3.1.1 DISCONNECT (the will is published); 0x00 is a DISCONNECT', () => {
    expect(fromClient(parse(hex('e0 01 04'), 5), mqtt5State(limits))).toEqual({ closeWithWill: true });
    expect(fromClient(parse(hex('e0 00'), 5), mqtt5State(limits))).toEqual({ packet: { cmd: 'disconnect' } });
  });

  it('SUBSCRIBE: options dropped', () => {
    // SUBSCRIBE id 7, no properties, "a/+" with options No Local + QoS 1 (0x05).
    const result = fromClient(parse(hex('82 09 0007 00 0003 612f2b 05'), 5), mqtt5State(limits));
    expect('packet' in result && v4(result.packet)).toBe('8208' + '0007' + '0003612f2b' + '01');
  });
});

describe('3.1.1 → MQTT 5 (what the client reads)', () => {
  const connected = () => {
    const state = mqtt5State(limits);
    fromClient(parse(hex('10 10 0004 4d515454 05 02 003c 00 0003 646576'), 5), state);
    return state;
  };

  it('CONNACK 0 gets the server limits as properties', () => {
    const connack = toClient(parse(hex('20 02 00 00'), 4), connected(), noSignals)!;
    // Reason 0, properties: Maximum Packet Size (0x27), Receive Maximum (0x21), Topic Alias Maximum (0x22), Maximum QoS (0x24), Retain Available (0x25), Shared (0x2A), Subscription Identifiers (0x29).
    expect(v5(connack)).toBe('2016' + '00' + '00' + '13' + '2700010000' + '210002' + '220004' + '2401' + '2500' + '2a00' + '2900');
  });

  it('a refusing CONNACK: ThingsBoard\'s v5 codes from the 3.1.1 return code and what the client sent, or the broker\'s own', () => {
    const refused = (rc: number, state = connected(), signals = noSignals) => (toClient(parse(hex(`20 02 00 0${rc}`), 4), state, signals) as { reasonCode: number }).reasonCode;
    expect(refused(5)).toBe(0x85); // no user name, a client id: client identifier not valid
    const withToken = mqtt5State(limits);
    fromClient(parse(hex('10 15 0004 4d515454 05 82 003c 00 0003 646576 0003 746f6b'), 5), withToken);
    expect(refused(5, withToken)).toBe(0x86);
    expect(refused(3)).toBe(0x88);
    expect(refused(3, connected(), { ...noSignals, connackReason: () => 0x89 })).toBe(0x89);
  });

  it('PUBACK: 0x90 when the broker refused the topic, else the same bytes (reason 0 left out)', () => {
    const state = connected();
    const signals: BrokerSignals = { ...noSignals, pubackReason: (id) => (id === 9 ? 0x90 : undefined) };
    expect(pubackToClient(hex('40 02 0009'), state, signals).toString('hex')).toBe('400400099000');
    expect(pubackToClient(hex('40 02 000a'), state, signals).toString('hex')).toBe('4002000a');
  });

  it('a plain PUBLISH (no properties, QoS 0 or 1, not retained) loses only its Property Length byte', () => {
    const state = connected();
    expect(plainPublish(hex('32 0a 0003 612f62 0001 00 3132'), state)?.toString('hex')).toBe('3209' + '0003612f62' + '0001' + '3132');
    expect(plainPublish(hex('30 08 0003 612f62 00 3132'), state)?.toString('hex')).toBe('3007' + '0003612f62' + '3132');
    // Around the Remaining Length's size steps (v5 128 → v4 127: one byte fewer; 16 384 → 16 383).
    for (const size of [119, 120, 121, 200, 16_375, 16_376, 16_377]) {
      const packet = { cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(size, 0x41), qos: 0, retain: false, dup: false } as const;
      const expected = mqtt.generate(packet, { protocolVersion: 4 }).toString('hex');
      expect(plainPublish(mqtt.generate(packet, { protocolVersion: 5 }), state)?.toString('hex')).toBe(expected);
    }
    // Anything else is decoded and checked (fromClient): properties, QoS 2, RETAIN, an empty topic.
    expect(plainPublish(hex('32 0c 0003 612f62 0001 03 23 0003 31'), state)).toBeUndefined();
    expect(plainPublish(hex('34 09 0003 612f62 0001 00 31'), state)).toBeUndefined();
    expect(plainPublish(hex('31 07 0003 612f62 00 31'), state)).toBeUndefined();
    expect(plainPublish(hex('32 06 0000 0001 00 31'), state)).toBeUndefined();
    expect(state.inflight).toBe(1); // the QoS 1 publish taken
  });

  it('SUBACK 0x80 becomes 0x8F (0x9E for $share/…); UNSUBACK has one code per filter', () => {
    const state = connected();
    fromClient({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'a', qos: 1 }, { topic: 'b/#', qos: 1 }, { topic: '$share/g/a', qos: 0 }] }, state);
    expect(v5(toClient(parse(hex('90 05 0003 01 80 80'), 4), state, noSignals)!)).toBe('9006000300018f9e');
    fromClient({ cmd: 'unsubscribe', messageId: 4, unsubscriptions: ['a', 'b'] }, state);
    expect(v5(toClient(parse(hex('b0 02 0004'), 4), state, noSignals)!)).toBe('b00500040000' + '00');
  });
});
