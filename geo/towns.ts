/**
 * Dongguan's towns and subdistricts (镇街) as areas: look one up by name, merge several into one
 * area, find the town a point lies in.
 *
 * The shipped areas (shapes/dongguan-towns.json, built by scripts/towns.ts) are APPROXIMATE: the
 * Voronoi cell of each town's approximate centre, clipped to Dongguan's outline. An operator's
 * official boundaries replace them: parseTownsGeoJson(file) then createTownIndex(collection).
 */
import type { Feature, FeatureCollection, MultiPolygon, Polygon, Position } from 'geojson';
import { bbox as turfBbox, booleanPointInPolygon, featureCollection, union as turfUnion } from '@turf/turf';
import { AreaError, parsePolygon } from './area.ts';
import shippedTowns from './shapes/dongguan-towns.json' with { type: 'json' };

export type TownKind = 'town' | 'subdistrict' | 'district';

export interface TownArea {
  /** Chinese name as in the data, e.g. 虎门镇, 莞城街道, 松山湖. */
  name: string;
  /** English name, e.g. Humen; '' when the data has none. */
  nameEn: string;
  kind: TownKind;
  geometry: Polygon | MultiPolygon;
  /** The town's centre [lng, lat], when the data gives one. */
  center?: [number, number];
}

export interface TownIndex {
  /** Every town's name, in the order of the data. */
  names(): string[];
  /**
   * The town called `name`: its Chinese name, that name without 镇/街道, or its English name (any
   * case; spaces, apostrophes and hyphens ignored). The geometry is the index's own: do not modify it.
   */
  find(name: string): TownArea | undefined;
  /**
   * The union of the named towns as one Polygon or MultiPolygon (shared borders dissolved);
   * `unknown` lists the names that matched no town. When none matched (or `names` is empty),
   * `geometry` is the empty MultiPolygon (no coordinates): nowhere.
   */
  union(names: readonly string[]): { geometry: Polygon | MultiPolygon; unknown: string[] };
  /** The town the point lies in (boundaries count as inside; the first in data order on a border). */
  townAt(lng: number, lat: number): string | undefined;
}

/** An operator's towns file that is not usable; `message` names the feature and the problem. */
export class TownsError extends Error {
  override readonly name = 'TownsError';
}

