import { describe, expect, it } from 'vitest';
import { cellToChildren, cellToParent, latLngToCell } from 'h3-js';
import { bigIntToCell, cellToBigInt, descendantRange, storageCell } from './cell.ts';

describe('storage cells', () => {
  it('round-trips an H3 index through bigint', () => {
    const h = latLngToCell(23.02, 113.75, 15);
    expect(bigIntToCell(cellToBigInt(h))).toBe(h);
    expect(storageCell(23.02, 113.75)).toBe(cellToBigInt(h));
    expect(cellToBigInt(h) > 0n && cellToBigInt(h) < 2n ** 63n).toBe(true);
  });

  it.each([9, 11, 13])('puts every res-15 descendant of a res-%i cell inside its range, and nothing else near', (res) => {
    const parent = latLngToCell(22.98, 113.74, res);
    const [first, last] = descendantRange(parent);
    // Walk down to res 15 through a sample of descendants and check each one lies in range.
    let frontier = [parent];
    for (let r = res + 1; r <= 15; r++) frontier = frontier.flatMap((c) => cellToChildren(c, r)).slice(0, 2000);
    for (const child of frontier) {
      const v = cellToBigInt(child);
      expect(v >= first && v <= last).toBe(true);
      expect(cellToParent(child, res)).toBe(parent);
    }
    // A neighbouring point outside the parent falls outside the range.
    const outside = latLngToCell(22.5, 113.2, 15);
    const v = cellToBigInt(outside);
    expect(v >= first && v <= last).toBe(false);
    expect(descendantRange(cellToChildren(parent, 15)[0]!)).toEqual([cellToBigInt(cellToChildren(parent, 15)[0]!), cellToBigInt(cellToChildren(parent, 15)[0]!)]);
  });
});
