import { describeValue } from './telemetry-payload.ts';


export interface JsonValueLimits {
  /** Bytes of the value written as JSON. */
  maxValueBytes: number;
  /** Nesting of objects and arrays within the value. */
  maxDepth: number;
}

// PostgreSQL's text and jsonb cannot hold U+0000, and a lone surrogate is not text.
function stringProblem(s: string): string | undefined {
  if (s.includes('\u0000')) return 'contains U+0000';
  if (!s.isWellFormed()) return 'is not well-formed Unicode (lone surrogate)';
  return undefined;
}

/** Why a value cannot be stored (as an attribute or a telemetry value), with the reason to report, or undefined. */
export function valueProblem(raw: unknown, limits: Readonly<JsonValueLimits>): { reason: 'invalid_value' | 'value_too_large'; detail: string } | undefined {
  if (raw === null || raw === undefined) return { reason: 'invalid_value', detail: 'null is not a value' };
  const t = typeof raw;
  if (t === 'object') {
    // Iterative, bounded walk: a hostile value nests thousands of levels deep within a small payload.
    const stack: [unknown, number][] = [[raw, 1]];
    while (stack.length > 0) {
      const [v, depth] = stack.pop()!;
      if (typeof v === 'string') {
        const p = stringProblem(v);
        if (p) return { reason: 'invalid_value', detail: `a string inside ${p}` };
      } else if (typeof v === 'number') {
        if (!Number.isFinite(v)) return { reason: 'invalid_value', detail: 'a number inside is out of range' };
      } else if (typeof v === 'object' && v !== null) {
        if (depth > limits.maxDepth) return { reason: 'invalid_value', detail: `nested deeper than ${limits.maxDepth} levels` };
        if (Array.isArray(v)) {
          for (const item of v) stack.push([item, depth + 1]);
        } else {
          for (const [k, item] of Object.entries(v)) {
            const p = stringProblem(k);
            if (p) return { reason: 'invalid_value', detail: `a key inside ${p}` };
            stack.push([item, depth + 1]);
          }
        }
      }
    }
  } else if (t === 'string') {
    const p = stringProblem(raw as string);
    if (p) return { reason: 'invalid_value', detail: `the string ${p}` };
  } else if (t === 'number') {
    if (!Number.isFinite(raw)) return { reason: 'invalid_value', detail: `${describeValue(raw)} is not a finite number` };
  } else if (t !== 'boolean') {
    return { reason: 'invalid_value', detail: `a ${t} is not a JSON value` };
  }
  const bytes = Buffer.byteLength(JSON.stringify(raw));
  if (bytes > limits.maxValueBytes) return { reason: 'value_too_large', detail: `the value is ${bytes} bytes as JSON; the limit is ${limits.maxValueBytes}` };
  return undefined;
}
