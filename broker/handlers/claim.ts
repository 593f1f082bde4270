import type { PublishPacket } from 'aedes';
import { parseClaimFields, parseDeviceClaim, type ClaimService } from '../../core/claims.ts';
import { splitByDevice } from '../../core/gateway-messages.ts';
import type { GatewaySessions } from '../../core/gateways.ts';
import type { Ingest } from '../../ingest/ingest.ts';
import type { Rejection } from '../../ingest/readings.ts';
import type { TopicHandler } from '../device-api.ts';
import type { Deliver } from '../session.ts';
import { ERRORS_TOPIC, notifyRejections } from './telemetry.ts';

/**
 * Claiming (ThingsBoard: https://thingsboard.io/docs/reference/mqtt-api/claiming/ and
 * …/gateway-api/claiming/; rules in core/claims.ts). The request is stored before the publish is
 * acknowledged; if it cannot be stored the handler fails, which closes the connection without the
 * PUBACK, so the device asks again — a device is never told of a claim that was dropped. A request
 * refused (malformed, or the device already has an owner) is acknowledged, kept in
 * rejected_messages, counted and explained on `v1/devices/me/errors`, as telemetry refusals are.
 */

export interface ClaimHandlerOptions {
  claims: Pick<ClaimService, 'request'>;
  ingest: Pick<Ingest, 'recordRejection'>;
  deliver: Deliver;
  /** Largest claim message (INGEST_MAX_PAYLOAD_BYTES). */
  maxPayloadBytes: number;
}

const bufferOf = (packet: PublishPacket): Buffer => (typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload);

/** `v1/devices/me/claim` (short form `v2/c`): `{"secretKey", "durationMs"}`, both optional, or nothing. */
export function deviceClaimHandler(options: ClaimHandlerOptions): TopicHandler {
  const { claims, ingest, deliver, maxPayloadBytes } = options;
  return async (session, packet) => {
    const payload = bufferOf(packet);
    const parsed = parseDeviceClaim(payload, maxPayloadBytes);
    const stored = parsed.ok ? await claims.request(session.device.id, parsed.request) : undefined;
    const rejection = !parsed.ok ? parsed.error : stored && !stored.ok ? stored.error : undefined;
    if (!rejection) return;
    ingest.recordRejection(session.device.id, packet.topic, payload, rejection);
    notifyRejections(session.device.id, packet.topic, [rejection], 0, deliver);
  };
}

export interface GatewayClaimOptions extends ClaimHandlerOptions {
  gateways: Pick<GatewaySessions, 'resolve'>;
  /** Sub-devices named in one message (GATEWAY_MAX_DEVICES_PER_MESSAGE). */
  maxDevicesPerMessage: number;
}

/**
 * `v1/gateway/claim`: `{"Pump 7": {"secretKey", "durationMs"}, …}`, for the gateway's own
 * sub-devices only (a name of another gateway's or a standalone device is refused,
 * `device_not_owned`; an unknown name is created as a sub-device, as ThingsBoard does). Each
 * sub-device's request is stored (or refused) on its own; the PUBACK follows once all are stored.
 */
export function gatewayClaimHandler(options: GatewayClaimOptions): TopicHandler {
  const { claims, ingest, deliver, gateways, maxPayloadBytes, maxDevicesPerMessage } = options;
  return async (gateway, packet) => {
    const payload = bufferOf(packet);
    const split = splitByDevice(payload, maxPayloadBytes, maxDevicesPerMessage, '{"Pump 7": {"secretKey": "abc123", "durationMs": 60000}}');
    const errors: (Rejection & { device?: string })[] = [];
    let stored = 0;
    if (!split.ok) {
      ingest.recordRejection(gateway.device.id, packet.topic, payload, split.error);
      errors.push(split.error);
    } else {
      await Promise.all(
        split.entries.map(async (entry) => {
          const refuse = (r: Rejection) => {
            ingest.recordRejection(gateway.device.id, packet.topic, Buffer.from(`{${JSON.stringify(entry.device)}:${entry.raw}}`), { ...r, detail: `${entry.device}: ${r.detail}` });
            errors.push({ device: entry.device, ...r });
          };
          const parsed = parseClaimFields(entry.value);
          if (!parsed.ok) return refuse(parsed.error);
          const found = await gateways.resolve(gateway, entry.device, { create: true });
          if (!found.ok) return refuse(found.rejection);
          const outcome = await claims.request(found.sub.session.device.id, parsed.request, gateway.device.id);
          if (!outcome.ok) return refuse(outcome.error);
          stored++;
        }),
      );
    }
    if (errors.length > 0) void deliver(gateway.device.id, ERRORS_TOPIC, JSON.stringify({ topic: packet.topic, ts: Date.now(), stored, errors: errors.slice(0, 100) }), 0);
  };
}
