import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../db/embedded.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

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

/** Runs `bin/guanlink.ts` as its own process, as an operator would (tests of start-up, signals, crashes). */
export async function spawnGuanlink(env: Record<string, string | undefined>, args: string[] = ['--no-simulators']): Promise<GuanlinkProcess> {
  const [httpPort, mqttPort] = [await freePort(), await freePort()];
  const childEnv: NodeJS.ProcessEnv = { ...process.env, HOST: '127.0.0.1', HTTP_PORT: String(httpPort), MQTT_PORT: String(mqttPort), LOG_LEVEL: 'info' };
  delete childEnv.DATABASE_URL;
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) delete childEnv[k];
    else childEnv[k] = v;
  }
  const child = spawn(process.execPath, ['--import', 'tsx', 'bin/guanlink.ts', ...args], { cwd: ROOT, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] });
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
