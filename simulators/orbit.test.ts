import { describe, expect, it } from 'vitest';
import { DONGGUAN_CENTRE } from './dongguan.ts';
import { EARTH_RADIUS_KM, elevationDeg, observerEcef, orbitState, orbitalPeriodSeconds, orbitalVelocityKmS, sunSynchronousInclinationDeg, type Orbit } from './orbit.ts';

const orbit: Orbit = { altitudeKm: 500, inclinationDeg: sunSynchronousInclinationDeg(500), ltanHours: 10.5, u0: 0.3, epochMs: Date.UTC(2026, 0, 1) };

describe('circular low-earth orbit', () => {
  it('has the textbook period, speed and sun-synchronous inclination at 500 km', () => {
    expect(orbitalPeriodSeconds(500) / 60).toBeCloseTo(94.6, 0);
    expect(orbitalVelocityKmS(500)).toBeGreaterThan(7.6);
    expect(orbitalVelocityKmS(500)).toBeLessThan(7.63);
    expect(sunSynchronousInclinationDeg(500)).toBeCloseTo(97.4, 0);
  });

  it('ground track: latitude reaches ±(180° − i), and northbound equator crossings repeat every ~95 min', () => {
    const t0 = Date.UTC(2026, 3, 1);
    const crossings: number[] = [];
    let maxLat = -90;
    let prev = orbitState(orbit, t0).lat;
    for (let t = t0 + 10_000; t < t0 + 6 * 3600_000; t += 10_000) {
      const { lat, lng, altitudeKm } = orbitState(orbit, t);
      expect(Math.abs(lng)).toBeLessThanOrEqual(180);
      expect(altitudeKm).toBeCloseTo(500, 6);
      if (prev < 0 && lat >= 0) crossings.push(t);
      maxLat = Math.max(maxLat, lat);
      prev = lat;
    }
    expect(maxLat).toBeCloseTo(180 - orbit.inclinationDeg, 0);
    expect(crossings.length).toBeGreaterThanOrEqual(3);
    for (let i = 1; i < crossings.length; i++) {
      const minutes = (crossings[i]! - crossings[i - 1]!) / 60_000;
      expect(minutes).toBeGreaterThan(93);
      expect(minutes).toBeLessThan(97);
    }
  });

  it('measures elevation from Dongguan: 90° straight overhead, negative below the horizon', () => {
    const o = observerEcef(DONGGUAN_CENTRE);
    const up = o.map((c) => (c * (EARTH_RADIUS_KM + 500)) / EARTH_RADIUS_KM) as [number, number, number];
    expect(elevationDeg(DONGGUAN_CENTRE, up)).toBeCloseTo(90, 5);
    expect(elevationDeg(DONGGUAN_CENTRE, [-up[0], -up[1], -up[2]])).toBeCloseTo(-90, 5);
  });

  it('spends part of each orbit in the Earth’s shadow (not a dawn–dusk orbit)', () => {
    const t0 = Date.UTC(2026, 3, 1);
    let dark = 0;
    const n = 570;
    for (let i = 0; i < n; i++) {
      const st = orbitState(orbit, t0 + i * 10_000);
      if (st.eclipsed) dark++;
      // the analytic shadow arc agrees with the geometric test
      expect(st.eclipsed).toBe(Math.abs(st.sunPhase) < st.eclipseHalfAngle);
    }
    expect(dark / n).toBeGreaterThan(0.25);
    expect(dark / n).toBeLessThan(0.42);
  });
});
