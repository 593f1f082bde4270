/**
 * Part (c)(i), bench only: GuanLink's broker exactly as platform.ts builds it (`createBroker`:
 * the same aedes options and hooks, packet-size guard, metrics, authorizePublish routing and
 * one-session-per-device logic), with ingest replaced by an immediate acknowledgement and the
 * registry by an in-memory table (every token is a device). Run by bench/ingest.ts; reports its
 * port over IPC.
 */
import { createBroker } from '../../broker/broker.ts';
import { loadConfig } from '../../core/config.ts';
import { BUILTIN_DEVICE_TYPES } from '../../core/device-types.ts';
import { createLogger } from '../../core/log.ts';
import { createMetrics } from '../../core/metrics.ts';
import type { DeviceContext } from '../../core/registry.ts';
import type { FromNullBroker } from './protocol.ts';

const config = loadConfig(process.env);
const generic = BUILTIN_DEVICE_TYPES.find((t) => t.name === 'generic')!;
const devices = new Map<string, DeviceContext>();

const broker = createBroker({
  log: createLogger(process.env.LOG_LEVEL ?? 'warn'),
  metrics: createMetrics(),
  maxPacketBytes: config.maxPacketBytes,
  maxConnections: config.maxConnections,
  async authenticate({ username }) {
    const token = username ?? '';
    let device = devices.get(token);
    if (!device) {
      device = { id: devices.size + 1, name: token, type: generic, lat: null, lng: null, alt: null, cell: null, isGateway: false, gatewayId: null };
      devices.set(token, device);
    }
    return { kind: 'device', device, method: 'token' };
  },
  handlers: () => ({ telemetry: async () => {} }),
});

const send = (m: FromNullBroker) => process.send!(m);
process.on('disconnect', () => process.exit(0));
process.on('SIGTERM', () => {
  void broker.close().finally(() => process.exit(0));
});
broker.listen(0, '127.0.0.1').then(
  (port) => send({ type: 'listening', port }),
  (err: Error) => {
    send({ type: 'error', message: err.message });
    process.exit(1);
  },
);
