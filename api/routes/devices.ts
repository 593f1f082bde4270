import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { DeviceType, Label } from '../../core/device-types.ts';
import { DOMAINS, DOMAIN_LABELS, Domain } from '../../core/domains.ts';
import { RegistryError, type DeviceRegistry } from '../../core/registry.ts';
import { Device, DeviceIdParams, ErrorResponse, Location } from '../schemas.ts';

const CreateDevice = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\u0000-\\u001f\\u007f]+$' }),
    type: Type.String({ default: 'generic', maxLength: 64 }),
    location: Type.Optional(Type.Union([Location, Type.Null()])),
  },
  { additionalProperties: false },
);

const CreatedDevice = Type.Intersect([
  Device,
  Type.Object({ accessToken: Type.String({ description: 'MQTT username for this device; shown only now, stored only as a hash' }) }),
]);

export const devicesRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry }> = async (app, { registry }) => {
  app.post(
    '/devices',
    {
      schema: {
        summary: 'Register a device',
        tags: ['devices'],
        body: CreateDevice,
        response: { 201: CreatedDevice, 400: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      try {
        const { device, accessToken } = await registry.create(request.body);
        return reply.code(201).send({ ...device, accessToken });
      } catch (err) {
        if (err instanceof RegistryError) {
          const status = err.code === 'conflict' ? 409 : 400;
          return reply.code(status).send({ statusCode: status, error: status === 409 ? 'Conflict' : 'Bad Request', message: err.message });
        }
        throw err;
      }
    },
  );

  app.get(
    '/devices',
    {
      schema: {
        summary: 'List devices (cursor pagination by id)',
        tags: ['devices'],
        querystring: Type.Object({
          limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
          after: Type.Optional(Type.Integer({ minimum: 0, description: 'return devices with id greater than this (the previous page\'s nextAfter)' })),
        }),
        response: { 200: Type.Object({ items: Type.Array(Device), nextAfter: Type.Union([Type.Integer(), Type.Null()]) }) },
      },
    },
    async (request) => {
      const { limit, after } = request.query;
      const items = await registry.list({ limit, afterId: after });
      return { items, nextAfter: items.length === limit ? items[items.length - 1]!.id : null };
    },
  );

  app.get(
    '/devices/:id',
    {
      schema: { summary: 'One device', tags: ['devices'], params: DeviceIdParams, response: { 200: Device, 404: ErrorResponse } },
    },
    async (request, reply) => {
      const device = await registry.get(request.params.id);
      if (!device) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no device ${request.params.id}` });
      return device;
    },
  );

  app.get(
    '/domains',
    {
      schema: {
        summary: 'The departments devices belong to, with their names in English and Chinese',
        tags: ['devices'],
        response: { 200: Type.Array(Type.Object({ name: Domain, label: Label })) },
      },
    },
    async () => DOMAINS.map((name) => ({ name, label: DOMAIN_LABELS[name] })),
  );

  app.get(
    '/device-types',
    { schema: { summary: 'Device types and their telemetry keys', tags: ['devices'], response: { 200: Type.Array(DeviceType) } } },
    async () => registry.deviceTypes(),
  );
};
