import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BUNDLES = path.join(ROOT, 'bench', '.data', 'bundles');

/** A process this benchmark started; `stop()` ends it (SIGTERM, then SIGKILL) and is safe to call twice. */
export interface Child {
  name: string;
  proc: ChildProcess;
  pid: number;
  exited: Promise<number | string>;
  stop(graceMs?: number): Promise<void>;
}

const running = new Set<Child>();

export interface SpawnOptions {
  env?: NodeJS.ProcessEnv;
  /** Appends the child's stdout and stderr to this file (else they are discarded). */
  logFile?: string;
  /** Opens an IPC channel (process.send / 'message'). */
  ipc?: boolean;
}

/** Starts a process and registers it for clean-up. */
export function spawnChild(name: string, command: string, args: string[], opts: SpawnOptions = {}): Child {
  const fd = opts.logFile ? openSync(opts.logFile, 'a') : undefined;
  const out = fd ?? 'ignore';
  const stdio: StdioOptions = opts.ipc ? ['ignore', out, out, 'ipc'] : ['ignore', out, out];
  const proc = spawn(command, args, { cwd: ROOT, env: opts.env ?? process.env, stdio });
  if (fd !== undefined) closeSync(fd);
  if (proc.pid === undefined) throw new Error(`could not start ${name} (${command})`);
  const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  proc.on('error', () => {}); // reported through `exited`
  let stopping: Promise<void> | undefined;
  const child: Child = {
    name,
    proc,
    pid: proc.pid,
    exited,
    stop(graceMs = 20_000) {
      stopping ??= (async () => {
        if (proc.exitCode === null && proc.signalCode === null) {
          proc.kill('SIGTERM');
          const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
          await exited;
          clearTimeout(timer);
        }
        running.delete(child);
      })();
      return stopping;
    },
  };
  running.add(child);
  void exited.then(() => running.delete(child));
  return child;
}

/**
 * Bundles a TypeScript entry point into plain JavaScript (as `npm run build` does for the platform:
 * no tsx at run time, whose kept function names cost a defineProperty per closure) and returns it.
 */
export function bundle(entry: string): Promise<string> {
  let built = bundles.get(entry);
  if (!built) {
    const outfile = path.join(BUNDLES, `${path.basename(entry, '.ts')}.mjs`);
    built = build({ entryPoints: [path.join(ROOT, entry)], outfile, bundle: true, packages: 'external', platform: 'node', format: 'esm', target: 'node20', sourcemap: true, logLevel: 'warning' }).then(() => outfile);
    bundles.set(entry, built);
  }
  return built;
}
const bundles = new Map<string, Promise<string>>();

/**
 * A TypeScript entry point, bundled, under Node with the bench's child hooks (orphan watchdog,
 * on-demand CPU profile; see child-hooks.ts) preloaded.
 */
export async function spawnNode(name: string, script: string, args: string[], opts: SpawnOptions & { nodeArgs?: string[] } = {}): Promise<Child> {
  const [hooks, entry] = await Promise.all([bundle('bench/load/child-hooks.ts'), script === 'bin/guanlink.ts' ? platformBundle() : bundle(script)]);
  return spawnChild(name, process.execPath, [...(opts.nodeArgs ?? []), '--enable-source-maps', '--import', hooks, entry, ...args], opts);
}

/** The platform exactly as `npm start` runs it: `npm run build`'s bundle, dist/guanlink.mjs. */
async function platformBundle(): Promise<string> {
  await import('../../scripts/build.mjs');
  return path.join(ROOT, 'dist', 'guanlink.mjs');
}

/** Ends every process still running (on success, failure or Ctrl-C). */
export async function stopAllChildren(): Promise<void> {
  await Promise.all([...running].map((c) => c.stop(10_000)));
}

/**
 * The first IPC message of a child that `accept` returns a value for. Rejects when the child
 * reports `{type: 'error'}`, exits, or nothing arrives in time.
 */
export function nextMessage<M extends { type: string }, T>(child: Child, accept: (m: M) => T | undefined, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = (fn: () => void) => {
      clearTimeout(timer);
      child.proc.off('message', onMessage);
      child.proc.off('exit', onExit);
      fn();
    };
    const onMessage = (raw: unknown) => {
      const m = raw as M;
      if (m.type === 'error') return done(() => reject(new Error(`${child.name}: ${(m as unknown as { message: string }).message}`)));
      const value = accept(m);
      if (value !== undefined) done(() => resolve(value));
    };
    const onExit = (code: number | null, signal: string | null) => done(() => reject(new Error(`${child.name} exited (${code ?? signal}) while waiting for ${what}`)));
    const timer = setTimeout(() => done(() => reject(new Error(`${child.name}: no ${what} after ${timeoutMs} ms`))), timeoutMs);
    child.proc.on('message', onMessage);
    child.proc.once('exit', onExit);
  });
}

export function send(child: Child, message: unknown): void {
  if (!child.proc.connected) throw new Error(`${child.name} is not connected (exited?)`);
  child.proc.send(message as object);
}
