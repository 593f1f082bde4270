import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { inject } from 'vitest';
import { createLogger } from '../../core/log.ts';
import { freePort } from '../../core/free-port.ts';
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../db/embedded.ts';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** A database server a test may stop, start and restart. */
export interface ControlledServer {
  /** Connection URL of a database on that server (it keeps its port across restarts). */
  url: string;
  kind: 'embedded' | 'external';
  stop(): Promise<void>;
  start(): Promise<void>;
  restart(): Promise<void>;
  dispose(): Promise<void>;
}

/**
 * In the embedded run: a private embedded PostgreSQL for this test. In the external run: the
 * shared server itself, controlled by DATABASE_CONTROL (CI sets `scripts/timescaledb.sh`; its
 * `stop`/`start`/`restart` act on the TimescaleDB cluster behind DATABASE_URL). Disruptive tests
 * run alone (vitest project `disruptive`), so stopping the shared server harms no one.
 */
export async function controlledServer(): Promise<ControlledServer | undefined> {
  if (inject('databaseKind') === 'external') {
    const control = process.env.DATABASE_CONTROL;
    if (!control) return undefined;
    const command = path.isAbsolute(control) ? control : path.join(ROOT, control);
    const act = async (verb: string) => void (await run(command, [verb], { cwd: ROOT }));
    return { url: inject('databaseUrl'), kind: 'external', stop: () => act('stop'), start: () => act('start'), restart: () => act('restart'), dispose: async () => act('start') };
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-ctl-'));
  const port = await freePort();
  const log = createLogger('warn');
  let db: EmbeddedDatabase | undefined = await startEmbeddedPostgres(dir, log, 'postgres', port);
  const url = db.url;
  const stop = async () => {
    await db?.stop();
    db = undefined;
  };
  const start = async () => {
    db ??= await startEmbeddedPostgres(dir, log, 'postgres', port);
  };
  return {
    url,
    kind: 'embedded',
    stop,
    start,
    restart: async () => {
      await stop();
      await start();
    },
    dispose: async () => {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
