import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { DeviceRegistry } from '../../core/registry.ts';
import { RPC_STATUSES, RpcError, type RpcRecord, type RpcService, type RpcStatus } from '../../core/rpc.ts';
import { DeviceIdParams, ErrorResponse, Int32Id, Int64Id, Limit, SafeName, SafeText } from '../schemas.ts';

export const RPC_MAX_TIMEOUT_MS = 300_000;
export const RPC_DEFAULT_TIMEOUT_MS = 10_000;
export const RPC_MAX_EXPIRY_MS = 30 * 86_400_000;

const Status = Type.Unsafe<RpcStatus>({
    type: 'string',
    enum: [...RPC_STATUSES],
    description:
      'queued (persistent, waiting for the device), sent (written, PUBACK pending), delivered (acknowledged by the device; final for one-way), ' +
      'answered (the device responded), expired (not sent before its expiry), timeout (not acknowledged or not answered in time), ' +
      'failed (non-persistent: not sent, or the connection ended before the device acknowledged it), cancelled',
});

const RpcRecordSchema = Type.Object({
  id: Type.Integer({ description: "GuanLink's id of the command" }),
  deviceId: Type.Integer(),
  requestId: Type.Integer({ description: 'the id on the wire: v1/devices/me/rpc/request/{requestId}, unique per device' }),
  method: Type.String(),
  params: Type.Unknown(),
  oneWay: Type.Boolean(),
  persistent: Type.Boolean(),
  timeoutMs: Type.Integer(),
  status: Status,
  response: Type.Unknown({ description: "the device's answer: its JSON value, or its raw text when it was not JSON (responseFormat text)" }),
  responseFormat: Type.Union([Type.Literal('json'), Type.Literal('text'), Type.Null()]),
  error: Type.Union([Type.String(), Type.Null()]),
  attempts: Type.Integer({ description: 'times it was written to the device' }),
  createdAt: Type.String({ format: 'date-time' }),
  sentAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  deliveredAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  completedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  expiresAt: Type.String({ format: 'date-time' }),
});

/** 409: the device is not connected (code offline, nothing stored), or the command could not be delivered (code failed, with the command). */
const NotConnected = Type.Object({
  ...ErrorResponse.properties,
  code: Type.Union([Type.Literal('offline'), Type.Literal('failed')]),
  rpc: Type.Optional(RpcRecordSchema),
});

const SendRpc = Type.Object(
  {
    method: SafeName(255),
    params: Type.Optional(Type.Unknown({ description: 'any JSON value; default {}' })),
    timeout: Type.Integer({
      minimum: 100,
      maximum: RPC_MAX_TIMEOUT_MS,
      default: RPC_DEFAULT_TIMEOUT_MS,
      description: 'non-persistent: milliseconds to wait for the answer (one-way: for the acknowledgement)',
    }),
    oneWay: Type.Boolean({ default: false, description: 'no answer expected: done once the device acknowledged it' }),
    persistent: Type.Boolean({ default: false, description: 'stored and sent when the device connects; answered at once with its id' }),
    expiresInMs: Type.Optional(
      Type.Integer({ minimum: 100, maximum: RPC_MAX_EXPIRY_MS, description: `persistent: how long it may wait for the device and its answer (default 1 day)` }),
    ),
  },
  { additionalProperties: false },
);

const RpcIdParams = Type.Object({ id: Int32Id(), rpcId: Int64Id() });

