import { readFileSync } from 'node:fs';
import pg from 'pg';
import { DOMAINS } from '../../core/domains.ts';
import { readingsTable } from '../../db/readings-tables.ts';
import { benchDatabase } from '../support.ts';

export interface BenchServer {
  /** URL of the fresh benchmark database. */
  url: string;
  /** 'embedded' or 'external' (DATABASE_URL). */
  kind: string;
  stop(): Promise<void>;
}

/**
 * The server of bench/support.ts (DATABASE_URL, else the embedded PostgreSQL in bench/.data) with
 * a freshly created database `name` on it, so every run starts from an empty schema.
 */
export async function freshBenchDatabase(name: string): Promise<BenchServer> {
  const server = await benchDatabase('postgres');
  try {
    const admin = new pg.Client({ connectionString: server.url });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await admin.query(`CREATE DATABASE ${name}`);
    } finally {
      await admin.end();
    }
  } catch (err) {
    await server.stop();
    throw err;
  }
  const url = new URL(server.url);
  url.pathname = `/${name}`;
  return { url: url.toString(), kind: server.kind, stop: server.stop };
}

const READINGS_TABLES = DOMAINS.map(readingsTable);

/** Empties every readings table and checkpoints, so each part starts on the same empty tables. */
export async function resetReadings(pool: pg.Pool): Promise<void> {
  await pool.query(`TRUNCATE ${READINGS_TABLES.join(', ')}`);
  await pool.query('CHECKPOINT');
}

export async function countReadings(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query<{ n: string }>('SELECT count(*) AS n FROM readings');
  return Number(rows[0]!.n);
}

export async function describeServer(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ version: string; timescaledb: string | null }>(
    `SELECT current_setting('server_version') AS version, (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS timescaledb`,
  );
  const r = rows[0]!;
  return r.timescaledb ? `TimescaleDB ${r.timescaledb} on PostgreSQL ${r.version}` : `PostgreSQL ${r.version}`;
}

export interface PostgresProcesses {
  /** Backends of connections whose application_name is `application` (GuanLink's pool is 'guanlink'). */
  clients: number[];
  /** Postmaster and background processes (WAL writer, checkpointer, autovacuum, TimescaleDB workers…). */
  background: number[];
  /** Backends of other databases' clients on the same server (someone else's load). */
  others: number[];
}

/** The server's processes, grouped for CPU accounting (see cpu.ts). */
export async function postgresProcesses(pool: pg.Pool, database: string, application: string): Promise<PostgresProcesses> {
  const { rows } = await pool.query<{ pid: number; backend_type: string; application_name: string; datname: string | null }>(
    'SELECT pid, backend_type, application_name, datname FROM pg_stat_activity',
  );
  const out: PostgresProcesses = { clients: [], background: [], others: [] };
  for (const r of rows) {
    if (r.backend_type !== 'client backend') out.background.push(r.pid);
    else if (r.datname === database && r.application_name === application) out.clients.push(r.pid);
    else if (r.datname !== database) out.others.push(r.pid);
  }
  const postmaster = out.background.map(parentPid).find((p) => p !== undefined && p > 1);
  if (postmaster !== undefined) out.background.push(postmaster);
  return out;
}

function parentPid(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}
