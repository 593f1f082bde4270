import { Duplex } from 'node:stream';
import mqtt, { type Packet } from 'mqtt-packet';
import type { EndReason } from '../session.ts';
import { REASON, disconnectReason } from './reason-codes.ts';
import { PacketFramer } from './framing.ts';
import { fromClient, mqtt5State, plainPublish, pubackToClient, toClient, type BrokerSignals, type ServerLimits } from './translate.ts';

/**
 * The protocol level of a CONNECT at the start of `head` (4 for MQTT 3.1.1, 3 for 3.1, 5 for 5.0);
 * undefined while too few bytes have arrived to tell; 0 when `head` does not start with a CONNECT
 * (the core answers that as it always has). MQTT 5.0 §3.1.2.1–2: the protocol name, then the level.
 */
export function protocolLevel(head: Buffer): number | undefined {
  if (head.length === 0) return undefined;
  if (head[0] !== 0x10) return 0;
  let pos = 1;
  for (;;) {
    if (pos >= head.length) return undefined;
    if (pos > 4) return 0; // a remaining length is at most four bytes
    if ((head[pos++]! & 0x80) === 0) break;
  }
  if (pos + 2 > head.length) return undefined;
  const nameLength = head.readUInt16BE(pos);
  if (nameLength !== 4 && nameLength !== 6) return 0; // "MQTT" or "MQIsdp"
  const levelAt = pos + 2 + nameLength;
  return levelAt < head.length ? head[levelAt]! : undefined;
}

/**
 * Reads a connection's first bytes until its protocol level is known, puts them back, and calls
 * `then` with it. At most a few bytes decide (protocolLevel), so nothing more is held meanwhile.
 */
export function whenProtocolKnown(conn: Duplex, then: (level: number) => void): void {
  let head: Buffer = Buffer.alloc(0);
  const onReadable = () => {
    for (let chunk: Buffer | null; (chunk = conn.read() as Buffer | null) !== null; ) head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
    const level = protocolLevel(head);
    if (level === undefined) return;
    conn.off('readable', onReadable);
    conn.unshift(head);
    then(level);
  };
  conn.on('readable', onReadable);
}

export interface FrontEndSignals extends BrokerSignals {
  /** Why the server is ending the session, once it is (told to the client in a DISCONNECT). */
  endReason(): EndReason | undefined;
}

export interface FrontEndOptions {
  limits: ServerLimits;
  /** The packet limit now (smaller before the connection is authenticated): larger packets close the connection. */
  packetLimit(): number;
  /** A packet announced larger than the limit: the connection is being closed (0x95). */
  onTooLarge(announced: number, limit: number): void;
  /** A protocol violation (malformed packet, alias out of range…): the connection is being closed with this reason. */
  onViolation(reasonCode: number, detail: string): void;
}

export interface Mqtt5FrontEnd {
  /** The stream the aedes core reads MQTT 3.1.1 from and writes MQTT 3.1.1 to. */
  inner: Duplex;
  /** Gives the front end the broker's answers about this connection (once the core has a client for it). */
  attach(signals: FrontEndSignals): void;
}

/** How long a client has to close after the server's DISCONNECT before the socket is destroyed. */
const CLOSE_GRACE_MS = 1000;

/**
 * An MQTT 5.0 connection in front of the MQTT 3.1.1 core: the client's v5 packets are translated
 * (translate.ts) and handed to the core as 3.1.1; the core's 3.1.1 packets are written to the
 * client as v5, with the reason codes the broker tells (`signals`). The front end never answers
 * for the core: every CONNACK, PUBACK and SUBACK is the core's, translated. Only protocol
 * violations are answered here (DISCONNECT, or a CONNACK before the session is open), and the
 * connection is then closed.
 */
