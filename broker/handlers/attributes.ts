import type { PublishPacket } from 'aedes';
import {
  attributeUpdateMessage,
  parseAttributesPayload,
  parseAttributesRequest,
  type AttributeListener,
  type AttributeService,
} from '../../core/attributes.ts';
import type { Rejection } from '../../ingest/readings.ts';
import { OUTBOUND } from '../device-api.ts';
import type { Deliver, DeviceSession } from '../session.ts';
import { notifyRejections } from './telemetry.ts';

/** Where refusals are kept and counted (ingest's rejected-messages log). */
export interface RejectionRecorder {
  recordRejection(deviceId: number | null, topic: string, payload: Buffer, rejections: Rejection[], stored?: number): void;
}

const bufferOf = (packet: PublishPacket): Buffer => (typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload);

/**
 * `v1/devices/me/attributes` (short forms `v2/a`, `v2/a/j`): the device reports client attributes,
 * one flat JSON object. Resolves (and the publish is acknowledged) once the valid keys are
 * committed. A bad key or value is refused on its own; a malformed message whole. Refusals are
 * explained on `v1/devices/me/errors`, kept in rejected_messages and counted; the publish is still
 * acknowledged so that the device does not resend it forever.
 */
export function clientAttributesHandler(attributes: AttributeService, deliver: Deliver, rejected: RejectionRecorder, maxPayloadBytes: number) {
  return async (session: DeviceSession, packet: PublishPacket): Promise<void> => {
    const payload = bufferOf(packet);
    const deviceId = session.device.id;
    const parsed = parseAttributesPayload(payload, maxPayloadBytes);
    const { stored, rejections } = parsed.ok ? await attributes.saveReported(deviceId, parsed.values) : { stored: 0, rejections: [parsed.error] };
    if (rejections.length > 0) {
      rejected.recordRejection(deviceId, packet.topic, payload, rejections, stored);
      notifyRejections(deviceId, packet.topic, rejections, stored, deliver);
    }
  };
}

/**
 * `v1/devices/me/attributes/request/{id}` (short form `v2/a/req/{id}`): the device asks for its
 * client and shared attribute values; the answer goes to `…/attributes/response/{id}` (to
 * `v2/a/res/{id}` for a request on `v2/a/req/{id}`) as `{"client": {…}, "shared": {…}}`. A
 * device only ever reads its own attributes, never the server scope. A malformed request is
 * acknowledged and explained on `v1/devices/me/errors`; it gets no response.
 */
export function attributesRequestHandler(attributes: AttributeService, deliver: Deliver, rejected: RejectionRecorder, maxPayloadBytes: number) {
  return async (session: DeviceSession, packet: PublishPacket, requestId: number | undefined): Promise<void> => {
    const payload = bufferOf(packet);
    const deviceId = session.device.id;
    const parsed = parseAttributesRequest(payload, maxPayloadBytes);
    if (!parsed.ok || requestId === undefined) {
      const rejection: Rejection = parsed.ok ? { reason: 'invalid_shape', detail: 'the topic carries no request id' } : parsed.error;
      rejected.recordRejection(deviceId, packet.topic, payload, [rejection], 0);
      notifyRejections(deviceId, packet.topic, [rejection], 0, deliver);
      return;
    }
    const response = await attributes.request(deviceId, parsed);
    // ThingsBoard answers in the form the request came in (`v2/a/req/7` → `v2/a/res/7`), whatever the device subscribed to.
    const topic = `${packet.topic.startsWith('v2/') ? OUTBOUND.attributesResponse.v2 : OUTBOUND.attributesResponse.v1}${requestId}`;
    void deliver(deviceId, topic, JSON.stringify(response));
  };
}

/**
 * Pushes shared-attribute changes to the device, as ThingsBoard does: only to a connected device
 * subscribed to `v1/devices/me/attributes` (or `v2/a`), only the keys changed, deletions as
 * `{"deleted": [keys]}`. An offline device gets nothing pushed; it requests its attributes when it
 * reconnects. Returns true when the update was sent.
 */
export function sharedAttributesPusher(session: (deviceId: number) => DeviceSession | undefined, deliver: Deliver): AttributeListener {
  return (change) => {
    if (change.scope !== 'shared') return false;
    const s = session(change.deviceId);
    if (!s || s.client.closed) return false;
    if (!s.subscriptions.has(OUTBOUND.attributes.v1) && !s.subscriptions.has(OUTBOUND.attributes.filterV2)) return false;
    void deliver(change.deviceId, { kind: 'attributes' }, JSON.stringify(attributeUpdateMessage(change)));
    return true;
  };
}
