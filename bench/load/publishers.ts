import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { nextMessage, send, spawnNode, type Child } from './children.ts';
import type { FromPublisher, MqttVersion, Phase, PublisherWorkload, ToPublisher } from './protocol.ts';

const SCRIPT = 'bench/load/publisher.ts';

export interface PhaseResult {
  acked: number;
  sent: number;
  seconds: number;
}

/** A group of publisher processes (publisher.ts), each with its share of the devices, driven together. */
export class Publishers {
  private constructor(
    private readonly children: Child[],
    readonly messages: Record<Phase, number>,
    readonly bytes: Record<Phase, number>,
  ) {}

  /** Writes each process's workload file, starts the processes and waits until each has pre-encoded its packets. */
  static async start(workloads: PublisherWorkload[], dir: string, logFile: string): Promise<Publishers> {
    const children = await Promise.all(
      workloads.map((w, i) => {
        const file = path.join(dir, `publisher-${i}.json`);
        writeFileSync(file, JSON.stringify(w));
        return spawnNode(`publisher ${i}`, SCRIPT, [file], { ipc: true, logFile });
      }),
    );
    const ready = await Promise.all(
      children.map((c) => nextMessage<FromPublisher, Extract<FromPublisher, { type: 'ready' }>>(c, (m) => (m.type === 'ready' ? m : undefined), 120_000, 'ready')),
    );
    const sum = (f: (r: (typeof ready)[number]) => number) => ready.reduce((n, r) => n + f(r), 0);
    return new Publishers(
      children,
      { warmup: sum((r) => r.messages.warmup), main: sum((r) => r.messages.main) },
      { warmup: sum((r) => r.bytes.warmup), main: sum((r) => r.bytes.main) },
    );
  }

  get pids(): number[] {
    return this.children.map((c) => c.pid);
  }

  /** Opens every device's connection (CONNECT with its token, waits for CONNACK 0), speaking MQTT 3.1.1 (4) or 5. */
  async connect(host: string, port: number, clientPrefix: string, mqtt: MqttVersion = 4): Promise<void> {
    await this.all('connected', 300_000, (k) => ({ type: 'connect', host, port, clientPrefix: `${clientPrefix}-p${k}`, concurrency: 32, mqtt }));
  }

  /** Sends one phase's messages with `window` in flight per connection; resolves when every PUBACK is in. */
  async run(phase: Phase, window: number, stallMs = 120_000): Promise<PhaseResult> {
    const started = process.hrtime.bigint();
    const results = await Promise.all(
      this.children.map((c) => {
        const done = nextMessage<FromPublisher, Extract<FromPublisher, { type: 'done' }>>(c, (m) => (m.type === 'done' ? m : undefined), 3_600_000, `${phase} done`);
        const watchdog = stallWatchdog(c, stallMs);
        send(c, { type: 'run', phase, window });
        return Promise.race([done, watchdog.failed]).finally(watchdog.stop);
      }),
    );
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return { acked: results.reduce((n, r) => n + r.acked, 0), sent: results.reduce((n, r) => n + r.sent, 0), seconds };
  }

  async disconnect(): Promise<void> {
    await this.all('disconnected', 60_000, () => ({ type: 'disconnect' }));
  }

  async stop(): Promise<void> {
    await Promise.all(this.children.map((c) => c.stop()));
  }

  private async all(reply: FromPublisher['type'], timeoutMs: number, message: (child: number) => ToPublisher): Promise<void> {
    await Promise.all(
      this.children.map((c, k) => {
        const got = nextMessage<FromPublisher, true>(c, (m) => (m.type === reply ? true : undefined), timeoutMs, reply);
        send(c, message(k));
        return got;
      }),
    );
  }
}

/** Fails when a publisher reports no new PUBACK for `ms` (a stuck broker or database). */
function stallWatchdog(child: Child, ms: number): { failed: Promise<never>; stop: () => void } {
  let last = -1;
  let lastChange = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const onMessage = (m: FromPublisher) => {
    if (m.type === 'progress' && m.acked !== last) {
      last = m.acked;
      lastChange = Date.now();
    }
  };
  child.proc.on('message', onMessage);
  const failed = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      if (Date.now() - lastChange > ms) reject(new Error(`${child.name}: no PUBACK for ${ms / 1000} s (${last} acknowledged)`));
    }, 1000);
  });
  failed.catch(() => {});
  return {
    failed,
    stop: () => {
      clearInterval(timer);
      child.proc.off('message', onMessage);
    },
  };
}
