import { describe, expect, it } from 'vitest';
import { encodeCopyText, mergeSameInstant } from './copy-text.ts';

describe('COPY text encoding', () => {
  it('writes one tab-separated line per reading with \\N for missing columns', () => {
    const text = encodeCopyText([
      { deviceId: 1, ts: Date.UTC(2026, 0, 1), values: { a: 1.5 } },
      { deviceId: 2, ts: Date.UTC(2026, 0, 1, 0, 0, 1), values: { b: -2 }, lat: 23, lng: 113.7, alt: 5, cell: 644_245_094_400_000_000n },
    ]);
    expect(text).toBe(
      '1\t2026-01-01T00:00:00.000Z\t\\N\t\\N\t\\N\t\\N\t{"a":1.5}\n' + '2\t2026-01-01T00:00:01.000Z\t644245094400000000\t23\t113.7\t5\t{"b":-2}\n',
    );
  });

  it('doubles backslashes that JSON escapes produce', () => {
    expect(encodeCopyText([{ deviceId: 1, ts: 0, values: { 'q"k': 1 } }])).toContain('{"q\\\\"k":1}');
  });

  it('folds readings of one device at one instant into one row, later values winning', () => {
    const merged = mergeSameInstant([
      { deviceId: 1, ts: 10, values: { a: 1, b: 1 } },
      { deviceId: 2, ts: 10, values: { a: 9 } },
      { deviceId: 1, ts: 10, values: { b: 2 }, lat: 1, lng: 2, cell: 3n },
    ]);
    expect(merged).toEqual([
      { deviceId: 1, ts: 10, values: { a: 1, b: 2 }, lat: 1, lng: 2, cell: 3n },
      { deviceId: 2, ts: 10, values: { a: 9 } },
    ]);
  });
});
