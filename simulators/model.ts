/** What every simulated device model is: a pure function from time to a reading. */
import { BUILTIN_DEVICE_TYPES, type DeviceType } from '../core/device-types.ts';
import { DONGGUAN_BBOX } from './dongguan.ts';
import { offset, type LatLng } from './geometry.ts';
import { clamp, hash, hashString, hashUnit } from './random.ts';

export interface Position {
  lat: number;
  lng: number;
  /** Metres. */
  alt?: number;
}

export interface Reading {
  /** Telemetry values keyed as in the device type (no position keys). */
  values: Record<string, number>;
  /** Where a moving device is at that time; fixed devices leave it out. */
  position?: Position;
}

/** A device's behaviour: the reading at epoch-millisecond time t. Pure: no I/O, no clock, no Math.random. */
export type Model = (t: number) => Reading;

/** What a factory is told about the device it builds. */
export interface DeviceContext {
  seed: number;
  type: string;
  /** 0-based index of the device among those of its type. */
  index: number;
  /** How many devices of this type the fleet has. */
  count: number;
  /** Hash of (seed, type, index): the root key of this device's noise. */
  key: number;
}

export interface DeviceSpec {
  /** Human label appended to the device's name, e.g. "东江石龙段". */
  label: string;
  /** Registered location of a fixed device. */
  location?: Position;
  model: Model;
}

export type DeviceFactory = (ctx: DeviceContext) => DeviceSpec;

export function deviceContext(seed: number, type: string, index: number, count: number): DeviceContext {
  return { seed, type, index, count, key: hash(seed, hashString(type), index) };
}

/** A key for one named quantity of one device, e.g. subKey(ctx.key, 'water_level'). */
export const subKey = (key: number, name: string): number => hash(key, hashString(name));

/**
 * Chooses the site of the index-th device from a list, in a seed-dependent order. When there are
 * more devices than sites the list is reused, and `round` (0, 1, 2 …) says how many times.
 */
export function pickSite<T>(sites: readonly T[], ctx: DeviceContext): { site: T; round: number } {
  const n = sites.length;
  const round = Math.floor(ctx.index / n);
  // a permutation of the sites that depends on the seed and on which round we are in
  const order = sites.map((_, i) => i).sort((a, b) => hash(ctx.seed, hashString(ctx.type), round, a) - hash(ctx.seed, hashString(ctx.type), round, b));
  return { site: sites[order[ctx.index % n]!]!, round };
}

/** Moves a reused site a little (`round` > 0) so devices do not sit on top of each other; stays in Dongguan. */
export function spread(p: LatLng, ctx: DeviceContext, round: number, maxMetres = 1500): LatLng {
  if (round === 0) return { lat: p.lat, lng: p.lng };
  const moved = offset(p, 200 + (maxMetres - 200) * hashUnit(ctx.key, 1), 360 * hashUnit(ctx.key, 2));
  return {
    lat: clamp(moved.lat, DONGGUAN_BBOX.minLat, DONGGUAN_BBOX.maxLat),
    lng: clamp(moved.lng, DONGGUAN_BBOX.minLng, DONGGUAN_BBOX.maxLng),
  };
}

/** " #2", " #3" … for reused sites, nothing for the first. */
export const roundSuffix = (round: number): string => (round === 0 ? '' : ` #${round + 1}`);

const typesByName = new Map(BUILTIN_DEVICE_TYPES.map((t) => [t.name, t]));

export function builtinType(name: string): DeviceType {
  const t = typesByName.get(name);
  if (!t) throw new Error(`unknown built-in device type ${name}`);
  return t;
}

/** Values clamped into the device type's declared ranges (a safety net: models already stay inside). */
export function clampToType(type: DeviceType, values: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(values)) {
    const decl = type.keys[k];
    out[k] = decl ? clamp(v, decl.min ?? -Infinity, decl.max ?? Infinity) : v;
  }
  return out;
}
