import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PERMISSION_NAMES } from '../../core/access/permissions.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';

/**
 * Access for agencies and staff, through real HTTP: API keys and roles, scopes by domain and by
 * town, and a walk over every operation of the OpenAPI document × role × in/out of scope.
 */

// 虎门镇 (Humen) and 莞城 (Guancheng), far apart: the shipped approximate town areas hold these points.
const HUMEN = { lat: 22.82, lng: 113.675 };
const GUANCHENG = { lat: 23.043, lng: 113.752 };

type Key = { id: number; key: string; name: string; roles: string[]; scope: unknown; prefix: string; expiresAt: string | null; revokedAt: string | null };

describe('access: API keys, roles and scopes', () => {
  let t: TestPlatform;
  let waterIn: CreatedDevice; // water, in Humen: the agency key sees it
  let waterOut: CreatedDevice; // water, in Guancheng: outside the agency's towns
  let trafficIn: CreatedDevice; // traffic, in Humen: outside the agency's domains
  let busIn: CreatedDevice; // a bus (traffic, moving)
  let agency: Key; // water in 虎门镇, role agency
  let operator: Key; // unscoped operator
  let noRead: Key; // a custom role with `live` only
  const start = Date.now() - 30 * 60_000;

  const createKey = async (body: Record<string, unknown>) => {
    const res = await t.api<Key>('POST', '/api/v1/keys', body);
    if (res.status !== 201) throw new Error(`key creation failed: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };

  beforeAll(async () => {
    t = await startTestPlatform();
    waterIn = await t.createDevice({ name: 'ZZ-water-humen', type: 'river-level-station', location: HUMEN });
    waterOut = await t.createDevice({ name: 'ZZ-water-guancheng', type: 'river-level-station', location: GUANCHENG });
    trafficIn = await t.createDevice({ name: 'ZZ-traffic-humen', type: 'traffic-detector', location: HUMEN });
    busIn = await t.createDevice({ name: 'ZZ-bus', type: 'bus' });
    for (const [device, values] of [
      [waterIn, { water_level: 2.5 }],
      [waterOut, { water_level: 3.5 }],
      [trafficIn, { vehicle_count: 12 }],
    ] as const) {
      const client = await t.connect(device.accessToken);
      for (let i = 0; i < 3; i++) await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: start + i * 60_000, values }), { qos: 1 });
    }
    const bus = await t.connect(busIn.accessToken);
    await bus.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: start, values: { latitude: HUMEN.lat, longitude: HUMEN.lng, speed: 20 } }), { qos: 1 });

    agency = await createKey({ name: 'water bureau dashboard', owner: '东莞市水务局', roles: ['agency'], scope: { domains: ['water'], towns: ['虎门镇'] } });
    operator = await createKey({ name: 'ops wall', owner: 'city operations', roles: ['operator'] });
    expect((await t.api('PUT', '/api/v1/roles/watcher', { description: 'live only', permissions: ['live'] })).status).toBe(200);
    noRead = await createKey({ name: 'watcher', owner: 'test', roles: ['watcher'] });
  });
  afterAll(async () => {
    await t?.stop();
  });

  const as = (key: Key | string) => ({ auth: typeof key === 'string' ? key : key.key });

  describe('keys', () => {
    it('is shown once, stored only as a hash, and listed without the secret', async () => {
      expect(agency.key).toMatch(/^glk_[A-Za-z0-9_-]{43}$/);
      expect(agency.prefix).toBe(agency.key.slice(0, 10));
      const list = await t.api<{ keys: Key[] }>('GET', '/api/v1/keys');
      expect(list.status).toBe(200);
      expect(JSON.stringify(list.body)).not.toContain(agency.key);
      expect(list.body.keys.map((k) => k.name)).toEqual(expect.arrayContaining(['water bureau dashboard', 'ops wall']));
      const db = new pg.Client({ connectionString: t.databaseUrl });
      await db.connect();
      try {
        const { rows } = await db.query('SELECT * FROM api_keys');
        expect(JSON.stringify(rows)).not.toContain(agency.key.slice(4));
      } finally {
        await db.end();
      }
    });

    it('says who a credential is: roles, permissions and scope', async () => {
      const me = await t.api<{ kind: string; name: string; roles: string[]; permissions: string[]; scope: unknown }>('GET', '/api/v1/me', undefined, as(agency));
      expect(me.status).toBe(200);
      expect(me.body).toMatchObject({ kind: 'key', name: 'water bureau dashboard', roles: ['agency'], permissions: ['devices:claim', 'live', 'read'], scope: { domains: ['water'], towns: ['虎门镇'] } });
      const admin = await t.api<{ kind: string; permissions: string[] }>('GET', '/api/v1/me');
      expect(admin.body.kind).toBe('bootstrap');
      expect(admin.body.permissions.sort()).toEqual([...PERMISSION_NAMES].sort());
    });

    it('refuses malformed, unknown, revoked and expired keys with the reason (401)', async () => {
      const cases: [string, RegExp][] = [
        ['glk_short', /malformed API key/],
        [`glk_${'A'.repeat(43)}`, /unknown API key/],
        ['not-a-key', /unknown credential/],
        ['eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln', /OpenID Connect is not configured/],
      ];
      for (const [credential, reason] of cases) {
        const res = await t.api<{ message: string }>('GET', '/api/v1/devices', undefined, as(credential));
        expect(res.status, credential).toBe(401);
        expect(res.body.message).toMatch(reason);
      }
      const none = await t.api<{ message: string }>('GET', '/api/v1/devices', undefined, { auth: false });
      expect(none.status).toBe(401);

      const shortLived = await createKey({ name: 'short', owner: 'test', roles: ['agency'], expiresAt: new Date(Date.now() + 1500).toISOString() });
      expect((await t.api('GET', '/api/v1/devices', undefined, as(shortLived))).status).toBe(200);
      await new Promise((r) => setTimeout(r, 1600));
      const expired = await t.api<{ message: string }>('GET', '/api/v1/devices', undefined, as(shortLived));
      expect(expired.status).toBe(401);
      expect(expired.body.message).toMatch(/expired at/);
    });

    it('rotation replaces the secret at once; revocation refuses the key from then on', async () => {
      const k = await createKey({ name: 'rotating', owner: 'test', roles: ['agency'] });
      const rotated = await t.api<Key>('POST', `/api/v1/keys/${k.id}/rotate`);
      expect(rotated.status).toBe(200);
      expect(rotated.body.key).not.toBe(k.key);
      expect((await t.api('GET', '/api/v1/devices', undefined, as(k))).status).toBe(401);
      expect((await t.api('GET', '/api/v1/devices', undefined, as(rotated.body.key))).status).toBe(200);
      const revoked = await t.api<Key>('POST', `/api/v1/keys/${k.id}/revoke`);
      expect(revoked.status).toBe(200);
      expect(revoked.body.revokedAt).not.toBeNull();
      const after = await t.api<{ message: string }>('GET', '/api/v1/devices', undefined, as(rotated.body.key));
      expect(after.status).toBe(401);
      expect(after.body.message).toMatch(/revoked/);
      expect((await t.api('POST', `/api/v1/keys/${k.id}/revoke`)).status).toBe(404);
      expect((await t.api('POST', `/api/v1/keys/${k.id}/rotate`)).status).toBe(404);
    });

    it('a change of roles or scope applies to the next request', async () => {
      const k = await createKey({ name: 'changing', owner: 'test', roles: ['agency'] });
      expect((await t.api('POST', '/api/v1/alarms/1/ack', { by: 'x' }, as(k))).status).toBe(403);
      const patched = await t.api<Key>('PATCH', `/api/v1/keys/${k.id}`, { roles: ['operator'], scope: { domains: ['traffic'] } });
      expect(patched.status).toBe(200);
      expect((await t.api('POST', '/api/v1/alarms/999999/ack', { by: 'x' }, as(k))).status).toBe(404);
      const devices = await t.api<{ items: { id: number }[] }>('GET', '/api/v1/devices', undefined, as(k));
      expect(devices.body.items.map((d) => d.id).sort()).toEqual([trafficIn.id, busIn.id].sort());
    });

    it('refuses bad keys and scopes with a clear 400, creating nothing', async () => {
      const before = (await t.api<{ keys: Key[] }>('GET', '/api/v1/keys?limit=1000')).body.keys.length;
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ name: 'x', owner: 'o', roles: ['nosuchrole'] }, /unknown role "nosuchrole"/],
        [{ name: 'x', owner: 'o', roles: [] }, /roles/],
        [{ name: 'x', owner: 'o', roles: ['agency'], scope: { towns: ['亚特兰蒂斯镇'] } }, /unknown town "亚特兰蒂斯镇"/],
        [{ name: 'x', owner: 'o', roles: ['agency'], scope: { domains: ['sewage'] } }, /domains/],
        [{ name: 'x', owner: 'o', roles: ['agency'], scope: { area: { type: 'Polygon', coordinates: [[[113, 22], [114, 23], [113, 23], [114, 22], [113, 22]]] } } }, /intersects itself/],
        [{ name: 'x', owner: 'o', roles: ['agency'], scope: { area: { type: 'Point', coordinates: [113, 22] } } }, /Polygon or MultiPolygon/],
        [{ name: 'x', owner: 'o', roles: ['agency'], scope: { towns: ['虎门镇'], area: { type: 'Polygon', coordinates: [] } } }, /towns or area, not both/],
        [{ name: 'x', owner: 'o', roles: ['agency'], expiresAt: '2001-01-01T00:00:00Z' }, /in the past/],
        [{ name: 'x', owner: 'o', roles: ['agency'], expiresAt: 'tomorrow' }, /not an ISO 8601/],
        [{ name: 'x\u0000', owner: 'o', roles: ['agency'] }, /name/],
      ];
      for (const [body, reason] of cases) {
        const res = await t.api<{ message: string }>('POST', '/api/v1/keys', body);
        expect(res.status, JSON.stringify(body)).toBe(400);
        expect(res.body.message).toMatch(reason);
      }
      expect((await t.api<{ keys: Key[] }>('GET', '/api/v1/keys?limit=1000')).body.keys.length).toBe(before);
    });

    it('roles: new ones need no code; built-in admin cannot change; a role in use cannot be deleted', async () => {
      const roles = await t.api<{ roles: { name: string; permissions: string[] }[]; permissions: Record<string, string> }>('GET', '/api/v1/roles');
      expect(roles.body.roles.map((r) => r.name)).toEqual(expect.arrayContaining(['admin', 'operator', 'agency', 'watcher']));
      expect(Object.keys(roles.body.permissions)).toEqual(PERMISSION_NAMES);
      expect((await t.api<{ message: string }>('PUT', '/api/v1/roles/admin', { permissions: ['read'] })).status).toBe(409);
      const bad = await t.api<{ message: string }>('PUT', '/api/v1/roles/x', { permissions: ['read', 'fly'] });
      expect(bad.status).toBe(400);
      expect(bad.body.message).toMatch(/unknown permission "fly"/);
      expect((await t.api('DELETE', '/api/v1/roles/watcher')).status).toBe(409);
      expect((await t.api('DELETE', '/api/v1/roles/agency')).status).toBe(409);
      expect((await t.api('PUT', '/api/v1/roles/tmp', { permissions: ['read'] })).status).toBe(200);
      expect((await t.api('DELETE', '/api/v1/roles/tmp')).status).toBe(204);
      expect((await t.api('DELETE', '/api/v1/roles/tmp')).status).toBe(404);
    });

    it('lists towns that scopes may name', async () => {
      const towns = await t.api<{ features: { properties: { name: string; nameEn: string } }[] }>('GET', '/api/v1/towns', undefined, as(agency));
      expect(towns.status).toBe(200);
      const names = towns.body.features.map((f) => f.properties.name);
      expect(names).toEqual(expect.arrayContaining(['虎门镇', '莞城街道', '长安镇']));
      expect(names.length).toBeGreaterThanOrEqual(32);
    });
  });

  describe('scopes', () => {
    it('lists only the devices of the scope (domain and town)', async () => {
      const res = await t.api<{ items: { id: number }[] }>('GET', '/api/v1/devices', undefined, as(agency));
      expect(res.status).toBe(200);
      expect(res.body.items.map((d) => d.id)).toEqual([waterIn.id]);
      const csv = await fetch(`${t.httpUrl}/api/v1/devices/export?format=csv`, { headers: { authorization: `Bearer ${agency.key}` } });
      const text = await csv.text();
      expect(text).toContain('ZZ-water-humen');
      expect(text).not.toMatch(/ZZ-water-guancheng|ZZ-traffic|ZZ-bus/);
      const types = await t.api<{ name: string; domain: string }[]>('GET', '/api/v1/device-types', undefined, as(agency));
      expect(new Set(types.body.map((ty) => ty.domain))).toEqual(new Set(['water']));
      expect((await t.api('GET', '/api/v1/device-types/bus', undefined, as(agency))).status).toBe(404);
    });

    it('answers 404 for a device outside the scope on every device route, as for one that does not exist', async () => {
      for (const path of ['', '/telemetry', '/latest', '/attributes', '/shadow', '/connectivity', '/events']) {
        const out = await t.api<{ message: string }>('GET', `/api/v1/devices/${waterOut.id}${path}`, undefined, as(agency));
        expect(out.status, path).toBe(404);
        expect(out.body.message).toBe(`no device ${waterOut.id}`);
        expect((await t.api('GET', `/api/v1/devices/${trafficIn.id}${path}`, undefined, as(agency))).status, path).toBe(404);
        expect((await t.api('GET', `/api/v1/devices/${waterIn.id}${path}`, undefined, as(agency))).status, path).toBe(200);
      }
    });

    it('spatial queries return only rows inside the scope, exactly', async () => {
      const bbox = '113.5,22.6,114.3,23.2';
      const window = `from=${start - 1}&to=${start + 3_600_000}`;
      const all = await t.api<{ features: { properties: { deviceId: number } }[] }>('GET', `/api/v1/spatial/history?bbox=${bbox}&${window}`);
      expect(new Set(all.body.features.map((f) => f.properties.deviceId))).toEqual(new Set([waterIn.id, waterOut.id, trafficIn.id, busIn.id]));
      const scoped = await t.api<{ features: { properties: { deviceId: number } }[] }>('GET', `/api/v1/spatial/history?bbox=${bbox}&${window}`, undefined, as(agency));
      expect(scoped.status).toBe(200);
      expect(scoped.body.features.map((f) => f.properties.deviceId)).toEqual([waterIn.id, waterIn.id, waterIn.id]);
      const latest = await t.api<{ features: { properties: { deviceId: number } }[] }>('GET', `/api/v1/spatial/latest?bbox=${bbox}`, undefined, as(agency));
      expect(latest.body.features.map((f) => f.properties.deviceId)).toEqual([waterIn.id]);
      const aggregate = `/api/v1/spatial/aggregate?bbox=${bbox}&${window}&key=water_level&resolution=7&stats=count`;
      type Cells = { features: { properties: { count: number } }[] };
      const counted = (body: Cells) => body.features.reduce((n, f) => n + f.properties.count, 0);
      const agg = await t.api<Cells>('GET', aggregate, undefined, as(agency));
      expect(agg.status).toBe(200);
      // Only the three water_level readings in scope are counted; unscoped, the three outside are too.
      expect(counted(agg.body)).toBe(3);
      expect(counted((await t.api<Cells>('GET', aggregate)).body)).toBe(6);
      const exported = await fetch(`${t.httpUrl}/api/v1/spatial/export?bbox=${bbox}&${window}&format=csv`, { headers: { authorization: `Bearer ${agency.key}` } });
      const rows = (await exported.text()).trim().split('\n');
      expect(rows.length).toBe(4); // header + the three readings of the device in scope
      expect(rows.slice(1).every((r) => r.includes('ZZ-water-humen'))).toBe(true);
    });

    it('a moving device is seen only while inside the area, and only its readings positioned inside', async () => {
      const humenBus = await createKey({ name: 'humen traffic', owner: '虎门镇政府', roles: ['agency'], scope: { domains: ['traffic'], towns: ['虎门'] } });
      const seen = async () => (await t.api<{ items: { id: number }[] }>('GET', '/api/v1/devices', undefined, as(humenBus))).body.items.map((d) => d.id);
      await eventually(async () => ((await seen()).includes(busIn.id) ? true : undefined));
      const client = await t.connect(busIn.accessToken);
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: start + 60_000, values: { latitude: GUANCHENG.lat, longitude: GUANCHENG.lng, speed: 30 } }), { qos: 1 });
      await eventually(async () => (!(await seen()).includes(busIn.id) ? true : undefined), { timeoutMs: 15_000 });
      expect((await t.api('GET', `/api/v1/devices/${busIn.id}/trajectory?from=${start - 1}&to=${start + 3_600_000}`, undefined, as(humenBus))).status).toBe(404);
      // The unscoped view has both positions; the Humen view of the trajectory, once the bus is back, has only the one inside.
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: start + 120_000, values: { latitude: HUMEN.lat + 0.001, longitude: HUMEN.lng, speed: 10 } }), { qos: 1 });
      await eventually(async () => ((await seen()).includes(busIn.id) ? true : undefined), { timeoutMs: 15_000 });
      const track = await t.api<{ features: { properties: { pointCount?: number } }[] }>('GET', `/api/v1/devices/${busIn.id}/trajectory?from=${start - 1}&to=${start + 3_600_000}`, undefined, as(humenBus));
      expect(track.status).toBe(200);
      expect(track.body.features[0]!.properties.pointCount).toBe(2);
      const full = await t.api<{ features: { properties: { pointCount?: number } }[] }>('GET', `/api/v1/devices/${busIn.id}/trajectory?from=${start - 1}&to=${start + 3_600_000}`);
      expect(full.body.features[0]!.properties.pointCount).toBe(3);
      const speeds = await t.api<Record<string, unknown[]>>('GET', `/api/v1/devices/${busIn.id}/telemetry?keys=speed&from=${start - 1}`, undefined, as(humenBus));
      expect(speeds.body.speed).toHaveLength(2);
    });

    it('alarms: lists and single alarms within the scope; acknowledged under the credential\'s name by default', async () => {
      type Alarm = { id: number; device: { id: number }; acknowledgedBy: string | null };
      for (const device of [waterIn, waterOut]) {
        const client = await t.connect(device.accessToken);
        await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: Date.now() - 1000, values: { rainfall_1h: 25 } }), { qos: 1 });
      }
      const all = await eventually(async () => {
        const items = (await t.api<{ items: Alarm[] }>('GET', '/api/v1/alarms?status=open')).body.items;
        return items.length >= 2 ? items : undefined;
      });
      const inside = all.find((a) => a.device.id === waterIn.id)!;
      const outside = all.find((a) => a.device.id === waterOut.id)!;
      const seen = await t.api<{ items: Alarm[] }>('GET', '/api/v1/alarms?status=open', undefined, as(agency));
      expect(seen.body.items.map((a) => a.id)).toEqual([inside.id]);
      expect((await t.api('GET', `/api/v1/alarms/${outside.id}`, undefined, as(agency))).status).toBe(404);
      expect((await t.api('GET', `/api/v1/alarms/${inside.id}`, undefined, as(agency))).status).toBe(200);
      expect((await t.api<{ permission: string }>('POST', `/api/v1/alarms/${inside.id}/ack`, {}, as(agency))).body.permission).toBe('alarms:ack');
      const acked = await t.api<Alarm>('POST', `/api/v1/alarms/${inside.id}/ack`, {}, as(operator));
      expect(acked.status).toBe(200);
      expect(acked.body.acknowledgedBy).toBe('ops wall');
    });

    it('a scoped writer registers devices only inside its scope', async () => {
      const writerRole = await t.api('PUT', '/api/v1/roles/water-engineer', { permissions: ['read', 'devices:write'] });
      expect(writerRole.status).toBe(200);
      const writer = await createKey({ name: 'engineer', owner: '水务局', roles: ['water-engineer'], scope: { domains: ['water'], towns: ['虎门镇'] } });
      const inside = await t.api('POST', '/api/v1/devices', { name: 'ZZ-new-inside', type: 'river-level-station', location: HUMEN }, as(writer));
      expect(inside.status).toBe(201);
      for (const body of [
        { name: 'ZZ-new-elsewhere', type: 'river-level-station', location: GUANCHENG },
        { name: 'ZZ-new-traffic', type: 'traffic-detector', location: HUMEN },
        { name: 'ZZ-new-nowhere', type: 'river-level-station' },
      ]) {
        const res = await t.api<{ message: string }>('POST', '/api/v1/devices', body, as(writer));
        expect(res.status, body.name).toBe(403);
        expect(res.body.message).toMatch(/scope/);
      }
      expect((await t.api('POST', '/api/v1/device-types', { name: 'x', domain: 'water', keys: {} }, as(writer))).status).toBe(403);
      expect((await t.api('POST', '/api/v1/devices/import', [{ name: 'ZZ-imp', type: 'river-level-station' }], as(writer))).status).toBe(403);
    });
  });

  describe('every route declares its permission, and each role gets exactly what it holds', () => {
    type Operation = { 'x-permission'?: string; parameters?: { name: string; in: string; required?: boolean }[] };
    let paths: Record<string, Record<string, Operation>>;

    beforeAll(async () => {
      const doc = await t.api<{ paths: typeof paths }>('GET', '/api/v1/openapi.json', undefined, { auth: false });
      paths = doc.body.paths;
    });

    /** Any answer (JSON or not) with its status. */
    const call = async (method: string, url: string, key: string) => {
      const hasBody = method !== 'GET' && method !== 'DELETE';
      const res = await fetch(`${t.httpUrl}${url}`, {
        method,
        headers: { authorization: `Bearer ${key}`, ...(hasBody ? { 'content-type': 'application/json' } : {}) },
        body: hasBody ? '{}' : undefined,
      });
      const text = await res.text();
      let body: { permission?: string; message?: string } = {};
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON (CSV, NDJSON, metrics)
      }
      return { status: res.status, body };
    };

    const operations = () =>
      Object.entries(paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method: method.toUpperCase(), op })));

    /** A concrete URL: device ids from `device`, other path parameters with plausible values, and the query parameters spatial routes need. */
    const urlOf = (path: string, device: number) => {
      let url = path
        .replace('{id}', String(path.startsWith('/api/v1/devices/') ? device : 999_999))
        .replace('{name}', 'nosuchname')
        .replace('{scope}', 'SHARED_SCOPE')
        .replace('{rpcId}', '999999')
        .replace('{domain}', 'water');
      if (url.startsWith('/api/v1/spatial/')) url += `?bbox=113.5,22.6,114.3,23.2&from=${start - 1}&to=${start + 3_600_000}&key=water_level&resolution=7&stats=count`;
      return url;
    };

    it('declares a permission on every operation of the OpenAPI document', () => {
      const ops = operations();
      expect(ops.length).toBeGreaterThan(60);
      const undeclared = ops.filter((o) => o.op['x-permission'] === undefined).map((o) => `${o.method} ${o.path}`);
      expect(undeclared).toEqual([]);
      for (const o of ops) expect([...PERMISSION_NAMES, 'public'], `${o.method} ${o.path}`).toContain(o.op['x-permission']);
    });

    it('answers 403 naming the missing permission, and never 401/403 to a role that holds it', async () => {
      const roles: [string, Key, Set<string>][] = [
        ['agency', agency, new Set(['read', 'live', 'devices:claim'])],
        ['operator', operator, new Set(['read', 'live', 'alarms:ack', 'rpc', 'devices:claim'])],
        ['watcher', noRead, new Set(['live'])],
      ];
      const failures: string[] = [];
      for (const { path, method, op } of operations()) {
        const permission = op['x-permission']!;
        if (permission === 'public') continue;
        for (const [role, key, held] of roles) {
          // Destructive operations are tried on things that do not exist: the access decision comes first either way.
          const res = await call(method, urlOf(path, method === 'GET' ? waterIn.id : 999_999), key.key);
          if (held.has(permission)) {
            if (res.status === 401 || res.status === 403) failures.push(`${role} ${method} ${path}: ${res.status} ${res.body?.message}`);
            if (res.status >= 500) failures.push(`${role} ${method} ${path}: ${res.status}`);
          } else if (res.status !== 403 || res.body.permission !== permission) {
            failures.push(`${role} ${method} ${path}: expected 403 naming ${permission}, got ${res.status} ${JSON.stringify(res.body)}`);
          }
        }
      }
      expect(failures).toEqual([]);
    });

    it('answers 404 for an out-of-scope device on every device operation, and leaks no out-of-scope row in any list', async () => {
      const failures: string[] = [];
      const leaks = [waterOut, trafficIn, busIn].flatMap((d) => [d.name, `"deviceId":${d.id},`]);
      for (const { path, method, op } of operations()) {
        if (method !== 'GET' || !op['x-permission'] || !['read', 'live'].includes(op['x-permission'])) continue;
        if (path.startsWith('/api/v1/devices/{id}')) {
          for (const outside of [waterOut, trafficIn]) {
            const res = await t.api('GET', urlOf(path, outside.id), undefined, as(agency));
            if (res.status !== 404) failures.push(`GET ${path} for device ${outside.name}: ${res.status}`);
          }
          continue;
        }
        const res = await fetch(`${t.httpUrl}${urlOf(path, waterIn.id)}`, { headers: { authorization: `Bearer ${agency.key}` } });
        const text = await res.text();
        if (res.status >= 500) failures.push(`GET ${path}: ${res.status}`);
        for (const leak of leaks) if (text.includes(leak)) failures.push(`GET ${path} shows ${leak}`);
      }
      expect(failures).toEqual([]);
    });
  });
});
