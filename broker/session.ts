import type { Client } from 'aedes';
import type { DeviceContext } from '../core/registry.ts';

/** One authenticated MQTT connection of a device. */
export interface Session {
  device: DeviceContext;
  client: Client;
  /** The client id the device sent; the broker keys sessions by device instead. */
  clientId: string;
  address: string | undefined;
  connectedAt: number;
  /** Publishes of this session waiting on a handler (ingest, the database). */
  waiting: number;
}

/** Sends a message to one device's connection only (never through topic routing: every device shares `v1/devices/me/...`). */
export type Deliver = (deviceId: number, topic: string, payload: Buffer | string, qos?: 0 | 1) => Promise<boolean>;
