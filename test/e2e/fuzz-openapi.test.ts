import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRng } from '../../simulators/random.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { BODIES, JSON_CORE, JSON_MORE, URL_CORE, URL_MORE } from '../support/hostile-values.ts';

/**
 * The REST API's fuzz test, driven by the OpenAPI document: every operation it lists (so a route
 * added later is fuzzed without anyone remembering to), every path and query parameter and every
 * body property gets hostile values — non-finite and out-of-range numbers, ids beyond their
 * columns, NUL and unpaired surrogates, very long strings, wrong types, arrays for scalars, absurd
 * dates, duplicated parameters — and every body malformed JSON, wrong content types and empty
 * bodies. Seeded and sampled, so the same requests every run and a bounded number of them.
 *
 * Every answer must be below 500; every 4xx a JSON body with a message; no answer may carry a
 * database error's text; the platform must still be up at the end.
 */

const SEED = 20_261_207;
/** Requests in flight at once. */
const CONCURRENCY = 4;
/** Hostile values per parameter or body property, besides the core set every one gets. */
const SAMPLED_PER_TARGET = 6;
/** One request may take this long (the platform answers in milliseconds; this only bounds the test). */
const REQUEST_TIMEOUT_MS = 20_000;
/** Times a request refused with 503 and Retry-After (load shedding) is sent again, 100 ms apart. */
const LOAD_SHED_RETRIES = 50;
/** Text of PostgreSQL errors (and node-postgres'), which must never reach a client. */
const DATABASE_ERROR =
  /syntax error|violates|invalid input syntax|out of range for type|relation "|invalid byte sequence|unsupported Unicode escape|Unicode low surrogate|null character not permitted|value too long for type|numeric field overflow|field value out of range|bind message|could not determine data type/i;

// --- the OpenAPI document, as much of it as the fuzz needs ---

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  allOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  minimum?: number;
  minLength?: number;
  minItems?: number;
  format?: string;
}
interface Parameter {
  in: 'path' | 'query' | 'header' | 'cookie';
  name: string;
  required?: boolean;
  schema?: JsonSchema;
}
interface Operation {
  parameters?: Parameter[];
  requestBody?: { content?: Record<string, { schema?: JsonSchema }> };
  'x-permission'?: string;
}
type OpenApi = { paths: Record<string, Record<string, Operation>> };

interface Op {
  method: string;
  /** The path as the document gives it: /api/v1/devices/{id}. */
  path: string;
  pathParams: Parameter[];
  queryParams: Parameter[];
  /** Media type → body schema. */
  bodies: Map<string, JsonSchema>;
}

// --- requests ---

interface FuzzRequest {
  op: Op;
  /** What was made hostile, for the report. */
  target: string;
  value: string;
  path: Record<string, string>;
  /** Already encoded: name=value pairs. */
  query: string[];
  contentType?: string;
  body?: string | Buffer;
}

interface Finding {
  key: string;
  status: number | string;
  request: string;
  answer: string;
}

const MARK = 'Ω§FUZZ§Ω';
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A value the schema accepts, as plain as possible (for bodies no fixture covers). */
function sample(schema: JsonSchema | undefined, depth = 0): unknown {
  if (!schema || depth > 6) return null;
  if (schema.const !== undefined) return schema.const;
  if (schema.default !== undefined) return schema.default;
  if (schema.enum) return schema.enum[0];
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) return sample(alternatives.find((s) => s.type !== 'null') ?? alternatives[0], depth + 1);
  if (schema.allOf) return sample(Object.assign({}, ...schema.allOf), depth + 1);
  const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
  switch (type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const name of schema.required ?? []) out[name] = sample(schema.properties?.[name], depth + 1);
      return out;
    }
    case 'array':
      return schema.minItems ? Array.from({ length: schema.minItems }, () => sample(schema.items, depth + 1)) : [];
    case 'string':
      return schema.format === 'date-time' ? new Date().toISOString() : 'x'.repeat(Math.max(1, schema.minLength ?? 1));
    case 'integer':
    case 'number':
      return Math.max(1, schema.minimum ?? 1);
    case 'boolean':
      return true;
    default:
      return null;
  }
}

