import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testPool } from '../support/database.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * The audit log through real HTTP: requests by API keys are recorded with who, what, result, when
 * and where; refused attempts too; never a secret; GET /api/v1/audit filters and pages; retention
 * prunes it.
 */

type Key = { id: number; key: string; name: string; owner: string; roles: string[] };
interface Entry {
  id: number;
  at: string;
  principal: string | null;
  principalName: string | null;
  owner: string | null;
  roles: string[];
  kind: string;
  method: string | null;
  route: string;
  deviceId: number | null;
  essentials: Record<string, unknown>;
  status: number;
  reason: string | null;
  rows: number | null;
  bytes: number | null;
  durationMs: number | null;
  sourceIp: string | null;
  userAgent: string | null;
}
interface Page {
  entries: Entry[];
  nextCursor: number | null;
}

const STATION = { lat: 22.95, lng: 113.7 };
// A hexagon around the station; its fourth vertex is neither the westmost, eastmost, southmost nor
// northmost, so its coordinates are in no bounding box: they must appear nowhere in the log.
const HIDDEN_LNG = 113.7123456;
const HIDDEN_LAT = 22.9876543;
const HEXAGON = {
  type: 'Polygon',
  coordinates: [
    [
      [113.6, 22.9],
      [113.8, 22.9],
      [113.8, 23.1],
      [HIDDEN_LNG, HIDDEN_LAT],
      [113.6, 23.1],
      [113.6, 22.9],
    ],
  ],
};

