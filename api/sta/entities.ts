import type { EntityType } from './model.ts';
import type { EntityId } from './resource-path.ts';
import type { StaSql } from './sql-context.ts';

/**
 * The SensorThings entities GuanLink serves, each as an SQL source over its own tables
 * (STA-DESIGN.md, "Mapping onto GuanLink"): a SELECT whose rows are the entities, with
 *
 * - key columns that make the `@iot.id` (a device id; `'<deviceId>-<keyId>'` for a Datastream;
 *   `'<deviceId>-<keyId>-<ts ms>'` for an Observation), also the entity's stable order;
 * - property columns that $filter, $orderby and $select name (kind: how they compare);
 * - link columns: navigation is equality of columns (a Datastream's `device_id` is its Thing's).
 *
 * Every source is restricted to the principal's scope (StaSql). A source is a plain SELECT (no
 * aggregate, no LIMIT) so that PostgreSQL pushes conditions on its key columns down into the
 * tables' indexes (devices by id, readings by (device_id, ts)).
 */

export type ColumnType = 'int4' | 'text' | 'timestamptz';
export type Kind = 'number' | 'text' | 'time' | 'json';

export interface Property {
  /** A column of the source. */
  col: string;
  kind: Kind;
}

export interface EntitySource {
  type: EntityType;
  /** SELECT … of the entities in the principal's scope. */
  sql(ctx: StaSql): string;
  /** A condition (on a column of `e`) that the entity set's own listing applies, and not a lookup by id or a navigation. */
  listed?: string;
  /** SELECT of one number: how many entities there are in all, cheaper than counting `sql`'s rows. */
  countAll?(ctx: StaSql): string;
  /** Columns that identify an entity, with their types, in the order of its `@iot.id`'s parts. */
  keys: readonly { col: string; type: ColumnType }[];
  /** The key columns in the set's stable order (Observations: by time within a device, then key). */
  order: readonly string[];
  /** What its ids look like, for messages. */
  idForm: string;
  /** The key columns' values of an `@iot.id`, or undefined when it cannot name an entity of this set. */
  parseId(id: EntityId): unknown[] | undefined;
  idOf(row: Row): EntityId;
  properties: Readonly<Record<string, Property>>;
  /** Point position columns, for geo.intersects/st_* on a property (`location`, `observedArea`, `feature`). */
  geometry?: { property: string; lng: string; lat: string; cell: string };
  /** Navigation properties served: pairs [column of the target, column of this source] that must be equal. */
  links: Readonly<Record<string, readonly (readonly [string, string])[]>>;
  /** The entity's properties (not @iot.* nor navigation links) from a row. */
  render(row: Row, base: string): Record<string, unknown>;
}

export type Row = Record<string, unknown>;

const OM = 'http://www.opengis.net/def/observationType/OGC-OM/2.0/';
const GEOJSON = 'application/geo+json';

const intId = (id: EntityId): unknown[] | undefined => (typeof id === 'number' ? (Number.isInteger(id) && id >= 0 && id <= 2 ** 31 - 1 ? [id] : undefined) : /^\d{1,10}$/.test(id) && Number(id) <= 2 ** 31 - 1 ? [Number(id)] : undefined);
/** `'12-5'`, `'12-5-1733600000000'`: the numbers of a dashed id; the first `int4Parts` are database integers. */
function dashed(id: EntityId, parts: number, int4Parts: number): number[] | undefined {
  if (typeof id !== 'string') return undefined;
  const m = id.split('-');
  if (m.length !== parts || !m.every((p) => /^\d{1,15}$/.test(p))) return undefined;
  const n = m.map(Number);
  return n.slice(0, int4Parts).every((x) => x <= 2 ** 31 - 1) ? n : undefined;
}
const iso = (v: unknown): string | null => (v instanceof Date ? v.toISOString() : null);
/** Epoch milliseconds up to the year 9999 (what an ISO 8601 date-time of four-digit years holds), as an instant; else undefined. */
const instant = (ms: number | undefined): string | undefined => (ms !== undefined && ms <= 253_402_300_799_999 ? new Date(ms).toISOString() : undefined);
/** `'12-1733600000000'`: a device at an instant (a moving device's past position, a reading). */
function deviceAt(id: EntityId): unknown[] | undefined {
  const n = dashed(id, 2, 1);
  const at = instant(n?.[1]);
  return n && at ? [n[0], at] : undefined;
}
/** `5` (a device's current or registered place) or `'5-1733600000000'` (a moving device at an instant). */
const deviceOrDeviceAt = (id: EntityId): unknown[] | undefined => {
  const device = intId(id);
  return device ? [device[0], '-infinity'] : deviceAt(id);
};
const point = (lng: unknown, lat: unknown, alt?: unknown) =>
  typeof lng === 'number' && typeof lat === 'number' ? { type: 'Point', coordinates: typeof alt === 'number' ? [lng, lat, alt] : [lng, lat] } : null;

