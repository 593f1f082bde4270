import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { controlledServer, type ControlledServer } from '../support/database-control.ts';
import { createTestDatabase, type TestDatabase } from '../support/database.ts';
import { spawnGuanlink, waitReady, type GuanlinkProcess } from '../support/process.ts';
import { streamReadings } from '../support/stream.ts';
import { expectExactlyStored } from '../support/verify.ts';

const DEVICES = 100;
const PER_DEVICE = 800; // 80k QoS 1 readings
const T0 = Date.UTC(2026, 10, 22);
const MAX_QUEUE_BYTES = 256 * 1024;
const OUTAGE_MS = 30_000;
const ADMIN_KEY = 'outage-test-admin-key-0123456789';
// Firmware with deep queues: far more in flight (100 × 500) than the queue bound admits.
const WINDOW = 500;
// Memory of one message a device sent that waits unread-to-completion (aedes packet + our
// bookkeeping), measured with a heap snapshot after GC: ~1.6 KB.
const HELD_MESSAGE_BYTES = 2048;

const canControl = inject('databaseKind') === 'embedded' || Boolean(process.env.DATABASE_CONTROL);

async function scrape(p: GuanlinkProcess): Promise<Record<string, number>> {
  const text = await (await fetch(`${p.httpUrl}/metrics`)).text();
  const pick = (name: string) => Number(text.split('\n').find((l) => l.startsWith(`${name} `))?.split(' ')[1] ?? Number.NaN);
  return {
    bytes: pick('guanlink_ingest_queue_bytes'),
    paused: pick('guanlink_ingest_paused'),
    writable: pick('guanlink_database_writable'),
    rss: pick('guanlink_process_resident_memory_bytes'),
    heap: pick('guanlink_nodejs_heap_size_used_bytes'),
    keepaliveTimeouts: Number(text.match(/^guanlink_device_disconnects_total\{reason="keepalive_timeout"\} (\d+)/m)?.[1] ?? 0),
  };
}

/**
 * The database is down for 30 s while devices keep publishing: the platform's memory stays within
 * its byte bound (its broker stops reading from sockets), nothing is acknowledged while it cannot
 * be committed, and once the database returns everything is stored without intervention.
 */