/** Every path into a JSON value (object members and array elements), at most `depth` deep. */
function leafPaths(value: unknown, depth = 4, prefix: (string | number)[] = []): (string | number)[][] {
  if (depth === 0 || value === null || typeof value !== 'object') return prefix.length > 0 ? [prefix] : [];
  const entries: [string | number, unknown][] = Array.isArray(value) ? (value.length > 0 ? [[0, value[0]]] : []) : Object.entries(value);
  const out: (string | number)[][] = prefix.length > 0 ? [prefix] : [];
  for (const [k, v] of entries) out.push(...leafPaths(v, depth - 1, [...prefix, k]));
  return out;
}

/** Body properties the schema declares but the baseline leaves out (one level of nesting). */
function schemaPaths(schema: JsonSchema | undefined, prefix: string[] = [], depth = 2): string[][] {
  if (!schema || depth === 0) return [];
  const objects = [schema, ...(schema.anyOf ?? []), ...(schema.oneOf ?? []), ...(schema.allOf ?? [])].filter((s) => s.properties);
  return objects.flatMap((s) => Object.entries(s.properties!).flatMap(([name, sub]) => [[...prefix, name], ...schemaPaths(sub, [...prefix, name], depth - 1)]));
}

/** The body with `raw` JSON text at `path` (created when missing). */
function bodyWith(base: unknown, path: (string | number)[], raw: string): string {
  const copy = structuredClone(base) as Record<string | number, unknown>;
  let at: Record<string | number, unknown> = copy;
  for (const key of path.slice(0, -1)) {
    if (at[key] === null || typeof at[key] !== 'object') at[key] = {};
    at = at[key] as Record<string | number, unknown>;
  }
  at[path[path.length - 1]!] = MARK;
  return JSON.stringify(copy).replace(JSON.stringify(MARK), raw);
}

function operations(doc: OpenApi): Op[] {
  const ops: Op[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    if (!path.startsWith('/api/v1/') && !['/healthz', '/readyz', '/metrics'].includes(path)) continue;
    for (const [method, op] of Object.entries(methods)) {
      if (!['get', 'post', 'put', 'patch', 'delete'].includes(method)) continue;
      const params = op.parameters ?? [];
      const bodies = new Map(Object.entries(op.requestBody?.content ?? {}).map(([type, c]) => [type, c.schema ?? {}] as const));
      ops.push({ method: method.toUpperCase(), path, pathParams: params.filter((p) => p.in === 'path'), queryParams: params.filter((p) => p.in === 'query'), bodies });
    }
  }
  return ops;
}

/** Runs last, so the fixtures the others use are still there while they run. */
const destructive = (op: Op) => op.method === 'DELETE' || /\/(token|rotate|revoke)$/.test(op.path);

