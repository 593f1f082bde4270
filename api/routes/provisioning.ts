import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { MIN_CHOSEN_TOKEN_LENGTH, type Provisioning } from '../../core/provisioning.ts';
import { RegistryError } from '../../core/registry.ts';
import { ErrorResponse, badRequest, Int32Id, SafeText } from '../schemas.ts';

const ProvisionKey = Type.Object({
  id: Type.Integer(),
  key: Type.String({ description: "ThingsBoard's provisionDeviceKey" }),
  name: Type.Union([Type.String(), Type.Null()]),
  deviceType: Type.String({ description: 'devices provisioned with this key get this type' }),
  allowCreate: Type.Boolean({
    description: 'true: devices register themselves ("allow create new devices"); false: only devices registered beforehand with this type claim credentials, once each',
  }),
  maxDevices: Type.Union([Type.Integer(), Type.Null()], { description: 'at most this many devices (null: no limit)' }),
  devicesProvisioned: Type.Integer(),
  createdAt: Type.String({ format: 'date-time' }),
  lastUsedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
});

const CreateProvisionKey = Type.Object(
  {
    deviceType: SafeText(64),
    name: Type.Optional(Type.Union([SafeText(200), Type.Null()])),
    allowCreate: Type.Boolean({ default: true }),
    maxDevices: Type.Optional(Type.Union([Type.Integer({ minimum: 1, maximum: 100_000_000 }), Type.Null()])),
  },
  { additionalProperties: false },
);

const KeyIdParams = Type.Object({ id: Int32Id() });

/** Admin API: provision keys (with the admin key). */
export const provisionKeysRoutes: FastifyPluginAsyncTypebox<{ provisioning: Provisioning }> = async (app, { provisioning }) => {
  app.post(
    '/provision-keys',
    {
      config: { permission: 'platform:admin' }, schema: {
        summary: 'Create a provision key; its secret is shown only in this answer',
        tags: ['provisioning'],
        body: CreateProvisionKey,
        response: { 201: Type.Intersect([ProvisionKey, Type.Object({ secret: Type.String({ description: "ThingsBoard's provisionDeviceSecret; shown only now, stored only as a hash" }) })]), 400: ErrorResponse },
      },
    },
    async (request, reply) => {
      try {
        const { key, secret } = await provisioning.createKey(request.body);
        return reply.code(201).send({ ...key, secret });
      } catch (err) {
        if (err instanceof RegistryError) return reply.code(400).send(badRequest(err.message));
        throw err;
      }
    },
  );

  app.get('/provision-keys', { config: { permission: 'platform:admin' }, schema: { summary: 'Provision keys (without their secrets)', tags: ['provisioning'], response: { 200: Type.Array(ProvisionKey) } } }, async () =>
    provisioning.listKeys(),
  );

  app.get(
    '/provision-keys/:id',
    { config: { permission: 'platform:admin' }, schema: { summary: 'One provision key', tags: ['provisioning'], params: KeyIdParams, response: { 200: ProvisionKey, 404: ErrorResponse } } },
    async (request, reply) => {
      const key = await provisioning.getKey(request.params.id);
      return key ?? reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no provision key ${request.params.id}` });
    },
  );

  app.delete(
    '/provision-keys/:id',
    {
      config: { permission: 'platform:admin' }, schema: {
        summary: 'Revoke a provision key (devices it provisioned keep their credentials)',
        tags: ['provisioning'],
        params: KeyIdParams,
        response: { 204: Type.Null(), 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      if (!(await provisioning.deleteKey(request.params.id))) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no provision key ${request.params.id}` });
      return reply.code(204).send(null);
    },
  );
};

const ProvisionRequest = Type.Object(
  {
    provisionDeviceKey: Type.Optional(Type.String()),
    provisionDeviceSecret: Type.Optional(Type.String()),
    deviceName: Type.Optional(Type.String()),
    credentialsType: Type.Optional(Type.String({ description: 'ACCESS_TOKEN (default) or MQTT_BASIC' })),
    token: Type.Optional(Type.String({ description: `ACCESS_TOKEN chosen by the device (at least ${MIN_CHOSEN_TOKEN_LENGTH} characters); omitted: generated` })),
    clientId: Type.Optional(Type.String()),
    username: Type.Optional(Type.String()),
    password: Type.Optional(Type.String()),
    location: Type.Optional(Type.Object({ lat: Type.Number(), lng: Type.Number(), alt: Type.Optional(Type.Number()) })),
  },
  { additionalProperties: true },
);

/**
 * Device API over HTTP (no admin key), as ThingsBoard's `POST /api/v1/provision`: the same JSON
 * request and answer as over MQTT, always with HTTP 200 (the outcome is in `status`).
 */
export const provisionRoutes: FastifyPluginAsyncTypebox<{ provisioning: Provisioning }> = async (app, { provisioning }) => {
  app.post(
    '/provision',
    {
      config: { permission: 'public', limitByAddress: true }, schema: {
        summary: 'Device provisioning (ThingsBoard-compatible; no admin key): answers {credentialsValue, credentialsType, status} or {errorMsg, status}',
        tags: ['provisioning'],
        security: [],
        body: ProvisionRequest,
        response: { 200: Type.Record(Type.String(), Type.Unknown()) },
      },
      // The device's own JSON is checked by the provisioning rules (with ThingsBoard's answers), not here.
      validatorCompiler: () => () => true,
    },
    async (request) => provisioning.provision(request.body, { address: request.ip, via: 'http' }),
  );
};
