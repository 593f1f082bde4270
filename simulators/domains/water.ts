/**
 * Water domain: river level stations on the Dongjiang and its branches, pressure points of the
 * drinking-water network, water-quality stations on rivers, canals, lakes and reservoirs.
 */
import { DAY_MS, HOUR_MS, daylight, hourBump, localHour, monthly } from '../clock.ts';
import { PIPE_SITES, RIVERS, WATER_QUALITY_SITES, type ReachEnd, type RiverReach, type WaterBody } from '../dongguan.ts';
import { Polyline, type LatLng } from '../geometry.ts';
import { pickSite, roundSuffix, spread, subKey, type DeviceFactory, type Model } from '../model.ts';
import { clamp, fractalNoise, hashGauss, hashUnit, round } from '../random.ts';
import { eventVolume, rainEvents, rainLastHour, weatherAt } from '../weather.ts';

// ---------------------------------------------------------------------------------------------
// River level stations

export interface RiverStation {
  reach: RiverReach;
  position: LatLng;
  /** Hydraulic parameters at the station, interpolated along the reach. */
  hydro: ReachEnd;
  label: string;
}

function interpolateEnds(a: ReachEnd, b: ReachEnd, f: number): ReachEnd {
  const mix = (x: number, y: number) => x + (y - x) * f;
  return { level: mix(a.level, b.level), tide: mix(a.tide, b.tide), flow: mix(a.flow, b.flow), tideLagH: mix(a.tideLagH, b.tideLagH) };
}

/** Named gauging sites: vertices of the reaches that carry a site name. */
export const RIVER_SITES: { reach: RiverReach; vertex: number }[] = RIVERS.flatMap((reach) =>
  reach.points.flatMap((pt, vertex) => (pt.site === undefined ? [] : [{ reach, vertex }])),
);

const reachLines = new Map(RIVERS.map((r) => [r.id, new Polyline(r.points)]));

/** The station on `reach` at `distance` metres from its upstream end. */
export function riverStationAt(reach: RiverReach, distanceM: number, label: string): RiverStation {
  const line = reachLines.get(reach.id)!;
  const f = clamp(distanceM / line.length, 0, 1);
  const at = line.at(distanceM);
  return { reach, position: { lat: at.lat, lng: at.lng }, hydro: interpolateEnds(reach.upstream, reach.downstream, f), label };
}

// Tidal constituents (hours): principal lunar M2, principal solar S2 (together: spring/neap), lunisolar K1.
const M2_H = 12.4206;
const S2_H = 12;
const K1_H = 23.9345;

/** Tide at a station, as a fraction of its typical half-range (roughly -1.3 … 1.3). */
export function tideFactor(t: number, lagH: number): number {
  const h = t / HOUR_MS - lagH;
  return 0.8 * Math.cos((2 * Math.PI * h) / M2_H) + 0.3 * Math.cos((2 * Math.PI * h) / S2_H + 1.1) + 0.25 * Math.cos((2 * Math.PI * h) / K1_H + 0.4);
}

/** Wet-season rise of the river, m (low in the dry winter, high in June–August). */
const SEASONAL_STAGE = [-0.55, -0.55, -0.4, -0.05, 0.35, 0.75, 0.7, 0.6, 0.3, -0.1, -0.4, -0.55];

/**
 * Flood rise from recent rain on the basin, m: each rain event adds a unit hydrograph that peaks
 * `peakH` hours after the rain (small rivers within hours, the Dongjiang within about a day) and
 * recedes over days. Saturates so an extreme storm gives metres, not tens of metres.
 */
export function floodRise(seed: number, t: number, metresPerMm: number, peakH: number, maxRise: number): number {
  let sum = 0;
  for (const e of rainEvents(seed, t - 8 * DAY_MS, t + 1)) {
    const x = (t - e.start - (e.durationH / 2) * HOUR_MS) / (peakH * HOUR_MS);
    if (x > 0) sum += eventVolume(e) * metresPerMm * x * Math.exp(1 - x);
  }
  return maxRise * (1 - Math.exp(-sum / maxRise));
}

