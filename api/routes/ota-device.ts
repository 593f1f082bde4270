import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { OtaType, OtaPackages, OtaPackage } from '../../core/ota/packages.ts';
import { ErrorResponse, INT32_MAX, SafeText } from '../schemas.ts';

/** The device a token belongs to (failed checks throttled as MQTT CONNECTs are), or undefined. */
export type DeviceTokenCheck = (token: string, source: string) => Promise<{ id: number } | undefined>;

const Query = Type.Object({
  title: SafeText(255, { description: 'must equal the fw_title (sw_title) attribute the device was given' }),
  version: SafeText(255, { description: 'must equal fw_version (sw_version)' }),
  size: Type.Optional(Type.Integer({ minimum: -2_147_483_648, maximum: INT32_MAX, default: 0, description: 'chunk size in bytes; 0 (or omitted): the whole file' })),
  chunk: Type.Optional(Type.Integer({ minimum: 0, maximum: INT32_MAX, default: 0, description: 'chunk index, from 0' })),
});

/**
 * ThingsBoard's HTTP device API for OTA (common/transport/http DeviceApiController getFirmware /
 * getSoftware, GetOtaPackageCallback): `GET /api/v1/{token}/firmware?title=&version=&size=&chunk=`
 * and `/software`. An unknown token is 401, a device with no package of that type 404, a
 * title/version other than its package's 400 (the assignment changed meanwhile); otherwise the
 * bytes [chunk·size, (chunk+1)·size) — all of them when size < 1 — with Content-Disposition and
 * x-filename, streamed from the database (a chunk past the end is empty).
 */
export const otaDeviceRoutes: FastifyPluginAsyncTypebox<{
  packages: OtaPackages;
  target: (deviceId: number, type: OtaType) => Promise<OtaPackage | undefined>;
  checkToken: DeviceTokenCheck;
}> = async (app, { packages, target, checkToken }) => {
  for (const [path, type] of [
    ['firmware', 'FIRMWARE'],
    ['software', 'SOFTWARE'],
  ] as const) {
    app.get(
      `/:token/${path}`,
      {
        // Not PROVISION_RATE_LIMIT: a chunked download is many requests. Wrong tokens are throttled (checkToken).
        config: { permission: 'public' },
        schema: {
          summary: `Device API (ThingsBoard-compatible, no admin key): download the device's ${path} package, whole or in chunks`,
          tags: ['ota'],
          security: [],
          params: Type.Object({ token: Type.String({ minLength: 1, maxLength: 256, description: "the device's access token" }) }),
          querystring: Query,
          response: { 200: Type.Unknown({ description: 'the bytes asked for (application/octet-stream or the package content type)' }), 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse },
        },
      },
      async (request, reply) => {
        const device = await checkToken(request.params.token, request.ip);
        if (!device) return reply.code(401).send({ statusCode: 401, error: 'Unauthorized', message: 'unknown access token' });
        const pkg = await target(device.id, type);
        if (!pkg || pkg.size === null) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: `no ${path} assigned to this device` });
        const { title, version } = request.query;
        if (title !== pkg.title || version !== pkg.version) {
          return reply.code(400).send({ statusCode: 400, error: 'Bad Request', message: `the device's ${path} is "${pkg.title}" version "${pkg.version}", not "${title}" version "${version}"` });
        }
        const size = request.query.size ?? 0;
        const chunk = request.query.chunk ?? 0;
        const offset = size < 1 ? 0 : Math.min(pkg.size, chunk * size);
        const length = size < 1 ? pkg.size : Math.max(0, Math.min(size, pkg.size - offset));
        return reply
          .type(pkg.contentType)
          .header('content-length', length)
          .header('content-disposition', `attachment;filename=${pkg.fileName.replace(/[";\\\r\n]/g, '_')}`)
          .header('x-filename', pkg.fileName.replace(/[\r\n]/g, '_'))
          .send(length === 0 ? Buffer.alloc(0) : Readable.from(packages.stream(pkg.id, offset, length)));
      },
    );
  }
};
