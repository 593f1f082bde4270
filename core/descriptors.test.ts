import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OTHER_DESCRIPTORS, REFUSAL_SLOTS, connectionBudget, readDescriptorLimits } from './descriptors.ts';

/** Runs an ES module script in its own node process (with tsx, so it may import .ts); its last stdout line as JSON. */
function runScript<T>(script: string): T {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0 || r.stderr) throw new Error(`script failed (${r.status}): ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as T;
}
const DESCRIPTORS = JSON.stringify(new URL('./descriptors.ts', import.meta.url).href);

const LIMITS = (soft: string, hard: string) => `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            ${soft.padEnd(20)} ${hard.padEnd(20)} files
Max locked memory         8388608              8388608              bytes
`;

describe('readDescriptorLimits', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-limits-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads the soft and hard open-file limits as /proc/<pid>/limits writes them', async () => {
    const file = path.join(dir, 'limits');
    await writeFile(file, LIMITS('1024', '524288'));
    expect(readDescriptorLimits(file)).toEqual({ soft: 1024, hard: 524288 });
    await writeFile(file, LIMITS('65536', 'unlimited'));
    expect(readDescriptorLimits(file)).toEqual({ soft: 65536, hard: Infinity });
    expect(readDescriptorLimits(path.join(dir, 'absent'))).toBeUndefined();
  });

  it("reads this process's own limits on Linux", () => {
    const own = readDescriptorLimits();
    if (process.platform !== 'linux') return expect(own).toBeUndefined();
    expect(own!.soft).toBeGreaterThan(0);
    expect(own!.hard).toBeGreaterThanOrEqual(own!.soft);
  });
});

describe('raiseDescriptorLimit', () => {
  it('raises a soft limit below the hard limit to it (prlimit on its own pid), and says what it did', () => {
    // Node raises its soft limit when it starts: lowered afterwards, as a parent's ulimit -Sn would have.
    const out = runScript<{ lowered: unknown; result: { before: unknown; after: unknown; note: string }; hard: number }>(`
      import { execFileSync } from 'node:child_process';
      import { raiseDescriptorLimit, readDescriptorLimits } from ${DESCRIPTORS};
      const hard = readDescriptorLimits().hard;
      execFileSync('prlimit', ['--pid', String(process.pid), '--nofile=256:' + hard]);
      const lowered = readDescriptorLimits();
      const result = await raiseDescriptorLimit();
      console.log(JSON.stringify({ lowered, result, hard }));
    `);
    expect(out.lowered).toEqual({ soft: 256, hard: out.hard });
    expect(out.result.before).toEqual({ soft: 256, hard: out.hard });
    expect(out.result.after).toEqual({ soft: out.hard, hard: out.hard });
    expect(out.result.note).toBe(`soft limit raised from 256 to ${out.hard}`);
  });
});

describe('connectionBudget', () => {
  it('shares the limit out: database pool and other descriptors first, HTTP at most a quarter of the rest, MQTT the remainder', () => {
    const b = connectionBudget({ limit: 20_000, maxMqtt: 100_000, maxHttp: 10_000, databasePool: 13 });
    const left = 20_000 - 13 - OTHER_DESCRIPTORS - REFUSAL_SLOTS;
    expect(b.http).toBe(Math.floor(left / 4));
    expect(b.mqtt).toBe(left - b.http);
    // Every connection held together never reaches the limit.
    expect(b.mqtt + b.refusalSlots + b.http + b.database + b.other).toBeLessThanOrEqual(20_000);
    expect(b.warning).toMatch(/raise it to 110301/);
  });

  it('takes the configured maxima when the limit is generous, and says nothing', () => {
    const b = connectionBudget({ limit: 1_048_576, maxMqtt: 100_000, maxHttp: 10_000, databasePool: 13 });
    expect([b.mqtt, b.http]).toEqual([100_000, 10_000]);
    expect(b.warning).toBeUndefined();
    expect(connectionBudget({ limit: Infinity, maxMqtt: 50, maxHttp: 7, databasePool: 13 })).toMatchObject({ mqtt: 50, http: 7 });
  });

  it('under a very low limit still leaves room for everything, with a warning', () => {
    const b = connectionBudget({ limit: 256, maxMqtt: 100_000, maxHttp: 10_000, databasePool: 13 });
    expect(b.mqtt).toBeGreaterThan(0);
    expect(b.http).toBeGreaterThan(0);
    expect(b.mqtt + b.refusalSlots + b.http + b.database + b.other).toBeLessThanOrEqual(256);
    expect(b.warning).toMatch(/ulimit -n/);
  });
});

describe('DescriptorWatch', () => {
  it('finds a process at its open-file limit, counts each such probe and logs once per interval', () => {
    // Its own process, lowered to 64 descriptors and filled: the watch must see it.
    const out = runScript<{ before: boolean; atLimit: boolean[]; after: boolean; counted: number; lines: { fields: Record<string, unknown>; msg: string }[] }>(`
      import { closeSync, openSync } from 'node:fs';
      import { execFileSync } from 'node:child_process';
      import { DescriptorWatch } from ${DESCRIPTORS};
      execFileSync('prlimit', ['--pid', String(process.pid), '--nofile=64:64']);
      const lines = [];
      let counted = 0;
      const log = { error: (fields, msg) => lines.push({ fields, msg }) };
      const watch = new DescriptorWatch({ log, limit: 64, onExhausted: () => counted++, holders: () => ({ files: held.length }), logEveryMs: 60_000 });
      const before = await watch.probe();
      const held = [];
      try { for (let i = 0; i < 1000; i++) held.push(openSync('/dev/null', 'r')); } catch (err) { if (err.code !== 'EMFILE') throw err; }
      const atLimit = [await watch.probe(), await watch.probe(), await watch.probe()];
      for (const fd of held.splice(0, 4)) closeSync(fd);
      const after = await watch.probe();
      console.log(JSON.stringify({ before, atLimit, after, counted, lines }));
    `);
    expect(out.before).toBe(false);
    expect(out.atLimit).toEqual([true, true, true]);
    expect(out.after).toBe(false);
    expect(out.counted).toBe(3);
    expect(out.lines).toHaveLength(1); // once per interval
    expect(out.lines[0]!.msg).toMatch(/out of file descriptors/);
    expect(out.lines[0]!.fields).toMatchObject({ code: 'EMFILE', limit: 64 });
  });
});
