/**
 * The simulated fleet as data: which devices exist for a seed (names, types, places) and what
 * each reports at any time. Pure; the fleet runner (fleet.ts), tests and load generators share it.
 */
import type { DeviceType } from '../core/device-types.ts';
import { airSpaceGroundFactories } from './domains/air-space-ground.ts';
import { environmentFactories } from './domains/environment.ts';
import { trafficFactories } from './domains/traffic.ts';
import { waterFactories } from './domains/water.ts';
import { builtinType, clampToType, deviceContext, type DeviceFactory, type Model, type Position } from './model.ts';
import { hashString, hashUnit, round } from './random.ts';

const FACTORIES = { ...waterFactories, ...environmentFactories, ...trafficFactories, ...airSpaceGroundFactories } satisfies Record<string, DeviceFactory>;

export type SimulatedType = keyof typeof FACTORIES;

/** The built-in device types the simulators cover, in fleet order. */
export const SIMULATED_TYPES = Object.keys(FACTORIES) as SimulatedType[];

export interface SimDevice {
  /** Unique and stable for a seed, e.g. "sim-water-river-level-station-001 东江干流石龙段". */
  name: string;
  type: SimulatedType;
  domain: string;
  /** 0-based index among the devices of its type. */
  index: number;
  moving: boolean;
  /** Registered location (fixed devices only). */
  location?: Position;
  /** Offset of this device's reports within the interval, as a fraction [0, 1). */
  phase: number;
  /** Raw model: the reading at epoch-millisecond time t. */
  model: Model;
  deviceType: DeviceType;
}

export interface PlanOptions {
  seed: number;
  devicesPerType: number;
  /** Only these types (default: all of SIMULATED_TYPES). */
  types?: readonly string[];
}

const GOLDEN = 0.618_033_988_749_895;

export function deviceName(domain: string, type: string, index: number, label: string): string {
  return `sim-${domain}-${type}-${String(index + 1).padStart(3, '0')} ${label}`;
}

/** Every device of the fleet, in a stable order (by type, then index). */
export function planFleet(opts: PlanOptions): SimDevice[] {
  const types = opts.types ?? SIMULATED_TYPES;
  for (const t of types) if (!Object.hasOwn(FACTORIES, t)) throw new Error(`no simulator for device type "${t}" (known: ${SIMULATED_TYPES.join(', ')})`);
  const devices: SimDevice[] = [];
  for (const type of types as SimulatedType[]) {
    const deviceType = builtinType(type);
    const factory: DeviceFactory = FACTORIES[type];
    const typeStart = hashUnit(opts.seed, hashString(type), 0x9a5e);
    for (let index = 0; index < opts.devicesPerType; index++) {
      const ctx = deviceContext(opts.seed, type, index, opts.devicesPerType);
      const spec = factory(ctx);
      const device: SimDevice = {
        name: deviceName(deviceType.domain, type, index, spec.label),
        type,
        domain: deviceType.domain,
        index,
        moving: deviceType.moving,
        phase: (typeStart + index * GOLDEN) % 1,
        model: spec.model,
        deviceType,
      };
      if (spec.location && !deviceType.moving) device.location = { lat: round(spec.location.lat, 6), lng: round(spec.location.lng, 6) };
      devices.push(device);
    }
  }
  return devices;
}

export interface TimedReading {
  /** Epoch milliseconds. */
  ts: number;
  values: Record<string, number>;
  position?: Position;
}

/** The reading of `device` at time `ts` (rounded to a whole millisecond), values within the type's ranges. */
export function readingAt(device: SimDevice, ts: number): TimedReading {
  const t = Math.round(ts);
  const r = device.model(t);
  const reading: TimedReading = { ts: t, values: clampToType(device.deviceType, r.values) };
  if (r.position) reading.position = r.position;
  return reading;
}

/** When the device's n-th report falls, for a fleet reporting every `intervalMs` from `startMs` (default: the Unix epoch). */
export function reportTime(device: SimDevice, n: number, intervalMs: number, startMs = 0): number {
  return startMs + n * intervalMs + Math.floor(device.phase * intervalMs);
}

/** The n-th reading of a device, deterministically (for load generators and benchmarks). */
export function nthReading(device: SimDevice, n: number, opts: { intervalMs: number; startMs?: number }): TimedReading {
  return readingAt(device, reportTime(device, n, opts.intervalMs, opts.startMs ?? 0));
}

/** A reading as a ThingsBoard telemetry payload: {"ts": …, "values": {…, latitude, longitude, altitude}}. */
export function toPayload(reading: TimedReading): { ts: number; values: Record<string, number> } {
  const values = { ...reading.values };
  if (reading.position) {
    values.latitude = reading.position.lat;
    values.longitude = reading.position.lng;
    if (reading.position.alt !== undefined) values.altitude = reading.position.alt;
  }
  return { ts: reading.ts, values };
}
