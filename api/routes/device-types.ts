import type { Access } from '../../core/access/access.ts';
import type { Principal } from '../../core/access/principal.ts';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { DeviceType, DeviceTypeDefinition, DeviceTypeName } from '../../core/device-types.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import { registryErrorHandler } from '../registry-errors.ts';
import { ErrorResponse, SafeText } from '../schemas.ts';

const NewDeviceType = Type.Object({ name: DeviceTypeName, ...DeviceTypeDefinition.properties }, { additionalProperties: false });
const TypeNameParams = Type.Object({ name: SafeText(64) });

/**
 * Device types: the built-in ones (read-only) and custom ones. Ingest checks each device's
 * telemetry against its type's declaration; a change applies from the next message.
 */
export const deviceTypesRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; access: Access }> = async (app, { registry, access }) => {
  app.setErrorHandler(registryErrorHandler);
  // Device types are city-wide: a scoped credential sees those of its domains and changes none.
  const typeVisible = (p: Principal, name: string) => {
    const type = registry.deviceType(name);
    return type && access.domainVisible(p, type.domain) ? type : undefined;
  };
  app.addHook('preValidation', async (request) => {
    if (request.method !== 'GET') access.requireUnscoped(request.principal, 'changing device types');
  });

  app.get(
    '/device-types',
    { config: { permission: 'read' }, schema: { summary: 'Device types and their telemetry keys', tags: ['device types'], response: { 200: Type.Array(DeviceType) } } },
    async (request) => registry.deviceTypes().filter((t) => access.domainVisible(request.principal, t.domain)),
  );

  app.get(
    '/device-types/:name',
    { config: { permission: 'read' }, schema: { summary: 'One device type', tags: ['device types'], params: TypeNameParams, response: { 200: DeviceType, 404: ErrorResponse } } },
    async (request, reply) => {
      const type = typeVisible(request.principal, request.params.name);
      if (!type) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no device type "${request.params.name}"` });
      return type;
    },
  );

  app.post(
    '/device-types',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: 'Create a custom device type',
        description:
          'Its domain, telemetry keys (unit, plausible range min..max), whether its devices move (position from telemetry) and whether undeclared keys are stored. ' +
          'latitude/longitude/altitude are never declared: every device may send them.',
        tags: ['device types'],
        body: NewDeviceType,
        response: { 201: DeviceType, 400: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => reply.code(201).send(await registry.createType(request.body)),
  );

  app.put(
    '/device-types/:name',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: "Replace a custom device type's declaration",
        description:
          "Connected devices of the type are checked against the new declaration from their next message. Built-in types are read-only (403). The domain can change only while no device has the type (409).",
        tags: ['device types'],
        params: TypeNameParams,
        body: DeviceTypeDefinition,
        response: { 200: DeviceType, 400: ErrorResponse, 403: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => registry.updateType(request.params.name, request.body),
  );

  app.delete(
    '/device-types/:name',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: 'Delete a custom device type',
        description: 'Only when no device has it (409 otherwise). Built-in types are read-only (403).',
        tags: ['device types'],
        params: TypeNameParams,
        response: { 204: Type.Null(), 403: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      await registry.deleteType(request.params.name);
      return reply.code(204).send(null);
    },
  );
};
