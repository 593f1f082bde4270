/**
 * Air–space–ground domain (空天地): patrol drones, low-earth-orbit satellites (their ground
 * track leaves Dongguan, of course) and ground stations that track them.
 */
import { HOUR_MS, localHour } from '../clock.ts';
import { DONGGUAN_CENTRE, DRONE_CORRIDORS, GROUND_STATION_SITES, type Corridor } from '../dongguan.ts';
import { Polyline, distance, type LatLng } from '../geometry.ts';
import { pickSite, roundSuffix, spread, subKey, type DeviceFactory, type Model } from '../model.ts';
import { elevationDeg, orbitState, sunSynchronousInclinationDeg, type Orbit } from '../orbit.ts';
import { clamp, fractalNoise, hash, hashGauss, hashString, hashUnit, round } from '../random.ts';
import { rainRate, weatherAt } from '../weather.ts';

// ---------------------------------------------------------------------------------------------
// Drones

const PREFLIGHT_S = 30;
const CLIMB_S = 60;
const DESCENT_S = 60;
const SWAP_S = 240;
const TARGET_PATROL_S = 20 * 60;

export interface DronePlan {
  corridor: Corridor;
  /** The patrol path: a loop, or the corridor out and back. Starts and ends at the dock. */
  path: Polyline;
  laps: number;
  /** Patrol ground speed, m/s. */
  speed: number;
  /** Cruise height, m. */
  altitude: number;
  patrolS: number;
  cycleMs: number;
  offsetMs: number;
}

export function planDrone(corridor: Corridor, key: number): DronePlan {
  const pts = corridor.loop ? corridor.points : [...corridor.points, ...[...corridor.points].reverse().slice(1)];
  const path = new Polyline(pts);
  const speed = 9 + 3 * hashUnit(key, 1);
  const laps = Math.max(1, Math.round((TARGET_PATROL_S * speed) / path.length));
  const patrolS = (laps * path.length) / speed;
  const cycleMs = Math.round((PREFLIGHT_S + CLIMB_S + patrolS + DESCENT_S + SWAP_S) * 1000);
  return { corridor, path, laps, speed, altitude: 60 + 50 * hashUnit(key, 2), patrolS, cycleMs, offsetMs: Math.floor(hashUnit(key, 3) * cycleMs) };
}

export type DronePhase = 'preflight' | 'climb' | 'patrol' | 'descent' | 'swap' | 'grounded';

export interface DroneState {
  phase: DronePhase;
  sortie: number;
  lat: number;
  lng: number;
  altitude: number;
  /** Ground speed, m/s. */
  speed: number;
  heading: number;
  battery: number;
}

/** Where drone `plan` is at time t. A sortie is cancelled when it is raining hard at take-off. */
export function droneState(plan: DronePlan, seed: number, key: number, t: number): DroneState {
  const rel = t - plan.offsetMs;
  const sortie = Math.floor(rel / plan.cycleMs);
  const start = plan.offsetMs + sortie * plan.cycleMs;
  const s = (t - start) / 1000;
  const dock = plan.path.at(0);
  const flightS = CLIMB_S + plan.patrolS + DESCENT_S;
  const endBattery = 26 + 8 * hashUnit(key, sortie, 1);
  const batteryAfter = (flown: number) => 100 - ((100 - endBattery) * flown) / flightS;
  const onPad = (phase: DronePhase, battery: number, heading = dock.heading): DroneState => ({
    phase,
    sortie,
    lat: dock.lat,
    lng: dock.lng,
    altitude: 0,
    speed: 0,
    heading,
    battery,
  });

  if (rainRate(seed, start + PREFLIGHT_S * 1000) > 8) return onPad('grounded', 100);
  if (s < PREFLIGHT_S) return onPad('preflight', 100);
  let x = s - PREFLIGHT_S;
  if (x < CLIMB_S) return { ...onPad('climb', batteryAfter(x)), altitude: (plan.altitude * x) / CLIMB_S };
  x -= CLIMB_S;
  if (x < plan.patrolS) {
    const at = plan.path.at((x * plan.speed) % plan.path.length);
    return { phase: 'patrol', sortie, lat: at.lat, lng: at.lng, altitude: plan.altitude, speed: plan.speed, heading: at.heading, battery: batteryAfter(CLIMB_S + x) };
  }
  x -= plan.patrolS;
  const lastHeading = plan.path.at(plan.path.length).heading;
  if (x < DESCENT_S) return { ...onPad('descent', batteryAfter(CLIMB_S + plan.patrolS + x), lastHeading), altitude: plan.altitude * (1 - x / DESCENT_S) };
  x -= DESCENT_S;
  // on the dock: the pack is swapped a minute after landing
  return onPad('swap', x < 60 ? endBattery : 100, lastHeading);
}

