import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, testPool, type TestDatabase } from '../test/support/database.ts';
import { migrate } from '../db/migrate.ts';
import { PERMISSION_NAMES } from './access/permissions.ts';
import { bootstrapPrincipal, type Principal } from './access/principal.ts';
import { UNRESTRICTED } from './access/scope.ts';
import { AuditLog, essentialsOf, scrub } from './audit.ts';
import { createLogger } from './log.ts';

const log = createLogger('silent');

describe('essentialsOf', () => {
  const ring = [
    [113.7, 22.9],
    [113.8, 22.9],
    [113.8, 23.05],
    [113.7, 23.05],
    [113.7, 22.9],
  ];

  it('records a polygon as its vertex count and bounding box, never its coordinates', () => {
    const geometry = { type: 'Polygon', coordinates: [ring] };
    const e = essentialsOf('/api/v1/spatial/history', {}, { geometry, from: '2026-01-01T00:00:00Z', to: '2026-01-02T00:00:00Z', keys: ['level', 'flow'], domain: ['water'] });
    expect(e).toEqual({
      area: { kind: 'polygon', vertices: 5, bbox: [113.7, 22.9, 113.8, 23.05] },
      window: { from: '2026-01-01T00:00:00Z', to: '2026-01-02T00:00:00Z' },
      keys: ['level', 'flow'],
      domains: ['water'],
    });
    expect(JSON.stringify(e)).not.toContain('[113.7,22.9]');
  });

  it('reads a GET geometry (JSON text), a Feature and a MultiPolygon the same way', () => {
    expect(essentialsOf('/api/v1/spatial/latest', { geometry: JSON.stringify({ type: 'Feature', properties: {}, geometry: { type: 'Polygon', coordinates: [ring] } }) }, undefined).area).toEqual({
      kind: 'polygon',
      vertices: 5,
      bbox: [113.7, 22.9, 113.8, 23.05],
    });
    const shifted = ring.map(([lng, lat]) => [lng! + 0.5, lat! + 0.1]);
    expect(essentialsOf('/api/v1/spatial/export', {}, { geometry: { type: 'MultiPolygon', coordinates: [[ring], [shifted]] } }).area).toEqual({
      kind: 'multipolygon',
      vertices: 10,
      polygons: 2,
      bbox: [113.7, 22.9, 114.3, 23.15],
    });
    expect(essentialsOf('/api/v1/spatial/latest', { geometry: '{not json' }, undefined).area).toEqual({ kind: 'polygon', invalid: true });
    expect(essentialsOf('/api/v1/spatial/latest', {}, { geometry: { type: 'Point', coordinates: [1, 2] } }).area).toEqual({ kind: 'polygon', invalid: true });
  });

  it('records a bbox, a circle and a count of cells', () => {
    expect(essentialsOf('/api/v1/spatial/latest', { bbox: '113.7,22.9,113.8,23.05', format: 'json', limit: 50 }, undefined)).toEqual({
      area: { kind: 'bbox', bbox: [113.7, 22.9, 113.8, 23.05] },
      format: 'json',
      limit: 50,
    });
    expect(essentialsOf('/api/v1/spatial/history', { lat: 23.02, lng: 113.75, radius: 500 }, undefined).area).toEqual({ kind: 'circle', centre: [113.75, 23.02], radius: 500 });
    expect(essentialsOf('/api/v1/spatial/aggregate', {}, { cells: ['8a411c0d1d2ffff', '8a411c0d1d37fff'], key: 'level', resolution: 8 })).toEqual({
      area: { kind: 'cells', cells: 2 },
      keys: ['level'],
      resolution: 8,
    });
  });

  it('takes only named parameters: never names, secrets or values written', () => {
    const e = essentialsOf(
      '/api/v1/devices/:id/credentials',
      { key: 'glk_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG', token: 'secret-token' },
      { password: 'hunter2', accessToken: 'tok', name: 'pump 7', values: { level: 3 } },
    );
    expect(e).toEqual({});
  });

  it('masks anything that looks like a credential, and bounds lengths', () => {
    const e = essentialsOf('/api/v1/devices/:id/telemetry', { keys: 'level,glk_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG', from: 'x'.repeat(1000) }, undefined);
    expect(e.keys).toEqual(['level', 'glk_…']);
    expect((e.window as { from: string }).from.length).toBeLessThanOrEqual(101);
    expect(essentialsOf('/api/v1/spatial/history', { keys: Array.from({ length: 80 }, (_, i) => `k${i}`) }, undefined).keys).toHaveLength(51);
  });

  it('scrub masks API keys, JWTs and given secrets', () => {
    expect(scrub('API key glk_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG refused')).toBe('API key glk_… refused');
    expect(scrub('token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln here')).toBe('token <token> here');
    expect(scrub('the key is s3cretAdminKey!', 500, ['s3cretAdminKey'])).toBe('the key is <secret>!');
  });
});

