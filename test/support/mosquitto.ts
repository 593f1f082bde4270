import { spawn, type ChildProcess } from 'node:child_process';

/**
 * Debian's mosquitto clients (mosquitto_pub, mosquitto_sub; package mosquitto-clients) as an
 * independent MQTT implementation: the platform must work with them as with mqtt.js.
 */

export interface MosquittoResult {
  /** Exit code (null when killed by a signal). */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Killed because it outlived its time limit. */
  timedOut: boolean;
}

export interface MosquittoProcess {
  child: ChildProcess;
  /** stdout and stderr so far. */
  output(): string;
  /** Resolves once the output matches `pattern`; rejects after `timeoutMs` or if the process exits first. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  /** Resolves when the process has exited (or was killed at its time limit). */
  exited: Promise<MosquittoResult>;
  /** Ends it (SIGTERM) and waits for the exit. */
  stop(): Promise<MosquittoResult>;
}

/** Starts mosquitto_pub or mosquitto_sub; killed (SIGKILL) if still running after `timeoutMs`. */
export function startMosquitto(command: 'mosquitto_pub' | 'mosquitto_sub', args: string[], options: { timeoutMs?: number } = {}): MosquittoProcess {
  // Line-buffered output (stdbuf), so a test sees -d debug lines (CONNACK, SUBACK…) as they happen.
  const child = spawn('stdbuf', ['-oL', '-eL', command, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  const waiters = new Set<() => void>();
  const changed = () => {
    for (const w of waiters) w();
  };
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    changed();
  });
  child.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    changed();
  });
  const limit = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, options.timeoutMs ?? 15_000);
  const exited = new Promise<MosquittoResult>((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(limit);
      reject(new Error(`${command} could not be started (Debian: apt-get install mosquitto-clients): ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(limit);
      changed();
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
  let done = false;
  void exited.then(
    () => (done = true),
    () => (done = true),
  );
  const output = () => stdout + stderr;
  return {
    child,
    output,
    exited,
    waitFor(pattern, timeoutMs = 10_000) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (pattern.test(output())) finish(resolve);
          else if (done) finish(() => reject(new Error(`${command} exited before printing ${pattern}:\n${output()}`)));
        };
        const timer = setTimeout(() => finish(() => reject(new Error(`${command} did not print ${pattern} within ${timeoutMs} ms:\n${output()}`))), timeoutMs);
        const finish = (settle: () => void) => {
          clearTimeout(timer);
          waiters.delete(check);
          settle();
        };
        waiters.add(check);
        check();
      });
    },
    async stop() {
      if (!done) child.kill('SIGTERM');
      return exited;
    },
  };
}

/** Runs mosquitto_pub or mosquitto_sub to completion (bounded by `timeoutMs`). */
export function runMosquitto(command: 'mosquitto_pub' | 'mosquitto_sub', args: string[], options: { timeoutMs?: number } = {}): Promise<MosquittoResult> {
  return startMosquitto(command, args, options).exited;
}
