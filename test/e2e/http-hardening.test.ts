import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { io as ioClient, type Socket as IoSocket } from 'socket.io-client';
import mqtt from 'mqtt';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../core/log.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { spawnGuanlink, waitReady, type GuanlinkProcess } from '../support/process.ts';

/** What a raw TCP client received until the server closed the connection (or `boundMs` passed). */
interface RawAnswer {
  text: string;
  closed: boolean;
  ms: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw connection (from `localAddress`, a loopback address of its own), for requests fetch cannot make. */
function rawConnect(port: number, localAddress = '127.0.0.1'): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port, localAddress }, () => resolve(socket));
    socket.once('error', reject);
  });
}

/** Collects what the server sends until it closes the connection, at most `boundMs`. */
function collect(socket: net.Socket, boundMs: number): Promise<RawAnswer> {
  const started = Date.now();
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString()));
  socket.on('error', () => {});
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ text, closed: false, ms: Date.now() - started }), boundMs);
    socket.once('close', () => {
      clearTimeout(timer);
      resolve({ text, closed: true, ms: Date.now() - started });
    });
  });
}

/** Sends `chunks` one by one every `everyMs` (bounded by their number) while the socket is open. */
async function trickle(socket: net.Socket, chunks: string[], everyMs: number): Promise<void> {
  for (const chunk of chunks) {
    if (socket.destroyed || !socket.writable) return;
    socket.write(chunk);
    await sleep(everyMs);
  }
}

const statusOf = (text: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
const bodyOf = (text: string) => JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
const headerOf = (text: string, name: string) => new RegExp(`^${name}: (.*)$`, 'im').exec(text.slice(0, text.indexOf('\r\n\r\n')))?.[1]?.trim();

const upgradeRequest = (path: string, protocol = 'websocket') =>
  `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n`;

/** Log lines of an in-process platform, kept for the test to read. */
function logSink() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(...chunk.toString().split('\n').filter((l) => l !== ''));
      done();
    },
  });
  return { lines, log: createLogger('info', destination) };
}

