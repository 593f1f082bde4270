import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT } from './children.ts';

/** Summaries of V8 profiles written by child-hooks.ts: where a process spent its time, and what it allocated. */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface CpuProfile {
  nodes: { id: number; callFrame: CallFrame; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

interface HeapNode {
  callFrame: CallFrame;
  selfSize: number;
  children: HeapNode[];
}

export interface Share {
  name: string;
  /** 0..1 of the total. */
  share: number;
}

export interface ProfileSummary {
  seconds: number;
  /** Share of time not idle (JavaScript, GC, native work on the main thread). */
  busy: number;
  /** Self time by function. */
  functions: Share[];
  /** Total time (self + callees) of GuanLink's own functions: which parts of the platform the time goes through. */
  inclusive: Share[];
  /** Self time by package (node_modules/<name>), GuanLink folder, Node internals or V8 pseudo-entries. */
  areas: Share[];
  /** Sampled allocation (bytes, including objects already collected) by allocating function. */
  allocations?: { megabytesPerSecond: number; functions: Share[] };
}

function where(url: string): string {
  const file = url.startsWith('file://') ? new URL(url).pathname : url;
  return file.startsWith(ROOT) ? path.relative(ROOT, file) : file;
}

/** "fn file" — line numbers of TypeScript files are tsx's output lines, not the source's, so they are left out. */
function frameName(f: CallFrame): string {
  if (!f.url) return f.functionName || '(anonymous)';
  const file = where(f.url);
  return `${f.functionName || '(anonymous)'} ${file}${file.endsWith('.ts') ? '' : `:${f.lineNumber + 1}`}`;
}

function area(f: CallFrame): string {
  if (!f.url) return f.functionName.startsWith('(') ? f.functionName : '(native)';
  const file = where(f.url);
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(file);
  if (pkg) return pkg[1]!;
  if (file.startsWith('node:')) return 'node: (core modules)';
  return `guanlink ${path.dirname(file)}/`;
}

function isGuanlink(f: CallFrame): boolean {
  const file = where(f.url);
  return f.url !== '' && !file.startsWith('/') && !file.startsWith('node:') && !file.includes('node_modules/') && !file.startsWith('bench/');
}

function ranked(m: Map<string, number>, total: number, top: number): Share[] {
  return [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, top)
    .map(([name, v]) => ({ name, share: v / total }));
}

const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);

export function summariseProfile(cpuFile: string, heapFile: string | undefined, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(cpuFile, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const areas = new Map<string, number>();
  let total = 0;
  let idle = 0;
  // timeDeltas[i] is the time before sample i; charge it to the stack that sample i found.
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] ?? 0;
    const frame = byId.get(id)!.callFrame;
    total += dt;
    if (frame.functionName === '(idle)') idle += dt;
    add(self, frameName(frame), dt);
    add(areas, area(frame), dt);
    const seen = new Set<string>();
    for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
      const f = byId.get(n)!.callFrame;
      if (!isGuanlink(f)) continue;
      const name = frameName(f);
      if (!seen.has(name)) add(inclusive, name, dt);
      seen.add(name);
    }
  });
  const summary: ProfileSummary = {
    seconds: total / 1e6,
    busy: (total - idle) / total,
    functions: ranked(self, total, top),
    inclusive: ranked(inclusive, total, top),
    areas: ranked(areas, total, top),
  };
  if (heapFile) {
    const heap = JSON.parse(readFileSync(heapFile, 'utf8')) as { head: HeapNode };
    const bytes = new Map<string, number>();
    let sum = 0;
    const walk = (n: HeapNode) => {
      if (n.selfSize > 0) add(bytes, frameName(n.callFrame), n.selfSize);
      sum += n.selfSize;
      n.children.forEach(walk);
    };
    walk(heap.head);
    summary.allocations = { megabytesPerSecond: sum / 1048576 / summary.seconds, functions: ranked(bytes, sum, top) };
  }
  return summary;
}
