import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import { Label } from '../../core/device-types.ts';
import { DOMAINS, DOMAIN_LABELS, Domain } from '../../core/domains.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import { DeviceFilterQuery, badRequest, toDeviceFilter, withinScope } from '../device-filter.ts';
import type { Access } from '../../core/access/access.ts';
import { noDevice, registryErrorHandler } from '../registry-errors.ts';
import { Device, DeviceIdParams, DeviceLabel, DeviceName, ErrorResponse, Location, Int32After, Int32Id, Limit, SafeText } from '../schemas.ts';

// Null first in unions: with type coercion on, a null would otherwise become "" or 0.
const DeviceFields = {
  name: DeviceName,
  label: Type.Optional(Type.Union([Type.Null(), DeviceLabel])),
  location: Type.Optional(Type.Union([Type.Null(), Location])),
  isGateway: Type.Optional(Type.Boolean({ default: false })),
  gatewayId: Type.Optional(Type.Union([Type.Null(), Int32Id()])),
};
const CreateDevice = Type.Object({ ...DeviceFields, type: SafeText(64, { default: 'generic' }) }, { additionalProperties: false });
const ReplaceDevice = Type.Object(
  { ...DeviceFields, type: SafeText(64) },
  { additionalProperties: false, description: 'The whole description: fields left out are cleared (label, location, gatewayId: null; isGateway: false).' },
);

const CreatedDevice = Type.Intersect([
  Device,
  Type.Object({ accessToken: Type.String({ description: 'MQTT username for this device; shown only now, stored only as a hash' }) }),
]);

// MQTT strings; the broker compares at most 256 characters.
const MqttString = SafeText(256, { minLength: 1 });
const BasicCredentials = Type.Object(
  { clientId: Type.Optional(MqttString), username: Type.Optional(MqttString), password: Type.Optional(MqttString) },
  {
    additionalProperties: false,
    description: "ThingsBoard's MQTT basic schemes: clientId alone; username and password (any client id); or all three, which must all match.",
  },
);
const BasicCredentialsView = Type.Object({
  scheme: Type.Union([Type.Null(), Type.Literal('client_id'), Type.Literal('username_password'), Type.Literal('client_id_username_password')], {
    description: 'null: none (the access token still works)',
  }),
  clientId: Type.Union([Type.Null(), Type.String()]),
  username: Type.Union([Type.Null(), Type.String()]),
  hasPassword: Type.Boolean({ description: 'the password itself is never shown (stored only as a hash)' }),
});
type BasicCredentialsView = Static<typeof BasicCredentialsView>;

function credentialsView(c: { clientId: string | null; username: string | null; hasPassword: boolean }): BasicCredentialsView {
  const scheme = c.username !== null ? (c.clientId !== null ? 'client_id_username_password' : 'username_password') : c.clientId !== null ? 'client_id' : null;
  return { scheme, ...c };
}

