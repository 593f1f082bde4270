import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { Domain } from '../../core/domains.ts';
import { GEOFENCE_LIMITS, GeofenceError, type Geofence, type GeofenceEvent, type GeofenceService, eventJson } from '../../core/geofences.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import { ErrorResponse, badRequest, Int32Id, Limit, SafeName, SafeText } from '../schemas.ts';
import { noDevice } from '../registry-errors.ts';
import { parseInstant } from './telemetry.ts';
import { AccessError, type Access } from '../../core/access/access.ts';
import type { Principal } from '../../core/access/principal.ts';

// GeoJSON (RFC 7946) as the responses carry it.
const Position = Type.Array(Type.Number(), { minItems: 2, maxItems: 3, description: '[longitude, latitude] (WGS 84)' });
const PolygonGeometry = Type.Object({ type: Type.Literal('Polygon'), coordinates: Type.Array(Type.Array(Position)) });
const MultiPolygonGeometry = Type.Object({ type: Type.Literal('MultiPolygon'), coordinates: Type.Array(Type.Array(Type.Array(Position))) });

const GeofenceName = SafeName(200, { description: 'unique; 1–200 characters, no control characters' });
const DeviceTypes = Type.Array(SafeText(63), {
  maxItems: GEOFENCE_LIMITS.maxDeviceTypes,
  description: 'moving device types watched (e.g. ["drone"]); empty or omitted: every moving type of the domain',
});
// Checked by the service, not here: the API coerces types, and in an integer-or-null schema a 0
// would become null (no dwell) and a null 0.
const DwellSeconds = Type.Unknown({
  description: `integer seconds from 1 to ${GEOFENCE_LIMITS.maxDwellSeconds}: a dwell event once a device has stayed inside this long; null or omitted: no dwell events`,
});

const GeofenceInput = Type.Object(
  {
    type: Type.Literal('Feature'),
    geometry: Type.Unknown({
      description: `GeoJSON Polygon or MultiPolygon: closed rings, no self-intersection, holes inside their outer ring, at most 10 000 vertices and 250 000 km²`,
    }),
    properties: Type.Object(
      { name: GeofenceName, domain: Domain, deviceTypes: Type.Optional(DeviceTypes), dwellSeconds: Type.Optional(DwellSeconds) },
      { additionalProperties: false },
    ),
  },
  { description: 'A GeoJSON Feature (RFC 7946): the fence polygon with its settings as properties' },
);

const GeofenceFeature = Type.Object({
  type: Type.Literal('Feature'),
  id: Type.Integer(),
  geometry: Type.Union([PolygonGeometry, MultiPolygonGeometry]),
  properties: Type.Object({
    name: Type.String(),
    domain: Domain,
    deviceTypes: Type.Array(Type.String()),
    dwellSeconds: Type.Union([Type.Integer(), Type.Null()]),
    createdAt: Type.String({ format: 'date-time' }),
    updatedAt: Type.String({ format: 'date-time' }),
  }),
});
const GeofenceCollection = Type.Object({ type: Type.Literal('FeatureCollection'), features: Type.Array(GeofenceFeature) });

const Kind = Type.Union([Type.Literal('enter'), Type.Literal('exit'), Type.Literal('dwell')]);
const EventFeature = Type.Object({
  type: Type.Literal('Feature'),
  id: Type.Integer(),
  geometry: Type.Object({ type: Type.Literal('Point'), coordinates: Position }),
  properties: Type.Object({
    kind: Kind,
    geofenceId: Type.Integer(),
    geofenceName: Type.String(),
    domain: Domain,
    deviceId: Type.Integer(),
    deviceName: Type.String(),
    deviceType: Type.String(),
    ts: Type.String({ format: 'date-time', description: 'time of the reading that showed it' }),
  }),
});
const EventCollection = Type.Object(
  { type: Type.Literal('FeatureCollection'), features: Type.Array(EventFeature) },
  { description: 'Events newest first, as GeoJSON Points where the device was' },
);

const Instant = SafeText(40, { description: 'ISO 8601 date-time or epoch milliseconds' });
const IdParams = Type.Object({ id: Int32Id() });
const DeviceFilter = Int32Id({ description: 'only this device' });
const EventFilters = {
  from: Type.Optional(Instant),
  to: Type.Optional(Instant),
  kind: Type.Optional(Kind),
  limit: Limit(10_000, { default: 100 }),
};

