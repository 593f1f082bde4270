import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import {
  ATTRIBUTE_LIMITS,
  ATTRIBUTE_SCOPES,
  AttributeError,
  isAttributeScope,
  splitKeys,
  validateAttributes,
  type AttributeScope,
  type AttributeService,
} from '../../core/attributes.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import { DeviceIdParams, ErrorResponse, badRequest, SafeText } from '../schemas.ts';
import { noDevice } from '../registry-errors.ts';

const Value = Type.Unknown({ description: 'string, number, boolean, JSON object or JSON array' });
const Values = Type.Record(Type.String(), Value);
const Entry = Type.Object({ value: Value, ts: Type.Integer({ description: 'last written, epoch milliseconds' }) });
const Entries = Type.Record(Type.String(), Entry);
const ByScope = Type.Object({ client: Type.Optional(Entries), shared: Type.Optional(Entries), server: Type.Optional(Entries) });
const ScopeParams = Type.Object({ id: DeviceIdParams.properties.id, scope: SafeText(20, { description: 'shared or server (client attributes belong to the device)' }) });
const KeysParam = SafeText(100_000, { description: 'comma-separated keys' });
const Delivered = Type.Boolean({
  description: 'the change was sent to the device now (connected and subscribed to v1/devices/me/attributes); otherwise it gets it by requesting its attributes',
});

const SCOPES_TEXT = ATTRIBUTE_SCOPES.join(', ');

/**
 * Device attributes (ThingsBoard's client, shared and server scopes) and the shadow view
 * (desired = shared, reported = client). Writing shared attributes pushes the change to the
 * device when it is connected and subscribed.
 */
export const attributesRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; attributes: AttributeService }> = async (app, { registry, attributes }) => {
  /** The scope a write names, or the 400 message. */
  const writableScope = (scope: string, verb: 'set' | 'delete'): AttributeScope | string => {
    if (!isAttributeScope(scope)) return `scope: "${scope}" is not one of ${SCOPES_TEXT}`;
    if (scope === 'client' && verb === 'set') return 'client attributes belong to the device, which publishes them on v1/devices/me/attributes; set shared (pushed to the device) or server attributes';
    return scope;
  };
  const tooManyKeys = (n: number) => `${n} keys; at most ${ATTRIBUTE_LIMITS.maxKeysPerMessage} per request`;

  app.get(
    '/devices/:id/attributes',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Attributes of a device, by scope, with when each was last written',
        tags: ['attributes'],
        params: DeviceIdParams,
        querystring: Type.Object({
          scope: Type.Optional(SafeText(20, { description: `${SCOPES_TEXT}; omitted: every scope` })),
          keys: Type.Optional(KeysParam),
        }),
        response: { 200: ByScope, 400: ErrorResponse, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const { scope } = request.query;
      if (scope !== undefined && !isAttributeScope(scope)) return reply.code(400).send(badRequest(`scope: "${scope}" is not one of ${SCOPES_TEXT}`));
      const keys = splitKeys(request.query.keys);
      if (keys && keys.length > ATTRIBUTE_LIMITS.maxKeysPerMessage) return reply.code(400).send(badRequest(`keys: ${tooManyKeys(keys.length)}`));
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      return attributes.entries(id, scope === undefined ? ATTRIBUTE_SCOPES : [scope], keys);
    },
  );

  app.post(
    '/devices/:id/attributes/:scope',
    {
      config: { permission: 'attributes:write' }, schema: {
        summary: 'Set shared or server attributes (merged with those stored); shared changes are pushed to the device',
        tags: ['attributes'],
        params: ScopeParams,
        body: Type.Record(Type.String(), Value, { description: 'flat JSON object of key/value pairs, e.g. {"target": 22, "mode": "eco"}' }),
        response: {
          200: Type.Object({ scope: Type.String(), updated: Type.Array(Type.String()), ts: Type.Integer(), delivered: Delivered }),
          400: ErrorResponse,
          404: ErrorResponse,
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const scope = writableScope(request.params.scope, 'set');
      if (!isAttributeScope(scope)) return reply.code(400).send(badRequest(scope));
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const body = request.body as Record<string, unknown>;
      const keys = Object.keys(body);
      if (keys.length === 0) return reply.code(400).send(badRequest('body: no attributes given (e.g. {"target": 22})'));
      if (keys.length > ATTRIBUTE_LIMITS.maxKeysPerMessage) return reply.code(400).send(badRequest(`body: ${tooManyKeys(keys.length)}`));
      const checked = validateAttributes(body, { nulls: 'refuse' });
      if (checked.rejections.length > 0) {
        const problems = checked.rejections.slice(0, 10).map((r) => `${r.reason}: ${r.key !== undefined && !r.detail.startsWith(`${r.key}:`) ? `${r.key}: ` : ''}${r.detail}`);
        return reply.code(400).send(badRequest(`body: nothing stored; ${problems.join('; ')}`));
      }
      try {
        const { ts, delivered } = await attributes.save(id, scope, checked.values);
        return { scope, updated: keys, ts, delivered };
      } catch (err) {
        if (err instanceof AttributeError) return err.reason === 'not_found' ? reply.code(404).send(noDevice(id)) : reply.code(400).send(badRequest(`${err.reason}: ${err.message}`));
        throw err;
      }
    },
  );

  app.delete(
    '/devices/:id/attributes/:scope',
    {
      config: { permission: 'attributes:write' }, schema: {
        summary: 'Delete attributes of one scope; deleted shared keys are pushed to the device as {"deleted": [keys]}',
        tags: ['attributes'],
        params: ScopeParams,
        querystring: Type.Object({ keys: Type.Optional(KeysParam) }),
        response: {
          200: Type.Object({ scope: Type.String(), deleted: Type.Array(Type.String(), { description: 'the keys that existed' }), delivered: Delivered }),
          400: ErrorResponse,
          404: ErrorResponse,
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const scope = writableScope(request.params.scope, 'delete');
      if (!isAttributeScope(scope)) return reply.code(400).send(badRequest(scope));
      const keys = splitKeys(request.query.keys);
      if (!keys || keys.length === 0) return reply.code(400).send(badRequest('keys: name the keys to delete, comma-separated (keys=a,b)'));
      if (keys.length > ATTRIBUTE_LIMITS.maxKeysPerMessage) return reply.code(400).send(badRequest(`keys: ${tooManyKeys(keys.length)}`));
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const { deleted, delivered } = await attributes.remove(id, scope, keys);
      return { scope, deleted, delivered };
    },
  );

  app.get(
    '/devices/:id/shadow',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Device shadow: desired (shared) and reported (client) state, and the delta still to apply',
        tags: ['attributes'],
        params: DeviceIdParams,
        response: {
          200: Type.Object({
            desired: Values,
            reported: Values,
            delta: Type.Record(Type.String(), Value, { description: 'desired keys whose reported value differs or is missing, with the desired value' }),
            inSync: Type.Boolean({ description: 'the delta is empty' }),
            updatedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], { description: 'latest change of either side' }),
          }),
          404: ErrorResponse,
        },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      return attributes.shadow(id);
    },
  );
};
