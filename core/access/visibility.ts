import type { Domain } from '../domains.ts';
import type { Access } from './access.ts';
import type { Principal } from './principal.ts';

/** What a streamed reading or event is about, for scope checks (live streams, MQTT application sessions). */
export interface Subject {
  deviceId: number;
  /** The device's domain. */
  domain: Domain;
  /** Where it happened, when known (a positioned reading, a geofence event, an alarm's position). */
  position?: { lng: number; lat: number } | null;
}

/**
 * Whether a reading or event about a device is inside the principal's scope: the device's domain
 * must be visible and, with an area, the position inside it — or, when there is no position, the
 * device visible (its registered location, a moving device's latest position, inside). A device
 * the principal's owner claimed is visible whole.
 *
 * `visible` is the principal's visible-device set when the caller already holds it (a batch
 * tested against many readings): the answer is then immediate. Without it the device check asks
 * `access.deviceVisible` (cached per scope).
 */
export function subjectVisible(access: Access, p: Principal, s: Subject, visible?: ReadonlySet<number> | null): boolean | Promise<boolean> {
  if (access.owns(p, s.deviceId)) return true; // claimed by the principal's owner: all of it
  if (!access.domainVisible(p, s.domain)) return false;
  if (!p.scope.area) return true;
  if (s.position) return access.positionVisible(p, s.position.lng, s.position.lat);
  if (visible !== undefined) return visible === null || visible.has(s.deviceId);
  return access.deviceVisible(p, s.deviceId);
}
