import { describe, expect, it } from 'vitest';
import { aqi, airQualityModel, iaqi, AQI_BREAKPOINTS, noiseModel } from './environment.ts';

const SEED = 20260101;
/** Local hour h on the working days of a fortnight in March 2026 (Mon 2 … Fri 13). */
const workdays = (h: number) => [2, 3, 4, 5, 6, 9, 10, 11, 12, 13].map((d) => Date.UTC(2026, 2, d, h - 8));
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

describe('AQI (HJ 633-2012)', () => {
  it('interpolates individual indices between breakpoints and takes the largest', () => {
    expect(iaqi(AQI_BREAKPOINTS.pm25, 35)).toBe(50);
    expect(iaqi(AQI_BREAKPOINTS.pm25, 55)).toBe(75);
    expect(iaqi(AQI_BREAKPOINTS.o3, 200)).toBe(100);
    expect(iaqi(AQI_BREAKPOINTS.pm25, 9999)).toBe(500);
    expect(aqi({ pm25: 75, pm10: 20, o3: 20, no2: 20, so2: 5, co: 0.5 })).toBe(100);
    expect(aqi({ pm25: 10, pm10: 20, o3: 180, no2: 20, so2: 5, co: 0.5 })).toBe(75);
  });
});

describe('air-quality stations', () => {
  const roadside = airQualityModel(SEED, 42, 'roadside');

  it('peak in NO2 at the morning rush hour and in ozone in the afternoon', () => {
    expect(mean(workdays(8).map((t) => roadside(t).values.no2!))).toBeGreaterThan(1.4 * mean(workdays(3).map((t) => roadside(t).values.no2!)));
    expect(mean(workdays(15).map((t) => roadside(t).values.o3!))).toBeGreaterThan(2 * mean(workdays(6).map((t) => roadside(t).values.o3!)));
  });

  it('report an AQI consistent with their pollutants, and the weather', () => {
    for (const t of workdays(11)) {
      const v = roadside(t).values;
      expect(v.aqi).toBe(aqi({ pm25: v.pm25!, pm10: v.pm10!, o3: v.o3!, no2: v.no2!, so2: v.so2!, co: v.co! }));
      expect(v.pm10!).toBeGreaterThan(v.pm25!);
      expect(v.temperature!).toBeGreaterThan(5);
      expect(v.temperature!).toBeLessThan(35);
    }
  });

  it('are dirtier in winter than in summer (fine particles)', () => {
    const month = (m: number) => mean(Array.from({ length: 60 }, (_, i) => roadside(Date.UTC(2026, m, 1) + i * 11 * 3600_000).values.pm25!));
    expect(month(0)).toBeGreaterThan(1.5 * month(6));
  });
});

describe('noise monitors', () => {
  it('are louder by day than at night, and louder by the road than in a park', () => {
    const road = noiseModel(SEED, 1, 'roadside');
    const park = noiseModel(SEED, 1, 'park');
    expect(mean(workdays(17).map((t) => road(t).values.noise!))).toBeGreaterThan(mean(workdays(3).map((t) => road(t).values.noise!)) + 5);
    expect(mean(workdays(17).map((t) => road(t).values.noise!))).toBeGreaterThan(mean(workdays(17).map((t) => park(t).values.noise!)) + 8);
  });
});