export function droneModel(plan: DronePlan, seed: number, key: number): Model {
  const k = subKey(key, 'drone');
  const dock = plan.path.at(0);
  return (t) => {
    const st = droneState(plan, seed, key, t);
    const flying = st.altitude > 0;
    const gust = flying && st.phase === 'patrol' ? 1.2 * fractalNoise(k, t, 20_000) + 0.3 * hashGauss(k, t) : 0;
    const km = distance(dock, st) / 1000;
    const signal = flying ? 99 - 5 * km - 4 * Math.abs(fractalNoise(k ^ 1, t, 15_000)) - 1.5 * Math.abs(hashGauss(k, t, 1)) : 100 - Math.abs(hashGauss(k, t, 1));
    return {
      values: {
        speed: round(clamp(st.speed + gust, 0, 60), 2),
        heading: round(st.heading, 1) % 360,
        battery: round(clamp(st.battery - (flying ? 0.4 * Math.abs(hashGauss(k, t, 2)) : 0), 0, 100), 1),
        signal: round(clamp(signal, 0, 100), 1),
      },
      position: {
        lat: round(st.lat, 6),
        lng: round(st.lng, 6),
        alt: round(flying ? Math.max(0, st.altitude + (st.phase === 'patrol' ? 1.5 * fractalNoise(k ^ 2, t, 30_000) : 0)) : 0, 1),
      },
    };
  };
}

export const drone: DeviceFactory = (ctx) => {
  const { site: corridor, round: r } = pickSite(DRONE_CORRIDORS, ctx);
  return { label: `${corridor.zh}${roundSuffix(r)}`, model: droneModel(planDrone(corridor, ctx.key), ctx.seed, ctx.key) };
};

// ---------------------------------------------------------------------------------------------
// Satellites

/** Local times of the ascending node: mid-morning, early afternoon, dawn–dusk, … */
const LTANS = [10.5, 13.5, 6, 22.5, 9.5, 14.5, 18, 11];
const ORBIT_EPOCH = Date.UTC(2026, 0, 1);

/** The orbit of the index-th simulated satellite (shared with the ground stations, which track them). */
export function satelliteOrbit(seed: number, index: number): Orbit {
  const key = hash(seed, hashString('satellite'), index);
  const altitudeKm = 480 + 60 * hashUnit(key, 1);
  return {
    altitudeKm,
    inclinationDeg: sunSynchronousInclinationDeg(altitudeKm),
    ltanHours: LTANS[index % LTANS.length]! + (hashUnit(key, 2) - 0.5),
    u0: 2 * Math.PI * hashUnit(key, 3),
    epochMs: ORBIT_EPOCH,
    eccentricity: 0.0005 + 0.001 * hashUnit(key, 4),
    argPerigee: 2 * Math.PI * hashUnit(key, 5),
  };
}

