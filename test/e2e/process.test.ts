import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { spawnGuanlink, waitReady, type GuanlinkProcess } from '../support/process.ts';
import { storedReadings } from '../support/readings.ts';

/**
 * The platform as an operator runs it: its own process, configured by environment variables,
 * stopped by a signal. A signal must stop new work, commit what was accepted, and exit 0.
 */
describe('guanlink process', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  });

  async function streamUntilSignal(p: GuanlinkProcess, adminKey: string, signal: NodeJS.Signals, toGroup = false) {
    const created = await fetch(`${p.httpUrl}/api/v1/devices`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'shutdown-probe', location: { lat: 23, lng: 113.7 } }),
    });
    expect(created.status).toBe(201);
    const { id, accessToken } = (await created.json()) as { id: number; accessToken: string };
    const client = await mqtt.connectAsync(p.mqttUrl, { username: accessToken, reconnectPeriod: 0 });
    client.on('error', () => {});
    const acked: number[] = [];
    const t0 = Date.UTC(2026, 10, 25);
    const sends: Promise<void>[] = [];
    let signalled = false;
    for (let i = 0; i < 3000; i++) {
      sends.push(
        client
          .publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: t0 + i, values: { n: i } }), { qos: 1 })
          .then(() => {
            acked.push(i);
            if (!signalled && acked.length >= 200) {
              signalled = true;
              if (toGroup) process.kill(-p.child.pid!, signal);
              else p.child.kill(signal);
            }
          })
          .catch(() => {}),
      );
      if (i % 100 === 99) await new Promise((r) => setImmediate(r));
    }
    await Promise.race([Promise.allSettled(sends), p.exited]);
    const code = await p.exited;
    client.end(true);
    return { id, acked, code };
  }

  async function storedNs(url: string, deviceId: number): Promise<Set<number>> {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      return new Set((await storedReadings(c, deviceId)).map((r) => r.values.n!));
    } finally {
      await c.end();
    }
  }

  it.runIf(inject('databaseKind') === 'embedded')(
    'starts on an embedded PostgreSQL with a generated admin key, and Ctrl-C commits accepted readings and stops the database',
    async () => {
      const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-proc-'));
      cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
      const p = await spawnGuanlink({ DATA_DIR: dataDir, GUANLINK_ADMIN_KEY: undefined }, undefined, undefined, { processGroup: true });
      cleanups.push(async () => void p.child.kill('SIGKILL'));
      await waitReady(p);
      const keyFile = path.join(dataDir, 'admin-key');
      const adminKey = (await readFile(keyFile, 'utf8')).trim();
      expect(adminKey.length).toBeGreaterThanOrEqual(16);
      // Readable by its owner only; the banner says where it is, never the key itself (output ends up in logs).
      expect((await stat(keyFile)).mode & 0o777).toBe(0o600);
      expect(p.output()).not.toContain(adminKey);
      expect(p.output()).toContain(`Admin key     in ${path.resolve(keyFile)} (mode 0600; not printed)`);
      expect(p.output()).toContain(`Live map      http://127.0.0.1:${p.httpPort}/ `);
      expect(p.output()).toContain(`POST http://127.0.0.1:${p.httpPort}/api/v1/keys`);
      expect(existsSync(path.join(dataDir, 'postgres', 'PG_VERSION'))).toBe(true);

      // Ctrl-C in a terminal: SIGINT to the whole process group, the embedded PostgreSQL included.
      const { id, acked, code } = await streamUntilSignal(p, adminKey, 'SIGINT', true);
      expect(code).toBe(0);
      expect(p.output()).toContain('stopped');
      expect(p.output()).not.toContain('the database system is shutting down');
      // The embedded PostgreSQL was stopped with it.
      expect(existsSync(path.join(dataDir, 'postgres', 'postmaster.pid'))).toBe(false);

      // Start again on the same data: the key is kept and every acknowledged reading is there.
      const again = await spawnGuanlink({ DATA_DIR: dataDir });
      cleanups.push(async () => void again.child.kill('SIGKILL'));
      await waitReady(again);
      const res = await fetch(`${again.httpUrl}/api/v1/devices/${id}/telemetry?keys=n&limit=100000`, { headers: { authorization: `Bearer ${adminKey}` } });
      const body = (await res.json()) as { n: { value: number }[] };
      const stored = new Set(body.n.map((p) => p.value));
      expect(acked.length).toBeGreaterThanOrEqual(200);
      expect(acked.filter((n) => !stored.has(n))).toEqual([]);
      again.child.kill('SIGTERM');
      expect(await again.exited).toBe(0);
    },
  );

  it('on SIGTERM with DATABASE_URL, commits every acknowledged reading and exits 0', async () => {
    const db: TestDatabase = await createTestDatabase();
    cleanups.push(() => db.drop());
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-proc-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const adminKey = 'test-admin-key-0123456789';
    const p = await spawnGuanlink({ DATA_DIR: dataDir, DATABASE_URL: db.url, GUANLINK_ADMIN_KEY: adminKey });
    cleanups.push(async () => void p.child.kill('SIGKILL'));
    await waitReady(p);
    expect(existsSync(path.join(dataDir, 'postgres'))).toBe(false);
    expect(p.output()).toContain('Admin key     from GUANLINK_ADMIN_KEY (not printed)');
    const { id, acked, code } = await streamUntilSignal(p, adminKey, 'SIGTERM');
    expect(code).toBe(0);
    const stored = await storedNs(db.url, id);
    expect(acked.length).toBeGreaterThanOrEqual(200);
    expect(acked.filter((n) => !stored.has(n))).toEqual([]);
    expect(p.output()).not.toContain(adminKey);
  });

  it('refuses to start with a clear message when configuration is invalid', async () => {
    const p = await spawnGuanlink({ MQTT_PORT: 'abc', INGEST_BATCH_SIZE: '0' });
    const code = await p.exited;
    expect(code).toBe(2);
    expect(p.output()).toContain('MQTT_PORT: expected an integer');
    expect(p.output()).toContain('INGEST_BATCH_SIZE');
  });
});