/** A device's position: a moving device's latest one (device_state), else where it is registered. */
const POSITION = `CASE WHEN coalesce((t.definition ->> 'moving')::boolean, false) AND s.lat IS NOT NULL`;
const positionColumns = `${POSITION} THEN s.lng ELSE d.lng END AS lng, ${POSITION} THEN s.lat ELSE d.lat END AS lat,
  ${POSITION} THEN s.alt ELSE d.alt END AS alt, ${POSITION} THEN s.cell ELSE d.cell END AS cell`;

const thing: EntitySource = {
  type: 'Thing',
  sql: (ctx) => `SELECT d.id AS device_id, d.name, coalesce(t.definition -> 'label' ->> 'en', d.type) AS description,
      jsonb_build_object('type', d.type, 'domain', t.domain)
        || coalesce((SELECT jsonb_object_agg(a.key, a.value ORDER BY a.scope) FROM device_attributes a WHERE a.device_id = d.id AND a.scope IN ('client', 'shared')), '{}') AS properties,
      '-infinity'::timestamptz AS current_ts
    FROM devices d JOIN device_types t ON t.name = d.type WHERE ${ctx.deviceVisible('d.id')}`,
  idForm: '5',
  keys: [{ col: 'device_id', type: 'int4' }],
  order: ['device_id'],
  parseId: intId,
  idOf: (r) => r.device_id as number,
  properties: { name: { col: 'name', kind: 'text' }, description: { col: 'description', kind: 'text' }, properties: { col: 'properties', kind: 'json' } },
  links: {
    // Its current Location only (where it was is reached through HistoricalLocations).
    Locations: [
      ['device_id', 'device_id'],
      ['loc_ts', 'current_ts'],
    ],
    HistoricalLocations: [['device_id', 'device_id']],
    Datastreams: [['device_id', 'device_id']],
  },
  render: (r) => ({ name: r.name, description: r.description, properties: r.properties }),
};