export function satelliteModel(orbit: Orbit, key: number): Model {
  const k = subKey(key, 'satellite');
  return (t) => {
    const st = orbitState(orbit, t);
    const h = st.eclipseHalfAngle;
    const phi = st.sunPhase;
    let battery: number;
    let temperature: number;
    if (h > 0 && Math.abs(phi) < h) {
      // in shadow: running on the battery and cooling down
      const f = (phi + h) / (2 * h);
      battery = 97 - 22 * (h / 1.2) * f;
      temperature = 18 - 30 * (1 - Math.exp(-2.2 * f));
    } else {
      // in sunlight: the arrays recharge the battery within about half of the sunlit arc
      const since = (((phi - h) % (2 * Math.PI)) + 2 * Math.PI) % (2 * Math.PI);
      const sunlit = 2 * Math.PI - 2 * h;
      const low = 97 - 22 * (h / 1.2);
      battery = h > 0 ? low + (97 - low) * Math.min(1, since / (0.5 * sunlit)) : 97;
      const cold = h > 0 ? 18 - 30 * (1 - Math.exp(-2.2)) : 18;
      temperature = cold + (22 - cold) * (1 - Math.exp(-since / 0.7));
    }
    return {
      values: {
        velocity: round(st.velocityKmS, 4),
        elevation: round(clamp(elevationDeg(DONGGUAN_CENTRE, st.ecef), -90, 90), 2),
        battery: round(clamp(battery + 0.2 * hashGauss(k, t), 0, 100), 1),
        temperature: round(clamp(temperature + 0.3 * hashGauss(k, t, 1), -150, 150), 1),
      },
      position: { lat: round(st.lat, 5), lng: round(st.lng, 5), alt: Math.round(st.altitudeKm * 1000) },
    };
  };
}

export const satellite: DeviceFactory = (ctx) => {
  const n = ctx.index + 1;
  return { label: `莞星-${n}号 GuanSat-${n}`, model: satelliteModel(satelliteOrbit(ctx.seed, ctx.index), ctx.key) };
};

// ---------------------------------------------------------------------------------------------
// Ground stations

/** At most this many of the fleet's satellites are tracked by each ground station. */
const TRACKED = 6;
const MIN_ELEVATION = 5;

export function groundStationModel(seed: number, key: number, site: LatLng & { dish: number }, orbits: Orbit[]): Model {
  const k = subKey(key, 'ground-station');
  const gain = 20 * Math.log10(site.dish / 4.5); // bigger dish, stronger signal
  return (t) => {
    const w = weatherAt(seed, t, key);
    const fade = Math.min(12, 0.25 * w.rainRate); // rain fade, dB
    let best = -90;
    for (const orbit of orbits) best = Math.max(best, elevationDeg(site, orbitState(orbit, t).ecef));
    // a GEO data relay is always there; during a LEO pass the tracking antenna downlinks at X band
    const busy = 0.5 + 0.5 * Math.sin((2 * Math.PI * (localHour(t) - 9)) / 24);
    let signal = -118 + 1.5 * hashGauss(k, t); // tracking antenna parked: noise floor
    let downlink = (45 + 25 * busy) * (1 - fade / 30) * (1 + 0.05 * hashGauss(k, t, 1));
    let uplink = (6 + 6 * busy) * (1 + 0.05 * hashGauss(k, t, 2));
    if (best > MIN_ELEVATION) {
      const s = Math.sin((best * Math.PI) / 180);
      signal = -97 + 28 * s + gain - fade + 1.2 * hashGauss(k, t, 3);
      downlink += (300 + 500 * s) * (1 - fade / 15) * (1 + 0.06 * hashGauss(k, t, 4));
      uplink += 2;
    }
    const temperature = w.temperature + 6 + (best > MIN_ELEVATION ? 4 : 0) + 1.5 * fractalNoise(k, t, 6 * HOUR_MS);
    return {
      values: {
        signal_strength: round(clamp(signal, -150, 0), 1),
        downlink: round(clamp(downlink, 0, 10000), 1),
        uplink: round(clamp(uplink, 0, 10000), 2),
        temperature: round(clamp(temperature, -40, 80), 1),
      },
    };
  };
}

export const groundStation: DeviceFactory = (ctx) => {
  const { site, round: r } = pickSite(GROUND_STATION_SITES, ctx);
  const location = spread(site, ctx, r);
  const orbits = Array.from({ length: Math.max(1, Math.min(TRACKED, ctx.count)) }, (_, i) => satelliteOrbit(ctx.seed, i));
  return { label: `${site.zh}${roundSuffix(r)}`, location, model: groundStationModel(ctx.seed, ctx.key, { ...location, dish: site.dish }, orbits) };
};

export const airSpaceGroundFactories = {
  drone,
  satellite,
  'ground-station': groundStation,
} satisfies Record<string, DeviceFactory>;
