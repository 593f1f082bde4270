/** Traffic domain: loop/radar detectors on main roads, and electric buses on inter-town routes. */
import { HOUR_MS, trafficDemand } from '../clock.ts';
import { BUS_ROUTES, TRAFFIC_SITES, type BusRoute, type RoadClass } from '../dongguan.ts';
import { Polyline } from '../geometry.ts';
import { pickSite, roundSuffix, spread, subKey, type DeviceFactory, type Model } from '../model.ts';
import { clamp, fractalNoise, hashGauss, hashUnit, round } from '../random.ts';
import { weatherAt } from '../weather.ts';

// ---------------------------------------------------------------------------------------------
// Traffic detectors

const ROADS: Record<RoadClass, { freeFlowKmh: number; perLanePerMin: number }> = {
  expressway: { freeFlowKmh: 105, perLanePerMin: 33 },
  'urban-expressway': { freeFlowKmh: 80, perLanePerMin: 30 },
  arterial: { freeFlowKmh: 52, perLanePerMin: 20 }, // signalised: lower capacity per lane
};

export function trafficDetectorModel(seed: number, key: number, road: RoadClass, lanes: number): Model {
  const r = ROADS[road];
  const k = subKey(key, 'traffic');
  const busyness = 0.75 + 0.3 * hashUnit(key, 1);
  return (t) => {
    const w = weatherAt(seed, t);
    // volume/capacity ratio: near 1 at the peaks on a busy road
    const x = clamp(trafficDemand(t) * busyness * (1 + 0.08 * fractalNoise(k, t, HOUR_MS)), 0.02, 1.1);
    // an incident (breakdown, collision) now and then: a two-hour slot has a small chance of one
    const slot = Math.floor(t / (2 * HOUR_MS));
    const incident = hashUnit(key, 2, slot) < 0.03 && (t / HOUR_MS) % 2 < 0.5 + hashUnit(key, 3, slot) ? 1 : 0;
    const rain = Math.min(1, w.rainRate / 15);
    const speed = (r.freeFlowKmh * (1 - 0.12 * rain)) / (1 + 0.65 * x ** 4) * (incident ? 0.35 : 1) * (1 + 0.04 * hashGauss(k, t));
    const count = lanes * r.perLanePerMin * x * (incident ? 0.65 : 1) * (1 + 0.07 * hashGauss(k, t, 1));
    // occupancy = density × effective vehicle length (≈ 6.5 m)
    const perLaneHourly = (count / lanes) * 60;
    const density = perLaneHourly / Math.max(3, speed); // veh/km/lane
    const occupancy = density * 0.65;
    return {
      values: {
        vehicle_count: Math.round(clamp(count, 0, 600)),
        avg_speed: round(clamp(speed, 3, 200), 1),
        occupancy: round(clamp(occupancy, 0, 98), 1),
      },
    };
  };
}

export const trafficDetector: DeviceFactory = (ctx) => {
  const { site, round: r } = pickSite(TRAFFIC_SITES, ctx);
  return { label: `${site.zh}${roundSuffix(r)}`, location: spread(site, ctx, r, 2500), model: trafficDetectorModel(ctx.seed, ctx.key, site.road, site.lanes) };
};

// ---------------------------------------------------------------------------------------------
// Buses

const ACCEL = 0.8; // m/s², gentle for standing passengers
const CAPACITY = 90;
const DRAIN_PER_KM = 0.55; // % of the battery per km
const FULL_SOC = 95;
const MIN_LAYOVER_MS = 4 * 60_000;
/** Trips run on a fixed timetable counted from here (the fleet repeats the same timetable every day). */
export const TIMETABLE_EPOCH = Date.UTC(2026, 0, 1);

interface Leg {
  /** Distance along the directional line where the leg starts and its length, m. */
  from: number;
  length: number;
}

export interface BusPlan {
  route: BusRoute;
  /** [outbound, inbound] lines. */
  lines: [Polyline, Polyline];
  /** [outbound, inbound] legs between consecutive stops. */
  legs: [Leg[], Leg[]];
  /** Stop names in travel order for each direction. */
  stops: [string[], string[]];
  /** Time between departures of this bus (one trip + layover), ms. */
  cycleMs: number;
  /** This bus's departure offset on the timetable, ms. */
  offsetMs: number;
  /** Trips between two charging layovers. */
  tripsPerCharge: number;
}

