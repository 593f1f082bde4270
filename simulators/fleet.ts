import type { Logger } from '../core/log.ts';

export interface FleetOptions {
  httpUrl: string;
  mqttUrl: string;
  adminKey: string;
  seed: number;
  devicesPerType: number;
  intervalMs: number;
  stateFile: string;
  log: Logger;
}

export interface Fleet {
  stop(): Promise<void>;
}

export async function startFleet(_opts: FleetOptions): Promise<Fleet> {
  throw new Error('not yet');
}
