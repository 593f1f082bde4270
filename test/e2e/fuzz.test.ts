import { BUILTIN_DEVICE_TYPES } from '../../core/device-types.ts';
import { testPool } from '../support/database.ts';
import { createHash } from 'node:crypto';
import net from 'node:net';
import type { MqttClient } from 'mqtt';
import mqttPacket, { type IConnectPacket, type IPublishPacket } from 'mqtt-packet';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REJECT_REASONS } from '../../ingest/readings.ts';
import { createRng } from '../../simulators/random.ts';
import { CATEGORIES, WEIRD_KEYS, hostileCorpus, type Category, type ExpectedRow, type HostileCase, type HostileDevice } from '../support/hostile-telemetry.ts';
import { eventually, startTestPlatform, type CreatedDevice, type TestPlatform } from '../support/platform.ts';
import { storedReadings } from '../support/readings.ts';

/**
 * The ingest issue's fuzz test: thousands of malformed, oversized, deeply nested, binary and
 * hostile payloads from a few devices over MQTT while well-behaved devices publish at the same
 * time. Every hostile publish must be acknowledged and answered with its reasons, kept in
 * rejected_messages and counted; the valid traffic must be stored exactly; the platform must stay
 * up. A second part breaks the MQTT protocol itself on raw sockets.
 */

const ERRORS_TOPIC = 'v1/devices/me/errors';
const TELEMETRY = 'v1/devices/me/telemetry';
const MAX_PAYLOAD = 20_000;
const MAX_PACKET = 40_000;
// Keys the built-in device types declare are registered at start and count toward the cap; the
// fuzz gets 48 more of its own before the filler device exhausts it.
const DECLARED_KEYS = new Set(BUILTIN_DEVICE_TYPES.flatMap((t) => Object.keys(t.keys))).size;
const MAX_KEYS = DECLARED_KEYS + 48;
const SEED = 20_260_511;
const COUNTS: Record<Category, number> = {
  invalid_json: 350,
  binary: 250,
  empty: 120,
  wrong_shape: 220,
  timestamps: 300,
  deep_nesting: 60,
  huge_arrays: 50,
  oversized: 50,
  number_overflow: 180,
  non_numeric: 300,
  hostile_keys: 350,
  too_many_keys: 180,
  out_of_range: 220,
  positions: 260,
  mixtures: 400,
};

