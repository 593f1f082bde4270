import type { PublishPacket } from 'aedes';
import type { Logger } from '../../core/log.ts';
import type { Ingest } from '../../ingest/ingest.ts';
import type { Rejection } from '../../ingest/readings.ts';
import type { Deliver, Session } from '../session.ts';

export const ERRORS_TOPIC = 'v1/devices/me/errors';

/**
 * `v1/devices/me/telemetry` (and ThingsBoard's short form `v2/t`): ThingsBoard's payload forms.
 * Resolves once the valid readings are committed; only then may the publish be acknowledged.
 * Rejected values are explained to the device on `v1/devices/me/errors` (a GuanLink extension
 * the device may subscribe to) and logged; the rest of the message is stored.
 */
export function telemetryHandler(ingest: Ingest, deliver: Deliver, log: Logger) {
  return async (session: Session, packet: PublishPacket): Promise<void> => {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    const outcome = await ingest.telemetry(session.device, payload);
    if (outcome.rejections.length > 0) reportRejections(session, packet.topic, outcome.rejections, outcome.stored, deliver, log);
  };
}

export function reportRejections(session: Session, topic: string, rejections: Rejection[], stored: number, deliver: Deliver, log: Logger): void {
  log.info({ device: session.device.id, topic, stored, rejections: rejections.slice(0, 10) }, 'telemetry rejected');
  const message = JSON.stringify({ topic, ts: Date.now(), stored, errors: rejections.slice(0, 100) });
  void deliver(session.device.id, ERRORS_TOPIC, message, 0);
}
