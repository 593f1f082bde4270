/**
 * Preloaded (`--import`) into every Node process the ingest benchmark starts: the GuanLink
 * platform, the bench-only broker and the publishers. Nothing here changes what they do.
 *
 * - Orphan watchdog: when the benchmark dies without stopping its children, each one notices its
 *   parent is gone and stops itself (SIGTERM to itself, so GuanLink still shuts down cleanly).
 * - Profiles of a chosen window: with BENCH_PROFILE_FILE=<path without extension> set, the first
 *   SIGUSR2 starts V8's sampling CPU profiler and its sampling heap profiler (counting objects
 *   the GC has already freed, so it shows allocation, not just what is retained), and the second
 *   stops both and writes <path>.cpuprofile and <path>.heapprofile. Unlike `--cpu-prof`, which
 *   covers the whole life of the process (start-up, registration, warm-up), this covers exactly
 *   the timed part.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.kill(process.pid, 'SIGTERM');
}, 1000).unref();

const base = process.env.BENCH_PROFILE_FILE;
if (base) {
  let session: Session | undefined;
  const write = (file: string, data: unknown) => {
    writeFileSync(`${file}.tmp`, JSON.stringify(data));
    renameSync(`${file}.tmp`, file);
  };
  process.on('SIGUSR2', () => {
    void (async () => {
      if (!session) {
        session = new Session();
        session.connect();
        await session.post('Profiler.enable');
        await session.post('HeapProfiler.enable');
        await session.post('HeapProfiler.startSampling', {
          samplingInterval: 64 * 1024,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: true,
        } as { samplingInterval: number });
        await session.post('Profiler.start');
        return;
      }
      const { profile } = await session.post('Profiler.stop');
      const { profile: heap } = await session.post('HeapProfiler.stopSampling');
      session.disconnect();
      session = undefined;
      write(`${base}.heapprofile`, heap);
      write(`${base}.cpuprofile`, profile); // written last: the benchmark waits for this one
    })().catch((err: unknown) => process.stderr.write(`bench profile hook: ${String(err)}\n`));
  });
}
