/**
 * The OGC SensorThings API 1.1 entity model (OGC 18-088, clause 8 "Sensing entities" and the
 * MultiDatastream extension, clause 12): the entity types, their properties and navigation
 * properties with cardinalities. Everything that reads a request (resource paths, `$select`,
 * `$expand`, `$orderby`) checks names against this one table.
 */

export const ENTITY_TYPES = ['Thing', 'Location', 'HistoricalLocation', 'Datastream', 'MultiDatastream', 'Sensor', 'ObservedProperty', 'Observation', 'FeatureOfInterest'] as const;
export type EntityType = (typeof ENTITY_TYPES)[number];

export interface Navigation {
  /** The entity type reached. */
  target: EntityType;
  /** to-many navigation properties are plural (`Datastreams`), to-one singular (`Thing`): 18-088 §9.2.3. */
  many: boolean;
}

export interface EntityDefinition {
  /** The entity set's name (`Things`), which is also the name of to-many navigation properties to it. */
  set: string;
  /** Properties other than `@iot.id`/`id` and the navigation properties, in the standard's order. */
  properties: readonly string[];
  /** Properties whose value is JSON that a `$filter` or `$orderby` path may walk into (`properties/owner`, `location/type`). */
  jsonProperties: readonly string[];
  navigation: Readonly<Record<string, Navigation>>;
}

const one = (target: EntityType): Navigation => ({ target, many: false });
const many = (target: EntityType): Navigation => ({ target, many: true });

export const MODEL: Readonly<Record<EntityType, EntityDefinition>> = {
  Thing: {
    set: 'Things',
    properties: ['name', 'description', 'properties'],
    jsonProperties: ['properties'],
    navigation: { Locations: many('Location'), HistoricalLocations: many('HistoricalLocation'), Datastreams: many('Datastream'), MultiDatastreams: many('MultiDatastream') },
  },
  Location: {
    set: 'Locations',
    properties: ['name', 'description', 'encodingType', 'location', 'properties'],
    jsonProperties: ['location', 'properties'],
    navigation: { Things: many('Thing'), HistoricalLocations: many('HistoricalLocation') },
  },
  HistoricalLocation: {
    set: 'HistoricalLocations',
    properties: ['time'],
    jsonProperties: [],
    navigation: { Thing: one('Thing'), Locations: many('Location') },
  },
  Datastream: {
    set: 'Datastreams',
    properties: ['name', 'description', 'unitOfMeasurement', 'observationType', 'observedArea', 'phenomenonTime', 'resultTime', 'properties'],
    jsonProperties: ['unitOfMeasurement', 'observedArea', 'properties'],
    navigation: { Thing: one('Thing'), Sensor: one('Sensor'), ObservedProperty: one('ObservedProperty'), Observations: many('Observation') },
  },
  MultiDatastream: {
    set: 'MultiDatastreams',
    properties: ['name', 'description', 'unitOfMeasurements', 'observationType', 'multiObservationDataTypes', 'observedArea', 'phenomenonTime', 'resultTime', 'properties'],
    jsonProperties: ['unitOfMeasurements', 'multiObservationDataTypes', 'observedArea', 'properties'],
    navigation: { Thing: one('Thing'), Sensor: one('Sensor'), ObservedProperties: many('ObservedProperty'), Observations: many('Observation') },
  },
  Sensor: {
    set: 'Sensors',
    properties: ['name', 'description', 'encodingType', 'metadata', 'properties'],
    jsonProperties: ['properties'],
    navigation: { Datastreams: many('Datastream'), MultiDatastreams: many('MultiDatastream') },
  },
  ObservedProperty: {
    set: 'ObservedProperties',
    properties: ['name', 'definition', 'description', 'properties'],
    jsonProperties: ['properties'],
    navigation: { Datastreams: many('Datastream'), MultiDatastreams: many('MultiDatastream') },
  },
  Observation: {
    set: 'Observations',
    properties: ['phenomenonTime', 'result', 'resultTime', 'resultQuality', 'validTime', 'parameters'],
    jsonProperties: ['result', 'resultQuality', 'parameters'],
    navigation: { Datastream: one('Datastream'), MultiDatastream: one('MultiDatastream'), FeatureOfInterest: one('FeatureOfInterest') },
  },
  FeatureOfInterest: {
    set: 'FeaturesOfInterest',
    properties: ['name', 'description', 'encodingType', 'feature', 'properties'],
    jsonProperties: ['feature', 'properties'],
    navigation: { Observations: many('Observation') },
  },
};

const BY_SET = new Map<string, EntityType>(ENTITY_TYPES.map((t) => [MODEL[t].set, t]));

/** The entity type of an entity set's name (`Things` → `Thing`), or undefined. */
export const entityTypeOfSet = (set: string): EntityType | undefined => BY_SET.get(set);

/** The navigation property `name` of `type`, or undefined. */
export const navigationOf = (type: EntityType, name: string): Navigation | undefined => (Object.hasOwn(MODEL[type].navigation, name) ? MODEL[type].navigation[name] : undefined);

/** Whether `name` is a (non-navigation) property of `type`; `id` and `@iot.id` name the id. */
export const isProperty = (type: EntityType, name: string): boolean => name === 'id' || name === '@iot.id' || MODEL[type].properties.includes(name);
