/**
 * Time buckets for aggregated telemetry queries: interval parsing, the automatic interval, and
 * which source (1-hour rollups, 1-minute rollups or raw readings) serves which part of a range.
 * Pure functions, no I/O.
 */

export const SECOND = 1000;
export const MINUTE = 60 * SECOND;
export const HOUR = 60 * MINUTE;
export const DAY = 24 * HOUR;

/** Buckets are aligned to this instant (a Monday, 00:00 UTC — TimescaleDB's time_bucket origin). */
export const BUCKET_ORIGIN = Date.UTC(2000, 0, 3);

export const AGGREGATES = ['avg', 'min', 'max', 'count', 'sum', 'last'] as const;
export type Aggregate = (typeof AGGREGATES)[number];

export const MIN_INTERVAL_MS = SECOND;
export const MAX_INTERVAL_MS = 366 * DAY;

/** What `auto` aims for at most. */
export const AUTO_MAX_BUCKETS = 1000;

const UNITS: Record<string, number> = { s: SECOND, m: MINUTE, h: HOUR, d: DAY };

/** Intervals `auto` chooses from, finest first. */
export const AUTO_INTERVALS = ['1s', '5s', '10s', '30s', '1m', '5m', '15m', '30m', '1h', '3h', '6h', '12h', '1d', '7d', '30d'].map(
  (s) => parseInterval(s) as number,
);

/**
 * `30s`, `5m`, `1h`, `1d` (a whole number and a unit) → milliseconds; `auto` → 'auto'; anything
 * else (or out of 1 s … 366 d) → an explanation of what is wrong.
 */
export function parseInterval(raw: string): number | 'auto' | { error: string } {
  const s = raw.trim();
  if (s === 'auto') return 'auto';
  const m = /^(\d{1,9})\s*([smhd])$/.exec(s);
  if (!m) return { error: `interval: "${raw}" is not a duration like 30s, 5m, 1h or 1d, or auto` };
  const ms = Number(m[1]) * UNITS[m[2]!]!;
  if (ms < MIN_INTERVAL_MS || ms > MAX_INTERVAL_MS) return { error: `interval: "${raw}" must be between 1s and 366d` };
  return ms;
}

/** The shortest way to write an interval (for the response header). */
export function formatInterval(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) if (ms % UNITS[unit]! === 0) return `${ms / UNITS[unit]!}${unit}`;
  return `${ms / SECOND}s`;
}

/** The finest interval that gives at most AUTO_MAX_BUCKETS buckets over [from, to). */
export function autoInterval(from: number, to: number, maxBuckets = AUTO_MAX_BUCKETS): number {
  const range = Math.max(0, to - from);
  for (const iv of AUTO_INTERVALS) if (Math.ceil(range / iv) <= maxBuckets) return iv;
  return Math.ceil(range / maxBuckets / DAY) * DAY;
}

export const floorTo = (t: number, step: number): number => Math.floor(t / step) * step;
export const ceilTo = (t: number, step: number): number => Math.ceil(t / step) * step;

export type Source = '1h' | '1m' | 'raw';

/** [start, end) in epoch ms, read from one source. */
export interface Segment {
  source: Source;
  start: number;
  end: number;
}

export interface PlanInput {
  /** Inclusive start of the range (epoch ms). */
  from: number;
  /** Exclusive end of the range (epoch ms). */
  to: number;
  intervalMs: number;
  /** Rollups are complete before this minute (rollup_state.done); undefined: no rollups yet. */
  done: number | undefined;
  /** Minutes (start, epoch ms) with late readings not yet in the rollups: read raw. */
  invalidMinutes?: readonly number[];
}

/**
 * Splits [from, to) into segments, each read from the coarsest source that is complete there and
 * whose buckets nest in the requested ones: 1-hour rollups for intervals that are whole hours,
 * 1-minute rollups for whole minutes, raw readings at the edges of the range (partial minutes or
 * hours), after the rollup watermark, and for minutes with pending late data. The segments are
 * contiguous and cover the range exactly, so aggregating each and combining is exact.
 */
export function planSources({ from, to, intervalMs, done, invalidMinutes = [] }: PlanInput): Segment[] {
  if (from >= to) return [];
  const unit = intervalMs % HOUR === 0 ? HOUR : intervalMs % MINUTE === 0 ? MINUTE : 0;
  const mStart = ceilTo(from, MINUTE);
  const mEnd = done === undefined ? mStart : Math.min(floorTo(to, MINUTE), floorTo(done, MINUTE));
  if (unit === 0 || mStart >= mEnd) return [{ source: 'raw', start: from, end: to }];

  const out: Segment[] = [];
  const push = (source: Source, start: number, end: number) => {
    if (start >= end) return;
    const last = out[out.length - 1];
    if (last && last.source === source && last.end === start) last.end = end;
    else out.push({ source, start, end });
  };
  const rollups = (a: number, b: number) => {
    if (unit === HOUR) {
      const h0 = ceilTo(a, HOUR);
      const h1 = floorTo(b, HOUR);
      if (h0 < h1) {
        push('1m', a, h0);
        push('1h', h0, h1);
        push('1m', h1, b);
        return;
      }
    }
    push('1m', a, b);
  };

  push('raw', from, mStart);
  const bad = [...new Set(invalidMinutes.map((m) => floorTo(m, MINUTE)))].filter((m) => m >= mStart && m < mEnd).sort((a, b) => a - b);
  let cursor = mStart;
  for (const m of bad) {
    rollups(cursor, m);
    push('raw', m, m + MINUTE);
    cursor = m + MINUTE;
  }
  rollups(cursor, mEnd);
  push('raw', mEnd, to);
  return out;
}
