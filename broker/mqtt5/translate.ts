import { randomBytes } from 'node:crypto';
import mqtt, { type IConnackPacket, type IConnectPacket, type IPublishPacket, type ISubackPacket, type Packet } from 'mqtt-packet';
import { REASON, connectRefusal } from './reason-codes.ts';

/** What GuanLink advertises to MQTT 5 clients in its CONNACK (MQTT 5.0 §3.2.2.3). */
export interface ServerLimits {
  /** The largest packet the client may send (its remaining length: the broker's packet limit). */
  maximumPacketBytes: number;
  /** QoS 1 publishes a client may have unacknowledged at once. */
  receiveMaximum: number;
  /** Topic aliases a client may set (1…topicAliasMaximum). */
  topicAliasMaximum: number;
}

/** One v5 connection's translation state (what the CONNECT said, topic aliases, pending SUBSCRIBEs). */
export interface Mqtt5State {
  limits: ServerLimits;
  connect?: IConnectPacket;
  /** Set when the client sent an empty client id: the one GuanLink chose, told in the CONNACK. */
  assignedClientId?: string;
  /** The client asked for a session kept after the connection (Session Expiry Interval > 0). */
  askedSessionExpiry: boolean;
  /** The client's Maximum Packet Size: larger packets are not sent to it [MQTT-3.1.2-25]. */
  clientMaximumPacketSize?: number;
  aliases: Map<number, string>;
  /** QoS 1 publishes read and not yet acknowledged (Receive Maximum, [MQTT-3.3.4-9]). */
  inflight: number;
  /** The topic filters of each SUBSCRIBE awaiting its SUBACK. */
  subscribes: Map<number, string[]>;
  /** How many filters each UNSUBSCRIBE awaiting its UNSUBACK named (one reason code each). */
  unsubscribes: Map<number, number>;
  connackSent: boolean;
  /** The CONNACK accepted the connection. */
  sessionOpen: boolean;
  /** The client sent DISCONNECT: the server sends none back (MQTT 5.0 §3.14). */
  clientDisconnected: boolean;
}

export function mqtt5State(limits: ServerLimits): Mqtt5State {
  return { limits, askedSessionExpiry: false, aliases: new Map(), inflight: 0, subscribes: new Map(), unsubscribes: new Map(), connackSent: false, sessionOpen: false, clientDisconnected: false };
}

/**
 * What a v5 client's packet becomes: the MQTT 3.1.1 packet for the aedes core; or a violation,
 * answered with DISCONNECT (CONNACK before the session exists) and a closed connection; or, for
 * a DISCONNECT asking for the will (0x04), a connection closed without a 3.1.1 DISCONNECT, so
 * that the core publishes the will.
 */
export type Inbound = { packet: Packet } | { violation: number; detail: string } | { closeWithWill: true };

const violation = (reasonCode: number, detail: string): Inbound => ({ violation: reasonCode, detail });

export function fromClient(packet: Packet, state: Mqtt5State): Inbound {
  switch (packet.cmd) {
    case 'connect':
      return connect(packet, state);
    case 'publish':
      return publish(packet, state);
    case 'puback':
      return { packet: { cmd: 'puback', messageId: packet.messageId } };
    case 'subscribe': {
      const topics = packet.subscriptions.map((s) => s.topic);
      state.subscribes.set(packet.messageId!, topics);
      // Subscription options (No Local, Retain As Published, Retain Handling) and identifiers
      // have no meaning here: nothing is routed between clients, nothing is retained.
      return { packet: { cmd: 'subscribe', messageId: packet.messageId, subscriptions: packet.subscriptions.map((s) => ({ topic: s.topic, qos: s.qos })) } };
    }
    case 'unsubscribe':
      state.unsubscribes.set(packet.messageId!, packet.unsubscriptions.length);
      return { packet: { cmd: 'unsubscribe', messageId: packet.messageId, unsubscriptions: packet.unsubscriptions } };
    case 'pingreq':
      return { packet: { cmd: 'pingreq' } };
    case 'disconnect':
      // 0x04: "disconnect with will message" — the will is published, as after a lost connection (MQTT 5.0 §3.14.2.1).
      state.clientDisconnected = true;
      return packet.reasonCode === REASON.disconnectWithWill ? { closeWithWill: true } : { packet: { cmd: 'disconnect' } };
    case 'auth':
      // Enhanced authentication is not supported: an AUTH after a CONNECT without an Authentication Method is a Protocol Error [MQTT-4.12.0-6].
      return violation(REASON.protocolError, 'AUTH: enhanced authentication is not supported');
    default:
      return violation(REASON.protocolError, `a client may not send ${packet.cmd.toUpperCase()}`);
  }
}