describe('AuditLog: batched writes, bounded while the database does not take them', () => {
  let db: TestDatabase;
  let pool: pg.Pool;
  const principal: Principal = {
    kind: 'key',
    id: 'key:7',
    keyId: 7,
    name: 'flood dashboard',
    owner: '东莞市水务局',
    roles: ['agency'],
    permissions: new Set(['read']),
    scope: UNRESTRICTED,
    expiresAt: null,
  };

  beforeAll(async () => {
    db = await createTestDatabase();
    pool = testPool(db.url, 4);
    await migrate(pool, log);
  });
  afterAll(async () => {
    await pool?.end();
    await db?.drop();
  });

  it('writes entries in batches with every column', async () => {
    const audit = new AuditLog({ pool, log, flushMs: 60_000, batchSize: 3 });
    audit.start();
    const at = Date.parse('2026-03-01T08:00:00Z');
    for (let i = 0; i < 7; i++) {
      audit.record({
        kind: 'http',
        at: at + i,
        principal,
        method: 'GET',
        route: '/api/v1/devices/:id/telemetry',
        deviceId: 42,
        essentials: { keys: ['level'] },
        status: 200,
        rows: i,
        bytes: 1000 + i,
        durationMs: 1.5,
        sourceIp: '127.0.0.1',
        userAgent: 'test',
      });
    }
    audit.record({ kind: 'stream', principal: bootstrapPrincipal(new Set(PERMISSION_NAMES)), route: 'subscribe', status: 200, essentials: { domain: 'water' } });
    audit.record({ kind: 'http', principal: null, method: 'GET', route: '/api/v1/devices', status: 401, reason: 'unknown API key' });
    await audit.stop();
    const { rows } = await pool.query('SELECT * FROM audit_log ORDER BY id');
    expect(rows).toHaveLength(9);
    expect(audit.written).toBe(9);
    expect(rows[0]).toMatchObject({
      at: new Date(at),
      principal: 'key:7',
      principal_name: 'flood dashboard',
      owner: '东莞市水务局',
      roles: ['agency'],
      kind: 'http',
      method: 'GET',
      route: '/api/v1/devices/:id/telemetry',
      device_id: 42,
      essentials: { keys: ['level'] },
      status: 200,
      reason: null,
      rows: 0,
      bytes: '1000',
      duration_ms: 1.5,
      source_ip: '127.0.0.1',
      user_agent: 'test',
    });
    expect(rows[7]).toMatchObject({ kind: 'stream', principal: 'bootstrap', roles: ['admin'], route: 'subscribe', method: null, essentials: { domain: 'water' } });
    expect(rows[8]).toMatchObject({ principal: null, principal_name: null, roles: [], status: 401, reason: 'unknown API key' });
  });

  it('keeps entries while the table cannot be written, dropping the oldest beyond the bound, then writes the rest', async () => {
    await pool.query('DELETE FROM audit_log');
    const audit = new AuditLog({ pool, log, flushMs: 60_000, batchSize: 10, maxBuffered: 25 });
    await pool.query('ALTER TABLE audit_log RENAME TO audit_log_away');
    try {
      for (let i = 0; i < 40; i++) audit.record({ kind: 'http', principal, route: `/r/${i}`, status: 200 });
      await audit.flush();
      expect(audit.buffered).toBe(25);
      expect(audit.dropped).toBe(15);
    } finally {
      await pool.query('ALTER TABLE audit_log_away RENAME TO audit_log');
    }
    await audit.stop();
    const { rows } = await pool.query<{ route: string }>('SELECT route FROM audit_log ORDER BY id');
    expect(rows.map((r) => r.route)).toEqual(Array.from({ length: 25 }, (_, i) => `/r/${i + 15}`));
  });

  it('never writes the secrets it is given', async () => {
    await pool.query('DELETE FROM audit_log');
    const audit = new AuditLog({ pool, log, secrets: ['adminKeyValue123456'] });
    audit.record({ kind: 'http', principal: null, route: '/x', status: 401, reason: 'bad adminKeyValue123456', userAgent: 'curl adminKeyValue123456', essentials: { odd: 'adminKeyValue123456' } });
    await audit.stop();
    const { rows } = await pool.query('SELECT row_to_json(a)::text AS t FROM audit_log a');
    expect(rows).toHaveLength(1);
    expect(rows[0].t).not.toContain('adminKeyValue123456');
  });
});