function legsOf(line: Polyline, stopVertices: number[]): Leg[] {
  const legs: Leg[] = [];
  for (let i = 1; i < stopVertices.length; i++) {
    const from = line.cumulative[stopVertices[i - 1]!]!;
    legs.push({ from, length: line.cumulative[stopVertices[i]!]! - from });
  }
  return legs;
}

/** Duration (s) of a leg driven with a trapezoidal speed profile at top speed v (m/s). */
function legSeconds(length: number, v: number): number {
  return length >= (v * v) / ACCEL ? length / v + v / ACCEL : 2 * Math.sqrt(length / ACCEL);
}

/** Distance covered (m) and speed (m/s) τ seconds into a leg. */
function legProgress(length: number, v: number, tau: number): { s: number; v: number } {
  const total = legSeconds(length, v);
  if (tau <= 0) return { s: 0, v: 0 };
  if (tau >= total) return { s: length, v: 0 };
  const vTop = length >= (v * v) / ACCEL ? v : Math.sqrt(length * ACCEL);
  const ta = vTop / ACCEL;
  if (tau < ta) return { s: 0.5 * ACCEL * tau * tau, v: ACCEL * tau };
  if (tau > total - ta) {
    const r = total - tau;
    return { s: length - 0.5 * ACCEL * r * r, v: ACCEL * r };
  }
  return { s: 0.5 * ACCEL * ta * ta + vTop * (tau - ta), v: vTop };
}

/** Top speed (m/s) of leg j on trip k: the route's cruising speed, slowed by the traffic at departure. */
function legSpeed(plan: BusPlan, key: number, trip: number, leg: number, departure: number): number {
  const congestion = 1 - 0.3 * trafficDemand(departure);
  const kmh = Math.min(60, plan.route.cruiseKmh * congestion * (0.92 + 0.16 * hashUnit(key, trip, leg, 1)));
  return kmh / 3.6;
}

const dwellSeconds = (key: number, trip: number, stop: number): number => 15 + 30 * hashUnit(key, trip, stop, 2);

export function planBus(route: BusRoute, key: number): BusPlan {
  const outLine = new Polyline(route.points);
  const inLine = outLine.reversed();
  const outStops = route.points.flatMap((pt, i) => (pt.stop === undefined ? [] : [i]));
  const n = route.points.length;
  const inStops = outStops.map((i) => n - 1 - i).reverse();
  const legs: [Leg[], Leg[]] = [legsOf(outLine, outStops), legsOf(inLine, inStops)];
  // the slowest possible trip (peak congestion, slowest draws, longest dwells) fixes the timetable
  const slowest = Math.max(
    ...legs.map((ls) => ls.reduce((sum, l) => sum + legSeconds(l.length, (route.cruiseKmh * 0.7 * 0.92) / 3.6) + 45, 0)),
  );
  const cycleMs = Math.ceil((slowest * 1000 + MIN_LAYOVER_MS) / 60_000) * 60_000;
  return {
    route,
    lines: [outLine, inLine],
    legs,
    stops: [outStops.map((i) => route.points[i]!.stop!), inStops.map((i) => route.points[n - 1 - i]!.stop!)],
    cycleMs,
    offsetMs: Math.floor(hashUnit(key, 7) * cycleMs),
    tripsPerCharge: clamp(Math.floor(110_000 / outLine.length), 1, 6),
  };
}

export interface BusState {
  trip: number;
  /** 0 outbound, 1 inbound. */
  direction: 0 | 1;
  /** Metres along this trip's line (0 at the departure terminus). */
  along: number;
  /** m/s. */
  speed: number;
  heading: number;
  lat: number;
  lng: number;
  passengers: number;
  soc: number;
  /** At a stop or terminus (not driving). */
  stopped: boolean;
  /** Index of the last stop served on this trip. */
  lastStop: number;
}

