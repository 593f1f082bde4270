import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type pg from 'pg';
import type { Access } from '../../core/access/access.ts';
import { Type, type Static } from 'typebox';
import type { DeviceRegistry } from '../../core/registry.ts';
import { MAX_TRACK_POINTS, readTrack } from '../../db/trajectory.ts';
import { segmentLengths, speedStats, trackLength, type TrackPoint } from '../../geo/track.ts';
import { simplifyTrack } from '../../geo/track-simplify.ts';
import { detectStops } from '../../geo/track-stops.ts';
import { DeviceIdParams, BoundedNumber, Limit, SafeText } from '../schemas.ts';
import { parseInstant } from './telemetry.ts';

const HOUR = 3_600_000;
/** Window when `from` is left out: the 24 hours before `to`. */
const DEFAULT_WINDOW_MS = 24 * HOUR;
/** Longest window one request may ask for. */
export const MAX_WINDOW_DAYS = 31;
const MAX_WINDOW_MS = MAX_WINDOW_DAYS * 24 * HOUR;
const DEFAULT_STOP_MINUTES = 5;
const INSTANT = 'ISO 8601 date-time (e.g. 2026-11-26T08:00:00Z) or epoch milliseconds';
const DEFAULT_STOP_RADIUS = 50;

/**
 * Errors carry `code`: the reasons below, FST_ERR_VALIDATION when the query string breaks the
 * schema (a negative `simplify`, a `limit` above the maximum …), with `message` saying which parameter.
 */
export const TRAJECTORY_ERRORS = ['invalid_from', 'invalid_to', 'inverted_range', 'range_too_long', 'device_not_moving', 'device_not_found'] as const;
type TrajectoryErrorCode = (typeof TRAJECTORY_ERRORS)[number];

const TrajectoryError = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String({ description: `${TRAJECTORY_ERRORS.join(', ')}, or FST_ERR_VALIDATION` })),
  error: Type.String(),
  message: Type.String(),
});

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);
const Position = Type.Array(Type.Number(), { minItems: 2, maxItems: 3, description: '[lng, lat] or [lng, lat, alt in metres]' });
const Iso = Type.String({ format: 'date-time' });
const MetresPerSecond = Nullable(Type.Number({ description: 'm/s' }));

const TrackProperties = Type.Object({
  kind: Type.Literal('track'),
  deviceId: Type.Integer(),
  name: Type.String(),
  type: Type.String(),
  from: Type.String({ format: 'date-time', description: 'the window asked for (after defaults)' }),
  to: Type.String({ format: 'date-time' }),
  timestamps: Type.Array(Type.Number(), { description: 'epoch ms of each vertex, aligned with the coordinates (after simplification); empty when geometry is null' }),
  pointCount: Type.Integer({ description: 'positions read (the raw track), before simplification' }),
  simplifyMetres: Nullable(Type.Number({ description: 'tolerance applied; null: none (every position is a vertex)' })),
  distanceMetres: Type.Number({ description: 'great-circle length of the raw track (every position, not the simplified line), altitude ignored' }),
  durationSeconds: Nullable(Type.Number({ description: 'from the first to the last position; null without positions' })),
  speed: Type.Object(
    {
      max: MetresPerSecond,
      mean: MetresPerSecond,
      median: MetresPerSecond,
    },
    { description: 'm/s over the raw track: max and median of its segments, mean = distance / duration (stops included); null when not measurable' },
  ),
  stopCriteria: Type.Object({ minutes: Type.Number(), radiusMetres: Type.Number() }),
  truncated: Type.Boolean({ description: `true when the window holds more than \`limit\` positions (at most ${MAX_TRACK_POINTS}): the track stops at the last one read` }),
  next: Nullable(Type.String({ format: 'date-time', description: 'when truncated: the `from` of the next request (the first position not returned)' })),
});

const TrackFeature = Type.Object({
  type: Type.Literal('Feature'),
  geometry: Nullable(Type.Object({ type: Type.Literal('LineString'), coordinates: Type.Array(Position) })),
  properties: TrackProperties,
});

