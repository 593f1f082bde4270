import path from 'node:path';
import { parseRateLimit } from './rate-limit.ts';
import { parseRequestLimit, parseRoleLimits } from './access/rate-limits.ts';

/**
 * Every setting GuanLink reads from the environment, in one table: the README's configuration
 * section is written from it and `loadConfig` parses it. Bad values stop start-up with one clear
 * message naming each offending variable.
 */
interface Setting<T> {
  env: string;
  description: string;
  default: T;
  parse: (raw: string) => T;
}

function integer(min: number, max: number) {
  return (raw: string): number => {
    if (!/^-?\d+$/.test(raw.trim())) throw new Error(`expected an integer, got "${raw}"`);
    const n = Number(raw);
    if (n < min || n > max) throw new Error(`expected ${min}..${max}, got ${n}`);
    return n;
  };
}
const text = (raw: string): string => raw;
const optionalText = (raw: string): string | undefined => (raw === '' ? undefined : raw);
/** An http(s) URL without query or fragment, kept without a trailing slash. */
function publicUrl(raw: string): string | undefined {
  if (raw === '') return undefined;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`"${raw}" is not a URL`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.search !== '' || url.hash !== '') throw new Error('an http:// or https:// URL without query or fragment');
  return url.href.replace(/\/+$/, '');
}
function oneOf<const T extends string>(...values: T[]) {
  return (raw: string): T => {
    if (!(values as string[]).includes(raw)) throw new Error(`expected one of ${values.join(', ')}, got "${raw}"`);
    return raw as T;
  };
}
function rateLimitText(raw: string): string {
  if (raw.trim() !== 'off') parseRateLimit(raw);
  return raw.trim();
}
function requestLimitText(raw: string): string {
  return parseRequestLimit(raw).text;
}
function isoDate(raw: string): string {
  if (!/^\d{4}-\d{2}-\d{2}/.test(raw) || Number.isNaN(Date.parse(raw))) throw new Error(`expected an ISO 8601 date, got "${raw}"`);
  return raw;
}
/** An https URL (http only on the loopback interface), without query or fragment: an identity provider's. */
export function providerUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`expected a URL, got "${raw}"`);
  }
  const loopback = url.hostname === 'localhost' || url.hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) throw new Error(`expected an https URL (http only on localhost), got "${raw}"`);
  if (url.search || url.hash) throw new Error(`expected a URL without query or fragment, got "${raw}"`);
  return raw;
}
/** OIDC_ROLE_MAP: `provider-role=guanlink-role,…` (a provider role listed several times gives several roles). */
export function parseRoleMap(raw: string): Map<string, string[]> {
  const map = new Map<string, string[]>();
  for (const part of raw.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    const from = part.slice(0, eq).trim();
    const to = part.slice(eq + 1).trim();
    if (eq < 0 || from === '' || to === '' || to.includes('=')) throw new Error(`expected provider-role=guanlink-role pairs separated by commas, got "${part.trim()}"`);
    const roles = map.get(from) ?? [];
    if (!roles.includes(to)) roles.push(to);
    map.set(from, roles);
  }
  if (map.size === 0) throw new Error('expected provider-role=guanlink-role pairs separated by commas');
  return map;
}
function flag(raw: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw new Error(`expected true or false, got "${raw}"`);
}

