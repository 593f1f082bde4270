/** Environment domain: air-quality stations (with the Chinese AQI) and noise monitors. */
import { DAY_MS, HOUR_MS, daylight, localHour, monthly, trafficDemand } from '../clock.ts';
import { AIR_QUALITY_SITES, NOISE_SITES, type Zone } from '../dongguan.ts';
import { pickSite, roundSuffix, spread, subKey, type DeviceFactory, type Model } from '../model.ts';
import { clamp, fractalNoise, hashGauss, hashUnit, round } from '../random.ts';
import { weatherAt } from '../weather.ts';

// ---------------------------------------------------------------------------------------------
// AQI (HJ 633-2012): individual indices from concentration breakpoints; the AQI is the largest.

const IAQI = [0, 50, 100, 150, 200, 300, 400, 500];
/** Breakpoints used for hourly real-time AQI (PM use the 24-hour table, as Chinese real-time AQI does). */
export const AQI_BREAKPOINTS = {
  pm25: [0, 35, 75, 115, 150, 250, 350, 500],
  pm10: [0, 50, 150, 250, 350, 420, 500, 600],
  o3: [0, 160, 200, 300, 400, 800, 1000, 1200],
  no2: [0, 100, 200, 700, 1200, 2340, 3090, 3840],
  so2: [0, 150, 500, 650, 800, 1600, 2100, 2620],
  co: [0, 5, 10, 35, 60, 90, 120, 150],
} as const;

export function iaqi(bp: readonly number[], c: number): number {
  if (c <= 0) return 0;
  for (let i = 1; i < bp.length; i++) {
    if (c <= bp[i]!) return IAQI[i - 1]! + ((IAQI[i]! - IAQI[i - 1]!) * (c - bp[i - 1]!)) / (bp[i]! - bp[i - 1]!);
  }
  return 500;
}

export function aqi(c: { pm25: number; pm10: number; o3: number; no2: number; so2: number; co: number }): number {
  return Math.ceil(Math.max(...(Object.keys(AQI_BREAKPOINTS) as (keyof typeof AQI_BREAKPOINTS)[]).map((k) => iaqi(AQI_BREAKPOINTS[k], c[k]))));
}

// Approximate monthly levels for Dongguan: fine particles worst in winter, ozone worst in autumn.
const PM25_MONTHLY = [42, 38, 33, 28, 24, 18, 16, 18, 24, 32, 38, 44];
const NO2_MONTHLY = [46, 41, 36, 30, 26, 22, 20, 22, 28, 36, 42, 47];
const O3_PEAK_MONTHLY = [75, 85, 95, 110, 125, 110, 105, 125, 165, 170, 135, 95];

const ZONES: Record<Zone, { traffic: number; industry: number; green: number }> = {
  roadside: { traffic: 1.4, industry: 1, green: 0 },
  commercial: { traffic: 1.2, industry: 1, green: 0 },
  residential: { traffic: 1, industry: 1, green: 0.1 },
  industrial: { traffic: 1.1, industry: 1.8, green: 0 },
  park: { traffic: 0.7, industry: 0.9, green: 0.3 },
};

