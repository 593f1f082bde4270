import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { ClaimService } from '../../core/claims.ts';
import { MAX_SECRET_KEY_LENGTH } from '../../core/claims.ts';
import { DeviceName, ErrorResponse, SafeText } from '../schemas.ts';

const NameParams = Type.Object({ name: DeviceName });

const ClaimBody = Type.Object(
  { secretKey: Type.Optional(SafeText(MAX_SECRET_KEY_LENGTH, { description: 'the secret the device sent with its claim request; omitted: the empty secret' })) },
  { additionalProperties: false },
);

const Claimed = Type.Object({
  result: Type.Literal('SUCCESS'),
  device: Type.Object({ id: Type.Integer(), name: Type.String(), type: Type.String(), domain: Type.String() }),
  owner: Type.String({ description: 'the agency that now owns the device (the owner of the credential)' }),
});

const ClaimRefused = Type.Object({
  ...ErrorResponse.properties,
  result: Type.Optional(Type.Union([Type.Literal('FAILURE'), Type.Literal('CLAIMED')], { description: "ThingsBoard's ClaimResponse (absent when the request itself is malformed)" })),
  reason: Type.Optional(Type.Union([Type.Literal('no_request'), Type.Literal('expired'), Type.Literal('wrong_secret')])),
});

const Released = Type.Object({
  device: Type.Object({ id: Type.Integer(), name: Type.String() }),
  previousOwner: Type.Union([Type.String(), Type.Null()], { description: 'null: the device had no owner (a pending claim request, if any, was dropped)' }),
});

const error = (statusCode: 400 | 404 | 409, message: string) => ({ statusCode, error: { 400: 'Bad Request', 404: 'Not Found', 409: 'Conflict' }[statusCode], message });

/**
 * Claiming (core/claims.ts), ThingsBoard's `POST /api/customer/device/{deviceName}/claim` and
 * `DELETE …/claim` (reclaim): an agency claims a device that asked to be claimed, with its secret;
 * an admin releases it. SUCCESS answers 200; FAILURE (no request, expired, wrong secret) 400 and
 * CLAIMED (someone owns it) 409, as problem details carrying `result` (ThingsBoard: 400 for both).
 */
export const claimsRoutes: FastifyPluginAsyncTypebox<{ claims: ClaimService }> = async (app, { claims }) => {
  app.post(
    '/claims/:name',
    {
      config: { permission: 'devices:claim' },
      schema: {
        summary: 'Claim a device that asked to be claimed (v1/devices/me/claim), with its secret',
        params: NameParams,
        body: ClaimBody,
        response: { 200: Claimed, 400: ClaimRefused, 404: ErrorResponse, 409: ClaimRefused },
      },
    },
    async (request, reply) => {
      const p = request.principal;
      const outcome = await claims.claim(request.params.name, request.body?.secretKey ?? '', p.owner, p.id);
      switch (outcome.result) {
        case 'SUCCESS': {
          const { id, name, type, domain } = outcome.device;
          request.log.info({ device: id, owner: outcome.owner, principal: p.id }, 'device claimed');
          return { result: 'SUCCESS' as const, device: { id, name, type, domain }, owner: outcome.owner };
        }
        case 'NOT_FOUND':
          return reply.code(404).send(error(404, outcome.detail));
        case 'CLAIMED':
          return reply.code(409).send({ ...error(409, outcome.detail), result: 'CLAIMED' as const });
        case 'FAILURE':
          return reply.code(400).send({ ...error(400, outcome.detail), result: 'FAILURE' as const, reason: outcome.reason });
      }
    },
  );

  app.delete(
    '/claims/:name',
    {
      config: { permission: 'devices:write' },
      schema: {
        summary: "Release a claimed device from its owner (ThingsBoard's reclaim); it may then be claimed again",
        params: NameParams,
        response: { 200: Released, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const released = await claims.release(request.params.name);
      if (!released) return reply.code(404).send(error(404, `no device is named "${request.params.name}"`));
      request.log.info({ device: released.device.id, previousOwner: released.previousOwner }, 'device released');
      return { device: { id: released.device.id, name: released.device.name }, previousOwner: released.previousOwner };
    },
  );
};
