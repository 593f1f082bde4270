import { BUILTIN_DEVICE_TYPES } from '../../core/device-types.ts';
import { createRng } from '../../simulators/random.ts';

/**
 * A seeded corpus of hostile telemetry payloads for the fuzz test (test/e2e/fuzz.test.ts), each
 * with what the platform must answer: every rejection ("reason|key"), how many readings it stores
 * and exactly which rows. The expectations come from a small model of the rules the README states
 * (ThingsBoard forms, value types and their limits, per-key rejection, ranges of typed devices, key dictionary,
 * time and position rules); payloads are built as JSON text so that keys such as `__proto__`, lone
 * surrogates and duplicate-free hostile names reach the broker exactly as written.
 */

export const TELEMETRY_TOPICS = ['v1/devices/me/telemetry', 'v2/t', 'v2/t/j'] as const;

export const CATEGORIES = [
  'invalid_json',
  'binary',
  'empty',
  'wrong_shape',
  'timestamps',
  'deep_nesting',
  'huge_arrays',
  'oversized',
  'number_overflow',
  'non_numeric',
  'hostile_keys',
  'too_many_keys',
  'out_of_range',
  'positions',
  'mixtures',
] as const;
export type Category = (typeof CATEGORIES)[number];

export interface HostileDevice {
  name: string;
  type: string;
  location: { lat: number; lng: number } | null;
  /** Keys this device stores: in the key dictionary (sent in its warm-up) and acceptable for its type. */
  goodKeys: readonly string[];
}

export interface ExpectedRow {
  ts: number;
  /** Numbers, and values of ThingsBoard's other types (string, boolean, JSON) as sent. */
  values: Record<string, unknown>;
  lat: number | null;
  lng: number | null;
  alt: number | null;
}

export interface HostileCase {
  device: string;
  category: Category;
  topic: string;
  payload: Buffer;
  /** Every rejection the platform must report, as "reason|key" (empty key when the rejection names none), sorted. */
  errors: string[];
  /** Readings stored from this message (the `stored` of the errors message). */
  stored: number;
  rows: ExpectedRow[];
}

export interface CorpusOptions {
  seed: number;
  /** How many payloads of each category. */
  counts: Record<Category, number>;
  devices: readonly HostileDevice[];
  /** Every key name in the platform's key dictionary once the fuzz starts (it is full: others are refused). */
  knownKeys: ReadonlySet<string>;
  maxPayloadBytes: number;
  /** The server clock when the corpus is built (timestamps in the future are relative to it). */
  now: number;
  /** First timestamp used for stored hostile readings; each device then counts up in seconds. */
  firstTs: number;
}

/** Valid-looking key names beyond plain identifiers; warmed up into the dictionary so generic devices store them. */
export const WEIRD_KEYS = [
  'constructor',
  'toString',
  'hasOwnProperty',
  'valueOf',
  '__defineGetter__',
  'isPrototypeOf',
  'prototype',
  "'; DROP TABLE readings; --",
  'Robert"); DELETE FROM devices;--',
  '<script>alert(1)</script>',
  '${jndi:ldap://evil/a}',
  '{{7*7}}',
  '../../etc/passwd',
  '温度',
  'a.b/c#+$',
  '\\x00\\n',
  'k'.repeat(100),
] as const;

/** Hostile key names that are not valid names: invalid_key, whatever the value. */
const INVALID_KEYS: string[] = [
  '__proto__',
  '',
  'k'.repeat(101),
  'x'.repeat(10_240),
  '\u{1F600}'.repeat(60), // 120 UTF-16 units
  'a\u0000b',
  '\u0000',
  '\u0001x',
  'a\nb',
  '\t',
  'x\u001f',
  '\u007f',
  '\r\n',
  '\ud800',
  'a\udfffb',
  '\udc00\ud800',
  'temp\ud83d',
];

/** Valid names never admitted into the (full) dictionary. */
const UNWARMED_NAMES = [
  "'); DELETE FROM telemetry_keys; --",
  '<img src=x onerror=alert(1)>',
  '%s%s%s%n',
  '$where',
  'SELECT pg_sleep(10)',
  'Temperature',
  ' aqi',
  'aqi ',
  'colour',
  'ts',
  'values',
  '湿度',
  'null',
  'undefined',
  '0',
  '-1',
];

/** JSON texts the platform must not read as a number: stored as strings, booleans or JSON where the device type allows it. */
const NON_NUMERIC = [
  '"abc"',
  '""',
  '" "',
  '"NaN"',
  '"Infinity"',
  '"-Infinity"',
  '"0x1F"',
  '"1,5"',
  '"1 2"',
  '"１２"',
  '"½"',
  '"1e"',
  '"e5"',
  '"--1"',
  '"+-1"',
  '"1.2.3"',
  '"٣"',
  '"25 °C"',
  '"null"',
  '"true"',
  '"\\u0000"',
  '"\\ud800"',
  'true',
  'false',
  '{}',
  '{"v":1}',
  '[]',
  '[1]',
  '[1,2]',
  '[[[]]]',
  `"${'9'.repeat(400)}x"`,
  `"${'y'.repeat(3000)}"`,
];

/** Numbers that overflow a double (never stored), or strings of them (stored as strings where any type is allowed). */
/** Values no device type stores: an overflowing number, U+0000, a lone surrogate, too long, too deep. */
const REFUSED = ['1e999', '-1e999', '1.8e308', '"\\u0000"', '"a\\ud800"', `"${'z'.repeat(4097)}"`, `${'['.repeat(33)}${']'.repeat(33)}`];

