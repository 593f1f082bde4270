import { describe, expect, it } from 'vitest';
import { BUS_ROUTES } from '../dongguan.ts';
import { distance } from '../geometry.ts';
import { busModel, busState, planBus, trafficDetectorModel } from './traffic.ts';

const SEED = 20260101;
const KEY = 4242;

describe('buses', () => {
  const route = BUS_ROUTES.find((r) => r.id === 'L1')!;
  const plan = planBus(route, KEY);
  const t0 = Date.UTC(2026, 4, 12, 1); // 09:00 local

  it('advance along their route while driving, at realistic speeds', () => {
    // find a moment when the bus is driving
    let t = t0;
    while (busState(plan, KEY, t).stopped) t += 5_000;
    const a = busState(plan, KEY, t);
    const b = busState(plan, KEY, t + 10_000);
    expect(b.trip).toBe(a.trip);
    expect(b.along).toBeGreaterThan(a.along);
    expect(b.along - a.along).toBeLessThan((65 / 3.6) * 10);
    expect(distance(a, b)).toBeGreaterThan(0);
  });

  it('run a whole trip: never backwards, stopping at every stop, from terminus to terminus', () => {
    const start = busState(plan, KEY, t0).trip + 1;
    const departure = Date.UTC(2026, 0, 1) + plan.offsetMs + start * plan.cycleMs;
    let prev = -1;
    const served = new Set<number>();
    let maxKmh = 0;
    for (let t = departure; t < departure + plan.cycleMs; t += 2_000) {
      const st = busState(plan, KEY, t);
      expect(st.trip).toBe(start);
      expect(st.along).toBeGreaterThanOrEqual(prev);
      prev = st.along;
      if (st.stopped) {
        served.add(st.lastStop);
        expect(st.speed).toBe(0);
      }
      maxKmh = Math.max(maxKmh, st.speed * 3.6);
    }
    expect(prev).toBeCloseTo(plan.lines[start % 2]!.length, 0);
    expect(served.size).toBe(plan.stops[0].length - 1); // every stop after the departure terminus
    expect(maxKmh).toBeGreaterThan(20);
    expect(maxKmh).toBeLessThanOrEqual(60);
  });

  it('alternate direction, empty at the terminus, battery draining with distance', () => {
    const a = busState(plan, KEY, t0);
    const b = busState(plan, KEY, t0 + plan.cycleMs);
    expect(b.direction).not.toBe(a.direction);
    const departure = Date.UTC(2026, 0, 1) + plan.offsetMs + (a.trip + 1) * plan.cycleMs;
    const end = busState(plan, KEY, departure - 1_000); // end of the layover of trip a
    expect(end.passengers).toBe(0);
    expect(end.stopped).toBe(true);
    const m = busModel(plan, KEY);
    const early = m(departure + 5 * 60_000).values;
    const late = m(departure + 25 * 60_000).values;
    expect(late.battery_soc!).toBeLessThan(early.battery_soc!);
  });

  it('carry more passengers at rush hour than at night', () => {
    const m = busModel(plan, KEY);
    const avg = (h: number) => {
      let sum = 0;
      for (let d = 0; d < 20; d++) for (let i = 0; i < 6; i++) sum += m(Date.UTC(2026, 2, 2 + d, h - 8, i * 10)).values.passengers!;
      return sum / 120;
    };
    expect(avg(8)).toBeGreaterThan(2 * avg(2));
  });
});

describe('traffic detectors', () => {
  it('count more and slower traffic at the evening peak than at night', () => {
    const m = trafficDetectorModel(SEED, 3, 'expressway', 6);
    let peakCount = 0;
    let nightCount = 0;
    let peakSpeed = 0;
    let nightSpeed = 0;
    for (const d of [2, 3, 4, 5, 6]) {
      const peak = m(Date.UTC(2026, 2, d, 18 - 8)).values;
      const night = m(Date.UTC(2026, 2, d, 3 - 8)).values;
      peakCount += peak.vehicle_count!;
      nightCount += night.vehicle_count!;
      peakSpeed += peak.avg_speed!;
      nightSpeed += night.avg_speed!;
    }
    expect(peakCount).toBeGreaterThan(4 * nightCount);
    expect(peakSpeed).toBeLessThan(nightSpeed);
  });
});