interface ErrorsMessage {
  topic: string;
  ts: number;
  stored: number;
  errors: { reason: string; key?: string; detail: string }[];
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves with `fallback` after `ms` unless `promise` settles first (the timer is cleared). */
async function within<T>(promise: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([promise, new Promise<T>((resolve) => (timer = setTimeout(() => resolve(fallback), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Every sample of a Prometheus counter by its one label value, from GET /metrics. */
async function samples(t: TestPlatform, name: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${t.httpUrl}/metrics`)).text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(?:\\{\\w+="([^"]*)"\\})? (\\S+)$`).exec(line);
    if (m) out.set(m[1] ?? '', Number(m[2]));
  }
  return out;
}
const delta = (after: Map<string, number>, before: Map<string, number>): Record<string, number> =>
  Object.fromEntries([...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)]).filter(([, d]) => d !== 0));

/** One device's MQTT connection, subscribed to its errors topic, with the messages received there. */
class DeviceLink {
  client!: MqttClient;
  readonly inbox: ErrorsMessage[] = [];
  reconnects = 0;
  private wake: (() => void) | undefined;

  constructor(
    private readonly t: TestPlatform,
    readonly device: CreatedDevice,
  ) {}

  async open(): Promise<this> {
    const client = await this.t.connect(this.device.accessToken);
    client.on('message', (topic, payload) => {
      if (topic !== ERRORS_TOPIC) return;
      this.inbox.push(JSON.parse(payload.toString()) as ErrorsMessage);
      this.wake?.();
    });
    const granted = await client.subscribeAsync(ERRORS_TOPIC, { qos: 0 });
    if (granted[0]?.qos !== 0) throw new Error(`subscription to ${ERRORS_TOPIC} refused`);
    this.client = client;
    return this;
  }

  /** QoS 1 publish; true once acknowledged (PUBACK), false if the connection closes first or after `timeoutMs`. */
  async publish(topic: string, payload: Buffer | string, timeoutMs = 10_000): Promise<boolean> {
    const client = this.client;
    let onClose: (() => void) | undefined;
    try {
      return await within(
        Promise.race([
          client.publishAsync(topic, payload, { qos: 1 }).then(
            () => true,
            () => false,
          ),
          new Promise<boolean>((resolve) => client.once('close', (onClose = () => resolve(false)))),
        ]),
        timeoutMs,
        false,
      );
    } finally {
      if (onClose) client.off('close', onClose);
    }
  }

  /** The next message on the errors topic, waiting at most `timeoutMs`. */
  async nextAnswer(timeoutMs: number): Promise<ErrorsMessage | undefined> {
    if (this.inbox.length === 0) {
      await within(new Promise<void>((resolve) => (this.wake = resolve)), timeoutMs, undefined);
      this.wake = undefined;
    }
    return this.inbox.shift();
  }
}

const rowOf = (r: { ts: Date; values: Record<string, number>; others: Record<string, unknown>; lat: number | null; lng: number | null; alt: number | null }): ExpectedRow => ({
  ts: r.ts.getTime(),
  values: { ...r.values, ...r.others },
  lat: r.lat,
  lng: r.lng,
  alt: r.alt,
});
const byTs = (a: ExpectedRow, b: ExpectedRow) => a.ts - b.ts;
const preview = (payload: Buffer) => JSON.stringify(payload.subarray(0, 100).toString()) + (payload.length > 100 ? `…(${payload.length} B)` : '');

/** What `a` lacks of `b`, as multisets of strings. */
function multisetMinus(a: readonly string[], b: readonly string[]): string[] {
  const left = new Map<string, number>();
  for (const x of a) left.set(x, (left.get(x) ?? 0) + 1);
  const out: string[] = [];
  for (const x of b) {
    const n = left.get(x) ?? 0;
    if (n > 0) left.set(x, n - 1);
    else out.push(x);
  }
  return out;
}

/** A well-behaved device: its type, where it is registered, and the keys it reports with their ranges. */
interface ValidSpec {
  name: string;
  type: string;
  location: { lat: number; lng: number } | null;
  keys: Record<string, [number, number, number]>; // min, max, decimals
  moving?: boolean;
}
const VALID: ValidSpec[] = [
  { name: 'good-generic', type: 'generic', location: null, keys: { flow: [0, 500, 3], temp_c: [-20, 45, 2], count: [0, 10_000, 0] } },
  { name: 'good-air', type: 'air-quality-station', location: { lat: 23.0462, lng: 113.7449 }, keys: { aqi: [0, 500, 0], pm25: [0, 300, 1], humidity: [0, 100, 1] } },
  { name: 'good-bus', type: 'bus', location: null, keys: { speed: [0, 80, 1], heading: [0, 359, 0], passengers: [0, 120, 0] }, moving: true },
  { name: 'good-river', type: 'river-level-station', location: { lat: 23.0702, lng: 113.8073 }, keys: { water_level: [-2, 12, 3], flow_rate: [0, 3000, 2], rainfall_1h: [0, 80, 1] } },
];

interface ValidPublish {
  topic: string;
  payload: string;
  rows: ExpectedRow[];
}

/** Seeded valid traffic for one device: `readings` readings at distinct timestamps, in ThingsBoard's forms. */
function validPlan(spec: ValidSpec, seed: number, firstTs: number, readings: number): ValidPublish[] {
  const rng = createRng(seed);
  const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d || 0;
  const plan: ValidPublish[] = [];
  let i = 0;
  const reading = (): { text: string; row: ExpectedRow } => {
    const ts = firstTs + i++ * 1000;
    const values: Record<string, number> = {};
    for (const [k, [min, max, d]] of Object.entries(spec.keys)) values[k] = round(rng.range(min, max), d);
    const sent: Record<string, number> = { ...values };
    let at = spec.location ? { lat: spec.location.lat, lng: spec.location.lng, alt: null as number | null } : { lat: null as number | null, lng: null as number | null, alt: null as number | null };
    if (spec.moving) {
      at = { lat: round(rng.range(22.6, 23.2), 6), lng: round(rng.range(113.5, 114.3), 6), alt: rng.next() < 0.3 ? round(rng.range(0, 60), 1) : null };
      sent.latitude = at.lat!;
      sent.longitude = at.lng!;
      if (at.alt !== null) sent.altitude = at.alt;
    }
    const tsText = rng.next() < 0.15 ? `"${ts}"` : String(ts);
    return { text: `{"ts":${tsText},"values":${JSON.stringify(sent)}}`, row: { ts, values, ...at } };
  };
  while (i < readings) {
    const n = Math.min(readings - i, rng.next() < 0.3 ? 2 + rng.int(2) : 1);
    const parts = Array.from({ length: n }, reading);
    const payload = n === 1 && rng.next() < 0.85 ? parts[0]!.text : `[${parts.map((p) => p.text).join(',')}]`;
    plan.push({ topic: rng.next() < 0.7 ? TELEMETRY : 'v2/t', payload, rows: parts.map((p) => p.row) });
  }
  return plan;
}

/** Publishes a plan with at most `window` publishes in flight; `pace(k)` resolves when publish k may start. */
async function runValid(link: DeviceLink, plan: ValidPublish[], window: number, pace: (k: number) => Promise<void>, sentAt: number[]): Promise<string[]> {
  const problems: string[] = [];
  const inFlight = new Set<Promise<void>>();
  for (const [k, p] of plan.entries()) {
    await pace(k);
    while (inFlight.size >= window) await Promise.race(inFlight);
    sentAt.push(Date.now());
    const done: Promise<void> = link.publish(p.topic, p.payload).then((acked) => {
      if (!acked) problems.push(`${link.device.name}: valid publish ${k} not acknowledged`);
      inFlight.delete(done);
    });
    inFlight.add(done);
  }
  await Promise.all(inFlight);
  return problems;
}

async function expectStoredExactly(db: pg.Pool, device: CreatedDevice, expected: ExpectedRow[]): Promise<void> {
  const rows = await storedReadings(db, device.id);
  for (const r of rows) expect(r.cell !== null, `${device.name} ts ${r.ts.toISOString()}: cell iff position`).toBe(r.lat !== null);
  expect(rows.map(rowOf).sort(byTs), device.name).toEqual([...expected].sort(byTs));
}

describe('fuzz: hostile telemetry and protocol abuse against a running platform', () => {
  let t: TestPlatform;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestPlatform({
      maxPayloadBytes: MAX_PAYLOAD,
      maxPacketBytes: MAX_PACKET,
      maxTelemetryKeys: MAX_KEYS,
      rejectedPerDevicePerMinute: 1_000_000,
      ingestBatchMs: 5,
    });
    db = testPool(t.databaseUrl, 3);
    // pool.end() resolves before its connections have closed; the database's DROP … WITH (FORCE) at stop may then terminate one.
    db.on('error', () => {});
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('answers, keeps and counts every hostile payload while valid traffic is stored exactly', async () => {
    const started = Date.now();
    const hostileSpecs: HostileDevice[] = [
      { name: 'fuzz-generic-a', type: 'generic', location: null, goodKeys: ['ok_a', 'ok_b', ...WEIRD_KEYS] },
      { name: 'fuzz-generic-b', type: 'generic', location: { lat: 23.0205, lng: 113.7518 }, goodKeys: ['ok_a', 'ok_b', ...WEIRD_KEYS] },
      { name: 'fuzz-air', type: 'air-quality-station', location: { lat: 22.9701, lng: 113.7003 }, goodKeys: ['aqi', 'pm25', 'pm10', 'temperature', 'humidity'] },
      { name: 'fuzz-bus', type: 'bus', location: null, goodKeys: ['speed', 'heading', 'passengers'] },
      { name: 'fuzz-river', type: 'river-level-station', location: { lat: 23.0511, lng: 113.7802 }, goodKeys: ['water_level', 'flow_rate', 'rainfall_1h'] },
    ];
    const now = Date.now();
    const firstTs = now - 3 * 86_400_000;

    // Devices, each on its own connection subscribed to its errors topic.
    const hostile: { spec: HostileDevice; device: CreatedDevice; link: DeviceLink; expected: ExpectedRow[] }[] = [];
    for (const spec of hostileSpecs) {
      const device = await t.createDevice({ name: spec.name, type: spec.type, location: spec.location });
      hostile.push({ spec, device, link: await new DeviceLink(t, device).open(), expected: [] });
    }
    const good: { spec: ValidSpec; device: CreatedDevice; link: DeviceLink; expected: ExpectedRow[] }[] = [];
    for (const spec of VALID) {
      const device = await t.createDevice({ name: spec.name, type: spec.type, location: spec.location });
      good.push({ spec, device, link: await new DeviceLink(t, device).open(), expected: [] });
    }

    // Warm-up: every key a device will store goes into the key dictionary…
    for (const h of hostile) {
      const values = Object.fromEntries(h.spec.goodKeys.map((k, i) => [k, i + 1]));
      const ts = firstTs - 60_000;
      expect(await h.link.publish(TELEMETRY, JSON.stringify({ ts, values }))).toBe(true);
      h.expected.push({ ts, values, lat: h.spec.location?.lat ?? null, lng: h.spec.location?.lng ?? null, alt: null });
    }
    const plans = good.map((g, i) => validPlan(g.spec, SEED + i, now - 2 * 86_400_000, 160));
    for (const [i, g] of good.entries()) {
      const first = plans[i]!.shift()!;
      expect(await g.link.publish(first.topic, first.payload)).toBe(true);
      g.expected.push(...first.rows);
    }
    // …then a filler device fills it up, so that any other new key name is refused (too_many_keys).
    const filler = await new DeviceLink(t, await t.createDevice({ name: 'fuzz-key-filler' })).open();
    const fill = Object.fromEntries(Array.from({ length: MAX_KEYS }, (_, i) => [`fill_${i}`, i]));
    expect(await filler.publish(TELEMETRY, JSON.stringify({ ts: now - 86_400_000, values: fill }))).toBe(true);
    const fillAnswer = await filler.nextAnswer(5000);
    expect(fillAnswer?.errors.every((e) => e.reason === 'too_many_keys')).toBe(true);
    const knownKeys = new Set((await db.query<{ name: string }>('SELECT name FROM telemetry_keys')).rows.map((r) => r.name));
    expect(knownKeys.size).toBe(MAX_KEYS);
    for (const h of hostile) for (const k of h.spec.goodKeys) expect(knownKeys, `warm-up key ${JSON.stringify(k)} of ${h.spec.name}`).toContain(k);
    for (const l of [...hostile, ...good].map((x) => x.link)) expect(l.inbox, `${l.device.name}: warm-up refused`).toEqual([]);

    // The corpus: several thousand hostile payloads, seeded.
    const corpus = hostileCorpus({ seed: SEED, counts: COUNTS, devices: hostileSpecs, knownKeys, maxPayloadBytes: MAX_PAYLOAD, now, firstTs });
    expect(corpus.length).toBeGreaterThanOrEqual(3000);
    const rejectionsBefore = await samples(t, 'guanlink_rejections_total');
    const notStoredBefore = await samples(t, 'guanlink_rejections_not_stored_total');

    // Hostile devices publish their payloads one after another (each answer belongs to its publish);
    // the well-behaved devices publish alongside, paced by the hostile progress so the two overlap.
    const answers = new Map<HostileCase, ErrorsMessage>();
    const failures: string[] = [];
    let hostileDone = 0;
    const hostileStart = Date.now();
    let hostileEnd = Number.POSITIVE_INFINITY;
    const runHostile = async (h: (typeof hostile)[number], cases: HostileCase[]): Promise<void> => {
      for (const c of cases) {
        if (!h.link.client.connected) {
          failures.push(`${h.spec.name}: connection lost; reconnecting`);
          if (++h.link.reconnects > 10) return;
          await h.link.open();
        }
        if (!(await h.link.publish(c.topic, c.payload))) failures.push(`${c.category} ${c.device} not acknowledged: ${preview(c.payload)}`);
        else {
          const answer = await h.link.nextAnswer(3000);
          if (answer) answers.set(c, answer);
          else failures.push(`${c.category} ${c.device} acknowledged but never answered on ${ERRORS_TOPIC}: ${preview(c.payload)}`);
        }
        hostileDone++;
      }
    };
    const validSentAt: number[] = [];
    const deadline = Date.now() + 40_000;
    const pace = (plan: ValidPublish[]) => async (k: number) => {
      while (hostileDone < (k / plan.length) * corpus.length && Date.now() < deadline && hostileEnd === Number.POSITIVE_INFINITY) await sleep(5);
    };
    const [, validProblems] = await Promise.all([
      Promise.all(hostile.map((h) => runHostile(h, corpus.filter((c) => c.device === h.spec.name)))).then(() => (hostileEnd = Date.now())),
      Promise.all(good.map((g, i) => runValid(g.link, plans[i]!, 2, pace(plans[i]!), validSentAt))).then((p) => p.flat()),
    ]);
    for (const [i, g] of good.entries()) g.expected.push(...plans[i]!.flatMap((p) => p.rows));

    // (1) Every hostile publish acknowledged and answered with its reasons, what was stored included.
    const mismatches = [...failures];
    for (const [c, a] of answers) {
      const got = a.errors.map((e) => `${e.reason}|${e.key ?? ''}`).sort();
      const problems: string[] = [];
      if (a.topic !== c.topic) problems.push(`topic ${a.topic}`);
      if (a.stored !== c.stored) problems.push(`stored ${a.stored}, expected ${c.stored}`);
      const unknown = a.errors.filter((e) => !(REJECT_REASONS as readonly string[]).includes(e.reason) || typeof e.detail !== 'string' || e.detail === '');
      if (unknown.length > 0) problems.push(`errors without a known reason and detail: ${JSON.stringify(unknown.slice(0, 3))}`);
      if (c.errors.length <= 100 ? JSON.stringify(got) !== JSON.stringify(c.errors) : got.length !== 100 || multisetMinus(c.errors, got).length > 0) {
        problems.push(`errors ${JSON.stringify(got.slice(0, 8))}${got.length > 8 ? `…(${got.length})` : ''}, expected ${JSON.stringify(c.errors.slice(0, 8))}${c.errors.length > 8 ? `…(${c.errors.length})` : ''}`);
      }
      if (problems.length > 0) mismatches.push(`${c.category} ${c.device} ${preview(c.payload)}: ${problems.join('; ')}`);
    }
    for (const g of good) if (g.link.inbox.length > 0) mismatches.push(`${g.spec.name}: valid traffic refused: ${JSON.stringify(g.link.inbox.slice(0, 2))}`);
    const byCategory: Record<string, number> = {};
    for (const m of mismatches) byCategory[m.split(' ')[0]!] = (byCategory[m.split(' ')[0]!] ?? 0) + 1;
    expect(mismatches.slice(0, 25), `${mismatches.length} of ${corpus.length} hostile payloads mishandled: ${JSON.stringify(byCategory)}`).toEqual([]);
    expect(answers.size).toBe(corpus.length);
    expect(validProblems).toEqual([]);
    for (const h of hostile) {
      expect(h.link.reconnects, `${h.spec.name} reconnects`).toBe(0);
      expect(h.link.inbox, `${h.spec.name}: answers nobody waited for`).toEqual([]);
    }
    // The valid traffic really ran alongside the hostile traffic.
    expect(validSentAt.filter((at) => at >= hostileStart && at <= hostileEnd).length).toBeGreaterThanOrEqual(0.9 * validSentAt.length);

    // (3) Counted by reason: every rejection, including those beyond the 100 an answer lists.
    const expectedCounts: Record<string, number> = {};
    for (const c of corpus) for (const e of c.errors) expectedCounts[e.split('|')[0]!] = (expectedCounts[e.split('|')[0]!] ?? 0) + 1;
    expect(delta(await samples(t, 'guanlink_rejections_total'), rejectionsBefore)).toEqual(expectedCounts);
    expect(delta(await samples(t, 'guanlink_rejections_not_stored_total'), notStoredBefore)).toEqual({});

    // (2) Kept: one rejected_messages row per hostile publish, with its reasons and raw payload.
    const ids = hostile.map((h) => h.device.id);
    const nameOf = new Map(hostile.map((h) => [h.spec.name, h.device.id]));
    const expectedKept = corpus.map((c) =>
      [
        nameOf.get(c.device),
        c.topic,
        createHash('md5').update(c.payload.subarray(0, MAX_PAYLOAD)).digest('hex'),
        c.payload.length,
        [...new Set(c.errors.map((e) => e.split('|')[0]))].sort().join(','),
        c.stored,
        Math.min(100, c.errors.length),
      ].join(' '),
    );
    const keptRows = async () =>
      (
        await db.query<{ device_id: number; topic: string; md5: string; payload_size: number; reasons: string[]; stored: number; n: number }>(
          `SELECT device_id, topic, md5(payload) AS md5, payload_size, reasons, stored, jsonb_array_length(errors) AS n
             FROM rejected_messages WHERE device_id = ANY($1)`,
          [ids],
        )
      ).rows;
    // Rejected messages are saved in the background (every 200 ms); compare whatever is there once complete or after a while.
    const kept = await eventually(async () => ((await keptRows()).length >= corpus.length ? true : undefined), { timeoutMs: 15_000, intervalMs: 200 }).then(keptRows, keptRows);
    const keptKeys = kept.map((r) => [r.device_id, r.topic, r.md5, r.payload_size, [...r.reasons].sort().join(','), r.stored, r.n].join(' '));
    expect(multisetMinus(keptKeys, expectedKept).slice(0, 10), 'hostile publishes missing from rejected_messages').toEqual([]);
    expect(multisetMinus(expectedKept, keptKeys).slice(0, 10), 'unexpected rejected_messages rows').toEqual([]);

    // (5) Still up and ready, and every hostile connection still works for valid telemetry.
    const ready = await t.api<{ status: string }>('GET', '/readyz', undefined, { auth: false });
    expect(ready.status).toBe(200);
    for (const h of hostile) {
      const ts = firstTs - 30_000;
      const key = h.spec.goodKeys[0]!;
      expect(await h.link.publish('v2/t', JSON.stringify([{ ts, values: { [key]: 1 } }])), `${h.spec.name} usable`).toBe(true);
      h.expected.push({ ts, values: { [key]: 1 }, lat: h.spec.location?.lat ?? null, lng: h.spec.location?.lng ?? null, alt: null });
    }
    await sleep(200);
    for (const h of hostile) expect(h.link.inbox, `${h.spec.name}: valid publish after the fuzz refused`).toEqual([]);

    // (4) The valid traffic stored exactly: every reading, its values and position, nothing more, nothing twice;
    // and of the hostile devices exactly what their payloads' good parts held.
    for (const g of good) await expectStoredExactly(db, g.device, g.expected);
    for (const h of hostile) await expectStoredExactly(db, h.device, [...h.expected, ...corpus.filter((c) => c.device === h.spec.name).flatMap((c) => c.rows)]);

    const perCategory = Object.fromEntries(CATEGORIES.map((c) => [c, corpus.filter((x) => x.category === c).length]));
    console.info(
      `fuzz: ${corpus.length} hostile payloads (${(corpus.reduce((s, c) => s + c.payload.length, 0) / 1e6).toFixed(1)} MB, ${corpus.filter((c) => c.stored > 0).length} partly stored) ` +
        `and ${good.reduce((s, g) => s + g.expected.length, 0)} valid readings in ${hostileEnd - hostileStart} ms (test ${Date.now() - started} ms); ${JSON.stringify(perCategory)}`,
    );
  });

  it('closes connections that break the MQTT protocol, counts them, and keeps serving valid traffic', async () => {
    const port = t.platform.mqttPort;
    const victim = await t.createDevice({ name: 'protocol-abuser' });
    // A well-behaved device publishes all along (its keys are those of good-generic, already known).
    const spec = VALID[0]!;
    const device = await t.createDevice({ name: 'protocol-bystander', type: spec.type, location: spec.location });
    const bystander = { device, link: await new DeviceLink(t, device).open(), expected: [] as ExpectedRow[] };
    const plan = validPlan(spec, SEED + 99, Date.now() - 86_400_000 / 2, 60);
    const connect = (extra: Partial<IConnectPacket> = {}) =>
      mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'raw', keepalive: 30, username: victim.accessToken, ...extra });
    const publish = (topic: string, payload: Buffer | string = '{"a":1}', qos: 0 | 1 = 1) =>
      mqttPacket.generate({ cmd: 'publish', topic, payload, qos, messageId: qos ? 7 : undefined, retain: false, dup: false } as IPublishPacket);
    /** A publish whose topic bytes are given raw (mqtt-packet would encode a JS string as valid UTF-8). */
    const rawTopicPublish = (topic: Buffer) => {
      const body = Buffer.concat([Buffer.from([topic.length >> 8, topic.length & 0xff]), topic, Buffer.from([0, 9]), Buffer.from('{"a":1}')]);
      return Buffer.concat([Buffer.from([0x32, body.length]), body]);
    };
    const rng = createRng(SEED + 7);
    /** Seeded garbage that announces a complete packet of a type other than CONNECT. */
    const garbage = () => {
      const type = rng.pick([0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
      const body = Array.from({ length: rng.int(120) }, () => rng.int(256));
      return Buffer.from([(type << 4) | rng.int(16), body.length, ...body]);
    };

    interface Abuse {
      name: string;
      afterConnect: boolean;
      bytes: Buffer;
      /** Topics outside the device API are refused (acknowledged, counted, kept, not ingested); the rest close the connection. */
      refused?: true;
      /** How guanlink_mqtt_refusals_total counts it. */
      reason: 'connection_error' | 'client_error' | 'packet_too_large' | 'acl';
    }
    const abuses: Abuse[] = [
      { name: 'HTTP request instead of CONNECT', afterConnect: false, bytes: Buffer.from('GET / HTTP/1.1\r\nHost: guanlink\r\n\r\n'), reason: 'connection_error' },
      { name: 'TLS ClientHello instead of CONNECT', afterConnect: false, bytes: Buffer.from([0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, ...Array(160).fill(7)]), reason: 'connection_error' },
      { name: 'PROXY protocol header before CONNECT', afterConnect: false, bytes: Buffer.concat([Buffer.from('PROXY TCP4 192.0.2.1 192.0.2.2 51000 1883\r\n'), connect()]), reason: 'connection_error' },
      { name: 'two zero bytes before CONNECT', afterConnect: false, bytes: Buffer.concat([Buffer.from([0, 0]), connect()]), reason: 'connection_error' },
      { name: 'PINGREQ before CONNECT', afterConnect: false, bytes: Buffer.concat([Buffer.from([0xc0, 0x00]), connect()]), reason: 'connection_error' },
      { name: 'PUBLISH before CONNECT', afterConnect: false, bytes: publish(TELEMETRY), reason: 'connection_error' },
      { name: 'CONNECT with an unknown protocol name', afterConnect: false, bytes: Buffer.concat([Buffer.from([0x10, 0x0c, 0x00, 0x04]), Buffer.from('MQTZ'), Buffer.from([0x04, 0x02, 0x00, 0x1e, 0x00, 0x00])]), reason: 'connection_error' },
      { name: 'CONNECT with the reserved flag set', afterConnect: false, bytes: Buffer.concat([Buffer.from([0x10, 0x0c, 0x00, 0x04]), Buffer.from('MQTT'), Buffer.from([0x04, 0x03, 0x00, 0x1e, 0x00, 0x00])]), reason: 'connection_error' },
      { name: 'CONNECT larger than the packet limit', afterConnect: false, bytes: connect({ username: 'u'.repeat(MAX_PACKET + 10) }), reason: 'packet_too_large' },
      ...Array.from({ length: 8 }, (_, i) => ({ name: `seeded garbage #${i} instead of CONNECT`, afterConnect: false, bytes: garbage(), reason: 'connection_error' as const })),
      { name: 'packet of reserved type 0', afterConnect: true, bytes: Buffer.from([0x00, 0x00]), reason: 'client_error' },
      { name: 'AUTH packet in MQTT 3.1.1', afterConnect: true, bytes: Buffer.from([0xf0, 0x00]), reason: 'client_error' },
      { name: 'PUBLISH announcing 100 MB', afterConnect: true, bytes: Buffer.concat([Buffer.from([0x32, 0x80, 0x80, 0x80, 0x32]), publish(TELEMETRY).subarray(2)]), reason: 'packet_too_large' },
      { name: 'PUBLISH just over the packet limit, in one write', afterConnect: true, bytes: publish(TELEMETRY, JSON.stringify({ a: 1, pad: 'x'.repeat(MAX_PACKET) })), reason: 'packet_too_large' },
      { name: 'malformed remaining length', afterConnect: true, bytes: Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f, 0x00]), reason: 'client_error' },
      { name: 'PUBLISH to a wildcard topic (#)', afterConnect: true, bytes: publish('v1/devices/me/#'), reason: 'client_error' },
      { name: 'PUBLISH to a wildcard topic (+)', afterConnect: true, bytes: publish('v1/devices/+/telemetry'), reason: 'client_error' },
      { name: 'PUBLISH with an empty topic', afterConnect: true, bytes: rawTopicPublish(Buffer.alloc(0)), reason: 'client_error' },
      { name: 'PUBLISH with QoS 3', afterConnect: true, bytes: Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01]), reason: 'client_error' },
      // [MQTT-1.5.3-1], [MQTT-1.5.3-2]: the server must close the connection.
      { name: 'PUBLISH with an invalid UTF-8 topic', afterConnect: true, bytes: rawTopicPublish(Buffer.concat([Buffer.from('v1/devices/me/telemetry'), Buffer.from([0xff, 0xfe])])), reason: 'client_error' },
      { name: 'PUBLISH with a NUL in the topic', afterConnect: true, bytes: rawTopicPublish(Buffer.from('v1/devices/me/telemetry\u0000')), reason: 'client_error' },
      { name: 'PUBLISH to a topic outside the device API', afterConnect: true, bytes: rawTopicPublish(Buffer.from('city/secrets')), refused: true, reason: 'acl' },
      { name: 'SUBSCRIBE with reserved header flags', afterConnect: true, bytes: Buffer.from([0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x23, 0x00]), reason: 'client_error' },
      { name: 'second CONNECT on the same connection', afterConnect: true, bytes: connect({ clientId: 'again' }), reason: 'client_error' },
    ];

    const refusalsBefore = await samples(t, 'guanlink_mqtt_refusals_total');
    const rejectionsBefore = await samples(t, 'guanlink_rejections_total');
    let abusesDone = 0;
    const deadline = Date.now() + 30_000;
    const valid = runValid(bystander.link, plan, 2, async (k) => {
      while (abusesDone < (k / plan.length) * abuses.length && Date.now() < deadline) await sleep(5);
    }, []);

    const outcomes: string[] = [];
    const perAbuse: string[] = [];
    let lastRefusals = refusalsBefore;
    for (const abuse of abuses) {
      const socket = net.connect(port, '127.0.0.1');
      socket.on('error', () => {});
      const closed = new Promise<boolean>((resolve) => socket.once('close', () => resolve(true)));
      await new Promise((resolve) => socket.once('connect', resolve));
      if (abuse.afterConnect) {
        socket.write(connect());
        const connack = await within(new Promise<Buffer>((resolve) => socket.once('data', resolve)), 5000, Buffer.alloc(0));
        expect([...connack], `${abuse.name}: CONNACK accepted`).toEqual([0x20, 0x02, 0x00, 0x00]);
      }
      const reply = new Promise<Buffer>((resolve) => socket.once('data', resolve));
      socket.write(abuse.bytes);
      if (abuse.refused) {
        // The refusal is explained on v1/devices/me/errors, then the publish is acknowledged.
        const puback = Buffer.from([0x40, 0x02, 0x00, 0x09]);
        let answer = await within(reply, 5000, Buffer.alloc(0));
        const until = Date.now() + 5000;
        socket.on('data', (d: Buffer) => (answer = Buffer.concat([answer, d])));
        while (!answer.includes(puback) && Date.now() < until) await sleep(10);
        if (!answer.includes(puback)) outcomes.push(`${abuse.name}: not acknowledged (${answer.toString('hex')})`);
      } else if (!(await within(closed, 5000, false))) outcomes.push(`${abuse.name}: connection still open`);
      socket.destroy();
      await sleep(20);
      const counted = delta(await samples(t, 'guanlink_mqtt_refusals_total'), lastRefusals);
      perAbuse.push(`${abuse.name}: ${JSON.stringify(counted)}`);
      if (Object.keys(counted).join() !== abuse.reason || !(counted[abuse.reason]! >= 1)) outcomes.push(`${abuse.name}: counted as ${JSON.stringify(counted)}, expected ${abuse.reason}`);
      lastRefusals = await samples(t, 'guanlink_mqtt_refusals_total');
      abusesDone++;
    }
    expect(await valid).toEqual([]);
    expect(outcomes).toEqual([]);

    // A subscription outside the device API is refused (SUBACK failure) but the connection stays usable.
    const c = await t.connect(victim.accessToken);
    await expect(c.subscribeAsync('#', { qos: 1 })).rejects.toThrow(/Subscribe error/); // SUBACK 0x80
    await c.publishAsync(TELEMETRY, JSON.stringify({ ts: Date.now() - 1000, values: { ok_a: 1 } }), { qos: 1 });

    const refusals = delta(await samples(t, 'guanlink_mqtt_refusals_total'), refusalsBefore);
    console.info(`protocol abuse: ${abuses.length} connections; refusals ${JSON.stringify(refusals)}`);
    expect(refusals.packet_too_large).toBe(abuses.filter((a) => a.reason === 'packet_too_large').length);
    expect(refusals.acl).toBe(abuses.filter((a) => a.reason === 'acl').length);
    expect(refusals.subscription).toBe(1);
    // Nothing the abusers sent was ingested; only the publishes to a topic outside the device API
    // were kept as rejections (never acknowledged and silently dropped: README "Unsupported topics").
    expect(delta(await samples(t, 'guanlink_rejections_total'), rejectionsBefore)).toEqual({ topic_not_allowed: abuses.filter((a) => a.refused).length });
    expect((await storedReadings(db, victim.id)).map((r) => r.values)).toEqual([{ ok_a: 1 }]);

    expect(bystander.link.inbox).toEqual([]);
    await expectStoredExactly(db, bystander.device, plan.flatMap((p) => p.rows));
    const ready = await t.api<{ status: string }>('GET', '/readyz', undefined, { auth: false });
    expect(ready.status).toBe(200);
  });
});

