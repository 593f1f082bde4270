import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';

/**
 * ThingsBoard's OTA checksum algorithms (common/data/.../ota/ChecksumAlgorithm.java). ThingsBoard
 * computes them with Guava (dao/.../ota/BaseOtaPackageService.java `getHashFunction`:
 * Hashing.md5(), sha256(), sha384(), sha512(), crc32(), murmur3_32() and murmur3_128(), both
 * murmurs with seed 0) and writes `HashCode.toString()`: the hash's bytes as lower-case hex, in
 * Guava's byte order — for CRC32 and MURMUR3_32 the 32-bit value little-endian, for MURMUR3_128
 * h1 then h2, each little-endian. The python SDK checks exactly that (sdk_utils.py
 * `verify_checksum` reverses the byte order of zlib.crc32 and mmh3 values before comparing).
 */
export const CHECKSUM_ALGORITHMS = ['MD5', 'SHA256', 'SHA384', 'SHA512', 'CRC32', 'MURMUR3_32', 'MURMUR3_128'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

export const isChecksumAlgorithm = (s: string): s is ChecksumAlgorithm => (CHECKSUM_ALGORITHMS as readonly string[]).includes(s);

/** An incremental checksum: feed the package in pieces of any size, then read the hex digest once. */
export interface Checksum {
  update(piece: Uint8Array): void;
  digest(): string;
}

/** Lower-case hex digits of the digest each algorithm produces (a checksum given on upload is checked against it). */
export const CHECKSUM_HEX_LENGTH: Record<ChecksumAlgorithm, number> = {
  MD5: 32,
  SHA256: 64,
  SHA384: 96,
  SHA512: 128,
  CRC32: 8,
  MURMUR3_32: 8,
  MURMUR3_128: 32,
};

export function createChecksum(algorithm: ChecksumAlgorithm): Checksum {
  switch (algorithm) {
    case 'MD5':
    case 'SHA256':
    case 'SHA384':
    case 'SHA512': {
      const hash = createHash(algorithm.toLowerCase());
      return { update: (p) => void hash.update(p), digest: () => hash.digest('hex') };
    }
    case 'CRC32': {
      let value = 0;
      return { update: (p) => void (value = crc32(p, value)), digest: () => uint32LittleEndianHex(value) };
    }
    case 'MURMUR3_32':
      return new Murmur3x86_32();
    case 'MURMUR3_128':
      return new Murmur3x64_128();
  }
}

/** The checksum of a whole buffer (tests, small inputs). */
export function checksumOf(algorithm: ChecksumAlgorithm, data: Uint8Array): string {
  const c = createChecksum(algorithm);
  c.update(data);
  return c.digest();
}

function uint32LittleEndianHex(value: number): string {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(value >>> 0);
  return b.toString('hex');
}

/**
 * Feeds whole blocks of `size` bytes to `block`, keeping the rest for the next piece: the
 * murmur hashes consume 4- or 16-byte blocks, a stream arrives in pieces of any length.
 */
abstract class BlockHash implements Checksum {
  private readonly pending: Buffer;
  private pendingLength = 0;
  protected total = 0;

  constructor(private readonly size: number) {
    this.pending = Buffer.alloc(size);
  }

  protected abstract block(data: Buffer, offset: number): void;
  protected abstract finish(tail: Buffer): string;

  update(piece: Uint8Array): void {
    const data = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength);
    this.total += data.length;
    let offset = 0;
    if (this.pendingLength > 0) {
      const take = Math.min(this.size - this.pendingLength, data.length);
      data.copy(this.pending, this.pendingLength, 0, take);
      this.pendingLength += take;
      offset = take;
      if (this.pendingLength < this.size) return;
      this.block(this.pending, 0);
      this.pendingLength = 0;
    }
    for (; offset + this.size <= data.length; offset += this.size) this.block(data, offset);
    data.copy(this.pending, 0, offset);
    this.pendingLength = data.length - offset;
  }

  digest(): string {
    return this.finish(this.pending.subarray(0, this.pendingLength));
  }
}

