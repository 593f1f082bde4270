/** Messages between bench/ingest.ts and its child processes (IPC), and the publishers' workload file. */

export type Phase = 'warmup' | 'main';

/** The MQTT version publishers speak: 4 (3.1.1) or 5. */
export type MqttVersion = 4 | 5;

/** One device as a publisher process sees it: its credentials and its payloads, in send order. */
export interface PublisherDevice {
  /** MQTT username (GuanLink access token; any string for the other brokers). */
  token: string;
  payloads: Record<Phase, string[]>;
}

export interface PublisherWorkload {
  topic: string;
  devices: PublisherDevice[];
}

export type ToPublisher =
  | { type: 'connect'; host: string; port: number; clientPrefix: string; concurrency: number; mqtt: MqttVersion }
  | { type: 'run'; phase: Phase; window: number }
  | { type: 'disconnect' };

export type FromPublisher =
  | { type: 'ready'; devices: number; messages: Record<Phase, number>; bytes: Record<Phase, number> }
  | { type: 'connected'; connections: number }
  | { type: 'progress'; acked: number }
  | { type: 'done'; phase: Phase; sent: number; acked: number }
  | { type: 'disconnected' }
  | { type: 'error'; message: string };

export type FromNullBroker = { type: 'listening'; port: number } | { type: 'error'; message: string };