describe('fuzz: the per-device budget of kept rejected messages', () => {
  let t: TestPlatform;
  let db: pg.Pool;

  beforeAll(async () => {
    t = await startTestPlatform({ rejectedPerDevicePerMinute: 5 });
    db = testPool(t.databaseUrl, 2);
    db.on('error', () => {});
  });
  afterAll(async () => {
    await db?.end();
    await t?.stop();
  });

  it('keeps at most the budget per device and minute, still answers and counts every rejection', async () => {
    const noisy = await new DeviceLink(t, await t.createDevice({ name: 'budget-noisy' })).open();
    const quiet = await new DeviceLink(t, await t.createDevice({ name: 'budget-quiet' })).open();
    // The budget is per clock minute: start well inside one so that all of this falls in it.
    while (Date.now() % 60_000 > 50_000) await sleep(100);
    const before = await samples(t, 'guanlink_rejections_total');
    const notStoredBefore = await samples(t, 'guanlink_rejections_not_stored_total');
    for (let i = 0; i < 12; i++) {
      expect(await noisy.publish(TELEMETRY, `{"n":${i},}`)).toBe(true);
      expect((await noisy.nextAnswer(3000))?.errors.map((e) => e.reason)).toEqual(['invalid_json']);
    }
    // a number that overflows a double (a string would be stored as a string)
    expect(await quiet.publish(TELEMETRY, '{"n":1e999}')).toBe(true);
    expect((await quiet.nextAnswer(3000))?.errors.map((e) => e.reason)).toEqual(['not_numeric']);

    expect(delta(await samples(t, 'guanlink_rejections_total'), before)).toEqual({ invalid_json: 12, not_numeric: 1 });
    expect(delta(await samples(t, 'guanlink_rejections_not_stored_total'), notStoredBefore)).toEqual({ '': 7 });
    const count = async (id: number) => Number((await db.query('SELECT count(*) FROM rejected_messages WHERE device_id = $1', [id])).rows[0].count);
    await eventually(async () => ((await count(quiet.device.id)) === 1 ? true : undefined));
    expect(await count(noisy.device.id)).toBe(5);
    const kept = await db.query<{ payload: Buffer }>('SELECT payload FROM rejected_messages WHERE device_id = $1 ORDER BY received_at', [noisy.device.id]);
    expect(kept.rows.map((r) => r.payload.toString()).sort()).toEqual(Array.from({ length: 5 }, (_, i) => `{"n":${i},}`).sort());
  });
});
