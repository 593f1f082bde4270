/**
 * `npm run bench:ingest` — how fast do readings get from devices into the database, against what
 * the database and the broker alone allow? One run, one database, the same readings throughout:
 *
 *   (a) ceiling: the readings COPY'd from Node exactly as GuanLink's writer encodes and writes a
 *       batch (INGEST_BATCH_SIZE rows, INGEST_WRITERS connections, and also 1 connection) — no MQTT;
 *   (b) end to end: GuanLink in its own process (`bin/guanlink.ts --no-simulators`), devices
 *       registered over REST, publisher processes sending QoS 1 telemetry over one connection per
 *       device; a PUBACK means committed; afterwards the rows are counted (must equal the PUBACKs);
 *   (c) the broker alone: the same publishers against GuanLink's broker with ingest replaced by an
 *       immediate PUBACK (bench/load/null-broker.ts), speaking MQTT 3.1.1 and, in alternate runs,
 *       MQTT 5.0 (through the v5 front end, broker/mqtt5/: what it costs per message); and against
 *       Mosquitto 2 (3.1.1) when installed.
 *
 * They run in the order (b), (a), (c): the readings are timestamped from the start of the run so
 * that (b) sees live telemetry; (a) then writes exactly the same rows. Each part writes into the
 * same, empty tables (truncated and checkpointed in between) after its own warm-up. Prints a
 * table, the CPU used by each process group in each part, and as its last
 * line `RESULT e2e_vs_copy=<(b)/(a)> broker_vs_mosquitto=<(c)(i)/(c)(iii)> mqtt5_vs_311=<(c)(ii)/(c)(i)>
 * e2e_mqtt5_vs_311=<(b) MQTT 5 / (b) 3.1.1>` (`n/a` without Mosquitto, or (b) in one version only).
 * Design and recorded figures: bench/README.md.
 *
 * Environment:
 *   DATABASE_URL        PostgreSQL/TimescaleDB server to use (a database `guanlink_bench_ingest` is
 *                       dropped and created on it); unset: the embedded PostgreSQL in bench/.data/
 *   BENCH_MESSAGES      timed readings (= messages = rows) per part          [400000]
 *   BENCH_WARMUP        warm-up readings before each timed part              [50000]
 *   BENCH_DEVICES       devices = MQTT connections                           [1000]
 *   BENCH_WINDOW        unacknowledged QoS 1 messages per connection         [16]
 *   BENCH_PUBLISHERS    publisher processes                                  [2]
 *   BENCH_BROKER_ROUNDS (c) alternates the brokers (and MQTT versions) this many times; best of each   [2]
 *   BENCH_MQTT          the MQTT version(s) of (b)'s publishers: 3.1.1, 5, or "3.1.1,5" (then (b)
 *                       runs once per version, on the same readings, and prints the ratio)  [3.1.1]
 *   BENCH_PARTS         which parts to run, e.g. "b" or "a,b"                [a,b,c]
 *   BENCH_PIN=0         in (c), do not pin the broker to CPU 0 and the publishers to the other CPUs
 *                       (pinned by default when `taskset` is available and there are ≥ 2 CPUs)
 *   BENCH_PROFILE=1     profile GuanLink during (b) and the bench broker during (c), first round (V8
 *                       sampling CPU and heap profilers over exactly the timed window): .cpuprofile and
 *                       .heapprofile files in bench/.data/ingest/, a summary in the output. Profiling
 *                       slows them: do not record those rates.
 *   BENCH_GUANLINK_NODE_ARGS  extra Node/V8 flags for the GuanLink process only (e.g. --max-semi-space-size=64)
 *   BENCH_MOSQUITTO     path of the mosquitto binary, or "none"             [mosquitto on PATH, /usr/sbin]
 *   INGEST_BATCH_SIZE, INGEST_WRITERS, INGEST_BATCH_MS, SIM_SEED: as for GuanLink (the platform
 *                       process inherits them and (a) uses the same batch size and connections).
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { loadConfig } from '../core/config.ts';
import { DeviceRegistry, type DeviceContext } from '../core/registry.ts';
import { KeyDictionary } from '../db/keys.ts';
import { createPool } from '../db/pool.ts';
import type { Reading } from '../ingest/readings.ts';
import { BROKER_CPUS, GENERATOR_CPUS, canPin, pin } from './load/affinity.ts';
import { nextMessage, spawnNode, stopAllChildren, type Child } from './load/children.ts';
import { copyCeiling } from './load/copy-ceiling.ts';
import { CpuWindow, type CpuReport, type ProcessGroup } from './load/cpu.ts';
import { countReadings, describeServer, freshBenchDatabase, postgresProcesses, resetReadings, type BenchServer } from './load/database.ts';
import { registerDevices, startGuanlink } from './load/guanlink-process.ts';
import { findMosquitto, mosquittoVersion, startMosquitto } from './load/mosquitto.ts';
import { summariseProfile, type ProfileSummary } from './load/profile.ts';
import type { FromNullBroker, MqttVersion } from './load/protocol.ts';
import { Publishers, type PhaseResult } from './load/publishers.ts';
import { planDevices, planWorkload, splitForPublishers, storedReadings, type Workload } from './load/workload.ts';
import { BENCH_DATA_DIR, formatRate } from './support.ts';

function intEnv(name: string, fallback: number, min = 1): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name} must be an integer ≥ ${min}, got "${raw}"`);
  return n;
}

function mqttVersionsEnv(name: string): MqttVersion[] {
  const versions = (process.env[name] || '3.1.1').split(',').map((raw) => {
    const v = raw.trim();
    if (v === '3.1.1' || v === '4') return 4;
    if (v === '5' || v === '5.0') return 5;
    throw new Error(`${name} must list 3.1.1 and/or 5, got "${raw}"`);
  });
  return [...new Set(versions)];
}
const versionName = (v: MqttVersion) => (v === 5 ? 'MQTT 5.0' : 'MQTT 3.1.1');

const config = loadConfig(process.env);
const opts = {
  messages: intEnv('BENCH_MESSAGES', 400_000),
  warmup: intEnv('BENCH_WARMUP', 50_000, 0),
  devices: intEnv('BENCH_DEVICES', 1000),
  window: Math.min(intEnv('BENCH_WINDOW', 16), 65_535),
  publishers: intEnv('BENCH_PUBLISHERS', 2),
  brokerRounds: intEnv('BENCH_BROKER_ROUNDS', 2),
  parts: new Set((process.env.BENCH_PARTS ?? 'a,b,c').split(',').map((s) => s.trim())),
  profile: /^(1|true|yes|on)$/i.test(process.env.BENCH_PROFILE ?? ''),
  mqtt: mqttVersionsEnv('BENCH_MQTT'),
  pin: !/^(0|false|no|off)$/i.test(process.env.BENCH_PIN ?? '') && canPin(),
  batchSize: config.ingestBatchSize,
  writers: config.ingestWriters,
};
const DATABASE = 'guanlink_bench_ingest';
const OUT = path.join(BENCH_DATA_DIR, 'ingest');
const log = (line: string) => process.stderr.write(`[bench:ingest ${new Date().toISOString().slice(11, 19)}] ${line}\n`);

interface Row {
  part: string;
  rate: number;
  seconds: number;
  note: string;
  cpu?: CpuReport;
}

async function timed<T extends { seconds: number }>(groups: ProcessGroup[], run: () => Promise<T>): Promise<T & { cpu: CpuReport }> {
  const window = await CpuWindow.open(groups);
  const result = await run();
  return { ...result, cpu: await window.close() };
}

/**
 * Starts the SIGUSR2 profile window of a child started with BENCH_PROFILE_FILE=base (child-hooks.ts);
 * the returned function ends it and summarises base.cpuprofile and base.heapprofile.
 */
