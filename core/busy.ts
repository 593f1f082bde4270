/**
 * A shared resource is at its bound (worker threads, database turns): answered 503 with
 * Retry-After. api/problem.ts reads `statusCode`, `expose` (the message is for the client) and
 * `headers`.
 */
export class BusyError extends Error {
  readonly statusCode = 503;
  readonly expose = true;
  readonly headers: Record<string, string>;

  constructor(
    readonly code: string,
    message: string,
    readonly retryAfterS: number,
  ) {
    super(message);
    this.headers = { 'retry-after': String(retryAfterS) };
  }
}