const StopFeature = Type.Object({
  type: Type.Literal('Feature'),
  geometry: Type.Object({ type: Type.Literal('Point'), coordinates: Position }, { description: 'mean position of the dwell' }),
  properties: Type.Object({
    kind: Type.Literal('stop'),
    from: Iso,
    to: Iso,
    durationSeconds: Type.Number(),
    points: Type.Integer({ description: 'positions from the first to the last of the stop' }),
  }),
});

const Trajectory = Type.Object(
  {
    type: Type.Literal('FeatureCollection'),
    features: Type.Array(Type.Union([TrackFeature, StopFeature]), {
      description: 'the track first (a LineString; null geometry with fewer than two positions), then one Point per stop, oldest first',
    }),
  },
  {
    description:
      'GeoJSON (RFC 7946, media type application/geo+json). One FeatureCollection so that QGIS and MapLibre load the line and the stops as they are ' +
      '(filter on geometry type or `kind`). Coordinates are [lng, lat], or [lng, lat, alt] when every position read has an altitude.',
  },
);

type TrajectoryBody = Static<typeof Trajectory>;
type Coordinates = number[];

const round3 = (x: number): number => Math.round(x * 1000) / 1000;
const roundOrNull = (x: number | null): number | null => (x === null ? null : round3(x));
const iso = (ms: number): string => new Date(ms).toISOString();