function profileWindow(child: Child, base: string | undefined): () => Promise<ProfileSummary | undefined> {
  if (!base) return async () => undefined;
  const [cpu, heap] = [`${base}.cpuprofile`, `${base}.heapprofile`];
  rmSync(cpu, { force: true });
  rmSync(heap, { force: true });
  child.proc.kill('SIGUSR2');
  return async () => {
    child.proc.kill('SIGUSR2');
    for (let i = 0; i < 600 && !existsSync(cpu); i++) await new Promise((r) => setTimeout(r, 100));
    if (!existsSync(cpu)) throw new Error(`${child.name} wrote no profile (${cpu})`);
    return summariseProfile(cpu, existsSync(heap) ? heap : undefined);
  };
}

function expectAll(what: string, r: PhaseResult, expected: number): void {
  if (r.acked !== expected || r.sent !== expected) throw new Error(`${what}: ${r.sent} sent, ${r.acked} acknowledged, expected ${expected}`);
}

async function partA(pool: pg.Pool, workload: Workload, contexts: DeviceContext[]): Promise<Row[]> {
  const rules = { maxFutureMs: config.maxFutureMs, minTs: Date.parse(config.minTimestamp) };
  const main = storedReadings(workload, contexts, 'main', rules);
  const warm = storedReadings(workload, contexts, 'warmup', rules);
  const keys = new KeyDictionary(pool, config.maxTelemetryKeys);
  await keys.load();
  await keys.ensure(new Set([...main, ...warm].flatMap((r: Reading) => Object.keys(r.values))));
  const rows: Row[] = [];
  for (const connections of [...new Set([opts.writers, 1, 2])]) {
    if (warm.length > 0) await copyCeiling(pool, warm, keys, { batchSize: opts.batchSize, connections });
    await resetReadings(pool);
    log(`(a) COPY ${main.length} readings, ${connections} connection(s)`);
    const r = await timed(
      [
        { name: 'bench (encode + COPY)', pids: () => [process.pid] },
        { name: 'PostgreSQL backends', pids: async () => (await postgresProcesses(pool, DATABASE, 'guanlink-bench')).clients },
        { name: 'PostgreSQL background', pids: async () => (await postgresProcesses(pool, DATABASE, 'guanlink-bench')).background },
      ],
      () => copyCeiling(pool, main, keys, { batchSize: opts.batchSize, connections }),
    );
    const stored = await countReadings(pool);
    if (stored !== main.length) throw new Error(`(a) stored ${stored} rows, expected ${main.length}`);
    const label = connections === opts.writers ? `${connections} connection${connections > 1 ? 's' : ''} (INGEST_WRITERS)` : `${connections} connection${connections > 1 ? 's' : ''}`;
    rows.push({ part: `(a) COPY ceiling, ${label}`, rate: r.rows / r.seconds, seconds: r.seconds, note: `${stored.toLocaleString('en')} rows`, cpu: r.cpu });
  }
  await resetReadings(pool);
  return rows;
}

