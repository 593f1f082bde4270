import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type pg from 'pg';
import type { Access } from '../../core/access/access.ts';
import { Type } from 'typebox';
import type { DeviceRegistry } from '../../core/registry.ts';
import type { KeyDictionary } from '../../db/keys.ts';
import { AGGREGATES, autoInterval, formatInterval, parseInterval, type Aggregate } from '../../db/buckets.ts';
import { MAX_POINTS_PER_KEY, earliestData, keysInRange, telemetryBuckets, telemetryHistory } from '../../db/telemetry.ts';
import type { LatestTracker } from '../../ingest/latest.ts';
import type { TelemetryValue } from '../../ingest/readings.ts';
import { DeviceIdParams, ErrorResponse, Point, badRequest, Limit, SafeText } from '../schemas.ts';
import { noDevice } from '../registry-errors.ts';

const Instant = SafeText(40, {
  description: 'ISO 8601 date-time (e.g. 2026-11-26T08:00:00Z) or epoch milliseconds',
});

const KeysParam = SafeText(4000, { description: 'comma-separated keys; omitted: every key' });

const IntervalParam = SafeText(20, {
  description:
    'aggregate into buckets of this length (30s, 1m, 5m, 15m, 1h, 6h, 1d: a whole number of s, m, h or d, 1s…366d; aligned to UTC) or `auto` ' +
    '(at most ~1000 buckets over the range). Points are then {ts: bucket start, value}. Whole hours read the 1-hour rollups, whole minutes ' +
    'the 1-minute rollups, and raw readings fill the rest (range edges, data newer than the rollups); response headers GuanLink-Interval ' +
    'and GuanLink-Sources tell what was used.',
  examples: ['5m', '1h', 'auto'],
});

const AggParam = SafeText(10, { description: `with interval: ${AGGREGATES.join(', ')} (default avg)`, examples: ['avg', 'max'] });

/** Buckets per key when an interval is given and no limit. */
const DEFAULT_BUCKETS = 1000;

/** Parses an ISO 8601 instant or epoch milliseconds; undefined when it is neither. */
export function parseInstant(raw: string): Date | undefined {
  const trimmed = raw.trim();
  const date = /^-?\d{1,16}$/.test(trimmed) ? new Date(Number(trimmed)) : /^\d{4}-\d{2}-\d{2}/.test(trimmed) ? new Date(trimmed) : undefined;
  if (!date || Number.isNaN(date.getTime())) return undefined;
  const year = date.getUTCFullYear();
  return year >= 1970 && year <= 9999 ? date : undefined;
}

const parseKeys = (raw: string | undefined): string[] | undefined =>
  raw === undefined ? undefined : [...new Set(raw.split(',').map((k) => k.trim()).filter((k) => k.length > 0))];

export const telemetryRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; pool: pg.Pool; keys: KeyDictionary; latest: LatestTracker; access: Access }> = async (
  app,
  { registry, pool, keys: dictionary, latest, access },
) => {

  app.get(
    '/devices/:id/telemetry',
    {
      config: { permission: 'read' }, schema: {
        summary: 'History of telemetry keys, newest first: raw, or aggregated per time bucket (interval, agg)',
        tags: ['telemetry'],
        params: DeviceIdParams,
        querystring: Type.Object({
          keys: Type.Optional(KeysParam),
          from: Type.Optional(Instant),
          to: Type.Optional(Instant),
          limit: Type.Optional(
            Limit(MAX_POINTS_PER_KEY, {
              description: `points per key (default 100; with interval: buckets per key, default ${DEFAULT_BUCKETS}), at most ${MAX_POINTS_PER_KEY}`,
            }),
          ),
          interval: Type.Optional(IntervalParam),
          agg: Type.Optional(AggParam),
        }),
        response: { 200: Type.Record(Type.String(), Type.Array(Point)), 400: ErrorResponse, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const q = request.query;
      const from = q.from === undefined ? new Date(0) : parseInstant(q.from);
      const to = q.to === undefined ? new Date() : parseInstant(q.to);
      if (!from) return reply.code(400).send(badRequest(`from: "${q.from}" is not an ISO 8601 date-time or epoch milliseconds`));
      if (!to) return reply.code(400).send(badRequest(`to: "${q.to}" is not an ISO 8601 date-time or epoch milliseconds`));
      if (from > to) return reply.code(400).send(badRequest('from must not be after to'));
      let keys = parseKeys(q.keys);
      if (keys && keys.length > 100) return reply.code(400).send(badRequest('at most 100 keys per request'));
      const interval = q.interval === undefined ? undefined : parseInterval(q.interval);
      if (typeof interval === 'object') return reply.code(400).send(badRequest(interval.error));
      if (q.agg !== undefined && interval === undefined) return reply.code(400).send(badRequest('agg needs an interval (e.g. interval=1h&agg=max)'));
      if (q.agg !== undefined && !(AGGREGATES as readonly string[]).includes(q.agg)) {
        return reply.code(400).send(badRequest(`agg: "${q.agg}" is not one of ${AGGREGATES.join(', ')}`));
      }
      const device = await registry.get(id);
      if (!device) return reply.code(404).send(noDevice(id));
      keys ??= await keysInRange(pool, dictionary, id, from, to);
      // A moving device seen through an area scope: only its readings positioned inside.
      const where = registry.deviceType(device.type)?.moving ? access.readingsSql(request.principal, id) : undefined;
      if (interval === undefined) return telemetryHistory(pool, dictionary, id, keys, from, to, q.limit ?? 100, where);

      let start = from;
      if (interval === 'auto' && q.from === undefined) {
        const earliest = await earliestData(pool, dictionary, id, device.domain, keys);
        start = earliest && earliest > from ? (earliest > to ? to : earliest) : from;
      }
      const intervalMs = interval === 'auto' ? autoInterval(start.getTime(), to.getTime() + 1) : interval;
      const agg = (q.agg ?? 'avg') as Aggregate;
      const result = await telemetryBuckets(pool, dictionary, { deviceId: id, domain: device.domain, keys, from: start, to, intervalMs, agg, limit: q.limit ?? DEFAULT_BUCKETS, where });
      void reply.header('guanlink-interval', formatInterval(intervalMs)).header('guanlink-sources', result.sources.join(','));
      return result.points;
    },
  );

  app.get(
    '/devices/:id/latest',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Latest value of each key',
        tags: ['telemetry'],
        params: DeviceIdParams,
        querystring: Type.Object({ keys: Type.Optional(KeysParam) }),
        response: { 200: Type.Record(Type.String(), Point), 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const state = await latest.get(id);
      const all: Record<string, { ts: number; value: TelemetryValue }> = {};
      if (state) {
        for (const [key, [ts, value]] of Object.entries(state.values)) all[key] = { ts, value };
        if (state.position) {
          all.latitude = { ts: state.position.ts, value: state.position.lat };
          all.longitude = { ts: state.position.ts, value: state.position.lng };
          if (state.position.alt !== undefined) all.altitude = { ts: state.position.ts, value: state.position.alt };
        }
      }
      const keys = parseKeys(request.query.keys);
      if (!keys) return all;
      return Object.fromEntries(keys.filter((k) => Object.hasOwn(all, k)).map((k) => [k, all[k]!]));
    },
  );
};