/** The trajectory of a moving device between two times, with its distance, speeds and stops. */
export const trajectoryRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; pool: pg.Pool; access: Access }> = async (app, { registry, pool, access }) => {
  const fail = (code: TrajectoryErrorCode, message: string) =>
    code === 'device_not_found' ? { statusCode: 404, code, error: 'Not Found', message } : { statusCode: 400, code, error: 'Bad Request', message };

  app.get(
    '/devices/:id/trajectory',
    {
      config: { permission: 'read', concurrency: 'query' }, schema: {
        summary: 'Track of a moving device (bus, drone, satellite) between two times as GeoJSON: line with per-vertex timestamps, distance, speeds, stops',
        description:
          `Positions are read oldest first, at most \`limit\` (maximum ${MAX_TRACK_POINTS}); beyond that the answer is truncated and says so ` +
          '(`truncated`, `next`). Distance, speeds and stops are computed on every position read; `simplify` thins only the line. Devices of a ' +
          'type that does not move (moving: false) are refused (400 device_not_moving): their positions are their registered location.',
        tags: ['telemetry'],
        params: DeviceIdParams,
        querystring: Type.Object({
          from: Type.Optional(SafeText(40, { description: `${INSTANT}; default: 24 h before \`to\`` })),
          to: Type.Optional(SafeText(40, { description: `${INSTANT}; default: now. At most ${MAX_WINDOW_DAYS} days after \`from\`` })),
          simplify: Type.Optional(
            BoundedNumber(0, 100_000, {
              description: 'Douglas–Peucker tolerance in metres (great-circle distance from the simplified line; horizontal). 0 or omitted: every position',
            }),
          ),
          stopMinutes: Type.Optional(
            Type.Number({ exclusiveMinimum: 0, maximum: 1440, description: `a stop lasts at least this many minutes (default ${DEFAULT_STOP_MINUTES})` }),
          ),
          stopRadius: Type.Optional(
            Type.Number({
              exclusiveMinimum: 0,
              maximum: 10_000,
              description: `… with every position within this many metres of the stop's centre so far (default ${DEFAULT_STOP_RADIUS}); one stray position is forgiven`,
            }),
          ),
          limit: Type.Optional(Limit(MAX_TRACK_POINTS, { description: `positions read at most (default and maximum ${MAX_TRACK_POINTS})` })),
        }),
        response: { 200: Trajectory, 400: TrajectoryError, 404: TrajectoryError },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const q = request.query;
      const to = q.to === undefined ? new Date() : parseInstant(q.to);
      if (!to) return reply.code(400).send(fail('invalid_to', `to: "${q.to}" is not an ISO 8601 date-time or epoch milliseconds (years 1970–9999)`));
      const from = q.from === undefined ? new Date(to.getTime() - DEFAULT_WINDOW_MS) : parseInstant(q.from);
      if (!from) return reply.code(400).send(fail('invalid_from', `from: "${q.from}" is not an ISO 8601 date-time or epoch milliseconds (years 1970–9999)`));
      if (from > to) {
        const defaulted = q.to === undefined ? ' (to defaults to now)' : '';
        return reply.code(400).send(fail('inverted_range', `from (${from.toISOString()}) is after to (${to.toISOString()})${defaulted}`));
      }
      if (to.getTime() - from.getTime() > MAX_WINDOW_MS) {
        return reply.code(400).send(fail('range_too_long', `from ${from.toISOString()} to ${to.toISOString()} is longer than ${MAX_WINDOW_DAYS} days; ask for a shorter window`));
      }
      const device = await registry.get(id);
      if (!device) return reply.code(404).send(fail('device_not_found', `no device ${id}`));
      const type = registry.deviceType(device.type);
      if (type && !type.moving) {
        return reply
          .code(400)
          .send(fail('device_not_moving', `device ${id} is a ${device.type}, a type that does not move: its position is its registered location (GET /api/v1/devices/${id})`));
      }

      // Through an area scope: only the positions inside it.
      const { points, next } = await readTrack(pool, id, device.domain, from, to, q.limit ?? MAX_TRACK_POINTS, access.readingsSql(request.principal, id));
      const lengths = segmentLengths(points);
      const speed = speedStats(points, lengths);
      const stopCriteria = { minutes: q.stopMinutes ?? DEFAULT_STOP_MINUTES, radiusMetres: q.stopRadius ?? DEFAULT_STOP_RADIUS };
      const stops = detectStops(points, { minDurationMs: stopCriteria.minutes * 60_000, radiusMetres: stopCriteria.radiusMetres });
      const withAltitude = points.length > 0 && points.every((p) => p.alt !== null && p.alt !== undefined);
      const position = (p: TrackPoint): Coordinates => (withAltitude ? [p.lng, p.lat, p.alt!] : [p.lng, p.lat]);

      const simplifyMetres = q.simplify !== undefined && q.simplify > 0 ? q.simplify : null;
      const kept = simplifyMetres === null ? undefined : simplifyTrack(points, simplifyMetres);
      const vertices = kept ? kept.map((i) => points[i]!) : points;

      const body: TrajectoryBody = {
        type: 'FeatureCollection',
        features: [
          {
            type: 'Feature',
            // RFC 7946 §3.1.4: a LineString has two or more positions; §3.2: an unlocated Feature has null geometry.
            geometry: vertices.length >= 2 ? { type: 'LineString', coordinates: vertices.map(position) } : null,
            properties: {
              kind: 'track',
              deviceId: device.id,
              name: device.name,
              type: device.type,
              from: from.toISOString(),
              to: to.toISOString(),
              timestamps: vertices.length >= 2 ? vertices.map((p) => p.ts) : [],
              pointCount: points.length,
              simplifyMetres,
              distanceMetres: round3(trackLength(points, lengths)),
              durationSeconds: points.length === 0 ? null : (points[points.length - 1]!.ts - points[0]!.ts) / 1000,
              speed: { max: roundOrNull(speed.max), mean: roundOrNull(speed.mean), median: roundOrNull(speed.median) },
              stopCriteria,
              truncated: next !== undefined,
              next: next === undefined ? null : iso(next),
            },
          },
          ...stops.map((s) => {
            let coordinates: Coordinates = [s.lng, s.lat];
            if (withAltitude) {
              let sum = 0;
              for (let i = s.first; i <= s.last; i++) sum += points[i]!.alt!;
              coordinates = [s.lng, s.lat, round3(sum / (s.last - s.first + 1))];
            }
            return {
              type: 'Feature' as const,
              geometry: { type: 'Point' as const, coordinates },
              properties: { kind: 'stop' as const, from: iso(s.from), to: iso(s.to), durationSeconds: (s.to - s.from) / 1000, points: s.points },
            };
          }),
        ],
      };
      return reply.type('application/geo+json').send(body);
    },
  );
};
