import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestPlatform, type TestPlatform } from '../support/platform.ts';
import { runReadmeSession } from '../support/readme.ts';

// The README's worked example of access (section "Access for agencies and staff"), run as written with bash, curl and jq.

describe('README: the water bureau example runs as written', () => {
  let t: TestPlatform;
  const now = Date.now();

  beforeAll(async () => {
    t = await startTestPlatform();
    const station = await t.createDevice({ name: '虎门 太沙河 水位站', type: 'river-level-station', location: { lat: 22.82, lng: 113.675 } });
    const elsewhere = await t.createDevice({ name: '莞城 运河 水位站', type: 'river-level-station', location: { lat: 23.043, lng: 113.752 } });
    await t.createDevice({ name: '虎门 检测器', type: 'traffic-detector', location: { lat: 22.82, lng: 113.675 } });
    for (const d of [station, elsewhere]) {
      const client = await t.connect(d.accessToken);
      await client.publishAsync('v1/devices/me/telemetry', JSON.stringify({ ts: now - 60_000, values: { water_level: 2.1 } }), { qos: 1 });
    }
  });
  afterAll(async () => {
    await t?.stop();
  });

  it('creates the key, sees only 虎门镇 water devices and is refused the rest', async () => {
    const cwd = await mkdtemp(path.join(os.tmpdir(), 'guanlink-readme-'));
    const run = await runReadmeSession('access', { env: { GUANLINK: t.httpUrl, ADMIN_KEY: t.adminKey }, cwd, timeoutMs: 30_000 }).finally(() => rm(cwd, { recursive: true, force: true }));
    expect(run.code, run.stderr).toBe(0);
    const lines = run.outputs.get('access')!.split('\n');
    expect(lines[0]).toBe('{"roles":["agency"],"permissions":["devices:claim","live","read"],"scope":{"domains":["water"],"towns":["虎门镇"]}}');
    expect(lines[1]).toBe('虎门 太沙河 水位站 river-level-station');
    expect(lines[2]).toBe('虎门 太沙河 水位站');
    expect(lines[3]).toBe('this needs the permission "devices:write", which API key "flood dashboard" (roles: agency) does not have');
    expect(lines[4]).toMatch(/^no device \d+$/);
    expect(lines).toHaveLength(5);
  });
});
