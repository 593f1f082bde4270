/**
 * One shared, seeded weather for simulated Dongguan, a pure function of time: rain events,
 * temperature, humidity and wind. River stations, air-quality stations and ground stations all
 * see the same rain, so a storm shows up everywhere at once (rain gauges, then river levels a
 * few hours later, cleaner air, rain fade on satellite links).
 *
 * Climate: humid subtropical monsoon. Monthly normals are approximate values for Dongguan.
 */
import { HOUR_MS, localHour, monthly } from './clock.ts';
import { clamp, fractalNoise, hash, hashGauss, hashString, hashUnit } from './random.ts';

const RAIN = hashString('weather/rain');
const TEMP = hashString('weather/temperature');
const HUMID = hashString('weather/humidity');
const WIND = hashString('weather/wind');

/** Rain events start at a random moment inside 3-hour slots; each slot holds at most one. */
const SLOT_MS = 3 * HOUR_MS;
const MAX_DURATION_H = 4;

/** Days with rain per month (approximate), turned into the chance that a 3-hour slot starts an event. */
const RAIN_DAYS = [7, 11, 14, 15, 19, 21, 18, 18, 14, 6, 5, 5];
/** Median peak intensity of an event (mm/h): drizzle in winter, convective storms in summer. */
const PEAK_MEDIAN = [2.5, 3, 4, 7, 10, 12, 12, 12, 10, 6, 3.5, 2.5];

const TEMPERATURE_NORMAL = [14.2, 15.6, 18.6, 22.6, 26.2, 28.0, 28.9, 28.6, 27.6, 25.0, 20.6, 16.0];
const DIURNAL_RANGE = [8.4, 7.6, 6.6, 6.0, 6.0, 5.6, 6.4, 6.4, 6.6, 7.2, 8.0, 8.6];
const HUMIDITY_NORMAL = [72, 78, 81, 83, 82, 83, 80, 80, 76, 70, 68, 66];

export interface RainEvent {
  /** Identifies the event (its slot); used to vary its strength from place to place. */
  id: number;
  start: number;
  durationH: number;
  /** Peak intensity in mm/h. */
  peak: number;
}

/** The rain event that starts in slot `slot`, if any. */
function eventInSlot(seed: number, slot: number): RainEvent | undefined {
  const slotStart = slot * SLOT_MS;
  const p = (monthly(RAIN_DAYS, slotStart) / 30) * (1.6 / 8); // ~1.6 events per rainy day
  if (hashUnit(seed, RAIN, slot, 0) >= p) return undefined;
  const start = slotStart + Math.floor(hashUnit(seed, RAIN, slot, 1) * SLOT_MS);
  const durationH = 0.5 + (MAX_DURATION_H - 0.5) * hashUnit(seed, RAIN, slot, 2) ** 1.5;
  const peak = clamp(monthly(PEAK_MEDIAN, slotStart) * Math.exp(0.8 * hashGauss(seed, RAIN, slot, 3)), 0.5, 110);
  return { id: slot, start, durationH, peak };
}

/** Rain events that started in [from, to). */
export function rainEvents(seed: number, from: number, to: number): RainEvent[] {
  const events: RainEvent[] = [];
  for (let s = Math.floor(from / SLOT_MS); s * SLOT_MS < to; s++) {
    const e = eventInSlot(seed, s);
    if (e && e.start >= from && e.start < to) events.push(e);
  }
  return events;
}

/** How strongly an event hits one place (convective rain is patchy): 1 without a place. */
function localFactor(seed: number, event: RainEvent, place: number | undefined): number {
  return place === undefined ? 1 : 0.55 + 0.9 * hashUnit(seed, RAIN, event.id, place);
}

/** ∫ sin²(πx/D) dx from 0 to x (x, D in hours). */
const bumpIntegral = (x: number, d: number): number => x / 2 - (d / (4 * Math.PI)) * Math.sin((2 * Math.PI * x) / d);

/** Rain intensity now, mm/h. `place` (any integer) makes it vary from place to place. */
export function rainRate(seed: number, t: number, place?: number): number {
  let rate = 0;
  for (const e of rainEvents(seed, t - MAX_DURATION_H * HOUR_MS, t + 1)) {
    const x = (t - e.start) / HOUR_MS;
    if (x >= 0 && x <= e.durationH) rate += localFactor(seed, e, place) * e.peak * Math.sin((Math.PI * x) / e.durationH) ** 2;
  }
  return rate;
}

/** Rain in the hour up to t, mm (what a tipping-bucket gauge reports as "rainfall 1 h"). */
export function rainLastHour(seed: number, t: number, place?: number): number {
  let mm = 0;
  for (const e of rainEvents(seed, t - (MAX_DURATION_H + 1) * HOUR_MS, t + 1)) {
    const b = Math.min(e.durationH, (t - e.start) / HOUR_MS);
    const a = Math.max(0, (t - HOUR_MS - e.start) / HOUR_MS);
    if (b > a) mm += localFactor(seed, e, place) * e.peak * (bumpIntegral(b, e.durationH) - bumpIntegral(a, e.durationH));
  }
  return mm;
}

/** Total rain of an event, mm (the integral of its intensity). */
export const eventVolume = (e: RainEvent): number => (e.peak * e.durationH) / 2;

export interface Weather {
  /** Air temperature, °C. */
  temperature: number;
  /** Relative humidity, %. */
  humidity: number;
  /** Rain intensity now, mm/h. */
  rainRate: number;
  /** Rain in the last hour, mm. */
  rain1h: number;
  /** Wind speed, m/s. */
  wind: number;
}

/**
 * The weather at time t. `place` adds small local differences (urban heat, patchy rain); without
 * it, the city-wide weather.
 */
export function weatherAt(seed: number, t: number, place?: number): Weather {
  const h = localHour(t);
  const rate = rainRate(seed, t, place);
  const rain1h = rainLastHour(seed, t, place);
  const wetting = Math.min(1, rain1h / 4 + rate / 6);
  const local = place === undefined ? 0 : (hashUnit(seed, TEMP, place) - 0.5) * 1.6;
  const daily = Math.cos((2 * Math.PI * (h - 14.5)) / 24); // warmest mid-afternoon
  const temperature =
    monthly(TEMPERATURE_NORMAL, t) +
    (monthly(DIURNAL_RANGE, t) / 2) * daily * (1 - 0.6 * wetting) +
    3 * fractalNoise(hash(seed, TEMP), t, 2.5 * 24 * HOUR_MS) +
    local -
    3.5 * wetting;
  const dry = monthly(HUMIDITY_NORMAL, t) - 11 * daily + 7 * fractalNoise(hash(seed, HUMID), t, 36 * HOUR_MS);
  const humidity = clamp(dry + (97 - dry) * wetting, 25, 99);
  const wind = clamp(2.6 + 1.4 * daily + 2 * fractalNoise(hash(seed, WIND), t, 8 * HOUR_MS) + 0.3 * rate ** 0.5, 0.2, 25);
  return { temperature, humidity, rainRate: rate, rain1h, wind };
}
