import { describe, expect, it } from 'vitest';
import { byDomain, encodeCopyText, isoTimestamp, mergeSameInstant, readingsTable } from './copy-text.ts';

const dictionary = { id: (name: string) => ({ a: 1, b: 2, c: 3 })[name] };

describe('COPY text encoding', () => {
  it('writes one tab-separated line per reading: \\N for missing columns, key ids ascending with their values', () => {
    const text = encodeCopyText(
      [
        { deviceId: 1, domain: 'generic', ts: Date.UTC(2026, 0, 1), values: { c: 3.5, a: 1.5 } },
        { deviceId: 2, domain: 'generic', ts: Date.UTC(2026, 0, 1, 0, 0, 1), values: { b: -2 }, lat: 23, lng: 113.7, alt: 5, cell: 644_245_094_400_000_000n },
        { deviceId: 3, domain: 'generic', ts: Date.UTC(2026, 0, 1), values: {}, lat: 23, lng: 113.7, cell: 1n },
      ],
      dictionary,
    );
    expect(text).toBe(
      '1\t2026-01-01T00:00:00.000Z\t\\N\t\\N\t\\N\t\\N\t{1,3}\t{1.5,3.5}\n' +
        '2\t2026-01-01T00:00:01.000Z\t644245094400000000\t23\t113.7\t5\t{2}\t{-2}\n' +
        '3\t2026-01-01T00:00:00.000Z\t1\t23\t113.7\t\\N\t{}\t{}\n',
    );
  });

  it('refuses a key without an id rather than writing a wrong one', () => {
    expect(() => encodeCopyText([{ deviceId: 1, domain: 'generic', ts: 0, values: { zz: 1 } }], dictionary)).toThrow(/no id/);
  });

  it('routes each domain to its own table', () => {
    const groups = byDomain([
      { deviceId: 1, domain: 'water', ts: 0, values: {} },
      { deviceId: 2, domain: 'air-space-ground', ts: 0, values: {} },
      { deviceId: 3, domain: 'water', ts: 1, values: {} },
    ]);
    expect([...groups.keys()].map(readingsTable)).toEqual(['readings_water', 'readings_air_space_ground']);
    expect(groups.get('water')!.map((r) => r.deviceId)).toEqual([1, 3]);
  });

  it('folds readings of one device at one instant into one row, later values winning', () => {
    const merged = mergeSameInstant([
      { deviceId: 1, domain: 'generic', ts: 10, values: { a: 1, b: 1 } },
      { deviceId: 2, domain: 'generic', ts: 10, values: { a: 9 } },
      { deviceId: 1, domain: 'generic', ts: 10, values: { b: 2 }, lat: 1, lng: 2, cell: 3n },
    ]);
    expect(merged).toEqual([
      { deviceId: 1, domain: 'generic', ts: 10, values: { a: 1, b: 2 }, lat: 1, lng: 2, cell: 3n },
      { deviceId: 2, domain: 'generic', ts: 10, values: { a: 9 } },
    ]);
  });
});

describe('isoTimestamp', () => {
  it('formats like Date.toISOString across days, hours and milliseconds', () => {
    for (const ms of [0, 1, 999, 1000, 59_999, 3_599_999, 86_399_999, 86_400_000, Date.UTC(2026, 10, 26, 23, 59, 59, 7), Date.UTC(2000, 1, 29, 12, 0, 0, 450), 1_764_000_000_123]) {
      expect(isoTimestamp(ms)).toBe(new Date(ms).toISOString());
    }
  });
});
