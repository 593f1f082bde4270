import { describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS, localHour, trafficDemand } from './clock.ts';
import { eventVolume, rainEvents, rainLastHour, rainRate, weatherAt } from './weather.ts';

const SEED = 20260101;
const YEAR = Date.UTC(2026, 0, 1);

describe('clock', () => {
  it('uses Dongguan local time (UTC+8)', () => {
    expect(localHour(Date.UTC(2026, 5, 1, 0, 0))).toBe(8);
    expect(localHour(Date.UTC(2026, 5, 1, 16, 30))).toBe(0.5);
  });

  it('has rush hours on working days', () => {
    const wed = (h: number) => Date.UTC(2026, 5, 17, h - 8);
    expect(trafficDemand(wed(8))).toBeGreaterThan(0.8);
    expect(trafficDemand(wed(18))).toBeGreaterThan(0.8);
    expect(trafficDemand(wed(27))).toBeLessThan(0.15); // 03:00 next day
  });
});

describe('weather', () => {
  it('is the same for the same seed and differs for another', () => {
    const t = Date.UTC(2026, 6, 10, 6);
    expect(weatherAt(SEED, t)).toEqual(weatherAt(SEED, t));
    const a = Array.from({ length: 50 }, (_, i) => weatherAt(SEED, t + i * 7 * HOUR_MS).temperature);
    const b = Array.from({ length: 50 }, (_, i) => weatherAt(SEED + 1, t + i * 7 * HOUR_MS).temperature);
    expect(a).not.toEqual(b);
  });

  it('rains more often in the wet season, and the 1-hour total matches the intensity', () => {
    const rainyHours = (month: number) => {
      let n = 0;
      for (let h = 0; h < 24 * 60; h++) if (rainRate(SEED, Date.UTC(2026, month, 1) + h * HOUR_MS) > 0.1) n++;
      return n;
    };
    expect(rainyHours(5)).toBeGreaterThan(rainyHours(11) * 2); // June vs December
    // the integral over the last hour equals the sum of the intensity samples (trapezoid)
    const [e] = rainEvents(SEED, Date.UTC(2026, 5, 1), Date.UTC(2026, 7, 1)).filter((x) => x.durationH > 1.5);
    expect(e).toBeDefined();
    const t = e!.start + HOUR_MS * 1.2;
    let sum = 0;
    const steps = 600;
    for (let i = 0; i < steps; i++) sum += (rainRate(SEED, t - HOUR_MS + ((i + 0.5) * HOUR_MS) / steps) / steps);
    expect(rainLastHour(SEED, t)).toBeCloseTo(sum, 2);
    expect(eventVolume(e!)).toBeGreaterThan(0);
  });

  it('stays within Dongguan’s climate over a year', () => {
    let min = Infinity;
    let max = -Infinity;
    for (let t = YEAR; t < YEAR + 365 * DAY_MS; t += 3.7 * HOUR_MS) {
      const w = weatherAt(SEED, t, 17);
      min = Math.min(min, w.temperature);
      max = Math.max(max, w.temperature);
      expect(w.humidity).toBeGreaterThanOrEqual(25);
      expect(w.humidity).toBeLessThanOrEqual(99);
      expect(w.rainRate).toBeGreaterThanOrEqual(0);
      expect(w.rain1h).toBeLessThan(400);
      expect(w.wind).toBeGreaterThan(0);
    }
    expect(min).toBeGreaterThan(0);
    expect(min).toBeLessThan(15);
    expect(max).toBeGreaterThan(30);
    expect(max).toBeLessThan(40);
  });
});
