import type { Domain } from '../core/domains.ts';

/** A JSON value as JSON.parse returns it. */
export type Json = string | number | boolean | null | Json[] | { [key: string]: Json };

/** A telemetry value that is not a number: a string, a boolean, or a JSON object or array (ThingsBoard's other types). */
export type NonNumericValue = Exclude<Json, number | null>;
/** Any stored telemetry value. */
export type TelemetryValue = number | NonNumericValue;

/** One stored row: every value a device reported for one timestamp, with where it was. */
export interface Reading {
  deviceId: number;
  /** The device's domain: which readings table the row goes to. */
  domain: Domain;
  /** Epoch milliseconds. */
  ts: number;
  /** Numeric values: the typed fast path (key-id and float8 arrays). */
  values: Record<string, number>;
  /** The other values, absent when every value is a number (stored in the `jvals` column). */
  jsonValues?: Record<string, NonNumericValue>;
  lat?: number;
  lng?: number;
  alt?: number;
  /** H3 res-15 cell of lat/lng (geo/cell.ts). */
  cell?: bigint;
}

/** Machine-readable rejection reasons; published to the device, stored and counted under these names. */
export const REJECT_REASONS = [
  'invalid_json',
  'invalid_shape',
  'empty',
  'payload_too_large',
  'too_many_values',
  'invalid_key',
  'not_numeric',
  // A value of another type than the device type declares for the key (core/device-types.ts).
  'wrong_type',
  'out_of_range',
  'undeclared_key',
  'too_many_keys',
  'invalid_ts',
  'ts_in_future',
  'ts_too_old',
  'invalid_position',
  // Attributes (core/attributes.ts): a value that cannot be stored, or one over the size limit.
  'invalid_value',
  'value_too_large',
  // Gateways (core/gateways.ts): a sub-device name that is unusable, that belongs to a device not
  // the gateway's, of an unknown type, or beyond the gateway's sub-device limit.
  'invalid_device_name',
  'device_not_owned',
  'unknown_type',
  'too_many_devices',
  // Claiming (core/claims.ts): a device that already has an owner asked to be claimed.
  'already_claimed',
  // A topic outside the device API, or not implemented (broker/device-api.ts routePublish).
  'topic_not_allowed',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

export interface Rejection {
  reason: RejectReason;
  detail: string;
  key?: string;
}
