import { describe, expect, it } from 'vitest';
import { unsafeInput, unsafeText } from './input-guard.ts';

const both = { text: true, numbers: true };

describe('input guard', () => {
  it('takes Unicode text, surrogate pairs included, and refuses NUL and unpaired surrogates', () => {
    for (const ok of ['', 'plain', '东莞市水务局', '🚌', '\ud83d\ude8c', 'tab\tand\nnewline', '\u007f']) expect(unsafeText(ok), JSON.stringify(ok)).toBeUndefined();
    expect(unsafeText('a\u0000b')).toMatch(/U\+0000 \(NUL\)/);
    expect(unsafeText('\ud800')).toMatch(/unpaired UTF-16 surrogate \(U\+D800\)/);
    expect(unsafeText('x\udfff')).toMatch(/U\+DFFF/);
    expect(unsafeText('\ude8c\ud83d')).toMatch(/U\+DE8C/); // the halves of a pair the wrong way round
    expect(unsafeText('\ud83d')).toMatch(/U\+D83D/);
  });

  it('names the first place that breaks the rules: strings, member names, non-finite numbers', () => {
    expect(unsafeInput({ a: [1, 'ok', { b: 'x\u0000' }] }, 'body', both)).toBe('body/a/2/b: contains U+0000 (NUL), which cannot be stored');
    expect(unsafeInput({ ['k\ud800']: 1 }, 'body', both)).toMatch(/^body: member name "k\\ud800" contains an unpaired/);
    expect(unsafeInput({ limit: Infinity }, 'querystring', both)).toBe('querystring/limit: must be a finite number');
    expect(unsafeInput([-Infinity], 'body', both)).toBe('body/0: must be a finite number');
    expect(unsafeInput({ n: NaN }, 'body', both)).toBe('body/n: must be a finite number');
    expect(unsafeInput({ n: Infinity, s: '\u0000' }, 'body', { text: true, numbers: false })).toBe('body/s: contains U+0000 (NUL), which cannot be stored');
    expect(unsafeInput({ n: Infinity, s: '\u0000' }, 'body', { text: false, numbers: true })).toBe('body/n: must be a finite number');
    expect(unsafeInput({ a: 1.5e308, b: -0, c: null, d: true, e: [] }, 'body', both)).toBeUndefined();
    expect(unsafeInput('text\u0000', 'body', both)).toBe('body: contains U+0000 (NUL), which cannot be stored');
    expect(unsafeInput(undefined, 'body', both)).toBeUndefined();
  });

  it('walks a value nested far deeper than the call stack would allow, and leaves binary bodies alone', () => {
    let deep: unknown = '\u0000';
    for (let i = 0; i < 200_000; i++) deep = [deep];
    expect(unsafeInput(deep, 'body', both)).toMatch(/^body(\/0){200000}: contains U\+0000/);
    expect(unsafeInput(Buffer.from([0, 0xff]), 'body', both)).toBeUndefined();
  });
});
