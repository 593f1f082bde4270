import type { PublishPacket } from 'aedes';
import type { Ingest } from '../../ingest/ingest.ts';
import type { Rejection } from '../../ingest/readings.ts';
import type { Deliver, DeviceSession } from '../session.ts';

export const ERRORS_TOPIC = 'v1/devices/me/errors';

/**
 * `v1/devices/me/telemetry` (and ThingsBoard's short forms `v2/t`, `v2/t/j`): ThingsBoard's
 * payload forms. Resolves once the valid readings are committed; only then may the publish be
 * acknowledged. What was refused is explained to the device on `v1/devices/me/errors` (a
 * GuanLink extension the device may subscribe to); ingest has already logged, counted and kept it.
 */
export function telemetryHandler(ingest: Ingest, deliver: Deliver) {
  // Not async on purpose: under backpressure thousands of these wait, each should cost little.
  return (session: DeviceSession, packet: PublishPacket): Promise<void> => {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    return ingest.telemetry(session.device, payload, packet.topic).then((outcome) => {
      if (outcome.rejections.length > 0) notifyRejections(session.device.id, packet.topic, outcome.rejections, outcome.stored, deliver);
    });
  };
}

/** `{"topic", "ts", "stored", "errors": [{"reason", "key"?, "detail"}]}` on the device's errors topic. */
export function notifyRejections(deviceId: number, topic: string, rejections: Rejection[], stored: number, deliver: Deliver): void {
  const message = JSON.stringify({ topic, ts: Date.now(), stored, errors: rejections.slice(0, 100) });
  void deliver(deviceId, ERRORS_TOPIC, message, 0);
}
