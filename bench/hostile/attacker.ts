/**
 * The hostile side of bench:hostile, in its own process so that its work never delays the
 * measurements of the main process. Driven over IPC: `{type: 'phase', phase, durationMs}` runs one
 * hostile set against the platform until the duration is over and answers `{type: 'done', report}`.
 * Usage: attacker.ts <httpUrl> <mqttPort> <adminKey>
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { createRng } from '../../simulators/random.ts';
import { hostileRequests, type HostileRequest } from './hostile-requests.ts';

export type AttackPhase = 'polygons' | 'fuzz' | 'flood' | 'ws-frames' | 'slow-http';
export type ToAttacker = { type: 'phase'; phase: AttackPhase; durationMs: number } | { type: 'exit' };
export interface AttackReport {
  requests: number;
  /** HTTP statuses seen (0: the connection failed). */
  statuses: Record<string, number>;
  fivexx: number;
  /** Examples of the 5xx answers, to find their cause. */
  fivexxExamples: string[];
  /** Connections the server accepted and held, refused, or closed on us (flood, ws, slow clients). */
  connections: { opened: number; refused: number; closedByServer: number };
  note: string;
}

const [httpUrl, mqttPortText, adminKey] = process.argv.slice(2) as [string, string, string];
const mqttPort = Number(mqttPortText);
const send = (m: unknown) => process.send!(m);

const emptyReport = (): AttackReport => ({ requests: 0, statuses: {}, fivexx: 0, fivexxExamples: [], connections: { opened: 0, refused: 0, closedByServer: 0 }, note: '' });

async function request(report: AttackReport, r: HostileRequest): Promise<void> {
  let status = 0;
  try {
    const res = await fetch(`${httpUrl}${r.path}`, {
      method: r.method,
      headers: { authorization: `Bearer ${adminKey}`, ...(r.contentType ? { 'content-type': r.contentType } : {}) },
      body: r.body as BodyInit | undefined,
      signal: AbortSignal.timeout(60_000),
    });
    status = res.status;
    const text = await res.text();
    if (status >= 500 && report.fivexxExamples.length < 10) report.fivexxExamples.push(`${r.method} ${r.path.slice(0, 160)} → ${status} ${text.slice(0, 200)}`);
  } catch {
    status = 0;
  }
  report.requests++;
  report.statuses[status] = (report.statuses[status] ?? 0) + 1;
  if (status >= 500) report.fivexx++;
}

/** Runs `next()` requests `concurrency` at a time until the deadline. */
async function loop(report: AttackReport, deadline: number, concurrency: number, next: () => HostileRequest): Promise<void> {
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < deadline) await request(report, next());
    }),
  );
}

// Legal but heavy areas: a polygon at the documented vertex limit, and a MultiPolygon of 500 small squares.
function bigPolygon(vertices = 9_999): unknown {
  const ring: number[][] = [];
  for (let i = 0; i < vertices - 1; i++) {
    const a = (2 * Math.PI * i) / (vertices - 1);
    const r = 0.2 + 0.02 * Math.sin(a * 37); // a wavy ring over the city centre
    ring.push([113.75 + r * Math.cos(a), 22.95 + r * Math.sin(a)]);
  }
  ring.push(ring[0]!);
  return { type: 'Polygon', coordinates: [ring] };
}
function manySquares(n = 500): unknown {
  const polys: number[][][][] = [];
  for (let i = 0; i < n; i++) {
    const x = 113.55 + (i % 25) * 0.028;
    const y = 22.7 + Math.floor(i / 25) * 0.022;
    polys.push([[[x, y], [x + 0.01, y], [x + 0.01, y + 0.01], [x, y + 0.01], [x, y]]]);
  }
  return { type: 'MultiPolygon', coordinates: polys };
}

async function polygons(report: AttackReport, deadline: number): Promise<void> {
  const areas = [bigPolygon(), manySquares()];
  const from = new Date(Date.now() - 24 * 3_600_000).toISOString();
  const routes = ['latest', 'history', 'aggregate', 'export'];
  let i = 0;
  await loop(report, deadline, 4, () => {
    const route = routes[i % routes.length]!;
    const geometry = areas[Math.floor(i / routes.length) % areas.length];
    i++;
    const extra = route === 'aggregate' ? { key: 'water_level', resolution: 7 } : route === 'export' ? { format: 'ndjson' } : {};
    return { method: 'POST', path: `/api/v1/spatial/${route}`, contentType: 'application/json', body: JSON.stringify({ geometry, from, ...extra }) };
  });
  report.note = `${routes.length} routes × a ${9_999}-vertex polygon and a 500-part MultiPolygon, 4 at a time`;
}

async function fuzz(report: AttackReport, deadline: number): Promise<void> {
  const doc = (await (await fetch(`${httpUrl}/api/v1/openapi.json`)).json()) as Parameters<typeof hostileRequests>[0];
  const all = hostileRequests(doc, createRng(10));
  let i = 0;
  await loop(report, deadline, 8, () => all[i++ % all.length]!);
  report.note = `${all.length} hostile requests generated from the OpenAPI document, 8 at a time`;
}

