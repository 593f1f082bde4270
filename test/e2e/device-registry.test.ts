import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MqttClient } from 'mqtt';
import type pg from 'pg';
import { testPool } from '../support/database.ts';
import { eventually, startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';

interface DeviceJson {
  id: number;
  name: string;
  label: string | null;
  type: string;
  domain: string;
  location: { lat: number; lng: number; alt?: number } | null;
  isGateway: boolean;
  gatewayId: number | null;
  createdAt: string;
  updatedAt: string;
  accessToken?: string;
}
interface Page {
  items: DeviceJson[];
  nextAfter: number | null;
}
interface ImportReport {
  totals: { rows: number; created: number; updated: number; unchanged: number; errors: number };
  ms: number;
  rows: { row: number; name: string | null; status: string; id?: number; accessToken?: string; error?: string }[];
}
interface Problem {
  statusCode: number;
  message: string;
}

describe('device registry over REST', () => {
  let t: TestPlatform;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestPlatform();
    db = testPool(t.databaseUrl, 2);
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  /** A request with a body of any content type. */
  async function send(method: string, path: string, body: string, contentType: string): Promise<{ status: number; body: unknown; text: string }> {
    const res = await fetch(`${t.httpUrl}${path}`, { method, headers: { authorization: `Bearer ${t.adminKey}`, 'content-type': contentType }, body });
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return { status: res.status, body: parsed, text };
  }
  async function download(path: string): Promise<{ status: number; type: string | null; disposition: string | null; text: string }> {
    const res = await fetch(`${t.httpUrl}${path}`, { headers: { authorization: `Bearer ${t.adminKey}` } });
    return { status: res.status, type: res.headers.get('content-type'), disposition: res.headers.get('content-disposition'), text: await res.text() };
  }
  const create = async (body: Record<string, unknown>): Promise<DeviceJson> => {
    const res = await t.api<DeviceJson>('POST', '/api/v1/devices', body);
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body;
  };
  const names = (page: Page) => page.items.map((d) => d.name);

  it('documents every device-management route in the OpenAPI document', async () => {
    const doc = await t.api<{ paths: Record<string, Record<string, { requestBody?: { content: Record<string, unknown> } }>> }>('GET', '/api/v1/openapi.json');
    expect(doc.status).toBe(200);
    expect(Object.keys(doc.body.paths)).toEqual(
      expect.arrayContaining([
        '/api/v1/devices/{id}/token',
        '/api/v1/devices/{id}/credentials',
        '/api/v1/devices/import',
        '/api/v1/devices/export',
        '/api/v1/device-types',
        '/api/v1/device-types/{name}',
      ]),
    );
    expect(Object.keys(doc.body.paths['/api/v1/devices/{id}']!).sort()).toEqual(['delete', 'get', 'put']);
    expect(Object.keys(doc.body.paths['/api/v1/devices/import']!.post!.requestBody!.content).sort()).toEqual(['application/json', 'text/csv']);
  });

  describe('devices: create, replace, delete, rotate', () => {
    it('registers a device with label, gateway flag and gateway, and shows them', async () => {
      const gw = await create({ name: 'reg-gateway', label: '东城网关', isGateway: true, location: { lat: 23.02, lng: 113.76, alt: 12 } });
      expect(gw).toMatchObject({ label: '东城网关', isGateway: true, gatewayId: null, location: { lat: 23.02, lng: 113.76, alt: 12 } });
      const sub = await create({ name: 'reg-sub', type: 'noise-monitor', gatewayId: gw.id });
      expect(sub).toMatchObject({ type: 'noise-monitor', domain: 'environment', label: null, isGateway: false, gatewayId: gw.id });
      const one = await t.api<DeviceJson>('GET', `/api/v1/devices/${sub.id}`);
      expect(one.body).toEqual({ ...sub, accessToken: undefined });
      expect(Object.keys(one.body)).not.toContain('accessToken');

      const plain = await create({ name: 'reg-plain' });
      const refused = [
        [{ name: 'reg-x', gatewayId: 999999 }, /gatewayId: no device 999999/],
        [{ name: 'reg-x', gatewayId: plain.id }, /is not a gateway/],
        [{ name: 'reg-x', label: 'x'.repeat(201) }, /label/],
        [{ name: 'reg-x', isGateway: 'perhaps' }, /isGateway/],
      ] as const;
      for (const [body, message] of refused) {
        const res = await t.api<Problem>('POST', '/api/v1/devices', body);
        expect(res.status, JSON.stringify(body)).toBe(400);
        expect(res.body.message).toMatch(message);
      }
    });

    it('replaces a description with PUT; fields left out are cleared; credentials are kept', async () => {
      const d = await create({ name: 'put-me', type: 'generic', label: 'old', location: { lat: 22.9, lng: 113.6 } });
      const gw = await create({ name: 'put-gw', isGateway: true });
      const res = await t.api<DeviceJson>('PUT', `/api/v1/devices/${d.id}`, {
        name: 'put-me-renamed',
        type: 'air-quality-station',
        label: '南城空气站',
        location: { lat: 23.01, lng: 113.74 },
        gatewayId: gw.id,
      });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ id: d.id, name: 'put-me-renamed', type: 'air-quality-station', domain: 'environment', label: '南城空气站', gatewayId: gw.id, isGateway: false });
      expect(Date.parse(res.body.updatedAt)).toBeGreaterThanOrEqual(Date.parse(d.updatedAt));
      const cleared = await t.api<DeviceJson>('PUT', `/api/v1/devices/${d.id}`, { name: 'put-me-renamed', type: 'air-quality-station' });
      expect(cleared.body).toMatchObject({ label: null, location: null, gatewayId: null, isGateway: false });
      // the token still works
      const client = await t.connect(d.accessToken!);
      await client.endAsync();

      expect((await t.api('PUT', '/api/v1/devices/999999', { name: 'x', type: 'generic' })).status).toBe(404);
      expect((await t.api('PUT', `/api/v1/devices/${d.id}`, { name: 'put-gw', type: 'generic' })).status).toBe(409);
      const bad = [
        [{ name: 'x' }, /type/], // PUT replaces: the type is required
        [{ name: 'x', type: 'no-such-type' }, /unknown device type "no-such-type"/],
        [{ name: 'x', type: 'generic', extra: 1 }, /additional/],
        [{ name: '', type: 'generic' }, /name/],
        [{ name: 'x', type: 'generic', location: { lat: 10 } }, /location/],
        [{ name: 'x', type: 'generic', gatewayId: d.id }, /its own gateway/],
      ] as const;
      for (const [body, message] of bad) {
        const r = await t.api<Problem>('PUT', `/api/v1/devices/${d.id}`, body);
        expect(r.status, JSON.stringify(body)).toBe(400);
        expect(r.body.message).toMatch(message);
      }
      expect((await t.api('PUT', '/api/v1/devices/abc', { name: 'x', type: 'generic' })).status).toBe(400);
    });

    it('refuses to move a device with readings to another domain (readings are stored per domain)', async () => {
      const d = await create({ name: 'domain-keeper', type: 'generic' });
      const empty = await create({ name: 'domain-mover', type: 'generic' });
      const client = await t.connect(d.accessToken!);
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ level: 1 }), { qos: 1 });
      await client.endAsync();
      const refused = await t.api<Problem>('PUT', `/api/v1/devices/${d.id}`, { name: 'domain-keeper', type: 'river-level-station' });
      expect(refused.status).toBe(409);
      expect(refused.body.message).toMatch(/readings in domain generic/);
      expect((await t.api('PUT', `/api/v1/devices/${d.id}`, { name: 'domain-keeper', type: 'generic', label: 'same domain is fine' })).status).toBe(200);
      expect((await t.api('PUT', `/api/v1/devices/${empty.id}`, { name: 'domain-mover', type: 'river-level-station' })).status).toBe(200);
    });

    it('deletes a device (204, then 404) and rotates tokens (404 for unknown devices)', async () => {
      const d = await create({ name: 'delete-me' });
      const del = await send('DELETE', `/api/v1/devices/${d.id}`, '', 'text/plain');
      expect(del.status).toBe(204);
      expect(del.text).toBe('');
      expect((await t.api('GET', `/api/v1/devices/${d.id}`)).status).toBe(404);
      expect((await t.api('DELETE', `/api/v1/devices/${d.id}`)).status).toBe(404);

      const r = await create({ name: 'rotate-me' });
      const rotated = await t.api<DeviceJson>('POST', `/api/v1/devices/${r.id}/token`);
      expect(rotated.status).toBe(200);
      expect(rotated.body.accessToken).toMatch(/^[A-Za-z0-9]{32}$/);
      expect(rotated.body.accessToken).not.toBe(r.accessToken);
      expect(rotated.body.id).toBe(r.id);
      const stored = await db.query('SELECT token_hash, token_lookup FROM devices WHERE id = $1', [r.id]);
      expect(JSON.stringify(stored.rows)).not.toContain(rotated.body.accessToken);
      expect((await t.api('POST', '/api/v1/devices/999999/token')).status).toBe(404);
    });
  });

  describe('MQTT basic credentials over REST', () => {
    it('sets, shows (never the password) and removes the three schemes', async () => {
      const d = await create({ name: 'basic-rest' });
      const path = `/api/v1/devices/${d.id}/credentials`;
      expect((await t.api('GET', path)).body).toEqual({ scheme: null, clientId: null, username: null, hasPassword: false });

      const idOnly = await t.api('PUT', path, { clientId: 'pump-7-client' });
      expect(idOnly).toEqual({ status: 200, body: { scheme: 'client_id', clientId: 'pump-7-client', username: null, hasPassword: false } });
      const userPass = await t.api('PUT', path, { username: 'pump-7', password: 's3cret-Pa55' });
      expect(userPass.body).toEqual({ scheme: 'username_password', clientId: null, username: 'pump-7', hasPassword: true });
      const all = await t.api('PUT', path, { clientId: 'pump-7-client', username: 'pump-7', password: 's3cret-Pa55' });
      expect(all.body).toEqual({ scheme: 'client_id_username_password', clientId: 'pump-7-client', username: 'pump-7', hasPassword: true });
      const got = await t.api<Record<string, unknown>>('GET', path);
      expect(got.body).toEqual(all.body);
      expect(JSON.stringify(got.body)).not.toContain('s3cret');
      const row = await db.query('SELECT * FROM devices WHERE id = $1', [d.id]);
      expect(JSON.stringify(row.rows)).not.toContain('s3cret-Pa55');
      expect(row.rows[0].mqtt_password_hash).toMatch(/^scrypt\$/);

      const del = await send('DELETE', path, '', 'text/plain');
      expect(del.status).toBe(204);
      expect((await t.api('GET', path)).body).toEqual({ scheme: null, clientId: null, username: null, hasPassword: false });
      expect((await t.api('DELETE', path)).status).toBe(204); // nothing to remove: still fine
    });

    it('refuses incomplete, reserved and taken credentials precisely', async () => {
      const a = await create({ name: 'basic-a' });
      const b = await create({ name: 'basic-b' });
      const path = `/api/v1/devices/${b.id}/credentials`;
      await t.api('PUT', `/api/v1/devices/${a.id}/credentials`, { username: 'taken-user', password: 'pw-a' });
      await t.api('PUT', `/api/v1/devices/${a.id}/credentials`, { username: 'taken-user', password: 'pw-a', clientId: 'shared-client' });
      const c = await create({ name: 'basic-c' });
      await t.api('PUT', `/api/v1/devices/${c.id}/credentials`, { clientId: 'taken-client' });

      const bad = [
        [{}, /give a clientId/],
        [{ password: 'only' }, /give a clientId/],
        [{ username: 'u-without-password' }, /username needs a password/],
        [{ clientId: 'x', password: 'p' }, /password a username/],
        [{ clientId: 'provision' }, /reserved/],
        [{ username: 'provision', password: 'p' }, /reserved/],
        [{ username: '', password: 'p' }, /username/],
        [{ username: 'u', password: 'p', token: 'x' }, /additional/],
        [{ clientId: 'x'.repeat(257) }, /clientId/],
      ] as const;
      for (const [body, message] of bad) {
        const res = await t.api<Problem>('PUT', path, body);
        expect(res.status, JSON.stringify(body)).toBe(400);
        expect(res.body.message).toMatch(message);
      }
      const takenUser = await t.api<Problem>('PUT', path, { username: 'taken-user', password: 'other' });
      expect(takenUser.status).toBe(409);
      expect(takenUser.body.message).toMatch(/username "taken-user" is taken/);
      const takenClient = await t.api<Problem>('PUT', path, { clientId: 'taken-client' });
      expect(takenClient.status).toBe(409);
      // A client id used with a username needs no uniqueness: the username identifies the device.
      expect((await t.api('PUT', path, { clientId: 'shared-client', username: 'b-user', password: 'pw-b' })).status).toBe(200);

      for (const method of ['GET', 'PUT', 'DELETE']) {
        const res = await t.api(method, '/api/v1/devices/999999/credentials', method === 'PUT' ? { clientId: 'x' } : undefined);
        expect(res.status, method).toBe(404);
      }
    });
  });

  describe('listing with filters', () => {
    const ids: Record<string, number> = {};
    beforeAll(async () => {
      // A small fleet around Dongguan, plus one in Guangzhou (outside the box used below).
      const fleet = [
        { name: 'flt-river-1', type: 'river-level-station', location: { lat: 23.05, lng: 113.75 } },
        { name: 'flt-river-2', type: 'river-level-station', location: { lat: 22.82, lng: 113.68 } },
        { name: 'flt-air-1', type: 'air-quality-station', location: { lat: 23.02, lng: 113.72 } },
        { name: 'flt-air-gz', type: 'air-quality-station', location: { lat: 23.13, lng: 113.26 } },
        { name: 'flt-bus-1', type: 'bus', location: null },
        { name: 'flt-gen-1', type: 'generic', location: { lat: 22.95, lng: 114.1 } },
        { name: 'flt%odd_1', type: 'generic', location: null },
        { name: 'flt-edge', type: 'generic', location: { lat: 22.9, lng: 113.5 } }, // on the box's corner
      ];
      for (const d of fleet) ids[d.name] = (await create(d)).id;
      // Connection state is kept by the connectivity module; a device with no row never connected.
      await db.query(
        `INSERT INTO device_connectivity (device_id, online, last_seen) VALUES ($1, true, now()), ($2, false, now()), ($3, true, now())
         ON CONFLICT (device_id) DO UPDATE SET online = excluded.online`,
        [ids['flt-river-1'], ids['flt-river-2'], ids['flt-bus-1']],
      );
    });
    const list = async (query: string) => {
      const prefix = query.includes('namePrefix=') ? '' : 'namePrefix=flt&';
      const res = await t.api<Page>('GET', `/api/v1/devices?limit=1000&${prefix}${query}`);
      expect(res.status, query).toBe(200);
      return names(res.body).sort();
    };

    it('filters by domain, type and name prefix (LIKE wildcards are literal)', async () => {
      expect(await list('domain=water')).toEqual(['flt-river-1', 'flt-river-2']);
      expect(await list('domain=traffic')).toEqual(['flt-bus-1']);
      expect(await list('type=air-quality-station')).toEqual(['flt-air-1', 'flt-air-gz']);
      expect(await list('domain=water&type=air-quality-station')).toEqual([]);
      expect(await list('namePrefix=flt-river')).toEqual(['flt-river-1', 'flt-river-2']);
      expect(await list('namePrefix=flt%25')).toEqual(['flt%odd_1']); // %25 is '%'
      expect(await list('namePrefix=flt_')).toEqual([]); // '_' is not a wildcard
    });

    it('filters by online state: a device that never connected is offline', async () => {
      expect(await list('online=true')).toEqual(['flt-bus-1', 'flt-river-1']);
      expect(await list('online=false')).toEqual(['flt%odd_1', 'flt-air-1', 'flt-air-gz', 'flt-edge', 'flt-gen-1', 'flt-river-2']);
      expect(await list('online=true&domain=water')).toEqual(['flt-river-1']);
    });

    it('filters by bounding box of the registered location, edges included', async () => {
      const dongguan = 'bbox=113.5,22.9,113.9,23.1';
      expect(await list(dongguan)).toEqual(['flt-air-1', 'flt-edge', 'flt-river-1']);
      expect(await list(`${dongguan}&domain=water`)).toEqual(['flt-river-1']);
      expect(await list(`${dongguan}&online=false`)).toEqual(['flt-air-1', 'flt-edge']);
      expect(await list('bbox=-180,-90,180,90')).toHaveLength(6); // everything located
    });

    it('pages through a filtered list with the id cursor', async () => {
      const seen: string[] = [];
      let after = 0;
      for (let guard = 0; guard < 10; guard++) {
        const res = await t.api<Page>('GET', `/api/v1/devices?limit=2&namePrefix=flt&online=false&after=${after}`);
        seen.push(...names(res.body));
        expect(res.body.items.length).toBeLessThanOrEqual(2);
        if (res.body.nextAfter === null) break;
        after = res.body.nextAfter;
      }
      expect(seen.sort()).toEqual(await list('online=false'));
    });

    it('refuses bad filters with a precise 400', async () => {
      const cases = [
        ['bbox=113.5,22.9,113.9', /four numbers/],
        ['bbox=113.5,22.9,113.9,abc', /four numbers/],
        ['bbox=113.9,22.9,113.5,23.1', /minLng 113.9 must be less than maxLng 113.5/],
        ['bbox=113.5,23.1,113.9,22.9', /minLat 23.1 must be less than maxLat 22.9/],
        ['bbox=113.5,22.9,113.9,95', /maxLat 95 is outside -90..90/],
        ['bbox=-190,22.9,113.9,23', /minLng -190 is outside -180..180/],
        ['online=perhaps', /online/],
        ['domain=space', /domain/],
        ['type=no-such-type', /unknown device type "no-such-type"/],
        ['limit=0', /limit/],
        ['after=-1', /after/],
      ] as const;
      for (const [query, message] of cases) {
        const res = await t.api<Problem>('GET', `/api/v1/devices?${query}`);
        expect(res.status, query).toBe(400);
        expect(res.body.message, query).toMatch(message);
      }
    });
  });

  describe('device types', () => {
    const pump = {
      name: 'sluice-gate',
      domain: 'water',
      label: { en: 'Sluice gate', zh: '水闸' },
      moving: false,
      acceptsUndeclaredKeys: false,
      keys: { gate_opening: { label: { en: 'Gate opening', zh: '闸门开度' }, unit: '%', min: 0, max: 100 }, upstream_level: { unit: 'm', min: -10, max: 60 } },
    };

    it('creates a custom type; the key dictionary learns its keys at once', async () => {
      const res = await t.api<Record<string, unknown>>('POST', '/api/v1/device-types', pump);
      expect(res.status).toBe(201);
      expect(res.body).toEqual({ ...pump, builtin: false });
      const all = await t.api<{ name: string; builtin?: boolean }[]>('GET', '/api/v1/device-types');
      expect(all.body.find((x) => x.name === 'sluice-gate')).toEqual({ ...pump, builtin: false });
      expect(all.body.find((x) => x.name === 'bus')!.builtin).toBe(true);
      expect((await t.api('GET', '/api/v1/device-types/sluice-gate')).body).toEqual({ ...pump, builtin: false });
      expect((await t.api('GET', '/api/v1/device-types/nope')).status).toBe(404);
      const keys = await db.query<{ name: string }>("SELECT name FROM telemetry_keys WHERE name IN ('gate_opening', 'upstream_level')");
      expect(keys.rows.map((r) => r.name).sort()).toEqual(['gate_opening', 'upstream_level']);
      // defaults: a type that says nothing about moving or undeclared keys is fixed and strict
      const minimal = await t.api<Record<string, unknown>>('POST', '/api/v1/device-types', { name: 'minimal-type', domain: 'generic', label: { en: 'Minimal', zh: '最简' }, keys: {} });
      expect(minimal.body).toMatchObject({ moving: false, acceptsUndeclaredKeys: false });
    });

    it('refuses bad or conflicting declarations', async () => {
      const cases: [unknown, number, RegExp][] = [
        [pump, 409, /already exists/],
        [{ ...pump, name: 'bus' }, 409, /already exists/],
        [{ ...pump, name: 'Bad Name' }, 400, /name/],
        [{ ...pump, name: 'x' }, 400, /name/],
        [{ ...pump, name: 'ok-name', domain: 'space' }, 400, /domain/],
        [{ ...pump, name: 'ok-name', keys: { level: { min: 5, max: 1 } } }, 400, /keys.level: min 5 is greater than max 1/],
        [{ ...pump, name: 'ok-name', keys: { latitude: { unit: '°' } } }, 400, /latitude, longitude and altitude are not declared/],
        [{ ...pump, name: 'ok-name', keys: { level: { minimum: 0 } } }, 400, /additional/],
        [{ ...pump, name: 'ok-name', keys: { level: { min: 'zero' } } }, 400, /min/],
        [{ ...pump, name: 'ok-name', label: { en: 'only english' } }, 400, /zh/],
        [{ ...pump, name: 'ok-name', extra: true }, 400, /additional/],
        [{ ...pump, name: 'ok-name', keys: Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`k${i}`, {}])) }, 400, /keys/],
      ];
      for (const [body, status, message] of cases) {
        const res = await t.api<Problem>('POST', '/api/v1/device-types', body);
        expect(res.status, JSON.stringify(body).slice(0, 120)).toBe(status);
        expect(res.body.message).toMatch(message);
      }
      expect((await t.api('GET', '/api/v1/device-types/ok-name')).status).toBe(404);
    });

    it('replaces a custom type; ingest checks connected devices against the new declaration from their next message', async () => {
      await t.api('POST', '/api/v1/device-types', { ...pump, name: 'weir' });
      const d = await create({ name: 'weir-1', type: 'weir', location: { lat: 23.0, lng: 113.7 } });
      const client = await t.connect(d.accessToken!);
      const errors: { errors: { reason: string; key?: string }[] }[] = [];
      client.on('message', (topic, payload) => {
        if (topic === 'v1/devices/me/errors') errors.push(JSON.parse(payload.toString()));
      });
      await client.subscribeAsync('v1/devices/me/errors', { qos: 1 });
      const ts = Date.UTC(2026, 10, 1);
      const publish = (i: number, values: Record<string, number>) => client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: ts + i, values }), { qos: 1 });

      await publish(0, { gate_opening: 80, flow: 5 });
      await eventually(() => (errors.length === 1 ? true : undefined));
      expect(errors[0]!.errors).toMatchObject([{ reason: 'undeclared_key', key: 'flow' }]);

      const narrower = { ...pump, name: undefined, keys: { gate_opening: { unit: '%', min: 0, max: 50 }, flow: { unit: 'm³/s', min: 0, max: 100 } } };
      delete narrower.name;
      const put = await t.api<Record<string, unknown>>('PUT', '/api/v1/device-types/weir', narrower);
      expect(put.status).toBe(200);
      expect(put.body).toMatchObject({ name: 'weir', builtin: false, keys: narrower.keys });
      await publish(1, { gate_opening: 80, flow: 5 }); // same connection, no reconnect
      await eventually(() => (errors.length === 2 ? true : undefined));
      expect(errors[1]!.errors).toMatchObject([{ reason: 'out_of_range', key: 'gate_opening' }]);
      const stored = await storedReadings(db, d.id);
      expect(stored.map((r) => r.values)).toEqual([{ gate_opening: 80 }, { flow: 5 }]);
      expect(client.connected).toBe(true);
      await client.endAsync();

      // a new connection sees the new declaration too
      const again: MqttClient = await t.connect(d.accessToken!);
      await again.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: ts + 2, values: { gate_opening: 40, flow: 7 } }), { qos: 1 });
      await again.endAsync();
      expect((await storedReadings(db, d.id)).at(-1)!.values).toEqual({ gate_opening: 40, flow: 7 });
    });

    it('keeps built-in types read-only, and deletes only unused custom types', async () => {
      const body = { domain: 'water', label: { en: 'x', zh: 'x' }, moving: false, acceptsUndeclaredKeys: true, keys: {} };
      const put = await t.api<Problem>('PUT', '/api/v1/device-types/river-level-station', body);
      expect(put.status).toBe(403);
      expect(put.body.message).toMatch(/built in and read-only/);
      expect((await t.api('DELETE', '/api/v1/device-types/generic')).status).toBe(403);
      expect((await t.api('PUT', '/api/v1/device-types/nope', body)).status).toBe(404);
      expect((await t.api('DELETE', '/api/v1/device-types/nope')).status).toBe(404);

      await t.api('POST', '/api/v1/device-types', { ...body, name: 'tide-gauge' });
      const d = await create({ name: 'tide-1', type: 'tide-gauge' });
      const moved = await t.api<Problem>('PUT', '/api/v1/device-types/tide-gauge', { ...body, domain: 'environment' });
      expect(moved.status).toBe(409);
      expect(moved.body.message).toMatch(/has 1 device\(s\): its domain cannot change/);
      const inUse = await t.api<Problem>('DELETE', '/api/v1/device-types/tide-gauge');
      expect(inUse.status).toBe(409);
      expect(inUse.body.message).toMatch(/used by 1 device/);
      expect((await t.api('DELETE', `/api/v1/devices/${d.id}`)).status).toBe(204);
      expect((await t.api('PUT', '/api/v1/device-types/tide-gauge', { ...body, domain: 'environment' })).status).toBe(200);
      expect((await t.api('DELETE', '/api/v1/device-types/tide-gauge')).status).toBe(204);
      expect((await t.api('GET', '/api/v1/device-types/tide-gauge')).status).toBe(404);
      expect((await t.api<Problem>('POST', '/api/v1/devices', { name: 'tide-2', type: 'tide-gauge' })).status).toBe(400);
    });
  });

  describe('bulk import and export', () => {
    it('imports JSON rows by name: created (token shown once), unchanged, updated, and per-row errors', async () => {
      const rows = [
        { name: 'imp-1', type: 'river-level-station', label: '一号站', location: { lat: 23.01, lng: 113.7 } },
        { name: 'imp-2', type: 'bus', lat: 22.99, lng: 113.8, alt: 5 },
        { name: 'imp-3', isGateway: true },
        { name: 'imp-bad-lat', lat: 95, lng: 113 },
        { name: 'imp-bad-type', type: 'hovercraft' },
        { name: 'imp-extra', colour: 'red' },
        { type: 'generic' },
        'not an object',
        { name: 'imp-1', type: 'generic' },
        { name: 'imp-both', location: { lat: 1, lng: 2 }, lat: 1, lng: 2 },
        { name: 'imp-half', lat: 1 },
      ];
      const res = await t.api<ImportReport>('POST', '/api/v1/devices/import', rows);
      expect(res.status).toBe(200);
      expect(res.body.totals).toEqual({ rows: 11, created: 3, updated: 0, unchanged: 0, errors: 8 });
      const byRow = res.body.rows;
      expect(byRow.map((r) => [r.row, r.status])).toEqual(rows.map((_, i) => [i, i < 3 ? 'created' : 'error']));
      for (const r of byRow.slice(0, 3)) expect(r.accessToken).toMatch(/^[A-Za-z0-9]{32}$/);
      expect(byRow[3]!.error).toMatch(/lat must be <= 90/);
      expect(byRow[4]!.error).toMatch(/unknown device type "hovercraft"/);
      expect(byRow[5]!.error).toMatch(/unknown field "colour"/);
      expect(byRow[6]!.error).toMatch(/name/);
      expect(byRow[7]!.error).toMatch(/expected an object/);
      expect(byRow[8]!.error).toMatch(/appears earlier in this import \(row 0\)/);
      expect(byRow[9]!.error).toMatch(/not both/);
      expect(byRow[10]!.error).toMatch(/lat and lng go together/);

      const imp2 = await t.api<DeviceJson>('GET', `/api/v1/devices/${byRow[1]!.id}`);
      expect(imp2.body).toMatchObject({ name: 'imp-2', type: 'bus', location: { lat: 22.99, lng: 113.8, alt: 5 }, label: null, isGateway: false });
      // the token in the report is the device's
      const client = await t.connect(byRow[1]!.accessToken!);
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ speed: 30 }), { qos: 1 });
      await client.endAsync();
      expect((await storedReadings(db, byRow[1]!.id!)).map((r) => r.values)).toEqual([{ speed: 30 }]);

      const again = await t.api<ImportReport>('POST', '/api/v1/devices/import', rows.slice(0, 3));
      expect(again.body.totals).toEqual({ rows: 3, created: 0, updated: 0, unchanged: 3, errors: 0 });
      expect(again.body.rows.every((r) => r.accessToken === undefined)).toBe(true);
      const first = rows[0] as Record<string, unknown>;
      const changed = await t.api<ImportReport>('POST', '/api/v1/devices/import', [{ ...first, label: '一号站（新）' }, rows[1], { name: 'imp-3' }]);
      expect(changed.body.rows.map((r) => r.status)).toEqual(['updated', 'unchanged', 'updated']);
      expect((await t.api<DeviceJson>('GET', `/api/v1/devices/${byRow[0]!.id}`)).body.label).toBe('一号站（新）');
      expect((await t.api<DeviceJson>('GET', `/api/v1/devices/${byRow[2]!.id}`)).body.isGateway).toBe(false);

      expect((await t.api<Problem>('POST', '/api/v1/devices/import', { name: 'not-an-array' })).status).toBe(400);
      expect((await send('POST', '/api/v1/devices/import', 'name\nx', 'application/xml')).status).toBe(415);
    });

    it('imports CSV: header in any order, quoting, BOM, per-row errors with line numbers', async () => {
      const csv = [
        '\ufeffName,LAT,lng,type,label,isGateway,alt',
        'csv-1,23.02,113.75,air-quality-station,"Songshan Lake, north",false,',
        'csv-2,,,generic,,yes,',
        '',
        'csv-3,22.9,113.6,noise-monitor,"multi\nline label",0,7',
        'csv-bad-lat,abc,113.6,generic,,,',
        'csv-short,1,2',
        'csv-bad-flag,,,generic,,maybe,',
        ',,,generic,,,',
        'csv-bad-type,,,no-such-type,,,',
        'csv-1,,,generic,,,',
      ].join('\r\n');
      const res = await send('POST', '/api/v1/devices/import', csv, 'text/csv');
      expect(res.status, res.text).toBe(200);
      const report = res.body as ImportReport;
      expect(report.totals).toEqual({ rows: 9, created: 3, updated: 0, unchanged: 0, errors: 6 });
      // rows are line numbers, as a spreadsheet shows them (line 4 is empty, csv-3 spans lines 5–6)
      expect(report.rows.map((r) => [r.row, r.name, r.status])).toEqual([
        [2, 'csv-1', 'created'],
        [3, 'csv-2', 'created'],
        [5, 'csv-3', 'created'],
        [7, 'csv-bad-lat', 'error'],
        [8, null, 'error'],
        [9, 'csv-bad-flag', 'error'],
        [10, null, 'error'],
        [11, 'csv-bad-type', 'error'],
        [12, 'csv-1', 'error'],
      ]);
      const byName = (n: string) => report.rows.find((r) => r.name === n)!;
      const byRow = (row: number) => report.rows.find((r) => r.row === row)!;
      expect(byRow(7).error).toMatch(/lat: "abc" is not a number/);
      expect(byRow(8).error).toMatch(/CSV: Invalid Record Length: expect 7, got 3/);
      expect(byRow(9).error).toMatch(/isGateway: "maybe" is not true or false/);
      expect(byRow(10).error).toMatch(/name is empty/);
      expect(byRow(11).error).toMatch(/unknown device type/);
      expect(byRow(12).error).toMatch(/appears earlier in this import \(row 2\)/);

      const one = (await t.api<DeviceJson>('GET', `/api/v1/devices/${byName('csv-1').id}`)).body;
      expect(one).toMatchObject({ type: 'air-quality-station', label: 'Songshan Lake, north', location: { lat: 23.02, lng: 113.75 }, isGateway: false });
      const two = (await t.api<DeviceJson>('GET', `/api/v1/devices/${byName('csv-2').id}`)).body;
      expect(two).toMatchObject({ type: 'generic', label: null, location: null, isGateway: true });
      const three = (await t.api<DeviceJson>('GET', `/api/v1/devices/${byName('csv-3').id}`)).body;
      expect(three).toMatchObject({ label: 'multi\nline label', location: { lat: 22.9, lng: 113.6, alt: 7 } });

      const whole = [
        ['name,colour\nx,red', /unknown column "colour"/],
        ['type,label\ngeneric,x', /name column is required/],
        ['name,name\nx,y', /appears twice/],
        ['', /empty/],
      ] as const;
      for (const [body, message] of whole) {
        const r = await send('POST', '/api/v1/devices/import', body, 'text/csv');
        expect(r.status, body).toBe(400);
        expect((r.body as Problem).message).toMatch(message);
      }
    });

    it('exports JSON and CSV with the list filters, and an export imports back unchanged', async () => {
      const json = await download('/api/v1/devices/export?namePrefix=imp-');
      expect(json.status).toBe(200);
      expect(json.type).toMatch(/^application\/json/);
      expect(json.disposition).toBe('attachment; filename="devices.json"');
      const devices = JSON.parse(json.text) as DeviceJson[];
      expect(devices.map((d) => d.name)).toEqual(['imp-1', 'imp-2', 'imp-3']);
      expect(json.text).not.toMatch(/accessToken|token_hash|password/);
      const listed = await t.api<Page>('GET', '/api/v1/devices?namePrefix=imp-');
      expect(devices).toEqual(listed.body.items);

      const csv = await download('/api/v1/devices/export?format=csv&namePrefix=csv-');
      expect(csv.type).toMatch(/^text\/csv/);
      const lines = csv.text.trimEnd().split('\n');
      expect(lines[0]).toBe('id,name,type,domain,label,lat,lng,alt,isGateway,gatewayId,createdAt,updatedAt');
      expect(lines[1]).toMatch(/^\d+,csv-1,air-quality-station,environment,"Songshan Lake, north",23.02,113.75,,false,,/);
      expect(csv.text).toContain('"multi\nline label"');

      const reJson = await t.api<ImportReport>('POST', '/api/v1/devices/import', devices);
      expect(reJson.body.totals).toEqual({ rows: 3, created: 0, updated: 0, unchanged: 3, errors: 0 });
      const reCsv = await send('POST', '/api/v1/devices/import', csv.text, 'text/csv');
      expect((reCsv.body as ImportReport).totals).toEqual({ rows: 3, created: 0, updated: 0, unchanged: 3, errors: 0 });

      expect(JSON.parse((await download('/api/v1/devices/export?namePrefix=nothing-like-this')).text)).toEqual([]);
      expect((await download('/api/v1/devices/export?format=csv&namePrefix=nothing-like-this')).text.trim()).toBe(lines[0]);
      expect((await download('/api/v1/devices/export?format=xml')).status).toBe(400);
      expect((await download('/api/v1/devices/export?bbox=1,2,3')).status).toBe(400);
      const water = JSON.parse((await download('/api/v1/devices/export?domain=water&namePrefix=imp-')).text) as DeviceJson[];
      expect(water.map((d) => d.name)).toEqual(['imp-1']);
    });

    // Hashing 5,000 tokens takes ~8 s of two cores; more on a machine busy with other tests.
    it('imports 5,000 CSV rows in seconds, then again unchanged, and exports them all', { timeout: 180_000 }, async () => {
      const n = 5000;
      const csv = ['name,type,lat,lng,label'];
      for (let i = 0; i < n; i++) csv.push(`bulk-${String(i).padStart(5, '0')},${i % 2 ? 'noise-monitor' : 'generic'},${(22.6 + (i % 100) * 0.006).toFixed(4)},${(113.5 + Math.floor(i / 100) * 0.016).toFixed(4)},站点 ${i}`);
      const body = csv.join('\n');
      let started = performance.now();
      const first = await send('POST', '/api/v1/devices/import', body, 'text/csv');
      const firstMs = performance.now() - started;
      expect(first.status).toBe(200);
      const report = first.body as ImportReport;
      expect(report.totals).toEqual({ rows: n, created: n, updated: 0, unchanged: 0, errors: 0 });
      expect(new Set(report.rows.map((r) => r.accessToken)).size).toBe(n);
      expect((await db.query("SELECT count(*)::int AS n FROM devices WHERE name LIKE 'bulk-%'")).rows[0].n).toBe(n);

      started = performance.now();
      const second = await send('POST', '/api/v1/devices/import', body, 'text/csv');
      const secondMs = performance.now() - started;
      expect((second.body as ImportReport).totals).toEqual({ rows: n, created: 0, updated: 0, unchanged: n, errors: 0 });

      started = performance.now();
      const exported = await download('/api/v1/devices/export?format=csv&namePrefix=bulk-');
      const exportMs = performance.now() - started;
      expect(exported.text.trimEnd().split('\n')).toHaveLength(n + 1);

      // A token from the import works.
      const last = report.rows.at(-1)!;
      const client = await t.connect(last.accessToken!);
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ noise: 55 }), { qos: 1 });
      await client.endAsync();
      expect((await storedReadings(db, last.id!)).map((r) => r.values)).toEqual([{ noise: 55 }]);
      // Measured, not asserted (speed is checked by benchmarks, not timed tests).
      console.log(`import of ${n} new devices: ${Math.round(firstMs)} ms (server ${report.ms} ms); again, all unchanged: ${Math.round(secondMs)} ms; CSV export: ${Math.round(exportMs)} ms`);
    });
  });
});
