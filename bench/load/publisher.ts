/**
 * A load-generator process: one raw TCP connection per device, pre-encoded QoS 1 PUBLISH packets,
 * at most `window` unacknowledged messages per connection (PUBACKs free slots; see pump).
 * Driven by bench/ingest.ts over IPC (protocol.ts). Usage: publisher.ts <workload.json>
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { AckReader, DISCONNECT, connectPacket, encodePublishes, type PublishStream } from './mqtt-wire.ts';
import type { FromPublisher, MqttVersion, Phase, PublisherWorkload, ToPublisher } from './protocol.ts';

const PHASES: Phase[] = ['warmup', 'main'];

interface Connection {
  socket: net.Socket;
  reader: AckReader;
  streams: Record<Phase, PublishStream>;
  /** The phase being sent: next message to send and PUBACKs received so far. */
  current?: { stream: PublishStream; next: number; acked: number };
  onConnack?: (code: number) => void;
}

const send = (m: FromPublisher) => process.send!(m);
const fail = (message: string) => {
  send({ type: 'error', message });
  setTimeout(() => process.exit(1), 100);
};

const workload = JSON.parse(readFileSync(process.argv[2]!, 'utf8')) as PublisherWorkload;
/** Each device's packets, encoded for one MQTT version (3.1.1 at start; 5 once asked, then kept). */
const encode = (version: MqttVersion) =>
  workload.devices.map((d) => ({
    token: d.token,
    streams: {
      warmup: encodePublishes(workload.topic, d.payloads.warmup, 0, version),
      main: encodePublishes(workload.topic, d.payloads.main, d.payloads.warmup.length, version),
    },
  }));
const encoded = new Map<MqttVersion, ReturnType<typeof encode>>([[4, encode(4)]]);
const streams = encoded.get(4)!;
const streamsFor = (version: MqttVersion) => encoded.get(version) ?? encoded.set(version, encode(version)).get(version)!;
let connections: Connection[] = [];
let closing = false;
let window = 1;
let running: { phase: Phase; remaining: number; acked: number; resolve: () => void } | undefined;

/**
 * Tops the connection's window up again once at least half of it is free (or the phase's last
 * messages are due): a write carries ≥ window/2 messages, so a broker that acknowledges each
 * message in its own segment (Mosquitto) does not make the generator pay a write per message.
 */
function pump(c: Connection): void {
  const cur = c.current!;
  const free = window - (cur.next - cur.acked);
  const n = Math.min(free, cur.stream.count - cur.next);
  if (n <= 0 || (free < Math.ceil(window / 2) && n === free)) return;
  c.socket.write(cur.stream.buf.subarray(cur.stream.offsets[cur.next], cur.stream.offsets[cur.next + n]));
  cur.next += n;
}

function onData(c: Connection, chunk: Buffer): void {
  const incoming = c.reader.read(chunk);
  if (incoming.connack !== undefined) c.onConnack?.(incoming.connack);
  if (incoming.refused > 0) return fail(`${incoming.refused} PUBACK(s) with a failure reason code`);
  if (incoming.pubacks === 0) return;
  const cur = c.current;
  if (!cur || !running || cur.acked + incoming.pubacks > cur.next) return fail('PUBACK for a message that was not sent');
  cur.acked += incoming.pubacks;
  running.acked += incoming.pubacks;
  if (cur.acked === cur.stream.count) {
    if (--running.remaining === 0) running.resolve();
  } else pump(c);
}

function open(host: string, port: number, clientId: string, token: string, s: Record<Phase, PublishStream>, version: MqttVersion): Promise<Connection> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, noDelay: true });
    const c: Connection = { socket, reader: new AckReader(), streams: s };
    c.onConnack = (code) => {
      c.onConnack = undefined;
      if (code === 0) resolve(c);
      else reject(new Error(`CONNACK ${code} for ${clientId}`));
    };
    socket.on('connect', () => socket.write(connectPacket(clientId, token, version)));
    socket.on('data', (chunk: Buffer) => onData(c, chunk));
    socket.on('error', (err) => {
      if (c.onConnack) reject(err);
      else if (!closing) fail(`${clientId}: ${err.message}`);
    });
    socket.on('close', () => {
      if (c.onConnack) reject(new Error(`${clientId}: closed before CONNACK`));
      else if (!closing) fail(`${clientId}: connection closed by the broker`);
    });
  });
}

async function connectAll(m: Extract<ToPublisher, { type: 'connect' }>): Promise<void> {
  closing = false;
  connections = new Array(streams.length);
  const packets = streamsFor(m.mqtt);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < packets.length; i = next++) {
      connections[i] = await open(m.host, m.port, `${m.clientPrefix}-${i}`, packets[i]!.token, packets[i]!.streams, m.mqtt);
    }
  };
  await Promise.all(Array.from({ length: m.concurrency }, worker));
  send({ type: 'connected', connections: connections.length });
}

async function run(phase: Phase, w: number): Promise<void> {
  window = w;
  const active = connections.filter((c) => c.streams[phase].count > 0);
  const done = new Promise<void>((resolve) => (running = { phase, remaining: active.length, acked: 0, resolve }));
  const progress = setInterval(() => send({ type: 'progress', acked: running!.acked }), 1000);
  for (const c of connections) c.current = { stream: c.streams[phase], next: 0, acked: 0 };
  for (const c of active) pump(c);
  if (active.length === 0) running!.resolve();
  await done;
  clearInterval(progress);
  const sent = connections.reduce((n, c) => n + c.current!.next, 0);
  send({ type: 'done', phase, sent, acked: running!.acked });
  running = undefined;
}

async function disconnectAll(): Promise<void> {
  closing = true;
  await Promise.all(
    connections.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.socket.destroyed) return resolve();
          const timer = setTimeout(() => c.socket.destroy(), 5000);
          c.socket.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
          c.socket.end(DISCONNECT);
        }),
    ),
  );
  connections = [];
  send({ type: 'disconnected' });
}

process.on('disconnect', () => process.exit(0)); // the benchmark is gone
process.on('message', (raw) => {
  const m = raw as ToPublisher;
  const task = m.type === 'connect' ? connectAll(m) : m.type === 'run' ? run(m.phase, m.window) : disconnectAll();
  task.catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
});
send({
  type: 'ready',
  devices: streams.length,
  messages: Object.fromEntries(PHASES.map((p) => [p, streams.reduce((n, s) => n + s.streams[p].count, 0)])) as Record<Phase, number>,
  bytes: Object.fromEntries(PHASES.map((p) => [p, streams.reduce((n, s) => n + s.streams[p].buf.length, 0)])) as Record<Phase, number>,
});
