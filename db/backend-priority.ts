import { readFile } from 'node:fs/promises';
import os from 'node:os';
import type pg from 'pg';

/** Why a connection's server process kept its priority; undefined when it was lowered. */
export type PriorityOutcome = { lowered: true; pid: number } | { lowered: false; reason: string };

const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/**
 * Lowers the CPU priority (raises the nice value) of the PostgreSQL server process behind one
 * connection, when that process runs on this machine — the embedded database, or a server on
 * loopback. Heavy spatial queries then take the cores only when ingest's commits (which every
 * PUBACK waits for) do not need them: on a small machine a polygon query and the commits share
 * the same two cores. PostgreSQL has no per-query priority; the operating system's is the one
 * that exists (`renice` on backends, as the pg_prioritize extension does).
 *
 * The pid PostgreSQL reports is only acted on after checking it is the backend of this very
 * connection: its process title (PostgreSQL's `update_process_title`) must name our socket's
 * local port. A server in a container or on another machine fails that check and is left alone.
 */
export async function lowerBackendPriority(client: pg.ClientBase, nice: number, host: string | undefined): Promise<PriorityOutcome> {
  if (!host || !LOOPBACK.has(host)) return { lowered: false, reason: 'the database is not on this machine' };
  const localPort = (client as unknown as { connection?: { stream?: { localPort?: number } } }).connection?.stream?.localPort;
  if (!localPort) return { lowered: false, reason: 'not a TCP connection' };
  const { rows } = await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
  const pid = rows[0]!.pid;
  let title: string;
  try {
    title = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replaceAll('\0', ' ');
  } catch {
    return { lowered: false, reason: `server process ${pid} is not visible here (another machine, container or platform)` };
  }
  if (!title.startsWith('postgres') || !title.includes(`(${localPort})`)) {
    return { lowered: false, reason: `process ${pid} is not this connection's backend (its title does not name port ${localPort})` };
  }
  try {
    if (os.getPriority(pid) < nice) os.setPriority(pid, nice);
  } catch (err) {
    return { lowered: false, reason: `not permitted to renice process ${pid}: ${(err as Error).message}` };
  }
  return { lowered: true, pid };
}
