import { Type, type Static } from 'typebox';
import { Domain } from '../core/domains.ts';
import type { DeviceFilter, DeviceRegistry } from '../core/registry.ts';
import type { Access } from '../core/access/access.ts';
import type { Principal } from '../core/access/principal.ts';
import { SafeText } from './schemas.ts';

/** Query parameters filtering the device list and the export (combined with AND). */
export const DeviceFilterQuery = Type.Object({
  domain: Type.Optional(Domain),
  type: Type.Optional(SafeText(64, { minLength: 1, description: 'device type name' })),
  namePrefix: Type.Optional(SafeText(200, { minLength: 1, description: 'names starting with this (case-sensitive)' })),
  online: Type.Optional(Type.Boolean({ description: 'connected now (true) or not (false); a device that never connected is offline' })),
  bbox: Type.Optional(
    SafeText(200, { description: 'minLng,minLat,maxLng,maxLat in WGS84 degrees: devices whose registered location is inside (edges included)' }),
  ),
});
export type DeviceFilterQuery = Static<typeof DeviceFilterQuery>;

/** An error fastify answers with its status code and message. */
export const badRequest = (message: string): Error => Object.assign(new Error(message), { statusCode: 400 });

const NUMBER = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;

/** `minLng,minLat,maxLng,maxLat` → numbers, or a 400 saying what is wrong. */
export function parseBbox(text: string): [number, number, number, number] {
  const parts = text.split(',');
  if (parts.length !== 4 || !parts.every((p) => NUMBER.test(p))) {
    throw badRequest(`bbox must be four numbers minLng,minLat,maxLng,maxLat (e.g. 113.5,22.6,114.3,23.2), got "${text}"`);
  }
  const [minLng, minLat, maxLng, maxLat] = parts.map(Number) as [number, number, number, number];
  for (const [name, value, limit] of [['minLng', minLng, 180], ['maxLng', maxLng, 180], ['minLat', minLat, 90], ['maxLat', maxLat, 90]] as const) {
    if (Math.abs(value) > limit) throw badRequest(`bbox: ${name} ${value} is outside -${limit}..${limit}`);
  }
  if (minLng >= maxLng) throw badRequest(`bbox: minLng ${minLng} must be less than maxLng ${maxLng}`);
  if (minLat >= maxLat) throw badRequest(`bbox: minLat ${minLat} must be less than maxLat ${maxLat}`);
  return [minLng, minLat, maxLng, maxLat];
}

/** The filter narrowed to the devices the principal may see. */
export async function withinScope(filter: DeviceFilter, access: Access, principal: Principal): Promise<DeviceFilter> {
  const ids = await access.visibleDevices(principal);
  return ids === null ? filter : { ...filter, ids: [...ids] };
}

/** The registry filter of a validated query, or a 400 (unknown type, bad bbox). */
export function toDeviceFilter(query: DeviceFilterQuery, registry: DeviceRegistry): DeviceFilter {
  if (query.type !== undefined && !registry.deviceType(query.type)) throw badRequest(`type: unknown device type "${query.type}"`);
  return {
    domain: query.domain,
    type: query.type,
    namePrefix: query.namePrefix,
    online: query.online,
    bbox: query.bbox === undefined ? undefined : parseBbox(query.bbox),
  };
}
