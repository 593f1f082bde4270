import { describe, expect, it } from 'vitest';
import { parseTelemetry } from './telemetry-payload.ts';

describe('parseTelemetry (ThingsBoard payload forms)', () => {
  it('reads a flat object as values at the server time', () => {
    expect(parseTelemetry('{"temperature":25,"on":1}')).toEqual({ ok: true, entries: [{ values: { temperature: 25, on: 1 } }] });
  });

  it('reads {ts, values}, with ts as a number or numeric string', () => {
    expect(parseTelemetry('{"ts":1732600000000,"values":{"a":1}}')).toEqual({ ok: true, entries: [{ ts: 1732600000000, values: { a: 1 } }] });
    expect(parseTelemetry('{"ts":"1732600000000","values":{"a":1}}')).toEqual({ ok: true, entries: [{ ts: 1732600000000, values: { a: 1 } }] });
  });

  it('ignores keys beside ts and values, and treats ts without values as an ordinary key', () => {
    expect(parseTelemetry('{"ts":1732600000000,"values":{"a":1},"b":2}')).toEqual({ ok: true, entries: [{ ts: 1732600000000, values: { a: 1 } }] });
    expect(parseTelemetry('{"ts":1732600000000,"a":1}')).toEqual({ ok: true, entries: [{ values: { ts: 1732600000000, a: 1 } }] });
  });

  it('reads arrays of either form', () => {
    expect(parseTelemetry('[{"a":1},{"ts":5000000000000,"values":{"b":2}}]')).toEqual({
      ok: true,
      entries: [{ values: { a: 1 } }, { ts: 5000000000000, values: { b: 2 } }],
    });
  });

  it.each([
    ['{bad', 'invalid_json'],
    ['', 'invalid_json'],
    ['42', 'invalid_shape'],
    ['"text"', 'invalid_shape'],
    ['null', 'invalid_shape'],
    ['[]', 'empty'],
    ['[1,2]', 'invalid_shape'],
    ['[[{"a":1}]]', 'invalid_shape'],
    ['{"ts":1.5,"values":{"a":1}}', 'invalid_ts'],
    ['{"ts":"soon","values":{"a":1}}', 'invalid_ts'],
    ['{"ts":1732600000000,"values":[1]}', 'invalid_shape'],
  ])('rejects %s as %s', (payload, reason) => {
    const parsed = parseTelemetry(payload);
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.error.reason).toBe(reason);
  });
  it('refuses bytes that are not UTF-8 as not JSON, instead of decoding them into U+FFFD', () => {
    for (const payload of [
      Buffer.concat([Buffer.from('{"temp'), Buffer.from([0xff]), Buffer.from('":1}')]),
      Buffer.from([0xfe, 0xff, 0x00, 0x7b]),
      Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]),
    ]) {
      const parsed = parseTelemetry(payload);
      expect(parsed).toEqual({ ok: false, error: { reason: 'invalid_json', detail: 'payload is not valid UTF-8 (JSON text must be UTF-8)' } });
    }
    expect(parseTelemetry(Buffer.from('{"温度":25}'))).toEqual({ ok: true, entries: [{ values: { 温度: 25 } }] });
  });

  it('explains a deeply nested ts instead of throwing', () => {
    const parsed = parseTelemetry(`{"ts":${'['.repeat(20_000)}${']'.repeat(20_000)},"values":{"a":1}}`);
    expect(parsed).toEqual({ ok: false, error: { reason: 'invalid_ts', detail: 'payload: ts must be epoch milliseconds, got an array nested too deeply to show' } });
  });
});
