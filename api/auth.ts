import type { FastifyReply, FastifyRequest } from 'fastify';
import { safeEqual } from '../core/credentials.ts';

/** `Authorization: Bearer <admin key>`; anything else is 401. */
export function requireAdminKey(adminKey: string) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const header = request.headers.authorization ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header);
    if (!match || !safeEqual(match[1]!.trim(), adminKey)) {
      reply.header('www-authenticate', 'Bearer realm="guanlink"');
      await reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'a valid admin key is required: Authorization: Bearer <key>' });
    }
  };
}