/** Passengers on board after serving stop `j` of trip `trip` (boarding falls and alighting rises along the route). */
function passengersAfterStop(plan: BusPlan, key: number, trip: number, departure: number, j: number): number {
  const m = plan.legs[0].length; // legs per trip = stops - 1
  if (j >= m) return 0; // terminus: everybody gets off
  const demand = 0.15 + 0.85 * trafficDemand(departure);
  let pax = 0;
  for (let i = 0; i <= j; i++) {
    const alightShare = i === 0 ? 0 : (i / m) * (0.25 + 0.5 * hashUnit(key, trip, i, 3));
    const boarding = plan.route.load * demand * (2.2 / m) * (1 - i / (m + 1)) * (0.4 + 1.2 * hashUnit(key, trip, i, 4));
    pax = clamp(Math.round(pax * (1 - alightShare) + boarding), 0, CAPACITY);
  }
  return pax;
}

/** Where bus `plan` is and what it does at time t (pure). */
export function busState(plan: BusPlan, key: number, t: number): BusState {
  const rel = t - TIMETABLE_EPOCH - plan.offsetMs;
  const trip = Math.floor(rel / plan.cycleMs);
  const departure = TIMETABLE_EPOCH + plan.offsetMs + trip * plan.cycleMs;
  const direction = (((trip % 2) + 2) % 2) as 0 | 1;
  const line = plan.lines[direction];
  const legs = plan.legs[direction];
  let elapsed = (t - departure) / 1000;
  const chargeIndex = ((trip % plan.tripsPerCharge) + plan.tripsPerCharge) % plan.tripsPerCharge;
  const socAt = (along: number) => FULL_SOC - DRAIN_PER_KM * ((chargeIndex * line.length + along) / 1000);

  let along = 0;
  for (let j = 0; j < legs.length; j++) {
    const leg = legs[j]!;
    const v = legSpeed(plan, key, trip, j, departure);
    const driveS = legSeconds(leg.length, v);
    if (elapsed < driveS) {
      const pr = legProgress(leg.length, v, elapsed);
      along = leg.from + pr.s;
      const at = line.at(along);
      return {
        trip,
        direction,
        along,
        speed: pr.v,
        heading: at.heading,
        lat: at.lat,
        lng: at.lng,
        passengers: passengersAfterStop(plan, key, trip, departure, j),
        soc: socAt(along),
        stopped: false,
        lastStop: j,
      };
    }
    elapsed -= driveS;
    along = leg.from + leg.length;
    const dwell = j + 1 < legs.length ? dwellSeconds(key, trip, j + 1) : Infinity; // the last stop: layover until the next departure
    if (elapsed < dwell) {
      const at = line.at(along);
      let soc = socAt(along);
      if (j + 1 === legs.length && chargeIndex === plan.tripsPerCharge - 1) {
        // charging layover at the terminus: back to full by the next departure
        const layoverMs = departure + plan.cycleMs - (t - elapsed * 1000);
        const f = clamp((elapsed * 1000) / Math.max(1, layoverMs), 0, 1);
        soc = soc + (FULL_SOC - soc) * f;
      }
      return {
        trip,
        direction,
        along,
        speed: 0,
        heading: at.heading,
        lat: at.lat,
        lng: at.lng,
        passengers: passengersAfterStop(plan, key, trip, departure, j + 1),
        soc,
        stopped: true,
        lastStop: j + 1,
      };
    }
    elapsed -= dwell;
  }
  /* c8 ignore next */
  throw new Error('unreachable: the last stop absorbs the rest of the cycle');
}

export function busModel(plan: BusPlan, key: number): Model {
  const k = subKey(key, 'bus');
  return (t) => {
    const st = busState(plan, key, t);
    const kmh = st.speed * 3.6 * (st.stopped ? 1 : 1 + 0.03 * hashGauss(k, t));
    return {
      values: {
        speed: round(clamp(kmh, 0, 150), 1),
        heading: round(st.heading, 1) % 360,
        passengers: st.passengers,
        battery_soc: round(clamp(st.soc, 0, 100), 1),
      },
      position: { lat: round(st.lat, 6), lng: round(st.lng, 6) },
    };
  };
}

export const bus: DeviceFactory = (ctx) => {
  const { site: route, round: r } = pickSite(BUS_ROUTES, ctx);
  const plan = planBus(route, ctx.key);
  return { label: `${route.id}路 ${route.zh} ${r + 1}号车`, model: busModel(plan, ctx.key) };
};

export const trafficFactories = {
  'traffic-detector': trafficDetector,
  bus,
} satisfies Record<string, DeviceFactory>;