const OVERFLOW = ['1e999', '-1e999', '"1e999"', '"-1e999"', '1.8e308', '-1.8e308', '"1.8e308"', '1e400', '123e456', '"  9e999  "'];

/** Numeric strings and edge literals with the number they must be stored as. */
const NUMERIC_STRINGS: [string, number][] = [
  ['" 25 "', 25],
  ['"+5"', 5],
  ['"-0.5"', -0.5],
  ['".5"', 0.5],
  ['"5."', 5],
  ['"1e1"', 10],
  ['"1E-2"', 0.01],
  ['"\\t7\\n"', 7],
];
const EDGE_NUMBERS: [string, number][] = [
  ['5e-324', 5e-324],
  ['-5e-324', -5e-324],
  ['1.7976931348623157e308', 1.7976931348623157e308],
  ['-1.7976931348623157e308', -1.7976931348623157e308],
  ['-0', 0],
  ['1e-400', 0],
  ['9007199254740993', 9007199254740992],
  ['2.2250738585072014e-308', 2.2250738585072014e-308],
  ['0.1', 0.1],
  ['1E+2', 100],
];

type Val = { json: string; kind: 'num'; num: number } | { json: string; kind: 'bad' } | { json: 'null'; kind: 'null' };
const num = (n: number, json = JSON.stringify(n)): Val => ({ json, kind: 'num', num: n === 0 ? 0 : n });
const bad = (json: string): Val => ({ json, kind: 'bad' });
const NULL: Val = { json: 'null', kind: 'null' };

type TsSpec = { kind: 'at'; ts: number; json: string } | { kind: 'server' } | { kind: 'future'; json: string } | { kind: 'old'; json: string };

interface Entry {
  text: string;
  errors: string[];
  row: ExpectedRow | undefined;
}

const round = (x: number, digits: number): number => {
  const f = 10 ** digits;
  const r = Math.round(x * f) / f;
  return r === 0 ? 0 : r;
};
const objectText = (pairs: [string, Val][]): string => `{${pairs.map(([k, v]) => `${JSON.stringify(k)}:${v.json}`).join(',')}}`;

/**
 * The README's rules for a value that is not a number (an undeclared key of a type that stores any
 * key): a number overflowing a double is refused; a string of more than 4096 characters, or a JSON
 * value of more than 16384 bytes or nested deeper than 32, is too large; U+0000 or a lone surrogate
 * anywhere is invalid. Undefined: stored with its type.
 */
function otherTypeProblem(json: string): string | undefined {
  const value: unknown = JSON.parse(json);
  if (typeof value === 'number') return 'not_numeric';
  const badText = (t: string) => t.includes('\u0000') || !t.isWellFormed();
  if (typeof value === 'string') return value.length > 4096 ? 'value_too_large' : badText(value) ? 'invalid_value' : undefined;
  if (typeof value !== 'object' || value === null) return undefined;
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v === 'string' && badText(v)) return 'invalid_value';
    if (typeof v === 'object' && v !== null) {
      if (depth > 32) return 'invalid_value';
      for (const [k, item] of Object.entries(v)) {
        if (!Array.isArray(v) && badText(k)) return 'invalid_value';
        stack.push([item, depth + 1]);
      }
    }
  }
  return Buffer.byteLength(JSON.stringify(value)) > 16_384 ? 'value_too_large' : undefined;
}