describe('fuzz: every operation of the OpenAPI document with hostile parameters and bodies', () => {
  let t: TestPlatform;
  /** Fixtures by path parameter: which value `{id}` takes under which path. */
  const ids: Record<string, string> = {};
  /** A valid body per "METHOD path", so that one hostile value at a time reaches the handler. */
  const baselines = new Map<string, unknown>();
  /** Query parameters some operations need to get past their first check (an area, a key). */
  const baseQuery = new Map<string, Record<string, string>>();

  beforeAll(async () => {
    t = await startTestPlatform({ provisionRateLimit: 'off', exportConcurrencyPerPrincipal: 20, queryConcurrencyPerPrincipal: 20 });
    const ok = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
      const res = await t.api<T>(method, path, body);
      if (res.status >= 300) throw new Error(`fixture ${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    };
    const now = Date.now();
    // Devices: a bus that moves (trajectory, spatial), a generic one that raises an alarm, a drone that enters a geofence, a gateway.
    const bus = await t.createDevice({ name: 'fuzz-bus', type: 'bus' });
    const generic = await t.createDevice({ name: 'fuzz-boiler', type: 'generic', location: { lat: 23.02, lng: 113.75 } });
    const drone = await t.createDevice({ name: 'fuzz-drone', type: 'drone' });
    await t.createDevice({ name: 'fuzz-gateway', type: 'generic', location: { lat: 23.03, lng: 113.76 } });
    const rule = await ok<{ id: number }>('POST', '/api/v1/alarm-rules', {
      name: 'fuzz-boiler-hot',
      description: 'boiler too hot',
      deviceType: 'generic',
      key: 'boiler_temp',
      operator: '>',
      raiseThreshold: 90,
      severity: 'major',
    });
    const fence = await ok<{ id: number }>('POST', '/api/v1/geofences', {
      type: 'Feature',
      geometry: { type: 'Polygon', coordinates: [[[113.95, 23.05], [113.96, 23.05], [113.96, 23.06], [113.95, 23.06], [113.95, 23.05]]] },
      properties: { name: 'fuzz-fence', domain: 'air-space-ground', deviceTypes: ['drone'], dwellSeconds: 5 },
    });
    const publish = async (device: CreatedDevice, readings: { ts: number; values: Record<string, number> }[]) => {
      const client = await t.connect(device.accessToken);
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify(readings), { qos: 1 });
      await client.endAsync();
    };
    await publish(bus, Array.from({ length: 30 }, (_, i) => ({ ts: now - 600_000 + i * 20_000, values: { latitude: 23.02 + i * 0.001, longitude: 113.75, speed: 30 + i } })));
    await publish(generic, [{ ts: now - 60_000, values: { boiler_temp: 95 } }]);
    await publish(drone, [
      { ts: now - 30_000, values: { latitude: 23.055, longitude: 113.94, battery: 80 } },
      { ts: now - 20_000, values: { latitude: 23.055, longitude: 113.955, battery: 80 } },
    ]);
    const alarm = await eventually(async () => (await t.api<{ items: { id: number }[] }>('GET', `/api/v1/alarms?device=${generic.id}`)).body.items[0]);
    await eventually(async () => (await t.api<{ features: unknown[] }>('GET', `/api/v1/geofences/${fence.id}/events`)).body.features[0]);
    const rpc = await ok<{ id: number }>('POST', `/api/v1/devices/${bus.id}/rpc`, { method: 'reboot', params: { delay: 1 }, persistent: true });
    const key = await ok<{ id: number }>('POST', '/api/v1/keys', { name: 'fuzz key', owner: 'fuzz bureau', roles: ['agency'] });
    const provisionKey = await ok<{ id: number; key: string; secret: string }>('POST', '/api/v1/provision-keys', { deviceType: 'generic', name: 'fuzz', allowCreate: true });
    const type = { domain: 'generic', label: { en: 'Fuzz', zh: '模糊' }, moving: false, acceptsUndeclaredKeys: true, keys: { level: { label: { en: 'Level', zh: '水平' }, unit: 'm', min: 0, max: 10 } } };
    await ok('POST', '/api/v1/device-types', { name: 'fuzz-type', ...type });
    await ok('PUT', '/api/v1/roles/fuzz-role', { description: 'fuzz', permissions: ['read'] });
    await ok('PUT', `/api/v1/devices/${generic.id}/credentials`, { clientId: 'fuzz-client', username: 'fuzz-user', password: 'fuzz-pass' });

    Object.assign(ids, {
      devices: String(bus.id),
      alarms: String(alarm.id),
      'alarm-rules': String(rule.id),
      geofences: String(fence.id),
      keys: String(key.id),
      'provision-keys': String(provisionKey.id),
      'device-types': 'fuzz-type',
      roles: 'fuzz-role',
      retention: 'traffic',
      rpcId: String(rpc.id),
      scope: 'shared',
    });
    const bbox = '113.5,22.6,114.3,23.2';
    for (const what of ['latest', 'history', 'export']) {
      baseQuery.set(`/api/v1/spatial/${what}`, { bbox });
      baselines.set(`POST /api/v1/spatial/${what}`, { bbox: [113.5, 22.6, 114.3, 23.2], keys: ['speed'] });
    }
    baseQuery.set('/api/v1/spatial/aggregate', { bbox, key: 'speed', resolution: '7' });
    baselines.set('POST /api/v1/spatial/aggregate', { bbox: [113.5, 22.6, 114.3, 23.2], key: 'speed', resolution: 7, stats: ['avg', 'p90'] });
    const location = { lat: 23.02, lng: 113.75, alt: 10 };
    baselines.set('POST /api/v1/devices', { name: 'fuzz-new', type: 'generic', label: 'new', location, isGateway: false, gatewayId: null });
    baselines.set('PUT /api/v1/devices/{id}', { name: 'fuzz-bus', type: 'bus', label: 'bus', location: null, isGateway: false, gatewayId: null });
    baselines.set('PUT /api/v1/devices/{id}/credentials', { clientId: 'fuzz-bus-client', username: 'fuzz-bus-user', password: 'pw' });
    baselines.set('POST /api/v1/devices/import', [{ name: 'fuzz-imported', type: 'generic', label: 'imported', lat: 23, lng: 113.7, alt: 1, isGateway: false }]);
    baselines.set('POST /api/v1/device-types', { name: 'fuzz-type-2', ...type });
    baselines.set('PUT /api/v1/device-types/{name}', type);
    baselines.set('POST /api/v1/devices/{id}/rpc', { method: 'set', params: { target: 1, note: 'n' }, timeout: 1000, oneWay: false, persistent: true, expiresInMs: 60_000 });
    baselines.set('POST /api/v1/devices/{id}/attributes/{scope}', { target: 22, mode: 'eco', nested: { a: [1] } });
    const ruleBody = { name: 'fuzz-rule-2', description: 'd', kind: 'threshold', deviceType: 'generic', key: 'boiler_temp', operator: '>', raiseThreshold: 90, clearThreshold: 80, minDurationSeconds: 0, clearDurationSeconds: 0, severity: 'minor', enabled: true };
    baselines.set('POST /api/v1/alarm-rules', ruleBody);
    baselines.set('PUT /api/v1/alarm-rules/{id}', { ...ruleBody, name: 'fuzz-boiler-hot' });
    baselines.set('PATCH /api/v1/alarm-rules/{id}', { description: 'patched', raiseThreshold: 91 });
    baselines.set('POST /api/v1/alarms/{id}/ack', { by: 'fuzz', note: 'seen' });
    baselines.set('POST /api/v1/alarms/{id}/clear', { by: 'fuzz', note: 'done' });
    const fenceBody = (name: string) => ({
      type: 'Feature',
      geometry: { type: 'Polygon', coordinates: [[[113.95, 23.05], [113.96, 23.05], [113.96, 23.06], [113.95, 23.06], [113.95, 23.05]]] },
      properties: { name, domain: 'air-space-ground', deviceTypes: ['drone'], dwellSeconds: 5 },
    });
    baselines.set('POST /api/v1/geofences', fenceBody('fuzz-fence-2'));
    baselines.set('PUT /api/v1/geofences/{id}', fenceBody('fuzz-fence'));
    baselines.set('POST /api/v1/keys', { name: 'fuzz key 2', owner: 'fuzz', roles: ['agency'], scope: { domains: ['traffic'] }, expiresAt: '2099-01-01T00:00:00Z', rateLimit: '100/min' });
    baselines.set('PATCH /api/v1/keys/{id}', { name: 'fuzz key renamed', scope: { towns: ['虎门镇'] } });
    baselines.set('PUT /api/v1/roles/{name}', { description: 'fuzz', permissions: ['read'] });
    baselines.set('POST /api/v1/provision-keys', { deviceType: 'generic', name: 'fuzz 2', allowCreate: true, maxDevices: 10 });
    baselines.set('POST /api/v1/provision', {
      provisionDeviceKey: provisionKey.key,
      provisionDeviceSecret: provisionKey.secret,
      deviceName: 'fuzz-provisioned',
      credentialsType: 'ACCESS_TOKEN',
      location,
    });
    baselines.set('PUT /api/v1/retention/{domain}', { rawDays: 3650, rollups1mDays: 3650, rollups1hDays: null });
  }, 60_000);
  afterAll(async () => {
    await t?.stop();
  });

  it('refuses with 400 what issue 10 found answered with a 5xx, and takes real Unicode as it is', async () => {
    const bus = ids.devices!;
    const refused = async (method: string, path: string, body: string | undefined, reason: RegExp) => {
      const res = await fetch(`${t.httpUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${t.adminKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body,
      });
      const answer = (await res.json()) as { message?: string };
      expect(res.status, `${method} ${path}: ${JSON.stringify(answer)}`).toBe(400);
      expect(answer.message, `${method} ${path}`).toMatch(reason);
    };
    // Infinity passes ajv's integer coercion and then skips its bounds: refused after validation.
    for (const path of [
      '/api/v1/devices?limit=Infinity',
      '/api/v1/alarms?limit=-Infinity',
      `/api/v1/devices/${bus}/events?limit=Infinity`,
      `/api/v1/devices/${bus}/rpc?limit=Infinity`,
      '/api/v1/geofence-events?limit=Infinity',
      '/api/v1/spatial/history?bbox=113.5,22.6,114.3,23.2&limit=Infinity',
      '/api/v1/spatial/latest?bbox=113.5,22.6,114.3,23.2&limit=-Infinity',
      '/api/v1/alarms?device=Infinity',
      '/api/v1/geofence-events?device=-Infinity',
      '/api/v1/spatial/aggregate?bbox=113.5,22.6,114.3,23.2&key=speed&resolution=Infinity',
      `/api/v1/devices/${bus}/trajectory?stopRadius=Infinity`,
      `/api/v1/devices/${bus}/trajectory?stopMinutes=Infinity`,
      `/api/v1/devices/${bus}/trajectory?simplify=Infinity`,
      `/api/v1/devices/${bus}/trajectory?limit=Infinity`,
      '/api/v1/devices/Infinity',
    ]) {
      await refused('GET', path, undefined, /(querystring|params)\/\w+: must be a finite number/);
    }
    // Ids and cursors beyond their columns (int4, int8 within a JSON number's exact integers).
    await refused('GET', '/api/v1/devices?after=2147483648', undefined, /querystring\/after must be <= 2147483647/);
    await refused('GET', '/api/v1/alarms?cursor=1e308', undefined, /querystring\/cursor must be <= 9007199254740991/);
    await refused('GET', `/api/v1/devices/${bus}/rpc?before=1e23`, undefined, /querystring\/before must be <= 9007199254740991/);
    await refused('GET', '/api/v1/devices/2147483648', undefined, /params\/id must be <= 2147483647/);
    // NUL and unpaired surrogates, anywhere: query strings, schema'd strings and JSON values no schema describes.
    await refused('GET', '/api/v1/devices?namePrefix=%00', undefined, /querystring\/namePrefix: contains U\+0000/);
    await refused('GET', '/api/v1/devices/export?namePrefix=%00', undefined, /querystring\/namePrefix: contains U\+0000/);
    await refused('POST', '/api/v1/devices', '{"name":"nul-label","label":"a\\u0000"}', /body\/label: contains U\+0000/);
    await refused('POST', '/api/v1/alarm-rules', '{"name":"nul-rule","description":"\\u0000","deviceType":"generic","key":"k","operator":">","raiseThreshold":1,"severity":"minor"}', /body\/description: contains U\+0000/);
    await refused('POST', `/api/v1/devices/${bus}/rpc`, '{"method":"m","params":"\\u0000","persistent":true}', /body\/params: contains U\+0000/);
    await refused('POST', `/api/v1/devices/${bus}/rpc`, '{"method":"m","params":{"note":["ok","\\ud800"]},"persistent":true}', /body\/params\/note\/1: contains an unpaired UTF-16 surrogate \(U\+D800\)/);
    await refused('POST', `/api/v1/devices/${bus}/attributes/shared`, '{"\\udfff":1}', /body: member name .* unpaired UTF-16 surrogate \(U\+DFFF\)/);
    // Forged history cursors, whose instant or device id the database would refuse.
    const cursor = (text: string) => Buffer.from(text).toString('base64url');
    const now = new Date().toISOString().replace('Z', '000Z');
    await refused('GET', `/api/v1/spatial/history?bbox=113.5,22.6,114.3,23.2&cursor=${cursor(`${now}|9999999999`)}`, undefined, /cursor: not a cursor/);
    const feb = 'from=2026-02-01T00:00:00Z&to=2026-03-31T00:00:00Z';
    await refused('GET', `/api/v1/spatial/history?bbox=113.5,22.6,114.3,23.2&${feb}&cursor=${cursor('2026-02-30T00:00:00.000000Z|1')}`, undefined, /cursor: not a cursor/);
    // An array where a string is expected (ajv's array coercion used to leave it in place).
    await refused('PATCH', `/api/v1/keys/${ids.keys}`, '{"expiresAt":["2099-01-01T00:00:00Z"]}', /body\/expiresAt/);

    // Real Unicode (CJK, an astral character as a surrogate pair) is stored and answered as sent.
    const label = '东莞 🚌 \ud83d\ude8c';
    const created = await t.api<{ id: number; label: string }>('POST', '/api/v1/devices', { name: 'unicode-label', label });
    expect(created.status).toBe(201);
    expect((await t.api<{ label: string }>('GET', `/api/v1/devices/${created.body.id}`)).body.label).toBe(label);
    const rpc = await t.api<{ params: unknown }>('POST', `/api/v1/devices/${bus}/rpc`, { method: 'say', params: { text: label }, persistent: true });
    expect(rpc.status).toBe(202);
    expect(rpc.body.params).toEqual({ text: label });
  });

  it('answers every hostile request below 500, with a JSON message, without database errors, and stays up', async () => {
    const started = Date.now();
    const doc = (await t.api<OpenApi>('GET', '/api/v1/openapi.json')).body;
    const ops = operations(doc);
    expect(ops.length).toBeGreaterThan(50);
    const rng = createRng(SEED);

    /** Path parameter values: a fixture chosen by the resource the path names. */
    const pathValues = (op: Op): Record<string, string> => {
      const resource = op.path.replace(/^\/api\/v1\//, '').split('/')[0]!;
      return Object.fromEntries(op.pathParams.map((p) => [p.name, ids[p.name] ?? ids[resource] ?? '1']));
    };
    /** Query parameters every request of the operation carries: fixtures and the required ones. */
    const queryValues = (op: Op): Record<string, string> => {
      const out: Record<string, string> = { ...(baseQuery.get(op.path) ?? {}) };
      for (const p of op.queryParams) if (p.required && out[p.name] === undefined) out[p.name] = String(sample(p.schema));
      return out;
    };
    const encodeQuery = (values: Record<string, string>) => Object.entries(values).map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`);
    const pick = (core: string[], more: string[]) => [...core, ...rng.shuffle(more).slice(0, SAMPLED_PER_TARGET)];

    const requests: FuzzRequest[] = [];
    for (const op of ops) {
      const path = pathValues(op);
      const query = queryValues(op);
      const jsonSchema = op.bodies.get('application/json');
      const base = op.bodies.size === 0 ? undefined : (baselines.get(`${op.method} ${op.path}`) ?? sample(jsonSchema ?? { type: 'object' }));
      const baseBody = base === undefined ? {} : { contentType: 'application/json', body: JSON.stringify(base) };
      const request = (target: string, value: string, changes: Partial<FuzzRequest>): FuzzRequest => ({
        op,
        target,
        value,
        path,
        query: encodeQuery(query),
        ...baseBody,
        ...changes,
      });

      requests.push(request('baseline', '', {}));
      for (const p of op.pathParams) {
        for (const value of pick(URL_CORE, URL_MORE)) requests.push(request(`path ${p.name}`, value, { path: { ...path, [p.name]: value } }));
      }
      for (const p of op.queryParams) {
        const others = encodeQuery(Object.fromEntries(Object.entries(query).filter(([k]) => k !== p.name)));
        const name = encodeURIComponent(p.name);
        for (const value of pick(URL_CORE, URL_MORE)) requests.push(request(`query ${p.name}`, value, { query: [...others, `${name}=${value}`] }));
        // Repeated: an array where a scalar is expected.
        requests.push(request(`query ${p.name}`, 'repeated 1,2', { query: [...others, `${name}=1`, `${name}=2`] }));
        requests.push(request(`query ${p.name}`, 'repeated Infinity,%00', { query: [...others, `${name}=Infinity`, `${name}=%00`] }));
        requests.push(request(`query ${p.name}`, 'bracketed', { query: [...others, `${name}%5B%5D=1`] }));
      }
      if (base !== undefined) {
        const targets = new Map<string, (string | number)[]>();
        for (const p of [...leafPaths(base), ...schemaPaths(jsonSchema)]) targets.set(JSON.stringify(p), p);
        targets.set('["fuzzExtra"]', ['fuzzExtra']);
        for (const target of targets.values()) {
          for (const value of pick(JSON_CORE, JSON_MORE)) requests.push(request(`body ${target.join('.')}`, value, { body: bodyWith(base, target, value) }));
        }
      }
      if (op.method !== 'GET') {
        for (const [contentType, body] of BODIES) requests.push(request('whole body', `${contentType ?? 'no content type'}: ${String(body).slice(0, 30)}`, { contentType, body }));
        if (op.bodies.has('text/csv')) {
          for (const csv of ['name,label\nfuzz-csv,\u0000', 'name\n\ud800', 'name,lat,lng\nfuzz-csv,Infinity,1e999', `name\n${'x'.repeat(100_000)}`, `name\n${'a,'.repeat(10_000)}`]) {
            requests.push(request('csv body', csv.slice(0, 30), { contentType: 'text/csv', body: csv }));
          }
        }
      }
    }
    // Destructive operations after the rest, so that the fixtures exist while the others run; their
    // valid (baseline) requests, which delete the fixtures, last of all.
    const phases = [
      requests.filter((r) => !destructive(r.op)),
      requests.filter((r) => destructive(r.op) && r.target !== 'baseline'),
      requests.filter((r) => destructive(r.op) && r.target === 'baseline'),
    ];

    const findings: Finding[] = [];
    const statuses = new Map<number, number>();
    const show = (r: FuzzRequest) => {
      const url = r.op.path.replace(/\{(\w+)\}/g, (_, name: string) => r.path[name] ?? '');
      return `${r.op.method} ${url.slice(0, 200)}${r.query.length > 0 ? `?${r.query.join('&').slice(0, 200)}` : ''}${r.body === undefined ? '' : ` body ${String(r.body).slice(0, 200)}`}`;
    };
    const note = (r: FuzzRequest, status: number | string, answer: string) =>
      findings.push({ key: `${r.op.method} ${r.op.path} ${r.target}: ${status}`, status, request: show(r), answer: answer.slice(0, 300) });

    const send = async (r: FuzzRequest) => {
      const url = `${t.httpUrl}${r.op.path.replace(/\{(\w+)\}/g, (_, name: string) => r.path[name] ?? '')}${r.query.length > 0 ? `?${r.query.join('&')}` : ''}`;
      const headers: Record<string, string> = { authorization: `Bearer ${t.adminKey}` };
      if (r.contentType !== undefined) headers['content-type'] = r.contentType;
      let status: number;
      let text: string;
      let type: string;
      try {
        for (let attempt = 1; ; attempt++) {
          const res = await fetch(url, { method: r.op.method, headers, body: typeof r.body === 'string' || r.body === undefined ? r.body : new Uint8Array(r.body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
          status = res.status;
          type = res.headers.get('content-type') ?? '';
          text = await res.text();
          // A 503 with Retry-After is the platform shedding load (e.g. its exports running at once,
          // which this test's own concurrency can reach), not an answer to the input: ask again, as
          // a client is told to (sooner than told: this only bounds the test).
          if (status !== 503 || !res.headers.has('retry-after') || attempt === LOAD_SHED_RETRIES) break;
          await sleep(100);
        }
      } catch (err) {
        // No answer, or an answer cut off (a stream that ended without its last chunk).
        note(r, 'no complete answer', String((err as Error).cause ?? err));
        return;
      }
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
      if (status >= 500) return note(r, status, text);
      if (DATABASE_ERROR.test(text)) return note(r, `${status} with a database error`, text);
      if (status >= 400) {
        let message: unknown;
        try {
          const body = JSON.parse(text) as { message?: unknown; detail?: unknown };
          message = body.message ?? body.detail;
        } catch {
          /* not JSON */
        }
        if (!/json/.test(type) || typeof message !== 'string' || message === '') note(r, `${status} without a JSON message`, text);
      }
    };

    for (const phase of phases) {
      let next = 0;
      const worker = async () => {
        while (next < phase.length) await send(phase[next++]!);
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
    }

    const health = await fetch(`${t.httpUrl}/healthz`);
    const ready = await fetch(`${t.httpUrl}/readyz`);
    const distinct = new Map<string, Finding>();
    for (const f of findings) if (!distinct.has(f.key)) distinct.set(f.key, f);
    console.info(
      `fuzz-openapi: ${requests.length} requests over ${ops.length} operations in ${Date.now() - started} ms; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}; ` +
        `${findings.length} findings (${distinct.size} distinct)`,
    );
    expect([...distinct.values()].map((f) => `${f.key}\n    ${f.request}\n    → ${f.answer}`)).toEqual([]);
    expect(health.status).toBe(200);
    expect(ready.status).toBe(200);
  }, 240_000);
});
