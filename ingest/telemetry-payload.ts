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
        return { ok: false, error: { reason: 'invalid_ts', detail: `${where}: ts must be epoch milliseconds, got ${JSON.stringify(item.ts)}` } };
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

function parseTs(raw: unknown): number | undefined {
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^-?\d{1,16}$/.test(raw.trim()) ? Number(raw) : Number.NaN;
  return Number.isSafeInteger(n) ? n : undefined;
}