/** Devices: registration, description, deletion, access token and MQTT basic credentials; domains. */
export const devicesRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; access: Access }> = async (app, { registry, access }) => {
  /** A scoped writer registers and moves devices only within its scope. */
  const requirePlace = (request: { principal: Parameters<Access['requirePlace']>[0] }, type: string, location: { lat: number; lng: number } | null | undefined) => {
    const domain = registry.deviceType(type)?.domain;
    if (domain) access.requirePlace(request.principal, domain, location);
  };
  app.setErrorHandler(registryErrorHandler);

  /** A sub-device's gateway must exist and be a gateway. */
  async function checkGateway(gatewayId: number | null | undefined, deviceId?: number): Promise<void> {
    if (gatewayId === null || gatewayId === undefined) return;
    if (gatewayId === deviceId) throw badRequest('gatewayId: a device cannot be its own gateway');
    const gateway = await registry.get(gatewayId);
    if (!gateway) throw badRequest(`gatewayId: no device ${gatewayId}`);
    if (!gateway.isGateway) throw badRequest(`gatewayId: device ${gatewayId} (${gateway.name}) is not a gateway`);
  }

  app.post(
    '/devices',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: 'Register a device',
        tags: ['devices'],
        body: CreateDevice,
        response: { 201: CreatedDevice, 400: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      requirePlace(request, request.body.type, request.body.location);
      await checkGateway(request.body.gatewayId);
      const { device, accessToken } = await registry.create(request.body);
      return reply.code(201).send({ ...device, accessToken });
    },
  );

  app.get(
    '/devices',
    {
      config: { permission: 'read' }, schema: {
        summary: 'List devices (cursor pagination by id), optionally filtered',
        tags: ['devices'],
        querystring: Type.Object({
          ...DeviceFilterQuery.properties,
          limit: Limit(1000, { default: 100 }),
          after: Type.Optional(Int32After({ description: "return devices with id greater than this (the previous page's nextAfter)" })),
        }),
        response: { 200: Type.Object({ items: Type.Array(Device), nextAfter: Type.Union([Type.Integer(), Type.Null()]) }), 400: ErrorResponse },
      },
    },
    async (request) => {
      const { limit, after, ...filter } = request.query;
      const items = await registry.list({ ...(await withinScope(toDeviceFilter(filter, registry), access, request.principal)), limit, afterId: after });
      return { items, nextAfter: items.length === limit ? items[items.length - 1]!.id : null };
    },
  );

  app.get(
    '/devices/:id',
    {
      config: { permission: 'read' }, schema: { summary: 'One device', tags: ['devices'], params: DeviceIdParams, response: { 200: Device, 404: ErrorResponse } },
    },
    async (request, reply) => {
      const device = await registry.get(request.params.id);
      if (!device) return reply.code(404).send(noDevice(request.params.id));
      return device;
    },
  );

  app.put(
    '/devices/:id',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: "Replace a device's description",
        description:
          'Name, label, type, location, gateway flag and gateway. Credentials are kept; a connected device carries on with the new description. ' +
          'A device with readings cannot change to a type of another domain (409): readings are stored per domain.',
        tags: ['devices'],
        params: DeviceIdParams,
        body: ReplaceDevice,
        response: { 200: Device, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => {
      requirePlace(request, request.body.type, request.body.location);
      await checkGateway(request.body.gatewayId, request.params.id);
      return registry.update(request.params.id, request.body);
    },
  );

  app.delete(
    '/devices/:id',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: 'Delete a device',
        description: 'Its live MQTT session is closed at once and its credentials stop working. Stored readings are kept until retention drops them.',
        tags: ['devices'],
        params: DeviceIdParams,
        response: { 204: Type.Null(), 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      await registry.delete(request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/devices/:id/token',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: 'Rotate the access token',
        description: 'Returns the new token (shown only now). The old token is refused from now on and the live session is closed.',
        tags: ['devices'],
        params: DeviceIdParams,
        response: { 200: CreatedDevice, 404: ErrorResponse },
      },
    },
    async (request) => {
      const { device, accessToken } = await registry.rotateToken(request.params.id);
      return { ...device, accessToken };
    },
  );

  app.get(
    '/devices/:id/credentials',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: "A device's MQTT basic credentials (never the password)",
        tags: ['devices'],
        params: DeviceIdParams,
        response: { 200: BasicCredentialsView, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const creds = await registry.basicCredentials(request.params.id);
      if (!creds) return reply.code(404).send(noDevice(request.params.id));
      return credentialsView(creds);
    },
  );

  app.put(
    '/devices/:id/credentials',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: 'Set MQTT basic credentials',
        description:
          'Replaces any earlier basic credentials; the access token keeps working. The live session is closed (it reconnects with its credentials). ' +
          '409 when the username, or a client id used alone, belongs to another device.',
        tags: ['devices'],
        params: DeviceIdParams,
        body: BasicCredentials,
        response: { 200: BasicCredentialsView, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => {
      const { clientId, username, password } = request.body;
      if (clientId === undefined && username === undefined) {
        throw badRequest('give a clientId, a username and password, or all three (DELETE removes basic credentials)');
      }
      // ThingsBoard: a CONNECT whose username or client id is "provision" (no password) opens a provisioning session.
      if (clientId === 'provision' || username === 'provision') throw badRequest('"provision" is reserved for device provisioning');
      await registry.setBasicCredentials(request.params.id, { clientId, username, password });
      return credentialsView((await registry.basicCredentials(request.params.id))!);
    },
  );

  app.delete(
    '/devices/:id/credentials',
    {
      config: { permission: 'devices:write' }, schema: {
        summary: 'Remove MQTT basic credentials',
        description: 'The access token keeps working. A session opened with the basic credentials is closed.',
        tags: ['devices'],
        params: DeviceIdParams,
        response: { 204: Type.Null(), 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const creds = await registry.basicCredentials(request.params.id);
      if (!creds) return reply.code(404).send(noDevice(request.params.id));
      if (creds.clientId !== null || creds.username !== null) await registry.setBasicCredentials(request.params.id, {});
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/domains',
    {
      config: { permission: 'read' }, schema: {
        summary: 'The departments devices belong to, with their names in English and Chinese',
        tags: ['devices'],
        response: { 200: Type.Array(Type.Object({ name: Domain, label: Label })) },
      },
    },
    async () => DOMAINS.map((name) => ({ name, label: DOMAIN_LABELS[name] })),
  );
};