export function hostileCorpus(opts: CorpusOptions): HostileCase[] {
  const rng = createRng(opts.seed);
  const types = new Map(BUILTIN_DEVICE_TYPES.map((t) => [t.name, t]));
  const devices = opts.devices.map((d) => ({ ...d, typeDef: types.get(d.type)! }));
  const nextTs = new Map(devices.map((d, i) => [d.name, opts.firstTs + i * 7]));
  let novel = 0;

  type Dev = (typeof devices)[number];
  const takeTs = (d: Dev): number => {
    const ts = nextTs.get(d.name)!;
    nextTs.set(d.name, ts + 1000);
    return ts;
  };
  const declared = (d: Dev, key: string) => (Object.hasOwn(d.typeDef.keys, key) ? d.typeDef.keys[key] : undefined);

  // --- the model: what the platform does with one key/value of one device (README rules) ---
  type Outcome = { k: 'skip' } | { k: 'err'; e: string } | { k: 'pos'; axis: 'latitude' | 'longitude' | 'altitude'; num: number } | { k: 'good'; value: unknown };
  function classify(d: Dev, key: string, v: Val): Outcome {
    if (v.kind === 'null') return { k: 'skip' };
    // eslint-disable-next-line no-control-regex
    if (key.length === 0 || key.length > 100 || /[\u0000-\u001f\u007f]/.test(key) || !key.isWellFormed() || key === '__proto__') {
      return { k: 'err', e: `invalid_key|${key.slice(0, 100)}` };
    }
    const position = key === 'latitude' || key === 'longitude' || key === 'altitude';
    if (v.kind === 'bad' && position) return { k: 'err', e: `not_numeric|${key}` };
    if (position) return { k: 'pos', axis: key, num: (v as { num: number }).num };
    const spec = declared(d, key);
    if (!spec && !d.typeDef.acceptsUndeclaredKeys) return { k: 'err', e: `undeclared_key|${key}` };
    let value: unknown;
    if (v.kind === 'bad') {
      // built-in types declare numbers only
      if (spec) return { k: 'err', e: `not_numeric|${key}` };
      const problem = otherTypeProblem(v.json);
      if (problem) return { k: 'err', e: `${problem}|${key}` };
      value = JSON.parse(v.json);
    } else {
      if (spec && ((spec.min !== undefined && v.num < spec.min) || (spec.max !== undefined && v.num > spec.max))) return { k: 'err', e: `out_of_range|${key}` };
      value = v.num;
    }
    if (!opts.knownKeys.has(key)) return { k: 'err', e: `too_many_keys|${key}` };
    return { k: 'good', value };
  }
  /** The rejection of `json` sent for `key` by `d`, for payloads that must store nothing (corpus bug otherwise). */
  function refusal(d: Dev, key: string, json: string): string {
    const o = classify(d, key, bad(json));
    if (o.k !== 'err') throw new Error(`corpus bug: ${key}=${json.slice(0, 80)} is stored by ${d.name}`);
    return o.e;
  }

  function entry(d: Dev, ts: TsSpec, pairs: [string, Val][], extras = ''): Entry {
    if (ts.kind === 'future' || ts.kind === 'old') {
      return { text: `{"ts":${ts.json},"values":${objectText(pairs)}${extras}}`, errors: [ts.kind === 'future' ? 'ts_in_future|' : 'ts_too_old|'], row: undefined };
    }
    const errors: string[] = [];
    const values: Record<string, unknown> = {};
    const pos: Partial<Record<'latitude' | 'longitude' | 'altitude', number>> = {};
    let count = 0;
    for (const [key, v] of pairs) {
      const o = classify(d, key, v);
      if (o.k === 'err') errors.push(o.e);
      else if (o.k === 'pos') pos[o.axis] = o.num;
      else if (o.k === 'good') {
        values[key] = o.value;
        count++;
      }
    }
    let fromTelemetry: { lat: number; lng: number; alt: number | null } | undefined;
    if (pos.latitude !== undefined || pos.longitude !== undefined || pos.altitude !== undefined) {
      const { latitude: lat, longitude: lng, altitude: alt } = pos;
      if (lat === undefined || lng === undefined) errors.push('invalid_position|');
      else if (lat < -90 || lat > 90 || lng < -180 || lng > 180) errors.push('invalid_position|');
      else if (alt !== undefined && (alt < -12_000 || alt > 100_000_000)) errors.push('invalid_position|');
      else fromTelemetry = { lat, lng, alt: alt ?? null };
    }
    let row: ExpectedRow | undefined;
    if (count > 0 || fromTelemetry) {
      // (server time is unknown in advance: push() refuses such rows; mixedEntry only uses the flat form when nothing is stored)
      const at = fromTelemetry ?? (d.location ? { ...d.location, alt: null } : { lat: null, lng: null, alt: null });
      row = { ts: ts.kind === 'at' ? ts.ts : Number.NaN, values, lat: at.lat, lng: at.lng, alt: at.alt };
    }
    const text = ts.kind === 'at' ? `{"ts":${ts.json},"values":${objectText(pairs)}${extras}}` : objectText(pairs);
    return { text, errors, row };
  }

  const cases: HostileCase[] = [];
  function push(d: Dev, category: Category, payload: Buffer | string, errors: string[], rows: ExpectedRow[] = []): void {
    let buf = typeof payload === 'string' ? Buffer.from(payload) : payload;
    if (buf.length > opts.maxPayloadBytes) {
      errors = ['payload_too_large|'];
      rows = [];
    }
    if (rows.some((r) => Number.isNaN(r.ts))) throw new Error(`corpus bug: a stored entry without explicit ts: ${buf.subarray(0, 200).toString()}`);
    if (errors.length === 0) throw new Error(`corpus bug: ${category} payload without a rejection: ${buf.subarray(0, 200).toString()}`);
    if (errors.length > 100 && new Set(errors.map((e) => e.split('|')[0])).size > 1) throw new Error(`corpus bug: over 100 rejections of several reasons`);
    buf = Buffer.from(buf); // own copy
    cases.push({ device: d.name, category, topic: rng.pick(TELEMETRY_TOPICS), payload: buf, errors: [...errors].sort(), stored: rows.length, rows });
  }
  function pushEntries(d: Dev, category: Category, entries: Entry[], asArray = entries.length > 1 || rng.next() < 0.2): void {
    const text = asArray ? `[${entries.map((e) => e.text).join(',')}]` : entries[0]!.text;
    const rows = entries.flatMap((e) => (e.row ? [e.row] : []));
    let errors = entries.flatMap((e) => e.errors);
    if (errors.length === 0 && rows.length === 0) errors = ['empty|'];
    push(d, category, text, errors, rows);
  }

  /** Entries made until one of them is refused something (a payload of values all stored is not hostile). */
  function pushRejected(d: Dev, category: Category, make: () => Entry[]): void {
    for (let attempt = 0; attempt < 100; attempt++) {
      const entries = make();
      if (entries.some((e) => e.errors.length > 0)) return pushEntries(d, category, entries);
    }
  }

  // --- value and fragment generators ---
  const pickDev = (filter: (d: Dev) => boolean = () => true): Dev => rng.pick(devices.filter(filter));
  const typed = (d: Dev) => !d.typeDef.acceptsUndeclaredKeys;
  const generic = (d: Dev) => d.typeDef.acceptsUndeclaredKeys;
  function goodValue(d: Dev, key: string): Val {
    const spec = declared(d, key);
    const n = spec ? round(rng.range(spec.min ?? -1e3, spec.max ?? 1e3), 3) : rng.next() < 0.5 ? rng.int(100_000) - 50_000 : round(rng.gauss() * 1e4, 4);
    const clamped = spec ? Math.min(Math.max(n, spec.min ?? n), spec.max ?? n) : n;
    return rng.next() < 0.1 ? num(clamped, `"${clamped}"`) : num(clamped);
  }
  const goodFrag = (d: Dev): [string, Val][] => {
    const key = rng.pick(d.goodKeys);
    return [[key, goodValue(d, key)]];
  };
  const anyName = (d: Dev): string => rng.pick([...d.goodKeys, 'a', 'temp', 'v_1', 'x y', 'reading', ...UNWARMED_NAMES]);
  const nonNumericFrag = (d: Dev): [string, Val][] => [[anyName(d), bad(rng.pick(NON_NUMERIC))]];
  const overflowFrag = (d: Dev): [string, Val][] => [[rng.next() < 0.15 ? rng.pick(['latitude', 'longitude', 'altitude']) : anyName(d), bad(rng.pick(OVERFLOW))]];
  const numericStringFrag = (d: Dev): [string, Val][] => {
    const [json, n] = rng.pick(NUMERIC_STRINGS);
    return [[rng.pick(d.goodKeys), num(n, json)]];
  };
  const edgeFrag = (d: Dev): [string, Val][] => {
    if (generic(d)) {
      const [json, n] = rng.pick(EDGE_NUMBERS);
      return [[rng.pick(d.goodKeys), num(n, json)]];
    }
    const key = rng.pick(d.goodKeys);
    const spec = declared(d, key)!;
    return [[key, num(rng.next() < 0.5 ? spec.min! : spec.max!)]];
  };
  const invalidKeyFrag = (): [string, Val][] => [[rng.pick(INVALID_KEYS), rng.next() < 0.8 ? num(rng.int(100)) : bad(rng.pick(NON_NUMERIC))]];
  const weirdKeyFrag = (): [string, Val][] => [[rng.pick(WEIRD_KEYS), num(rng.int(1000))]];
  const unwarmedFrag = (): [string, Val][] => [[rng.pick(UNWARMED_NAMES), num(rng.int(1000))]];
  const novelFrag = (): [string, Val][] => [[`novel_${novel++}`, num(round(rng.range(-100, 100), 2))]];
  function outOfRangeFrag(d: Dev): [string, Val][] {
    const keys = Object.keys(d.typeDef.keys);
    if (keys.length === 0) return nonNumericFrag(d);
    const key = rng.pick(keys);
    const spec = d.typeDef.keys[key]!;
    const n = rng.pick([spec.max! + 0.001, spec.max! + 1, spec.min! - 0.001, spec.min! - 1, spec.max! * 1000 + 1, -1e300, 1e300]);
    return [[key, rng.next() < 0.2 ? num(n, `"${n}"`) : num(n)]];
  }
  function unwarmedDeclaredFrag(d: Dev): [string, Val][] {
    const keys = Object.keys(d.typeDef.keys).filter((k) => !opts.knownKeys.has(k));
    if (keys.length === 0) return novelFrag();
    const key = rng.pick(keys);
    return [[key, goodValue(d, key)]];
  }
  const undeclaredFrag = (): [string, Val][] => [[rng.pick(['colour', 'Temperature', ' aqi', 'ok_a', 'water_level', 'speed', 'aqi']), num(rng.int(50))]];
  const nullFrag = (d: Dev): [string, Val][] => [[anyName(d), NULL]];
  function positionFrag(valid: boolean): [string, Val][] {
    if (valid) {
      const p = rng.pick<[number, number, number | undefined]>([
        [90, 180, undefined],
        [-90, -180, undefined],
        [0, 0, undefined],
        [23.0205, 113.7518, -12_000],
        [22.9, 113.6, 100_000_000],
        [round(rng.range(22.6, 23.2), 6), round(rng.range(113.5, 114.3), 6), undefined],
        [round(rng.range(22.6, 23.2), 6), round(rng.range(113.5, 114.3), 6), round(rng.range(0, 120), 1)],
      ]);
      const pairs: [string, Val][] = [
        ['latitude', rng.next() < 0.2 ? num(p[0], `" ${p[0]} "`) : num(p[0])],
        ['longitude', num(p[1])],
      ];
      if (p[2] !== undefined) pairs.push(['altitude', num(p[2])]);
      return pairs;
    }
    return rng.pick<[string, Val][]>([
      [['latitude', num(91)], ['longitude', num(113.7)]],
      [['latitude', num(-90.0001)], ['longitude', num(0)]],
      [['latitude', num(23)], ['longitude', num(500)]],
      [['latitude', num(23)], ['longitude', num(-180.5)]],
      [['latitude', num(1e300)], ['longitude', num(-1e300)]],
      [['latitude', num(23.02)]],
      [['longitude', num(113.75)]],
      [['altitude', num(30)]],
      [['latitude', num(23)], ['longitude', num(113.7)], ['altitude', num(-12_001)]],
      [['latitude', num(23)], ['longitude', num(113.7)], ['altitude', num(1.5e8)]],
      [['latitude', bad('"north"')], ['longitude', num(113.7)]],
      [['latitude', num(23)], ['longitude', bad('1e999')]],
      [['latitude', num(23)], ['longitude', NULL]],
      [['latitude', bad('[23,113]')]],
    ]);
  }

  /**
   * An entry's key/value pairs: `required` fragments first (each retried until its keys are new
   * to the entry, since JSON.parse keeps only the last of duplicate keys), then `optional` ones
   * (dropped on a clash).
   */
  function build(optional: (() => [string, Val][])[], required: (() => [string, Val][])[] = []): [string, Val][] {
    const pairs: [string, Val][] = [];
    const seen = new Set<string>();
    const add = (make: () => [string, Val][], tries: number): void => {
      for (let i = 0; i < tries; i++) {
        const frag = make();
        if (frag.some(([k]) => seen.has(k))) continue;
        for (const [k, v] of frag) {
          seen.add(k);
          pairs.push([k, v]);
        }
        return;
      }
    };
    for (const make of required) add(make, 50);
    for (const make of optional) add(make, 1);
    return rng.shuffle(pairs);
  }
  const tsAt = (d: Dev): TsSpec => {
    const ts = takeTs(d);
    const r = rng.next();
    return { kind: 'at', ts, json: r < 0.8 ? String(ts) : r < 0.9 ? `"${ts}"` : `" ${ts} "` };
  };
  const goods = (d: Dev, min: number, max: number): (() => [string, Val][])[] => Array.from({ length: min + rng.int(max - min + 1) }, () => () => goodFrag(d));
  /** A timestamped entry with good values around `bad` fragments; flat (server time) form when nothing of it is stored. */
  function mixedEntry(d: Dev, badMakers: (() => [string, Val][])[], goodRange: [number, number] = [0, 3]): Entry {
    const pairs = build(goods(d, goodRange[0], goodRange[1]), badMakers);
    const flat = entry(d, { kind: 'server' }, pairs.filter(([k]) => k !== 'ts' && k !== 'values'), '');
    if (!flat.row && rng.next() < 0.3 && !pairs.some(([k]) => k === 'ts' || k === 'values')) return flat;
    return entry(d, tsAt(d), pairs, rng.next() < 0.05 ? ',"extra":{"ignored":true}' : '');
  }
  const times = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

  // --- categories ---
  const INVALID_JSON_TEMPLATES = [
    '{"a":1,}',
    '[{"a":1},]',
    '{"a":NaN}',
    '{"a":Infinity}',
    '{"a":-Infinity}',
    "{'a':1}",
    `{"a":'1'}`,
    '{a:1}',
    '{"a":1 /* c */}',
    '// c\n{"a":1}',
    '{"a":0x10}',
    '{"a":01}',
    '{"a":.5}',
    '{"a":+1}',
    '{"a":1.}',
    '{"a":True}',
    '{"a":None}',
    '{"a":undefined}',
    '{"a":1}}',
    '{"a":1}{"b":2}',
    '{"a":1}\n{"b":2}',
    '{"a":"\u0001"}',
    '{"a":"\\q"}',
    '{"a":"\\u12"}',
    '{"a" 1}',
    '{"a":1,,"b":2}',
    '{"ts":1732600000000,"values":{"a":1}',
    '[',
    '{',
    '"',
    '"unterminated',
    '\ufeff{"a":1}',
    '{"a":1}\u0000',
    '\u0000',
    'nul',
    'tru',
    '{"a":[1,2}',
    '<telemetry><a>1</a></telemetry>',
    'a=1&b=2',
    'temperature=25',
    '25 26',
    '{"a":1e}',
    '{"a":-}',
    '{"a":1e+}',
    '   ',
    '\n',
    '{"a":1]',
    '[{"a":1}',
    '{"a":"\t"}',
    '{"\\ud800":1,}',
  ];
  const validSample = (): string => {
    const d = pickDev();
    return rng.pick([
      () => `{"ts":${takeTs(d)},"values":{"a":1.5,"b":"x"}}`,
      () => '[{"a":1},{"ts":1732600000000,"values":{"b":2}}]',
      () => `{"temperature":25,"humidity":61.5,"latitude":23.02,"longitude":113.75}`,
    ])();
  };
  for (let i = 0; i < opts.counts.invalid_json; i++) {
    const d = pickDev();
    let text = rng.pick(INVALID_JSON_TEMPLATES);
    for (let attempt = 0; attempt < 100; attempt++) {
      const r = rng.next();
      if (r < 0.4) text = rng.pick(INVALID_JSON_TEMPLATES);
      else if (r < 0.7) {
        const s = validSample();
        text = s.slice(0, 1 + rng.int(s.length - 1));
      } else if (r < 0.85) text = Array.from({ length: 1 + rng.int(200) }, () => String.fromCharCode(32 + rng.int(95))).join('');
      else {
        const s = validSample();
        const at = rng.int(s.length);
        text = s.slice(0, at) + rng.pick(['}', ']', ',', ':', '"', "'", 'x', '\\']) + s.slice(at + 1);
      }
      try {
        JSON.parse(text);
        text = rng.pick(INVALID_JSON_TEMPLATES); // valid by chance: try another (a template if attempts run out)
      } catch {
        break;
      }
    }
    push(d, 'invalid_json', text, ['invalid_json|']);
  }

  const INVALID_UTF8 = [[0xff], [0xfe, 0xff], [0xc3, 0x28], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe4, 0xb8], [0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]];
  for (let i = 0; i < opts.counts.binary; i++) {
    const d = pickDev();
    const seq = Buffer.from(rng.pick(INVALID_UTF8));
    const r = rng.next();
    let payload: Buffer;
    if (r < 0.35) {
      // random bytes, led by a byte that is never valid UTF-8 (and never JSON)
      payload = Buffer.from(times(1 + rng.int(3000), (j) => (j === 0 ? rng.pick([0xff, 0xfe, 0x80, 0xbf, 0xc0, 0xf5]) : rng.int(256))));
    } else if (r < 0.55) {
      // a JSON object whose key contains invalid UTF-8: not JSON text (RFC 8259 §8.1), must not become a key name
      payload = Buffer.concat([Buffer.from(`{"ts":${takeTs(d)},"values":{"${rng.pick(d.goodKeys).slice(0, 20)}`), seq, Buffer.from('":1}}')]);
    } else if (r < 0.7) {
      payload = Buffer.concat([Buffer.from('{"a":"'), seq, Buffer.from('"}')]);
    } else if (r < 0.8) {
      payload = Buffer.concat([Buffer.from('{"a":1}'), seq]);
    } else if (r < 0.9) {
      // UTF-16 with a byte-order mark, gzip, CBOR: common "wrong encoding" mistakes
      payload = rng.pick([
        Buffer.concat([Buffer.from([0xfe, 0xff]), Buffer.from('{"a":1}', 'utf16le').swap16()]),
        Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from('{"a":1}', 'utf16le')]),
        Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, ...times(40, () => rng.int(256))]),
        Buffer.from([0xa1, 0x61, 0x61, 0x01]),
        Buffer.from([0x81, 0xa1, 0x61, 0x01]),
      ]);
    } else {
      payload = Buffer.concat([Buffer.from(`{"ts":${takeTs(d)},"values":{"a":1,"b`), seq, Buffer.from('":2,"c":3}}')]);
    }
    push(d, 'binary', payload, ['invalid_json|']);
  }

  for (let i = 0; i < opts.counts.empty; i++) {
    const d = pickDev();
    const r = rng.next();
    if (r < 0.2) {
      push(d, 'empty', Buffer.alloc(0), ['invalid_json|']); // zero bytes is not JSON
      continue;
    }
    const text = rng.pick([
      () => '{}',
      () => '[]',
      () => '[{}]',
      () => '[{},{}]',
      () => `{${JSON.stringify(anyName(d))}:null}`,
      () => `{"ts":${takeTs(d)},"values":{}}`,
      () => `{"ts":${takeTs(d)},"values":{"a":null,"__proto__":null,"":null}}`,
      () => `[{"ts":${takeTs(d)},"values":{}},{}]`,
      () => '  {}  ',
      () => '{"a":null,"b":null}',
      () => `[${times(1000, () => '{}').join(',')}]`,
    ])();
    push(d, 'empty', text, ['empty|']);
  }

  for (let i = 0; i < opts.counts.wrong_shape; i++) {
    const d = pickDev();
    const ts = takeTs(d);
    const text = rng.pick([
      () => String(rng.int(1000)),
      () => String(round(rng.gauss() * 100, 3)),
      () => '1e999',
      () => JSON.stringify('str'),
      () => '""',
      () => 'true',
      () => 'false',
      () => 'null',
      () => '[1,2]',
      () => '[[{"a":1}]]',
      () => '[null]',
      () => '["a"]',
      () => '[[]]',
      () => `[{"ts":${ts},"values":{"a":1}},5]`,
      () => `[{"a":1},[]]`,
      () => `{"ts":${ts},"values":5}`,
      () => `{"ts":${ts},"values":[1]}`,
      () => `{"ts":${ts},"values":[{"a":1}]}`,
      () => `{"ts":${ts},"values":null}`,
      () => `{"ts":${ts},"values":"a=1"}`,
      () => `{"ts":${ts},"values":true}`,
      () => `[{"ts":${ts},"values":{"a":1}},{"ts":${ts + 1},"values":[]}]`,
      () => `[${times(1 + rng.int(40), () => '{"a":1}').join(',')},${rng.pick(['1', '"x"', 'null', '[]', 'true'])}]`,
    ])();
    push(d, 'wrong_shape', text, ['invalid_shape|']);
  }

  const INVALID_TS = ['1.5', '"abc"', '""', '"1.7e12"', '"0x1F"', '1e20', '9007199254740993', 'true', 'false', 'null', '[]', '{}', '"99999999999999999"', '1e999', '-1e999', '"+1732600000000"', '"1732600000000abc"', '[1732600000000]', '{"ms":1732600000000}', '"١٧٣٢٦٠٠٠٠٠٠٠٠"'];
  const OLD_TS = ['-1', '0', '-1732600000000', '1732600000', '"946684799999"', '"-5"', '946684799999', '1000'];
  const futureTs = () => rng.pick(['9007199254740991', String(opts.now + 86_400_000), '"253402300799999"', String(opts.now + 3_600_000), String(opts.now + 11 * 60_000)]);
  for (let i = 0; i < opts.counts.timestamps; i++) {
    const d = pickDev();
    const r = rng.next();
    const goodEntry = () => entry(d, tsAt(d), build(goods(d, 1, 3)));
    if (r < 0.3) {
      const json = rng.pick(INVALID_TS);
      const float = `${takeTs(d)}.5`;
      push(d, 'timestamps', `{"ts":${rng.next() < 0.2 ? float : json},"values":${objectText(build(goods(d, 1, 2)))}}`, ['invalid_ts|']);
    } else if (r < 0.45) {
      // one bad ts makes the array not a ThingsBoard form: nothing of it is stored
      const parts = [goodEntry().text, `{"ts":${rng.pick(INVALID_TS)},"values":{"a":1}}`];
      push(d, 'timestamps', `[${rng.shuffle(parts).join(',')}]`, ['invalid_ts|']);
    } else if (r < 0.6) {
      pushEntries(d, 'timestamps', [entry(d, rng.next() < 0.5 ? { kind: 'old', json: rng.pick(OLD_TS) } : { kind: 'future', json: futureTs() }, build(goods(d, 1, 3)))]);
    } else if (r < 0.85) {
      // too old or in the future: that entry alone is refused, the others are stored
      const entries = [...times(1 + rng.int(3), goodEntry), ...times(1 + rng.int(2), () => entry(d, rng.next() < 0.5 ? { kind: 'old', json: rng.pick(OLD_TS) } : { kind: 'future', json: futureTs() }, build(goods(d, 1, 2))))];
      pushEntries(d, 'timestamps', rng.shuffle(entries), true);
    } else {
      // ts without values is an ordinary key of a flat object
      // ts without values is an ordinary key of a flat object (values every type refuses: nothing is stored at server time)
      pushEntries(d, 'timestamps', [entry(d, { kind: 'server' }, [['ts', bad(rng.pick(REFUSED))], ['reading', bad(rng.pick(REFUSED))]])]);
    }
  }

  const nested = (depth: number, kind: 'array' | 'object'): string => (kind === 'array' ? '['.repeat(depth) + ']'.repeat(depth) : '{"a":'.repeat(depth) + '1' + '}'.repeat(depth));
  for (let i = 0; i < opts.counts.deep_nesting; i++) {
    const d = pickDev();
    const arrDepth = 1000 + rng.int(Math.floor(opts.maxPayloadBytes / 2) - 1100);
    const objDepth = 500 + rng.int(Math.floor(opts.maxPayloadBytes / 5) - 600);
    const r = rng.int(8);
    if (r === 0) push(d, 'deep_nesting', nested(arrDepth, 'array'), ['invalid_shape|']);
    else if (r === 1) push(d, 'deep_nesting', `{"a":${nested(arrDepth, 'array')}}`, [refusal(d, 'a', nested(arrDepth, 'array'))]);
    else if (r === 2) push(d, 'deep_nesting', `{"ts":${nested(arrDepth, 'array')},"values":{"a":1}}`, ['invalid_ts|']);
    else if (r === 3) {
      const good = build(goods(d, 1, 2));
      const ts = tsAt(d);
      const e = entry(d, ts, good);
      const deep = rng.next() < 0.5 ? nested(arrDepth - 100, 'array') : nested(objDepth - 100, 'object');
      const text = `{"ts":${(ts as { json: string }).json},"values":{${good.map(([k, v]) => `${JSON.stringify(k)}:${v.json}`).join(',')},"deep":${deep}}}`;
      push(d, 'deep_nesting', text, [...e.errors, refusal(d, 'deep', deep)], e.row ? [e.row] : []);
    } else if (r === 4) push(d, 'deep_nesting', nested(objDepth, 'object'), [refusal(d, 'a', nested(objDepth - 1, 'object'))]);
    else if (r === 5) push(d, 'deep_nesting', '['.repeat(arrDepth), ['invalid_json|']);
    else if (r === 6) push(d, 'deep_nesting', `[{"a":"x"},${nested(arrDepth, 'array')}]`, ['invalid_shape|']);
    else push(d, 'deep_nesting', `{"ts":${takeTs(d)},"values":${'{"v":'.repeat(objDepth)}1${'}'.repeat(objDepth)}}`, [refusal(d, 'v', `${'{"v":'.repeat(objDepth - 1)}1${'}'.repeat(objDepth - 1)}`)]);
  }

  for (let i = 0; i < opts.counts.huge_arrays; i++) {
    const d = pickDev();
    const r = rng.int(7);
    if (r === 0) push(d, 'huge_arrays', `[${times(1001 + rng.int(2000), () => '{}').join(',')}]`, ['too_many_values|']);
    else if (r === 1) push(d, 'huge_arrays', `[${times(1001 + rng.int(4000), () => '1').join(',')}]`, ['too_many_values|']);
    else if (r === 2) push(d, 'huge_arrays', `[${times(1001 + rng.int(900), () => '{"a":1}').join(',')}]`, ['too_many_values|']);
    else if (r === 3) {
      // 1000 entries (the most allowed), each refused: over 100 rejections in one message
      push(d, 'huge_arrays', `[${times(1000, () => '{"x":1e999}').join(',')}]`, times(1000, () => refusal(d, 'x', '1e999')));
    } else if (r === 4) {
      const n = 300 + rng.int(1100);
      push(d, 'huge_arrays', `{${times(n, (j) => `"k${j}":1e999`).join(',')}}`, times(n, (j) => refusal(d, `k${j}`, '1e999')));
    } else if (r === 5) {
      const n = 200 + rng.int(600);
      const first = novel;
      novel += n;
      const ts = tsAt(d);
      const pairs: [string, Val][] = times(n, (j) => [`novel_${first + j}`, num(j)]);
      const e = entry(d, ts, pairs);
      push(d, 'huge_arrays', `{"ts":${(ts as { json: string }).json},"values":${objectText(pairs)}}`, e.errors, e.row ? [e.row] : []);
    } else {
      const n = 101 + rng.int(300);
      push(d, 'huge_arrays', `[${times(n, () => `{"ts":${rng.pick(OLD_TS)},"values":{"a":1}}`).join(',')}]`, times(n, () => 'ts_too_old|'));
    }
  }

  for (let i = 0; i < opts.counts.oversized; i++) {
    const d = pickDev();
    const r = rng.int(5);
    const over = opts.maxPayloadBytes + 1 + (rng.next() < 0.3 ? 0 : rng.int(Math.floor(opts.maxPayloadBytes / 2)));
    if (r === 0) {
      const head = `{"ts":${takeTs(d)},"values":{${JSON.stringify(rng.pick(d.goodKeys))}:1,"pad":"`;
      push(d, 'oversized', Buffer.from(head + 'x'.repeat(over - Buffer.byteLength(head) - 3) + '"}}'), ['payload_too_large|']);
    } else if (r === 1) push(d, 'oversized', Buffer.from(times(over, () => rng.int(256))), ['payload_too_large|']);
    else if (r === 2) push(d, 'oversized', `[${times(Math.ceil(over / 8), () => '{"a":1}').join(',')}]`, ['payload_too_large|']);
    else if (r === 3) push(d, 'oversized', '['.repeat(over), ['payload_too_large|']);
    else {
      // exactly at the limit: read, and refused for what it says
      const head = '{"pad":"';
      const pad = 'y'.repeat(opts.maxPayloadBytes - head.length - 2);
      push(d, 'oversized', head + pad + '"}', [refusal(d, 'pad', `"${pad}"`)]);
    }
  }

  for (let i = 0; i < opts.counts.number_overflow; i++) {
    const d = pickDev();
    pushRejected(d, 'number_overflow', () => times(1 + rng.int(2), () => mixedEntry(d, [() => overflowFrag(d), ...(rng.next() < 0.5 ? [() => edgeFrag(d)] : []), ...(rng.next() < 0.3 ? [() => overflowFrag(d)] : [])])));
  }
  for (let i = 0; i < opts.counts.non_numeric; i++) {
    const d = pickDev();
    pushRejected(d, 'non_numeric', () =>
      times(1 + rng.int(2), () => mixedEntry(d, [...times(1 + rng.int(3), () => () => nonNumericFrag(d)), ...(rng.next() < 0.4 ? [() => numericStringFrag(d)] : []), ...(rng.next() < 0.2 ? [() => nullFrag(d)] : [])])),
    );
  }
  for (let i = 0; i < opts.counts.hostile_keys; i++) {
    const d = pickDev();
    pushEntries(d, 'hostile_keys', [mixedEntry(d, [...times(1 + rng.int(3), () => invalidKeyFrag), ...(rng.next() < 0.6 ? [weirdKeyFrag] : []), ...(rng.next() < 0.3 ? [unwarmedFrag] : [])])]);
  }
  for (let i = 0; i < opts.counts.too_many_keys; i++) {
    const d = rng.next() < 0.6 ? pickDev(generic) : pickDev(typed);
    pushEntries(d, 'too_many_keys', times(1 + rng.int(2), () => mixedEntry(d, [...times(1 + rng.int(4), () => novelFrag), ...(typed(d) ? [() => unwarmedDeclaredFrag(d)] : [])])));
  }
  for (let i = 0; i < opts.counts.out_of_range; i++) {
    const d = pickDev(typed);
    pushEntries(d, 'out_of_range', times(1 + rng.int(2), () => mixedEntry(d, [...times(1 + rng.int(3), () => () => outOfRangeFrag(d)), ...(rng.next() < 0.4 ? [undeclaredFrag] : []), ...(rng.next() < 0.4 ? [() => edgeFrag(d)] : [])])));
  }
  for (let i = 0; i < opts.counts.positions; i++) {
    const d = pickDev();
    const entries = [mixedEntry(d, [() => positionFrag(false)], rng.next() < 0.4 ? [0, 0] : [1, 2])];
    if (rng.next() < 0.4) entries.push(entry(d, tsAt(d), build([() => positionFrag(true), ...goods(d, 0, 1)])));
    pushEntries(d, 'positions', rng.shuffle(entries));
  }
  const badMakers = (d: Dev) => [
    () => nonNumericFrag(d),
    () => overflowFrag(d),
    invalidKeyFrag,
    weirdKeyFrag,
    unwarmedFrag,
    novelFrag,
    () => outOfRangeFrag(d),
    undeclaredFrag,
    () => positionFrag(false),
    () => positionFrag(true),
    () => nullFrag(d),
    () => numericStringFrag(d),
    () => edgeFrag(d),
  ];
  for (let i = 0; i < opts.counts.mixtures; i++) {
    const d = pickDev();
    for (let attempt = 0; attempt < 100; attempt++) {
      const entries = times(1 + rng.int(5), () => {
        const r = rng.next();
        if (r < 0.08) return entry(d, rng.next() < 0.5 ? { kind: 'old', json: rng.pick(OLD_TS) } : { kind: 'future', json: futureTs() }, build(goods(d, 0, 2)));
        return mixedEntry(d, times(1 + rng.int(4), () => rng.pick(badMakers(d))));
      });
      if (entries.some((e) => e.errors.length > 0)) {
        pushEntries(d, 'mixtures', entries);
        break;
      }
    }
  }

  // each device's payloads in a seeded random order, categories interleaved
  const order = new Map(cases.map((c) => [c, rng.next()]));
  return cases.sort((a, b) => order.get(a)! - order.get(b)!);
}
