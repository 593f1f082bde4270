import { POSITION_KEYS, type ValueType } from '../core/device-types.ts';
import type { DeviceContext } from '../core/registry.ts';
import { storageCell } from '../geo/cell.ts';
import { valueProblem } from './json-value.ts';
import type { NonNumericValue, Reading, Rejection } from './readings.ts';
import { describeValue, type TelemetryEntry } from './telemetry-payload.ts';

export interface TimeRules {
  /** A timestamp more than this far ahead of the server's clock is rejected. */
  maxFutureMs: number;
  /** Timestamps before this (epoch ms) are rejected. */
  minTs: number;
}

export const DEFAULT_TIME_RULES: TimeRules = { maxFutureMs: 5 * 60_000, minTs: Date.UTC(2000, 0, 1) };

/** Every key is admitted unless a dictionary says otherwise (db/keys.ts caps how many exist). */
export type AdmitKey = (name: string) => boolean;
const admitAll: AdmitKey = () => true;

export const MAX_KEY_LENGTH = 100;
// ThingsBoard casts numeric-looking strings to numbers by default; so does GuanLink.
const NUMERIC_STRING = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;

/** Key checks are the same every time a key is seen: remember the last many answers. */
const keyChecks = new Map<string, string | null>();

/** Why a key name is refused (telemetry and attributes share the rules), or undefined. */
export function keyProblem(key: string): string | undefined {
  const known = keyChecks.get(key);
  if (known !== undefined) return known ?? undefined;
  const problem = checkKey(key);
  if (keyChecks.size >= 20_000) keyChecks.clear();
  keyChecks.set(key, problem ?? null);
  return problem;
}