async function partB(pool: pg.Pool, publishers: Publishers, guanlink: { child: Child; mqttPort: number }, mqtt: MqttVersion, profileFile: string | undefined): Promise<{ row: Row; profile?: ProfileSummary }> {
  await publishers.connect('127.0.0.1', guanlink.mqttPort, `bench-guanlink-v${mqtt}`, mqtt);
  if (publishers.messages.warmup > 0) {
    log(`(b) warm-up: ${publishers.messages.warmup} messages`);
    expectAll('(b) warm-up', await publishers.run('warmup', opts.window), publishers.messages.warmup);
  }
  await resetReadings(pool);
  log(`(b) ${publishers.messages.main} messages through GuanLink`);
  const stopProfile = profileWindow(guanlink.child, profileFile);
  const r = await timed(
    [
      { name: 'GuanLink', pids: () => [guanlink.child.pid] },
      { name: 'publishers', pids: () => publishers.pids },
      { name: "PostgreSQL: GuanLink's connections", pids: async () => (await postgresProcesses(pool, DATABASE, 'guanlink')).clients },
      { name: 'PostgreSQL background', pids: async () => (await postgresProcesses(pool, DATABASE, 'guanlink')).background },
      { name: 'other databases on the server', pids: async () => (await postgresProcesses(pool, DATABASE, 'guanlink')).others },
    ],
    () => publishers.run('main', opts.window),
  );
  const profile = await stopProfile();
  expectAll('(b)', r, publishers.messages.main);
  const stored = await countReadings(pool);
  if (stored !== r.acked) throw new Error(`(b) ${r.acked} readings acknowledged but ${stored} rows stored`);
  await publishers.disconnect();
  return {
    row: { part: `(b) end to end: ${versionName(mqtt)} QoS 1 → GuanLink → committed`, rate: r.acked / r.seconds, seconds: r.seconds, note: `${r.acked.toLocaleString('en')} PUBACKs = ${stored.toLocaleString('en')} rows`, cpu: r.cpu },
    ...(profile ? { profile } : {}),
  };
}

interface BrokerUnderTest {
  label: string;
  mqtt: MqttVersion;
  start(): Promise<{ child: Child; port: number }>;
  profileFile?: string;
}