function connect(packet: IConnectPacket, state: Mqtt5State): Inbound {
  if (state.connect) return violation(REASON.protocolError, 'a second CONNECT [MQTT-3.1.0-2]');
  state.connect = packet;
  const props = packet.properties ?? {};
  if (props.authenticationMethod !== undefined) return violation(REASON.badAuthenticationMethod, 'enhanced authentication is not supported [MQTT-4.12.0-1]');
  // Nothing is retained (Retain Available 0): a will to be retained is refused [MQTT-3.2.2-13].
  if (packet.will?.retain) return violation(REASON.retainNotSupported, 'a retained will, but retained messages are not supported');
  if (props.maximumPacketSize !== undefined) state.clientMaximumPacketSize = props.maximumPacketSize;
  state.askedSessionExpiry = (props.sessionExpiryInterval ?? 0) > 0;
  // An empty client id is allowed; the server assigns one and returns it [MQTT-3.1.3-6], [MQTT-3.2.2-16].
  let clientId = packet.clientId;
  if (clientId === '') clientId = state.assignedClientId = `guanlink-${randomBytes(8).toString('hex')}`;
  // Sessions end with the connection (Session Expiry Interval 0, told in the CONNACK): a 3.1.1
  // clean session. The device API keeps no state across connections worth resuming.
  const will = packet.will ? { topic: packet.will.topic, payload: packet.will.payload, qos: packet.will.qos, retain: packet.will.retain } : undefined;
  return {
    packet: {
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion: 4,
      clean: true,
      clientId,
      keepalive: packet.keepalive,
      ...(packet.username !== undefined && { username: packet.username }),
      ...(packet.password !== undefined && { password: packet.password }),
      ...(will && { will }),
    },
  };
}

function publish(packet: IPublishPacket, state: Mqtt5State): Inbound {
  if (packet.retain) return violation(REASON.retainNotSupported, 'RETAIN is set but Retain Available is 0 in the CONNACK [MQTT-3.2.2-14]');
  if (packet.qos === 2) return violation(REASON.qosNotSupported, 'QoS 2 is above the Maximum QoS (1) in the CONNACK [MQTT-3.2.2-11]');
  const props = packet.properties ?? {};
  if (props.subscriptionIdentifier !== undefined) return violation(REASON.protocolError, 'a client PUBLISH may not carry a Subscription Identifier [MQTT-3.3.4-6]');
  let topic = packet.topic;
  const alias = props.topicAlias as number | number[] | undefined;
  // Topic Alias more than once is a Protocol Error (MQTT 5.0 §2.2.2.2).
  if (Array.isArray(alias)) return violation(REASON.protocolError, 'Topic Alias given more than once');
  if (alias !== undefined) {
    // [MQTT-3.3.2-8]: 0 is not a topic alias; [MQTT-3.3.2-9]: at most the Topic Alias Maximum sent in the CONNACK.
    if (alias === 0 || alias > state.limits.topicAliasMaximum) return violation(REASON.topicAliasInvalid, `topic alias ${alias} is outside 1…${state.limits.topicAliasMaximum}`);
    if (topic === '') {
      const known = state.aliases.get(alias);
      // An alias not set on this connection (MQTT 5.0 §3.3.2.3.4): a Protocol Error.
      if (known === undefined) return violation(REASON.protocolError, `topic alias ${alias} was never set on this connection`);
      topic = known;
    } else {
      state.aliases.set(alias, topic);
    }
  } else if (topic === '') {
    return violation(REASON.protocolError, 'an empty topic name without a topic alias (MQTT 5.0 §3.3.2.1)');
  }
  if (packet.qos === 1 && ++state.inflight > state.limits.receiveMaximum) {
    return violation(REASON.receiveMaximumExceeded, `more than ${state.limits.receiveMaximum} QoS 1 publishes unacknowledged [MQTT-3.3.4-7]`);
  }
  return { packet: { cmd: 'publish', topic, payload: packet.payload, qos: packet.qos, retain: packet.retain, dup: packet.dup, ...(packet.qos > 0 && { messageId: packet.messageId }) } };
}

/** What the broker says about a packet it sends, beyond MQTT 3.1.1 (see front-end.ts). */
export interface BrokerSignals {
  /** A CONNACK refusal's v5 reason, when the broker chose one (e.g. 0x89 server busy). */
  connackReason(): number | undefined;
  /** The v5 reason of the PUBACK for this packet id, when not success (0x90 for an unsupported topic). */
  pubackReason(messageId: number): number | undefined;
}

/**
 * The core's PUBACK (3.1.1 bytes: 0x40 0x02 and the packet id) for a v5 client: the same four
 * bytes when it is a success (MQTT 5.0 §3.4.2.1: reason code 0 and no properties may be left
 * out), else with the reason code the broker gave (0x90 for an unsupported topic).
 */
export function pubackToClient(puback: Buffer, state: Mqtt5State, signals: BrokerSignals): Buffer {
  state.inflight = Math.max(0, state.inflight - 1);
  const messageId = puback.readUInt16BE(2);
  const reasonCode = signals.pubackReason(messageId);
  return reasonCode === undefined ? puback : mqtt.generate({ cmd: 'puback', messageId, reasonCode }, { protocolVersion: 5 });
}

