import { readFileSync } from 'node:fs';
import net from 'node:net';

/**
 * A loopback TCP port nothing listens on, for a listener started a moment later (often by another
 * process: the embedded PostgreSQL, a platform under test). Chosen below the kernel's ephemeral
 * range where it can be read (Linux: net.ipv4.ip_local_port_range): a port taken from that range
 * (listen on port 0) can be handed to an outgoing connection before its new owner binds it, which
 * then fails with EADDRINUSE. Falls back to a port the kernel picks.
 */
export async function freePort(): Promise<number> {
  const [low, high] = belowEphemeralRange();
  for (let attempt = 0; attempt < 50 && high > low; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low + 1));
    if (await canListen(port)) return port;
  }
  return listenOn(0);
}

function belowEphemeralRange(): [number, number] {
  try {
    const start = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(start) && start > 12_000) return [Math.max(10_000, start - 12_000), start - 1];
  } catch {
    // not Linux, or /proc not mounted
  }
  return [0, 0];
}

const canListen = (port: number) => listenOn(port).then(
  () => true,
  () => false,
);

function listenOn(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => {
      const { port: bound } = server.address() as net.AddressInfo;
      server.close(() => resolve(bound));
    });
  });
}