async function brokerRun(publishers: Publishers, broker: BrokerUnderTest, round: number): Promise<{ row: Row; profile?: ProfileSummary }> {
  const { child, port } = await broker.start();
  try {
    if (opts.pin) pin(child.pid, BROKER_CPUS);
    await publishers.connect('127.0.0.1', port, `bench-${round}`, broker.mqtt);
    if (publishers.messages.warmup > 0) expectAll(`${broker.label} warm-up`, await publishers.run('warmup', opts.window), publishers.messages.warmup);
    log(`(c) ${publishers.messages.main} messages through ${broker.label}`);
    const stopProfile = profileWindow(child, broker.profileFile);
    const r = await timed(
      [
        { name: 'broker', pids: () => [child.pid] },
        { name: 'publishers', pids: () => publishers.pids },
      ],
      () => publishers.run('main', opts.window),
    );
    const profile = await stopProfile();
    expectAll(broker.label, r, publishers.messages.main);
    await publishers.disconnect();
    return { row: { part: `(c) ${broker.label}`, rate: r.acked / r.seconds, seconds: r.seconds, note: `${r.acked.toLocaleString('en')} PUBACKs`, cpu: r.cpu }, ...(profile ? { profile } : {}) };
  } finally {
    await child.stop();
  }
}

async function partC(publishers: Publishers): Promise<{ rows: Row[]; aedes: number; aedesMqtt5: number; mosquitto?: number; profile?: ProfileSummary }> {
  const nullBroker: BrokerUnderTest = {
    label: "GuanLink's broker (aedes), MQTT 3.1.1, ingest → immediate PUBACK",
    mqtt: 4,
    async start() {
      const child = await spawnNode('bench broker', 'bench/load/null-broker.ts', [], {
        ipc: true,
        logFile: path.join(OUT, 'null-broker.log'),
        env: { ...process.env, ...(nullBroker.profileFile ? { BENCH_PROFILE_FILE: nullBroker.profileFile } : {}) },
      });
      const port = await nextMessage<FromNullBroker, number>(child, (m) => (m.type === 'listening' ? m.port : undefined), 60_000, 'listening');
      return { child, port };
    },
  };
  if (opts.profile) nullBroker.profileFile = path.join(OUT, 'bench-broker');
  // The same broker, its clients speaking MQTT 5 (the v5 front end translates every packet both ways).
  const nullBrokerMqtt5: BrokerUnderTest = { label: "GuanLink's broker (aedes), MQTT 5.0 through the v5 front end, ingest → immediate PUBACK", mqtt: 5, start: () => nullBroker.start() };
  const bin = findMosquitto();
  const brokers = [nullBroker, nullBrokerMqtt5];
  if (bin) {
    brokers.push({ label: `Mosquitto ${mosquittoVersion(bin)} (${bin}), MQTT 3.1.1`, mqtt: 4, start: () => startMosquitto(bin, OUT, path.join(OUT, 'mosquitto.log')) });
  } else log('(c) mosquitto not installed: broker_vs_mosquitto=n/a');
  if (opts.pin) for (const pid of publishers.pids) pin(pid, GENERATOR_CPUS);
  const best = new Map<BrokerUnderTest, Row>();
  let profile: ProfileSummary | undefined;
  for (let round = 1; round <= opts.brokerRounds; round++) {
    for (const broker of brokers) {
      const r = await brokerRun(publishers, broker, round);
      if (r.profile) {
        profile = r.profile;
        delete broker.profileFile; // profile the first round only
      }
      const prev = best.get(broker);
      if (!prev || r.row.rate > prev.rate) best.set(broker, { ...r.row, note: `${r.row.note}; best of ${opts.brokerRounds}` });
    }
  }
  const rows = brokers.map((b) => best.get(b)!);
  return { rows, aedes: rows[0]!.rate, aedesMqtt5: rows[1]!.rate, ...(rows[2] ? { mosquitto: rows[2].rate } : {}), ...(profile ? { profile } : {}) };
}