export function riverLevelModel(seed: number, key: number, station: RiverStation): Model {
  const { hydro } = station;
  const small = hydro.flow < 100;
  const metresPerMm = small ? 0.045 : 0.022 - 0.01 * Math.min(1, hydro.tide / 0.85);
  const peakH = small ? 4 + 3 * hashUnit(key, 3) : 16 + 10 * hashUnit(key, 3);
  const maxRise = small ? 4 : 6;
  const kLevel = subKey(key, 'water_level');
  const kBattery = subKey(key, 'battery');
  const tidality = Math.min(1, hydro.tide / 0.85);
  return (t) => {
    const tide = hydro.tide * tideFactor(t, hydro.tideLagH);
    const fluvial = monthly(SEASONAL_STAGE, t) * (small ? 0.6 : 1) + floodRise(seed, t, metresPerMm, peakH, maxRise);
    const waterLevel = hydro.level + fluvial + tide + 0.04 * fractalNoise(kLevel, t, 20 * 60_000) + 0.006 * hashGauss(kLevel, t);
    // Rating curve on the river's own stage; the flood tide holds the water back downstream.
    const depthScale = small ? 1.2 : 2.2;
    const q = hydro.flow * Math.max(0.15, 1 + fluvial / depthScale) ** 2.2 * (1 - 0.35 * tidality * Math.tanh(tideFactor(t, hydro.tideLagH)));
    const flow = q * (1 + 0.02 * hashGauss(kLevel, t, 1));
    // Solar panel: charges in daylight (a little behind the sun), sags overnight and in long rain.
    const battery = 82 + 14 * daylight(t - 2 * HOUR_MS) - 6 * Math.max(0, fractalNoise(kBattery, t, DAY_MS)) + 0.3 * hashGauss(kBattery, t);
    return {
      values: {
        water_level: round(clamp(waterLevel, -10, 60), 3),
        flow_rate: round(clamp(flow, 0, 30000), 1),
        rainfall_1h: round(clamp(rainLastHour(seed, t, key), 0, 400), 1),
        battery: round(clamp(battery, 0, 100), 1),
      },
    };
  };
}

export const riverLevelStation: DeviceFactory = (ctx) => {
  let station: RiverStation;
  if (ctx.index < RIVER_SITES.length) {
    const { site } = pickSite(RIVER_SITES, ctx);
    const line = reachLines.get(site.reach.id)!;
    const name = site.reach.points[site.vertex]!.site!;
    station = riverStationAt(site.reach, line.cumulative[site.vertex]!, `${site.reach.zh}${name}段`);
  } else {
    // more stations than named sites: anywhere along a reach, named by its chainage
    const reach = RIVERS[Math.floor(hashUnit(ctx.key, 10) * RIVERS.length)]!;
    const line = reachLines.get(reach.id)!;
    const d = line.length * (0.03 + 0.94 * hashUnit(ctx.key, 11));
    station = riverStationAt(reach, d, `${reach.zh} K${(d / 1000).toFixed(1)}`);
  }
  return { label: station.label, location: station.position, model: riverLevelModel(ctx.seed, ctx.key, station) };
};

// ---------------------------------------------------------------------------------------------
// Pipe pressure sensors

/** Drinking-water demand by hour, relative to the daily mean (night minimum, morning and evening peaks). */
export function waterDemand(t: number): number {
  const h = localHour(t);
  return 0.42 + 0.9 * hourBump(h, 7.5, 1.3) + 0.45 * hourBump(h, 12, 1.5) + 1.0 * hourBump(h, 19.8, 1.9) + 0.2 * hourBump(h, 15, 2.5);
}

const WATER_TEMPERATURE = [17, 17.5, 19.5, 23, 26.5, 28.5, 30, 30, 29, 26.5, 22.5, 19];

export function pipePressureModel(seed: number, key: number, dn: number): Model {
  const areaM2 = Math.PI * (dn / 2000) ** 2;
  const meanFlow = 0.55 * areaM2 * 3600 * (0.8 + 0.4 * hashUnit(key, 1)); // m³/h at ~0.55 m/s
  const staticPressure = 0.36 + 0.08 * hashUnit(key, 2); // MPa at zero demand
  const kP = subKey(key, 'pressure');
  const kQ = subKey(key, 'flow');
  const kT = subKey(key, 'water_temp');
  const installOffsetDays = 730 * hashUnit(key, 3);
  return (t) => {
    const demand = waterDemand(t) * (1 + 0.08 * fractalNoise(kQ, t, 3 * HOUR_MS));
    // a burst or leak now and then: a day has a small chance of one, lasting a few hours
    const day = Math.floor(t / DAY_MS);
    let burst = 0;
    if (hashUnit(key, 4, day) < 0.03) {
      const start = day * DAY_MS + hashUnit(key, 5, day) * DAY_MS;
      const len = (1 + 4 * hashUnit(key, 6, day)) * HOUR_MS;
      if (t >= start && t < start + len) burst = 1;
    }
    const flow = meanFlow * demand * (1 + 0.35 * burst) * (1 + 0.015 * hashGauss(kQ, t));
    const pressure = staticPressure - 0.075 * demand ** 2 - 0.07 * burst + 0.006 * fractalNoise(kP, t, 30 * 60_000) + 0.002 * hashGauss(kP, t);
    const temp = monthly(WATER_TEMPERATURE, t) + 0.4 * Math.sin((2 * Math.PI * (localHour(t) - 10)) / 24) + 0.6 * fractalNoise(kT, t, 2 * DAY_MS);
    const battery = 100 - ((t / DAY_MS + installOffsetDays) % 730) * 0.12; // a lithium cell swapped every two years
    return {
      values: {
        pressure: round(clamp(pressure, 0, 4), 4),
        flow: round(clamp(flow, 0, 20000), 1),
        water_temp: round(clamp(temp, -5, 60), 2),
        battery: round(clamp(battery, 0, 100), 1),
      },
    };
  };
}

