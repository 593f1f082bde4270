import mqttPacket from 'mqtt-packet';

import type { MqttVersion } from './protocol.ts';

/**
 * The few MQTT 3.1.1 (or 5.0) packets a fan-in load generator needs, pre-encoded with mqtt-packet
 * so that sending costs one socket write per batch of messages (no per-message encoding while timed).
 */

export function connectPacket(clientId: string, username: string, protocolVersion: MqttVersion = 4, keepalive = 300): Buffer {
  return mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clean: true, clientId, username, keepalive }, { protocolVersion });
}

export const DISCONNECT = Buffer.from([0xe0, 0x00]);

/** QoS 1 PUBLISH packets back to back in one buffer; message i is bytes offsets[i]..offsets[i+1]. */
export interface PublishStream {
  buf: Buffer;
  offsets: Uint32Array;
  count: number;
}

/** Packet ids run 1..65535 in send order, so any window ≤ 65535 never has two in flight with the same id. */
export function encodePublishes(topic: string, payloads: readonly string[], firstSeq = 0, protocolVersion: MqttVersion = 4): PublishStream {
  const parts: Buffer[] = [];
  const offsets = new Uint32Array(payloads.length + 1);
  let size = 0;
  payloads.forEach((payload, i) => {
    const packet = mqttPacket.generate({ cmd: 'publish', topic, payload, qos: 1, messageId: ((firstSeq + i) % 65535) + 1, retain: false, dup: false }, { protocolVersion });
    parts.push(packet);
    size += packet.length;
    offsets[i + 1] = size;
  });
  return { buf: Buffer.concat(parts, size), offsets, count: payloads.length };
}

/** What arrived from the broker: PUBACKs counted, a CONNACK's return code if one came. */
export interface Incoming {
  /** Successful PUBACKs (MQTT 5: reason code below 0x80). */
  pubacks: number;
  /** MQTT 5 PUBACKs with a failure reason code. */
  refused: number;
  connack?: number;
}

/**
 * Incremental reader of broker → client packets. Counts PUBACKs (the only thing a publisher
 * receives in bulk), reports CONNACK, skips anything else; keeps a partial packet for the next chunk.
 */
export class AckReader {
  private rest: Buffer | undefined;

  read(chunk: Buffer): Incoming {
    const data = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    const out: Incoming = { pubacks: 0, refused: 0 };
    let i = 0;
    while (i + 2 <= data.length) {
      const type = data[i]! >> 4;
      let length = 0;
      let multiplier = 1;
      let j = i + 1;
      let complete = false;
      while (j < data.length && j <= i + 4) {
        const byte = data[j++]!;
        length += (byte & 0x7f) * multiplier;
        multiplier *= 128;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete || j + length > data.length) break;
      if (type === 4 && length >= 3 && data[j + 2]! >= 0x80) out.refused++;
      else if (type === 4) out.pubacks++;
      else if (type === 2) out.connack = data[j + 1];
      i = j + length;
    }
    this.rest = i < data.length ? data.subarray(i) : undefined;
    return out;
  }
}
