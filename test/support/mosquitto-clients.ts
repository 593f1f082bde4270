import { spawn } from 'node:child_process';

/**
 * Debian's Mosquitto clients (mosquitto_pub, mosquitto_sub, mosquitto_rr) driven at the level of
 * the device API: publish a message, collect what a subscription receives, ask and wait for an
 * answer. (`mosquitto.ts` beside it starts the clients with raw arguments.) Every run is bounded:
 * the clients' own timeouts (-W) plus a hard kill, so a test never hangs on a client.
 */

export interface MosquittoTarget {
  port: number;
  host?: string;
  /** The device's access token (MQTT username). */
  username?: string;
  password?: string;
  clientId?: string;
  /** The MQTT version the client speaks (-V): 3.1.1 unless told. */
  protocol?: 'mqttv311' | 'mqttv5';
}

export interface MosquittoMessage {
  topic: string;
  payload: string;
  qos: number;
}

export interface MosquittoRunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The hard kill fired (the client outlived its own timeout). */
  killed: boolean;
  /** Messages received (mosquitto_sub, mosquitto_rr), in order. */
  messages: MosquittoMessage[];
}

export interface MosquittoRun {
  /** Resolves once the client has its SUBACK (mosquitto_sub, mosquitto_rr); rejects if it exits first. */
  subscribed: Promise<void>;
  done: Promise<MosquittoRunResult>;
  /** Ends the client now (SIGTERM). */
  stop(): void;
}

function connectArgs(target: MosquittoTarget): string[] {
  const args = ['-h', target.host ?? '127.0.0.1', '-p', String(target.port), '-V', target.protocol ?? 'mqttv311'];
  if (target.username !== undefined) args.push('-u', target.username);
  if (target.password !== undefined) args.push('-P', target.password);
  if (target.clientId !== undefined) args.push('-i', target.clientId);
  return args;
}

/** Output lines of `-F %j` (one JSON object per message); debug lines (-d) are skipped. */
function parseMessages(stdout: string): MosquittoMessage[] {
  const messages: MosquittoMessage[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.startsWith('{"tst"')) continue;
    const m = JSON.parse(line) as { topic: string; payload?: string; qos: number };
    messages.push({ topic: m.topic, payload: m.payload ?? '', qos: m.qos });
  }
  return messages;
}

function run(command: string, args: string[], options: { stdin?: string | Buffer; killAfterMs: number }): MosquittoRun {
  // Line-buffered output: through a pipe the clients hold their debug lines (the SUBACK) until they exit.
  const child = spawn('stdbuf', ['-oL', '-eL', command, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let killed = false;
  let onSubscribed: (() => void) | undefined;
  let onExitEarly: ((err: Error) => void) | undefined;
  const subscribed = new Promise<void>((resolve, reject) => {
    onSubscribed = resolve;
    onExitEarly = reject;
  });
  subscribed.catch(() => {}); // a caller not waiting for it must not see an unhandled rejection
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
    if (/received SUBACK/.test(stdout)) onSubscribed?.();
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdin.on('error', () => {}); // the client may exit before reading its input
  child.stdin.end(options.stdin ?? '');
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, options.killAfterMs);
  const done = new Promise<MosquittoRunResult>((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(timer);
      onExitEarly?.(err);
      reject(new Error(`${command} could not be started (Debian: apt-get install mosquitto-clients coreutils): ${err.message}`));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      onExitEarly?.(new Error(`${command} exited (${code ?? signal}) before subscribing: ${stderr.trim() || stdout.trim()}`));
      resolve({ code, signal, stdout, stderr, killed, messages: parseMessages(stdout) });
    });
  });
  return { subscribed, done, stop: () => void child.kill('SIGTERM') };
}

/**
 * mosquitto_pub: publishes one message (`null` sends an empty one, -n) and disconnects; exit code
 * 0 once the broker acknowledged it (QoS 1). The message goes through stdin (-s), never the command line.
 */
export function mosquittoPub(
  target: MosquittoTarget,
  message: { topic: string; payload: string | Buffer | null; qos?: 0 | 1; timeoutMs?: number },
): Promise<MosquittoRunResult> {
  const args = [...connectArgs(target), '-t', message.topic, '-q', String(message.qos ?? 1)];
  if (message.payload === null) args.push('-n');
  else args.push('-s');
  return run('mosquitto_pub', args, { stdin: message.payload ?? undefined, killAfterMs: message.timeoutMs ?? 10_000 }).done;
}

/**
 * mosquitto_sub: subscribes to `topics` and collects messages until `count` arrived (-C) or
 * `waitSeconds` passed (-W). Await `subscribed` before causing the messages.
 */
export function mosquittoSub(target: MosquittoTarget, options: { topics: string[]; count?: number; waitSeconds?: number; qos?: 0 | 1 }): MosquittoRun {
  const wait = options.waitSeconds ?? 5;
  const args = [...connectArgs(target), '-d', '-F', '%j', '-q', String(options.qos ?? 1), '-W', String(wait)];
  for (const t of options.topics) args.push('-t', t);
  if (options.count !== undefined) args.push('-C', String(options.count));
  return run('mosquitto_sub', args, { killAfterMs: wait * 1000 + 5000 });
}

/**
 * mosquitto_rr (MQTT 3.1.1 unless `target.protocol`): subscribes to `responseTopic` (no wildcards: the exact response
 * topic, e.g. `v1/devices/me/attributes/response/7`), then publishes `payload` to `topic` over the
 * same connection and waits (at most `waitSeconds`) for one message: a request and its response,
 * or a refused publish and its explanation on the errors topic.
 */
export function mosquittoRr(
  target: MosquittoTarget,
  request: { topic: string; responseTopic: string; payload: string | null; qos?: 0 | 1; waitSeconds?: number },
): Promise<MosquittoRunResult> {
  const wait = request.waitSeconds ?? 5;
  const args = [...connectArgs(target), '-d', '-F', '%j', '-q', String(request.qos ?? 1), '-W', String(wait), '-t', request.topic, '-e', request.responseTopic];
  // mosquitto_rr does not read stdin (-s): the message goes on the command line (< 128 KiB per argument).
  if (request.payload === null) args.push('-n');
  else args.push('-m', request.payload);
  return run('mosquitto_rr', args, { killAfterMs: wait * 1000 + 5000 }).done;
}