const toFeature = (f: Geofence) => ({
  type: 'Feature' as const,
  id: f.id,
  geometry: f.geometry,
  properties: { name: f.name, domain: f.domain, deviceTypes: f.deviceTypes, dwellSeconds: f.dwellSeconds, createdAt: f.createdAt, updatedAt: f.updatedAt },
});
const toEventFeature = (e: GeofenceEvent) => {
  const { id, lng, lat, ...properties } = eventJson(e);
  return { type: 'Feature' as const, id, geometry: { type: 'Point' as const, coordinates: [lng, lat] }, properties };
};

/**
 * Geofences (core/geofences.ts): CRUD of fences as GeoJSON Features, and their enter / exit /
 * dwell events as GeoJSON Points. A change to a fence takes effect for the next reading.
 */
export const geofencesRoutes: FastifyPluginAsyncTypebox<{ geofences: GeofenceService; registry: DeviceRegistry; access: Access }> = async (app, { geofences, registry, access }) => {
  /** A fence outside the principal's scope is answered as one that does not exist. */
  const visibleFence = (p: Principal, id: number) => {
    const fence = geofences.get(id);
    return fence && access.geofenceVisible(p, fence) ? fence : undefined;
  };
  /** A scoped writer's fences lie in its domains and inside its area. */
  const requireFencePlace = (p: Principal, body: { geometry: unknown; properties: { domain: Domain } }) => {
    if (!access.domainVisible(p, body.properties.domain)) throw new AccessError(403, `domain "${body.properties.domain}" is outside this credential's scope`);
    if (!p.scope.area) return;
    const g = body.geometry as { type?: string; coordinates?: unknown };
    const rings = (g.type === 'Polygon' ? [g.coordinates] : g.type === 'MultiPolygon' ? (g.coordinates as unknown[]) : []) as number[][][][];
    const inside = rings.every((poly) => Array.isArray(poly) && poly.every((ring) => Array.isArray(ring) && ring.every((pt) => Array.isArray(pt) && access.positionVisible(p, pt[0]!, pt[1]!))));
    if (!inside) throw new AccessError(403, "the geofence reaches outside this credential's area; a scoped credential draws fences only inside it");
  };
  const eventScope = (p: Principal) => ({
    domains: p.scope.domains ?? undefined,
    where: access.eventsSql(p, { lng: 'e.lng', lat: 'e.lat' }),
  });
  const noFence = (id: number) => ({ statusCode: 404, error: 'Not Found', message: `no geofence ${id}` });
  const failure = (err: unknown) => {
    if (!(err instanceof GeofenceError)) throw err;
    const status: 400 | 404 | 409 = err.code === 'invalid' ? 400 : err.code === 'not_found' ? 404 : 409;
    return { status, body: { statusCode: status, error: status === 400 ? 'Bad Request' : status === 404 ? 'Not Found' : 'Conflict', message: err.message } };
  };
  /** from/to of an events query, or the 400 message. */
  const window = (q: { from?: string; to?: string }): { from?: Date; to?: Date } | string => {
    const from = q.from === undefined ? undefined : parseInstant(q.from);
    const to = q.to === undefined ? undefined : parseInstant(q.to);
    if (q.from !== undefined && !from) return `from: "${q.from}" is not an ISO 8601 date-time or epoch milliseconds`;
    if (q.to !== undefined && !to) return `to: "${q.to}" is not an ISO 8601 date-time or epoch milliseconds`;
    if (from && to && from > to) return 'from must not be after to';
    return { from, to };
  };
  const inputOf = (body: { geometry: unknown; properties: { name: string; domain: Domain; deviceTypes?: string[]; dwellSeconds?: unknown } }) => ({
    ...body.properties,
    geometry: body.geometry,
  });

  app.get(
    '/geofences',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Geofences, as a GeoJSON FeatureCollection',
        tags: ['geofences'],
        querystring: Type.Object({ domain: Type.Optional(Domain) }),
        response: { 200: GeofenceCollection },
      },
    },
    async (request) => ({
      type: 'FeatureCollection' as const,
      features: geofences.list({ domain: request.query.domain }).filter((f) => access.geofenceVisible(request.principal, f)).map(toFeature),
    }),
  );

  app.post(
    '/geofences',
    {
      config: { permission: 'geofences:write' }, schema: {
        summary: 'Create a geofence',
        description: 'Watched from the next reading on: devices already inside get an enter event with their next reading.',
        tags: ['geofences'],
        body: GeofenceInput,
        response: { 201: GeofenceFeature, 400: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      requireFencePlace(request.principal, request.body);
      try {
        return reply.code(201).send(toFeature(await geofences.create(inputOf(request.body))));
      } catch (err) {
        const { status, body } = failure(err);
        return reply.code(status as 400 | 409).send(body); // creating never finds a fence missing
      }
    },
  );

  app.get(
    '/geofences/:id',
    { config: { permission: 'read' }, schema: { summary: 'One geofence, as a GeoJSON Feature', tags: ['geofences'], params: IdParams, response: { 200: GeofenceFeature, 404: ErrorResponse } } },
    async (request, reply) => {
      const fence = visibleFence(request.principal, request.params.id);
      return fence ? toFeature(fence) : reply.code(404).send(noFence(request.params.id));
    },
  );

  app.put(
    '/geofences/:id',
    {
      config: { permission: 'geofences:write' }, schema: {
        summary: 'Replace a geofence',
        description: 'Takes effect for the next reading: a device inside that is outside the new polygon gets an exit event then.',
        tags: ['geofences'],
        params: IdParams,
        body: GeofenceInput,
        response: { 200: GeofenceFeature, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      if (!visibleFence(request.principal, request.params.id)) return reply.code(404).send(noFence(request.params.id));
      requireFencePlace(request.principal, request.body);
      try {
        return toFeature(await geofences.update(request.params.id, inputOf(request.body)));
      } catch (err) {
        const { status, body } = failure(err);
        return reply.code(status).send(body);
      }
    },
  );

  app.delete(
    '/geofences/:id',
    {
      config: { permission: 'geofences:write' }, schema: {
        summary: 'Delete a geofence',
        description: 'With its events and the record of who is inside; no exit events are produced.',
        tags: ['geofences'],
        params: IdParams,
        response: { 204: Type.Null(), 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const fence = visibleFence(request.principal, request.params.id);
      if (!fence) return reply.code(404).send(noFence(request.params.id));
      requireFencePlace(request.principal, { geometry: fence.geometry, properties: fence });
      try {
        await geofences.delete(request.params.id);
      } catch (err) {
        if (err instanceof GeofenceError && err.code === 'not_found') return reply.code(404).send(noFence(request.params.id));
        throw err;
      }
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/geofences/:id/events',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Enter, exit and dwell events of a geofence, newest first (GeoJSON Points)',
        tags: ['geofences'],
        params: IdParams,
        querystring: Type.Object({ ...EventFilters, device: Type.Optional(DeviceFilter) }),
        response: { 200: EventCollection, 400: ErrorResponse, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const q = request.query;
      const w = window(q);
      if (typeof w === 'string') return reply.code(400).send(badRequest(w));
      if (!visibleFence(request.principal, id)) return reply.code(404).send(noFence(id));
      const events = await geofences.events({ geofenceId: id, deviceId: q.device, kind: q.kind, ...w, limit: q.limit, ...eventScope(request.principal) });
      return { type: 'FeatureCollection' as const, features: events.map(toEventFeature) };
    },
  );

  app.get(
    '/geofence-events',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Enter, exit and dwell events of every geofence, newest first (GeoJSON Points)',
        tags: ['geofences'],
        querystring: Type.Object({ ...EventFilters, device: Type.Optional(DeviceFilter) }),
        response: { 200: EventCollection, 400: ErrorResponse, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const w = window(q);
      if (typeof w === 'string') return reply.code(400).send(badRequest(w));
      if (q.device !== undefined && (!(await registry.get(q.device)) || !(await access.deviceVisible(request.principal, q.device)))) return reply.code(404).send(noDevice(q.device));
      const events = await geofences.events({ deviceId: q.device, kind: q.kind, ...w, limit: q.limit, ...eventScope(request.principal) });
      return { type: 'FeatureCollection' as const, features: events.map(toEventFeature) };
    },
  );
};