describe('HTTP under hostile clients', () => {
  let t: TestPlatform;
  const logs = logSink();
  let port: number;

  beforeAll(async () => {
    t = await startTestPlatform(
      { httpHeadersTimeoutMs: 500, httpRequestTimeoutMs: 1000, httpIdleTimeoutMs: 1000, provisionRateLimit: '3/min' },
      { log: logs.log },
    );
    port = t.platform.httpPort;
  });
  afterAll(() => t?.stop());

  describe('protocol upgrades', () => {
    it('answers an Upgrade to a path without WebSocket with 400 problem details and closes the connection', async () => {
      for (const [path, protocol] of [
        ['/nope', 'websocket'],
        ['/api/v1/devices', 'h2c'],
        ['/mqtt-not', 'websocket'],
      ] as const) {
        const socket = await rawConnect(port);
        const answer = collect(socket, 5000);
        socket.write(upgradeRequest(path, protocol));
        const { text, closed } = await answer;
        expect(statusOf(text), path).toBe(400);
        expect(headerOf(text, 'content-type')).toBe('application/problem+json; charset=utf-8');
        expect(bodyOf(text)).toMatchObject({ type: 'about:blank', status: 400, title: 'Bad Request', statusCode: 400 });
        expect(bodyOf(text).detail).toMatch(new RegExp(`^no protocol upgrade is offered at ${path}: WebSocket is at /mqtt and /socket.io/`));
        // Closed by the server, although this client never closes its side.
        expect(closed, path).toBe(true);
      }
    });

    it('still upgrades /mqtt (MQTT over WebSocket) and /socket.io/ (live streams)', async () => {
      const device = await t.createDevice({ name: 'ws-probe' });
      const client = await mqtt.connectAsync(t.wsUrl, { username: device.accessToken, reconnectPeriod: 0, connectTimeout: 5000 });
      expect(client.connected).toBe(true);
      await client.endAsync(true);
      const socket: IoSocket = ioClient(t.httpUrl, { transports: ['websocket'], auth: { token: t.adminKey }, reconnection: false, timeout: 5000 });
      try {
        await new Promise<void>((resolve, reject) => {
          socket.once('connect', () => resolve());
          socket.once('connect_error', reject);
        });
        expect(socket.connected).toBe(true);
      } finally {
        socket.close();
      }
    });
  });

  describe('timeouts', () => {
    it('answers 408 and closes a connection whose headers keep trickling past HTTP_HEADERS_TIMEOUT_MS', async () => {
      const socket = await rawConnect(port);
      const answer = collect(socket, 10_000);
      void trickle(socket, ['GET /healthz HTTP/1.1\r\n', 'Host: 127.0.0.1\r\n', ...Array.from({ length: 100 }, (_, i) => `X-Slow-${i}: y\r\n`)], 100);
      const { text, closed } = await answer;
      expect(closed).toBe(true);
      expect(statusOf(text)).toBe(408);
      expect(bodyOf(text)).toMatchObject({ status: 408, title: 'Request Timeout', statusCode: 408 });
    });

    it('answers 408 and closes a request whose body to the public POST /api/v1/provision trickles past HTTP_REQUEST_TIMEOUT_MS', async () => {
      const socket = await rawConnect(port);
      const answer = collect(socket, 10_000);
      const head = 'POST /api/v1/provision HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{';
      // One byte every 100 ms: never idle long enough for the idle timeout, so the request timeout is what ends it.
      void trickle(socket, [head, ...Array.from({ length: 100 }, () => ' ')], 100);
      const { text, closed } = await answer;
      expect(closed).toBe(true);
      expect(statusOf(text)).toBe(408);
    });

    it('closes a connection whose client stopped reading its answers once idle past HTTP_IDLE_TIMEOUT_MS', async () => {
      const socket = await rawConnect(port);
      socket.on('error', () => {});
      // Ten pipelined requests for a 1.5 MB file, more than the kernel buffers hold, and nothing read.
      const request = 'GET /docs/static/swagger-ui-bundle.js HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
      socket.write(request.repeat(10));
      socket.pause();
      await sleep(3000);
      let bytes = 0;
      socket.on('data', (d: Buffer) => (bytes += d.length));
      socket.resume();
      const { closed } = await collect(socket, 10_000);
      expect(closed).toBe(true);
      expect(bytes).toBeLessThan(10 * 1_500_000);
    });

    it('keeps a connection while the server prepares a long answer: a command waiting for its device longer than the idle timeout', async () => {
      const device = await t.createDevice({ name: 'slow-responder' });
      const client = await t.connect(device.accessToken);
      await client.subscribeAsync('v1/devices/me/rpc/request/+', { qos: 1 });
      const started = Date.now();
      const res = await t.api<{ status: string }>('POST', `/api/v1/devices/${device.id}/rpc`, { method: 'ponder', timeout: 2500 });
      // Answered (504: the device never replied), not cut off by the 1 s idle timeout.
      expect(res.status).toBe(504);
      expect(res.body.status).toBe('timeout');
      expect(Date.now() - started).toBeGreaterThanOrEqual(2000);
    });

    it('answers bytes that are not HTTP with 400 problem details and closes', async () => {
      const socket = await rawConnect(port);
      const answer = collect(socket, 5000);
      socket.write('HELLO THERE\r\n\r\n');
      const { text, closed } = await answer;
      expect(closed).toBe(true);
      expect(statusOf(text)).toBe(400);
      expect(bodyOf(text)).toMatchObject({ status: 400, statusCode: 400, type: 'about:blank' });
    });
  });

  describe('one error shape: RFC 9457 problem details', () => {
    const problemOf = async (res: Response) => {
      expect(res.headers.get('content-type')).toBe('application/problem+json; charset=utf-8');
      const body = (await res.json()) as Record<string, unknown>;
      expect(body).toMatchObject({ type: 'about:blank', status: res.status, statusCode: res.status });
      expect(body.title).toBe(body.error);
      expect(body.detail).toBe(body.message);
      expect(typeof body.detail).toBe('string');
      expect(body.instance).toMatch(/^urn:uuid:[0-9a-f-]{36}$/);
      return body;
    };
    const auth = () => ({ authorization: `Bearer ${t.adminKey}` });

    it('400 (validation, bad JSON, bad URL), 404 (no such device, no route), 405 (with Allow), 413 and 415', async () => {
      const validation = await problemOf(await fetch(`${t.httpUrl}/api/v1/devices?limit=abc`, { headers: auth() }));
      expect(validation).toMatchObject({ status: 400, title: 'Bad Request', code: 'FST_ERR_VALIDATION' });
      expect(validation.detail).toMatch(/limit/);

      const json = await problemOf(await fetch(`${t.httpUrl}/api/v1/devices`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: '{"name": ' }));
      expect(json.status).toBe(400);

      const badUrl = await fetch(`${t.httpUrl}/api/v1/devices/%zz`, { headers: auth() });
      expect(badUrl.status).toBe(400);
      await problemOf(badUrl);

      const noDevice = await problemOf(await fetch(`${t.httpUrl}/api/v1/devices/999999`, { headers: auth() }));
      expect(noDevice).toMatchObject({ status: 404, title: 'Not Found', detail: 'no device 999999' });

      const noRoute = await problemOf(await fetch(`${t.httpUrl}/api/v1/nothing-here`, { method: 'POST' }));
      expect(noRoute).toMatchObject({ status: 404, detail: 'no route POST /api/v1/nothing-here' });
      const noFile = await fetch(`${t.httpUrl}/no-such-file.js`);
      expect(noFile.status).toBe(404);
      await problemOf(noFile);

      const wrongMethod = await fetch(`${t.httpUrl}/api/v1/devices`, { method: 'DELETE', headers: auth() });
      expect(wrongMethod.status).toBe(405);
      expect(wrongMethod.headers.get('allow')?.split(', ').sort()).toEqual(['GET', 'HEAD', 'POST']);
      expect((await problemOf(wrongMethod)).detail).toMatch(/^DELETE is not allowed on \/api\/v1\/devices/);

      const tooLarge = await fetch(`${t.httpUrl}/api/v1/devices`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ name: 'x'.repeat(2_000_000) }) });
      expect(tooLarge.status).toBe(413);
      await problemOf(tooLarge);

      const wrongType = await fetch(`${t.httpUrl}/api/v1/devices`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/xml' }, body: '<device/>' });
      expect(wrongType.status).toBe(415);
      expect((await problemOf(wrongType)).detail).toBe('POST /api/v1/devices does not take a body of type "application/xml"');
    });

    it('401 (with WWW-Authenticate) and 403 (naming the permission)', async () => {
      const anonymous = await fetch(`${t.httpUrl}/api/v1/devices`);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get('www-authenticate')).toMatch(/^Bearer/);
      await problemOf(anonymous);

      const created = await t.api<{ key: string }>('POST', '/api/v1/keys', { name: 'reader', owner: 'tests', roles: ['agency'] });
      expect(created.status).toBe(201);
      const forbidden = await fetch(`${t.httpUrl}/api/v1/devices`, {
        method: 'POST',
        headers: { authorization: `Bearer ${created.body.key}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'not-allowed' }),
      });
      expect(forbidden.status).toBe(403);
      expect(await problemOf(forbidden)).toMatchObject({ status: 403, title: 'Forbidden', permission: 'devices:write' });
    });

    it('429 from a rate limit, with Retry-After', async () => {
      let last: Response | undefined;
      for (let i = 0; i < 4; i++) {
        last = await fetch(`${t.httpUrl}/api/v1/provision`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ provisionDeviceKey: 'k', provisionDeviceSecret: 's', deviceName: `n${i}` }) });
      }
      expect(last!.status).toBe(429);
      expect(Number(last!.headers.get('retry-after'))).toBeGreaterThan(0);
      expect((await problemOf(last!)).title).toBe('Too Many Requests');
    });

    it('409 of a command to an offline device keeps its reason as `code`, `status` is the HTTP status', async () => {
      const device = await t.createDevice({ name: 'never-online' });
      const res = await fetch(`${t.httpUrl}/api/v1/devices/${device.id}/rpc`, { method: 'POST', headers: { ...auth(), 'content-type': 'application/json' }, body: JSON.stringify({ method: 'ping' }) });
      expect(res.status).toBe(409);
      expect(await problemOf(res)).toMatchObject({ status: 409, code: 'offline' });
    });

    it('500: a database error reaches the log with the reference, never the client', async () => {
      // A database that fails under the platform: its alarms table taken away (and given back).
      const db = new pg.Client({ connectionString: t.databaseUrl });
      await db.connect();
      try {
        await db.query('ALTER TABLE alarms RENAME TO alarms_taken_away');
        const res = await fetch(`${t.httpUrl}/api/v1/alarms`, { headers: auth() });
        expect(res.status).toBe(500);
        const text = await res.clone().text();
        const body = await problemOf(res);
        expect(body.title).toBe('Internal Server Error');
        expect(body.detail).toBe(`internal error; reference ${String(body.instance)} (the server log has the cause)`);
        expect(text).not.toMatch(/alarms|relation|postgres|sql/i);
        const reqId = String(body.instance).replace('urn:uuid:', '');
        const logged = logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.reqId === reqId && l.msg === 'internal error');
        expect(logged).toBeDefined();
        expect((logged as { err?: { message?: string } }).err?.message).toMatch(/relation "alarms" does not exist/);
      } finally {
        await db.query('ALTER TABLE alarms_taken_away RENAME TO alarms').catch(() => {});
        await db.end();
      }
    });
  });
});

describe('requests without a verified credential', () => {
  let t: TestPlatform;
  let port: number;
  const held: net.Socket[] = [];

  beforeAll(async () => {
    t = await startTestPlatform({ httpMaxUnauthenticated: 4, httpMaxUnauthenticatedPerAddress: 2, provisionRateLimit: 'off' });
    port = t.platform.httpPort;
  });
  afterAll(async () => {
    for (const s of held) s.destroy();
    await t?.stop();
  });

  /** A request that stays in progress: its body never completes (well within the default timeouts). */
  async function hold(localAddress: string, path = '/api/v1/provision', headers = ''): Promise<net.Socket> {
    const socket = await rawConnect(port, localAddress);
    socket.on('error', () => {});
    socket.write(`POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n${headers}Content-Length: 100\r\n\r\n{`);
    held.push(socket);
    return socket;
  }

  /** One GET /healthz from `localAddress`, over a raw connection (fetch cannot choose its source address). */
  async function get(localAddress: string, path = '/healthz', headers = ''): Promise<{ status: number; text: string }> {
    const socket = await rawConnect(port, localAddress);
    const answer = collect(socket, 5000);
    socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n${headers}\r\n`);
    const { text } = await answer;
    return { status: statusOf(text), text };
  }

  /** Until the server has counted the held requests (they are counted when their headers are read). */
  const settle = async (localAddress: string, status: number) => {
    for (let i = 0; i < 100; i++) {
      if ((await get(localAddress)).status === status) return;
      await sleep(50);
    }
  };

  it('beyond the per-address budget: 429 with Retry-After for that address only', async () => {
    await hold('127.0.0.2');
    await hold('127.0.0.2');
    await settle('127.0.0.2', 429);
    const refused = await get('127.0.0.2');
    expect(refused.status).toBe(429);
    expect(headerOf(refused.text, 'retry-after')).toBe('2');
    expect(headerOf(refused.text, 'content-type')).toBe('application/problem+json; charset=utf-8');
    expect(bodyOf(refused.text).detail).toMatch(/HTTP_MAX_UNAUTHENTICATED_PER_ADDRESS=2/);
    expect((await get('127.0.0.3')).status).toBe(200);
  });

  it('beyond the total budget: 503 with Retry-After, for requests with a credential not yet checked too; freed when they end', async () => {
    const third = await hold('127.0.0.3');
    const fourth = await hold('127.0.0.4');
    await settle('127.0.0.5', 503);
    const refused = await get('127.0.0.5');
    expect(refused.status).toBe(503);
    expect(headerOf(refused.text, 'retry-after')).toBe('2');
    expect(bodyOf(refused.text)).toMatchObject({ status: 503, title: 'Service Unavailable' });
    expect(bodyOf(refused.text).detail).toMatch(/HTTP_MAX_UNAUTHENTICATED=4/);
    expect((await get('127.0.0.5', '/api/v1/devices', `Authorization: Bearer ${t.adminKey}\r\n`)).status).toBe(503);

    third.destroy();
    fourth.destroy();
    await settle('127.0.0.5', 200);
    expect((await get('127.0.0.5')).status).toBe(200);
  });

  it('a verified credential leaves the budget: slow bodies of an authenticated client do not take it', async () => {
    for (const s of held.splice(0)) s.destroy();
    await settle('127.0.0.6', 200);
    // Two requests from one address with the admin key, their bodies still arriving: the credential was checked at the headers.
    await hold('127.0.0.6', '/api/v1/devices', `Authorization: Bearer ${t.adminKey}\r\n`);
    await hold('127.0.0.6', '/api/v1/devices', `Authorization: Bearer ${t.adminKey}\r\n`);
    await sleep(200);
    expect((await get('127.0.0.6')).status).toBe(200);
    expect((await get('127.0.0.6')).status).toBe(200);
  });
});

describe('the process: shutdown whatever clients are doing, and logs without credentials', () => {
  let db: TestDatabase;
  let p: GuanlinkProcess | undefined;
  const sockets: net.Socket[] = [];
  const cleanups: (() => Promise<unknown>)[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    p?.child.kill('SIGKILL');
    for (const c of cleanups.reverse()) await c().catch(() => {});
    await db?.drop();
  });

  it('SIGTERM ends the process within a bound while clients hold upgrades, slow requests and idle connections, and no credential reaches the log', async () => {
    const adminKey = 'shutdown-test-admin-key-0123456789';
    p = await spawnGuanlink({ DATABASE_URL: db.url, GUANLINK_ADMIN_KEY: adminKey, HTTP_SHUTDOWN_GRACE_MS: '2000', LOG_LEVEL: 'debug' });
    await waitReady(p);
    const created = await fetch(`${p.httpUrl}/api/v1/devices`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'ws-device' }),
    });
    const { accessToken } = (await created.json()) as { accessToken: string };
    // Credentials where they do not belong (query strings) and where they do (headers): none may be logged.
    await fetch(`${p.httpUrl}/api/v1/devices?access_token=${adminKey}`, { headers: { authorization: `Bearer ${adminKey}` } });
    await fetch(`${p.httpUrl}/api/v1/nothing?key=${adminKey}`, { headers: { 'x-api-key': adminKey } });
    await fetch(`${p.httpUrl}/api/v1/devices?limit=abc&token=${accessToken}`, { headers: { authorization: `Bearer ${accessToken}` } });

    const open = async (write: string) => {
      const s = await rawConnect(p!.httpPort);
      s.on('error', () => {});
      s.on('data', () => {}); // read whatever comes, as a client would
      if (write) s.write(write);
      sockets.push(s);
      return s;
    };
    // An upgrade nobody takes, never closed by the client.
    await open(upgradeRequest('/nope'));
    // A body that trickles (the request timeout is far away: 60 s by default).
    const slowBody = await open('POST /api/v1/provision HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{');
    const dripping = setInterval(() => slowBody.writable && slowBody.write(' '), 200);
    // Headers that never end, and a keep-alive connection left idle after its request.
    await open('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Waiting: ');
    await open('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    // MQTT over WebSocket (a device) and a live stream over WebSocket, both left open.
    const device = await mqtt.connectAsync(`ws://127.0.0.1:${p.httpPort}/mqtt`, { username: accessToken, reconnectPeriod: 0, connectTimeout: 5000 });
    device.on('error', () => {});
    const live: IoSocket = ioClient(p.httpUrl, { transports: ['websocket'], auth: { token: adminKey }, reconnection: false, timeout: 5000 });
    await new Promise<void>((resolve, reject) => {
      live.once('connect', () => resolve());
      live.once('connect_error', reject);
    });
    await sleep(300);

    try {
      const signalled = Date.now();
      p.child.kill('SIGTERM');
      const code = await Promise.race([p.exited, sleep(15_000).then(() => 'still running 15 s after SIGTERM')]);
      expect(code).toBe(0);
      expect(Date.now() - signalled).toBeLessThan(15_000);
      expect(p.output()).toContain('"msg":"stopped"');
      // The trickling body was still in progress: the grace period ended it, not its own timeout.
      expect(p.output()).toContain('HTTP requests still in progress after the grace period');
    } finally {
      clearInterval(dripping);
      device.end(true);
      live.close();
    }
    expect(p.output()).not.toContain(adminKey);
    expect(p.output()).not.toContain(accessToken);
  });

  it('with the simulated fleets running (debug logs), neither the admin key nor a device token reaches the output; the folder and files holding them are owner-only', async () => {
    const fleetDb = await createTestDatabase();
    cleanups.push(() => fleetDb.drop());
    const parent = await mkdtemp(path.join(os.tmpdir(), 'guanlink-secrets-'));
    cleanups.push(() => rm(parent, { recursive: true, force: true }));
    const dataDir = path.join(parent, 'data'); // created by GuanLink
    const q = await spawnGuanlink(
      { DATABASE_URL: fleetDb.url, DATA_DIR: dataDir, GUANLINK_ADMIN_KEY: undefined, LOG_LEVEL: 'debug', SIM_DEVICES_PER_TYPE: '1', SIM_INTERVAL_MS: '300' },
      [],
    );
    cleanups.push(async () => q.child.kill('SIGKILL'));
    await waitReady(q);
    const stateFile = path.join(dataDir, 'simulators.json');
    let tokens: string[] = [];
    for (let i = 0; i < 300 && tokens.length === 0; i++) {
      if (existsSync(stateFile)) tokens = Object.values(JSON.parse(await readFile(stateFile, 'utf8')) as Record<string, string>);
      if (tokens.length === 0) await sleep(100);
    }
    expect(tokens.length).toBeGreaterThan(5);
    await sleep(1500); // the fleet connects and reports
    expect(q.output()).toMatch(/simulated Dongguan fleet started/);
    const adminKey = (await readFile(path.join(dataDir, 'admin-key'), 'utf8')).trim();
    q.child.kill('SIGTERM');
    expect(await Promise.race([q.exited, sleep(30_000).then(() => 'still running')])).toBe(0);

    const output = q.output();
    expect(output).not.toContain(adminKey);
    expect(tokens.filter((token) => output.includes(token))).toEqual([]);
    expect((await stat(dataDir)).mode & 0o777).toBe(0o700);
    expect((await stat(path.join(dataDir, 'admin-key'))).mode & 0o777).toBe(0o600);
    expect((await stat(stateFile)).mode & 0o777).toBe(0o600);
  });
});
