/**
 * Simple circular low-earth orbits on a spherical Earth: enough for a plausible ground track,
 * pass geometry over Dongguan and day/night (eclipse) cycles; not for tracking real satellites
 * (no J2 except the sun-synchronous node drift, no drag, no ellipsoid).
 */
import type { LatLng } from './geometry.ts';

export const MU_KM3_S2 = 398_600.4418;
export const EARTH_RADIUS_KM = 6371.0088;
const RAD = Math.PI / 180;
const J2000_MS = Date.UTC(2000, 0, 1, 12, 0, 0);
const DAY_MS = 86_400_000;

export type Vec3 = [number, number, number];

const dot = (a: Vec3, b: Vec3): number => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const norm = (a: Vec3): number => Math.sqrt(dot(a, a));
const scale = (a: Vec3, k: number): Vec3 => [a[0] * k, a[1] * k, a[2] * k];
const sub = (a: Vec3, b: Vec3): Vec3 => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const cross = (a: Vec3, b: Vec3): Vec3 => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

export interface Orbit {
  altitudeKm: number;
  inclinationDeg: number;
  /** Local time of the ascending node, hours: the orbit plane keeps this angle to the Sun (sun-synchronous). */
  ltanHours: number;
  /** Argument of latitude at `epochMs`, radians (where on the orbit the satellite is). */
  u0: number;
  epochMs: number;
  /** Small eccentricity (first-order, e ≲ 0.01); 0 or absent: circular. */
  eccentricity?: number;
  /** Argument of perigee, radians (with eccentricity). */
  argPerigee?: number;
}

export function orbitalPeriodSeconds(altitudeKm: number): number {
  const a = EARTH_RADIUS_KM + altitudeKm;
  return 2 * Math.PI * Math.sqrt(a ** 3 / MU_KM3_S2);
}

export function orbitalVelocityKmS(altitudeKm: number): number {
  return Math.sqrt(MU_KM3_S2 / (EARTH_RADIUS_KM + altitudeKm));
}

/** Inclination at which J2 turns the orbit plane once a year with the Sun (about 97.4° at 500 km). */
export function sunSynchronousInclinationDeg(altitudeKm: number): number {
  const a = EARTH_RADIUS_KM + altitudeKm;
  return Math.acos(-((a / 12_352) ** 3.5)) / RAD;
}

/** Greenwich sidereal angle (Earth rotation angle), radians. */
export function earthRotationAngle(t: number): number {
  const d = (t - J2000_MS) / DAY_MS;
  const turns = 0.779_057_273_264 + 1.002_737_811_911_354_48 * d;
  return 2 * Math.PI * (turns - Math.floor(turns));
}

/** Unit vector to the Sun in the equatorial inertial frame (low-precision almanac formula). */
export function sunDirection(t: number): Vec3 {
  const n = (t - J2000_MS) / DAY_MS;
  const L = (280.46 + 0.985_647_4 * n) * RAD;
  const g = (357.528 + 0.985_600_3 * n) * RAD;
  const lambda = L + (1.915 * Math.sin(g) + 0.02 * Math.sin(2 * g)) * RAD;
  const eps = (23.439 - 0.000_000_4 * n) * RAD;
  return [Math.cos(lambda), Math.cos(eps) * Math.sin(lambda), Math.sin(eps) * Math.sin(lambda)];
}

export interface OrbitState {
  /** Inertial position, km. */
  eci: Vec3;
  /** Earth-fixed position, km. */
  ecef: Vec3;
  /** Sub-satellite point. */
  lat: number;
  lng: number;
  altitudeKm: number;
  velocityKmS: number;
  /** In the Earth's shadow (cylindrical shadow model). */
  eclipsed: boolean;
  /** Angle along the orbit from the middle of the night side, radians (-π, π]; increases with time. */
  sunPhase: number;
  /** Half the angle of the orbit spent in shadow, radians (0 when the orbit never enters it). */
  eclipseHalfAngle: number;
}

