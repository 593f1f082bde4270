import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * The README's shell examples. Each ```sh block is preceded by a marker comment:
 * `<!-- example: <session>/<name> -->` (a runnable example) or `<!-- not run: <why> -->` (an
 * operator command that needs what a test does not have: a certificate, a fresh machine).
 * The examples of one session run in document order in one bash, as a reader following the
 * README in one terminal would run them; a name without a session is its own session.
 */

export interface ReadmeBlock {
  /** 1-based line of the opening fence. */
  line: number;
  /** `example:` or `not run:`, or undefined when the block has no marker. */
  marker: { kind: 'example'; session: string; name: string } | { kind: 'not run'; reason: string } | undefined;
  script: string;
}

export interface SessionRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** Each example's own output, by name, for the examples that ran. */
  outputs: Map<string, string>;
}

const README = new URL('../../README.md', import.meta.url);
const MARKER = /^<!-- (example|not run): *(.+?)(?: \(.*\))? *-->$/;
const SEPARATOR = '@@readme-example';

/** Every ```sh block of the README with its marker. */
export function readmeShellBlocks(text = readFileSync(README, 'utf8')): ReadmeBlock[] {
  const lines = text.split('\n');
  const blocks: ReadmeBlock[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i] !== '```sh') continue;
    const end = lines.indexOf('```', i + 1);
    if (end < 0) throw new Error(`README line ${i + 1}: unterminated code block`);
    const m = MARKER.exec(lines[i - 1] ?? '');
    let marker: ReadmeBlock['marker'];
    if (m?.[1] === 'example') {
      const [session, name] = m[2]!.includes('/') ? m[2]!.split('/', 2) : [m[2]!, m[2]!];
      marker = { kind: 'example', session: session!, name: name! };
    } else if (m?.[1] === 'not run') marker = { kind: 'not run', reason: m[2]! };
    blocks.push({ line: i + 1, marker, script: lines.slice(i + 1, end).join('\n') + '\n' });
    i = end;
  }
  return blocks;
}

/** The examples of one session, in document order. */
export function readmeSession(session: string): { name: string; script: string }[] {
  const examples = readmeShellBlocks().flatMap((b) => (b.marker?.kind === 'example' && b.marker.session === session ? [{ name: b.marker.name, script: b.script }] : []));
  if (examples.length === 0) throw new Error(`README: no example of session "${session}"`);
  return examples;
}

/**
 * Runs a session's examples in one `bash -euo pipefail` in `cwd`, with `env` added to this
 * process's environment. A line naming each example precedes its output; the run stops at the
 * first failing command (its example is the last in `outputs`).
 */
export function runReadmeSession(session: string, options: { env: Record<string, string>; cwd: string; timeoutMs?: number }): Promise<SessionRun> {
  const script = readmeSession(session)
    .map((e) => `printf '\\n${SEPARATOR} %s\\n' '${e.name}'\n${e.script}`)
    .join('');
  return new Promise((resolve) => {
    execFile(
      'bash',
      ['-euo', 'pipefail', '-c', script],
      { env: { ...process.env, ...options.env }, cwd: options.cwd, timeout: options.timeoutMs ?? 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const outputs = new Map<string, string>();
        const parts = stdout.split(new RegExp(`^${SEPARATOR} `, 'm')).slice(1);
        for (const part of parts) {
          const newline = part.indexOf('\n');
          outputs.set(part.slice(0, newline), part.slice(newline + 1).trim());
        }
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout, stderr, outputs });
      },
    );
  });
}
