import { describe, expect, it } from 'vitest';
import {
  attributeResponse,
  attributeUpdateForGateway,
  deviceNameProblem,
  parseAttributeRequest,
  parseConnect,
  parseDisconnect,
  parseRpcResponse,
  rpcRequestMessage,
  scopesResponse,
  splitByDevice,
  topLevelMembers,
} from './gateway-messages.ts';

const buf = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));
const MAX = 65_536;

describe('topLevelMembers', () => {
  it('returns each member of the top-level object with its value exactly as sent', () => {
    const text = ' { "A" : [ {"ts": 1, "values": {"t": 1e400, "s": "x}]\\"{"}} ] ,"B":{"k":[1,{"n":null}]},"C":-0.0,"D":true,"E":null , "F": "}" } ';
    expect(topLevelMembers(text)).toEqual([
      ['A', '[ {"ts": 1, "values": {"t": 1e400, "s": "x}]\\"{"}} ]'],
      ['B', '{"k":[1,{"n":null}]}'],
      ['C', '-0.0'],
      ['D', 'true'],
      ['E', 'null'],
      ['F', '"}"'],
    ]);
  });

  it('decodes escaped keys and keeps duplicates in order (a Map keeps the last, as JSON.parse)', () => {
    const members = topLevelMembers('{"P\\u0075mp \\"7\\"":1,"x":2,"x":[3]}');
    expect(members).toEqual([
      ['Pump "7"', '1'],
      ['x', '2'],
      ['x', '[3]'],
    ]);
    expect(new Map(members).get('x')).toBe('[3]');
    expect(topLevelMembers('{}')).toEqual([]);
  });

  it('agrees with JSON.parse on every member of assorted documents', () => {
    const docs = [
      { a: [{ ts: 1732600000000, values: { t: 21.5, 'we,ird': 'q"u}o[te' } }], 'b c': { nested: { deep: [[[]]] } }, 中文: '值' },
      { '': 0, '\\': '\\', '\n': [true, false, null, -1.5e-7] },
    ];
    for (const doc of docs) {
      for (const spacing of [0, 2]) {
        const text = JSON.stringify(doc, null, spacing);
        const members = topLevelMembers(text);
        expect(members.map(([k]) => k)).toEqual(Object.keys(doc));
        for (const [k, raw] of members) expect(JSON.parse(raw)).toEqual((doc as Record<string, unknown>)[k]);
      }
    }
  });
});

describe('splitByDevice', () => {
  it("gives each device's part with its raw text", () => {
    const r = splitByDevice(buf('{"Dev A": [{"ts": 1, "values": {"t": 1e400}}], "Dev B": {"k": 2}}'), MAX, 10, '…');
    expect(r.ok && r.entries).toEqual([
      { device: 'Dev A', value: [{ ts: 1, values: { t: Infinity } }], raw: '[{"ts": 1, "values": {"t": 1e400}}]' },
      { device: 'Dev B', value: { k: 2 }, raw: '{"k": 2}' },
    ]);
  });

  it('refuses what is not one object keyed by device, too many devices, too large', () => {
    const reason = (r: ReturnType<typeof splitByDevice>) => (r.ok ? 'ok' : r.error.reason);
    expect(reason(splitByDevice(buf('[1]'), MAX, 10, '…'))).toBe('invalid_shape');
    expect(reason(splitByDevice(buf('{"a":'), MAX, 10, '…'))).toBe('invalid_json');
    expect(reason(splitByDevice(Buffer.from([0x7b, 0xff, 0x7d]), MAX, 10, '…'))).toBe('invalid_json');
    expect(reason(splitByDevice(buf('{}'), MAX, 10, '…'))).toBe('empty');
    expect(reason(splitByDevice(buf({ a: [], b: [], c: [] }), MAX, 2, '…'))).toBe('too_many_values');
    expect(reason(splitByDevice(buf({ a: [], b: [] }), MAX, 2, '…'))).toBe('ok');
    expect(reason(splitByDevice(buf({ a: 'x'.repeat(100) }), 50, 2, '…'))).toBe('payload_too_large');
  });
});

