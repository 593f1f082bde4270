import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError } from '../core/registry.ts';

const STATUS: Record<RegistryError['code'], [number, string]> = {
  invalid: [400, 'Bad Request'],
  read_only: [403, 'Forbidden'],
  not_found: [404, 'Not Found'],
  conflict: [409, 'Conflict'],
};

/**
 * Error handler of the registry's routes: a RegistryError becomes its status with the registry's
 * message; anything else (validation errors included) goes on to fastify's own handler.
 */
export async function registryErrorHandler(err: FastifyError | Error, _request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  if (!(err instanceof RegistryError)) throw err;
  const [statusCode, error] = STATUS[err.code];
  return reply.code(statusCode).send({ statusCode, error, message: err.message });
}

/** The body of a 404 for a device id. */
export const noDevice = (id: number) => ({ statusCode: 404, error: 'Not Found', message: `no device ${id}` });
