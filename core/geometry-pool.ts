import { existsSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { Area } from '../geo/area.ts';
import type { Cover } from '../geo/cover.ts';
import { adoptPolygonIndex } from '../geo/polygon-index.ts';
import { adoptBandArrayTexts } from '../db/spatial-sql.ts';
import type { ParsedArea } from './geometry-worker.ts';
import { BusyError } from './busy.ts';

/**
 * Geometry work of requests — checking a polygon, covering an area with H3 cells, testing many
 * positions against an area — runs on a small pool of worker threads (piscina), so the main
 * thread, which carries every MQTT acknowledgement, REST request and live event, only waits for
 * it. The pool is bounded: at most `threads` tasks run at once and `maxQueue` wait; beyond, the
 * request is refused at once (GeometryBusyError: 503 with Retry-After), and a task running or
 * waiting longer than `taskTimeoutMs` is abandoned (its thread is ended; GeometryTimeoutError).
 */
export interface GeometryWork {
  /** A polygon (GeoJSON) or H3 cells, checked; an invalid one resolves `{ error }`. */
  parseArea(input: { geometry: unknown } | { cells: string[] }): Promise<{ area: Area } | { error: string }>;
  cover(area: Area, maxEdgeCells: number): Promise<Cover>;
  /** 1 for each point (lng, lat pairs) inside `area` (and `also`). */
  inside(area: Area, points: Float64Array, also?: Area): Promise<Uint8Array>;
}

export interface GeometryPoolOptions {
  /** Worker threads (GEOMETRY_THREADS; 0: the cores less one, at least 1). */
  threads: number;
  /** Tasks that may wait for a free thread (GEOMETRY_QUEUE); beyond, GeometryBusyError. */
  maxQueue: number;
  /** Longest a task may wait and run (GEOMETRY_TASK_TIMEOUT_MS). */
  taskTimeoutMs: number;
}

/** Seconds a client refused for a full pool is told to wait. */
export const GEOMETRY_RETRY_AFTER_S = 2;

/** The pool is full: answered 503 with Retry-After. */
export class GeometryBusyError extends BusyError {
  override readonly name = 'GeometryBusyError';
  constructor(message: string) {
    super('geometry_busy', message, GEOMETRY_RETRY_AFTER_S);
  }
}

/** A task outlived GEOMETRY_TASK_TIMEOUT_MS: answered 503. */
export class GeometryTimeoutError extends Error {
  override readonly name = 'GeometryTimeoutError';
  readonly statusCode = 503;
  readonly code = 'geometry_timeout';
  readonly expose = true;
}

export const defaultGeometryThreads = (): number => Math.max(1, Math.min(8, os.availableParallelism() - 1));

/**
 * Where the worker's code is. Bundled (this module is part of dist/guanlink.mjs), it is
 * dist/geometry-worker.mjs beside the bundle (scripts/build.mjs builds both); from the sources
 * (vitest, tsx), geometry-worker.source.mjs beside this file, which registers tsx's loader in the
 * worker thread (a worker inherits neither the main thread's loader nor, on Node 20, `--import`)
 * and loads geometry-worker.ts.
 */
export function workerFile(moduleUrl: string = import.meta.url): string {
  const fromSources = new URL(moduleUrl).pathname.endsWith('.ts');
  return new URL(fromSources ? './geometry-worker.source.mjs' : './geometry-worker.mjs', moduleUrl).href;
}

export class GeometryPool implements GeometryWork {
  private readonly pool: Piscina;
  private readonly threadCount: number;
  /** Tasks handed to piscina: never more than the threads, so each starts at once on a thread of its own. */
  private running = 0;
  /** Tasks waiting for a thread, oldest first. */
  private readonly waiting: { start: () => void; timer: NodeJS.Timeout }[] = [];

  constructor(
    private readonly options: GeometryPoolOptions,
    onError: (err: Error) => void = () => {},
  ) {
    this.threadCount = options.threads > 0 ? options.threads : defaultGeometryThreads();
    const filename = workerFile();
    // Missing, every task would wait for a thread that never starts: say so at start instead.
    if (!existsSync(fileURLToPath(filename))) throw new Error(`the geometry worker ${fileURLToPath(filename)} is missing (npm run build makes it beside dist/guanlink.mjs)`);
    this.pool = new Piscina({
      filename,
      minThreads: 0,
      maxThreads: this.threadCount,
      // Threads stay a while after their last task: starting one costs tens of milliseconds.
      idleTimeout: 60_000,
    });
    // A thread that fails (its task is rejected too) must not take the process down.
    this.pool.on('error', onError);
  }

  /** Worker threads alive. */
  get threads(): number {
    return this.pool.threads.length;
  }

  /** Tasks running and waiting (for tests and metrics). */
  get load(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  /**
   * Runs a task when a thread is free. The queue is kept here rather than in piscina, whose
   * balancer hands tasks to busy threads: a task abandoned there would end the thread running
   * another request's task.
   */
  private async run<T>(name: string, task: unknown): Promise<T> {
    const { taskTimeoutMs, maxQueue } = this.options;
    const started = Date.now();
    const timeout = () =>
      new GeometryTimeoutError(`the geometry work of this request took longer than ${taskTimeoutMs} ms (GEOMETRY_TASK_TIMEOUT_MS); ask for a simpler area`);
    if (this.running >= this.threadCount) {
      if (this.waiting.length >= maxQueue) {
        throw new GeometryBusyError(`the geometry workers are busy (${this.running} tasks running, ${this.waiting.length} waiting: GEOMETRY_QUEUE); retry in ${GEOMETRY_RETRY_AFTER_S} s`);
      }
      // The slot is handed over by the task that ends (release), so the count never overshoots.
      await new Promise<void>((resolve, reject) => {
        const entry = {
          start: resolve,
          timer: setTimeout(() => {
            this.waiting.splice(this.waiting.indexOf(entry), 1);
            reject(timeout());
          }, taskTimeoutMs),
        };
        this.waiting.push(entry);
      });
    } else this.running++;
    try {
      const left = Math.max(1, taskTimeoutMs - (Date.now() - started));
      return (await this.pool.run(task, { name, signal: AbortSignal.timeout(left) })) as T;
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw timeout();
      throw err;
    } finally {
      const next = this.waiting.shift();
      if (next) {
        clearTimeout(next.timer);
        next.start();
      } else this.running--;
    }
  }

  async parseArea(input: { geometry: unknown } | { cells: string[] }): Promise<{ area: Area } | { error: string }> {
    const parsed = await this.run<ParsedArea>('parseArea', input);
    // The band index built there serves the main thread's SQL and tests of this very object.
    if ('area' in parsed && parsed.index && parsed.area.kind === 'polygon') {
      adoptPolygonIndex(parsed.area.geometry, parsed.index);
      if (parsed.texts) adoptBandArrayTexts(parsed.index, parsed.texts);
    }
    return parsed;
  }

  cover(area: Area, maxEdgeCells: number): Promise<Cover> {
    return this.run('cover', { area, maxEdgeCells });
  }

  inside(area: Area, points: Float64Array, also?: Area): Promise<Uint8Array> {
    return this.run('inside', { area, also, points });
  }

  async close(): Promise<void> {
    await this.pool.destroy();
  }
}
