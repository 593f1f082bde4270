import { describe, expect, it } from 'vitest';
import { comparableValue, matches, matchValueProblem } from './alarm-match.ts';

describe('match rules: the comparison', () => {
  it('== holds for the same string only, exactly (case and spaces count)', () => {
    const rule = { operator: '==' as const, value: 'FAILED' };
    expect(matches(rule, 'FAILED')).toBe(true);
    for (const other of ['failed', 'FAILED ', 'UPDATED', '']) expect(matches(rule, other)).toBe(false);
  });

  it('!= is the negation of ==', () => {
    const rule = { operator: '!=' as const, value: 'UPDATED' };
    expect(matches(rule, 'UPDATED')).toBe(false);
    expect(matches(rule, 'FAILED')).toBe(true);
  });

  it('numbers compare numerically, booleans as booleans, and a value of another type is not equal', () => {
    expect(matches({ operator: '==', value: 3 }, 3.0)).toBe(true);
    expect(matches({ operator: '==', value: 3 }, 3.5)).toBe(false);
    expect(matches({ operator: '==', value: true }, true)).toBe(true);
    expect(matches({ operator: '==', value: true }, false)).toBe(false);
    // true is not 1 and "3" is not 3 for a match rule (thresholds count booleans as 1/0; match rules do not)
    expect(matches({ operator: '==', value: 1 }, true)).toBe(false);
    expect(matches({ operator: '==', value: '3' }, 3)).toBe(false);
    expect(matches({ operator: '!=', value: '3' }, 3)).toBe(true);
  });

  it('objects and arrays in a reading are not compared; scalars are', () => {
    expect(comparableValue({ code: 7 })).toBeUndefined();
    expect(comparableValue([1])).toBeUndefined();
    expect(comparableValue(undefined)).toBeUndefined();
    expect([comparableValue('x'), comparableValue(0), comparableValue(false)]).toEqual(['x', 0, false]);
  });
});

describe('match rules: which values fit a key', () => {
  it("takes a value of the key's declared type", () => {
    expect(matchValueProblem('fw_state', 'string', 'FAILED')).toBeUndefined();
    expect(matchValueProblem('relay', 'boolean', true)).toBeUndefined();
    expect(matchValueProblem('level', 'number', 3)).toBeUndefined();
  });

  it('refuses a value of another type than the declared one, and json keys', () => {
    expect(matchValueProblem('relay', 'boolean', 'true')).toBe('value: "true" is a string; key "relay" is declared boolean');
    expect(matchValueProblem('fw_state', 'string', 3)).toBe('value: 3 is a number; key "fw_state" is declared string');
    expect(matchValueProblem('level', 'number', false)).toBe('value: false is a boolean; key "level" is declared number');
    expect(matchValueProblem('config', 'json', 'x')).toBe('key: "config" is a json key; match rules compare strings, numbers and booleans');
  });

  it('requires a scalar value', () => {
    for (const v of [undefined, null, { a: 1 }, [1], Number.NaN, Infinity]) {
      expect(matchValueProblem('k', undefined, v)).toBe('value: required for match rules (a string, number or boolean to compare with)');
    }
  });

  it('holds strings to the telemetry string rules: length, U+0000, lone surrogates', () => {
    expect(matchValueProblem('k', 'string', 'x'.repeat(4096))).toBeUndefined();
    expect(matchValueProblem('k', 'string', 'x'.repeat(4097))).toBe('value: the string is 4097 characters; telemetry strings are at most 4096');
    expect(matchValueProblem('k', 'string', 'a\u0000b')).toBe('value: the string contains U+0000');
    expect(matchValueProblem('k', 'string', 'a\ud800')).toBe('value: the string is not well-formed Unicode (lone surrogate)');
  });

  it('refuses a numeric string on an undeclared key (ingest stores those as numbers), not on a declared string key', () => {
    expect(matchValueProblem('code', undefined, '42')).toBe(`value: devices' numeric strings on undeclared key "code" are stored as numbers; compare with the number 42`);
    expect(matchValueProblem('code', undefined, 'E42')).toBeUndefined();
    expect(matchValueProblem('code', 'string', '42')).toBeUndefined();
  });
});
