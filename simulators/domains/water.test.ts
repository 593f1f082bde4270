import { describe, expect, it } from 'vitest';
import { DAY_MS, HOUR_MS } from '../clock.ts';
import { RIVERS } from '../dongguan.ts';
import { deviceContext } from '../model.ts';
import { eventVolume, rainEvents } from '../weather.ts';
import { RIVER_SITES, floodRise, pipePressureModel, riverLevelModel, riverStationAt, waterDemand, waterQualityModel } from './water.ts';

const SEED = 20260101;
const SUMMER = Date.UTC(2026, 5, 1);
const reach = (id: string) => RIVERS.find((r) => r.id === id)!;

describe('river level stations', () => {
  it('name every gauging site of the rivers once', () => {
    const labels = RIVER_SITES.map((s) => `${s.reach.zh}${s.reach.points[s.vertex]!.site}段`);
    expect(labels).toContain('东江干流石龙段');
    expect(labels).toContain('东江南支流石碣段');
    expect(new Set(labels).size).toBe(labels.length);
  });

  it('rise some hours after heavy rain and recede again', () => {
    const storm = rainEvents(SEED, SUMMER, SUMMER + 90 * DAY_MS).find((e) => eventVolume(e) > 40)!;
    expect(storm).toBeDefined();
    const at = (h: number) => storm.start + h * HOUR_MS;
    // Dongjiang: the flood peaks about a day later
    expect(floodRise(SEED, at(20), 0.02, 18, 6) - floodRise(SEED, at(0), 0.02, 18, 6)).toBeGreaterThan(0.4);
    expect(floodRise(SEED, at(24 * 7), 0.02, 18, 6)).toBeLessThan(floodRise(SEED, at(20), 0.02, 18, 6));
    // a non-tidal upstream station (Shima River at Fenggang) shows it in its readings, and its rain gauge too
    const station = riverStationAt(reach('shima'), 0, '石马河凤岗段');
    const model = riverLevelModel(SEED, 123, station);
    expect(model(at(8)).values.water_level! - model(at(0)).values.water_level!).toBeGreaterThan(0.5);
    expect(model(at(8)).values.flow_rate!).toBeGreaterThan(model(at(0)).values.flow_rate!);
    const gauge = Math.max(...Array.from({ length: 60 }, (_, i) => model(storm.start + i * 5 * 60_000).values.rainfall_1h!));
    expect(gauge).toBeGreaterThan(2);
  });

  it('feel the tide more near the estuary than upstream', () => {
    const range = (st: ReturnType<typeof riverStationAt>) => {
      const m = riverLevelModel(SEED, 7, st);
      const xs = Array.from({ length: 2 * 24 * 6 }, (_, i) => m(Date.UTC(2026, 0, 10) + i * 10 * 60_000).values.water_level!);
      return Math.max(...xs) - Math.min(...xs);
    };
    const machong = riverStationAt(reach('north-main'), 1e9, '麻涌');
    const qiaotou = riverStationAt(reach('dongjiang'), 0, '桥头');
    expect(range(machong)).toBeGreaterThan(1.0);
    expect(range(qiaotou)).toBeLessThan(0.6);
    expect(machong.hydro.level).toBeLessThan(qiaotou.hydro.level);
  });
});

describe('pipe pressure sensors', () => {
  it('lose pressure and gain flow at the morning peak', () => {
    const m = pipePressureModel(SEED, 55, 600);
    const day = (d: number, h: number) => Date.UTC(2026, 2, 10 + d, h - 8);
    let pNight = 0;
    let pPeak = 0;
    let qNight = 0;
    let qPeak = 0;
    for (let d = 0; d < 10; d++) {
      pNight += m(day(d, 3)).values.pressure!;
      pPeak += m(day(d, 8)).values.pressure!;
      qNight += m(day(d, 3)).values.flow!;
      qPeak += m(day(d, 8)).values.flow!;
    }
    expect(pPeak).toBeLessThan(pNight);
    expect(qPeak).toBeGreaterThan(qNight * 1.5);
    expect(waterDemand(day(0, 3))).toBeLessThan(waterDemand(day(0, 20)));
  });
});

describe('water quality stations', () => {
  it('show more oxygen in the afternoon than before dawn in a lake, and cloudier water after a storm', () => {
    const lake = waterQualityModel(SEED, 9, 'lake');
    let dawn = 0;
    let afternoon = 0;
    for (let d = 0; d < 10; d++) {
      dawn += lake(Date.UTC(2026, 10, 1 + d, 6 - 8)).values.dissolved_oxygen!;
      afternoon += lake(Date.UTC(2026, 10, 1 + d, 16 - 8)).values.dissolved_oxygen!;
    }
    expect(afternoon).toBeGreaterThan(dawn + 5);
    const storm = rainEvents(SEED, SUMMER, SUMMER + 90 * DAY_MS).find((e) => eventVolume(e) > 40)!;
    const canal = waterQualityModel(SEED, 10, 'urban-canal');
    expect(canal(storm.start + 6 * HOUR_MS).values.turbidity!).toBeGreaterThan(canal(storm.start - HOUR_MS).values.turbidity! * 1.5);
  });

  it('differ between a canal and a reservoir', () => {
    const t = Date.UTC(2026, 3, 3, 2);
    const canal = waterQualityModel(SEED, 1, 'urban-canal')(t).values;
    const reservoir = waterQualityModel(SEED, 1, 'reservoir')(t).values;
    expect(canal.ammonia_nitrogen!).toBeGreaterThan(reservoir.ammonia_nitrogen! * 4);
    expect(canal.dissolved_oxygen!).toBeLessThan(reservoir.dissolved_oxygen!);
  });

  it('device contexts give each station its own noise', () => {
    expect(deviceContext(1, 'x', 0, 3).key).not.toBe(deviceContext(1, 'x', 1, 3).key);
  });
});