export function airQualityModel(seed: number, key: number, zone: Zone): Model {
  const z = ZONES[zone];
  const kPm = subKey(key, 'pm');
  const kNo2 = subKey(key, 'no2');
  const kO3 = subKey(key, 'o3');
  const kSo2 = subKey(key, 'so2');
  const kCo = subKey(key, 'co');
  const local = 0.9 + 0.2 * hashUnit(key, 1);
  return (t) => {
    const w = weatherAt(seed, t, key);
    const traffic = trafficDemand(t - 0.5 * HOUR_MS); // pollution lags the traffic a little
    const h = localHour(t);
    // shallow night-time boundary layer and calm air hold pollution; rain washes particles out
    const stagnation = (1.25 - 0.07 * w.wind) * (1 + 0.15 * Math.cos((2 * Math.PI * (h - 3)) / 24));
    const washout = 1 - 0.55 * Math.min(1, w.rain1h / 6 + w.rainRate / 10);
    const episode = Math.exp(0.45 * fractalNoise(subKey(seed, 'pm-episode'), t, 2 * DAY_MS) + 0.1 * fractalNoise(kPm, t, 6 * HOUR_MS));

    const pm25 = monthly(PM25_MONTHLY, t) * local * z.industry ** 0.3 * (1 - z.green) * (0.7 + 0.45 * traffic * z.traffic) * stagnation * washout * episode * (1 + 0.04 * hashGauss(kPm, t));
    const pm10 = pm25 * (1.5 + 0.25 * hashUnit(key, 2)) + 8 * (z.industry - 1) + 2 * hashGauss(kPm, t, 1);
    const no2 = monthly(NO2_MONTHLY, t) * local * z.traffic * (0.45 + 0.85 * traffic) * stagnation * (1 + 0.12 * fractalNoise(kNo2, t, 3 * HOUR_MS)) * (1 + 0.05 * hashGauss(kNo2, t));
    const sun = daylight(t - 2 * HOUR_MS) ** 1.4; // ozone builds up through the sunny afternoon
    const o3 =
      monthly(O3_PEAK_MONTHLY, t) * (1 + z.green) * (0.18 + 0.82 * sun) * (1 - 0.45 * Math.min(1, w.rain1h / 5)) * Math.exp(0.3 * fractalNoise(kO3, t, DAY_MS)) -
      0.25 * no2 * (1 - sun) +
      2 * hashGauss(kO3, t);
    const so2 = 7 * z.industry * (0.8 + 0.3 * traffic) * (1 + 0.25 * fractalNoise(kSo2, t, 6 * HOUR_MS)) * (1 + 0.05 * hashGauss(kSo2, t));
    const co = (0.55 + 0.15 * monthly([1, 0.9, 0.7, 0.5, 0.3, 0.1, 0, 0.1, 0.3, 0.6, 0.8, 1], t)) * (0.8 + 0.45 * traffic * z.traffic) * stagnation * (1 + 0.04 * hashGauss(kCo, t));

    const c = {
      pm25: round(clamp(pm25, 1, 1000), 1),
      pm10: round(clamp(pm10, 2, 2000), 1),
      o3: round(clamp(o3, 2, 1200), 1),
      no2: round(clamp(no2, 1, 3840), 1),
      so2: round(clamp(so2, 1, 2620), 1),
      co: round(clamp(co, 0.1, 150), 2),
    };
    return {
      values: {
        aqi: clamp(aqi(c), 0, 500),
        ...c,
        temperature: round(clamp(w.temperature, -30, 60), 1),
        humidity: round(clamp(w.humidity, 0, 100), 1),
      },
    };
  };
}

export const airQualityStation: DeviceFactory = (ctx) => {
  const { site, round: r } = pickSite(AIR_QUALITY_SITES, ctx);
  return { label: `${site.zh}${roundSuffix(r)}`, location: spread(site, ctx, r), model: airQualityModel(ctx.seed, ctx.key, site.zone) };
};

// ---------------------------------------------------------------------------------------------
// Noise monitors

/** Typical levels (dB(A)) by zone: busy daytime hour and quiet night hour. */
const NOISE_LEVELS: Record<Zone, { day: number; night: number }> = {
  roadside: { day: 71, night: 60 },
  commercial: { day: 63, night: 52 },
  residential: { day: 56, night: 45 },
  industrial: { day: 64, night: 56 },
  park: { day: 52, night: 42 },
};

export function noiseModel(seed: number, key: number, zone: Zone): Model {
  const level = NOISE_LEVELS[zone];
  const k = subKey(key, 'noise');
  const offset = 3 * (hashUnit(key, 1) - 0.5);
  return (t) => {
    const activity = Math.sqrt(trafficDemand(t));
    let db = level.night + (level.day - level.night) * activity + offset + 1.5 * fractalNoise(k, t, 2 * HOUR_MS) + 1.2 * hashGauss(k, t);
    // daytime construction near some sites (weekdays 08:00–18:00, on some days)
    const h = localHour(t);
    const day = Math.floor(t / DAY_MS);
    if (zone !== 'park' && h >= 8 && h < 18 && hashUnit(key, 2, day) < 0.25) db += 6 + 4 * fractalNoise(k, t, 15 * 60_000);
    // the odd horn, siren or motorbike
    if (hashUnit(k, t, 3) < 0.04) db += 6 + 8 * hashUnit(k, t, 4);
    db += Math.min(4, weatherAt(seed, t).rainRate * 0.4); // rain on the microphone's surroundings
    return { values: { noise: round(clamp(db, 25, 130), 1) } };
  };
}

export const noiseMonitor: DeviceFactory = (ctx) => {
  const { site, round: r } = pickSite(NOISE_SITES, ctx);
  return { label: `${site.zh}${roundSuffix(r)}`, location: spread(site, ctx, r), model: noiseModel(ctx.seed, ctx.key, site.zone) };
};

export const environmentFactories = {
  'air-quality-station': airQualityStation,
  'noise-monitor': noiseMonitor,
} satisfies Record<string, DeviceFactory>;