describe('audit log', () => {
  let t: TestPlatform;
  let db: pg.Pool;
  let station: CreatedDevice;
  let water: Key; // agency, water only
  let ops: Key; // operator
  const badKey = `glk_${randomBytes(32).toString('base64url')}`;
  const start = Date.now() - 30 * 60_000;
  const window = `from=${start - 1000}&to=${start + 10 * 60_000}`;

  const createKey = async (body: Record<string, unknown>) => {
    const res = await t.api<Key>('POST', '/api/v1/keys', body);
    if (res.status !== 201) throw new Error(`key creation failed: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };

  /** A request with a credential (or none); the body as text and its byte length. */
  const call = async (method: string, path: string, credential: string | null, body?: unknown, headers: Record<string, string> = {}) => {
    const h: Record<string, string> = { ...headers };
    if (credential !== null) h.authorization = `Bearer ${credential}`;
    if (body !== undefined) h['content-type'] = 'application/json';
    const res = await fetch(`${t.httpUrl}${path}`, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const bytes = Buffer.from(await res.arrayBuffer());
    return { status: res.status, headers: res.headers, text: bytes.toString('utf8'), bytes: bytes.length };
  };

  const audit = async (query: string) => {
    const res = await t.api<Page>('GET', `/api/v1/audit?${query}`);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body;
  };
  /** Waits for the log (written about once a second) to hold an entry matching `match`. */
  const find = (query: string, match: (e: Entry) => boolean) =>
    eventually(async () => (await audit(query)).entries.find(match), { timeoutMs: 10_000, intervalMs: 200 });

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
    station = await t.createDevice({ name: 'audit-station', type: 'river-level-station', location: STATION });
    const client = await t.connect(station.accessToken);
    for (let i = 0; i < 3; i++) await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: start + i * 60_000, values: { water_level: 2 + i } }), { qos: 1 });
    await eventually(async () => {
      const res = await t.api<{ water_level?: unknown[] }>('GET', `/api/v1/devices/${station.id}/telemetry?keys=water_level&${window}`);
      return res.body.water_level?.length === 3 ? true : undefined;
    });
    water = await createKey({ name: 'flood dashboard', owner: 'water bureau', roles: ['agency'], scope: { domains: ['water'] } });
    ops = await createKey({ name: 'ops wall', owner: 'city operations', roles: ['operator'] });
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('records who asked what, the result, when and from where', async () => {
    const before = Date.now();
    const telemetry = await call('GET', `/api/v1/devices/${station.id}/telemetry?keys=water_level&${window}`, water.key, undefined, { 'user-agent': 'audit-test/1.0' });
    expect(telemetry.status).toBe(200);
    const history = await call('GET', `/api/v1/spatial/history?bbox=113.6,22.9,113.8,23.1&${window}&keys=water_level&format=json&limit=50`, ops.key);
    expect(history.status).toBe(200);
    expect(JSON.parse(history.text).readings).toHaveLength(3);
    const exported = await call('GET', `/api/v1/spatial/export?bbox=113.6,22.9,113.8,23.1&${window}&format=csv`, water.key);
    expect(exported.status).toBe(200);

    const t1 = await find(`principal=key:${water.id}&route=/api/v1/devices/:id/telemetry`, (e) => e.status === 200);
    expect(t1).toMatchObject({
      principal: `key:${water.id}`,
      principalName: 'flood dashboard',
      owner: 'water bureau',
      roles: ['agency'],
      kind: 'http',
      method: 'GET',
      route: '/api/v1/devices/:id/telemetry',
      deviceId: station.id,
      essentials: { keys: ['water_level'], window: { from: String(start - 1000), to: String(start + 10 * 60_000) } },
      status: 200,
      reason: null,
      bytes: telemetry.bytes,
      sourceIp: '127.0.0.1',
      userAgent: 'audit-test/1.0',
    });
    expect(t1.durationMs).toBeGreaterThan(0);
    expect(Date.parse(t1.at)).toBeGreaterThanOrEqual(before - 1000);
    expect(Date.parse(t1.at)).toBeLessThanOrEqual(Date.now());

    const h = await find(`principal=key:${ops.id}&route=/api/v1/spatial/history`, () => true);
    expect(h).toMatchObject({
      owner: 'city operations',
      roles: ['operator'],
      deviceId: null,
      essentials: { area: { kind: 'bbox', bbox: [113.6, 22.9, 113.8, 23.1] }, keys: ['water_level'], format: 'json', limit: 50 },
      status: 200,
      rows: 3,
      bytes: history.bytes,
    });

    // The export streams (no Content-Length): its bytes are counted as written, its rows by the route.
    const x = await find(`principal=key:${water.id}&route=/api/v1/spatial/export`, () => true);
    expect(x).toMatchObject({ status: 200, rows: 3, bytes: exported.bytes, essentials: { area: { kind: 'bbox' }, format: 'csv' } });
  });

  it('records a polygon as its vertex count and bounding box, not its coordinates', async () => {
    const res = await call('POST', '/api/v1/spatial/history', water.key, { geometry: HEXAGON, from: String(start - 1000), to: String(start + 10 * 60_000), domain: ['water'] });
    expect(res.status).toBe(200);
    const e = await find(`principal=key:${water.id}&route=/api/v1/spatial/history`, (x) => x.method === 'POST');
    expect(e.essentials).toEqual({
      area: { kind: 'polygon', vertices: 6, bbox: [113.6, 22.9, 113.8, 23.1] },
      window: { from: String(start - 1000), to: String(start + 10 * 60_000) },
      domains: ['water'],
    });
    expect(e.rows).toBe(3);
    const { rows } = await db.query<{ t: string }>('SELECT row_to_json(a)::text AS t FROM audit_log a');
    for (const r of rows) {
      expect(r.t).not.toContain(String(HIDDEN_LNG));
      expect(r.t).not.toContain(String(HIDDEN_LAT));
    }
  });

  it('records refused attempts (401 without the key, 403) with the reason', async () => {
    const unknown = await call('GET', '/api/v1/devices', badKey, undefined, { 'user-agent': 'probe/0.1' });
    expect(unknown.status).toBe(401);
    const viaHeader = await call('GET', `/api/v1/devices/${station.id}`, null, undefined, { 'x-api-key': badKey });
    expect(viaHeader.status).toBe(401);
    const none = await call('GET', '/api/v1/alarms', null);
    expect(none.status).toBe(401);

    const refused = await find('principal=none&status=401&route=/api/v1/devices', () => true);
    expect(refused).toMatchObject({ principal: null, principalName: null, owner: null, roles: [], method: 'GET', status: 401, reason: 'unknown API key', sourceIp: '127.0.0.1', userAgent: 'probe/0.1' });
    await find('principal=none&status=401&route=/api/v1/devices/:id', (e) => e.deviceId === station.id && e.reason === 'unknown API key');
    await find('principal=none&status=401&route=/api/v1/alarms', (e) => /credential is required/.test(e.reason ?? ''));

    // An agency key may not write devices (403) nor read the audit log (403).
    expect((await call('DELETE', `/api/v1/devices/${station.id}`, water.key)).status).toBe(403);
    const forbidden = await call('GET', '/api/v1/audit', ops.key);
    expect(forbidden.status).toBe(403);
    expect(JSON.parse(forbidden.text).message).toMatch(/audit:read/);
    expect((await call('GET', '/api/v1/audit', water.key)).status).toBe(403);
    const e = await find(`principal=key:${ops.id}&route=/api/v1/audit`, () => true);
    expect(e).toMatchObject({ status: 403, roles: ['operator'] });
    expect(e.reason).toMatch(/audit:read/);
    await find(`principal=key:${water.id}&status=403`, (x) => x.route === '/api/v1/devices/:id' && x.method === 'DELETE' && x.deviceId === station.id);
  });

  it('records MQTT application sessions: connects (refused too) and subscriptions', async () => {
    const app = await mqtt.connectAsync(t.mqttUrl, { username: 'guanlink-app', password: water.key, clientId: 'audit-app', reconnectPeriod: 0 });
    await app.subscribeAsync('guanlink/events/alarms/water', { qos: 1 });
    await expect(app.subscribeAsync('v1/devices/me/telemetry', { qos: 1 })).rejects.toThrow(/Subscribe error/); // SUBACK 0x80
    await app.endAsync();
    await mqtt.connectAsync(t.mqttUrl, { username: 'guanlink-app', password: badKey, clientId: 'audit-app-2', reconnectPeriod: 0 }).then(
      (c) => c.endAsync().then(() => expect.unreachable('a bad key was accepted')),
      () => undefined,
    );
    const connect = await find('kind=mqtt', (e) => e.route === 'connect' && e.principal === `key:${water.id}`);
    expect(connect).toMatchObject({ status: 200, principalName: 'flood dashboard', userAgent: 'mqtt client audit-app' });
    const allowed = await find('kind=mqtt', (e) => e.route === 'subscribe' && e.status === 200);
    expect(allowed.essentials).toEqual({ topic: 'guanlink/events/alarms/water' });
    const refused = await find('kind=mqtt', (e) => e.route === 'subscribe' && e.status === 403);
    expect(refused.essentials).toEqual({ topic: 'v1/devices/me/telemetry' });
    const bad = await find('kind=mqtt', (e) => e.route === 'connect' && e.status === 401);
    expect(bad).toMatchObject({ principal: null, reason: 'guanlink-app: unknown API key' });
    const { rows } = await db.query(`SELECT count(*)::int AS n FROM audit_log WHERE audit_log::text LIKE $1`, [`%${badKey.slice(4)}%`]);
    expect(rows[0].n).toBe(0);
  });

  it('never holds a secret: no key, wherever it was sent', async () => {
    // Keys sent where they do not belong: in the query string, in a body, in the user agent.
    await call('GET', `/api/v1/devices?key=${water.key}&token=${ops.key}`, water.key);
    await call('POST', `/api/v1/spatial/history?key=${ops.key}`, ops.key, { bbox: [113.6, 22.9, 113.8, 23.1], keys: [water.key], password: t.adminKey });
    await call('GET', `/api/v1/devices/${station.id}`, t.adminKey, undefined, { 'user-agent': `leaky ${ops.key}` });
    await call('GET', '/api/v1/devices', `${t.adminKey}x`);
    await find(`principal=key:${ops.id}&route=/api/v1/spatial/history`, (e) => e.method === 'POST');
    await find('principal=bootstrap&route=/api/v1/devices/:id', (e) => e.userAgent?.startsWith('leaky') === true);
    await find('principal=none&status=401', (e) => e.route === '/api/v1/devices' && /unknown credential/.test(e.reason ?? ''));

    const { rows } = await db.query<{ t: string }>('SELECT row_to_json(a)::text AS t FROM audit_log a');
    expect(rows.length).toBeGreaterThan(10);
    const secrets = [water.key, ops.key, badKey, t.adminKey, water.key.slice(4), ops.key.slice(4)];
    for (const r of rows) for (const s of secrets) expect(r.t).not.toContain(s);
  });

  it('filters by principal, owner, route, status, device, window and kind, newest first, a page at a time', async () => {
    const mine = (await audit(`principal=key:${ops.id}&limit=1000`)).entries;
    expect(mine.length).toBeGreaterThanOrEqual(3);
    expect(mine.every((e) => e.principal === `key:${ops.id}`)).toBe(true);
    expect(mine.map((e) => e.id)).toEqual([...mine.map((e) => e.id)].sort((a, b) => b - a));

    const byOwner = (await audit(`owner=${encodeURIComponent('water bureau')}&limit=1000`)).entries;
    expect(byOwner.length).toBeGreaterThan(0);
    expect(byOwner.every((e) => e.principal === `key:${water.id}`)).toBe(true);

    const spatial = (await audit('route=/api/v1/spatial/*&limit=1000')).entries;
    expect(new Set(spatial.map((e) => e.route))).toEqual(new Set(['/api/v1/spatial/history', '/api/v1/spatial/export']));
    expect((await audit('route=/api/v1/spatial/history&limit=1000')).entries.every((e) => e.route === '/api/v1/spatial/history')).toBe(true);

    const client = (await audit('status=4xx&limit=1000')).entries;
    expect(client.length).toBeGreaterThan(0);
    expect(client.every((e) => e.status >= 400 && e.status <= 499)).toBe(true);
    expect(client.some((e) => e.status === 401) && client.some((e) => e.status === 403)).toBe(true);
    expect((await audit('status=403&limit=1000')).entries.every((e) => e.status === 403)).toBe(true);
    expect((await audit('status=2xx&limit=1000')).entries.every((e) => e.status >= 200 && e.status <= 299)).toBe(true);

    const device = (await audit(`deviceId=${station.id}&limit=1000`)).entries;
    expect(device.length).toBeGreaterThanOrEqual(3);
    expect(device.every((e) => e.deviceId === station.id)).toBe(true);

    expect((await audit(`from=${Date.now() + 60_000}`)).entries).toEqual([]);
    expect((await audit(`to=${new Date(Date.now() - 3_600_000).toISOString()}`)).entries).toEqual([]);
    const recent = (await audit(`from=${new Date(Date.now() - 3_600_000).toISOString()}&to=${Date.now() + 1000}&limit=1000`)).entries;
    expect(recent.length).toBeGreaterThan(mine.length);
    expect((await audit('kind=http&limit=5')).entries.every((e) => e.kind === 'http')).toBe(true);
    expect((await audit('kind=stream')).entries).toEqual([]);

    // Pages of 2 walk the same entries as one page of 1000, in the same order.
    const walked: Entry[] = [];
    let cursor: number | null = null;
    for (let pages = 0; pages < 100; pages++) {
      const page: Page = await audit(`principal=key:${ops.id}&limit=2${cursor === null ? '' : `&before=${cursor}`}`);
      expect(page.entries.length).toBeLessThanOrEqual(2);
      walked.push(...page.entries);
      cursor = page.nextCursor;
      if (cursor === null) break;
      expect(cursor).toBe(page.entries[page.entries.length - 1]!.id);
    }
    expect(cursor).toBeNull();
    const again = (await audit(`principal=key:${ops.id}&limit=1000`)).entries.filter((e) => e.id <= mine[0]!.id);
    expect(walked.filter((e) => e.id <= mine[0]!.id).map((e) => e.id)).toEqual(again.map((e) => e.id));
  });

  it('answers a bad filter with 400 and the reason', async () => {
    const bad: [string, RegExp][] = [
      ['status=abc', /status: "abc" is neither a status/],
      ['status=6xx', /status: "6xx"/],
      ['from=yesterday', /from: "yesterday" is not an ISO 8601/],
      ['to=2026-13-45', /to: "2026-13-45"/],
      [`from=${Date.now()}&to=${Date.now() - 1000}`, /must be before/],
      ['limit=0', /limit/],
      ['limit=1001', /limit/],
      ['before=abc', /before/],
      ['deviceId=x', /deviceId/],
      ['kind=ftp', /kind/],
      ['colour=blue', /additional properties/],
    ];
    for (const [query, reason] of bad) {
      const res = await t.api<{ statusCode: number; message: string }>('GET', `/api/v1/audit?${query}`);
      expect(res.status, query).toBe(400);
      expect(res.body.message, query).toMatch(reason);
    }
  });

  it('is pruned by the retention job after AUDIT_RETENTION_DAYS (365 by default)', async () => {
    await db.query(
      `INSERT INTO audit_log (at, principal, kind, method, route, status) VALUES
         (now() - interval '400 days', 'key:999', 'http', 'GET', '/old', 200),
         (now() - interval '380 days', 'key:999', 'http', 'GET', '/old', 200),
         (now() - interval '10 days', 'key:999', 'http', 'GET', '/recent', 200)`,
    );
    const res = await t.api<{ auditLog?: { table: string; cutoff: string } }>('POST', '/api/v1/retention/apply');
    expect(res.status).toBe(200);
    expect(res.body.auditLog).toMatchObject({ table: 'audit_log' });
    expect(Date.now() - Date.parse(res.body.auditLog!.cutoff)).toBeGreaterThan(364 * 86_400_000);
    const { rows } = await db.query<{ route: string }>(`SELECT route FROM audit_log WHERE principal = 'key:999' ORDER BY at`);
    expect(rows.map((r) => r.route)).toEqual(['/recent']);
    // Entries of today stay.
    expect((await audit(`principal=key:${ops.id}&limit=1`)).entries).toHaveLength(1);
  });
});
