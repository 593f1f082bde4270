import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StateFileError, loadTokens, saveTokens, setAsideBadState } from './state-file.ts';

describe('simulator state file', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'guanlink-sim-state-'));
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('is empty when missing, and round-trips name → token, owner-only', async () => {
    const file = path.join(dir, 'nested', 'simulators.json');
    expect(await loadTokens(file)).toEqual({});
    await saveTokens(file, { 'sim-b': 'tok2', 'sim-a 东江石龙段': 'tok1' });
    expect(await loadTokens(file)).toEqual({ 'sim-a 东江石龙段': 'tok1', 'sim-b': 'tok2' });
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ 'sim-a 东江石龙段': 'tok1', 'sim-b': 'tok2' });
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    // The folder it created holds tokens: its owner's only.
    expect((await stat(path.dirname(file))).mode & 0o777).toBe(0o700);
  });

  it('keeps the copy of an unreadable file owner-only, whatever the original allowed', async () => {
    const file = path.join(dir, 'widened.json');
    await writeFile(file, '{"sim-a": "tok1", oops', { mode: 0o644 });
    const copy = await setAsideBadState(file);
    expect(await readFile(copy, 'utf8')).toBe('{"sim-a": "tok1", oops');
    expect((await stat(copy)).mode & 0o777).toBe(0o600);
  });

  it('refuses a file that is not a JSON object', async () => {
    const file = path.join(dir, 'bad.json');
    await writeFile(file, '{oops');
    await expect(loadTokens(file)).rejects.toBeInstanceOf(StateFileError);
    await writeFile(file, '[1,2]');
    await expect(loadTokens(file)).rejects.toBeInstanceOf(StateFileError);
  });
});