function printCpu(rows: Row[]): void {
  console.log(
    '\nCPU during each timed part: average cores busy (user + system time from /proc, all threads) and CPU µs per reading.\n' +
      'CPU per reading is the steadier figure on a shared machine; "machine" counts every process, this benchmark\'s or not.\n',
  );
  for (const r of rows) {
    if (!r.cpu) continue;
    const readings = r.rate * r.seconds;
    const groups = r.cpu.groups.filter((g) => g.cores >= 0.005 || g.name !== 'other databases on the server');
    const fmt = (cores: number) => `${cores.toFixed(2)} (${((cores * r.seconds * 1e6) / readings).toFixed(1)} µs)`;
    console.log(`- ${r.part}: ${groups.map((g) => `${g.name} ${fmt(g.cores)}`).join(', ')}; machine ${r.cpu.machineCores.toFixed(2)} of ${r.cpu.cores}`);
  }
}

function printProfile(title: string, p: ProfileSummary, base: string): void {
  const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
  const table = (head: string, rows: { name: string; share: number }[], code = true) => {
    console.log(`\n| ${head} |\n|---|---|`);
    for (const r of rows) console.log(`| ${pct(r.share)} | ${code ? `\`${r.name}\`` : r.name} |`);
  };
  console.log(`\n## ${title}\n\n${p.seconds.toFixed(1)} s sampled, main thread ${pct(p.busy)} busy (${base}.cpuprofile, .heapprofile)`);
  table('self time | function', p.functions);
  table('self time | where', p.areas, false);
  table('total time (with callees) | GuanLink function', p.inclusive);
  if (p.allocations) table(`allocated (${p.allocations.megabytesPerSecond.toFixed(0)} MB/s sampled, freed objects included) | allocating function`, p.allocations.functions);
}

async function main(): Promise<void> {
  rmSync(OUT, { recursive: true, force: true });
  mkdirSync(OUT, { recursive: true });
  const startedAt = new Date();
  let server: BenchServer | undefined;
  let pool: pg.Pool | undefined;
  let publishers: Publishers | undefined;
  const cleanup = async () => {
    await stopAllChildren();
    await pool?.end().catch(() => {});
    pool = undefined;
    await server?.stop().catch(() => {});
    server = undefined;
  };
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      log(`${signal}: stopping everything`);
      void cleanup().finally(() => process.exit(130));
    });
  }
  try {
    log(`database: ${process.env.DATABASE_URL ? 'DATABASE_URL' : 'embedded PostgreSQL'}`);
    server = await freshBenchDatabase(DATABASE);
    pool = createPool(server.url, { max: Math.max(4, opts.writers + 2), applicationName: 'guanlink-bench' });
    const guanlink = await startGuanlink({
      databaseUrl: server.url,
      dataDir: path.join(OUT, 'guanlink-data'),
      adminKey: randomBytes(24).toString('base64url'),
      logFile: path.join(OUT, 'guanlink.log'),
      ...(opts.profile ? { profileFile: path.join(OUT, 'guanlink') } : {}),
    });
    const dbName = `${await describeServer(pool)} (${server.kind === 'embedded' ? 'embedded' : 'DATABASE_URL'})`;
    const sims = planDevices(opts.devices, config.simSeed);
    log(`registering ${sims.length} devices over REST`);
    const registered = await registerDevices(guanlink, sims);
    // Timestamps start now: (b) runs first, on live telemetry (see planWorkload).
    const workload = planWorkload(sims, { messages: opts.messages, warmup: opts.warmup, startMs: Date.now(), spanMs: 60_000 });

    let e2e: number | undefined;
    let profileB: ProfileSummary | undefined;
    const rowsB = new Map<MqttVersion, Row>();
    if (opts.parts.has('b') || opts.parts.has('c')) {
      log(`starting ${opts.publishers} publisher processes`);
      publishers = await Publishers.start(
        splitForPublishers(workload, registered.map((d) => d.accessToken), opts.publishers),
        OUT,
        path.join(OUT, 'publishers.log'),
      );
    }
    if (opts.parts.has('b')) {
      for (const mqtt of opts.mqtt) {
        const b = await partB(pool, publishers!, guanlink, mqtt, opts.profile && !profileB ? path.join(OUT, 'guanlink') : undefined);
        rowsB.set(mqtt, b.row);
        profileB ??= b.profile;
      }
      e2e = rowsB.values().next().value!.rate;
    }
    await guanlink.child.stop();

    let rowsA: Row[] = [];
    let ceiling: number | undefined;
    if (opts.parts.has('a')) {
      const registry = new DeviceRegistry(pool);
      await registry.init();
      const contexts = await Promise.all(registered.map(async (d) => (await registry.context(d.id))!));
      rowsA = await partA(pool, workload, contexts);
      ceiling = Math.max(...rowsA.map((r) => r.rate));
    }

    let brokers: Awaited<ReturnType<typeof partC>> | undefined;
    if (opts.parts.has('c')) brokers = await partC(publishers!);
    await publishers?.stop();
    const rows = [...rowsA, ...rowsB.values(), ...(brokers?.rows ?? [])];

    const w = workload;
    console.log(`\n# GuanLink ingest benchmark — ${startedAt.toISOString().slice(0, 16)}Z, ${dbName}, ${os.cpus().length} cores`);
    console.log(
      `${opts.messages.toLocaleString('en')} readings per part (+${opts.warmup.toLocaleString('en')} warm-up) from ${w.devices.length.toLocaleString('en')} devices of ` +
        `${new Set(w.devices.map((d) => d.sim.type)).size} types (${w.movingDevices} moving), ${w.valuesPerMessage.toFixed(1)} values and ${w.payloadBytes.toFixed(0)} B per payload; ` +
        `timestamps from the start of the run, ${w.intervalMs} ms apart per device; ` +
        `QoS 1, window ${opts.window} per connection, ${opts.publishers} publisher processes; ingest batch ${opts.batchSize.toLocaleString('en')}, ${opts.writers} writers` +
        `${opts.parts.has('c') && opts.pin ? `; (c) broker pinned to CPU ${BROKER_CPUS}, publishers to CPU ${GENERATOR_CPUS}` : ''}\n`,
    );
    console.log('| part | readings/s | timed | notes |\n|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.part} | ${formatRate(r.rate)} | ${r.seconds.toFixed(1)} s | ${r.note} |`);
    const e2eRatio = e2e !== undefined && ceiling !== undefined ? e2e / ceiling : undefined;
    const brokerRatio = brokers?.mosquitto !== undefined ? brokers.aedes / brokers.mosquitto : undefined;
    const mqtt5Ratio = brokers ? brokers.aedesMqtt5 / brokers.aedes : undefined;
    console.log('');
    if (e2eRatio !== undefined) console.log(`(b)/(a): ${formatRate(e2e!)} / ${formatRate(ceiling!)} (best (a)) = ${e2eRatio.toFixed(2)}  (target ≥ 0.7: ${e2eRatio >= 0.7 ? 'met' : 'MISSED'})`);
    if (brokerRatio !== undefined) console.log(`GuanLink broker / Mosquitto: ${formatRate(brokers!.aedes)} / ${formatRate(brokers!.mosquitto!)} = ${brokerRatio.toFixed(2)}  (target ≥ 0.6: ${brokerRatio >= 0.6 ? 'met' : 'MISSED'})`);
    const e2eMqtt5Ratio = rowsB.has(4) && rowsB.has(5) ? rowsB.get(5)!.rate / rowsB.get(4)!.rate : undefined;
    if (e2eMqtt5Ratio !== undefined) console.log(`(b) end to end, MQTT 5.0 / MQTT 3.1.1: ${formatRate(rowsB.get(5)!.rate)} / ${formatRate(rowsB.get(4)!.rate)} = ${e2eMqtt5Ratio.toFixed(2)}`);
    if (mqtt5Ratio !== undefined) console.log(`GuanLink broker, MQTT 5.0 / MQTT 3.1.1: ${formatRate(brokers!.aedesMqtt5)} / ${formatRate(brokers!.aedes)} = ${mqtt5Ratio.toFixed(2)}`);
    printCpu(rows);
    if (profileB) printProfile('Profile of the GuanLink process during (b)', profileB, path.join(OUT, 'guanlink'));
    if (brokers?.profile) printProfile("Profile of GuanLink's broker without ingest during (c), first round", brokers.profile, path.join(OUT, 'bench-broker'));
    if (opts.profile) console.log('\n(profiled run: the profiler slows the profiled processes; do not record these rates)');
    const ratio = (r: number | undefined) => (r === undefined ? 'n/a' : r.toFixed(2));
    console.log(`\nRESULT e2e_vs_copy=${ratio(e2eRatio)} broker_vs_mosquitto=${ratio(brokerRatio)} mqtt5_vs_311=${ratio(mqtt5Ratio)} e2e_mqtt5_vs_311=${ratio(e2eMqtt5Ratio)}`);
  } finally {
    await cleanup();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
