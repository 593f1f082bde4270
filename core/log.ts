import { pino, type Logger } from 'pino';

export type { Logger };

/** Structured JSON logs on stdout; one logger for the process, children per module. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino({ level, base: { service: 'guanlink' }, timestamp: pino.stdTimeFunctions.isoTime }, destination);
}