describe('backpressure during a database outage', () => {
  let server: ControlledServer | undefined;
  let db: TestDatabase | undefined;
  let p: GuanlinkProcess | undefined;
  let dataDir: string | undefined;
  afterAll(async () => {
    await server?.start().catch(() => {});
    p?.child.kill('SIGKILL');
    await db?.drop().catch(() => {});
    await server?.dispose();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it.runIf(canControl)('keeps memory bounded, acknowledges nothing uncommitted, and loses nothing over a 30 s outage', async () => {
    const testStart = Date.now();
    // What happened when, printed with any failure: a stall must say where it stalled.
    const timeline: string[] = [];
    const mark = (what: string) => timeline.push(`${((Date.now() - testStart) / 1000).toFixed(1)}s ${what}`);
    const story = () => `${timeline.join('\n')}\n--- guanlink output (tail) ---\n${p?.output().slice(-6000) ?? ''}`;
    server = (await controlledServer())!;
    db = await createTestDatabase(server.url);
    dataDir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-outage-'));
    p = await spawnGuanlink({ DATABASE_URL: db.url, DATA_DIR: dataDir, GUANLINK_ADMIN_KEY: ADMIN_KEY, INGEST_MAX_QUEUE_BYTES: String(MAX_QUEUE_BYTES) });
    await waitReady(p);
    const devices = [];
    for (let i = 0; i < DEVICES; i++) {
      const res = await fetch(`${p.httpUrl}/api/v1/devices`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `outage-${i}` }),
      });
      const d = (await res.json()) as { id: number; accessToken: string };
      devices.push({ id: d.id, token: d.accessToken });
    }
    const before = await scrape(p);
    mark('devices registered');

    let acked = 0;
    const samples: Record<string, number>[] = [];
    let outage: Promise<void> | undefined;
    let ackedWhenDown = -1;
    let ackedBeforeUp = -1;
    let upAt = 0;
    let outageFailed: Error | undefined;
    const result = await streamReadings({
      mqttUrl: p.mqttUrl,
      devices,
      perDevice: PER_DEVICE,
      t0: T0,
      window: WINDOW,
      // Leaves time inside the test's own timeout to report what it saw.
      deadlineMs: 270_000 - (Date.now() - testStart),
      onProgress: (n) => {
        acked = n;
        if (n % 10_000 === 0) mark(`${n} acknowledged`);
        if (!outage && n >= 5000) {
          outage = (async () => {
            mark('stopping the database');
            await server!.stop();
            mark('database stopped');
            // Acknowledgements of batches committed just before the stop may still be on their way.
            await new Promise((r) => setTimeout(r, 1000));
            ackedWhenDown = acked;
            const until = Date.now() + OUTAGE_MS - 1000;
            while (Date.now() < until) {
              samples.push({ ...(await scrape(p!)), acked });
              await new Promise((r) => setTimeout(r, 250));
            }
            ackedBeforeUp = acked;
            mark(`starting the database (${acked} acknowledged)`);
            await server!.start();
            upAt = Date.now();
            mark('database started');
          })().catch(async (err: Error) => {
            outageFailed = err;
            mark(`the outage step failed: ${err.message}`);
            await server!.start().catch(() => {});
          });
        }
      },
    });
    mark(`stream ended: ${result.totalAcked} acknowledged, ${result.reconnects} reconnects`);
    if (outageFailed) throw new Error(`could not stop and start the database as planned\n${story()}`);
    expect(result.totalAcked, story()).toBe(DEVICES * PER_DEVICE);
    await outage;
    const recoveredMs = Date.now() - upAt;

    expect(samples.length).toBeGreaterThan(50);
    // Nothing is acknowledged while it cannot be committed.
    expect(ackedBeforeUp).toBe(ackedWhenDown);
    expect(samples.every((s) => s.writable === 0 || s === samples[0])).toBe(true);
    // The bound held: the broker stopped reading from the publishers' sockets.
    const peak = Math.max(...samples.map((s) => s.bytes!));
    expect(peak).toBeGreaterThan(MAX_QUEUE_BYTES / 2);
    expect(peak).toBeLessThanOrEqual(MAX_QUEUE_BYTES);
    expect(samples.filter((s) => s.paused === 1).length).toBeGreaterThan(samples.length / 2);
    const rssGrowth = Math.max(...samples.map((s) => s.rss!)) - before.rss!;
    // Memory does not grow with the outage's length: what is held is the queue (bounded) plus what
    // each device had already sent before its socket stopped being read (its in-flight window).
    const third = Math.floor(samples.length / 3);
    const early = Math.max(...samples.slice(0, third).map((s) => s.rss!));
    const late = Math.max(...samples.slice(-third).map((s) => s.rss!));
    console.log(JSON.stringify({ peakQueueBytes: peak, rssGrowthMB: +(rssGrowth / 1048576).toFixed(1), rssEarlyToLateMB: +((late - early) / 1048576).toFixed(1), recoveredMs, reconnects: result.reconnects }));
    expect(late - early).toBeLessThan(16 * 1024 * 1024);
    expect(rssGrowth).toBeLessThan(DEVICES * WINDOW * HELD_MESSAGE_BYTES + 32 * 1024 * 1024);
    // It recovered by itself and lost nothing.
    const after = await scrape(p);
    expect(after.paused).toBe(0);
    expect(after.writable).toBe(1);
    // The server kept every held session alive (it refreshes their keepalive while it does not read
    // them). A device may still give up itself: its PINGREQ waits behind its own unread publishes,
    // and with a slow catch-up its keepalive can run out; it reconnects and resends, losing nothing.
    expect(after.keepaliveTimeouts).toBe(0);
    expect(result.totalAcked).toBe(DEVICES * PER_DEVICE);
    p.child.kill('SIGTERM');
    expect(await p.exited).toBe(0);
    await expectExactlyStored(db.url, result, PER_DEVICE, T0);
  });
});
