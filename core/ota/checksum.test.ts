import { describe, expect, it } from 'vitest';
import { CHECKSUM_ALGORITHMS, CHECKSUM_HEX_LENGTH, checksumOf, createChecksum, type ChecksumAlgorithm } from './checksum.ts';

// Expected values computed outside this code, with python3: hashlib (MD5, SHA*), zlib.crc32 and
// mmh3.hash / mmh3.hash_bytes (seed 0), the 32-bit values packed little-endian (struct '<I'), as
// Guava's HashCode.toString() writes them and the python SDK's verify_checksum compares them.
// Cross-check: Guava's own Murmur3Hash128Test has "hell" → h1 0x629942693e10f867, h2
// 0x92db0b82baeb5347, i.e. 67f8103e69429962 4753ebba820bdb92 below.
const pattern = Buffer.from(Array.from({ length: 10_247 }, (_, i) => i % 251));
const VECTORS: [string, Buffer, Record<ChecksumAlgorithm, string>][] = [
  [
    'empty',
    Buffer.alloc(0),
    {
      MD5: 'd41d8cd98f00b204e9800998ecf8427e',
      SHA256: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
      SHA384: '38b060a751ac96384cd9327eb1b1e36a21fdb71114be07434c0cc7bf63f6e1da274edebfe76f65fbd51ad2f14898b95b',
      SHA512: 'cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e',
      CRC32: '00000000',
      MURMUR3_32: '00000000',
      MURMUR3_128: '00000000000000000000000000000000',
    },
  ],
  [
    'a',
    Buffer.from('a'),
    {
      MD5: '0cc175b9c0f1b6a831c399e269772661',
      SHA256: 'ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb',
      SHA384: '54a59b9f22b0b80880d8427e548b7c23abd873486e1f035dce9cd697e85175033caa88e6d57bc35efae0b5afd3145f31',
      SHA512: '1f40fc92da241694750979ee6cf582f2d5d7d28e18335de05abc54d0560e0f5302860c652bf08d560252aa5e74210546f369fbbbce8c12cfc7957b2652fe9a75',
      CRC32: '43beb7e8',
      MURMUR3_32: 'b269253c',
      MURMUR3_128: '897859f6655555855a890e51483ab5e6',
    },
  ],
  [
    'hell',
    Buffer.from('hell'),
    {
      MD5: '4229d691b07b13341da53f17ab9f2416',
      SHA256: '0ebdc3317b75839f643387d783535adc360ca01f33c75f7c1e7373adcd675c0b',
      SHA384: '547b8070508f74f92e52f702a53e07a9e452f0adb2ae2741d348b70f7604df340783beb78be805fbdf232ad41a4341d0',
      SHA512: '22c2e450a8f0933878bf16a55e3960c69ff4c76684bb67fb553497eababd9e4f61577331480dd4af6b905f90df6e6db4d4b364ae262cb9b9ec303f8086249f85',
      CRC32: 'e300861c',
      MURMUR3_32: 'f3db67a1',
      MURMUR3_128: '67f8103e694299624753ebba820bdb92',
    },
  ],
  [
    'fox',
    Buffer.from('The quick brown fox jumps over the lazy dog'),
    {
      MD5: '9e107d9d372bb6826bd81d3542a419d6',
      SHA256: 'd7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592',
      SHA384: 'ca737f1014a48f4c0b6dd43cb177b0afd9e5169367544c494011e3317dbf9a509cb1e5dc1e85a941bbee3d7f2afbc9b1',
      SHA512: '07e547d9586f6a73f73fbac0435ed76951218fb7d0c8d788a309d785436bbb642e93a252a954f23912547d1e8a3b5ed6e1bfd7097821233fa0538f3db854fee6',
      CRC32: '39a34f41',
      MURMUR3_32: '23f74f2e',
      MURMUR3_128: '6c1b07bc7bbc4be347939ac4a93c437a',
    },
  ],
  [
    'pattern of 10247 bytes (i % 251)',
    pattern,
    {
      MD5: '04e666576043b4a9d5d648e4aef35198',
      SHA256: '2ffce30f5788ad7a919a414cfc394564eec4cb20f912343caa795f7fbf7946df',
      SHA384: 'f7d0c0201dfd3822fb0e6027fc63c54b8f32249f9c88a4777efb483d5a1d33d1ca1d9d0f5bc73cd198cbc4e26d1d8de0',
      SHA512: '9a555f7829b8c8fe57019c3c25f994912399424a6f20e0efaee01cbf439bf0058868f676c05fd582c0bd8d7d5b1808e989c4419dd95eeac744749f8382c44b98',
      CRC32: 'fd682675',
      MURMUR3_32: '9aadf2bd',
      MURMUR3_128: '4bc2c8c566149b1f0165bca7452eef19',
    },
  ],
];

describe('OTA checksums, formatted as ThingsBoard (Guava HashCode.toString) writes them', () => {
  for (const [name, data, expected] of VECTORS) {
    for (const algorithm of CHECKSUM_ALGORITHMS) {
      it(`${algorithm} of ${name}`, () => {
        expect(checksumOf(algorithm, data)).toBe(expected[algorithm]);
        expect(expected[algorithm]).toHaveLength(CHECKSUM_HEX_LENGTH[algorithm]);
      });
    }
  }

  it('gives the same digest however the stream is cut (pieces of 1, 3, 7, 16, 17… bytes)', () => {
    const expected = VECTORS.at(-1)![2];
    for (const algorithm of CHECKSUM_ALGORITHMS) {
      for (const sizes of [[1], [3, 7], [16, 17, 5], [4096], [2, 14, 30, 1000]]) {
        const c = createChecksum(algorithm);
        let at = 0;
        for (let i = 0; at < pattern.length; i++) {
          const n = sizes[i % sizes.length]!;
          c.update(pattern.subarray(at, at + n));
          at += n;
        }
        expect(c.digest(), `${algorithm} in pieces of ${sizes.join(', ')}`).toBe(expected[algorithm]);
      }
    }
  });
});