export const pipePressureSensor: DeviceFactory = (ctx) => {
  const { site, round: r } = pickSite(PIPE_SITES, ctx);
  return {
    label: `${site.zh} DN${site.dn}${roundSuffix(r)}`,
    location: spread(site, ctx, r),
    model: pipePressureModel(ctx.seed, ctx.key, site.dn),
  };
};

// ---------------------------------------------------------------------------------------------
// Water quality stations

interface QualityBaseline {
  ph: number;
  dissolvedOxygen: number;
  turbidity: number;
  ammonia: number;
  /** How strongly algae drive the day/night swing of pH and oxygen. */
  photosynthesis: number;
  /** How strongly rain runoff shows (urban canals: first flush). */
  runoff: number;
}

const BASELINES: Record<WaterBody, QualityBaseline> = {
  river: { ph: 7.2, dissolvedOxygen: 7.0, turbidity: 18, ammonia: 0.35, photosynthesis: 0.4, runoff: 1 },
  'tidal-river': { ph: 7.3, dissolvedOxygen: 5.8, turbidity: 30, ammonia: 0.6, photosynthesis: 0.4, runoff: 0.8 },
  'urban-canal': { ph: 7.1, dissolvedOxygen: 3.6, turbidity: 25, ammonia: 2.2, photosynthesis: 0.7, runoff: 1.8 },
  lake: { ph: 7.8, dissolvedOxygen: 8.0, turbidity: 7, ammonia: 0.3, photosynthesis: 1, runoff: 0.5 },
  reservoir: { ph: 7.5, dissolvedOxygen: 8.3, turbidity: 4, ammonia: 0.15, photosynthesis: 0.6, runoff: 0.4 },
};

/** Recent rain runoff, mm-weighted with a 12-hour memory. */
function runoffIndex(seed: number, t: number): number {
  let r = 0;
  for (const e of rainEvents(seed, t - 3 * DAY_MS, t + 1)) {
    const age = (t - e.start) / HOUR_MS;
    if (age > 0) r += eventVolume(e) * Math.min(1, age / 1.5) * Math.exp(-age / 12);
  }
  return r;
}

export function waterQualityModel(seed: number, key: number, body: WaterBody): Model {
  const b = BASELINES[body];
  const kPh = subKey(key, 'ph');
  const kDo = subKey(key, 'dissolved_oxygen');
  const kTu = subKey(key, 'turbidity');
  const kNh = subKey(key, 'ammonia_nitrogen');
  return (t) => {
    const photo = daylight(t - 2 * HOUR_MS) - 0.35; // algae: oxygen and pH rise through the afternoon
    const runoff = runoffIndex(seed, t) * b.runoff;
    const warm = weatherAt(seed, t).temperature - 22;
    const ph = b.ph + 0.35 * b.photosynthesis * photo - 0.004 * runoff + 0.08 * fractalNoise(kPh, t, DAY_MS) + 0.01 * hashGauss(kPh, t);
    const dOxygen = b.dissolvedOxygen + 1.8 * b.photosynthesis * photo - 0.09 * warm - 0.012 * runoff + 0.3 * fractalNoise(kDo, t, DAY_MS) + 0.03 * hashGauss(kDo, t);
    const turbidity = b.turbidity * (1 + 0.06 * runoff) * (1 + 0.2 * fractalNoise(kTu, t, 6 * HOUR_MS)) * (1 + 0.03 * hashGauss(kTu, t));
    const ammonia = b.ammonia * (1 + 0.015 * runoff) * (1 + 0.25 * fractalNoise(kNh, t, DAY_MS)) * (1 + 0.02 * hashGauss(kNh, t));
    return {
      values: {
        ph: round(clamp(ph, 5.5, 9.5), 2),
        dissolved_oxygen: round(clamp(dOxygen, 0.3, 18), 2),
        turbidity: round(clamp(turbidity, 0.3, 3000), 1),
        ammonia_nitrogen: round(clamp(ammonia, 0.02, 30), 3),
      },
    };
  };
}

export const waterQualityStation: DeviceFactory = (ctx) => {
  const { site, round: r } = pickSite(WATER_QUALITY_SITES, ctx);
  return {
    label: `${site.zh}${roundSuffix(r)}`,
    location: spread(site, ctx, r, 800),
    model: waterQualityModel(ctx.seed, ctx.key, site.body),
  };
};

export const waterFactories = {
  'river-level-station': riverLevelStation,
  'pipe-pressure-sensor': pipePressureSensor,
  'water-quality-station': waterQualityStation,
} satisfies Record<string, DeviceFactory>;
