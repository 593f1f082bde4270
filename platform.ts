import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { buildApi } from './api/server.ts';
import { attachLive } from './api/live/live.ts';
import { httpConnections, type HttpConnections } from './api/http-connections.ts';
import { createAuthenticator } from './broker/auth.ts';
import { createBroker } from './broker/broker.ts';
import { provisionHandler } from './broker/handlers/provision.ts';
import type { DeviceSession, SessionEnd } from './broker/session.ts';
import { telemetryHandler } from './broker/handlers/telemetry.ts';
import { directTransport, rpcRequestHandler, rpcResponseHandler } from './broker/handlers/rpc.ts';
import { gatewayAttributesPusher, gatewayHandlers, gatewayTransport } from './broker/handlers/gateway.ts';
import { deviceClaimHandler, gatewayClaimHandler } from './broker/handlers/claim.ts';
import { ClaimService } from './core/claims.ts';
import { GatewaySessions } from './core/gateways.ts';
import { RpcService, routeTransports } from './core/rpc.ts';
import { attributesRequestHandler, clientAttributesHandler, sharedAttributesPusher } from './broker/handlers/attributes.ts';
import { AttributeService } from './core/attributes.ts';
import { ConfigError, type Config } from './core/config.ts';
import { Connectivity } from './core/connectivity.ts';
import { Provisioning } from './core/provisioning.ts';
import type { Logger } from './core/log.ts';
import { createMetrics } from './core/metrics.ts';
import { connectionBudget, DescriptorWatch, readDescriptorLimits, watchAcceptErrors } from './core/descriptors.ts';
import { parseRateLimit } from './core/rate-limit.ts';
import { DeviceRegistry } from './core/registry.ts';
import { AuthThrottle, credentialId, type AuthWorkCounters } from './core/auth-throttle.ts';
import { OtaPackages } from './core/ota/packages.ts';
import { OtaAssignments } from './core/ota/assignments.ts';
import { OtaDeviceStates } from './core/ota/device-states.ts';
import { OtaCampaigns } from './core/ota/campaigns.ts';
import { otaRequestHandler } from './broker/handlers/ota.ts';
import type { DeviceTokenCheck } from './api/routes/ota-device.ts';
import { parseRequestLimit } from './core/access/rate-limits.ts';
import { detectDialect, type Dialect } from './db/dialect.ts';
import { startEmbeddedPostgres } from './db/embedded.ts';
import { migrate } from './db/migrate.ts';
import { KeyDictionary } from './db/keys.ts';
import { createPool } from './db/pool.ts';
import type pg from 'pg';
import { Retention } from './db/retention.ts';
import { ChunkLayout } from './db/chunk-layout.ts';
import { readingsTable } from './db/readings-tables.ts';
import { DOMAINS } from './core/domains.ts';
import { Rollups } from './db/rollups.ts';
import { Ingest } from './ingest/ingest.ts';
import { GeofenceService, eventJson, geofenceEventTopic } from './core/geofences.ts';
import { AlarmService, alarmEventTopic } from './core/alarms.ts';
import { DevicePositions, QueryGate } from './db/spatial-query.ts';
import { GeometryPool } from './core/geometry-pool.ts';
import { Access } from './core/access/access.ts';
import { ApiKeyStore } from './core/access/api-keys.ts';
import { RoleStore } from './core/access/roles.ts';
import { loadTowns } from './core/access/towns.ts';
import { AuditLog } from './core/audit.ts';
import { createOidcVerifier, oidcSettings } from './core/access/oidc.ts';
import { subjectVisible } from './core/access/visibility.ts';

export interface Platform {
  mqttPort: number;
  /** The mqtts listener's port, when TLS is configured. */
  mqttsPort: number | undefined;
  httpPort: number;
  adminKey: string;
  dialect: Dialect;
  /** Whether the database was started here (embedded) rather than given by DATABASE_URL. */
  embeddedDatabase: boolean;
  registry: DeviceRegistry;
  ingest: Ingest;
  /** Stops accepting, commits in-flight readings, closes everything (the embedded database last). */
  stop(): Promise<void>;
}

/**
 * The composition root: the one place where database, ingest, broker, API and live streams are
 * created and wired. Data flows broker → ingest → database ← api/live.
 */
