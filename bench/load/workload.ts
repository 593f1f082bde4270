import { parseTelemetry } from '../../ingest/telemetry-payload.ts';
import type { Reading } from '../../ingest/readings.ts';
import { toReadings, type TimeRules } from '../../ingest/validate.ts';
import type { DeviceContext } from '../../core/registry.ts';
import { SIMULATED_TYPES, nthReading, planFleet, toPayload, type SimDevice } from '../../simulators/plan.ts';
import type { Phase, PublisherWorkload } from './protocol.ts';

export const TELEMETRY_TOPIC = 'v1/devices/me/telemetry';

export interface WorkloadOptions {
  messages: number;
  warmup: number;
  /** `ts` of every device's first message (plus its phase within the interval). */
  startMs: number;
  /** The readings of all phases span at most this long, so that they can all be live telemetry (see planWorkload). */
  spanMs: number;
}

export interface WorkloadDevice {
  sim: SimDevice;
  /** Telemetry payloads ({"ts", "values"}), in send order; warm-up timestamps follow the main ones. */
  payloads: Record<Phase, string[]>;
}

export interface Workload {
  devices: WorkloadDevice[];
  /** Consecutive messages of a device are this far apart in `ts`. */
  intervalMs: number;
  messages: Record<Phase, number>;
  payloadBytes: number;
  valuesPerMessage: number;
  movingDevices: number;
}

/** n items spread over k slots as evenly as possible: slot i gets ⌊n/k⌋ or one more. */
const share = (n: number, k: number, i: number) => Math.floor(n / k) + (i < n % k ? 1 : 0);

/**
 * The benchmark's devices: `count` simulated devices of every built-in type in turn (fixed
 * stations, and moving buses, drones and satellites that report latitude/longitude).
 */
export function planDevices(count: number, seed: number): SimDevice[] {
  const fleet = planFleet({ seed, devicesPerType: Math.ceil(count / SIMULATED_TYPES.length) });
  // Interleave the types (index-major) so that any prefix of the fleet mixes all domains.
  return [...fleet].sort((a, b) => a.index - b.index || SIMULATED_TYPES.indexOf(a.type) - SIMULATED_TYPES.indexOf(b.type)).slice(0, count);
}

/**
 * The readings: each device sends its share of `messages` (then of `warmup`) deterministic
 * readings of its simulation model, one interval apart, so every (device, ts) is unique. The
 * interval is chosen so that all of them fit in `spanMs` from `startMs`: started at the time of
 * the run, they are live telemetry — neither refused as too far in the future nor "late" for the
 * rollups (which record late readings and recompute their minutes, real work a live feed does not cause).
 */
export function planWorkload(sims: readonly SimDevice[], o: WorkloadOptions): Workload {
  const perDevice = Math.ceil((o.messages + o.warmup) / sims.length);
  const intervalMs = Math.max(1, Math.floor(o.spanMs / perDevice));
  let bytes = 0;
  let values = 0;
  const devices = sims.map((sim, i) => {
    const main = share(o.messages, sims.length, i);
    const warm = share(o.warmup, sims.length, i);
    const payload = (n: number) => {
      const p = toPayload(nthReading(sim, n, { intervalMs, startMs: o.startMs }));
      values += Object.keys(p.values).length;
      const text = JSON.stringify(p);
      bytes += text.length;
      return text;
    };
    return {
      sim,
      payloads: {
        main: Array.from({ length: main }, (_, n) => payload(n)),
        warmup: Array.from({ length: warm }, (_, n) => payload(main + n)),
      },
    };
  });
  const total = o.messages + o.warmup;
  return {
    devices,
    intervalMs,
    messages: { main: o.messages, warmup: o.warmup },
    payloadBytes: bytes / total,
    valuesPerMessage: values / total,
    movingDevices: sims.filter((s) => s.moving).length,
  };
}

/** Device i goes to publisher process i mod n. */
export function splitForPublishers(w: Workload, tokens: readonly string[], processes: number): PublisherWorkload[] {
  return Array.from({ length: processes }, (_, p) => ({
    topic: TELEMETRY_TOPIC,
    devices: w.devices.flatMap((d, i) => (i % processes === p ? [{ token: tokens[i]!, payloads: d.payloads }] : [])),
  }));
}

/**
 * The rows GuanLink stores for a phase's payloads, built by GuanLink's own parser and validator
 * with the platform's time rules (so (a) writes exactly what (b) commits), in the order the publishers send them: the devices'
 * first messages, then their second ones, and so on.
 */
export function storedReadings(w: Workload, contexts: readonly DeviceContext[], phase: Phase, rules: TimeRules): Reading[] {
  const perDevice = w.devices.map((d, i) =>
    d.payloads[phase].map((text) => {
      const parsed = parseTelemetry(text);
      if (!parsed.ok) throw new Error(`bench payload refused: ${parsed.error.detail}`);
      const { readings, rejections } = toReadings(parsed.entries, contexts[i]!, Date.now(), rules);
      if (rejections.length > 0 || readings.length !== 1) throw new Error(`bench payload ${text} gives ${readings.length} readings: ${JSON.stringify(rejections)}`);
      return readings[0]!;
    }),
  );
  const out: Reading[] = [];
  const longest = Math.max(0, ...perDevice.map((r) => r.length));
  for (let n = 0; n < longest; n++) for (const rows of perDevice) if (n < rows.length) out.push(rows[n]!);
  return out;
}
