import { describe, expect, it } from 'vitest';
import { createRng } from '../simulators/random.ts';
import { AUTO_MAX_BUCKETS, DAY, HOUR, MINUTE, autoInterval, formatInterval, parseInterval, planSources, type Segment } from './buckets.ts';

const T = Date.UTC(2026, 10, 20, 0, 0, 0);

describe('parseInterval', () => {
  it('reads whole numbers of seconds, minutes, hours and days, and auto', () => {
    expect(parseInterval('30s')).toBe(30_000);
    expect(parseInterval('1m')).toBe(MINUTE);
    expect(parseInterval('15m')).toBe(15 * MINUTE);
    expect(parseInterval('6h')).toBe(6 * HOUR);
    expect(parseInterval('1d')).toBe(DAY);
    expect(parseInterval('auto')).toBe('auto');
  });

  it('explains what is wrong with anything else', () => {
    for (const bad of ['', '5', 'm', '1.5h', '-1m', '1w', '5 minutes', 'auto ', '1mo', 'AUTO']) {
      const r = parseInterval(bad);
      if (bad === 'auto ') {
        expect(r).toBe('auto'); // surrounding spaces are tolerated
        continue;
      }
      expect(r, bad).toEqual({ error: expect.stringContaining('is not a duration') });
    }
    expect(parseInterval('0s')).toEqual({ error: expect.stringContaining('between 1s and 366d') });
    expect(parseInterval('367d')).toEqual({ error: expect.stringContaining('between 1s and 366d') });
  });

  it('formats intervals back', () => {
    expect([MINUTE, 90 * MINUTE, HOUR, 6 * HOUR, DAY, 7 * DAY, 45_000].map(formatInterval)).toEqual(['1m', '90m', '1h', '6h', '1d', '7d', '45s']);
  });
});

describe('autoInterval', () => {
  it('picks the finest interval giving at most ~1000 buckets', () => {
    expect(autoInterval(T, T + 10 * MINUTE)).toBe(1000);
    expect(autoInterval(T, T + 6 * HOUR)).toBe(30_000);
    expect(autoInterval(T, T + DAY)).toBe(5 * MINUTE);
    expect(autoInterval(T, T + 7 * DAY)).toBe(15 * MINUTE);
    expect(autoInterval(T, T + 365 * DAY)).toBe(12 * HOUR);
    expect(autoInterval(0, T)).toBe(30 * DAY);
    for (const range of [1, MINUTE, 17 * HOUR, 40 * DAY, 3000 * DAY]) {
      const iv = autoInterval(T, T + range);
      expect(Math.ceil(range / iv)).toBeLessThanOrEqual(AUTO_MAX_BUCKETS);
    }
  });
});

describe('planSources', () => {
  const covers = (segments: Segment[], from: number, to: number) => {
    expect(segments[0]!.start).toBe(from);
    expect(segments.at(-1)!.end).toBe(to);
    for (let i = 1; i < segments.length; i++) {
      expect(segments[i]!.start).toBe(segments[i - 1]!.end);
      expect(segments[i]!.source).not.toBe(segments[i - 1]!.source);
    }
    for (const s of segments) {
      expect(s.start).toBeLessThan(s.end);
      if (s.source === '1h') expect([s.start % HOUR, s.end % HOUR]).toEqual([0, 0]);
      if (s.source === '1m') expect([s.start % MINUTE, s.end % MINUTE]).toEqual([0, 0]);
    }
  };

  it('reads hours, then minutes, then raw readings after the watermark', () => {
    const from = T + 10 * MINUTE + 5_000;
    const to = T + 5 * HOUR + 30 * MINUTE;
    const done = T + 4 * HOUR + 20 * MINUTE;
    const plan = planSources({ from, to, intervalMs: HOUR, done });
    expect(plan).toEqual([
      { source: 'raw', start: from, end: T + 11 * MINUTE },
      { source: '1m', start: T + 11 * MINUTE, end: T + HOUR },
      { source: '1h', start: T + HOUR, end: T + 4 * HOUR },
      { source: '1m', start: T + 4 * HOUR, end: done },
      { source: 'raw', start: done, end: to },
    ]);
    covers(plan, from, to);
  });

  it('uses minutes only for intervals that are whole minutes, raw for the rest', () => {
    const done = T + DAY;
    expect(planSources({ from: T, to: T + 3 * HOUR, intervalMs: 5 * MINUTE, done })).toEqual([{ source: '1m', start: T, end: T + 3 * HOUR }]);
    expect(planSources({ from: T, to: T + 3 * HOUR, intervalMs: 30_000, done })).toEqual([{ source: 'raw', start: T, end: T + 3 * HOUR }]);
    expect(planSources({ from: T, to: T + 3 * HOUR, intervalMs: 90 * MINUTE, done })).toEqual([{ source: '1m', start: T, end: T + 3 * HOUR }]);
    expect(planSources({ from: T, to: T + 3 * HOUR, intervalMs: HOUR, done: undefined })).toEqual([{ source: 'raw', start: T, end: T + 3 * HOUR }]);
    expect(planSources({ from: T, to: T + 3 * HOUR, intervalMs: HOUR, done: T })).toEqual([{ source: 'raw', start: T, end: T + 3 * HOUR }]);
    expect(planSources({ from: T, to: T, intervalMs: HOUR, done })).toEqual([]);
  });

  it('reads minutes with pending late data raw, and their hours from minutes', () => {
    const done = T + DAY;
    const plan = planSources({ from: T, to: T + 3 * HOUR, intervalMs: HOUR, done, invalidMinutes: [T + HOUR + 5 * MINUTE, T + HOUR + 6 * MINUTE, T + 10 * HOUR] });
    expect(plan).toEqual([
      { source: '1h', start: T, end: T + HOUR },
      { source: '1m', start: T + HOUR, end: T + HOUR + 5 * MINUTE },
      { source: 'raw', start: T + HOUR + 5 * MINUTE, end: T + HOUR + 7 * MINUTE },
      { source: '1m', start: T + HOUR + 7 * MINUTE, end: T + 2 * HOUR },
      { source: '1h', start: T + 2 * HOUR, end: T + 3 * HOUR },
    ]);
  });

  it('always covers the range exactly with aligned segments (random ranges)', () => {
    const rng = createRng(7).next;
    for (let i = 0; i < 2000; i++) {
      const from = T + Math.floor(rng() * 3 * DAY);
      const to = from + 1 + Math.floor(rng() * 2 * DAY);
      const done = rng() < 0.1 ? undefined : T + Math.floor(rng() * 5 * DAY / MINUTE) * MINUTE;
      const intervalMs = [30_000, MINUTE, 5 * MINUTE, HOUR, 6 * HOUR, DAY][Math.floor(rng() * 6)]!;
      const invalidMinutes = Array.from({ length: Math.floor(rng() * 4) }, () => T + Math.floor(rng() * 3 * DAY));
      const plan = planSources({ from, to, intervalMs, done, invalidMinutes });
      covers(plan, from, to);
      for (const s of plan) {
        if (s.source !== 'raw') expect(s.end).toBeLessThanOrEqual(done!);
        if (s.source === '1h') expect(intervalMs % HOUR).toBe(0);
        if (s.source === '1m') expect(intervalMs % MINUTE).toBe(0);
        for (const m of invalidMinutes) if (s.source !== 'raw') expect(m >= s.start && m < s.end, `${m} in ${JSON.stringify(s)}`).toBe(false);
      }
    }
  });
});
