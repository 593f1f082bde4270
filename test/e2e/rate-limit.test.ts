import http from 'node:http';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storageCell } from '../../geo/cell.ts';
import { loadReadings } from '../support/readings.ts';
import type { Reading } from '../../ingest/readings.ts';
import { testPool } from '../support/database.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * Request rate limits per principal (per role, per key, the bootstrap key), concurrency of exports
 * and heavy queries per principal, and the public provisioning endpoint per source address —
 * through real HTTP.
 */

type Key = { id: number; key: string; name: string };
interface ErrorBody {
  statusCode: number;
  error: string;
  message: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('rate limits', () => {
  let t: TestPlatform;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestPlatform({
      rateLimits: 'admin=6000/min,operator=8/min,agency=5/min',
      rateLimitDefault: '3/min',
      provisionRateLimit: '3/min',
      exportConcurrencyPerPrincipal: 2,
      queryConcurrencyPerPrincipal: 2,
      // Per-principal limits are what is tested here: the database's turns must not queue them first.
      spatialMaxConcurrentQueries: 8,
    });
    db = testPool(t.databaseUrl, 3);
    expect((await t.api('PUT', '/api/v1/roles/reader', { description: 'read only, no rate limit of its own', permissions: ['read'] })).status).toBe(200);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  let keys = 0;
  /** A new key; `rateLimit` is its own limit. */
  const createKey = async (roles: string[], rateLimit?: string) => {
    const res = await t.api<Key>('POST', '/api/v1/keys', { name: `key ${++keys}`, owner: 'rate tests', roles, rateLimit });
    if (res.status !== 201) throw new Error(`key creation failed: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };

  it('takes a key\'s own limit through the key API, and refuses a malformed one', async () => {
    const bad = await t.api<{ message: string }>('POST', '/api/v1/keys', { name: 'x', owner: 'o', roles: ['agency'], rateLimit: 'lots' });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/^rateLimit: "lots" is not a rate limit/);
    const k = await createKey(['agency'], '3/min');
    expect((await t.api<{ rateLimit: string }>('GET', `/api/v1/keys/${k.id}`)).body.rateLimit).toBe('3/min');
    const patched = await t.api<{ rateLimit: string | null }>('PATCH', `/api/v1/keys/${k.id}`, { rateLimit: null });
    expect(patched.body.rateLimit).toBeNull();
  });

  const get = async (path: string, credential: string) => {
    const res = await fetch(`${t.httpUrl}${path}`, { headers: { authorization: `Bearer ${credential}` } });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? (JSON.parse(text) as unknown) : undefined };
  };
  const limitHeaders = (h: Headers) => ({ limit: h.get('ratelimit-limit'), remaining: h.get('ratelimit-remaining'), reset: h.get('ratelimit-reset') });

  it("limits each principal by its role, with RateLimit headers, and 429 with Retry-After beyond", async () => {
    const agency = await createKey(['agency']);
    for (let i = 1; i <= 5; i++) {
      const res = await get('/api/v1/devices', agency.key);
      expect(res.status).toBe(200);
      const h = limitHeaders(res.headers);
      expect(h.limit).toBe('5');
      expect(h.remaining).toBe(String(5 - i));
      expect(Number(h.reset)).toBeGreaterThanOrEqual(1);
      expect(Number(h.reset)).toBeLessThanOrEqual(60);
    }
    const refused = await get('/api/v1/devices', agency.key);
    expect(refused.status).toBe(429);
    const retry = Number(refused.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(60);
    expect(limitHeaders(refused.headers)).toMatchObject({ limit: '5', remaining: '0' });
    const body = refused.body as ErrorBody;
    expect(body).toMatchObject({ statusCode: 429, error: 'Too Many Requests' });
    expect(body.message).toMatch(new RegExp(`^rate limit exceeded: API key "${agency.name}" may make 5 requests per minute \\(role agency \\(RATE_LIMITS\\)\\); retry in \\d+ s`));
    // Every route counts against the same budget.
    expect((await get('/api/v1/device-types', agency.key)).status).toBe(429);

    // Another principal of the same role has its own budget.
    const other = await createKey(['agency']);
    const res = await get('/api/v1/devices', other.key);
    expect(res.status).toBe(200);
    expect(limitHeaders(res.headers)).toMatchObject({ limit: '5', remaining: '4' });

    // The refusals are in the audit log, with the principal.
    const logged = await eventually(
      async () => {
        const page = (await t.api<{ entries: { principal: string; status: number; reason: string }[] }>('GET', `/api/v1/audit?principal=key:${agency.id}&status=429`)).body;
        return page.entries.length === 2 ? page.entries : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 200 },
    );
    expect(logged[0]!.reason).toMatch(/^rate limit exceeded/);
  });

  it('gives several roles the most generous, and a role not listed RATE_LIMIT_DEFAULT', async () => {
    const both = await createKey(['agency', 'operator']);
    const res = await get('/api/v1/devices', both.key);
    expect(limitHeaders(res.headers).limit).toBe('8');
    const reader = await createKey(['reader']);
    for (let i = 0; i < 3; i++) expect((await get('/api/v1/devices', reader.key)).status).toBe(200);
    const refused = await get('/api/v1/devices', reader.key);
    expect(refused.status).toBe(429);
    expect((refused.body as ErrorBody).message).toMatch(/3 requests per minute \(role reader \(RATE_LIMIT_DEFAULT\)\)/);
  });

  it("lets a key's own rate limit override its roles'", async () => {
    const strict = await createKey(['operator'], '2/2s');
    const first = await get('/api/v1/devices', strict.key);
    expect(limitHeaders(first.headers)).toMatchObject({ limit: '2', remaining: '1' });
    expect((await get('/api/v1/devices', strict.key)).status).toBe(200);
    const refused = await get('/api/v1/devices', strict.key);
    expect(refused.status).toBe(429);
    expect((refused.body as ErrorBody).message).toMatch(/may make 2 requests per 2 seconds \(the key's own rate limit\)/);
    const retry = Number(refused.headers.get('retry-after'));
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(2);
    // Once the window has passed, the key may ask again.
    await sleep(retry * 1000 + 100);
    expect((await get('/api/v1/devices', strict.key)).status).toBe(200);

    const unlimited = await createKey(['agency'], 'off');
    for (let i = 0; i < 12; i++) {
      const res = await get('/api/v1/devices', unlimited.key);
      expect(res.status).toBe(200);
      expect(res.headers.get('ratelimit-limit')).toBeNull();
    }
  });

  it('does not limit the bootstrap admin key (BOOTSTRAP_RATE_LIMIT=off by default)', async () => {
    for (let i = 0; i < 12; i++) {
      const res = await get('/api/v1/devices', t.adminKey);
      expect(res.status).toBe(200);
      expect(res.headers.get('ratelimit-limit')).toBeNull();
    }
  });

  it('limits the public provisioning endpoint per source address', async () => {
    /** POST /api/v1/provision from a given loopback address. */
    const provision = (localAddress: string) =>
      new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Record<string, unknown> }>((resolve, reject) => {
        const req = http.request(`${t.httpUrl}/api/v1/provision`, { method: 'POST', localAddress, headers: { 'content-type': 'application/json' } }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (text += c));
          res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: JSON.parse(text) as Record<string, unknown> }));
        });
        req.on('error', reject);
        req.end(JSON.stringify({ deviceName: 'nobody', provisionDeviceKey: 'no-such-key', provisionDeviceSecret: 'no-such-secret' }));
      });
    for (let i = 1; i <= 3; i++) {
      const res = await provision('127.0.0.1');
      expect(res.status).toBe(200);
      expect(res.body.status).toBe('NOT_FOUND');
      expect(res.headers['ratelimit-limit']).toBe('3');
      expect(res.headers['ratelimit-remaining']).toBe(String(3 - i));
    }
    const refused = await provision('127.0.0.1');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    expect(refused.body.message).toMatch(/this address \(127\.0\.0\.1\) may make 3 requests per minute \(PROVISION_RATE_LIMIT, per source address\)/);
    // Another address has its own budget.
    const elsewhere = await provision('127.0.0.2');
    expect(elsewhere.status).toBe(200);
    expect(elsewhere.headers['ratelimit-remaining']).toBe('2');
    // Refused attempts on the public endpoint are audited (without a principal).
    await eventually(
      async () => {
        const page = (await t.api<{ entries: { principal: string | null; sourceIp: string }[] }>('GET', '/api/v1/audit?route=/api/v1/provision&status=429')).body;
        return page.entries.length === 1 && page.entries[0]!.principal === null && page.entries[0]!.sourceIp === '127.0.0.1' ? true : undefined;
      },
      { timeoutMs: 10_000, intervalMs: 200 },
    );
  });

  describe('concurrency per principal', () => {
    const N = 150_000;
    const base = Date.now() - 12 * 3_600_000;
    const big = `bbox=113.79,23.09,113.81,23.11&from=${base}&to=${base + N * 100}`;
    let bulk: CreatedDevice;

    beforeAll(async () => {
      bulk = await t.createDevice({ name: 'bulk-aq', type: 'air-quality-station', location: { lat: 23.1, lng: 113.8 } });
      const cell = storageCell(23.1, 113.8);
      const rows: Reading[] = [];
      for (let i = 0; i < N; i++) rows.push({ deviceId: bulk.id, domain: 'environment', ts: base + i * 100, values: { pm25: i % 500, temperature: 20 }, lat: 23.1, lng: 113.8, cell });
      await loadReadings(db, rows);
    });

    /** Starts an export and reads its first chunk, then stops reading: the export waits on the client, holding its slot. */
    const startExport = async (credential: string) => {
      const controller = new AbortController();
      const res = await fetch(`${t.httpUrl}/api/v1/spatial/export?${big}`, { headers: { authorization: `Bearer ${credential}` }, signal: controller.signal });
      if (res.status !== 200) return { status: res.status, headers: res.headers, body: (await res.json()) as ErrorBody, abort: () => {} };
      const reader = res.body!.getReader();
      await reader.read();
      return {
        status: res.status,
        headers: res.headers,
        body: undefined,
        abort: () => controller.abort(),
        /** Reads the rest; the bytes of the whole body. */
        async finish(firstBytes = 0) {
          let bytes = firstBytes;
          for (;;) {
            const { done, value } = await reader.read();
            if (done) return bytes;
            bytes += value.length;
          }
        },
      };
    };

    it('refuses a third export of one principal with 429 and Retry-After, lets other principals export, and frees the slot when an export ends or its client goes away', async () => {
      const mine = await createKey(['agency'], 'off');
      const theirs = await createKey(['agency'], 'off');
      const first = await startExport(mine.key);
      const second = await startExport(mine.key);
      expect([first.status, second.status]).toEqual([200, 200]);
      try {
        const third = await startExport(mine.key);
        expect(third.status).toBe(429);
        expect(third.headers.get('retry-after')).toBe('5');
        expect(third.body).toMatchObject({ statusCode: 429, error: 'Too Many Requests' });
        expect(third.body!.message).toMatch(/API key "key \d+" is already running 2 exports, the most it may run at once \(EXPORT_CONCURRENCY_PER_PRINCIPAL=2\); retry when one has finished/);
        // The device export shares the budget.
        expect((await get('/api/v1/devices/export', mine.key)).status).toBe(429);

        const other = await startExport(theirs.key);
        expect(other.status).toBe(200);
        other.abort();

        // The client of the first goes away: its slot is given back.
        first.abort();
        const next = await eventually(async () => {
          const e = await startExport(mine.key);
          if (e.status === 200) return e;
          expect(e.status).toBe(429);
          await sleep(100);
          return undefined;
        });
        next.abort();
      } finally {
        first.abort();
        second.abort();
      }

      // An export read to its end gives its slot back too: two may run again.
      const mine2 = await createKey(['agency'], 'off');
      const whole = await startExport(mine2.key);
      const held = await startExport(mine2.key);
      expect((await startExport(mine2.key)).status).toBe(429);
      const bytes = await whole.finish!();
      expect(bytes).toBeGreaterThan(1_000_000);
      const again = await eventually(async () => {
        const e = await startExport(mine2.key);
        return e.status === 200 ? e : undefined;
      });
      again.abort();
      held.abort();

      // The audit log has the aborted export (cut short, with the rows sent so far) and the complete one.
      type Entry = { status: number; reason: string | null; rows: number | null; bytes: number | null };
      const entries = await eventually(
        async () => {
          const page = (await t.api<{ entries: Entry[] }>('GET', `/api/v1/audit?principal=key:${mine.id}&route=/api/v1/spatial/export&limit=100`)).body;
          return page.entries.some((e) => e.reason?.startsWith('the client closed the connection')) ? page.entries : undefined;
        },
        { timeoutMs: 10_000, intervalMs: 200 },
      );
      const cut = entries.find((e) => e.reason?.startsWith('the client closed the connection'))!;
      expect(cut.status).toBe(200);
      expect(cut.rows).toBeGreaterThan(0);
      expect(cut.rows).toBeLessThan(N);
      expect(cut.bytes).toBeGreaterThan(0);
      expect(entries.filter((e) => e.status === 429).length).toBeGreaterThanOrEqual(1);
    });

    it('limits heavy queries per principal while they run', async () => {
      const key = await createKey(['agency'], 'off');
      const other = await createKey(['agency'], 'off');
      const history = (credential: string) => get(`/api/v1/spatial/history?${big}&domain=environment&limit=10`, credential);
      // A slow database, made so: the readings table is locked; the queries wait for it.
      const locker = new pg.Client({ connectionString: t.databaseUrl });
      await locker.connect();
      let running: Promise<{ status: number }>[] = [];
      try {
        await locker.query('BEGIN');
        await locker.query('LOCK TABLE readings_environment IN ACCESS EXCLUSIVE MODE');
        running = [history(key.key), history(key.key)];
        // Both are waiting on the lock (each holds a slot).
        await eventually(async () => {
          const { rows } = await db.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE '%ORDER BY q.ts DESC%'`,
          );
          return rows[0]!.n >= 2 ? true : undefined;
        });
        const refused = await history(key.key);
        expect(refused.status).toBe(429);
        expect((refused.body as ErrorBody).message).toMatch(/is already running 2 heavy queries, the most it may run at once \(QUERY_CONCURRENCY_PER_PRINCIPAL=2\)/);
        expect((await get(`/api/v1/spatial/aggregate?${big}&key=pm25&resolution=8`, key.key)).status).toBe(429);
        expect((await get(`/api/v1/devices/${bulk.id}/trajectory`, key.key)).status).toBe(429);
        // Light routes are not held back, nor are other principals.
        expect((await get('/api/v1/devices', key.key)).status).toBe(200);
        const theirs = history(other.key);
        await locker.query('COMMIT');
        expect((await theirs).status).toBe(200);
      } finally {
        await locker.end();
      }
      expect((await Promise.all(running)).map((r) => r.status)).toEqual([200, 200]);
      expect((await history(key.key)).status).toBe(200);
    });
  });
});
