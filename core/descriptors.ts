import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { Server } from 'node:net';
import type { Logger } from './log.ts';

/**
 * File descriptors: every MQTT connection, HTTP connection, database connection, pipe and open
 * file takes one, and the process may hold at most its open-file limit (`ulimit -n`, systemd's
 * `LimitNOFILE=`). At that limit the kernel refuses new ones (EMFILE), and libuv then accepts
 * and closes new connections unanswered (its reserve-descriptor trick): nobody can connect, and
 * JavaScript never sees a failed accept. So the limit is shared out at start — the connection
 * budget — and the MQTT broker and the HTTP server each stay inside their share.
 */
export interface DescriptorLimits {
  /** The soft limit: what the kernel enforces (Infinity: unlimited). */
  soft: number;
  /** The hard limit: how far an unprivileged process may raise its soft limit. */
  hard: number;
}

/** The process's open-file limits from /proc/self/limits; undefined where there is none (not Linux). */
export function readDescriptorLimits(file = '/proc/self/limits'): DescriptorLimits | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const m = line && /^Max open files\s+(\S+)\s+(\S+)/.exec(line);
  if (!m) return undefined;
  const value = (v: string) => (v === 'unlimited' ? Infinity : Number(v));
  const soft = value(m[1]!);
  const hard = value(m[2]!);
  return Number.isNaN(soft) || Number.isNaN(hard) ? undefined : { soft, hard };
}

export interface RaiseResult {
  before: DescriptorLimits | undefined;
  after: DescriptorLimits | undefined;
  /** What was done, for the log: raised, already at the hard limit, or why not. */
  note: string;
}

/**
 * Raises the soft open-file limit to the hard limit, as far as the platform allows. Node has no
 * setrlimit; on Linux, util-linux's `prlimit --pid <own pid>` sets the limits of this very
 * process (prlimit(2): an unprivileged process may raise its soft limit up to its hard limit).
 * Node itself already tries this when it starts, so usually there is nothing left to do.
 */
export async function raiseDescriptorLimit(): Promise<RaiseResult> {
  const before = readDescriptorLimits();
  if (!before) return { before, after: before, note: 'no /proc/self/limits on this platform: limits left as they are' };
  if (before.soft >= before.hard) return { before, after: before, note: 'the soft limit is the hard limit (Node.js raises it when it starts, where it can)' };
  // An unlimited hard limit is not a value the kernel accepts for RLIMIT_NOFILE: fs.nr_open is the ceiling.
  let target = before.hard;
  if (target === Infinity) {
    try {
      target = Number(readFileSync('/proc/sys/fs/nr_open', 'utf8').trim());
    } catch {
      target = 1_048_576;
    }
  }
  try {
    await promisify(execFile)('prlimit', ['--pid', String(process.pid), `--nofile=${target}:${before.hard === Infinity ? 'unlimited' : before.hard}`], { timeout: 5000 });
  } catch (err) {
    const reason = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'prlimit is not installed (Debian: util-linux)' : `prlimit failed: ${(err as Error).message.split('\n')[0]}`;
    return { before, after: readDescriptorLimits(), note: `${reason}; carrying on with the soft limit` };
  }
  const after = readDescriptorLimits();
  return { before, after, note: after && after.soft > before.soft ? `soft limit raised from ${before.soft} to ${after.soft}` : 'prlimit left the soft limit unchanged' };
}

/** Descriptors kept back for what is not a client connection: listeners, logs, pipes, the embedded database, files, DNS, worker threads. */
export const OTHER_DESCRIPTORS = 256;
/** Connections beyond the MQTT budget held just long enough to answer their CONNECT with CONNACK 3. */
export const REFUSAL_SLOTS = 32;

export interface ConnectionBudget {
  /** The soft open-file limit it is derived from (Infinity: unlimited or unknown). */
  limit: number;
  /** MQTT connections (TCP, TLS and WebSocket) held at once: min(MQTT_MAX_CONNECTIONS, what the limit leaves). */
  mqtt: number;
  /** HTTP connections held at once (REST, socket.io, MQTT over WebSocket): min(HTTP_MAX_CONNECTIONS, what the limit leaves). */
  http: number;
  /** Database connections (the pool's maximum). */
  database: number;
  /** Descriptors for everything else (OTHER_DESCRIPTORS, less under a very low limit). */
  other: number;
  /** MQTT connections beyond `mqtt` that may be held briefly to be refused with CONNACK 3. */
  refusalSlots: number;
  /** Set when the limit is too low for the configured maxima: what to raise. */
  warning?: string;
}

