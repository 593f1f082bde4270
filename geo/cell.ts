import { latLngToCell, cellToLatLng, getResolution, cellToChildren } from 'h3-js';

/** Resolution at which every located reading is stored (~0.9 m² cells). */
export const STORAGE_RESOLUTION = 15;

/** H3 index (hex string) → signed 64-bit integer as stored in PostgreSQL `bigint`. The top bit of a valid index is 0. */
export function cellToBigInt(h3: string): bigint {
  return BigInt(`0x${h3}`);
}

export function bigIntToCell(value: bigint | string): string {
  return BigInt(value).toString(16);
}

/** The storage cell (res 15) of a position, as a bigint. */
export function storageCell(lat: number, lng: number): bigint {
  return cellToBigInt(latLngToCell(lat, lng, STORAGE_RESOLUTION));
}

/**
 * The contiguous integer range [first, last] holding every res-15 descendant of `h3`.
 * Digits below a cell's resolution are 7 (unused) in its own index; its descendants have the
 * resolution field set to 15 and digits 0..6 there, so the range is resolution field 15 with all
 * lower digits 0 … all lower digits 6.
 */
export function descendantRange(h3: string): [bigint, bigint] {
  const res = getResolution(h3);
  const index = cellToBigInt(h3);
  const resShift = 52n;
  const withRes15 = (index & ~(0xfn << resShift)) | (BigInt(STORAGE_RESOLUTION) << resShift);
  const freeDigits = BigInt(STORAGE_RESOLUTION - res);
  const lowMask = (1n << (3n * freeDigits)) - 1n; // digits res+1..15 (3 bits each, lowest bits)
  const first = withRes15 & ~lowMask;
  let last = first;
  for (let d = 0n; d < freeDigits; d++) last |= 6n << (3n * d);
  return [first, last];
}

export { cellToLatLng, cellToChildren };
