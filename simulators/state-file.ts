/**
 * The simulators' state file: device name → access token, JSON. The platform shows a token only
 * once, so losing this file means the simulated devices cannot connect any more (until their
 * tokens are rotated). Written atomically, readable only by the owner.
 */
import { chmod, copyFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

export type TokenState = Record<string, string>;

export class StateFileError extends Error {}

/** The saved tokens; an empty state when the file does not exist yet. Throws StateFileError when it is unreadable. */
export async function loadTokens(file: string): Promise<TokenState> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new StateFileError(`cannot read ${file}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new StateFileError(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new StateFileError(`${file} must hold a JSON object of device name → access token`);
  const tokens: TokenState = {};
  for (const [name, token] of Object.entries(doc)) if (typeof token === 'string' && token.length > 0) tokens[name] = token;
  return tokens;
}

/** Keeps a copy of an unreadable state file next to it (`<file>.bad`), so no token is lost by overwriting it. */
export async function setAsideBadState(file: string): Promise<string> {
  const target = `${file}.bad`;
  await copyFile(file, target);
  await chmod(target, 0o600); // the copy takes the original's mode, which a hand-edited file may have widened
  return target;
}

let writes = 0;

/** Writes the tokens atomically (temporary file, then rename), mode 0600. */
export async function saveTokens(file: string, tokens: TokenState): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const sorted = Object.fromEntries(Object.entries(tokens).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  const tmp = `${file}.tmp-${process.pid}-${++writes}`;
  await writeFile(tmp, `${JSON.stringify(sorted, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}
