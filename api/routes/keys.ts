import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import { AccessError, type Access } from '../../core/access/access.ts';
import { accessErrorBody, presentedCredential } from '../access.ts';
import type { ApiKey, ApiKeyStore } from '../../core/access/api-keys.ts';
import { PERMISSIONS } from '../../core/access/permissions.ts';
import { describePrincipal } from '../../core/access/principal.ts';
import { RoleError, type RoleStore } from '../../core/access/roles.ts';
import { ScopeError, ScopeInput } from '../../core/access/scope.ts';
import { parseRequestLimit } from '../../core/access/rate-limits.ts';
import { ErrorResponse, Int32After, Int32Id, Limit, SafeName, SafeText } from '../schemas.ts';
import { badRequest } from '../device-filter.ts';
import { parseInstant } from './telemetry.ts';

const Text = (maxLength: number, description: string) => SafeName(maxLength, { description });
const RoleName = Type.String({ minLength: 1, maxLength: 40, pattern: '^[a-z][a-z0-9_-]*$' });
const KeyId = Type.Object({ id: Int32Id() });

const ApiKeyView = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  owner: Type.String({ description: 'the agency or person the key belongs to' }),
  roles: Type.Array(Type.String()),
  scope: Type.Unknown({ description: 'as given: {domains?, towns?, area?}; {} is everything' }),
  prefix: Type.String({ description: 'the first characters of the key, to tell keys apart' }),
  createdBy: Type.Union([Type.String(), Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  expiresAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  revokedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  rotatedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
  lastUsedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null(), Type.Unknown()], { description: 'written at most once a minute' }),
  rateLimit: Type.Union([Type.String(), Type.Null()], { description: "the key's own request limit; null: its roles'" }),
});
const WithSecret = Type.Intersect([ApiKeyView, Type.Object({ key: Type.String({ description: 'the key itself: shown only now, stored only as a hash' }) })]);
const Expiry = Type.Union([Type.Null(), SafeText(40)], { description: 'ISO 8601 date-time or epoch ms; null: never' });

const CreateKey = Type.Object(
  {
    name: Text(100, 'what the key is for, e.g. "water bureau — flood dashboard"'),
    owner: Text(100, 'the agency or person it belongs to, e.g. "东莞市水务局"'),
    roles: Type.Array(RoleName, { minItems: 1, maxItems: 10, uniqueItems: true }),
    scope: Type.Optional(ScopeInput),
    expiresAt: Type.Optional(Expiry),
    rateLimit: Type.Optional(
      Type.Union([Type.Null(), SafeText(40)], { description: "this key's own request limit, e.g. 1200/min or off; null: its roles' (RATE_LIMITS)" }),
    ),
  },
  { additionalProperties: false },
);
const UpdateKey = Type.Partial(CreateKey, { additionalProperties: false, minProperties: 1 });

const RoleView = Type.Object({ name: Type.String(), description: Type.String(), permissions: Type.Array(Type.String()), builtin: Type.Boolean() });
const SaveRole = Type.Object(
  { description: Type.Optional(SafeText(500)), permissions: Type.Array(SafeText(40), { maxItems: 50, uniqueItems: true }) },
  { additionalProperties: false },
);

/**
 * API keys and roles (permission `keys:admin`), and `GET /me` (any credential): who the caller is,
 * with its permissions and scope.
 */
