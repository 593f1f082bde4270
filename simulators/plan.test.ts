import { describe, expect, it } from 'vitest';
import { DAY_MS } from './clock.ts';
import { inDongguan } from './dongguan.ts';
import { SIMULATED_TYPES, nthReading, planFleet, readingAt, reportTime, toPayload } from './plan.ts';

const SEED = 20260101;
const YEAR = Date.UTC(2026, 0, 1);
/** Times spread over a year, at every hour of the day and every season. */
const sampleTimes = (n: number, offset = 0) => Array.from({ length: n }, (_, i) => YEAR + Math.floor(i * ((365 * DAY_MS) / n) + ((i * 7_919_000) % DAY_MS) + offset));

describe('fleet plan', () => {
  it('covers the ten built-in types of the four domains', () => {
    expect(SIMULATED_TYPES.sort()).toEqual(
      ['air-quality-station', 'bus', 'drone', 'ground-station', 'noise-monitor', 'pipe-pressure-sensor', 'river-level-station', 'satellite', 'traffic-detector', 'water-quality-station'].sort(),
    );
    const fleet = planFleet({ seed: SEED, devicesPerType: 3 });
    expect(fleet).toHaveLength(30);
    expect(new Set(fleet.map((d) => d.domain))).toEqual(new Set(['water', 'environment', 'traffic', 'air-space-ground']));
    expect(fleet.find((d) => d.type === 'river-level-station')!.name).toMatch(/^sim-water-river-level-station-001 \S+段$/);
  });

  it('is the same for the same seed: names, places, phases and readings', () => {
    const a = planFleet({ seed: SEED, devicesPerType: 4 });
    const b = planFleet({ seed: SEED, devicesPerType: 4 });
    const strip = (f: typeof a) => f.map(({ name, type, location, phase }) => ({ name, type, location, phase }));
    expect(strip(b)).toEqual(strip(a));
    const times = sampleTimes(40);
    for (let i = 0; i < a.length; i++) for (const t of times) expect(readingAt(b[i]!, t)).toEqual(readingAt(a[i]!, t));
  });

  it('differs for another seed', () => {
    const a = planFleet({ seed: SEED, devicesPerType: 3 });
    const c = planFleet({ seed: SEED + 1, devicesPerType: 3 });
    const times = sampleTimes(10);
    const same = a.filter((d, i) => times.every((t) => JSON.stringify(readingAt(d, t)) === JSON.stringify(readingAt(c[i]!, t))));
    expect(same).toEqual([]);
    expect(c.map((d) => d.name)).not.toEqual(a.map((d) => d.name));
  });

  it('a device is the same whatever the size of the fleet (its index decides)', () => {
    const small = planFleet({ seed: SEED, devicesPerType: 2, types: ['bus', 'river-level-station'] });
    const large = planFleet({ seed: SEED, devicesPerType: 9 });
    for (const d of small) {
      const twin = large.find((x) => x.name === d.name)!;
      expect(twin).toBeDefined();
      expect(readingAt(twin, YEAR + 12345)).toEqual(readingAt(d, YEAR + 12345));
    }
  });

  it('names are unique, printable and fit the registry, also for big fleets', () => {
    const fleet = planFleet({ seed: 3, devicesPerType: 60 });
    const names = fleet.map((d) => d.name);
    expect(new Set(names).size).toBe(names.length);
    for (const n of names) {
      expect(n.length).toBeLessThanOrEqual(200);
      // eslint-disable-next-line no-control-regex
      expect(n).not.toMatch(/[\u0000-\u001f\u007f]/);
    }
  });

  it('rejects types it cannot simulate', () => {
    expect(() => planFleet({ seed: 1, devicesPerType: 1, types: ['generic'] })).toThrow(/no simulator/);
  });

  it('spreads a type’s devices over the reporting interval', () => {
    const fleet = planFleet({ seed: SEED, devicesPerType: 10, types: ['noise-monitor'] });
    const slots = new Set(fleet.map((d) => Math.floor(d.phase * 5)));
    expect(slots.size).toBe(5);
    const d = fleet[0]!;
    expect(reportTime(d, 3, 2000, 1000)).toBe(1000 + 6000 + Math.floor(d.phase * 2000));
    expect(nthReading(d, 3, { intervalMs: 2000, startMs: 1000 })).toEqual(readingAt(d, reportTime(d, 3, 2000, 1000)));
  });
});

