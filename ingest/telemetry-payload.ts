import { isUtf8 } from 'node:buffer';
import type { Rejection } from './readings.ts';

/** One timestamped group of raw values, as a device sent it. `ts` is absent when the server's time applies. */
export interface TelemetryEntry {
  ts?: number;
  values: Record<string, unknown>;
}

export type ParsedTelemetry = { ok: true; entries: TelemetryEntry[] } | { ok: false; error: Rejection };

export const PAYLOAD_LIMITS = { maxEntries: 1000 } as const;

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Parses a telemetry payload in any form ThingsBoard accepts (its JsonConverter is the authority):
 *   {"temperature": 25}                         values at the server's time
 *   {"ts": 1732600000000, "values": {...}}      values at ts (epoch ms; a numeric string is allowed);
 *                                                only an object with both `ts` and `values` takes this path,
 *                                                and its other keys are ignored
 *   [ …either of the above… ]                   several groups in one message
 */
export function parseTelemetry(payload: Buffer | string): ParsedTelemetry {
  // JSON text is UTF-8 (RFC 8259 §8.1). Decoding invalid bytes would turn them into U+FFFD, and a
  // key such as "temp\xff" would be stored under a name the device never sent: refuse it instead.
  if (typeof payload !== 'string' && !isUtf8(payload)) {
    return { ok: false, error: { reason: 'invalid_json', detail: 'payload is not valid UTF-8 (JSON text must be UTF-8)' } };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(typeof payload === 'string' ? payload : payload.toString('utf8'));
  } catch (err) {
    return { ok: false, error: { reason: 'invalid_json', detail: `payload is not JSON: ${(err as Error).message}` } };
  }
  const items = Array.isArray(doc) ? doc : [doc];
  if (items.length === 0) return { ok: false, error: { reason: 'empty', detail: 'empty array' } };
  if (items.length > PAYLOAD_LIMITS.maxEntries) {
    return { ok: false, error: { reason: 'too_many_values', detail: `more than ${PAYLOAD_LIMITS.maxEntries} entries in one message` } };
  }
  const entries: TelemetryEntry[] = [];
  for (const [i, item] of items.entries()) {
    const where = Array.isArray(doc) ? `element ${i}` : 'payload';
    if (!isPlainObject(item)) {
      return { ok: false, error: { reason: 'invalid_shape', detail: `${where} must be a JSON object of key/value pairs` } };
    }
    if ('ts' in item && 'values' in item) {
      const ts = parseTs(item.ts);
      if (ts === undefined) {
        return { ok: false, error: { reason: 'invalid_ts', detail: `${where}: ts must be epoch milliseconds, got ${describeValue(item.ts)}` } };
      }
      if (!isPlainObject(item.values)) {
        return { ok: false, error: { reason: 'invalid_shape', detail: `${where}: values must be a JSON object` } };
      }
      entries.push({ ts, values: item.values });
    } else {
      entries.push({ values: item });
    }
  }
  return { ok: true, entries };
}

/**
 * A short description of a value a device sent, for rejection details. JSON.stringify recurses:
 * a value nested a few thousand levels deep (a payload far below the size limit can hold that)
 * overflows the stack, which used to throw out of ingest and close the device's connection
 * without an answer or a PUBACK, so the device resent the same payload forever.
 */
export function describeValue(raw: unknown): string {
  let s: string;
  try {
    // JSON.stringify writes a number that overflowed a double (1e999 parses to Infinity) as null.
    s = typeof raw === 'number' ? String(raw) : (JSON.stringify(raw) ?? String(raw));
  } catch {
    s = `${Array.isArray(raw) ? 'an array' : 'an object'} nested too deeply to show`;
  }
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

function parseTs(raw: unknown): number | undefined {
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d{1,16}$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  return Number.isSafeInteger(n) ? n : undefined;
}
