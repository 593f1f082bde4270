import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { OidcService } from '../../core/access/oidc.ts';

const AuthConfig = Type.Object({
  oidc: Type.Union([
    Type.Null(),
    Type.Object({
      issuer: Type.String({ description: "The identity provider's issuer (OIDC_ISSUER)" }),
      clientId: Type.String({ description: "The live map's public client: authorization code + PKCE (S256)" }),
      scopes: Type.String({ description: 'Scopes to ask for, space-separated' }),
      authorizationEndpoint: Type.Optional(Type.String()),
      tokenEndpoint: Type.Optional(Type.String()),
      endSessionEndpoint: Type.Optional(Type.String()),
    }),
  ]),
});

/**
 * GET /auth/config.json: how the live map signs people in. `oidc` is null unless OIDC_ISSUER and
 * OIDC_CLIENT_ID are set; the endpoints come from the provider's discovery document (left out
 * while it cannot be read). Public: the map reads it before anyone has signed in.
 */
export const authConfigRoutes: FastifyPluginAsyncTypebox<{ oidc: OidcService | undefined }> = async (app, { oidc }) => {
  app.get(
    '/auth/config.json',
    { config: { permission: 'public' }, schema: { summary: 'Sign-in settings of the live map', tags: ['access'], hide: true, response: { 200: AuthConfig } } },
    async (_request, reply) => {
      reply.header('cache-control', 'no-cache');
      return { oidc: oidc ? await oidc.signIn() : null };
    },
  );
};