describe('connect and disconnect', () => {
  it('reads the device name and the optional type (null or empty: the default)', () => {
    expect(parseConnect(buf({ device: 'Pump 7', type: 'pipe-pressure-sensor' }), MAX)).toEqual({ ok: true, device: 'Pump 7', type: 'pipe-pressure-sensor' });
    expect(parseConnect(buf({ device: 'Pump 7' }), MAX)).toEqual({ ok: true, device: 'Pump 7', type: undefined });
    expect(parseConnect(buf({ device: 'Pump 7', type: null }), MAX)).toEqual({ ok: true, device: 'Pump 7', type: undefined });
    expect(parseConnect(buf({ device: 'Pump 7', type: '' }), MAX)).toEqual({ ok: true, device: 'Pump 7', type: undefined });
    expect(parseDisconnect(buf({ device: 'Pump 7' }), MAX)).toEqual({ ok: true, device: 'Pump 7' });
  });

  it('refuses a missing or unusable name and a type that is not a string', () => {
    const reason = (r: ReturnType<typeof parseConnect>) => (r.ok ? 'ok' : r.error.reason);
    expect(reason(parseConnect(buf({ type: 'generic' }), MAX))).toBe('invalid_shape');
    expect(reason(parseConnect(buf({ device: '' }), MAX))).toBe('invalid_device_name');
    expect(reason(parseConnect(buf({ device: 'a\u0000b' }), MAX))).toBe('invalid_device_name');
    expect(reason(parseConnect(buf({ device: 'x'.repeat(201) }), MAX))).toBe('invalid_device_name');
    expect(reason(parseConnect(buf({ device: 7 }), MAX))).toBe('invalid_device_name');
    expect(reason(parseConnect(buf({ device: 'ok', type: 3 }), MAX))).toBe('invalid_shape');
    expect(reason(parseConnect(buf('"Pump 7"'), MAX))).toBe('invalid_shape');
    expect(deviceNameProblem('x'.repeat(200))).toBeUndefined();
    expect(deviceNameProblem('\ud800')).toMatch(/well-formed/);
  });
});

