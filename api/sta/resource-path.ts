/**
 * Resource paths of the SensorThings API (OGC 18-088 §9.2 "Resource path"): what a request names,
 * after the service root. Pure; every name is checked against the entity model.
 *
 *   Things                              a collection
 *   Things(1)                           an entity (ids: integers, or strings in single quotes with '' for ')
 *   Things(1)/Datastreams               a to-many navigation: a collection
 *   Datastreams('12-5')/Thing           a to-one navigation: an entity
 *   Things(1)/Datastreams(7)            a member of a navigation collection (must belong to it)
 *   Observations(1)/resultTime          a property, answered as {"resultTime": …}
 *   Observations(1)/resultTime/$value   the property's raw value
 *   Datastreams(1)/Observations/$ref    links (selfLinks) instead of entities
 */
import { entityTypeOfSet, MODEL, navigationOf, type EntityType } from './model.ts';

export type EntityId = number | string;

export interface PathStep {
  /** The entity type this step reaches. */
  type: EntityType;
  /** How it was reached: the entity set, or a navigation property from the previous step. */
  via: { set: string } | { navigation: string; many: boolean };
  /** The id given in parentheses, if any. */
  id?: EntityId;
}

export interface ResourcePath {
  steps: PathStep[];
  /** A property of the last step's entity (`resultTime`), if the path names one. */
  property?: string;
  /** `/$value`: the property's raw value. */
  rawValue?: boolean;
  /** `/$ref`: links rather than entities. */
  ref?: boolean;
}

/** What a resource path answers with: a collection, one entity, or a property of one. */
export function pathResult(path: ResourcePath): 'collection' | 'entity' | 'property' {
  if (path.property !== undefined) return 'property';
  const last = path.steps.at(-1)!;
  const single = last.id !== undefined || ('navigation' in last.via && !last.via.many);
  return single ? 'entity' : 'collection';
}

export class StaPathError extends Error {
  constructor(
    /** 404: names no resource; 400: malformed. */
    readonly status: 400 | 404,
    message: string,
  ) {
    super(message);
  }
}

export const MAX_PATH_LENGTH = 1024;
export const MAX_PATH_STEPS = 8;
/** Ids are database integers (int4) or short strings. */
const MAX_INTEGER_ID = 2 ** 31 - 1;
const MAX_STRING_ID_LENGTH = 200;

// A segment: a name, then optionally a key in parentheses. The key may itself hold '/' or ')' inside quotes, so segments are split by a scan.
function splitSegments(path: string): string[] {
  const segments: string[] = [];
  let current = '';
  let quoted = false;
  for (const c of path) {
    if (c === "'") quoted = !quoted;
    if (c === '/' && !quoted) {
      segments.push(current);
      current = '';
    } else current += c;
  }
  if (quoted) throw new StaPathError(400, `unterminated string in the id of "${current}"`);
  segments.push(current);
  return segments;
}

function parseId(text: string, segment: string): EntityId {
  if (/^-?\d+$/.test(text)) {
    const n = Number(text);
    if (!Number.isSafeInteger(n) || n < 0 || n > MAX_INTEGER_ID) throw new StaPathError(404, `no entity ${segment}: ids are between 0 and ${MAX_INTEGER_ID}`);
    return n;
  }
  const quoted = /^'((?:[^']|'')*)'$/.exec(text);
  if (!quoted) throw new StaPathError(400, `malformed id in "${segment}": an integer, or a string in single quotes`);
  const id = quoted[1]!.replaceAll("''", "'");
  if (id.length === 0 || id.length > MAX_STRING_ID_LENGTH) throw new StaPathError(404, `no entity ${segment}`);
  return id;
}

function splitKey(segment: string): { name: string; id?: EntityId } {
  const open = segment.indexOf('(');
  if (open < 0) return { name: segment };
  if (!segment.endsWith(')')) throw new StaPathError(400, `malformed segment "${segment}": expected Name(id)`);
  return { name: segment.slice(0, open), id: parseId(segment.slice(open + 1, -1), segment) };
}

/**
 * Parses the part of a request path after the service root (`Things(1)/Datastreams`, no leading
 * slash, percent-decoded). Throws StaPathError naming what is wrong.
 */
export function parseResourcePath(path: string): ResourcePath {
  if (path.length > MAX_PATH_LENGTH) throw new StaPathError(404, `the resource path is longer than ${MAX_PATH_LENGTH} characters`);
  const segments = splitSegments(path.endsWith('/') ? path.slice(0, -1) : path);
  if (segments.length > MAX_PATH_STEPS + 2) throw new StaPathError(404, `the resource path has more than ${MAX_PATH_STEPS} navigation steps`);
  const first = splitKey(segments[0]!);
  const type = entityTypeOfSet(first.name);
  if (!type) throw new StaPathError(404, `no entity set "${first.name}"; the entity sets are ${Object.values(MODEL).map((d) => d.set).join(', ')}`);
  const result: ResourcePath = { steps: [{ type, via: { set: first.name }, ...(first.id !== undefined ? { id: first.id } : {}) }] };
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    const last = result.steps.at(-1)!;
    const single = last.id !== undefined || ('navigation' in last.via && !last.via.many);
    if (result.property !== undefined) {
      if (segment === '$value' && i === segments.length - 1) {
        result.rawValue = true;
        continue;
      }
      throw new StaPathError(404, `nothing follows the property ${result.property} but /$value`);
    }
    if (segment === '$ref') {
      if (i !== segments.length - 1) throw new StaPathError(404, '$ref ends a resource path');
      if (result.steps.length === 1 && single) throw new StaPathError(404, '$ref follows a navigation property or an entity set');
      result.ref = true;
      continue;
    }
    const { name, id } = splitKey(segment);
    if (!single) throw new StaPathError(404, `"${name}" cannot follow the collection ${'set' in last.via ? last.via.set : last.via.navigation}: name one entity first, e.g. ${'set' in last.via ? last.via.set : last.via.navigation}(1)/${name}`);
    const navigation = navigationOf(last.type, name);
    if (navigation) {
      if (id !== undefined && !navigation.many) throw new StaPathError(404, `${name} is a single entity of ${last.type}: it takes no id`);
      if (result.steps.length >= MAX_PATH_STEPS) throw new StaPathError(404, `the resource path has more than ${MAX_PATH_STEPS} navigation steps`);
      result.steps.push({ type: navigation.target, via: { navigation: name, many: navigation.many }, ...(id !== undefined ? { id } : {}) });
      continue;
    }
    if (id === undefined && (name === 'id' || name === '@iot.id' || MODEL[last.type].properties.includes(name))) {
      result.property = name === 'id' ? '@iot.id' : name;
      continue;
    }
    const names = [...MODEL[last.type].properties, ...Object.keys(MODEL[last.type].navigation)];
    throw new StaPathError(404, `${last.type} has no property or navigation property "${name}"; it has ${names.join(', ')}`);
  }
  return result;
}