export function orbitState(orbit: Orbit, t: number): OrbitState {
  const a = EARTH_RADIUS_KM + orbit.altitudeKm;
  const e = orbit.eccentricity ?? 0;
  const w = orbit.argPerigee ?? 0;
  const n = (2 * Math.PI) / orbitalPeriodSeconds(orbit.altitudeKm);
  const meanAnomaly = orbit.u0 - w + (n * (t - orbit.epochMs)) / 1000;
  // near-circular: radius and true anomaly to first order in e
  const r = a * (1 - e * Math.cos(meanAnomaly));
  const u = w + meanAnomaly + 2 * e * Math.sin(meanAnomaly);
  const i = orbit.inclinationDeg * RAD;
  const sun = sunDirection(t);
  const sunRa = Math.atan2(sun[1], sun[0]);
  const raan = sunRa + (orbit.ltanHours - 12) * 15 * RAD;
  const cO = Math.cos(raan);
  const sO = Math.sin(raan);
  const cu = Math.cos(u);
  const su = Math.sin(u);
  const ci = Math.cos(i);
  const si = Math.sin(i);
  const eci: Vec3 = [r * (cO * cu - sO * su * ci), r * (sO * cu + cO * su * ci), r * su * si];
  const theta = earthRotationAngle(t);
  const ecef: Vec3 = [eci[0] * Math.cos(theta) + eci[1] * Math.sin(theta), -eci[0] * Math.sin(theta) + eci[1] * Math.cos(theta), eci[2]];
  const lat = Math.asin(eci[2] / r) / RAD;
  let lng = Math.atan2(ecef[1], ecef[0]) / RAD;
  if (lng > 180) lng -= 360;
  if (lng <= -180) lng += 360;

  // Shadow: behind the Earth (r·s < 0) and within its radius of the Earth–Sun line.
  const rs = dot(eci, sun) / r;
  const eclipsed = rs < 0 && r * Math.sqrt(Math.max(0, 1 - rs * rs)) < EARTH_RADIUS_KM;
  // Phase from the anti-Sun direction projected into the orbit plane.
  const h: Vec3 = [si * sO, -si * cO, ci];
  const anti = scale(sun, -1);
  const pRaw = sub(anti, scale(h, dot(anti, h)));
  const pLen = norm(pRaw);
  const pHat = pLen > 1e-9 ? scale(pRaw, 1 / pLen) : ([cO, sO, 0] as Vec3);
  const qHat = cross(h, pHat);
  const rHat = scale(eci, 1 / r);
  const sunPhase = Math.atan2(dot(rHat, qHat), dot(rHat, pHat));
  const cosBeta = pLen; // |projection of the unit anti-Sun vector| = cos(beta angle)
  const c = Math.sqrt(1 - (EARTH_RADIUS_KM / r) ** 2) / Math.max(1e-9, cosBeta);
  const eclipseHalfAngle = c >= 1 ? 0 : Math.acos(c);

  const velocityKmS = Math.sqrt(MU_KM3_S2 * (2 / r - 1 / a)); // vis-viva
  return { eci, ecef, lat, lng, altitudeKm: r - EARTH_RADIUS_KM, velocityKmS, eclipsed, sunPhase, eclipseHalfAngle };
}

export function observerEcef(p: LatLng, altitudeKm = 0): Vec3 {
  const r = EARTH_RADIUS_KM + altitudeKm;
  const φ = p.lat * RAD;
  const λ = p.lng * RAD;
  return [r * Math.cos(φ) * Math.cos(λ), r * Math.cos(φ) * Math.sin(λ), r * Math.sin(φ)];
}

/** Elevation (degrees above the horizon, -90…90) of an Earth-fixed point seen from `observer`. */
export function elevationDeg(observer: LatLng, targetEcef: Vec3): number {
  const o = observerEcef(observer);
  const d = sub(targetEcef, o);
  const up = scale(o, 1 / norm(o));
  return Math.asin(Math.max(-1, Math.min(1, dot(d, up) / norm(d)))) / RAD;
}

/** Slant range, km, from an observer to an Earth-fixed point. */
export function rangeKm(observer: LatLng, targetEcef: Vec3): number {
  return norm(sub(targetEcef, observerEcef(observer)));
}
