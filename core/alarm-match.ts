import type { ValueType } from './device-types.ts';
import { isNumericString, TELEMETRY_VALUE_LIMITS } from '../ingest/validate.ts';
import { valueProblem } from '../ingest/json-value.ts';
import type { TelemetryValue } from '../ingest/readings.ts';

/**
 * Match alarm rules: a telemetry key compared for equality with a JSON scalar (`fw_state ==
 * "FAILED"`, `relay != true`, `mode == 3`). The raise condition is the comparison, the clear
 * condition its negation: there is no band between them, so no hysteresis (the rule's durations
 * are what keeps a flapping value from raising one alarm per reading).
 */

export const MATCH_OPERATORS = ['==', '!='] as const;
export type MatchOperator = (typeof MATCH_OPERATORS)[number];
/** What a match rule compares with, and what a match alarm observes. */
export type AlarmScalar = string | number | boolean;

/**
 * Whether the raise condition holds for `observed`. Values compare by JSON type and value: a
 * string equals only the same string, a number only the same number, a boolean only the same
 * boolean; a value of another type is not equal (so `!=` holds for it).
 */
export function matches(rule: { operator: MatchOperator; value: AlarmScalar }, observed: AlarmScalar): boolean {
  return (observed === rule.value) === (rule.operator === '==');
}

/** The value a match rule compares in a reading: a scalar, or undefined for an object or array (not compared) or an absent key. */
export function comparableValue(value: TelemetryValue | undefined): AlarmScalar | undefined {
  return value === undefined || typeof value === 'object' ? undefined : value;
}

/**
 * Why `value` cannot be compared with key `key` of a device type, or undefined when it can.
 * `keyType` is the type the device type declares for the key, or undefined for an undeclared key
 * (any scalar, except a numeric string: ingest stores those as numbers, as ThingsBoard casts them).
 */
export function matchValueProblem(key: string, keyType: ValueType | undefined, value: unknown): string | undefined {
  const jsonType = typeof value;
  if (value === null || (jsonType !== 'string' && jsonType !== 'number' && jsonType !== 'boolean') || (jsonType === 'number' && !Number.isFinite(value))) {
    return 'value: required for match rules (a string, number or boolean to compare with)';
  }
  if (keyType === 'json') return `key: "${key}" is a json key; match rules compare strings, numbers and booleans`;
  if (keyType !== undefined && keyType !== jsonType) return `value: ${JSON.stringify(value)} is a ${jsonType}; key "${key}" is declared ${keyType}`;
  if (typeof value === 'string') {
    if (value.length > TELEMETRY_VALUE_LIMITS.maxStringLength) {
      return `value: the string is ${value.length} characters; telemetry strings are at most ${TELEMETRY_VALUE_LIMITS.maxStringLength}`;
    }
    const problem = valueProblem(value, TELEMETRY_VALUE_LIMITS);
    if (problem) return `value: ${problem.detail}`;
    if (keyType === undefined && isNumericString(value)) {
      return `value: devices' numeric strings on undeclared key "${key}" are stored as numbers; compare with the number ${Number(value)}`;
    }
  }
  return undefined;
}