export const keysRoutes: FastifyPluginAsyncTypebox<{ access: Access; apiKeys: ApiKeyStore; roles: RoleStore }> = async (app, { access, apiKeys, roles }) => {
  app.setErrorHandler(async (err, _request, reply) => {
    if (err instanceof ScopeError) return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: err.message });
    if (err instanceof RoleError) {
      const error = err.statusCode === 400 ? 'Bad Request' : err.statusCode === 404 ? 'Not Found' : 'Conflict';
      return reply.code(err.statusCode).send({ statusCode: err.statusCode, error, message: err.message });
    }
    throw err;
  });

  const expiry = (raw: string | null | undefined): Date | null | undefined => {
    if (raw === undefined || raw === null) return raw;
    const at = parseInstant(raw);
    if (!at) throw badRequest(`expiresAt: "${raw}" is not an ISO 8601 date-time or epoch milliseconds`);
    if (at.getTime() <= Date.now()) throw badRequest(`expiresAt: ${at.toISOString()} is in the past`);
    return at;
  };
  const checkRoles = (names: readonly string[] | undefined) => {
    const unknown = names ? roles.unknown(names) : [];
    if (unknown.length > 0) throw badRequest(`roles: unknown role${unknown.length > 1 ? 's' : ''} ${unknown.map((r) => `"${r}"`).join(', ')} (GET /api/v1/roles lists them)`);
  };
  const rateLimit = (raw: string | null | undefined): string | null | undefined => {
    if (raw === undefined || raw === null) return raw;
    try {
      parseRequestLimit(raw);
    } catch (err) {
      throw badRequest(`rateLimit: ${(err as Error).message}`);
    }
    return raw.trim();
  };
  const notFound = (id: number) => ({ statusCode: 404, error: 'Not Found', message: `no API key ${id} (or it was revoked)` });

  app.get('/me', { config: { permission: 'public' }, schema: { summary: 'Who the credential is: roles, permissions and scope', tags: ['access'], response: { 200: Type.Unknown(), 401: ErrorResponse, 429: ErrorResponse } } }, async (request, reply) => {
    // Public only in that no permission is needed: any valid credential may ask who it is.
    const credential = presentedCredential(request);
    try {
      if (credential === undefined) throw new AccessError(401, 'a credential is required: Authorization: Bearer <API key or token>');
      return describePrincipal(await access.authenticate(credential, { source: request.ip, via: 'rest' }));
    } catch (err) {
      if (err instanceof AccessError) {
        if (err.retryAfterSeconds !== undefined) reply.header('retry-after', String(err.retryAfterSeconds));
        return reply.code(err.statusCode === 429 ? 429 : 401).send(accessErrorBody(err));
      }
      throw err;
    }
  });

  app.post(
    '/keys',
    { config: { permission: 'keys:admin' }, schema: { summary: 'Create an API key (shown once)', tags: ['access'], body: CreateKey, response: { 201: WithSecret, 400: ErrorResponse } } },
    async (request, reply) => {
      const body = request.body;
      checkRoles(body.roles);
      const scope = access.checkScope(body.scope ?? {}).input;
      const { key, secret } = await apiKeys.create({
        name: body.name,
        owner: body.owner,
        roles: body.roles,
        scope,
        expiresAt: expiry(body.expiresAt) ?? null,
        rateLimit: rateLimit(body.rateLimit) ?? null,
        createdBy: request.principal.id,
      });
      return reply.code(201).send({ ...key, key: secret });
    },
  );

  app.get(
    '/keys',
    {
      config: { permission: 'keys:admin' },
      schema: {
        summary: 'List API keys (without the keys themselves)',
        tags: ['access'],
        querystring: Type.Object({
          owner: Type.Optional(Text(100, 'only keys of this owner')),
          role: Type.Optional(RoleName),
          revoked: Type.Optional(Type.Boolean({ default: false, description: 'include revoked keys' })),
          after: Type.Optional(Int32After({ description: 'cursor: the last id of the previous page' })),
          limit: Type.Optional(Limit(1000, { default: 100 })),
        }),
        response: { 200: Type.Object({ keys: Type.Array(ApiKeyView), nextCursor: Type.Union([Type.Integer(), Type.Null()]) }) },
      },
    },
    async (request) => {
      const limit = request.query.limit ?? 100;
      const keys = await apiKeys.list({ owner: request.query.owner, role: request.query.role, includeRevoked: request.query.revoked, limit, afterId: request.query.after });
      return { keys, nextCursor: keys.length === limit ? keys[keys.length - 1]!.id : null };
    },
  );

  app.get(
    '/keys/:id',
    { config: { permission: 'keys:admin' }, schema: { summary: 'One API key', tags: ['access'], params: KeyId, response: { 200: ApiKeyView, 404: ErrorResponse } } },
    async (request, reply) => (await apiKeys.get(request.params.id)) ?? reply.code(404).send(notFound(request.params.id)),
  );

  app.patch(
    '/keys/:id',
    {
      config: { permission: 'keys:admin' },
      schema: {
        summary: "Change a key's name, owner, roles, scope or expiry (open streams of the key are closed)",
        tags: ['access'],
        params: KeyId,
        body: UpdateKey,
        response: { 200: ApiKeyView, 400: ErrorResponse, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const body = request.body;
      checkRoles(body.roles);
      const scope = body.scope === undefined ? undefined : access.checkScope(body.scope).input;
      const key: ApiKey | undefined = await apiKeys.update(request.params.id, { ...body, scope, expiresAt: expiry(body.expiresAt), rateLimit: rateLimit(body.rateLimit) });
      return key ?? reply.code(404).send(notFound(request.params.id));
    },
  );

  app.post(
    '/keys/:id/rotate',
    {
      config: { permission: 'keys:admin' },
      schema: { summary: 'A new secret for the key; the old one stops working at once', tags: ['access'], params: KeyId, response: { 200: WithSecret, 404: ErrorResponse } },
    },
    async (request, reply) => {
      const rotated = await apiKeys.rotate(request.params.id);
      return rotated ? { ...rotated.key, key: rotated.secret } : reply.code(404).send(notFound(request.params.id));
    },
  );

  app.post(
    '/keys/:id/revoke',
    {
      config: { permission: 'keys:admin' },
      schema: {
        summary: 'Revoke a key: refused from now on, its live streams and MQTT sessions are closed',
        tags: ['access'],
        params: KeyId,
        response: { 200: ApiKeyView, 404: ErrorResponse },
      },
    },
    async (request, reply) => (await apiKeys.revoke(request.params.id)) ?? reply.code(404).send(notFound(request.params.id)),
  );

  app.get(
    '/roles',
    {
      config: { permission: 'keys:admin' },
      schema: {
        summary: 'Roles and the permissions they grant; every permission with its meaning',
        tags: ['access'],
        response: { 200: Type.Object({ roles: Type.Array(RoleView), permissions: Type.Record(Type.String(), Type.String()) }) },
      },
    },
    async () => ({ roles: roles.list(), permissions: PERMISSIONS }),
  );

  app.put(
    '/roles/:name',
    {
      config: { permission: 'keys:admin' },
      schema: {
        summary: 'Create or replace a role (a named set of permissions)',
        tags: ['access'],
        params: Type.Object({ name: SafeText(64) }),
        body: SaveRole,
        response: { 200: RoleView, 400: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => roles.save(request.params.name, request.body),
  );

  app.delete(
    '/roles/:name',
    {
      config: { permission: 'keys:admin' },
      schema: {
        summary: 'Delete a role no key holds',
        tags: ['access'],
        params: Type.Object({ name: SafeText(64) }),
        response: { 204: Type.Null(), 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      await roles.delete(request.params.name, (role) => apiKeys.countWithRole(role));
      return reply.code(204).send(null);
    },
  );
};