export const settings = {
  databaseUrl: {
    env: 'DATABASE_URL',
    description: 'PostgreSQL or TimescaleDB to use. Unset: an embedded PostgreSQL is started with its data in DATA_DIR.',
    default: undefined,
    parse: optionalText,
  } as Setting<string | undefined>,
  dataDir: {
    env: 'DATA_DIR',
    description: 'Folder for the embedded database, the generated admin key and other local state.',
    default: './data',
    parse: text,
  } as Setting<string>,
  host: { env: 'HOST', description: 'Address the MQTT and HTTP listeners bind to.', default: '0.0.0.0', parse: text } as Setting<string>,
  mqttPort: { env: 'MQTT_PORT', description: 'MQTT over TCP (0 picks a free port).', default: 1883, parse: integer(0, 65535) } as Setting<number>,
  httpPort: {
    env: 'HTTP_PORT',
    description: 'HTTP: REST API, socket.io, the live map at /, MQTT over WebSocket at /mqtt (0 picks a free port).',
    default: 8080,
    parse: integer(0, 65535),
  } as Setting<number>,
  httpHeadersTimeoutMs: {
    env: 'HTTP_HEADERS_TIMEOUT_MS',
    description: "A request's headers must have arrived within this many milliseconds, else 408 and the connection is closed (slow-header clients).",
    default: 10_000,
    parse: integer(100, 600_000),
  } as Setting<number>,
  httpRequestTimeoutMs: {
    env: 'HTTP_REQUEST_TIMEOUT_MS',
    description: 'A whole request, headers and body, must have arrived within this many milliseconds, else 408 (slow-body clients). Only receiving counts: a long answer (an export) is not cut.',
    default: 60_000,
    parse: integer(100, 3_600_000),
  } as Setting<number>,
  httpIdleTimeoutMs: {
    env: 'HTTP_IDLE_TIMEOUT_MS',
    description: 'A connection on which the client moves nothing for this long — a body that stopped arriving, an answer it stopped reading — is closed. Not while the server prepares an answer.',
    default: 60_000,
    parse: integer(100, 3_600_000),
  } as Setting<number>,
  httpKeepAliveTimeoutMs: {
    env: 'HTTP_KEEPALIVE_TIMEOUT_MS',
    description: 'An idle keep-alive connection is closed after this many milliseconds. Behind a load balancer, set it above the balancer\'s idle timeout.',
    default: 5_000,
    parse: integer(100, 600_000),
  } as Setting<number>,
  httpMaxConnections: {
    env: 'HTTP_MAX_CONNECTIONS',
    description: 'HTTP connections held at once (REST, socket.io, MQTT over WebSocket); beyond it new ones are closed at once. Also bounded by the open-file limit.',
    default: 10_000,
    parse: integer(1, 1_000_000),
  } as Setting<number>,
  httpMaxUnauthenticated: {
    env: 'HTTP_MAX_UNAUTHENTICATED',
    description: 'Requests without a verified credential in progress at once (public routes for their whole duration, others until their credential is checked); beyond it 503 with Retry-After.',
    default: 256,
    parse: integer(1, 1_000_000),
  } as Setting<number>,
  httpMaxUnauthenticatedPerAddress: {
    env: 'HTTP_MAX_UNAUTHENTICATED_PER_ADDRESS',
    description: 'The same from one source address; beyond it 429 with Retry-After (one client cannot take the whole budget).',
    default: 64,
    parse: integer(1, 1_000_000),
  } as Setting<number>,
  httpShutdownGraceMs: {
    env: 'HTTP_SHUTDOWN_GRACE_MS',
    description: 'On shutdown, HTTP requests in progress get this long to finish before their connections are closed.',
    default: 10_000,
    parse: integer(0, 600_000),
  } as Setting<number>,
  adminKey: {
    env: 'GUANLINK_ADMIN_KEY',
    description: 'The bootstrap admin key (every permission, no scope), for first start and for creating API keys. Unset: generated once and kept in DATA_DIR/admin-key (mode 0600).',
    default: undefined,
    parse: optionalText,
  } as Setting<string | undefined>,
  townsGeoJson: {
    env: 'TOWNS_GEOJSON',
    description:
      "A GeoJSON FeatureCollection of the towns/districts (镇街) that scopes may name, each Feature with a `name` property (optionally `nameEn`): official boundaries. Unset: the shipped approximate areas (geo/shapes/dongguan-towns.json).",
    default: undefined,
    parse: optionalText,
  } as Setting<string | undefined>,
  oidcIssuer: {
    env: 'OIDC_ISSUER',
    description:
      "OpenID Connect: the city's identity provider (e.g. https://keycloak.example/realms/city). Set: bearer JWTs it issues are accepted (its discovery document and keys are read from it). Needs OIDC_AUDIENCE.",
    default: undefined,
    parse: (raw: string) => providerUrl(raw.trim()),
  } as Setting<string | undefined>,
  oidcAudience: {
    env: 'OIDC_AUDIENCE',
    description: "The audience (aud) GuanLink's access tokens carry; several separated by commas. Required with OIDC_ISSUER.",
    default: undefined,
    parse: optionalText,
  } as Setting<string | undefined>,
  oidcClientId: {
    env: 'OIDC_CLIENT_ID',
    description: "The live map's client at the provider (public: authorization code + PKCE, redirect URI <GuanLink URL>/). Unset: the map offers no sign-in through the provider.",
    default: undefined,
    parse: optionalText,
  } as Setting<string | undefined>,
  oidcScopes: { env: 'OIDC_SCOPES', description: 'Scopes the live map asks the provider for.', default: 'openid profile', parse: text } as Setting<string>,
  oidcRolesClaim: {
    env: 'OIDC_ROLES_CLAIM',
    description: "Claim holding the token's roles; a dotted path reaches inside objects (Keycloak: realm_access.roles or resource_access.<client>.roles).",
    default: 'roles',
    parse: text,
  } as Setting<string>,
  oidcRoleMap: {
    env: 'OIDC_ROLE_MAP',
    description: "Provider roles to GuanLink roles (city-water-staff=agency,city-ops=operator). Set: only the roles it maps count. Unset: the provider's role names are GuanLink's.",
    default: undefined,
    parse: (raw: string) => (parseRoleMap(raw), raw.trim()),
  } as Setting<string | undefined>,
  oidcScopeClaim: {
    env: 'OIDC_SCOPE_CLAIM',
    description: 'Claim holding the scope, as for API keys: {"domains":[…],"towns":[…]} or {"area":<GeoJSON>} (or that object as JSON text). Absent in a token: no restriction beyond its roles.',
    default: 'guanlink_scope',
    parse: text,
  } as Setting<string>,
  oidcNameClaim: { env: 'OIDC_NAME_CLAIM', description: 'Claim with the display name (then preferred_username, then sub).', default: 'name', parse: text } as Setting<string>,
  oidcOwnerClaim: { env: 'OIDC_OWNER_CLAIM', description: "Claim with the agency a person acts for (then the provider's host name).", default: 'org', parse: text } as Setting<string>,
  oidcJwksCooldownMs: {
    env: 'OIDC_JWKS_COOLDOWN_MS',
    description: "A token signed with a key GuanLink does not know makes it fetch the provider's keys again (key rotation), at most once in this many milliseconds.",
    default: 30_000,
    parse: integer(100, 3_600_000),
  } as Setting<number>,
  logLevel: {
    env: 'LOG_LEVEL',
    description: 'fatal, error, warn, info, debug or trace.',
    default: 'info',
    parse: oneOf('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'),
  } as Setting<'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'>,
  ingestBatchSize: {
    env: 'INGEST_BATCH_SIZE',
    description: 'Group commit: a batch is written once it holds this many readings…',
    default: 5000,
    parse: integer(1, 100_000),
  } as Setting<number>,
  ingestBatchMs: {
    env: 'INGEST_BATCH_MS',
    description: '…or once its first reading has waited this many milliseconds.',
    default: 10,
    parse: integer(0, 10_000),
  } as Setting<number>,
  ingestWriters: {
    env: 'INGEST_WRITERS',
    description: 'Batches written concurrently (each on its own database connection).',
    default: 3,
    parse: integer(1, 32),
  } as Setting<number>,
  mqttsPort: {
    env: 'MQTTS_PORT',
    description: 'MQTT over TLS, when MQTT_TLS_CERT and MQTT_TLS_KEY are set (0 picks a free port).',
    default: 8883,
    parse: integer(0, 65535),
  } as Setting<number>,
  mqttTlsCert: { env: 'MQTT_TLS_CERT', description: 'PEM certificate (chain) file for the mqtts listener.', default: undefined, parse: optionalText } as Setting<
    string | undefined
  >,
  mqttTlsKey: { env: 'MQTT_TLS_KEY', description: 'PEM private key file for the mqtts listener.', default: undefined, parse: optionalText } as Setting<string | undefined>,
  maxConnections: {
    env: 'MQTT_MAX_CONNECTIONS',
    description: "MQTT sessions held at once; beyond it CONNACK 3 (server unavailable). Also bounded by the open-file limit: the connection budget is the smaller (logged at start, guanlink_mqtt_connection_budget).",
    default: 100_000,
    parse: integer(1, 10_000_000),
  } as Setting<number>,
  mqttConnectTimeoutMs: {
    env: 'MQTT_CONNECT_TIMEOUT_MS',
    description: 'An MQTT connection must have sent its CONNECT and been answered this soon after it opened (TLS handshake and WebSocket upgrade included), else it is closed.',
    default: 10_000,
    parse: integer(100, 600_000),
  } as Setting<number>,
  provisionSessionTimeoutMs: {
    env: 'PROVISION_SESSION_TIMEOUT_MS',
    description: 'A provisioning MQTT session (anonymous) is closed this long after it connected, whether or not it asked anything.',
    default: 20_000,
    parse: integer(100, 3_600_000),
  } as Setting<number>,
  mqttMaxConnectBytes: {
    env: 'MQTT_MAX_CONNECT_BYTES',
    description: 'Largest MQTT packet (and WebSocket frame) accepted before a connection is authenticated — its CONNECT — and in provisioning sessions; larger closes the connection before its body is read.',
    default: 16_384,
    parse: integer(256, 256 * 1024 * 1024),
  } as Setting<number>,
  mqttUnauthenticatedPerAddress: {
    env: 'MQTT_UNAUTHENTICATED_PER_ADDRESS',
    description: "MQTT connections one source address (an IPv6 /64) may hold before they are authenticated, provisioning sessions included; a new one closes that address's oldest. Authenticated devices behind the address (a NAT) do not count.",
    default: 64,
    parse: integer(1, 1_000_000),
  } as Setting<number>,
  mqttConnectRatePerAddress: {
    env: 'MQTT_CONNECT_RATE_PER_ADDRESS',
    description: 'New MQTT connections per source address (<count>/<window> token bucket, or off); a connection that authenticates as a device or application gives its token back, so this limits anonymous, refused and abandoned ones.',
    default: '300/min',
    parse: requestLimitText,
  } as Setting<string>,
  devicePublishRate: {
    env: 'DEVICE_PUBLISH_RATE',
    description: 'Per-device publish limit as ThingsBoard writes it, capacity:seconds pairs ("500:1,20000:60"), or "off". Beyond it the connection is closed and the publish left unacknowledged.',
    default: '500:1,20000:60',
    parse: rateLimitText,
  } as Setting<string>,
  maxPayloadBytes: {
    env: 'INGEST_MAX_PAYLOAD_BYTES',
    description: 'Largest telemetry (or attributes) payload accepted; larger ones are refused with reason payload_too_large.',
    default: 65_536,
    parse: integer(256, 16 * 1024 * 1024),
  } as Setting<number>,
  maxPacketBytes: {
    env: 'MQTT_MAX_PACKET_BYTES',
    description: 'An MQTT packet announcing more than this closes the connection before its body is read.',
    default: 1_048_576,
    parse: integer(1024, 256 * 1024 * 1024),
  } as Setting<number>,
  maxQueueBytes: {
    env: 'INGEST_MAX_QUEUE_BYTES',
    description: 'Payload bytes held in memory waiting for the database; at this bound the broker stops reading from publishers until half is committed.',
    default: 64 * 1024 * 1024,
    parse: integer(64 * 1024, 16 * 1024 * 1024 * 1024),
  } as Setting<number>,
  maxFutureMs: {
    env: 'INGEST_MAX_FUTURE_MS',
    description: 'Readings timestamped further ahead of the server clock are refused (ts_in_future).',
    default: 300_000,
    parse: integer(0, 366 * 86_400_000),
  } as Setting<number>,
  minTimestamp: {
    env: 'INGEST_MIN_TIMESTAMP',
    description: 'Readings timestamped before this date are refused (ts_too_old; catches seconds sent as milliseconds).',
    default: '2000-01-01T00:00:00Z',
    parse: isoDate,
  } as Setting<string>,
  rejectedPerDevicePerMinute: {
    env: 'REJECTED_PER_DEVICE_PER_MINUTE',
    description: 'Rejected messages kept with their payload per device per minute (all are counted and explained to the device).',
    default: 600,
    parse: integer(0, 1_000_000),
  } as Setting<number>,
  rejectedRetentionDays: {
    env: 'REJECTED_RETENTION_DAYS',
    description: 'Days rejected messages (with their payloads) are kept; 0 keeps them forever.',
    default: 30,
    parse: integer(0, 36_500),
  } as Setting<number>,
  nodeId: {
    env: 'NODE_ID',
    description: 'Name of this node in connection state (stable across restarts; distinct per node when several share a database). Unset: the host name.',
    default: undefined,
    parse: optionalText,
  } as Setting<string | undefined>,
  lastSeenFlushMs: {
    env: 'LAST_SEEN_FLUSH_MS',
    description: "How often connected devices' last-seen times (and this node's heartbeat) are saved to device_connectivity.",
    default: 30_000,
    parse: integer(100, 3_600_000),
  } as Setting<number>,
  deviceEventsRetentionDays: {
    env: 'DEVICE_EVENTS_RETENTION_DAYS',
    description: 'Days connect/disconnect events are kept (applied with the retention policies); 0 keeps them forever.',
    default: 90,
    parse: integer(0, 36_500),
  } as Setting<number>,
  geofenceEventsRetentionDays: {
    env: 'GEOFENCE_EVENTS_RETENTION_DAYS',
    description: 'Days geofence enter/exit/dwell events are kept (applied with the retention policies); 0 keeps them forever.',
    default: 365,
    parse: integer(0, 36_500),
  } as Setting<number>,
  auditRetentionDays: {
    env: 'AUDIT_RETENTION_DAYS',
    description: 'Days audit log entries are kept (applied with the retention policies); 0 keeps them forever.',
    default: 365,
    parse: integer(0, 36_500),
  } as Setting<number>,
  rateLimits: {
    env: 'RATE_LIMITS',
    description:
      "REST requests per principal, by role: role=<count>/<window> pairs (windows: s, min, h, day, e.g. 10min), or off. A principal with several roles gets the most generous; an API key's own rate limit overrides its roles'.",
    default: 'admin=6000/min,operator=1200/min,agency=600/min',
    parse: (raw: string) => (parseRoleLimits(raw), raw.trim()),
  } as Setting<string>,
  rateLimitDefault: {
    env: 'RATE_LIMIT_DEFAULT',
    description: 'REST requests per principal for a role RATE_LIMITS does not list (<count>/<window>, or off).',
    default: '600/min',
    parse: requestLimitText,
  } as Setting<string>,
  bootstrapRateLimit: {
    env: 'BOOTSTRAP_RATE_LIMIT',
    description: 'REST requests with the bootstrap admin key (<count>/<window>, or off): by default unlimited, so that the operator is never locked out.',
    default: 'off',
    parse: requestLimitText,
  } as Setting<string>,
  provisionRateLimit: {
    env: 'PROVISION_RATE_LIMIT',
    description: 'Requests to the public provisioning endpoint (POST /api/v1/provision) per source address (<count>/<window>, or off).',
    default: '20/min',
    parse: requestLimitText,
  } as Setting<string>,
  authFailuresPerSource: {
    env: 'AUTH_FAILURES_PER_SOURCE',
    description:
      'Failed credential checks (MQTT CONNECT, API keys, provisioning) one source address (an IPv6 /64) may make per window before it is blocked with exponential backoff (<count>/<window>, or off). Generous: devices share NAT addresses.',
    default: '300/10min',
    parse: requestLimitText,
  } as Setting<string>,
  authFailuresPerCredential: {
    env: 'AUTH_FAILURES_PER_CREDENTIAL',
    description: 'Failed checks per credential (token, MQTT username, client id, API key, provision key) per window before it is blocked with exponential backoff (<count>/<window>, or off).',
    default: '5/10min',
    parse: requestLimitText,
  } as Setting<string>,
  authBackoffMaxMs: {
    env: 'AUTH_BACKOFF_MAX_MS',
    description: 'Longest block after failed credential checks. The first lasts the limit\'s window/count (AUTH_FAILURES_PER_CREDENTIAL 5/10min: 2 min), each further failure doubles it.',
    default: 900_000,
    parse: integer(1000, 86_400_000),
  } as Setting<number>,
  authNegativeCacheMs: {
    env: 'AUTH_NEGATIVE_CACHE_MS',
    description: 'How long a token, username, client id, API key or provision key found not to exist is answered from memory without a database query (0: never).',
    default: 30_000,
    parse: integer(0, 3_600_000),
  } as Setting<number>,
  exportConcurrencyPerPrincipal: {
    env: 'EXPORT_CONCURRENCY_PER_PRINCIPAL',
    description: 'Exports (spatial and device exports) one principal may run at once; beyond it 429.',
    default: 2,
    parse: integer(1, 1000),
  } as Setting<number>,
  queryConcurrencyPerPrincipal: {
    env: 'QUERY_CONCURRENCY_PER_PRINCIPAL',
    description: 'Heavy queries (spatial history and aggregates, trajectories, SensorThings API requests) one principal may run at once; beyond it 429.',
    default: 4,
    parse: integer(1, 1000),
  } as Setting<number>,
  provisionSessionCloseMs: {
    env: 'PROVISION_SESSION_CLOSE_MS',
    description: 'A provisioning MQTT session is closed this long after its answer is sent (ThingsBoard: 60 s).',
    default: 60_000,
    parse: integer(0, 3_600_000),
  } as Setting<number>,
  gatewayDefaultDeviceType: {
    env: 'GATEWAY_DEFAULT_DEVICE_TYPE',
    description: 'Type of sub-devices a gateway creates without naming one (v1/gateway/connect without "type", or telemetry for an unknown name).',
    default: 'generic',
    parse: text,
  } as Setting<string>,
  gatewayMaxDevices: {
    env: 'GATEWAY_MAX_DEVICES',
    description: 'Sub-devices one gateway may have; beyond it new names are refused (too_many_devices).',
    default: 10_000,
    parse: integer(1, 10_000_000),
  } as Setting<number>,
  gatewayMaxDevicesPerMessage: {
    env: 'GATEWAY_MAX_DEVICES_PER_MESSAGE',
    description: 'Sub-devices named in one gateway telemetry or attributes message; beyond it the message is refused (too_many_values).',
    default: 1000,
    parse: integer(1, 100_000),
  } as Setting<number>,
  otaMaxPackageBytes: {
    env: 'OTA_MAX_PACKAGE_BYTES',
    description: 'Largest firmware or software package accepted for upload (streamed into the database in 64 KiB blocks, never held whole); a larger upload is refused with 413 and nothing is kept.',
    default: 256 * 1024 * 1024,
    parse: integer(1, 4 * 1024 * 1024 * 1024),
  } as Setting<number>,
  claimDefaultDurationMs: {
    env: 'CLAIM_DEFAULT_DURATION_MS',
    description: "How long a device's claim request stays open when the device gives no durationMs (ThingsBoard's SECURITY_CLAIM_DURATION).",
    default: 86_400_000,
    parse: integer(1000, 365 * 86_400_000),
  } as Setting<number>,
  spatialStatementTimeoutMs: {
    env: 'SPATIAL_STATEMENT_TIMEOUT_MS',
    description: 'Longest a spatial query, aggregate or export statement may run before the database cancels it (the request gets 503).',
    default: 30_000,
    parse: integer(100, 3_600_000),
  } as Setting<number>,
  spatialMaxConcurrentQueries: {
    env: 'SPATIAL_MAX_CONCURRENT_QUERIES',
    description: 'Heavy spatial queries (history, aggregates) using the database at once, the others wait their turn; 0: the cores less one, at least 1 (the database shares the cores with ingest).',
    default: 0,
    parse: integer(0, 256),
  } as Setting<number>,
  spatialQueryNice: {
    env: 'SPATIAL_QUERY_NICE',
    description: "Nice value of the database processes that run spatial queries, when the database is on this machine (embedded, or on loopback): ingest's commits, which every PUBACK waits for, come first on shared cores. 0: normal priority.",
    default: 10,
    parse: integer(0, 19),
  } as Setting<number>,
  spatialQueryQueue: {
    env: 'SPATIAL_QUERY_QUEUE',
    description: 'Heavy spatial queries that may wait for a turn; beyond it 503 with Retry-After.',
    default: 64,
    parse: integer(0, 100_000),
  } as Setting<number>,
  geometryThreads: {
    env: 'GEOMETRY_THREADS',
    description: "Worker threads for spatial requests' geometry work (checking polygons, H3 covers, testing positions), off the main thread; 0: the cores less one, at least 1.",
    default: 0,
    parse: integer(0, 64),
  } as Setting<number>,
  geometryQueue: {
    env: 'GEOMETRY_QUEUE',
    description: 'Geometry tasks that may wait for a free worker thread; beyond, the request gets 503 with Retry-After.',
    default: 64,
    parse: integer(0, 100_000),
  } as Setting<number>,
  geometryTaskTimeoutMs: {
    env: 'GEOMETRY_TASK_TIMEOUT_MS',
    description: 'Longest a geometry task may wait and run; past it its thread is stopped and the request gets 503.',
    default: 10_000,
    parse: integer(100, 600_000),
  } as Setting<number>,
  maxTelemetryKeys: {
    env: 'MAX_TELEMETRY_KEYS',
    description: 'Distinct telemetry key names the platform accepts in all (a device inventing keys is refused beyond it).',
    default: 5000,
    parse: integer(10, 32_000),
  } as Setting<number>,
  latestFlushMs: {
    env: 'LATEST_FLUSH_MS',
    description: "How often devices' latest values and positions are saved to device_state.",
    default: 1000,
    parse: integer(50, 60_000),
  } as Setting<number>,
  rollupRefreshMs: {
    env: 'ROLLUP_REFRESH_MS',
    description: 'How often closed minutes and late readings are rolled up (1-minute and 1-hour rollups); 0: not on this node.',
    default: 10_000,
    parse: integer(0, 3_600_000),
  } as Setting<number>,
  rollupLatenessMs: {
    env: 'ROLLUP_LATENESS_MS',
    description: 'A minute is rolled up this long after it ends; readings arriving later are recomputed from their late-data record.',
    default: 120_000,
    parse: integer(0, 86_400_000),
  } as Setting<number>,
  chunkLayoutIntervalMs: {
    env: 'CHUNK_LAYOUT_INTERVAL_MS',
    description: 'TimescaleDB: how often closed chunks of readings are looked for and rewritten in hour/H3-cell order (fast area queries); 0: never.',
    default: 600_000,
    parse: integer(0, 7 * 86_400_000),
  } as Setting<number>,
  chunkLayoutAfterMs: {
    env: 'CHUNK_LAYOUT_AFTER_MS',
    description: 'A chunk is rewritten this long after its time range ends (readings arriving later are appended in arrival order).',
    default: 3_600_000,
    parse: integer(0, 30 * 86_400_000),
  } as Setting<number>,
  retentionIntervalMs: {
    env: 'RETENTION_INTERVAL_MS',
    description: 'How often the per-domain retention policies are applied (first run a minute after start); 0: never automatically.',
    default: 3_600_000,
    parse: integer(0, 7 * 86_400_000),
  } as Setting<number>,
  mapStyleUrl: {
    env: 'MAP_STYLE_URL',
    description: 'MapLibre style for the live map. Unset: a plain offline background (no internet needed).',
    default: undefined,
    parse: optionalText,
  } as Setting<string | undefined>,
  publicUrl: {
    env: 'PUBLIC_URL',
    description: "The address clients reach this server at (behind a reverse proxy), for absolute links in answers (SensorThings API); unset: the request's protocol and Host.",
    default: undefined,
    parse: publicUrl,
  } as Setting<string | undefined>,
  simulators: {
    env: 'SIMULATORS',
    description: 'Run the simulated Dongguan fleets (same as omitting --no-simulators).',
    default: true,
    parse: flag,
  } as Setting<boolean>,
  simSeed: { env: 'SIM_SEED', description: 'Seed of the simulated fleets (same seed, same fleet and values).', default: 20260101, parse: integer(0, 2 ** 31 - 1) } as Setting<number>,
  simDevicesPerType: {
    env: 'SIM_DEVICES_PER_TYPE',
    description: 'Simulated devices of each device type.',
    default: 3,
    parse: integer(0, 10_000),
  } as Setting<number>,
  simIntervalMs: {
    env: 'SIM_INTERVAL_MS',
    description: 'How often each simulated device reports.',
    default: 2000,
    parse: integer(100, 3_600_000),
  } as Setting<number>,
};

type Settings = typeof settings;
export type Config = { [K in keyof Settings]: Settings[K] extends Setting<infer T> ? T : never };

export class ConfigError extends Error {}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Config> = {}): Config {
  const problems: string[] = [];
  const config: Record<string, unknown> = {};
  for (const [name, setting] of Object.entries(settings) as [string, Setting<unknown>][]) {
    const raw = env[setting.env];
    if (raw === undefined || raw === '') {
      config[name] = setting.default;
      continue;
    }
    try {
      config[name] = setting.parse(raw);
    } catch (err) {
      problems.push(`${setting.env}: ${(err as Error).message}`);
    }
  }
  if (problems.length > 0) throw new ConfigError(`invalid configuration:\n  ${problems.join('\n  ')}`);
  const result = { ...(config as Config), ...overrides };
  result.dataDir = path.resolve(result.dataDir);
  return result;
}