/** Server-side RPC: commands to devices (core/rpc.ts). */
export const rpcRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; rpc: RpcService }> = async (app, { registry, rpc }) => {
  const error = (statusCode: number, message: string) => ({
    statusCode,
    error: { 400: 'Bad Request', 404: 'Not Found', 409: 'Conflict', 503: 'Service Unavailable' }[statusCode as 400] ?? 'Error',
    message,
  });
  const noDevice = (id: number) => error(404, `no device ${id}`);
  const fail = (err: unknown) => {
    if (err instanceof RpcError) {
      const status = ({ not_found: 404, invalid: 400, conflict: 409, unavailable: 503 } as const)[err.code];
      return { status, body: error(status, err.message) };
    }
    throw err;
  };

  app.post(
    '/devices/:id/rpc',
    {
      config: { permission: 'rpc' }, schema: {
        summary: 'Send a command (server-side RPC) to a device',
        description:
          'Two-way (default): waits for the answer, 200 with status answered, 504 with status timeout. One-way: 200 once the device acknowledged it ' +
          '(status delivered). Non-persistent commands need the device connected: 409 status offline when it is not (nothing is stored), 409 status ' +
          'failed when its connection ended before it acknowledged the command. An answer may come from any session of the device (e.g. after a ' +
          'reconnect) until the timeout. Persistent: 202 at once (status queued, or sent when the device is connected); follow it with GET.',
        tags: ['rpc'],
        params: DeviceIdParams,
        body: SendRpc,
        response: {
          200: RpcRecordSchema,
          202: RpcRecordSchema,
          400: ErrorResponse,
          404: ErrorResponse,
          409: NotConnected,
          503: ErrorResponse,
          504: RpcRecordSchema,
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const body = request.body;
      if (body.expiresInMs !== undefined && !body.persistent) {
        return reply.code(400).send(error(400, 'expiresInMs applies to persistent commands only; a non-persistent command lives for its timeout'));
      }
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      try {
        const outcome = await rpc.call(id, {
          method: body.method,
          params: body.params,
          oneWay: body.oneWay,
          persistent: body.persistent,
          timeoutMs: body.timeout,
          expiresInMs: body.expiresInMs,
        });
        if (outcome.kind === 'offline') {
          const why = outcome.connected ? 'is connected but not subscribed to v1/devices/me/rpc/request/+ (or v2/r/req/+)' : 'is not connected';
          return reply.code(409).send({
            ...error(409, `device ${id} ${why}; send the command with "persistent": true to queue it until it listens`),
            code: 'offline' as const,
          });
        }
        const record = outcome.record;
        if (!body.persistent && record.status === 'failed') {
          return reply.code(409).send({ ...error(409, `command ${record.id} failed: ${record.error ?? 'not sent'}`), code: 'failed' as const, rpc: record });
        }
        return reply.code(httpStatus(record, body.persistent)).send(record);
      } catch (err) {
        const { status, body: payload } = fail(err);
        return reply.code(status).send(payload);
      }
    },
  );

  app.get(
    '/devices/:id/rpc',
    {
      config: { permission: 'rpc' }, schema: {
        summary: "A device's commands, newest first",
        tags: ['rpc'],
        params: DeviceIdParams,
        querystring: Type.Object({
          status: Type.Optional(SafeText(200, { description: `comma-separated statuses: ${RPC_STATUSES.join(', ')}` })),
          limit: Limit(1000, { default: 100 }),
          before: Type.Optional(Int64Id({ description: "commands with an id below this (the previous page's nextBefore)" })),
        }),
        response: {
          200: Type.Object({ items: Type.Array(RpcRecordSchema), nextBefore: Type.Union([Type.Integer(), Type.Null()]) }),
          400: ErrorResponse,
          404: ErrorResponse,
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const { limit, before } = request.query;
      let statuses: RpcStatus[] | undefined;
      if (request.query.status !== undefined) {
        const wanted = [...new Set(request.query.status.split(',').map((s) => s.trim()).filter(Boolean))];
        const unknown = wanted.filter((s) => !(RPC_STATUSES as readonly string[]).includes(s));
        if (unknown.length > 0 || wanted.length === 0) {
          return reply.code(400).send(error(400, `unknown status ${unknown.map((s) => `"${s}"`).join(', ') || '""'}; statuses are ${RPC_STATUSES.join(', ')}`));
        }
        statuses = wanted as RpcStatus[];
      }
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const items = await rpc.list(id, { statuses, limit, before });
      return { items, nextBefore: items.length === limit ? items[items.length - 1]!.id : null };
    },
  );

  app.get(
    '/devices/:id/rpc/:rpcId',
    {
      config: { permission: 'rpc' }, schema: {
        summary: 'One command: its status and the answer',
        tags: ['rpc'],
        params: RpcIdParams,
        response: { 200: RpcRecordSchema, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id, rpcId } = request.params;
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const record = await rpc.get(id, rpcId);
      if (!record) return reply.code(404).send(error(404, `device ${id} has no command ${rpcId}`));
      return record;
    },
  );

  app.delete(
    '/devices/:id/rpc/:rpcId',
    {
      config: { permission: 'rpc' }, schema: {
        summary: 'Cancel a queued command (one the device has not been sent yet)',
        tags: ['rpc'],
        params: RpcIdParams,
        response: { 200: RpcRecordSchema, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id, rpcId } = request.params;
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      try {
        return await rpc.cancel(id, rpcId);
      } catch (err) {
        if (err instanceof RpcError && err.code === 'conflict') return reply.code(409).send(error(409, err.message));
        if (err instanceof RpcError && err.code === 'not_found') return reply.code(404).send(error(404, err.message));
        throw err;
      }
    },
  );
};

function httpStatus(record: RpcRecord, persistent: boolean): 200 | 202 | 504 {
  if (persistent) return 202;
  return record.status === 'answered' || record.status === 'delivered' ? 200 : 504;
}