export async function startPlatform(config: Config, log: Logger): Promise<Platform> {
  const started = Date.now();
  const cleanups: (() => Promise<void>)[] = [];
  let http: HttpConnections | undefined;
  try {
    const oidcConfig = oidcSettings(config); // ConfigError (OIDC_ISSUER without OIDC_AUDIENCE, …) before anything starts
    const adminKey = config.adminKey ?? (await loadOrCreateAdminKey(config.dataDir));

    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      const embedded = await startEmbeddedPostgres(config.dataDir, log);
      cleanups.unshift(() => embedded.stop());
      databaseUrl = embedded.url;
    }
    const pool = createPool(databaseUrl, { max: config.ingestWriters + 10 });
    cleanups.unshift(() => pool.end());
    // Spatial queries (history, aggregates, exports over areas) have connections of their own, whose
    // server processes run at a lower CPU priority when the database is on this machine.
    let priorityReported = false;
    const queryPool = createPool(databaseUrl, {
      max: 10,
      applicationName: 'guanlink-queries',
      backendNice: config.spatialQueryNice,
      onPriority: (outcome) => {
        if (priorityReported) return;
        priorityReported = true;
        if (outcome.lowered) log.info({ nice: config.spatialQueryNice }, 'spatial queries run at a lower CPU priority than ingest in the database (SPATIAL_QUERY_NICE)');
        else log.info({ reason: outcome.reason }, 'spatial queries run at the same CPU priority as ingest in the database');
      },
    });
    cleanups.unshift(() => queryPool.end());

    await migrate(pool, log.child({ module: 'migrate' }));
    const dialect = await detectDialect(pool);
    log.info({ dialect }, `database: ${dialect.kind}${dialect.timescaledb ? ` ${dialect.timescaledb.version} (${dialect.timescaledb.license} licence)` : ''}, PostgreSQL ${dialect.serverVersion}`);

    const metrics = createMetrics();
    // Failed credential checks (MQTT CONNECT, API keys, provisioning): throttled per source address and per credential.
    const authWork: AuthWorkCounters = { lookup: (store) => metrics.authLookups.inc({ store }), hashCheck: (store) => metrics.authHashChecks.inc({ store }) };
    const throttle = new AuthThrottle(
      {
        perSource: parseRequestLimit(config.authFailuresPerSource),
        perCredential: parseRequestLimit(config.authFailuresPerCredential),
        backoffMaxMs: config.authBackoffMaxMs,
        maxEntries: 100_000,
      },
      { failures: metrics.authFailures, throttled: metrics.authThrottled },
    );
    metrics.liveGauge('guanlink_auth_throttle_entries', 'Source addresses and credentials with failed checks being tracked.', () => throttle.entries);
    const registry = new DeviceRegistry(pool, { work: authWork, negativeCacheMs: config.authNegativeCacheMs });
    await registry.init();
    const attributes = new AttributeService(pool, log.child({ module: 'attributes' }));

    // Access: who may see and do what (core/access/access.ts), for REST, live streams and MQTT application sessions.
    const roles = new RoleStore(pool);
    await roles.start();
    const apiKeys = new ApiKeyStore(pool, undefined, { work: authWork, negativeCacheMs: config.authNegativeCacheMs });
    apiKeys.start();
    cleanups.unshift(async () => {
      roles.stop();
      await apiKeys.stop();
    });
    const towns = await loadTowns(config.townsGeoJson);
    // OpenID Connect: bearer JWTs from the city's identity provider (discovery starts now, in the background).
    const oidc = oidcConfig && createOidcVerifier(oidcConfig, log.child({ module: 'oidc' }));
    oidc?.discover().catch(() => {});
    // Claimed devices belong to an agency, which sees them whatever its scope (core/claims.ts).
    const claims = new ClaimService(pool, registry, { defaultDurationMs: config.claimDefaultDurationMs, log: log.child({ module: 'claims' }) });
    await claims.start();
    cleanups.unshift(async () => claims.stop());
    const access = new Access({ pool, registry, roles, keys: apiKeys, towns, bootstrapKey: adminKey, oidc, throttle, ownership: claims });
    // The audit log: written in batches; stopped (last entries written) after the HTTP server and live streams closed.
    const audit = new AuditLog({ pool, log: log.child({ module: 'audit' }), secrets: [adminKey] });
    audit.start();
    cleanups.unshift(() => audit.stop());

    const keys = new KeyDictionary(pool, config.maxTelemetryKeys);
    await keys.load();
    // Keys that device types declare are always known, so generic devices inventing keys up to
    // the cap can never lock a typed device out of its own keys.
    await keys.ensure(registry.deviceTypes().flatMap((t) => Object.keys(t.keys)));

    const rollups = new Rollups({ pool, log: log.child({ module: 'rollups' }), refreshMs: config.rollupRefreshMs, latenessMs: config.rollupLatenessMs });
    const retention = new Retention({
      pool,
      dialect,
      log: log.child({ module: 'retention' }),
      intervalMs: config.retentionIntervalMs,
      rejectedDays: config.rejectedRetentionDays === 0 ? null : config.rejectedRetentionDays,
      deviceEventsDays: config.deviceEventsRetentionDays === 0 ? null : config.deviceEventsRetentionDays,
      geofenceEventsDays: config.geofenceEventsRetentionDays === 0 ? null : config.geofenceEventsRetentionDays,
      auditDays: config.auditRetentionDays === 0 ? null : config.auditRetentionDays,
    });

    const ingest = new Ingest({
      pool,
      keys,
      metrics,
      log: log.child({ module: 'ingest' }),
      batchSize: config.ingestBatchSize,
      batchMs: config.ingestBatchMs,
      writers: config.ingestWriters,
      latestFlushMs: config.latestFlushMs,
      maxPayloadBytes: config.maxPayloadBytes,
      maxQueueBytes: config.maxQueueBytes,
      rejectedPerDevicePerMinute: config.rejectedPerDevicePerMinute,
      timeRules: { maxFutureMs: config.maxFutureMs, minTs: Date.parse(config.minTimestamp) },
      inTransaction: rollups.recordLate,
    });
    await ingest.start();
    const ota = assembleOta({ pool, attributes, registry, ingest, throttle, maxPackageBytes: config.otaMaxPackageBytes, log: log.child({ module: 'ota' }) });
    cleanups.unshift(() => ota.states.drained()); // reports of committed telemetry written before the pool closes
    // Geometry work (requests' areas, geofences' polygons) runs on worker threads; stopped after the HTTP server and geofences.
    const geometry = new GeometryPool(
      { threads: config.geometryThreads, maxQueue: config.geometryQueue, taskTimeoutMs: config.geometryTaskTimeoutMs },
      (err) => log.error({ err }, 'geometry worker failed'),
    );
    cleanups.unshift(() => geometry.close());
    metrics.liveGauge('guanlink_geometry_threads', 'Worker threads running for geometry work (GEOMETRY_THREADS at most; they stop after a minute idle).', () => geometry.threads);
    // Heavy spatial queries take turns on the database, whose cores ingest's commits share.
    const spatialQueries = new QueryGate(config.spatialMaxConcurrentQueries || Math.max(1, os.availableParallelism() - 1), config.spatialQueryQueue);
    metrics.liveGauge('guanlink_spatial_queries_running', 'Heavy spatial queries (history, aggregates) using the database now (SPATIAL_MAX_CONCURRENT_QUERIES at most).', () => spatialQueries.busy);
    metrics.liveGauge('guanlink_spatial_queries_waiting', 'Heavy spatial queries waiting for a turn (SPATIAL_QUERY_QUEUE at most; beyond, 503).', () => spatialQueries.queued);
    metrics.liveGauge('guanlink_geometry_tasks_waiting', 'Geometry tasks waiting for a free worker thread (GEOMETRY_QUEUE at most; beyond, 503).', () => geometry.load.waiting);

    // Geofences: committed readings of moving devices are evaluated off the ingest path; stopped
    // (queue drained) after ingest stops and before the broker closes, so final events are published.
    const geofences = new GeofenceService({ pool, registry, log: log.child({ module: 'geofences' }), metrics, geometry });
    await geofences.start();
    ingest.onCommitted((rows) => geofences.enqueue(rows));
    // Alarms: committed readings and geofence events against the alarm rules, off the ingest path.
    const alarms = new AlarmService({ pool, registry, log: log.child({ module: 'alarms' }) });
    await alarms.start();
    alarms.useGeofences((name) => geofences.list().some((f) => f.name === name));
    ingest.onCommitted((rows) => alarms.readingsCommitted(rows));
    geofences.onEvent((event) => alarms.geofenceEvent(event));
    cleanups.unshift(() => ingest.stop());
    const chunkLayout = new ChunkLayout(
      { pool, dialect, log: log.child({ module: 'chunk-layout' }), intervalMs: config.chunkLayoutIntervalMs, afterMs: config.chunkLayoutAfterMs },
      DOMAINS.map(readingsTable),
    );
    rollups.start();
    retention.start();
    chunkLayout.start();
    cleanups.unshift(async () => {
      await chunkLayout.stop();
      await rollups.stop();
      await retention.stop();
    });

    // Connection state: started before the broker listens (it marks offline what a crash left online);
    // stopped after the broker closed (it writes the sessions' ends).
    const connectivity = new Connectivity({
      pool,
      log: log.child({ module: 'connectivity' }),
      nodeId: config.nodeId ?? os.hostname(),
      flushMs: config.lastSeenFlushMs,
      counters: { connects: metrics.deviceConnects, disconnects: metrics.deviceDisconnects },
    });
    await connectivity.start();
    cleanups.unshift(() => connectivity.stop());
    const provisioning = new Provisioning({
      pool,
      registry,
      log: log.child({ module: 'provisioning' }),
      counter: metrics.provisioning,
      throttle,
      work: authWork,
      negativeCacheMs: config.authNegativeCacheMs,
    });
    // The broker's session hooks fan out to everyone following device sessions.
    const sessionStarted: ((session: DeviceSession) => void)[] = [(session) => connectivity.sessionStarted(session)];
    const sessionEnded: ((session: DeviceSession, end: SessionEnd) => void)[] = [(session, end) => connectivity.sessionEnded(session, end)];
    // Server-side RPC: its handlers are the broker's, the broker is its transport (set below);
    // commands queued for a device are sent when it connects.
    const rpcLog = log.child({ module: 'rpc' });
    const rpc = new RpcService({ pool, log: rpcLog, maxPayloadBytes: config.maxPayloadBytes });
    sessionStarted.push((session) => rpc.deviceConnected(session.device.id));
    // Gateways: a sub-device connected through its gateway gets a session of its own, followed by the same hooks.
    const gateways = new GatewaySessions({
      registry,
      pool,
      log: log.child({ module: 'gateways' }),
      metrics,
      defaultType: config.gatewayDefaultDeviceType,
      maxDevicesPerGateway: config.gatewayMaxDevices,
      onConnect: (session) => sessionStarted.forEach((hook) => hook(session)),
      onDisconnect: (session, end) => sessionEnded.forEach((hook) => hook(session, end)),
    });
    sessionEnded.push((session, end) => gateways.sessionEnded(session, end));
    const sessionLimits = {
      maxPayloadSize: Math.min(config.maxPayloadBytes, config.maxPacketBytes),
      maxInflightMessages: 100,
      messageRateLimit: config.devicePublishRate === 'off' ? '' : config.devicePublishRate,
    };
    const countRefusal = (reason: string) => metrics.rejections.inc({ reason });

    // The connection budget: the open-file limit shared out between MQTT, HTTP, the database pool
    // and everything else, so that no flood of connections takes the last descriptor (core/descriptors.ts).
    const openFiles = readDescriptorLimits();
    const budget = connectionBudget({ limit: openFiles?.soft ?? Infinity, maxMqtt: config.maxConnections, maxHttp: config.httpMaxConnections, databasePool: config.ingestWriters + 10 });
    log.info(
      { openFileLimit: openFiles ?? 'unknown', mqtt: budget.mqtt, http: budget.http, database: budget.database, other: budget.other, refusalSlots: budget.refusalSlots },
      `connection budget: ${budget.mqtt} MQTT and ${budget.http} HTTP connections (open-file limit ${openFiles ? openFiles.soft : 'unknown'})`,
    );
    if (budget.warning) log.warn(budget.warning);
    const connectRate = parseRequestLimit(config.mqttConnectRatePerAddress);
    const brokerLog = log.child({ module: 'broker' });
    const broker = createBroker({
      log: brokerLog,
      metrics,
      maxPacketBytes: config.maxPacketBytes,
      maxConnections: budget.mqtt,
      refusalSlots: budget.refusalSlots,
      connectTimeoutMs: config.mqttConnectTimeoutMs,
      provisionTimeoutMs: config.provisionSessionTimeoutMs,
      maxUnauthenticatedPacketBytes: config.mqttMaxConnectBytes,
      unauthenticatedPerAddress: config.mqttUnauthenticatedPerAddress,
      connectRatePerAddress: connectRate.max === Infinity ? undefined : { max: connectRate.max, windowMs: connectRate.windowMs },
      publishRate: config.devicePublishRate === 'off' ? undefined : parseRateLimit(config.devicePublishRate),
      recordRefusal: (deviceId, topic, payload, rejection) => ingest.recordRejection(deviceId, topic, payload, rejection),
      authenticate: createAuthenticator(registry, { access, throttle }),
      onSessionStart: (session) => {
        for (const hook of sessionStarted) hook(session);
      },
      onSessionEnd: (session, end) => {
        for (const hook of sessionEnded) hook(session, end);
      },
      onApplicationAccess: (e) =>
        audit.record({
          kind: 'mqtt',
          principal: e.principal,
          route: e.action,
          status: e.status,
          essentials: e.topic === undefined ? undefined : { topic: e.topic },
          reason: e.reason ?? (e.status === 403 ? 'topic outside guanlink/events/' : null),
          sourceIp: e.address ?? null,
          userAgent: `mqtt client ${e.clientId}`,
        }),
      handlers: (deliver, deliverToSession) => ({
        provision: provisionHandler({ provisioning, deliverToSession, closeAfterMs: config.provisionSessionCloseMs, log: log.child({ module: 'provisioning' }) }),
        telemetry: telemetryHandler(ingest, deliver),
        attributes: clientAttributesHandler(attributes, deliver, ingest, config.maxPayloadBytes),
        attributesRequest: attributesRequestHandler(attributes, deliver, ingest, config.maxPayloadBytes),
        rpcResponse: rpcResponseHandler(rpc, deliver, rpcLog, countRefusal),
        rpcRequest: rpcRequestHandler({ deliver, limits: sessionLimits, log: rpcLog, count: countRefusal }),
        claim: deviceClaimHandler({ claims, ingest, deliver, maxPayloadBytes: config.maxPayloadBytes }),
        otaRequest: otaRequestHandler({
          target: (deviceId, type) => ota.assignments.target(deviceId, type),
          read: (packageId, offset, length) => ota.packages.read(packageId, offset, length),
          deliverToSession,
          close: (session, reason) => {
            if (broker.session(session.device.id) === session) broker.disconnect(session.device.id, reason);
          },
          maxPayloadSize: sessionLimits.maxPayloadSize,
          log: log.child({ module: 'ota' }),
        }),
        gateway: {
          ...gatewayHandlers({
            gateways,
            ingest,
            attributes,
            rpc,
            deliver,
            deliverToSession,
            log: log.child({ module: 'gateways' }),
            maxPayloadBytes: config.maxPayloadBytes,
            maxDevicesPerMessage: config.gatewayMaxDevicesPerMessage,
            count: countRefusal,
          }),
          claim: gatewayClaimHandler({ claims, ingest, deliver, gateways, maxPayloadBytes: config.maxPayloadBytes, maxDevicesPerMessage: config.gatewayMaxDevicesPerMessage }),
        },
      }),
    });
    cleanups.unshift(() => broker.close());
    rpc.useTransport(routeTransports(directTransport(broker), gatewayTransport(gateways, broker.deliverTracked)));
    rpc.start();
    attributes.onChange(sharedAttributesPusher(broker.session, broker.deliver));
    attributes.onChange(gatewayAttributesPusher(gateways, broker.deliverToSession));
    // Campaigns assign (and tell devices) through the pushers above; stopped before the broker closes.
    ota.campaigns.start();
    cleanups.unshift(() => ota.campaigns.stop());
    registry.onChange((event) => {
      if (event.kind === 'deleted') broker.disconnect(event.device.id, 'deleted');
      else if (event.kind === 'credentials') broker.disconnect(event.device.id, 'credentials_changed');
      else if (event.kind === 'updated' && broker.session(event.device.id)) {
        void registry.context(event.device.id).then((context) => context && broker.updateDevice(context));
      }
    });
    // A custom type's declared keys are always admitted, and connected devices of a changed type
    // are checked against the new declaration from their next message.
    registry.onTypeChange(async (event) => {
      if (event.kind !== 'saved') return;
      await keys.ensure(Object.keys(event.type.keys));
      if (!event.previous) return;
      for (const id of await registry.deviceIdsOfType(event.type.name)) {
        const session = broker.session(id);
        if (session) broker.updateDevice({ ...session.device, type: event.type });
      }
    });

    metrics.liveGauge('guanlink_ingest_queue_readings', 'Readings accepted and not yet committed.', () => ingest.pendingReadings);
    metrics.liveGauge('guanlink_ingest_queue_bytes', 'Payload bytes accepted and not yet committed.', () => ingest.pendingBytes);
    metrics.liveGauge('guanlink_ingest_paused', '1 while ingest holds new messages (queue at its byte bound): publishers are not read.', () => (ingest.underPressure ? 1 : 0));
    metrics.liveGauge('guanlink_database_writable', '0 while ingest cannot write to the database.', () => (ingest.databaseDown ? 0 : 1));
    metrics.liveGauge('guanlink_mqtt_connected_clients', 'MQTT clients connected.', () => broker.connectedClients);
    metrics.liveGauge('guanlink_open_file_limit', "The process's open-file limit (soft; -1: unknown or unlimited).", () => (openFiles && Number.isFinite(openFiles.soft) ? openFiles.soft : -1));
    metrics.liveGauge('guanlink_mqtt_connection_budget', 'MQTT sessions held at once: MQTT_MAX_CONNECTIONS or, when smaller, what the open-file limit leaves.', () => budget.mqtt);
    metrics.liveGauge('guanlink_http_connection_budget', 'HTTP connections held at once: HTTP_MAX_CONNECTIONS or, when smaller, what the open-file limit leaves.', () => budget.http);
    metrics.liveGauge('guanlink_mqtt_connections', 'MQTT connections held (TCP, TLS and WebSocket), authenticated or not.', () => broker.connections.open);
    metrics.liveGauge('guanlink_mqtt_unauthenticated_connections', 'MQTT connections not authenticated as a device or application: no CONNECT answered yet, or provisioning.', () => broker.connections.unauthenticated);
    const descriptorWatch = new DescriptorWatch({
      log,
      limit: openFiles?.soft ?? Infinity,
      onExhausted: () => metrics.descriptorsExhausted.inc(),
      holders: () => ({ mqttConnections: broker.connections.open, databaseConnections: pool.totalCount }),
    });
    descriptorWatch.start();
    cleanups.unshift(async () => descriptorWatch.stop());
    metrics.liveGauge('guanlink_geofence_queue_readings', 'Committed readings waiting for geofence evaluation.', () => geofences.queued);
    geofences.onEvent((event) => {
      // Application sessions get only the events inside their scope (core/access/visibility.ts).
      const subject = { deviceId: event.deviceId, domain: registry.deviceType(event.deviceType)?.domain ?? event.domain, position: { lng: event.lng, lat: event.lat } };
      broker
        .publishEvent(geofenceEventTopic(event.geofenceId), JSON.stringify(eventJson(event)), (p) => subjectVisible(access, p, subject))
        .catch((err: Error) => log.warn({ err: err.message }, 'geofence event not published'));
    });
    alarms.onChange((change) => {
      const subject = { deviceId: change.alarm.device.id, domain: change.alarm.device.domain, position: change.alarm.position };
      broker
        .publishEvent(alarmEventTopic(change.alarm.device.domain), JSON.stringify(change), (p) => subjectVisible(access, p, subject))
        .catch((err: Error) => log.warn({ err: err.message }, 'alarm change not published'));
    });
    metrics.liveGauge('guanlink_alarm_queue_readings', 'Committed readings waiting for alarm evaluation.', () => alarms.pendingReadings);
    metrics.liveGauge('guanlink_alarm_readings_dropped', 'Readings not evaluated for alarms because the evaluation queue was full (since start).', () => alarms.droppedReadings);
    metrics.liveGauge('guanlink_alarms_open', 'Alarms raised or acknowledged and not cleared.', () => alarms.openAlarms);
    // Stopped after geofences (their last events are evaluated), before the broker closes.
    cleanups.unshift(() => alarms.stop());
    cleanups.unshift(() => geofences.stop());

    let httpListening = false;
    metrics.liveGauge('guanlink_audit_entries_dropped', 'Audit log entries dropped because the database did not take them in time (since start).', () => audit.dropped);
    metrics.liveGauge('guanlink_audit_entries_buffered', 'Audit log entries waiting to be written.', () => audit.buffered);
    const app = await buildApi({
      log,
      access,
      audit,
      limits: config,
      http: { ...config, httpMaxConnections: budget.http }, // the HTTP share of the connection budget
      apiKeys,
      roles,
      towns,
      registry,
      claims,
      attributes,
      connectivity,
      provisioning,
      pool,
      keys,
      metrics,
      latest: ingest.latest,
      ota: { ...ota, maxPackageBytes: config.otaMaxPackageBytes },
      rollups,
      retention,
      rpc,
      geofences,
      alarms,
      mapStyleUrl: config.mapStyleUrl,
      publicUrl: config.publicUrl,
      oidc,
      spatial: {
        pool: queryPool,
        registry,
        keys,
        positions: new DevicePositions(ingest.latest),
        statementTimeoutMs: config.spatialStatementTimeoutMs,
        geometry,
        queries: spatialQueries,
      },
      checks: {
        database: async () => (await pool.query('SELECT 1')).rowCount === 1,
        broker: () => broker.listening,
        http: () => httpListening,
      },
    });
    const live = attachLive(app.server, {
      access,
      registry,
      latest: ingest.latest,
      log: log.child({ module: 'live' }),
      onlineDevices: () => connectivity.onlineDevices(),
      audit: (entry) => audit.record(entry),
    });
    connectivity.onChange((change) => live.connectivity(change));
    // A key revoked, rotated or changed: its live streams and MQTT application sessions end at once.
    apiKeys.onChange(({ kind, key }) => {
      if (kind === 'created') return;
      const reason = kind === 'revoked' ? `API key "${key.name}" was revoked` : kind === 'rotated' ? `API key "${key.name}" was rotated: use the new key` : `API key "${key.name}" was changed: connect again`;
      live.closeKey(key.id, kind, reason);
      broker.closeApplicationSessions(key.id, reason);
    });
    // A changed role changes its holders' permissions: their open streams end too (they reconnect with the new ones).
    roles.onChange((role) => {
      void apiKeys
        .list({ role, limit: 100_000 })
        .then((holders) => {
          const reason = `role "${role}" was changed: connect again`;
          for (const key of holders) {
            live.closeKey(key.id, 'updated', reason);
            broker.closeApplicationSessions(key.id, reason);
          }
        })
        .catch((err: Error) => log.warn({ err: err.message, role }, 'could not close the streams of a changed role'));
    });
    ingest.onCommitted((rows) => live.publish(rows));
    attributes.onChange((change) => live.attributes(change));
    geofences.onEvent((event) => live.geofence(event));
    alarms.onChange((change) => live.alarm(change));
    // Upgrades: MQTT over WebSocket at /mqtt, socket.io's own; any other is answered 400 and closed.
    http = httpConnections(app.server, {
      log: log.child({ module: 'http' }),
      graceMs: config.httpShutdownGraceMs,
      handlers: { '/mqtt': (req, socket, head) => broker.handleUpgrade(req, socket, head) },
      passThrough: [live.path],
    });
    const httpServer = http;
    cleanups.unshift(async () => {
      // Together: socket.io's close waits for every HTTP connection, and only app.close() ends
      // long responses (its preClose hooks cut running exports). Requests in progress get
      // HTTP_SHUTDOWN_GRACE_MS, then their connections are closed (api/http-connections.ts).
      await httpServer.drain(() => Promise.all([live.close(), app.close()]));
    });
    // Before the HTTP server closes (it waits for open requests): callers waiting on a command are answered.
    cleanups.unshift(() => rpc.stop());

    const mqttPort = await broker.listen(config.mqttPort, config.host);
    let mqttsPort: number | undefined;
    if (config.mqttTlsCert && config.mqttTlsKey) {
      const [cert, key] = await Promise.all([readFile(config.mqttTlsCert), readFile(config.mqttTlsKey)]);
      mqttsPort = await broker.listenTls(config.mqttsPort, config.host, { cert, key });
    } else if (config.mqttTlsCert || config.mqttTlsKey) {
      throw new ConfigError('MQTT_TLS_CERT and MQTT_TLS_KEY must be set together');
    }
    await app.listen({ port: config.httpPort, host: config.host });
    watchAcceptErrors(app.server, 'http', { log, count: (listener, code) => metrics.acceptFailures.inc({ listener, code }) });
    httpListening = true;
    const httpPort = (app.server.address() as AddressInfo).port;
    log.info({ mqttPort, mqttsPort, httpPort, ms: Date.now() - started }, 'GuanLink ready');

    let stopping: Promise<void> | undefined;
    return {
      mqttPort,
      mqttsPort,
      httpPort,
      adminKey,
      dialect,
      embeddedDatabase: !config.databaseUrl,
      registry,
      ingest,
      stop() {
        stopping ??= (async () => {
          log.info('shutting down: no new connections; committing in-flight readings');
          httpListening = false;
          await broker.stopAccepting();
          await new Promise((r) => setImmediate(r));
          await ingest.stop();
          await runCleanups(cleanups, log);
          // Last: WebSocket connections the broker and socket.io closed (or left) are gone; the HTTP server is closed.
          await httpServer.finish();
          log.info('stopped');
        })();
        return stopping;
      },
    };
  } catch (err) {
    await runCleanups(cleanups, log);
    await http?.finish();
    throw err;
  }
}

