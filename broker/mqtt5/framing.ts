/**
 * Splits an MQTT byte stream into whole packets by their fixed header (MQTT 5.0 §2.1: a type
 * byte, then the Remaining Length as a variable byte integer of at most four bytes), without
 * decoding them. A packet announcing more than the limit is refused from its header, before its
 * body is buffered; a partial packet is kept for the next chunk.
 */
export type Framed = { packets: Buffer[] } | { packets: Buffer[]; tooLarge: { announced: number; limit: number } } | { packets: Buffer[]; malformed: string };

export class PacketFramer {
  private rest: Buffer | undefined;

  constructor(private readonly limit: () => number) {}

  push(chunk: Buffer): Framed {
    const data = this.rest ? Buffer.concat([this.rest, chunk]) : chunk;
    this.rest = undefined;
    const packets: Buffer[] = [];
    let at = 0;
    while (at + 2 <= data.length) {
      let length = 0;
      let pos = at + 1;
      let complete = false;
      for (let shift = 0; pos < data.length && shift <= 21; shift += 7) {
        const byte = data[pos++]!;
        length += (byte & 0x7f) << shift;
        if ((byte & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (pos - at > 4) return { packets, malformed: 'a Remaining Length of more than four bytes' };
        break;
      }
      const limit = this.limit();
      if (length > limit) return { packets, tooLarge: { announced: length, limit } };
      if (pos + length > data.length) break;
      packets.push(data.subarray(at, pos + length));
      at = pos + length;
    }
    if (at < data.length) this.rest = data.subarray(at);
    return { packets };
  }
}