function checkKey(key: string): string | undefined {
  if (key.length === 0) return 'empty key';
  if (key.length > MAX_KEY_LENGTH) return `key longer than ${MAX_KEY_LENGTH} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(key)) return 'key contains control characters';
  if (!key.isWellFormed()) return 'key is not well-formed Unicode';
  if (key === '__proto__') return 'reserved key name';
  return undefined;
}

/** Limits on telemetry values that are not numbers; larger ones are refused (value_too_large). */
export const TELEMETRY_VALUE_LIMITS = {
  /** Characters in a string value. */
  maxStringLength: 4096,
  /** Bytes of a JSON (object or array) value written as JSON. */
  maxValueBytes: 16_384,
  /** Nesting of objects and arrays within one JSON value. */
  maxDepth: 32,
} as const;

/** Whether ingest stores this string, sent for an undeclared key, as a number (ThingsBoard's cast). */
export const isNumericString = (s: string): boolean => toNumber(s) !== undefined;

function toNumber(raw: unknown): number | undefined {
  if (typeof raw === 'number') return Number.isFinite(raw) ? raw : undefined;
  if (typeof raw === 'string' && NUMERIC_STRING.test(raw)) {
    const n = Number(raw);
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

/**
 * Turns parsed telemetry into readings for one device, checking each value against the device
 * type. A bad key is rejected on its own; the message's other keys are still stored.
 */
export function toReadings(
  entries: TelemetryEntry[],
  device: DeviceContext,
  receivedAt: number,
  rules: TimeRules = DEFAULT_TIME_RULES,
  admitKey: AdmitKey = admitAll,
): { readings: Reading[]; rejections: Rejection[] } {
  const readings: Reading[] = [];
  const rejections: Rejection[] = [];
  for (const entry of entries) {
    const ts = entry.ts ?? receivedAt;
    if (ts > receivedAt + rules.maxFutureMs) {
      rejections.push({ reason: 'ts_in_future', detail: `ts ${ts} is more than ${rules.maxFutureMs} ms ahead of the server clock` });
      continue;
    }
    if (ts < rules.minTs) {
      rejections.push({ reason: 'ts_too_old', detail: `ts ${ts} is before ${new Date(rules.minTs).toISOString()} (seconds instead of milliseconds?)` });
      continue;
    }
    const values: Record<string, number> = {};
    let jsonValues: Record<string, NonNumericValue> | undefined;
    let latitude: number | undefined;
    let longitude: number | undefined;
    let altitude: number | undefined;
    let count = 0;
    const sent = entry.values;
    for (const key in sent) {
      const raw = sent[key];
      if (raw === null) continue; // ThingsBoard skips nulls silently
      const problem = keyProblem(key);
      if (problem) {
        rejections.push({ reason: 'invalid_key', detail: problem, key: key.slice(0, MAX_KEY_LENGTH) });
        continue;
      }
      // Own keys only: `in` also sees Object.prototype, so "constructor", "toString"… were taken
      // for position keys and silently dropped.
      if (Object.hasOwn(POSITION_KEYS, key)) {
        const value = toNumber(raw);
        if (value === undefined) {
          rejections.push({ reason: 'not_numeric', detail: `${key}: expected a finite number, got ${describeValue(raw)}`, key });
          continue;
        }
        if (key === 'latitude') latitude = value;
        else if (key === 'longitude') longitude = value;
        else altitude = value;
        continue;
      }
      const declared = Object.hasOwn(device.type.keys, key) ? device.type.keys[key] : undefined;
      if (!declared && !device.type.acceptsUndeclaredKeys) {
        rejections.push({ reason: 'undeclared_key', detail: `${key} is not a key of device type ${device.type.name}`, key });
        continue;
      }
      const type = declared ? (declared.type ?? 'number') : undefined;
      const value = type === 'number' || type === undefined ? toNumber(raw) : undefined;
      if (value === undefined) {
        const problem = nonNumericProblem(key, raw, type, device.type.name);
        if (problem) {
          rejections.push(problem);
          continue;
        }
      } else if (declared && ((declared.min !== undefined && value < declared.min) || (declared.max !== undefined && value > declared.max))) {
        rejections.push({
          reason: 'out_of_range',
          detail: `${key}=${value} is outside the plausible range ${declared.min ?? '-∞'}..${declared.max ?? '∞'}${declared.unit ? ` ${declared.unit}` : ''}`,
          key,
        });
        continue;
      }
      if (!admitKey(key)) {
        rejections.push({ reason: 'too_many_keys', detail: `${key}: the platform already holds its maximum number of distinct telemetry keys`, key });
        continue;
      }
      if (value !== undefined) values[key] = value;
      else (jsonValues ??= {})[key] = raw as NonNumericValue;
      count++;
    }
    const reading: Reading = { deviceId: device.id, domain: device.type.domain, ts, values };
    if (jsonValues) reading.jsonValues = jsonValues;
    const hasLat = latitude !== undefined;
    const hasLng = longitude !== undefined;
    const hasAlt = altitude !== undefined;
    let sentPosition = false;
    if (hasLat || hasLng || hasAlt) {
      if (latitude === undefined || longitude === undefined) {
        // An altitude alone used to be dropped without a word.
        const detail = hasLat || hasLng ? 'latitude and longitude must be sent together' : 'altitude must be sent with latitude and longitude';
        rejections.push({ reason: 'invalid_position', detail });
      } else if (latitude < -90 || latitude > 90 || longitude < -180 || longitude > 180) {
        rejections.push({ reason: 'invalid_position', detail: `latitude ${latitude}, longitude ${longitude} is not a position on Earth` });
      } else if (altitude !== undefined && (altitude < -12_000 || altitude > 100_000_000)) {
        rejections.push({ reason: 'invalid_position', detail: `altitude ${altitude} m is implausible` });
      } else {
        reading.lat = latitude;
        reading.lng = longitude;
        if (altitude !== undefined) reading.alt = altitude;
        reading.cell = storageCell(latitude, longitude);
        sentPosition = true;
      }
    }
    // A fixed station is where it was registered; a moving device's registered location (its
    // depot) says nothing about where it is now, so its readings without a position stay unlocated.
    if (!sentPosition && !device.type.moving && device.lat !== null && device.lng !== null) {
      reading.lat = device.lat;
      reading.lng = device.lng;
      if (device.alt !== null) reading.alt = device.alt;
      reading.cell = device.cell ?? storageCell(device.lat, device.lng);
    }
    // A reading needs a value or a position the device sent: a refused position alone must not
    // store the registered location as if the device had reported it (a fake track point).
    if (count > 0 || sentPosition) readings.push(reading);
  }
  return { readings, rejections };
}

const TYPE_OF: Record<Exclude<ValueType, 'number'>, (raw: unknown) => boolean> = {
  string: (raw) => typeof raw === 'string',
  boolean: (raw) => typeof raw === 'boolean',
  json: (raw) => typeof raw === 'object' && raw !== null,
};

/**
 * Why a value that is not a number cannot be stored under `key`, or undefined when it can (a
 * string, boolean or JSON object/array within TELEMETRY_VALUE_LIMITS, of the declared type if any).
 */
function nonNumericProblem(key: string, raw: unknown, type: ValueType | undefined, typeName: string): Rejection | undefined {
  if (type === 'number') return { reason: 'not_numeric', detail: `${key}: expected a finite number, got ${describeValue(raw)}`, key };
  if (type !== undefined && !TYPE_OF[type](raw)) {
    return { reason: 'wrong_type', detail: `${key}: device type ${typeName} declares a ${type}, got ${describeValue(raw)}`, key };
  }
  // A number that overflows a double (1e999) is not stored as anything else.
  if (typeof raw === 'number') return { reason: 'not_numeric', detail: `${key}: expected a finite number, got ${describeValue(raw)}`, key };
  if (typeof raw === 'string' && raw.length > TELEMETRY_VALUE_LIMITS.maxStringLength) {
    return { reason: 'value_too_large', detail: `${key}: the string is ${raw.length} characters; the limit is ${TELEMETRY_VALUE_LIMITS.maxStringLength}`, key };
  }
  const problem = valueProblem(raw, TELEMETRY_VALUE_LIMITS);
  return problem && { reason: problem.reason, detail: `${key}: ${problem.detail}`, key };
}