/**
 * Firmware and software updates (core/ota/): packages, their assignments (followed by devices
 * created or changed later), what devices report of their updates (from committed telemetry),
 * campaigns (started once the broker pushes attributes), and the HTTP download's token check
 * (failed tokens throttled as MQTT CONNECTs are).
 */
function assembleOta(deps: { pool: pg.Pool; attributes: AttributeService; registry: DeviceRegistry; ingest: Ingest; throttle: AuthThrottle; maxPackageBytes: number; log: Logger }) {
  const { pool, attributes, registry, ingest, throttle, log } = deps;
  const packages = new OtaPackages(pool, deps.maxPackageBytes);
  const assignments = new OtaAssignments({ pool, packages, attributes, log });
  const states = new OtaDeviceStates({ pool, log });
  ingest.onCommitted((rows) => states.readingsCommitted(rows));
  const campaigns = new OtaCampaigns({ pool, packages, assignments, log });
  // A device created with (or moved to) a type that has a package is told of it, as ThingsBoard does on save.
  registry.onChange((event) => {
    if (event.kind !== 'created' && event.kind !== 'updated') return;
    assignments.deviceChanged(event.device.id).catch((err: Error) => log.warn({ err: err.message, device: event.device.id }, 'OTA target not sent to a new or changed device'));
  });
  const checkDeviceToken: DeviceTokenCheck = async (token, source) => {
    const attempt = { via: 'rest' as const, source, credential: credentialId('token', token) };
    const outcome = await registry.authenticate(token, { admit: () => throttle.admit(attempt) });
    if (outcome.ok) {
      throttle.succeeded(attempt);
      return outcome.device;
    }
    if (outcome.reason !== 'throttled') throttle.failed(attempt, outcome.reason);
    return undefined;
  };
  return { packages, assignments, states, campaigns, checkDeviceToken };
}

async function runCleanups(cleanups: (() => Promise<void>)[], log: Logger): Promise<void> {
  for (const cleanup of cleanups) {
    try {
      await cleanup();
    } catch (err) {
      log.warn({ err }, 'error while shutting down');
    }
  }
}

/** The admin key from DATA_DIR/admin-key (readable by its owner only), created on first start. */
async function loadOrCreateAdminKey(dataDir: string): Promise<string> {
  const file = path.join(dataDir, 'admin-key');
  if (existsSync(file)) {
    const key = (await readFile(file, 'utf8')).trim();
    if (key.length >= 16) {
      // A file made by hand may be readable by others (a read-only or foreign file is left as it is).
      await chmod(file, 0o600).catch(() => {});
      return key;
    }
  }
  await mkdir(dataDir, { recursive: true, mode: 0o700 }); // a folder created here is its owner's only
  const key = randomBytes(24).toString('base64url');
  await writeFile(file, `${key}\n`, { mode: 0o600 });
  await chmod(file, 0o600); // mode applies to a new file only: a short key being replaced keeps its old mode otherwise
  return key;
}