export function mqtt5FrontEnd(outer: Duplex, options: FrontEndOptions): Mqtt5FrontEnd {
  const state = mqtt5State(options.limits);
  let signals: FrontEndSignals = { connackReason: () => undefined, pubackReason: () => undefined, endReason: () => undefined };
  let closed = false; // the connection is being closed: nothing more is read or translated
  const fromWire = mqtt.parser({ protocolVersion: 5 });
  const fromCore = mqtt.parser({ protocolVersion: 4 });

  // Packets are translated a socket read (or a batch of the core's writes) at a time, and handed
  // on in one buffer: one push to the core, one write to the client.
  const toCore: Buffer[] = [];
  const toWire: Buffer[] = [];
  const joined = (list: Buffer[]) => {
    const bytes = list.length === 1 ? list[0]! : Buffer.concat(list);
    list.length = 0;
    return bytes;
  };
  const flushToWire = (): boolean => toWire.length === 0 || outer.write(joined(toWire));
  const send = (packet: Packet) => {
    const bytes = mqtt.generate(packet, { protocolVersion: 5 });
    // [MQTT-3.1.2-25]: a packet above the client's Maximum Packet Size is not sent.
    if (state.clientMaximumPacketSize === undefined || bytes.length <= state.clientMaximumPacketSize) toWire.push(bytes);
  };
  /** Ends the connection: a last packet (a DISCONNECT, or a refusing CONNACK) if any, then the socket. */
  const close = (last?: Packet) => {
    if (closed) return;
    closed = true;
    outer.off('data', onData);
    if (!inner.destroyed) inner.destroy();
    if (outer.destroyed || !outer.writable) return void outer.destroy();
    flushToWire();
    const destroy = setTimeout(() => outer.destroy(), CLOSE_GRACE_MS);
    destroy.unref();
    outer.end(last ? mqtt.generate(last, { protocolVersion: 5 }) : undefined, () => {
      clearTimeout(destroy);
      outer.destroy();
    });
  };
  // Before the session is open the answer is a refusing CONNACK; after it, a DISCONNECT (MQTT 5.0 §4.13.1).
  const answerAndClose = (reasonCode: number) => close(state.sessionOpen ? { cmd: 'disconnect', reasonCode } : state.connackSent ? undefined : { cmd: 'connack', sessionPresent: false, reasonCode });
  const refuse = (reasonCode: number, detail: string) => {
    options.onViolation(reasonCode, detail);
    answerAndClose(reasonCode);
  };

  fromWire.on('packet', (packet: Packet) => {
    if (closed) return;
    const result = fromClient(packet, state);
    if ('violation' in result) return refuse(result.violation, result.detail);
    if ('closeWithWill' in result) {
      closed = true;
      outer.off('data', onData);
      inner.destroy(); // the core sees a lost connection: it publishes the will
      return void outer.destroy();
    }
    toCore.push(mqtt.generate(result.packet, { protocolVersion: 4 }));
  });
  fromWire.on('error', (err: Error) => !closed && refuse(REASON.malformedPacket, err.message));

  fromCore.on('packet', (packet: Packet) => {
    if (closed) return;
    const translated = toClient(packet, state, signals);
    if (translated) send(translated);
  });
  fromCore.on('error', () => close());

  // Both streams are cut into whole packets first: the client's is refused from the header of a
  // packet over the limit (before its body is buffered), and the common packets (a PUBLISH
  // without properties, a PUBACK with success) are translated without decoding them. Each
  // parser is then only ever given one whole packet.
  const wireFramer = new PacketFramer(options.packetLimit);
  const coreFramer = new PacketFramer(() => Number.MAX_SAFE_INTEGER);
  const onData = (chunk: Buffer) => {
    if (closed) return;
    const framed = wireFramer.push(chunk);
    for (const packet of framed.packets) {
      const plain = state.sessionOpen ? plainPublish(packet, state) : undefined;
      if (plain) toCore.push(plain);
      else fromWire.parse(packet);
      if (closed) return void (toCore.length = 0);
    }
    if ('tooLarge' in framed) {
      options.onTooLarge(framed.tooLarge.announced, framed.tooLarge.limit);
      answerAndClose(REASON.packetTooLarge);
    } else if ('malformed' in framed) {
      refuse(REASON.malformedPacket, framed.malformed);
    }
    if (closed) return void (toCore.length = 0);
    if (toCore.length > 0 && !inner.push(joined(toCore))) outer.pause();
  };
  /** The core's packets, translated and written to the client; the core waits for `callback` while the client is slow to read. */
  const fromCoreWritten = (chunks: Buffer[], callback: (err?: Error | null) => void) => {
    for (const chunk of chunks) {
      for (const packet of coreFramer.push(chunk).packets) {
        if (closed) break;
        if (packet[0] === 0x40 && packet.length === 4) toWire.push(pubackToClient(packet, state, signals));
        else fromCore.parse(packet);
      }
    }
    if (closed || flushToWire() || outer.destroyed) return callback();
    const resume = () => {
      outer.off('drain', resume).off('close', resume);
      callback();
    };
    outer.on('drain', resume).on('close', resume);
  };
  const inner = new Duplex({
    read() {
      outer.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      fromCoreWritten([chunk], callback);
    },
    writev(chunks, callback) {
      fromCoreWritten(
        chunks.map((c) => c.chunk as Buffer),
        callback,
      );
    },
    final(callback) {
      close(serverDisconnect());
      callback();
    },
    destroy(err, callback) {
      close(serverDisconnect());
      callback(err);
    },
  });
  /** The server ends the session: its reason, when the session was open (the core closed it). */
  const serverDisconnect = (): Packet | undefined => (state.sessionOpen && !state.clientDisconnected ? { cmd: 'disconnect', reasonCode: disconnectReason(signals.endReason()) } : undefined);

  outer.on('data', onData);
  outer.on('end', () => {
    if (!closed) inner.push(null);
  });
  outer.on('close', () => {
    closed = true;
    if (!inner.destroyed) inner.destroy();
  });
  outer.on('error', () => {
    closed = true;
    if (!inner.destroyed) inner.destroy();
  });

  return {
    inner,
    attach(given) {
      signals = given;
    },
  };
}