const KINDS: readonly TownKind[] = ['town', 'subdistrict', 'district'];
const SUFFIX = /(镇|街道)$/u;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Lookup key: NFKC, trimmed, lower case, without spaces, apostrophes, hyphens or dots ("Chang'an" = "changan"). */
const key = (s: string): string =>
  s
    .normalize('NFKC')
    .trim()
    .toLowerCase()
    .replace(/[\s'’\-_.·]/gu, '');

const kindOf = (name: string): TownKind => (name.endsWith('镇') ? 'town' : name.endsWith('街道') ? 'subdistrict' : 'district');

function isCenter(v: unknown): v is [number, number] {
  return Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
}

/**
 * An index over a FeatureCollection of towns: each feature has a `name` property and a Polygon or
 * MultiPolygon geometry (check an operator's file with parseTownsGeoJson first); optional
 * properties `nameEn`, `kind` (else guessed from the name's suffix) and `center`.
 */
export function createTownIndex(collection: FeatureCollection): TownIndex {
  const towns: (TownArea & { bbox: [number, number, number, number] })[] = collection.features.map((f, i) => {
    const p = f.properties ?? {};
    const name = typeof p.name === 'string' ? p.name.trim() : '';
    if (!name) throw new TownsError(`feature ${i}: no "name" property`);
    const g = f.geometry;
    if (!g || (g.type !== 'Polygon' && g.type !== 'MultiPolygon')) throw new TownsError(`feature ${i} (${name}): the geometry must be a Polygon or MultiPolygon`);
    const town: TownArea & { bbox: [number, number, number, number] } = {
      name,
      nameEn: typeof p.nameEn === 'string' ? p.nameEn.trim() : '',
      kind: KINDS.includes(p.kind as TownKind) ? (p.kind as TownKind) : kindOf(name),
      geometry: g,
      bbox: turfBbox(g) as [number, number, number, number],
    };
    if (isCenter(p.center)) town.center = [p.center[0], p.center[1]];
    return town;
  });

  // Exact names first, so that an alias never hides another town's own name.
  const byKey = new Map<string, (typeof towns)[number]>();
  for (const t of towns) if (!byKey.has(key(t.name))) byKey.set(key(t.name), t);
  for (const t of towns) {
    for (const alias of [t.name.replace(SUFFIX, ''), t.nameEn]) {
      const k = key(alias);
      if (k && !byKey.has(k)) byKey.set(k, t);
    }
  }

  const withoutBbox = ({ bbox: _, ...t }: (typeof towns)[number]): TownArea => t;

  return {
    names: () => towns.map((t) => t.name),

    find(name) {
      const t = byKey.get(key(name));
      return t && withoutBbox(t);
    },

    union(names) {
      const unknown: string[] = [];
      const found = new Map<string, Polygon | MultiPolygon>();
      for (const n of names) {
        const t = byKey.get(key(n));
        if (t) found.set(t.name, t.geometry);
        else if (!unknown.includes(n)) unknown.push(n);
      }
      const parts = [...found.values()];
      if (parts.length === 0) return { geometry: { type: 'MultiPolygon', coordinates: [] }, unknown };
      if (parts.length === 1) return { geometry: structuredClone(parts[0]!), unknown };
      const merged = turfUnion(featureCollection(parts.map((geometry): Feature<Polygon | MultiPolygon> => ({ type: 'Feature', properties: {}, geometry }))));
      return { geometry: merged ? onePolygonIfOne(merged.geometry) : { type: 'MultiPolygon', coordinates: [] }, unknown };
    },

    townAt(lng, lat) {
      const pt: Position = [lng, lat];
      for (const t of towns) {
        const [w, s, e, n] = t.bbox;
        if (lng >= w && lng <= e && lat >= s && lat <= n && booleanPointInPolygon(pt, t.geometry)) return t.name;
      }
      return undefined;
    },
  };
}

/** A MultiPolygon of one polygon as a Polygon. */
const onePolygonIfOne = (g: Polygon | MultiPolygon): Polygon | MultiPolygon =>
  g.type === 'MultiPolygon' && g.coordinates.length === 1 ? { type: 'Polygon', coordinates: g.coordinates[0]! } : g;

/**
 * An operator's towns file (official boundaries), checked: a GeoJSON FeatureCollection whose
 * features each have a unique, non-empty `name` property and a Polygon or MultiPolygon geometry
 * that is a valid area (parsePolygon: closed rings, no self-intersections, at most 10 000
 * vertices). Optional properties: `nameEn` (string), `kind` (town | subdistrict | district),
 * `center` ([lng, lat]). Throws TownsError naming the feature at fault.
 */
export function parseTownsGeoJson(input: unknown): FeatureCollection<Polygon | MultiPolygon> {
  if (!isObject(input) || input.type !== 'FeatureCollection') throw new TownsError('the towns file must be a GeoJSON FeatureCollection');
  if (!Array.isArray(input.features) || input.features.length === 0) throw new TownsError('the towns FeatureCollection has no features');
  const seen = new Map<string, number>();
  const features = input.features.map((f: unknown, i): Feature<Polygon | MultiPolygon> => {
    if (!isObject(f) || f.type !== 'Feature') throw new TownsError(`feature ${i} is not a GeoJSON Feature`);
    const props = isObject(f.properties) ? f.properties : {};
    const name = typeof props.name === 'string' ? props.name.trim() : '';
    if (!name) throw new TownsError(`feature ${i} has no "name" property (a non-empty string, e.g. "虎门镇")`);
    const where = `feature ${i} ("${name}")`;
    const previous = seen.get(key(name));
    if (previous !== undefined) throw new TownsError(`${where}: the name is already used by feature ${previous}`);
    seen.set(key(name), i);
    if (props.nameEn !== undefined && typeof props.nameEn !== 'string') throw new TownsError(`${where}: "nameEn" must be a string`);
    if (props.kind !== undefined && !KINDS.includes(props.kind as TownKind)) throw new TownsError(`${where}: "kind" must be one of ${KINDS.join(', ')}`);
    if (props.center !== undefined && !isCenter(props.center)) throw new TownsError(`${where}: "center" must be [longitude, latitude]`);
    let geometry: Polygon | MultiPolygon;
    try {
      geometry = parsePolygon(f.geometry);
    } catch (e) {
      if (e instanceof AreaError) throw new TownsError(`${where}: ${e.message}`);
      throw e;
    }
    return { type: 'Feature', properties: { ...props, name }, geometry };
  });
  return { type: 'FeatureCollection', features };
}

/** The approximate areas shipped with GuanLink (see shapes/dongguan-towns.json's "source"). */
export const DEFAULT_TOWNS: TownIndex = createTownIndex(shippedTowns as FeatureCollection);