const rotl32 = (x: number, r: number) => (x << r) | (x >>> (32 - r));

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** MurmurHash3_x86_32 (Austin Appleby's reference, smhasher MurmurHash3.cpp), seed 0. */
class Murmur3x86_32 extends BlockHash {
  private h = 0;
  private static readonly C1 = 0xcc9e2d51;
  private static readonly C2 = 0x1b873593;

  constructor() {
    super(4);
  }

  private static mixK(k: number): number {
    return Math.imul(rotl32(Math.imul(k, Murmur3x86_32.C1), 15), Murmur3x86_32.C2);
  }

  protected block(data: Buffer, offset: number): void {
    this.h ^= Murmur3x86_32.mixK(data.readUInt32LE(offset));
    this.h = (Math.imul(rotl32(this.h, 13), 5) + 0xe6546b64) | 0;
  }

  protected finish(tail: Buffer): string {
    let h = this.h;
    if (tail.length > 0) {
      let k = 0;
      for (let i = tail.length - 1; i >= 0; i--) k = (k << 8) | tail[i]!;
      h ^= Murmur3x86_32.mixK(k);
    }
    h ^= this.total | 0;
    return uint32LittleEndianHex(fmix32(h));
  }
}

// 64-bit arithmetic on (high, low) pairs of unsigned 32-bit numbers — BigInt is ten times slower.
// Each operation leaves its result in `hi` and `lo`.
let hi = 0;
let lo = 0;

/** (ah·2³² + al) × (bh·2³² + bl) mod 2⁶⁴. */
function mul64(ah: number, al: number, bh: number, bl: number): void {
  const a0 = al & 0xffff;
  const a1 = al >>> 16;
  const b0 = bl & 0xffff;
  const b1 = bl >>> 16;
  const p00 = a0 * b0;
  const p01 = a0 * b1;
  const p10 = a1 * b0;
  const mid = (p00 >>> 16) + (p01 & 0xffff) + (p10 & 0xffff);
  lo = (((mid & 0xffff) << 16) | (p00 & 0xffff)) >>> 0;
  hi = (a1 * b1 + (p01 >>> 16) + (p10 >>> 16) + (mid >>> 16) + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
}

function add64(ah: number, al: number, bh: number, bl: number): void {
  const sum = al + bl;
  lo = sum >>> 0;
  hi = (ah + bh + (sum > 0xffffffff ? 1 : 0)) >>> 0;
}

/** Rotates left by r, 0 < r < 64, r ≠ 32. */
function rotl64(h: number, l: number, r: number): void {
  if (r > 32) {
    const t = h;
    h = l;
    l = t;
    r -= 32;
  }
  hi = ((h << r) | (l >>> (32 - r))) >>> 0;
  lo = ((l << r) | (h >>> (32 - r))) >>> 0;
}

function fmix64(h: number, l: number): void {
  l = (l ^ (h >>> 1)) >>> 0; // k ^= k >>> 33
  mul64(h, l, 0xff51afd7, 0xed558ccd);
  lo = (lo ^ (hi >>> 1)) >>> 0;
  mul64(hi, lo, 0xc4ceb9fe, 0x1a85ec53);
  lo = (lo ^ (hi >>> 1)) >>> 0;
}

const C1_HI = 0x87c37b91;
const C1_LO = 0x114253d5;
const C2_HI = 0x4cf5ad43;
const C2_LO = 0x2745937f;

/** k1 · c1, rotl 31, · c2 (the first lane's mix). */
function mixK1(h: number, l: number): void {
  mul64(h, l, C1_HI, C1_LO);
  rotl64(hi, lo, 31);
  mul64(hi, lo, C2_HI, C2_LO);
}

/** k2 · c2, rotl 33, · c1 (the second lane's). */
function mixK2(h: number, l: number): void {
  mul64(h, l, C2_HI, C2_LO);
  rotl64(hi, lo, 33);
  mul64(hi, lo, C1_HI, C1_LO);
}

/** MurmurHash3_x64_128 (smhasher MurmurHash3.cpp), seed 0; the digest is h1 then h2, each little-endian (Guava's byte order). */
class Murmur3x64_128 extends BlockHash {
  private h1h = 0;
  private h1l = 0;
  private h2h = 0;
  private h2l = 0;

  constructor() {
    super(16);
  }

  protected block(data: Buffer, offset: number): void {
    mixK1(data.readUInt32LE(offset + 4), data.readUInt32LE(offset));
    let h1h = (this.h1h ^ hi) >>> 0;
    let h1l = (this.h1l ^ lo) >>> 0;
    rotl64(h1h, h1l, 27);
    add64(hi, lo, this.h2h, this.h2l);
    mul64(hi, lo, 0, 5);
    add64(hi, lo, 0, 0x52dce729);
    h1h = hi;
    h1l = lo;
    mixK2(data.readUInt32LE(offset + 12), data.readUInt32LE(offset + 8));
    rotl64((this.h2h ^ hi) >>> 0, (this.h2l ^ lo) >>> 0, 31);
    add64(hi, lo, h1h, h1l);
    mul64(hi, lo, 0, 5);
    add64(hi, lo, 0, 0x38495ab5);
    this.h1h = h1h;
    this.h1l = h1l;
    this.h2h = hi;
    this.h2l = lo;
  }

  protected finish(tail: Buffer): string {
    let { h1h, h1l, h2h, h2l } = this;
    const padded = Buffer.alloc(16);
    tail.copy(padded);
    if (tail.length > 8) {
      mixK2(padded.readUInt32LE(12), padded.readUInt32LE(8));
      h2h = (h2h ^ hi) >>> 0;
      h2l = (h2l ^ lo) >>> 0;
    }
    if (tail.length > 0) {
      mixK1(padded.readUInt32LE(4), padded.readUInt32LE(0));
      h1h = (h1h ^ hi) >>> 0;
      h1l = (h1l ^ lo) >>> 0;
    }
    const lenHi = Math.floor(this.total / 2 ** 32) >>> 0;
    const lenLo = this.total >>> 0;
    h1h = (h1h ^ lenHi) >>> 0;
    h1l = (h1l ^ lenLo) >>> 0;
    h2h = (h2h ^ lenHi) >>> 0;
    h2l = (h2l ^ lenLo) >>> 0;
    add64(h1h, h1l, h2h, h2l);
    [h1h, h1l] = [hi, lo];
    add64(h2h, h2l, h1h, h1l);
    [h2h, h2l] = [hi, lo];
    fmix64(h1h, h1l);
    [h1h, h1l] = [hi, lo];
    fmix64(h2h, h2l);
    [h2h, h2l] = [hi, lo];
    add64(h1h, h1l, h2h, h2l);
    [h1h, h1l] = [hi, lo];
    add64(h2h, h2l, h1h, h1l);
    [h2h, h2l] = [hi, lo];
    const out = Buffer.alloc(16);
    out.writeUInt32LE(h1l, 0);
    out.writeUInt32LE(h1h, 4);
    out.writeUInt32LE(h2l, 8);
    out.writeUInt32LE(h2h, 12);
    return out.toString('hex');
  }
}
