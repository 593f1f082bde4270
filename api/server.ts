import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { createRequire } from 'node:module';
import Fastify, { LogController, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyStatic from '@fastify/static';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type pg from 'pg';
import { DOMAINS, DOMAIN_LABELS } from '../core/domains.ts';
import type { Logger } from '../core/log.ts';
import { LIVE_PUBLIC_DIR, ROOT } from '../core/paths.ts';
import type { Metrics } from '../core/metrics.ts';
import type { DeviceRegistry } from '../core/registry.ts';
import type { KeyDictionary } from '../db/keys.ts';
import type { Retention } from '../db/retention.ts';
import type { Rollups } from '../db/rollups.ts';
import type { LatestTracker } from '../ingest/latest.ts';
import type { Access } from '../core/access/access.ts';
import { accessPlugin, documentPermissions } from './access.ts';
import type { AuditLog } from '../core/audit.ts';
import { auditPlugin } from './audit.ts';
import { rateLimitsPlugin, type ApiLimitSettings } from './rate-limits.ts';
import { inputGuard } from './input-guard.ts';
import { problem, problemDetailsPlugin, PROBLEM_CONTENT_TYPE } from './problem.ts';
import { clientErrorHandler, httpServerOptions, idleTimeoutPlugin, unauthenticatedLimitPlugin, type HttpSettings } from './http-limits.ts';
import { documentProblems, toOpenApi30 } from './openapi.ts';
import { auditRoutes } from './routes/audit.ts';
import type { ApiKeyStore } from '../core/access/api-keys.ts';
import type { RoleStore } from '../core/access/roles.ts';
import type { TownIndex } from '../geo/towns.ts';
import { keysRoutes } from './routes/keys.ts';
import { townsRoutes } from './routes/towns.ts';
import type { AttributeService } from '../core/attributes.ts';
import { attributesRoutes } from './routes/attributes.ts';
import type { Connectivity } from '../core/connectivity.ts';
import type { Provisioning } from '../core/provisioning.ts';
import { connectivityRoutes } from './routes/connectivity.ts';
import { provisionKeysRoutes, provisionRoutes } from './routes/provisioning.ts';
import { deviceImportRoutes } from './routes/device-import.ts';
import { deviceTypesRoutes } from './routes/device-types.ts';
import { devicesRoutes } from './routes/devices.ts';
import { claimsRoutes } from './routes/claims.ts';
import type { ClaimService } from '../core/claims.ts';
import { healthRoutes, type ReadinessChecks } from './routes/health.ts';
import { authConfigRoutes } from './routes/auth-config.ts';
import type { OidcService } from '../core/access/oidc.ts';
import { retentionRoutes } from './routes/retention.ts';
import type { RpcService } from '../core/rpc.ts';
import { rpcRoutes } from './routes/rpc.ts';
import { rollupsRoutes } from './routes/rollups.ts';
import { telemetryRoutes } from './routes/telemetry.ts';
import type { GeofenceService } from '../core/geofences.ts';
import type { AlarmService } from '../core/alarms.ts';
import { alarmsRoutes } from './routes/alarms.ts';
import { geofencesRoutes } from './routes/geofences.ts';
import { trajectoryRoutes } from './routes/trajectory.ts';
import type { SpatialDeps } from '../db/spatial-query.ts';
import { spatialRoutes } from './routes/spatial.ts';
import { spatialAggregateRoutes } from './routes/spatial-aggregate.ts';
import { spatialExportRoutes } from './routes/spatial-export.ts';
import { otaRoutes } from './routes/ota.ts';
import { otaDeviceRoutes, type DeviceTokenCheck } from './routes/ota-device.ts';
import type { OtaPackages } from '../core/ota/packages.ts';
import type { OtaAssignments } from '../core/ota/assignments.ts';
import type { OtaCampaigns } from '../core/ota/campaigns.ts';
import type { OtaDeviceStates } from '../core/ota/device-states.ts';
import { loggedPath } from './logged-path.ts';
import { staRoutes } from './routes/sta.ts';

export interface ApiDeps {
  log: Logger;
  /** Decides who may do and see what (core/access/access.ts). */
  access: Access;
  /** The audit log (core/audit.ts) and the request rate and concurrency limits (api/rate-limits.ts). */
  audit: AuditLog;
  limits: ApiLimitSettings;
  /** The HTTP server's timeouts and connection limits (api/http-limits.ts). */
  http: HttpSettings & { httpMaxConnections: number };
  apiKeys: ApiKeyStore;
  roles: RoleStore;
  towns: TownIndex;
  registry: DeviceRegistry;
  /** Device claiming (core/claims.ts). */
  claims: ClaimService;
  attributes: AttributeService;
  connectivity: Connectivity;
  provisioning: Provisioning;
  pool: pg.Pool;
  keys: KeyDictionary;
  metrics: Metrics;
  latest: LatestTracker;
  rollups: Rollups;
  retention: Retention;
  rpc: RpcService;
  /** Firmware and software updates (core/ota/). */
  ota: { packages: OtaPackages; assignments: OtaAssignments; campaigns: OtaCampaigns; states: OtaDeviceStates; maxPackageBytes: number; checkDeviceToken: DeviceTokenCheck };
  geofences: GeofenceService;
  alarms: AlarmService;
  checks: ReadinessChecks;
  /** Spatial queries (db/spatial-query.ts): latest, history, aggregates, export. */
  spatial: SpatialDeps;
  mapStyleUrl: string | undefined;
  /** PUBLIC_URL: where clients reach this server, for absolute links (SensorThings API). */
  publicUrl?: string | undefined;
  /** OpenID Connect (OIDC_ISSUER): the live map's sign-in settings at /auth/config.json. */
  oidc?: OidcService;
}

const MAPLIBRE_DIST = path.dirname(createRequire(path.join(ROOT, 'package.json')).resolve('maplibre-gl/dist/maplibre-gl.js'));

/** The HTTP side: REST under /api/v1 (admin key), health, OpenAPI, and the live map's static files. */
export async function buildApi(deps: ApiDeps) {
  const app = Fastify({
    loggerInstance: deps.log.child({ module: 'http' }),
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1_048_576,
    // coerceTypes true, not 'array': ajv's array coercion inside a null-first union (`["x"]` for
    // string-or-null) passes validation with the array left in place, which a handler then takes for a string.
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, allErrors: false } },
    // Random request ids: the `instance` of an error's problem details and the log's reqId (api/problem.ts).
    genReqId: () => randomUUID(),
    ...httpServerOptions(deps.http),
    clientErrorHandler,
    frameworkErrors: (err, request, reply) => {
      const status = err.statusCode && err.statusCode < 500 ? err.statusCode : 400;
      void (reply as unknown as FastifyReply).code(status).type(PROBLEM_CONTENT_TYPE).send(problem(status, err.message, request as FastifyRequest, { code: err.code }));
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.server.maxConnections = deps.http.httpMaxConnections;

  // First: one error shape (RFC 9457 problem details) for every route, the idle timeout per request,
  // and the budget of requests without a verified credential (before the access plugin checks it).
  await app.register(problemDetailsPlugin);
  await app.register(idleTimeoutPlugin);
  await app.register(unauthenticatedLimitPlugin, {
    max: deps.http.httpMaxUnauthenticated,
    perAddress: deps.http.httpMaxUnauthenticatedPerAddress,
    registry: deps.metrics.registry,
    onInFlight: (read) => deps.metrics.liveGauge('guanlink_http_unauthenticated_in_flight', 'HTTP requests without a verified credential in progress.', read),
  });

  app.addHook('onResponse', async (request, reply) => {
    const entry = { method: request.method, url: loggedPath(request), status: reply.statusCode, ms: Math.round(reply.elapsedTime) };
    if (reply.statusCode >= 400) request.log.info(entry, 'request refused');
    else request.log.debug(entry, 'request');
  });

  await app.register(fastifySwagger, {
    openapi: {
      info: {
        title: 'GuanLink API',
        version: '1',
        description:
          'GuanLink (莞联) REST API. Authenticate with `Authorization: Bearer <credential>`: an API key (`glk_…`), an OpenID Connect access token, or the bootstrap admin key. Each operation names the permission it needs (`x-permission`); data outside the credential\'s scope answers 404 or is left out of lists.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transformObject: (document) => {
      const openapiObject = (document as { openapiObject: Parameters<typeof documentPermissions>[1] }).openapiObject;
      documentPermissions(app, openapiObject);
      return documentProblems(toOpenApi30(openapiObject)) as never;
    },
  });
  // A page for people at /docs (Swagger UI, its files served from here: no internet needed). Public,
  // like the document it shows; its "Authorize" takes a bearer credential for "Try it out".
  await app.register(fastifySwaggerUi, {
    routePrefix: '/docs',
    uiConfig: { deepLinking: true },
    // Everything from this server; no upgrade-insecure-requests (GuanLink is often reached over plain HTTP).
    staticCSP: "default-src 'self'; base-uri 'self'; connect-src 'self'; font-src 'self' data:; frame-ancestors 'self'; img-src 'self' data:; object-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'",
    theme: { title: 'GuanLink API' },
  });
  await app.register(accessPlugin, { access: deps.access });
  await app.register(auditPlugin, { audit: deps.audit });
  // No NUL or unpaired surrogate in any string, no non-finite number, in any request (api/input-guard.ts).
  await app.register(inputGuard);
  await app.register(rateLimitsPlugin, { settings: deps.limits });

  await app.register(healthRoutes, { checks: deps.checks });
  app.get('/metrics', { config: { permission: 'public' }, schema: { summary: 'Prometheus metrics', tags: ['operations'] } }, async (_request, reply) =>
    reply.type(deps.metrics.registry.contentType).send(await deps.metrics.registry.metrics()),
  );

  await app.register(
    async (api) => {
      await api.register(keysRoutes, { access: deps.access, apiKeys: deps.apiKeys, roles: deps.roles });
      await api.register(townsRoutes, { towns: deps.towns });
      await api.register(auditRoutes, { pool: deps.pool });
      await api.register(devicesRoutes, { registry: deps.registry, access: deps.access });
      await api.register(claimsRoutes, { claims: deps.claims });
      await api.register(deviceTypesRoutes, { registry: deps.registry, access: deps.access });
      await api.register(deviceImportRoutes, { registry: deps.registry, access: deps.access });
      await api.register(telemetryRoutes, { registry: deps.registry, pool: deps.pool, keys: deps.keys, latest: deps.latest, access: deps.access });
      await api.register(trajectoryRoutes, { registry: deps.registry, pool: deps.pool, access: deps.access });
      await api.register(rollupsRoutes, { rollups: deps.rollups });
      await api.register(retentionRoutes, { retention: deps.retention });
      await api.register(rpcRoutes, { registry: deps.registry, rpc: deps.rpc });
      await api.register(attributesRoutes, { registry: deps.registry, attributes: deps.attributes });
      await api.register(connectivityRoutes, { registry: deps.registry, connectivity: deps.connectivity });
      await api.register(provisionKeysRoutes, { provisioning: deps.provisioning });
      await api.register(geofencesRoutes, { geofences: deps.geofences, registry: deps.registry, access: deps.access });
      await api.register(alarmsRoutes, { alarms: deps.alarms, access: deps.access, registry: deps.registry });
      await api.register(spatialRoutes, { spatial: deps.spatial, latest: deps.latest });
      await api.register(spatialAggregateRoutes, { spatial: deps.spatial });
      await api.register(spatialExportRoutes, { spatial: deps.spatial });
      await api.register(otaRoutes, { ...deps.ota, registry: deps.registry, access: deps.access });
    },
    { prefix: '/api/v1' },
  );
  await app.register(staRoutes, { access: deps.access, spatial: deps.spatial, publicUrl: deps.publicUrl });
  // The device API over HTTP: no admin key (a device proves itself with its provision key and secret).
  await app.register(provisionRoutes, { prefix: '/api/v1', provisioning: deps.provisioning });
  await app.register(otaDeviceRoutes, { prefix: '/api/v1', packages: deps.ota.packages, target: (id, type) => deps.ota.assignments.target(id, type), checkToken: deps.ota.checkDeviceToken });

  app.get('/api/v1/openapi.json', { config: { permission: 'public' }, schema: { hide: true } }, async () => app.swagger());
  await app.register(authConfigRoutes, { oidc: deps.oidc });
  app.get('/map-config.json', { schema: { hide: true } }, async () => ({
    styleUrl: deps.mapStyleUrl ?? null,
    domains: DOMAINS.map((name) => ({ name, label: DOMAIN_LABELS[name] })),
  }));

  await app.register(fastifyStatic, { root: LIVE_PUBLIC_DIR, prefix: '/', index: 'index.html' });
  await app.register(fastifyStatic, { root: MAPLIBRE_DIST, prefix: '/vendor/maplibre-gl/', decorateReply: false });
  return app;
}
