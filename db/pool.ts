import pg from 'pg';
import { lowerBackendPriority, type PriorityOutcome } from './backend-priority.ts';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

export interface PoolOptions {
  max?: number;
  applicationName?: string;
  /** Runs each connection's server process at this nice value when it is on this machine (db/backend-priority.ts). */
  backendNice?: number;
  onPriority?: (outcome: PriorityOutcome) => void;
}

export function createPool(connectionString: string, options: PoolOptions = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'guanlink',
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
    ...(options.backendNice ? { Client: prioritisedClient(options.backendNice, hostOf(connectionString), options.onPriority) } : {}),
  });
  // A database restart ends every connection with an error event. For idle connections the pool
  // reports it (and replaces them); a connection checked out between two queries would emit it
  // with no listener and crash the process. The query in progress still sees the error.
  pool.on('error', () => {});
  pool.on('connect', (client) => client.on('error', () => {}));
  return pool;
}

/** A client class whose connections have their server process reniced before first use. */
function prioritisedClient(nice: number, host: string | undefined, onPriority: PoolOptions['onPriority']): typeof pg.Client {
  return class extends pg.Client {
    override connect(): Promise<pg.Client>;
    override connect(callback: (err: Error | null, client?: pg.Client) => void): void;
    override connect(callback?: (err: Error | null, client?: pg.Client) => void): Promise<pg.Client> | void {
      const connected = super.connect().then(async () => {
        const outcome = await lowerBackendPriority(this, nice, host).catch((err: Error) => ({ lowered: false as const, reason: err.message }));
        onPriority?.(outcome);
        return this as pg.Client;
      });
      if (!callback) return connected;
      connected.then((client) => callback(null, client), callback);
    }
  };
}

/** Runs `fn` in a transaction on one connection; rolls back on any error. */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}

function hostOf(connectionString: string): string | undefined {
  try {
    return new URL(connectionString).hostname.replace(/^\[(.*)\]$/, '$1') || undefined;
  } catch {
    return undefined;
  }
}
