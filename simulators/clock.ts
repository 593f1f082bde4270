/** Dongguan local time (China Standard Time, UTC+8, no daylight saving) and daily rhythms. */

export const HOUR_MS = 3_600_000;
export const DAY_MS = 24 * HOUR_MS;
const OFFSET_MS = 8 * HOUR_MS;

/** Hour of the day in Dongguan, fractional, [0, 24). */
export function localHour(t: number): number {
  const ms = (((t + OFFSET_MS) % DAY_MS) + DAY_MS) % DAY_MS;
  return ms / HOUR_MS;
}

/** Day of the week in Dongguan: 0 Sunday … 6 Saturday. */
export function localWeekday(t: number): number {
  return new Date(t + OFFSET_MS).getUTCDay();
}

export const isWeekend = (t: number): boolean => {
  const d = localWeekday(t);
  return d === 0 || d === 6;
};

/** Fractional day of the year in Dongguan, [0, 366). */
export function dayOfYear(t: number): number {
  const local = new Date(t + OFFSET_MS);
  const start = Date.UTC(local.getUTCFullYear(), 0, 1);
  return (local.getTime() - start) / DAY_MS;
}

/** Fractional month, 0 = mid-January … 11 = mid-December (for interpolating monthly normals). */
export function monthPosition(t: number): number {
  return (dayOfYear(t) / 365.25) * 12 - 0.5;
}

/** Interpolates twelve monthly values (January first) smoothly around the year. */
export function monthly(values: readonly number[], t: number): number {
  const m = monthPosition(t);
  const i = Math.floor(m);
  const f = m - i;
  const a = values[((i % 12) + 12) % 12]!;
  const b = values[(((i + 1) % 12) + 12) % 12]!;
  const w = (1 - Math.cos(Math.PI * f)) / 2;
  return a + (b - a) * w;
}

/** A bump of height 1 centred on `centre` hours with half-width `width` hours (wraps midnight). */
export function hourBump(hour: number, centre: number, width: number): number {
  let d = Math.abs(hour - centre);
  if (d > 12) d = 24 - d;
  return Math.exp(-0.5 * (d / width) ** 2);
}

/**
 * Road-traffic demand by time of day, 0…1: on working days a morning peak near 08:00 and a
 * longer evening peak near 18:00 (Dongguan's factory shifts add a bump at noon); at weekends a
 * broad afternoon hump. Lowest around 03:00–04:00.
 */
export function trafficDemand(t: number): number {
  const h = localHour(t);
  const night = 0.06;
  if (isWeekend(t)) {
    return Math.min(1, night + 0.55 * hourBump(h, 11.5, 2.8) + 0.6 * hourBump(h, 17, 3) + 0.25 * hourBump(h, 20.5, 1.5));
  }
  return Math.min(1, night + 0.92 * hourBump(h, 8.1, 1.0) + 0.35 * hourBump(h, 12.3, 1.2) + 0.95 * hourBump(h, 18.2, 1.4) + 0.45 * hourBump(h, 14.5, 3.2) + 0.2 * hourBump(h, 21, 1.5));
}

/** Daylight, 0 at night … 1 at solar noon (Dongguan's day length varies only ~11–13.5 h). */
export function daylight(t: number): number {
  const h = localHour(t);
  const doy = dayOfYear(t);
  const halfDay = 6.1 + 0.65 * Math.cos((2 * Math.PI * (doy - 172)) / 365.25); // hours, longest at the June solstice
  const noon = 12.4; // local solar noon at 113.75° E in UTC+8 is about 12:25
  const x = (h - noon) / halfDay;
  return Math.abs(x) >= 1 ? 0 : Math.cos((x * Math.PI) / 2);
}