/** Anonymous MQTT connections (provisioning username, keepalive 0) that never send a request, from several source addresses. */
async function flood(report: AttackReport, deadline: number, target: number): Promise<void> {
  const sockets: net.Socket[] = [];
  const connectPacket = (clientId: string) => {
    const id = Buffer.from(clientId);
    const user = Buffer.from('provision');
    const body = Buffer.concat([
      Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0x82, 0, 0]), // MQTT 3.1.1, clean session + username, keepalive 0
      Buffer.from([id.length >> 8, id.length & 255]),
      id,
      Buffer.from([user.length >> 8, user.length & 255]),
      user,
    ]);
    return Buffer.concat([Buffer.from([0x10, body.length]), body]);
  };
  let n = 0;
  while (n < target && Date.now() < deadline) {
    const batch = Math.min(200, target - n);
    await Promise.all(
      Array.from({ length: batch }, (_, k) => {
        const index = n + k;
        return new Promise<void>((resolve) => {
          const socket = net.connect({ host: '127.0.0.1', port: mqttPort, localAddress: `127.0.0.${2 + (index % 50)}` });
          let settled = false;
          const done = () => {
            if (!settled) (settled = true), resolve();
          };
          socket.once('connect', () => socket.write(connectPacket(`flood-${index}`)));
          socket.once('data', (d: Buffer) => {
            if (d[0] === 0x20 && d[3] === 0) {
              report.connections.opened++;
              sockets.push(socket);
            } else report.connections.refused++;
            done();
          });
          socket.once('close', () => {
            if (!settled) report.connections.refused++;
            else report.connections.closedByServer++;
            done();
          });
          socket.on('error', () => {});
          setTimeout(done, 10_000).unref();
        });
      }),
    );
    n += batch;
  }
  report.note = `${target} anonymous connections tried from 50 source addresses, held until the phase ends`;
  while (Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  for (const s of sockets) s.destroy();
}

/**
 * WebSocket clients on /mqtt each sending one 95 MiB frame before CONNECT, as an attacker would:
 * the frame header announces 95 MiB, then the payload streams from one reused 64 KiB chunk until
 * the server closes (RFC 6455 §5.2 framing, masked as a client must). Building whole masked
 * frames with a WebSocket library would cost this process ~1 GB, on the server's own machine.
 */
async function wsFrames(report: AttackReport, deadline: number): Promise<void> {
  const FRAME_BYTES = 95 * 1024 * 1024;
  const chunk = Buffer.alloc(64 * 1024, 0x10);
  const { hostname, port } = new URL(httpUrl);
  const oneClient = () =>
    new Promise<void>((resolve) => {
      const socket = net.connect(Number(port), hostname);
      let upgraded = false;
      let sent = 0;
      const pump = () => {
        while (!socket.destroyed && sent < FRAME_BYTES) {
          sent += chunk.length;
          if (!socket.write(chunk)) return void socket.once('drain', pump);
        }
      };
      socket.on('connect', () => {
        socket.write(
          `GET /mqtt HTTP/1.1\r\nHost: ${hostname}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n`,
        );
      });
      socket.on('data', (data: Buffer) => {
        if (upgraded || !data.toString('latin1').startsWith('HTTP/1.1 101')) return;
        upgraded = true;
        report.connections.opened++;
        const header = Buffer.alloc(14);
        header[0] = 0x82; // FIN, binary
        header[1] = 0x80 | 127; // masked, 64-bit length follows
        header.writeBigUInt64BE(BigInt(FRAME_BYTES), 2);
        randomBytes(4).copy(header, 10); // the masking key
        socket.write(header);
        pump();
      });
      socket.on('close', () => {
        if (upgraded) report.connections.closedByServer++;
        resolve();
      });
      socket.on('error', () => {});
      setTimeout(() => {
        socket.destroy();
        resolve();
      }, Math.max(0, deadline - Date.now())).unref();
    });
  await Promise.all(Array.from({ length: 8 }, oneClient));
  report.note = '8 WebSocket clients, one 95 MiB frame each (streamed)';
  while (Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
}

/** Slow HTTP clients: trickled provisioning bodies, abandoned unknown upgrades, trickled headers. */
async function slowHttp(report: AttackReport, deadline: number): Promise<void> {
  const { hostname, port } = new URL(httpUrl);
  const sockets: net.Socket[] = [];
  const open = (first: string, trickle: string | undefined) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    socket.on('error', () => {});
    socket.once('connect', () => {
      report.connections.opened++;
      socket.write(first);
    });
    socket.once('close', () => report.connections.closedByServer++);
    if (trickle) {
      const timer = setInterval(() => (socket.writable ? socket.write(trickle) : clearInterval(timer)), 1000);
      timer.unref();
      socket.once('close', () => clearInterval(timer));
    }
    sockets.push(socket);
  };
  for (let i = 0; i < 100; i++) {
    open(`POST /api/v1/provision HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"deviceName": "`, 'a');
    open(`GET /nope HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${Buffer.alloc(16, i).toString('base64')}\r\n\r\n`, undefined);
    open(`GET /api/v1/devices HTTP/1.1\r\nHost: x\r\n`, 'X-a: b\r\n');
  }
  report.note = '100 trickled provisioning bodies, 100 abandoned unknown upgrades, 100 trickled headers';
  while (Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
  for (const s of sockets) s.destroy();
}

process.on('message', (raw) => {
  const m = raw as ToAttacker;
  if (m.type === 'exit') process.exit(0);
  const report = emptyReport();
  const deadline = Date.now() + m.durationMs;
  const run: Record<AttackPhase, () => Promise<void>> = {
    polygons: () => polygons(report, deadline),
    fuzz: () => fuzz(report, deadline),
    flood: () => flood(report, deadline, Number(process.env.FLOOD_CONNECTIONS ?? 4000)),
    'ws-frames': () => wsFrames(report, deadline),
    'slow-http': () => slowHttp(report, deadline),
  };
  run[m.phase]()
    .then(() => send({ type: 'done', report }))
    .catch((err: Error) => send({ type: 'error', message: `${m.phase}: ${err.stack ?? err.message}` }));
});
send({ type: 'ready' });
