import { describe, expect, it } from 'vitest';
import { ATTRIBUTE_LIMITS, attributeUpdateMessage, parseAttributesPayload, parseAttributesRequest, validateAttributes, valueProblem } from './attributes.ts';

const buf = (s: string) => Buffer.from(s);

describe('attribute values', () => {
  it('accepts strings, numbers, booleans, objects and arrays as sent', () => {
    const sent = { s: '0012', n: -1.5, b: false, o: { a: [1, 'x', null] }, a: [], e: '' };
    expect(validateAttributes(sent)).toEqual({ values: sent, count: 6, rejections: [] });
  });

  it('skips nulls from devices (ThingsBoard) and refuses them over REST', () => {
    expect(validateAttributes({ a: null, b: 1 })).toMatchObject({ values: { b: 1 }, rejections: [] });
    expect(validateAttributes({ a: null }, { nulls: 'refuse' }).rejections).toEqual([{ reason: 'invalid_value', key: 'a', detail: 'a: null is not a value (DELETE the key to remove it)' }]);
  });

  it('refuses what PostgreSQL cannot store or JSON cannot say, and values over the size limit', () => {
    expect(valueProblem('a\u0000')?.reason).toBe('invalid_value');
    expect(valueProblem('\ud800')?.reason).toBe('invalid_value');
    expect(valueProblem({ ['k\u0000']: 1 })?.detail).toMatch(/key inside/);
    expect(valueProblem([Infinity])?.reason).toBe('invalid_value');
    expect(valueProblem(Number.NaN)?.reason).toBe('invalid_value');
    expect(valueProblem(JSON.parse('['.repeat(33) + ']'.repeat(33)))?.detail).toMatch(/nested deeper than 32/);
    expect(valueProblem(JSON.parse('['.repeat(32) + ']'.repeat(32)))).toBeUndefined();
    expect(valueProblem(JSON.parse('['.repeat(100_000) + ']'.repeat(100_000)))?.reason).toBe('invalid_value'); // no stack overflow
    expect(valueProblem('x'.repeat(ATTRIBUTE_LIMITS.maxValueBytes - 2))).toBeUndefined(); // with its quotes: exactly the limit
    expect(valueProblem('x'.repeat(ATTRIBUTE_LIMITS.maxValueBytes - 1))?.reason).toBe('value_too_large');
  });

  it('refuses bad keys on their own and too many keys at once', () => {
    const r = validateAttributes({ ok: 1, '': 2, ['k'.repeat(101)]: 3, __proto__x: 4 });
    expect(r.values).toEqual({ ok: 1, __proto__x: 4 });
    expect(r.rejections.map((x) => x.reason)).toEqual(['invalid_key', 'invalid_key']);
    const many = Object.fromEntries(Array.from({ length: ATTRIBUTE_LIMITS.maxKeysPerMessage + 1 }, (_, i) => [`k${i}`, i]));
    expect(validateAttributes(many)).toMatchObject({ count: 0, rejections: [{ reason: 'too_many_values' }] });
    expect(validateAttributes(JSON.parse('{"__proto__": 1, "a": 2}'))).toMatchObject({ values: { a: 2 }, rejections: [{ reason: 'invalid_key' }] });
  });
});

describe('attribute payloads', () => {
  it('takes one flat JSON object; arrays and scalars are invalid', () => {
    expect(parseAttributesPayload(buf('{"a":1}'), 100)).toEqual({ ok: true, values: { a: 1 } });
    expect(parseAttributesPayload(buf('[{"a":1}]'), 100)).toMatchObject({ ok: false, error: { reason: 'invalid_shape', detail: expect.stringMatching(/got an array/) } });
    expect(parseAttributesPayload(buf('null'), 100)).toMatchObject({ ok: false, error: { reason: 'invalid_shape' } });
    expect(parseAttributesPayload(buf('{'), 100)).toMatchObject({ ok: false, error: { reason: 'invalid_json' } });
    expect(parseAttributesPayload(Buffer.from([0x7b, 0xc3, 0x7d]), 100)).toMatchObject({ ok: false, error: { reason: 'invalid_json' } });
    expect(parseAttributesPayload(buf('{"a":"1234567890"}'), 10)).toMatchObject({ ok: false, error: { reason: 'payload_too_large' } });
  });

  it('reads attribute requests the way ThingsBoard does (comma-separated strings)', () => {
    expect(parseAttributesRequest(buf('{}'), 100)).toEqual({ ok: true });
    expect(parseAttributesRequest(buf(''), 100)).toEqual({ ok: true });
    expect(parseAttributesRequest(buf('{"clientKeys":"a, b,,a","sharedKeys":"c"}'), 100)).toEqual({ ok: true, clientKeys: ['a', 'b'], sharedKeys: ['c'] });
    expect(parseAttributesRequest(buf('{"sharedKeys":["c","d"]}'), 100)).toEqual({ ok: true, sharedKeys: ['c', 'd'] });
    expect(parseAttributesRequest(buf('{"clientKeys":""}'), 100)).toEqual({ ok: true, clientKeys: [] });
    expect(parseAttributesRequest(buf('{"clientKeys":5}'), 100)).toMatchObject({ ok: false, error: { reason: 'invalid_shape' } });
    expect(parseAttributesRequest(buf('{"clientKeys":[1]}'), 100)).toMatchObject({ ok: false, error: { reason: 'invalid_shape' } });
    expect(parseAttributesRequest(buf('"a,b"'), 100)).toMatchObject({ ok: false, error: { reason: 'invalid_shape' } });
  });

  it('words shared-attribute updates as ThingsBoard does', () => {
    expect(attributeUpdateMessage({ deviceId: 1, scope: 'shared', updated: { t: 22, m: 'eco' }, deleted: [], ts: 0 })).toEqual({ t: 22, m: 'eco' });
    expect(attributeUpdateMessage({ deviceId: 1, scope: 'shared', updated: {}, deleted: ['t'], ts: 0 })).toEqual({ deleted: ['t'] });
  });
});
