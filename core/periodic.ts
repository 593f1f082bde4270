/**
 * A background job run every `intervalMs` (0: never), the first time soon after start — a node
 * restarted more often than the interval still runs it — never overlapping itself: an on-demand
 * run (`now`) waits for a scheduled one and the other way round. `stop()` waits for the run in
 * progress; long runs check `stopping` to end early.
 */
export class PeriodicJob {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(
    private readonly run: () => Promise<unknown>,
    private readonly intervalMs: number,
    private readonly onError: (err: Error) => void,
  ) {}

  get stopping(): boolean {
    return this.stopped;
  }

  start(firstDelayMs = Math.min(this.intervalMs, 60_000)): void {
    if (this.intervalMs > 0) this.schedule(firstDelayMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running.catch(() => {});
  }

  /** Runs `fn` now, after any run in progress. */
  now<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.running.catch(() => {}).then(fn);
    this.running = run;
    return run;
  }

  private schedule(delay: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.now(this.run)
        .catch((err: unknown) => this.onError(err as Error))
        .finally(() => this.schedule(this.intervalMs));
    }, delay);
    this.timer.unref?.();
  }
}
