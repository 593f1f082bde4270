import mqtt from 'mqtt-packet';
import { describe, expect, it } from 'vitest';
import { PacketFramer } from './framing.ts';
import { protocolLevel } from './front-end.ts';

describe('protocolLevel (which front a connection gets)', () => {
  const connect = (protocolVersion: 3 | 4 | 5) =>
    mqtt.generate({ cmd: 'connect', protocolId: protocolVersion === 3 ? 'MQIsdp' : 'MQTT', protocolVersion, clean: true, clientId: 'c', keepalive: 10 }, { protocolVersion });

  it('reads the level of MQTT 3.1, 3.1.1 and 5.0 CONNECTs', () => {
    expect(protocolLevel(connect(3))).toBe(3);
    expect(protocolLevel(connect(4))).toBe(4);
    expect(protocolLevel(connect(5))).toBe(5);
  });

  it('waits while too few bytes arrived, however they are split', () => {
    const bytes = connect(5);
    for (let n = 0; n < 9; n++) expect(protocolLevel(bytes.subarray(0, n))).toBeUndefined();
    expect(protocolLevel(bytes.subarray(0, 9))).toBe(5);
  });

  it('anything but a CONNECT goes to the core as it is (0)', () => {
    expect(protocolLevel(Buffer.from([0x30, 0x02, 0x00, 0x00]))).toBe(0); // a PUBLISH first
    expect(protocolLevel(Buffer.from('GET / HTTP/1.1\r\n'))).toBe(0);
    expect(protocolLevel(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x01]))).toBe(0); // a five-byte remaining length
    expect(protocolLevel(Buffer.from([0x10, 0x0a, 0x00, 0x05]))).toBe(0); // a protocol name of 5 bytes
  });
});

describe('PacketFramer', () => {
  it('cuts whole packets, however the bytes are split, and keeps a partial one', () => {
    const framer = new PacketFramer(() => 1000);
    const a = Buffer.from('40020001', 'hex');
    const b = mqtt.generate({ cmd: 'publish', topic: 't', payload: Buffer.alloc(300), qos: 0, retain: false, dup: false });
    const stream = Buffer.concat([a, b, a]);
    const out: Buffer[] = [];
    for (let i = 0; i < stream.length; i += 7) out.push(...framer.push(stream.subarray(i, i + 7)).packets);
    expect(out.map((p) => p.toString('hex'))).toEqual([a, b, a].map((p) => p.toString('hex')));
  });

  it('refuses a packet over the limit from its header, and a Remaining Length of five bytes', () => {
    expect(new PacketFramer(() => 100).push(Buffer.from([0x30, 0xe5, 0x00]))).toEqual({ packets: [], tooLarge: { announced: 101, limit: 100 } });
    expect(new PacketFramer(() => 100).push(Buffer.from([0x30, 0x80, 0x80, 0x80, 0x80, 0x01]))).toMatchObject({ malformed: expect.any(String) });
  });
});
