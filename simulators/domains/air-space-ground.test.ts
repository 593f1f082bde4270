import { describe, expect, it } from 'vitest';
import { DRONE_CORRIDORS, GROUND_STATION_SITES, inDongguan } from '../dongguan.ts';
import { elevationDeg, orbitState } from '../orbit.ts';
import { droneModel, droneState, groundStationModel, planDrone, satelliteModel, satelliteOrbit } from './air-space-ground.ts';

const SEED = 20260101;
const T0 = Date.UTC(2026, 9, 20, 2); // dry season: few rain-grounded sorties

describe('satellites', () => {
  const orbit = satelliteOrbit(SEED, 0);
  const model = satelliteModel(orbit, 99);

  it('circle the Earth about every 95 minutes at ~500 km, sun-synchronous', () => {
    expect(orbit.altitudeKm).toBeGreaterThan(470);
    expect(orbit.altitudeKm).toBeLessThan(550);
    expect(orbit.inclinationDeg).toBeGreaterThan(97);
    expect(orbit.inclinationDeg).toBeLessThan(98);
    const crossings: number[] = [];
    let prev = model(T0).position!.lat;
    for (let t = T0 + 5_000; t < T0 + 5 * 3600_000; t += 5_000) {
      const r = model(t);
      if (prev < 0 && r.position!.lat >= 0) crossings.push(t);
      prev = r.position!.lat;
      expect(r.values.velocity).toBeGreaterThan(7.5);
      expect(r.values.velocity).toBeLessThan(7.7);
    }
    const periods = crossings.slice(1).map((c, i) => (c - crossings[i]!) / 60_000);
    expect(periods.length).toBeGreaterThanOrEqual(2);
    for (const p of periods) expect(Math.abs(p - 94.7)).toBeLessThan(1.5);
  });

  it('rise above Dongguan’s horizon now and then, and run down their battery in eclipse', () => {
    let above = 0;
    let n = 0;
    let darkBattery = 0;
    let dark = 0;
    let litBattery = 0;
    let lit = 0;
    for (let t = T0; t < T0 + 2 * 86_400_000; t += 20_000) {
      const r = model(t);
      n++;
      if (r.values.elevation! > 0) above++;
      if (orbitState(orbit, t).eclipsed) {
        dark++;
        darkBattery += r.values.battery!;
      } else {
        lit++;
        litBattery += r.values.battery!;
      }
    }
    expect(above).toBeGreaterThan(0);
    expect(above / n).toBeLessThan(0.1);
    expect(darkBattery / dark).toBeLessThan(litBattery / lit);
  });
});

describe('drones', () => {
  const corridor = DRONE_CORRIDORS.find((c) => c.id === 'songshan-lake')!;
  const plan = planDrone(corridor, 5);

  it('fly patrol sorties at 50–120 m over their corridor, draining the battery, then swap it', () => {
    const model = droneModel(plan, SEED, 5);
    let flying = 0;
    let minBattery = 100;
    let swapped = false;
    let prevBattery = 100;
    for (let t = T0; t < T0 + 3 * plan.cycleMs; t += 5_000) {
      const st = droneState(plan, SEED, 5, t);
      const r = model(t);
      expect(inDongguan(r.position!)).toBe(true);
      if (st.phase === 'patrol') {
        flying++;
        expect(r.position!.alt).toBeGreaterThanOrEqual(50);
        expect(r.position!.alt).toBeLessThanOrEqual(120);
        expect(r.values.speed).toBeGreaterThan(5);
      }
      if (st.phase === 'swap' || st.phase === 'preflight') expect(r.values.speed).toBe(0);
      if (st.battery > prevBattery + 50) swapped = true;
      minBattery = Math.min(minBattery, st.battery);
      prevBattery = st.battery;
    }
    expect(flying).toBeGreaterThan(100);
    expect(minBattery).toBeGreaterThan(20);
    expect(minBattery).toBeLessThan(40);
    expect(swapped).toBe(true);
  });
});

describe('ground stations', () => {
  it('see a strong signal and fast downlink while a satellite passes overhead', () => {
    const site = GROUND_STATION_SITES[0]!;
    const orbit = satelliteOrbit(SEED, 0);
    const model = groundStationModel(SEED, 77, site, [orbit]);
    let pass: number | undefined;
    let idle: number | undefined;
    for (let t = T0; t < T0 + 3 * 86_400_000 && (pass === undefined || idle === undefined); t += 30_000) {
      const el = elevationDeg(site, orbitState(orbit, t).ecef);
      if (el > 30 && pass === undefined) pass = t;
      if (el < -30 && idle === undefined) idle = t;
    }
    expect(pass).toBeDefined();
    const inPass = model(pass!).values;
    const parked = model(idle!).values;
    expect(inPass.signal_strength!).toBeGreaterThan(-90);
    expect(parked.signal_strength!).toBeLessThan(-110);
    expect(inPass.downlink!).toBeGreaterThan(parked.downlink! + 200);
  });
});