/** A moving device's located readings (positions over time), as rows `r` with its device `d`. */
const movingReadings = (ctx: StaSql): string => {
  const area = ctx.readingsArea?.({ deviceId: 'r.device_id', lng: 'r.lng', lat: 'r.lat', cell: 'r.cell' });
  return `readings r JOIN devices d ON d.id = r.device_id JOIN device_types t ON t.name = d.type
    WHERE coalesce((t.definition ->> 'moving')::boolean, false) AND r.lat IS NOT NULL AND ${ctx.deviceVisible('r.device_id')}${area ? ` AND ${area}` : ''}`;
};
const timeText = (col: string) => `to_char(${col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/**
 * Where a device is (`current`: registered, or a moving device's latest position; `@iot.id` the
 * device id), and where a moving device was at each located reading (`'<deviceId>-<ts ms>'`,
 * reached through its HistoricalLocations). `loc_ts` keys both: -infinity for the current one.
 * The Locations collection lists the current ones only (`listed`).
 */
const location: EntitySource = {
  type: 'Location',
  sql: (ctx) => `SELECT * FROM (
      SELECT d.id AS device_id, d.name, 'Position of ' || d.name AS description, '${GEOJSON}'::text AS encoding_type, ${positionColumns},
        jsonb_build_object('moving', coalesce((t.definition ->> 'moving')::boolean, false), 'time', ${POSITION} THEN s.position_ts END) AS properties,
        '-infinity'::timestamptz AS loc_ts, true AS current
      FROM devices d JOIN device_types t ON t.name = d.type LEFT JOIN device_state s ON s.device_id = d.id WHERE ${ctx.deviceVisible('d.id')}
      UNION ALL
      SELECT r.device_id, d.name || ' at ' || ${timeText('r.ts')}, 'Position of ' || d.name, '${GEOJSON}'::text, r.lng, r.lat, r.alt::float8, r.cell,
        jsonb_build_object('moving', true, 'time', r.ts), r.ts, false
      FROM ${movingReadings(ctx)}) p
    CROSS JOIN LATERAL (SELECT jsonb_build_object('type', 'Point', 'coordinates', CASE WHEN p.alt IS NULL THEN jsonb_build_array(p.lng, p.lat) ELSE jsonb_build_array(p.lng, p.lat, p.alt) END) AS location) g
    WHERE p.lat IS NOT NULL`,
  listed: 'current',
  idForm: "5 (where a device is) or '5-1733600000000' (where a moving device was, at a time in ms)",
  keys: [
    { col: 'device_id', type: 'int4' },
    { col: 'loc_ts', type: 'timestamptz' },
  ],
  order: ['device_id', 'loc_ts'],
  parseId: deviceOrDeviceAt,
  idOf: (r) => (r.current ? (r.device_id as number) : `${r.device_id}-${(r.loc_ts as Date).getTime()}`),
  properties: {
    name: { col: 'name', kind: 'text' },
    description: { col: 'description', kind: 'text' },
    encodingType: { col: 'encoding_type', kind: 'text' },
    location: { col: 'location', kind: 'json' },
    properties: { col: 'properties', kind: 'json' },
  },
  geometry: { property: 'location', lng: 'lng', lat: 'lat', cell: 'cell' },
  links: {
    Things: [['device_id', 'device_id']],
    HistoricalLocations: [
      ['device_id', 'device_id'],
      ['ts', 'loc_ts'],
    ],
  },
  render: (r) => ({ name: r.name, description: r.description, encodingType: r.encoding_type, location: point(r.lng, r.lat, r.alt), properties: r.properties }),
};

/** A moving device's position at one located reading: the Thing, its time, and the Location it was at. */
const historicalLocation: EntitySource = {
  type: 'HistoricalLocation',
  sql: (ctx) => `SELECT r.device_id, r.ts FROM ${movingReadings(ctx)}`,
  idForm: "'5-1733600000000' (device id, time in ms)",
  keys: [
    { col: 'device_id', type: 'int4' },
    { col: 'ts', type: 'timestamptz' },
  ],
  order: ['device_id', 'ts'],
  parseId: deviceAt,
  idOf: (r) => `${r.device_id}-${(r.ts as Date).getTime()}`,
  properties: { time: { col: 'ts', kind: 'time' } },
  links: {
    Thing: [['device_id', 'device_id']],
    Locations: [
      ['device_id', 'device_id'],
      ['loc_ts', 'ts'],
    ],
  },
  render: (r) => ({ time: iso(r.ts) }),
};

/** Keys a device reported (device_state.latest), but not the position keys: those are columns of the readings, not Observations. */
const DATASTREAMS = `FROM device_state s JOIN devices d ON d.id = s.device_id JOIN device_types t ON t.name = d.type
    CROSS JOIN LATERAL jsonb_object_keys(s.latest) AS lk(name) JOIN telemetry_keys k ON k.name = lk.name
   WHERE lk.name NOT IN ('latitude', 'longitude', 'altitude')`;

const sensor: EntitySource = {
  type: 'Sensor',
  sql: (ctx) => `SELECT st.name AS type_name, st.name, coalesce(st.definition -> 'label' ->> 'en', st.name) AS description, 'application/json'::text AS encoding_type,
      jsonb_build_object('domain', st.domain, 'label', st.definition -> 'label', 'moving', coalesce((st.definition ->> 'moving')::boolean, false)) AS properties
    FROM device_types st WHERE EXISTS (SELECT 1 ${DATASTREAMS} AND d.type = st.name AND ${ctx.deviceVisible('d.id')})`,
  idForm: "'river-level-station'",
  keys: [{ col: 'type_name', type: 'text' }],
  order: ['type_name'],
  parseId: (id) => (typeof id === 'string' ? [id] : undefined),
  idOf: (r) => r.type_name as string,
  properties: {
    name: { col: 'name', kind: 'text' },
    description: { col: 'description', kind: 'text' },
    encodingType: { col: 'encoding_type', kind: 'text' },
    properties: { col: 'properties', kind: 'json' },
  },
  links: { Datastreams: [['type_name', 'type_name']] },
  // metadata: the device type's full declaration in the REST API.
  render: (r, base) => ({ name: r.name, description: r.description, encodingType: r.encoding_type, metadata: `${base}/api/v1/device-types/${encodeURIComponent(r.name as string)}`, properties: r.properties }),
};

/** Keys some visible device reported: found in one hashed pass over device_state (an EXISTS per key would scan it once per key). */
const observedProperty: EntitySource = {
  type: 'ObservedProperty',
  sql: (ctx) => `SELECT k.id::int4 AS key_id, k.name, 'urn:guanlink:telemetry-key:' || k.name AS definition,
      coalesce((SELECT t.definition -> 'keys' -> k.name -> 'label' ->> 'en' FROM device_types t WHERE t.definition -> 'keys' ? k.name ORDER BY t.name LIMIT 1), k.name) AS description,
      jsonb_build_object('unit', (SELECT t.definition -> 'keys' -> k.name ->> 'unit' FROM device_types t WHERE t.definition -> 'keys' ? k.name ORDER BY t.name LIMIT 1)) AS properties
    FROM telemetry_keys k
    WHERE k.name IN (SELECT jsonb_object_keys(s.latest) FROM device_state s WHERE ${ctx.deviceVisible('s.device_id')})
      AND k.name NOT IN ('latitude', 'longitude', 'altitude')`,
  idForm: '12',
  keys: [{ col: 'key_id', type: 'int4' }],
  order: ['key_id'],
  parseId: intId,
  idOf: (r) => r.key_id as number,
  properties: {
    name: { col: 'name', kind: 'text' },
    definition: { col: 'definition', kind: 'text' },
    description: { col: 'description', kind: 'text' },
    properties: { col: 'properties', kind: 'json' },
  },
  links: { Datastreams: [['key_id', 'key_id']] },
  render: (r) => ({ name: r.name, definition: r.definition, description: r.description, properties: r.properties }),
};

/** observationType from the key's declared type, else its latest value's JSON type. */
const OBSERVATION_TYPE = `'${OM}' || CASE coalesce(t.definition -> 'keys' -> k.name ->> 'type', jsonb_typeof(s.latest -> k.name -> 1))
    WHEN 'number' THEN 'OM_Measurement' WHEN 'boolean' THEN 'OM_TruthObservation' WHEN 'string' THEN 'OM_CategoryObservation' ELSE 'OM_Observation' END`;

const datastream: EntitySource = {
  type: 'Datastream',
  sql: (ctx) => {
    const area = ctx.readingsArea?.({ deviceId: 'r.device_id', lng: 'r.lng', lat: 'r.lat', cell: 'r.cell' });
    // phenomenonTime: the key's first reading (the readings' (device_id, ts) index, in order, to the first holding the key) to its latest (device_state).
    return `SELECT p.*, CASE WHEN p.lat IS NOT NULL THEN jsonb_build_object('type', 'Point', 'coordinates', jsonb_build_array(p.lng, p.lat)) END AS observed_area,
      (SELECT r.ts FROM readings r WHERE r.device_id = p.device_id AND (p.key_id::int2 = ANY (r.keys) OR r.jvals ? p.key_id::text)${area ? ` AND ${area}` : ''}
        ORDER BY r.ts LIMIT 1) AS phenomenon_first,
      NULL::timestamptz AS result_time FROM (
    SELECT s.device_id, k.id::int4 AS key_id, d.type AS type_name, d.name || ' ' || k.name AS name,
      coalesce(t.definition -> 'keys' -> k.name -> 'label' ->> 'en', k.name) || ' of ' || d.name AS description,
      jsonb_build_object('name', t.definition -> 'keys' -> k.name ->> 'unit', 'symbol', t.definition -> 'keys' -> k.name ->> 'unit', 'definition', null) AS unit_of_measurement,
      ${OBSERVATION_TYPE} AS observation_type,
      ${positionColumns},
      jsonb_build_object('key', k.name, 'domain', t.domain) AS properties,
      'epoch'::timestamptz + ((s.latest -> k.name ->> 0)::int8 * interval '1 millisecond') AS phenomenon_last
    ${DATASTREAMS} AND ${ctx.deviceVisible('d.id')}) p`;
  },
  idForm: "'5-12' (device id, key id)",
  keys: [
    { col: 'device_id', type: 'int4' },
    { col: 'key_id', type: 'int4' },
  ],
  order: ['device_id', 'key_id'],
  parseId: (id) => dashed(id, 2, 2),
  idOf: (r) => `${r.device_id}-${r.key_id}`,
  properties: {
    name: { col: 'name', kind: 'text' },
    description: { col: 'description', kind: 'text' },
    unitOfMeasurement: { col: 'unit_of_measurement', kind: 'json' },
    observationType: { col: 'observation_type', kind: 'text' },
    observedArea: { col: 'observed_area', kind: 'json' },
    // An interval: a filter or order compares its end, the latest Observation's time.
    phenomenonTime: { col: 'phenomenon_last', kind: 'time' },
    // Not recorded (GuanLink has no result time apart from the phenomenon's): null, a filter on it matches nothing.
    resultTime: { col: 'result_time', kind: 'time' },
    properties: { col: 'properties', kind: 'json' },
  },
  geometry: { property: 'observedArea', lng: 'lng', lat: 'lat', cell: 'cell' },
  links: {
    Thing: [['device_id', 'device_id']],
    Sensor: [['type_name', 'type_name']],
    ObservedProperty: [['key_id', 'key_id']],
    Observations: [
      ['device_id', 'device_id'],
      ['key_id', 'key_id'],
    ],
  },
  render: (r) => ({
    name: r.name,
    description: r.description,
    unitOfMeasurement: r.unit_of_measurement,
    observationType: r.observation_type,
    observedArea: r.observed_area,
    phenomenonTime: r.phenomenon_first instanceof Date && r.phenomenon_last instanceof Date ? `${r.phenomenon_first.toISOString()}/${r.phenomenon_last.toISOString()}` : null,
    properties: r.properties,
  }),
};

const observation: EntitySource = {
  type: 'Observation',
  sql: (ctx) => {
    const area = ctx.readingsArea?.({ deviceId: 'r.device_id', lng: 'r.lng', lat: 'r.lat', cell: 'r.cell' });
    // One Observation per key of a readings row: numbers from keys/vals, other types from jvals.
    // Its FeatureOfInterest: the station (foi_ts -infinity), or for a moving device the reading's own position (foi_ts = ts).
    return `SELECT r.device_id, o.key_id, r.ts, o.result, NULL::jsonb AS result_quality, NULL::text AS valid_time, NULL::jsonb AS parameters,
        CASE WHEN (SELECT coalesce((t.definition ->> 'moving')::boolean, false) FROM devices d JOIN device_types t ON t.name = d.type WHERE d.id = r.device_id)
             THEN r.ts ELSE '-infinity'::timestamptz END AS foi_ts
      FROM readings r CROSS JOIN LATERAL (
        SELECT u.k::int4 AS key_id, to_jsonb(u.v) AS result FROM unnest(r.keys, r.vals) AS u(k, v)
        UNION ALL SELECT j.key::int4, j.value FROM jsonb_each(r.jvals) AS j) o
      WHERE ${ctx.deviceVisible('r.device_id')}${area ? ` AND ${area}` : ''}`;
  },
  idForm: "'5-12-1733600000000' (device id, key id, time in ms)",
  // Keys per readings row, without making a row of each (QGIS asks for this count when it opens an Observations layer).
  countAll: (ctx) => {
    const area = ctx.readingsArea?.({ deviceId: 'r.device_id', lng: 'r.lng', lat: 'r.lat', cell: 'r.cell' });
    return `SELECT coalesce(sum(cardinality(r.keys) + coalesce((SELECT count(*) FROM jsonb_object_keys(r.jvals)), 0)), 0) AS n
      FROM readings r WHERE ${ctx.deviceVisible('r.device_id')}${area ? ` AND ${area}` : ''}`;
  },
  keys: [
    { col: 'device_id', type: 'int4' },
    { col: 'key_id', type: 'int4' },
    { col: 'ts', type: 'timestamptz' },
  ],
  order: ['device_id', 'ts', 'key_id'],
  parseId: (id) => {
    const n = dashed(id, 3, 2);
    const at = instant(n?.[2]);
    return n && at ? [n[0], n[1], at] : undefined;
  },
  idOf: (r) => `${r.device_id}-${r.key_id}-${(r.ts as Date).getTime()}`,
  properties: {
    phenomenonTime: { col: 'ts', kind: 'time' },
    resultTime: { col: 'ts', kind: 'time' },
    result: { col: 'result', kind: 'json' },
    // GuanLink records none of these: null.
    resultQuality: { col: 'result_quality', kind: 'json' },
    validTime: { col: 'valid_time', kind: 'text' },
    parameters: { col: 'parameters', kind: 'json' },
  },
  links: {
    Datastream: [
      ['device_id', 'device_id'],
      ['key_id', 'key_id'],
    ],
    FeatureOfInterest: [
      ['device_id', 'device_id'],
      ['foi_ts', 'foi_ts'],
    ],
  },
  render: (r) => ({ phenomenonTime: iso(r.ts), resultTime: iso(r.ts), result: r.result }),
};

/**
 * What was observed: a station's place (its registered position; `@iot.id` the device id), or
 * for a moving device the position of one located reading (`'<deviceId>-<ts ms>'`). `foi_ts`
 * keys both: -infinity for a station, the reading's time for a moving device.
 */
const featureOfInterest: EntitySource = {
  type: 'FeatureOfInterest',
  sql: (ctx) => `SELECT f.*, '${GEOJSON}'::text AS encoding_type,
        jsonb_build_object('type', 'Point', 'coordinates', CASE WHEN f.alt IS NULL THEN jsonb_build_array(f.lng, f.lat) ELSE jsonb_build_array(f.lng, f.lat, f.alt) END) AS feature,
        jsonb_build_object('deviceId', f.device_id, 'time', CASE WHEN NOT f.station THEN f.foi_ts END) AS properties FROM (
      SELECT d.id AS device_id, '-infinity'::timestamptz AS foi_ts, true AS station, d.name, 'Station ' || d.name AS description,
        d.lng, d.lat, d.alt, d.cell
      FROM devices d JOIN device_types t ON t.name = d.type
      WHERE NOT coalesce((t.definition ->> 'moving')::boolean, false) AND d.lat IS NOT NULL AND ${ctx.deviceVisible('d.id')}
    UNION ALL
    SELECT r.device_id, r.ts, false, d.name || ' at ' || ${timeText('r.ts')}, 'Position of ' || d.name,
        r.lng, r.lat, r.alt::float8, r.cell
      FROM ${movingReadings(ctx)}) f`,
  idForm: "5 (a station) or '5-1733600000000' (a moving device at a time in ms)",
  keys: [
    { col: 'device_id', type: 'int4' },
    { col: 'foi_ts', type: 'timestamptz' },
  ],
  order: ['device_id', 'foi_ts'],
  parseId: deviceOrDeviceAt,
  idOf: (r) => (r.station ? (r.device_id as number) : `${r.device_id}-${(r.foi_ts as Date).getTime()}`),
  properties: {
    name: { col: 'name', kind: 'text' },
    description: { col: 'description', kind: 'text' },
    encodingType: { col: 'encoding_type', kind: 'text' },
    feature: { col: 'feature', kind: 'json' },
    properties: { col: 'properties', kind: 'json' },
  },
  geometry: { property: 'feature', lng: 'lng', lat: 'lat', cell: 'cell' },
  links: {
    Observations: [
      ['device_id', 'device_id'],
      ['foi_ts', 'foi_ts'],
    ],
  },
  render: (r) => ({ name: r.name, description: r.description, encodingType: r.encoding_type, feature: point(r.lng, r.lat, r.alt), properties: r.properties }),
};

/** The entity sets served, by entity type; the other (MultiDatastreams) answers 501. */
export const SOURCES: Partial<Record<EntityType, EntitySource>> = {
  Thing: thing,
  Location: location,
  HistoricalLocation: historicalLocation,
  Sensor: sensor,
  ObservedProperty: observedProperty,
  Datastream: datastream,
  Observation: observation,
  FeatureOfInterest: featureOfInterest,
};
