import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Connectivity as ConnectivityService } from '../../core/connectivity.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import { DeviceIdParams, ErrorResponse, badRequest, Limit, SafeText } from '../schemas.ts';
import { noDevice } from '../registry-errors.ts';
import { parseInstant } from './telemetry.ts';

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Union([schema, Type.Null()]);
const At = Type.String({ format: 'date-time' });

const DeviceEvent = Type.Object({
  at: At,
  event: Type.Union([Type.Literal('connect'), Type.Literal('disconnect')]),
  reason: Nullable(
    Type.String({
      description:
        'disconnect: client_disconnect, connection_lost, keepalive_timeout, taken_over, deleted, credentials_changed, rate_limited, protocol_error, ota_error, ota_bad_request, server_shutdown, node_lost',
    }),
  ),
  address: Nullable(Type.String({ description: "the client's IP address" })),
  clientId: Nullable(Type.String({ description: 'the MQTT client id the device sent' })),
  willPublished: Nullable(Type.Boolean({ description: "disconnect: the device's last will was published" })),
});

const ConnectivityState = Type.Object({
  online: Type.Boolean(),
  lastSeen: Nullable(Type.String({ format: 'date-time', description: "the time of the device's last MQTT packet" })),
  lastConnect: Nullable(Type.Object({ at: At, address: Nullable(Type.String()), clientId: Nullable(Type.String()) })),
  lastDisconnect: Nullable(Type.Object({ at: At, reason: Nullable(Type.String()) })),
  events: Type.Array(DeviceEvent, { description: 'the most recent connects and disconnects, newest first' }),
});

const Instant = SafeText(40, { description: 'ISO 8601 date-time or epoch milliseconds' });
const RECENT_EVENTS = 20;

/** Connection state of a device and its connect/disconnect history. */
export const connectivityRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; connectivity: ConnectivityService }> = async (app, { registry, connectivity }) => {

  app.get(
    '/devices/:id/connectivity',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Connection state: online, last seen, last connect and disconnect, recent events',
        tags: ['connectivity'],
        params: DeviceIdParams,
        response: { 200: ConnectivityState, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const [state, events] = await Promise.all([connectivity.state(id), connectivity.events(id, { limit: RECENT_EVENTS })]);
      return { ...state, events };
    },
  );

  app.get(
    '/devices/:id/events',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Connects and disconnects of a device, newest first',
        tags: ['connectivity'],
        params: DeviceIdParams,
        querystring: Type.Object({
          from: Type.Optional(Instant),
          to: Type.Optional(Instant),
          limit: Limit(10_000, { default: 100 }),
        }),
        response: { 200: Type.Array(DeviceEvent), 400: ErrorResponse, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const q = request.query;
      const from = q.from === undefined ? undefined : parseInstant(q.from);
      const to = q.to === undefined ? undefined : parseInstant(q.to);
      if (q.from !== undefined && !from) return reply.code(400).send(badRequest(`from: "${q.from}" is not an ISO 8601 date-time or epoch milliseconds`));
      if (q.to !== undefined && !to) return reply.code(400).send(badRequest(`to: "${q.to}" is not an ISO 8601 date-time or epoch milliseconds`));
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      return connectivity.events(id, { from, to, limit: q.limit });
    },
  );
};