describe('fleet readings', () => {
  // 20 per type: more devices than named sites, so reused and extra sites are covered too
  const fleet = planFleet({ seed: SEED, devicesPerType: 20 });

  it('every value of every device stays within its type’s declared range, all year round', () => {
    const times = sampleTimes(300);
    const problems: string[] = [];
    for (const d of fleet) {
      const keys = Object.keys(d.deviceType.keys).sort();
      for (const t of times) {
        const { values } = d.model(t); // the raw model, before the fleet's safety clamp
        if (Object.keys(values).sort().join() !== keys.join()) problems.push(`${d.name}: keys ${Object.keys(values).join()}`);
        for (const [k, v] of Object.entries(values)) {
          const decl = d.deviceType.keys[k]!;
          if (!Number.isFinite(v) || v < decl.min! || v > decl.max!) problems.push(`${d.name} @${new Date(t).toISOString()}: ${k}=${v}`);
        }
      }
    }
    expect(problems.slice(0, 10)).toEqual([]);
  });

  it('values move: no key is stuck at one value', () => {
    const times = sampleTimes(120, 17_000);
    for (const type of SIMULATED_TYPES) {
      const d = fleet.find((x) => x.type === type)!;
      const seen: Record<string, Set<number>> = {};
      for (const t of times) for (const [k, v] of Object.entries(d.model(t).values)) (seen[k] ??= new Set()).add(v);
      for (const [k, set] of Object.entries(seen)) expect(set.size, `${type}.${k}`).toBeGreaterThan(3);
    }
  });

  it('fixed devices, buses and drones are in Dongguan; satellites are on a plausible orbit', () => {
    const times = sampleTimes(150, 3_000);
    for (const d of fleet) {
      if (!d.moving) {
        expect(d.location, d.name).toBeDefined();
        expect(inDongguan(d.location!), d.name).toBe(true);
        continue;
      }
      expect(d.location).toBeUndefined();
      for (const t of times) {
        const p = d.model(t).position!;
        expect(p, d.name).toBeDefined();
        if (d.type === 'satellite') {
          expect(Math.abs(p.lat)).toBeLessThanOrEqual(90);
          expect(Math.abs(p.lng)).toBeLessThanOrEqual(180);
          expect(p.alt).toBeGreaterThan(450_000);
          expect(p.alt).toBeLessThan(560_000);
        } else {
          expect(inDongguan(p), `${d.name} at ${JSON.stringify(p)}`).toBe(true);
          if (d.type === 'drone') {
            expect(p.alt).toBeGreaterThanOrEqual(0);
            expect(p.alt).toBeLessThanOrEqual(120);
          } else expect(p.alt).toBeUndefined();
        }
      }
    }
  });

  it('payloads are ThingsBoard {ts, values} with the position keys of moving devices', () => {
    const drone = fleet.find((d) => d.type === 'drone')!;
    const p = toPayload(readingAt(drone, YEAR + 1000.4));
    expect(p.ts).toBe(YEAR + 1000);
    expect(Object.keys(p.values)).toEqual(expect.arrayContaining(['latitude', 'longitude', 'altitude', 'battery', 'speed', 'heading', 'signal']));
    const station = fleet.find((d) => d.type === 'air-quality-station')!;
    expect(Object.keys(toPayload(readingAt(station, YEAR)).values)).not.toContain('latitude');
  });
});
