import { describe, expect, it } from 'vitest';
import { BUILTIN_DEVICE_TYPES } from '../core/device-types.ts';
import type { DeviceContext } from '../core/registry.ts';
import { storageCell } from '../geo/cell.ts';
import { toReadings } from './validate.ts';

const type = (name: string) => BUILTIN_DEVICE_TYPES.find((t) => t.name === name)!;
const device = (typeName: string, at?: { lat: number; lng: number }): DeviceContext => ({
  id: 7,
  name: 'd',
  type: type(typeName),
  lat: at?.lat ?? null,
  lng: at?.lng ?? null,
  alt: null,
  cell: at ? storageCell(at.lat, at.lng) : null,
  isGateway: false,
  gatewayId: null,
});
const NOW = Date.UTC(2026, 10, 26, 12);

describe('toReadings', () => {
  it('stores numbers, casts numeric strings, skips nulls (ThingsBoard rules)', () => {
    const { readings, rejections } = toReadings([{ values: { a: 1.5, b: '42', c: null } }], device('generic'), NOW);
    expect(rejections).toEqual([]);
    expect(readings).toEqual([{ deviceId: 7, domain: 'generic', ts: NOW, values: { a: 1.5, b: 42 } }]);
  });

  it('rejects a bad key alone and keeps the good ones', () => {
    const { readings, rejections } = toReadings([{ values: { ok: 1, word: 'a\u0000b', big: 'x'.repeat(4097), '': 3 } }], device('generic'), NOW);
    expect(readings[0]!.values).toEqual({ ok: 1 });
    expect(readings[0]!.jsonValues).toBeUndefined();
    expect(rejections.map((r) => [r.reason, r.key])).toEqual([
      ['invalid_value', 'word'],
      ['value_too_large', 'big'],
      ['invalid_key', ''],
    ]);
    expect(rejections[1]!.detail).toBe('big: the string is 4097 characters; the limit is 4096');
  });

  it('stores strings, booleans and JSON values beside the numbers, each with its type (ThingsBoard value types)', () => {
    const overflow = toReadings([{ values: { o: Number.POSITIVE_INFINITY } }], device('generic'), NOW);
    expect(overflow.rejections).toEqual([{ reason: 'not_numeric', key: 'o', detail: 'o: expected a finite number, got Infinity' }]);
    const values = { n: 2, s: 'DOWNLOADING', b: false, o: { fw: '1.2', parts: [1, 'two', null] }, a: [1, 2], inf: 'Infinity', big: '1e999' };
    const { readings, rejections } = toReadings([{ values }], device('generic'), NOW);
    expect(rejections).toEqual([]);
    expect(readings).toEqual([
      {
        deviceId: 7,
        domain: 'generic',
        ts: NOW,
        values: { n: 2 },
        jsonValues: { s: 'DOWNLOADING', b: false, o: { fw: '1.2', parts: [1, 'two', null] }, a: [1, 2], inf: 'Infinity', big: '1e999' },
      },
    ]);
    // a message of strings alone is a reading too
    expect(toReadings([{ values: { fw_state: 'UPDATED' } }], device('generic'), NOW).readings).toHaveLength(1);
  });

  it('limits JSON values in size and depth', () => {
    const { readings, rejections } = toReadings(
      [{ values: { wide: { pad: 'y'.repeat(16_384) }, deep: JSON.parse('['.repeat(33) + ']'.repeat(33)) as unknown, fine: { k: 'v' } } }],
      device('generic'),
      NOW,
    );
    expect(readings[0]!.jsonValues).toEqual({ fine: { k: 'v' } });
    expect(rejections.map((r) => [r.reason, r.key])).toEqual([
      ['value_too_large', 'wide'],
      ['invalid_value', 'deep'],
    ]);
    expect(rejections[0]!.detail).toMatch(/^wide: the value is 16\d{3} bytes as JSON; the limit is 16384$/);
    expect(rejections[1]!.detail).toBe('deep: nested deeper than 32 levels');
  });

  it('checks a declared value type: numbers stay numbers, a string key keeps numeric-looking strings, positions are numbers', () => {
    const typed = device('generic');
    typed.type = {
      ...typed.type,
      name: 'ota-sensor',
      acceptsUndeclaredKeys: false,
      keys: { level: { min: 0, max: 10 }, fw_version: { type: 'string' }, relay: { type: 'boolean' }, config: { type: 'json' } },
    };
    const ok = toReadings([{ values: { level: '5', fw_version: '1.10', relay: true, config: { a: 1 } } }], typed, NOW);
    expect(ok.rejections).toEqual([]);
    expect(ok.readings[0]).toMatchObject({ values: { level: 5 }, jsonValues: { fw_version: '1.10', relay: true, config: { a: 1 } } });
    const bad = toReadings([{ values: { level: 'high', fw_version: 110, relay: 'on', config: 'x', latitude: 'north', extra: 's' } }], typed, NOW);
    expect(bad.readings).toEqual([]);
    expect(bad.rejections.map((r) => [r.reason, r.key])).toEqual([
      ['not_numeric', 'level'],
      ['wrong_type', 'fw_version'],
      ['wrong_type', 'relay'],
      ['wrong_type', 'config'],
      ['not_numeric', 'latitude'],
      ['undeclared_key', 'extra'],
    ]);
    expect(bad.rejections[1]!.detail).toBe('fw_version: device type ota-sensor declares a string, got 110');
  });

  it('checks declared ranges and undeclared keys of a typed device', () => {
    const at = { lat: 23.0, lng: 113.9 };
    const { readings, rejections } = toReadings([{ values: { water_level: 3.2, battery: 140, colour: 4 } }], device('river-level-station', at), NOW);
    expect(readings[0]!.values).toEqual({ water_level: 3.2 });
    expect(rejections.map((r) => [r.reason, r.key])).toEqual([
      ['out_of_range', 'battery'],
      ['undeclared_key', 'colour'],
    ]);
  });

  it('refuses new keys beyond what the key dictionary admits, and the reserved __proto__', () => {
    const admitted = new Set(['a']);
    const { readings, rejections } = toReadings(
      [{ values: JSON.parse('{"a": 1, "b": 2, "__proto__": 3}') as Record<string, unknown> }],
      device('generic'),
      NOW,
      undefined,
      (name) => admitted.has(name),
    );
    expect(readings[0]!.values).toEqual({ a: 1 });
    expect(rejections.map((r) => [r.reason, r.key])).toEqual([
      ['too_many_keys', 'b'],
      ['invalid_key', '__proto__'],
    ]);
  });

  it('refuses timestamps in the future or before 2000', () => {
    const { readings, rejections } = toReadings(
      [
        { ts: NOW + 3_600_000, values: { a: 1 } },
        { ts: 1_700_000_000, values: { a: 1 } },
        { ts: NOW - 1000, values: { a: 2 } },
      ],
      device('generic'),
      NOW,
    );
    expect(readings.map((r) => r.values.a)).toEqual([2]);
    expect(rejections.map((r) => r.reason)).toEqual(['ts_in_future', 'ts_too_old']);
  });

  it('takes the position from latitude/longitude, else from the registered location', () => {
    const at = { lat: 22.9, lng: 113.6 };
    const { readings } = toReadings(
      [{ ts: NOW - 2, values: { speed: 3, latitude: 23.01, longitude: 113.74, altitude: 30 } }, { ts: NOW - 1, values: { speed: 4 } }],
      device('generic', at),
      NOW,
    );
    expect(readings[0]).toMatchObject({ lat: 23.01, lng: 113.74, alt: 30, cell: storageCell(23.01, 113.74), values: { speed: 3 } });
    expect(readings[1]).toMatchObject({ lat: 22.9, lng: 113.6, cell: storageCell(22.9, 113.6), values: { speed: 4 } });
  });

  it('never puts a moving device at its registered location (its depot): without a position its reading is unlocated', () => {
    const { readings } = toReadings([{ ts: NOW - 2, values: { speed: 3, latitude: 23.01, longitude: 113.74 } }, { ts: NOW - 1, values: { speed: 4 } }], device('bus', { lat: 22.9, lng: 113.6 }), NOW);
    expect(readings[0]).toMatchObject({ lat: 23.01, lng: 113.74 });
    expect(readings[1]!.values).toEqual({ speed: 4 });
    expect(readings[1]!.lat ?? null).toBeNull();
    expect(readings[1]!.cell ?? null).toBeNull();
  });

  it('keeps a position-only reading and refuses impossible positions', () => {
    const ok = toReadings([{ values: { latitude: 23, longitude: 113.7 } }], device('bus'), NOW);
    expect(ok.readings).toHaveLength(1);
    expect(ok.readings[0]!.values).toEqual({});
    const bad = toReadings([{ values: { latitude: 123, longitude: 113.7, speed: 3 } }, { values: { latitude: 23, speed: 3 } }], device('bus'), NOW);
    expect(bad.rejections.map((r) => r.reason)).toEqual(['invalid_position', 'invalid_position']);
    expect(bad.readings.every((r) => r.cell === undefined)).toBe(true);
  });
  it('treats keys named like Object.prototype members as ordinary keys, not positions', () => {
    const values = { constructor: 1, toString: 2, hasOwnProperty: 3, valueOf: 4, a: 5 };
    const generic = toReadings([{ values }], device('generic'), NOW);
    expect(generic.rejections).toEqual([]);
    expect(generic.readings[0]!.values).toEqual(values);
    const typed = toReadings([{ values: { constructor: 1, water_level: 2 } }], device('river-level-station'), NOW);
    expect(typed.readings[0]!.values).toEqual({ water_level: 2 });
    expect(typed.rejections.map((r) => [r.reason, r.key])).toEqual([['undeclared_key', 'constructor']]);
  });

  it('explains a value nested too deeply to print instead of throwing', () => {
    const deep = JSON.parse(`{"a":${'['.repeat(20_000)}${']'.repeat(20_000)},"b":1}`) as Record<string, unknown>;
    const { readings, rejections } = toReadings([{ values: deep }], device('generic'), NOW);
    expect(readings[0]!.values).toEqual({ b: 1 });
    expect(rejections).toEqual([{ reason: 'invalid_value', key: 'a', detail: 'a: nested deeper than 32 levels' }]);
    const numeric = toReadings([{ values: deep }], device('river-level-station'), NOW);
    expect(numeric.rejections[0]).toEqual({ reason: 'undeclared_key', key: 'a', detail: 'a is not a key of device type river-level-station' });
    const declared = toReadings([{ values: { water_level: deep.a } }], device('river-level-station'), NOW);
    expect(declared.rejections).toEqual([{ reason: 'not_numeric', key: 'water_level', detail: 'water_level: expected a finite number, got an array nested too deeply to show' }]);
  });

  it('refuses an altitude without latitude and longitude instead of dropping it', () => {
    const { readings, rejections } = toReadings([{ ts: NOW - 1, values: { altitude: 30, speed: 3 } }], device('bus'), NOW);
    expect(readings.map((r) => [r.values, r.alt])).toEqual([[{ speed: 3 }, undefined]]);
    expect(rejections.map((r) => [r.reason, r.detail])).toEqual([['invalid_position', 'altitude must be sent with latitude and longitude']]);
  });

  it('stores nothing when the only thing sent is a refused position (not even the registered location)', () => {
    const at = { lat: 22.9, lng: 113.6 };
    for (const values of [{ latitude: 91, longitude: 0 }, { latitude: 23 }, { altitude: 10 }, { latitude: 23, longitude: 113, altitude: -20_000 }]) {
      const { readings, rejections } = toReadings([{ ts: NOW - 1, values }], device('generic', at), NOW);
      expect(readings, JSON.stringify(values)).toEqual([]);
      expect(rejections.map((r) => r.reason)).toEqual(['invalid_position']);
    }
    // With a value beside it, the reading is kept at the registered location.
    const kept = toReadings([{ ts: NOW - 1, values: { latitude: 91, longitude: 0, a: 1 } }], device('generic', at), NOW);
    expect(kept.readings).toMatchObject([{ values: { a: 1 }, lat: 22.9, lng: 113.6 }]);
  });
});
