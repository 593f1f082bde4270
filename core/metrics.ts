import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every Prometheus metric GuanLink exposes at GET /metrics, created in one place. Modules get the
 * counters they update; gauges read live values through callbacks registered by the composition root.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'guanlink_' });
  const registers = [registry];
  return {
    registry,
    readingsAccepted: new Counter({ name: 'guanlink_readings_accepted_total', help: 'Readings committed to the database.', registers }),
    rejections: new Counter({
      name: 'guanlink_rejections_total',
      help: 'Rejected values or messages, by machine-readable reason (see README).',
      labelNames: ['reason'] as const,
      registers,
    }),
    rejectionsNotStored: new Counter({
      name: 'guanlink_rejections_not_stored_total',
      help: 'Rejected messages counted but not kept in rejected_messages (per-device budget or database unavailable).',
      registers,
    }),
    mqttRefusals: new Counter({
      name: 'guanlink_mqtt_refusals_total',
      help: 'MQTT connections, packets or subscriptions refused by the broker, by reason.',
      labelNames: ['reason'] as const,
      registers,
    }),
    acceptFailures: new Counter({
      name: 'guanlink_accept_failures_total',
      help: 'Connections a listener (mqtt, mqtts, http) failed to accept, by error code (EMFILE: out of file descriptors).',
      labelNames: ['listener', 'code'] as const,
      registers,
    }),
    descriptorsExhausted: new Counter({
      name: 'guanlink_descriptors_exhausted_seconds_total',
      help: 'Seconds in which the process was found at its open-file limit (new connections then go unanswered); see README "Connection budget".',
      registers,
    }),
    deviceConnects: new Counter({ name: 'guanlink_device_connects_total', help: 'Device sessions started.', registers }),
    deviceDisconnects: new Counter({
      name: 'guanlink_device_disconnects_total',
      help: 'Device sessions ended, by reason (client_disconnect, connection_lost, keepalive_timeout, taken_over, rate_limited, …).',
      labelNames: ['reason'] as const,
      registers,
    }),
    provisioning: new Counter({
      name: 'guanlink_provisioning_total',
      help: 'Device provisioning requests, by outcome (SUCCESS, NOT_FOUND, FAILURE).',
      labelNames: ['status'] as const,
      registers,
    }),
    authFailures: new Counter({
      name: 'guanlink_auth_failures_total',
      help: 'Credentials refused, by where (mqtt, rest, provision) and reason (unknown_token, wrong_password, unknown_api_key, wrong_provision_secret, …).',
      labelNames: ['via', 'reason'] as const,
      registers,
    }),
    authThrottled: new Counter({
      name: 'guanlink_auth_throttled_total',
      help: 'Credentials refused unchecked (no lookup, no hash) after too many failures, by where and by the limit reached (source, credential).',
      labelNames: ['via', 'limit'] as const,
      registers,
    }),
    authLookups: new Counter({
      name: 'guanlink_auth_lookups_total',
      help: 'Database lookups made to check a presented credential, by store (devices, api_keys, provision_keys).',
      labelNames: ['store'] as const,
      registers,
    }),
    authHashChecks: new Counter({
      name: 'guanlink_auth_hash_checks_total',
      help: 'scrypt checks of presented secrets, by store (devices, provision_keys).',
      labelNames: ['store'] as const,
      registers,
    }),
    geofenceEvents: new Counter({
      name: 'guanlink_geofence_events_total',
      help: 'Geofence events stored, by kind (enter, exit, dwell).',
      labelNames: ['kind'] as const,
      registers,
    }),
    geofenceReadingsDropped: new Counter({
      name: 'guanlink_geofence_readings_dropped_total',
      help: 'Committed readings not evaluated for geofences (evaluation queue full, or the database failed three times).',
      registers,
    }),
    batchRows: new Histogram({
      name: 'guanlink_ingest_batch_rows',
      help: 'Rows per committed batch (group commit).',
      buckets: [1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000],
      registers,
    }),
    commitSeconds: new Histogram({
      name: 'guanlink_ingest_commit_seconds',
      help: 'Time to write and commit one batch.',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    /** A gauge whose value is read when Prometheus scrapes. */
    liveGauge(name: string, help: string, read: () => number): Gauge {
      return new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    },
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
