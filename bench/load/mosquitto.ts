import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { freePort } from '../../core/free-port.ts';
import { spawnChild, type Child } from './children.ts';

/** Part (c)(ii): Debian's Mosquitto 2 on the same load, with an explicit configuration. */

/** BENCH_MOSQUITTO, else `mosquitto` on PATH or in /usr/sbin; undefined when not installed (or BENCH_MOSQUITTO=none). */
export function findMosquitto(): string | undefined {
  if (process.env.BENCH_MOSQUITTO === 'none') return undefined;
  const candidates = [process.env.BENCH_MOSQUITTO, ...(process.env.PATH ?? '').split(':').map((d) => path.join(d, 'mosquitto')), '/usr/sbin/mosquitto'];
  return candidates.find((c): c is string => !!c && existsSync(c));
}

export function mosquittoVersion(bin: string): string {
  try {
    execFileSync(bin, ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  } catch (err) {
    // `-h` prints the usage and exits 3
    const out = String((err as { stdout?: string }).stdout ?? '');
    const m = /mosquitto version (\S+)/.exec(out);
    if (m) return m[1]!;
  }
  return 'unknown';
}

/**
 * Fan-in needs no subscriber, so the queue and in-flight limits (which apply to messages going
 * out to subscribers) do not bite here; they are set anyway so that nothing depends on Mosquitto's
 * defaults (20 in flight, 1000 queued, which drop QoS 1 messages silently when a subscriber exists).
 */
export function mosquittoConfig(port: number): string {
  return [
    '# written by bench/ingest.ts: QoS 1 fan-in, no subscribers, nothing stored',
    'per_listener_settings false',
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    'max_connections -1',
    'max_inflight_messages 0',
    'max_queued_messages 0',
    'set_tcp_nodelay true',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    '',
  ].join('\n');
}

export async function startMosquitto(bin: string, dir: string, logFile: string): Promise<{ child: Child; port: number }> {
  const port = await freePort();
  const conf = path.join(dir, 'mosquitto.conf');
  writeFileSync(conf, mosquittoConfig(port));
  const child = spawnChild('mosquitto', bin, ['-c', conf], { logFile });
  await waitForPort(port, child, 10_000);
  return { child, port };
}

async function waitForPort(port: number, child: Child, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited: number | string | undefined;
  void child.exited.then((c) => (exited = c));
  while (Date.now() < deadline) {
    if (exited !== undefined) throw new Error(`${child.name} exited (${exited}) before listening`);
    const open = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (open) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${child.name} not listening on ${port} after ${timeoutMs} ms`);
}