/**
 * Shares the open-file limit out: the database pool and OTHER_DESCRIPTORS first, then HTTP
 * connections (HTTP_MAX_CONNECTIONS, at most a quarter of what is left), then MQTT
 * (MQTT_MAX_CONNECTIONS, at most the rest, less REFUSAL_SLOTS). Held to these, MQTT and HTTP
 * together never take the last descriptor, and neither can starve the other.
 */
export function connectionBudget(opts: { limit: number; maxMqtt: number; maxHttp: number; databasePool: number }): ConnectionBudget {
  const { limit, maxMqtt, maxHttp, databasePool } = opts;
  if (!Number.isFinite(limit)) return { limit, mqtt: maxMqtt, http: maxHttp, database: databasePool, other: OTHER_DESCRIPTORS, refusalSlots: REFUSAL_SLOTS };
  const other = Math.min(OTHER_DESCRIPTORS, Math.floor(limit / 8));
  const refusalSlots = Math.min(REFUSAL_SLOTS, Math.floor(limit / 32));
  const left = Math.max(0, limit - databasePool - other - refusalSlots);
  const http = Math.max(1, Math.min(maxHttp, Math.floor(left / 4), left));
  const mqtt = Math.max(1, Math.min(maxMqtt, left - http));
  const budget: ConnectionBudget = { limit, mqtt, http, database: databasePool, other, refusalSlots };
  const wantMqtt = Math.min(maxMqtt, 1_048_576);
  if (mqtt < wantMqtt || http < maxHttp) {
    const needed = databasePool + OTHER_DESCRIPTORS + REFUSAL_SLOTS + maxHttp + wantMqtt;
    budget.warning = `the open-file limit ${limit} allows ${mqtt} MQTT and ${http} HTTP connections (configured: ${maxMqtt} and ${maxHttp}); raise it to ${needed} (ulimit -n, or LimitNOFILE= in the systemd unit) for the configured maxima`;
  }
  return budget;
}

/**
 * Watches for the process running out of descriptors, which libuv otherwise hides (new
 * connections accepted and closed unanswered): once a second it opens and closes /dev/null; when
 * that fails with EMFILE or ENFILE the process is at its limit. Each such second is counted
 * (`onExhausted`) and logged, at most once per `logEveryMs`, with what holds the descriptors.
 */
export class DescriptorWatch {
  private timer: NodeJS.Timeout | undefined;
  private lastLog = 0;
  private unlogged = 0;
  private probing = false;

  constructor(
    private readonly opts: {
      log: Logger;
      limit: number;
      onExhausted: () => void;
      /** What holds descriptors now, for the log line (MQTT and HTTP connections…). */
      holders: () => Record<string, number>;
      intervalMs?: number;
      logEveryMs?: number;
    },
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.probe(), this.opts.intervalMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One probe: resolves true when the process is at its descriptor limit. */
  async probe(): Promise<boolean> {
    if (this.probing) return false;
    this.probing = true;
    try {
      const handle = await open('/dev/null', 'r');
      await handle.close();
      return false;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EMFILE' && code !== 'ENFILE') return false;
      this.exhausted(code);
      return true;
    } finally {
      this.probing = false;
    }
  }

  private exhausted(code: string): void {
    this.opts.onExhausted();
    const now = Date.now();
    if (now - this.lastLog < (this.opts.logEveryMs ?? 10_000)) {
      this.unlogged++;
      return;
    }
    this.opts.log.error(
      { code, limit: this.opts.limit, ...this.opts.holders(), suppressed: this.unlogged },
      'out of file descriptors: new connections are accepted and closed unanswered, files cannot be opened; raise the open-file limit (ulimit -n, LimitNOFILE=) or lower MQTT_MAX_CONNECTIONS / HTTP_MAX_CONNECTIONS',
    );
    this.lastLog = now;
    this.unlogged = 0;
  }
}

/**
 * A listener's accept errors. libuv hides EMFILE/ENFILE behind its reserve descriptor; when even
 * that is gone, Node reports the failed accept as the server's 'error' event, which would end the
 * process with nobody listening for it. Each is counted and logged (at most once per
 * `logEveryMs`, with the number left out); the listener carries on (libuv does not retry in a
 * loop: the pending connection was taken off the queue).
 */
export function watchAcceptErrors(server: Server, listener: string, opts: { log: Logger; count: (listener: string, code: string) => void; logEveryMs?: number }): void {
  let lastLog = 0;
  let unlogged = 0;
  server.on('error', (err: NodeJS.ErrnoException) => {
    const code = err.code ?? 'unknown';
    opts.count(listener, code);
    const now = Date.now();
    if (now - lastLog < (opts.logEveryMs ?? 10_000)) {
      unlogged++;
      return;
    }
    opts.log.error({ listener, code, err: err.message, suppressed: unlogged }, `${listener}: accepting a connection failed`);
    lastLog = now;
    unlogged = 0;
  });
}