/** What the core's other MQTT 3.1.1 packets to a v5 client become (PUBACK: pubackToClient); undefined: not sent. */
export function toClient(packet: Packet, state: Mqtt5State, signals: BrokerSignals): Packet | undefined {
  switch (packet.cmd) {
    case 'connack':
      return connack(packet, state, signals);
    case 'suback':
      return suback(packet, state);
    case 'unsuback': {
      // The core does not say whether a subscription existed: 0x00, it is gone (MQTT 5.0 §3.11.3).
      const count = state.unsubscribes.get(packet.messageId!) ?? 1;
      state.unsubscribes.delete(packet.messageId!);
      return { cmd: 'unsuback', messageId: packet.messageId, granted: new Array<number>(count).fill(REASON.success) };
    }
    case 'publish': {
      const { topic, payload, qos, retain, dup, messageId } = packet;
      return { cmd: 'publish', topic, payload, qos, retain, dup, ...(qos > 0 && { messageId }) };
    }
    case 'pingresp':
      return packet;
    default:
      return undefined;
  }
}

function connack(packet: IConnackPacket, state: Mqtt5State, signals: BrokerSignals): IConnackPacket {
  state.connackSent = true;
  const returnCode = packet.returnCode ?? 0;
  if (returnCode !== 0) {
    const reasonCode = signals.connackReason() ?? connectRefusal(returnCode, state.connect ?? { clientId: '' });
    return { cmd: 'connack', sessionPresent: false, reasonCode };
  }
  const { limits } = state;
  state.sessionOpen = true;
  return {
    cmd: 'connack',
    sessionPresent: false,
    reasonCode: REASON.success,
    properties: {
      maximumPacketSize: limits.maximumPacketBytes,
      receiveMaximum: limits.receiveMaximum,
      topicAliasMaximum: limits.topicAliasMaximum,
      maximumQoS: 1,
      // Nothing is retained and nothing is routed between clients.
      retainAvailable: false,
      sharedSubscriptionAvailable: false,
      subscriptionIdentifiersAvailable: false,
      ...(state.askedSessionExpiry && { sessionExpiryInterval: 0 }),
      ...(state.assignedClientId !== undefined && { assignedClientIdentifier: state.assignedClientId }),
    },
  };
}

function suback(packet: ISubackPacket, state: Mqtt5State): ISubackPacket {
  const topics = state.subscribes.get(packet.messageId!) ?? [];
  state.subscribes.delete(packet.messageId!);
  // A refused filter: 0x8F topic filter invalid, as ThingsBoard answers a filter outside its API
  // (0x9E for a shared subscription, which GuanLink does not support).
  const granted = (packet.granted as number[]).map((g, i) => (g !== 0x80 ? g : topics[i]?.startsWith('$share/') ? REASON.sharedSubscriptionsNotSupported : REASON.topicFilterInvalid));
  return { cmd: 'suback', messageId: packet.messageId, granted };
}

/**
 * The common case without decoding: a QoS 0 or 1 PUBLISH (not retained) with a topic name and no
 * properties is the same packet in MQTT 3.1.1 without its Property Length byte (0). Returns its
 * 3.1.1 bytes, or undefined for any other PUBLISH (decoded and checked by fromClient).
 */
export function plainPublish(packet: Buffer, state: Mqtt5State): Buffer | undefined {
  const flags = packet[0]! & 0x0f;
  const qos = (flags >> 1) & 3;
  if (packet[0]! >> 4 !== 3 || qos > 1 || (flags & 1) !== 0) return undefined;
  let pos = 1;
  while (packet[pos++]! & 0x80);
  const header = pos;
  if (pos + 2 > packet.length) return undefined;
  const topicLength = packet.readUInt16BE(pos);
  if (topicLength === 0) return undefined;
  pos += 2 + topicLength + (qos > 0 ? 2 : 0);
  if (pos >= packet.length || packet[pos] !== 0) return undefined; // properties present
  if (qos === 1 && ++state.inflight > state.limits.receiveMaximum) {
    state.inflight--;
    return undefined; // fromClient answers it (0x93)
  }
  const remaining = packet.length - header - 1;
  const out = Buffer.allocUnsafe(1 + remainingLengthSize(remaining) + remaining);
  out[0] = packet[0]!;
  let w = 1;
  for (let l = remaining; ; ) {
    let byte = l % 128;
    l = Math.floor(l / 128);
    if (l > 0) byte |= 0x80;
    out[w++] = byte;
    if (l === 0) break;
  }
  w += packet.copy(out, w, header, pos);
  packet.copy(out, w, pos + 1);
  return out;
}

function remainingLengthSize(length: number): number {
  return length < 128 ? 1 : length < 16_384 ? 2 : length < 2_097_152 ? 3 : 4;
}