describe('attribute requests and responses', () => {
  it("reads ThingsBoard's transport form: client flag with key or keys", () => {
    expect(parseAttributeRequest(buf({ id: 1, device: 'D', client: true, key: 'fw' }), MAX)).toEqual({
      ok: true,
      request: { form: 'scope', id: 1, device: 'D', scope: 'client', keys: ['fw'], multiple: false },
    });
    expect(parseAttributeRequest(buf({ id: '2', device: 'D', client: false, keys: ['a', 'b', 'a'] }), MAX)).toEqual({
      ok: true,
      request: { form: 'scope', id: 2, device: 'D', scope: 'shared', keys: ['a', 'b'], multiple: true },
    });
    // older SDKs join keys with commas; no "client" means shared
    expect(parseAttributeRequest(buf({ id: 3, device: 'D', key: 'a, b' }), MAX)).toEqual({
      ok: true,
      request: { form: 'scope', id: 3, device: 'D', scope: 'shared', keys: ['a', 'b'], multiple: true },
    });
  });

  it("reads the newer documented form: lists per scope", () => {
    expect(parseAttributeRequest(buf({ id: 4, device: 'D', client: ['fw'], shared: ['target'] }), MAX)).toEqual({
      ok: true,
      request: { form: 'scopes', id: 4, device: 'D', clientKeys: ['fw'], sharedKeys: ['target'] },
    });
    expect(parseAttributeRequest(buf({ id: 5, device: 'D', shared: ['target'] }), MAX)).toEqual({
      ok: true,
      request: { form: 'scopes', id: 5, device: 'D', sharedKeys: ['target'] },
    });
  });

  it('refuses requests without an id, a device or keys', () => {
    const reason = (v: unknown) => {
      const r = parseAttributeRequest(buf(v), MAX);
      return r.ok ? 'ok' : r.error.reason;
    };
    expect(reason({ device: 'D', client: true, key: 'fw' })).toBe('invalid_shape');
    expect(reason({ id: 1.5, device: 'D', client: true, key: 'fw' })).toBe('invalid_shape');
    expect(reason({ id: 1, client: true, key: 'fw' })).toBe('invalid_shape');
    expect(reason({ id: 1, device: 'D', client: true })).toBe('invalid_shape');
    expect(reason({ id: 1, device: 'D', client: true, key: ' , ' })).toBe('invalid_shape');
    expect(reason({ id: 1, device: 'D', client: 'yes', key: 'fw' })).toBe('invalid_shape');
    expect(reason({ id: 1, device: 'D', client: true, keys: [1] })).toBe('invalid_shape');
    expect(reason({ id: 1, device: 'D', client: true, keys: Array.from({ length: 1001 }, (_, i) => `k${i}`) })).toBe('too_many_values');
  });

  it('answers "value" for one key asked with key, "values" for keys, neither when nothing is found', () => {
    const one = { form: 'scope' as const, id: 1, device: 'D', scope: 'client' as const, keys: ['fw'], multiple: false };
    const many = { ...one, keys: ['a', 'b'], multiple: true };
    expect(attributeResponse(one, { fw: '1.2' })).toEqual({ id: 1, device: 'D', value: '1.2' });
    expect(attributeResponse(one, {})).toEqual({ id: 1, device: 'D' });
    expect(attributeResponse(many, { a: 1 })).toEqual({ id: 1, device: 'D', values: { a: 1 } });
    expect(attributeResponse(many, { a: 1, b: { x: [1] } })).toEqual({ id: 1, device: 'D', values: { a: 1, b: { x: [1] } } });
    expect(scopesResponse(4, 'D', { client: { fw: '1' }, shared: {} })).toEqual({ id: 4, device: 'D', client: { fw: '1' } });
  });
});

describe('RPC and pushes', () => {
  it("reads a gateway's answer, keeping data as sent", () => {
    const r = parseRpcResponse(buf('{"device": "D", "id": 12, "data": {"ok" : true}}'), MAX);
    expect(r.ok && { device: r.device, id: r.id, data: r.data.toString() }).toEqual({ device: 'D', id: 12, data: '{"ok" : true}' });
    const text = parseRpcResponse(buf({ device: 'D', id: 3, data: 'done' }), MAX);
    expect(text.ok && text.data.toString()).toBe('"done"');
    const reason = (v: unknown) => {
      const p = parseRpcResponse(buf(v), MAX);
      return p.ok ? 'ok' : p.error.reason;
    };
    expect(reason({ device: 'D', id: 3 })).toBe('invalid_shape');
    expect(reason({ device: 'D', id: 0, data: 1 })).toBe('invalid_shape');
    expect(reason({ id: 3, data: 1 })).toBe('invalid_shape');
  });

  it("writes commands and shared-attribute updates in ThingsBoard's gateway form", () => {
    expect(JSON.parse(rpcRequestMessage('D', { requestId: 7, method: 'setGpio', params: { pin: 2 } }))).toEqual({
      device: 'D',
      data: { id: 7, method: 'setGpio', params: { pin: 2 } },
    });
    expect(JSON.parse(attributeUpdateForGateway('D', { deviceId: 1, scope: 'shared', updated: { target: 22 }, deleted: [], ts: 1 }))).toEqual({
      device: 'D',
      data: { target: 22 },
    });
    expect(JSON.parse(attributeUpdateForGateway('D', { deviceId: 1, scope: 'shared', updated: {}, deleted: ['a'], ts: 1 }))).toEqual({
      device: 'D',
      data: { deleted: ['a'] },
    });
  });
});
