import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../core/free-port.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const BUNDLE = path.join(ROOT, 'dist', 'guanlink.mjs');

export interface GuanlinkProcess {
  child: ChildProcess;
  httpUrl: string;
  mqttUrl: string;
  httpPort: number;
  mqttPort: number;
  output(): string;
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>;
}

/**
 * Runs the platform as its own process, as `npm start` does (the bundle dist/guanlink.mjs, which
 * `npm test` builds first): tests of start-up, signals, crashes.
 */
export async function spawnGuanlink(
  env: Record<string, string | undefined>,
  args: string[] = ['--no-simulators'],
  ports?: { httpPort: number; mqttPort: number },
  /** Own process group, as a shell runs a command: `process.kill(-pid, 'SIGINT')` is then a terminal's Ctrl-C. */
  options: {
    processGroup?: boolean;
    /** A command that runs node, e.g. ['prlimit', '--nofile=400:400'] (it must exec node: the child's pid is node's). */
    wrap?: string[];
  } = {},
): Promise<GuanlinkProcess> {
  const { httpPort, mqttPort } = ports ?? { httpPort: await freePort(), mqttPort: await freePort() };
  const childEnv: NodeJS.ProcessEnv = {
    ...process.env,
    HOST: '127.0.0.1',
    HTTP_PORT: String(httpPort),
    MQTT_PORT: String(mqttPort),
    LOG_LEVEL: process.env.CHILD_LOG_LEVEL ?? 'info',
    DEVICE_PUBLISH_RATE: 'off', // tests stream faster than the default per-device limit
  };
  delete childEnv.DATABASE_URL;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run npm run build (npm test does it)`);
  const [command, ...prefix] = options.wrap ? [...options.wrap, process.execPath] : [process.execPath];
  const child = spawn(command!, [...prefix, '--enable-source-maps', BUNDLE, ...args], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'], detached: options.processGroup ?? false });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return { child, httpUrl: `http://127.0.0.1:${httpPort}`, mqttUrl: `mqtt://127.0.0.1:${mqttPort}`, httpPort, mqttPort, output: () => out, exited };
}

/** Waits until /readyz answers 200, failing early if the process exits. */
export async function waitReady(p: GuanlinkProcess, timeoutMs = 60_000): Promise<number> {
  const started = Date.now();
  let exited: number | string | undefined;
  void p.exited.then((code) => (exited = code));
  while (Date.now() - started < timeoutMs) {
    if (exited !== undefined) throw new Error(`guanlink exited (${exited}) before it was ready:\n${p.output()}`);
    try {
      const res = await fetch(`${p.httpUrl}/readyz`);
      if (res.status === 200) return Date.now() - started;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`guanlink not ready after ${timeoutMs} ms:\n${p.output()}`);
}
