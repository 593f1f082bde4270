import type { PublishPacket } from 'aedes';
import type { AttributeListener, AttributeService } from '../../core/attributes.ts';
import {
  GATEWAY_TOPICS,
  attributeResponse,
  attributeUpdateForGateway,
  parseAttributeRequest,
  parseConnect,
  parseDisconnect,
  parseRpcResponse,
  rpcRequestMessage,
  scopesResponse,
  splitByDevice,
  type DeviceEntry,
} from '../../core/gateway-messages.ts';
import type { GatewaySessions, SubDevice } from '../../core/gateways.ts';
import type { Logger } from '../../core/log.ts';
import type { RpcService, RpcTransport } from '../../core/rpc.ts';
import type { Ingest } from '../../ingest/ingest.ts';
import type { Rejection } from '../../ingest/readings.ts';
import type { DeviceApiHandlers } from '../device-api.ts';
import type { Deliver, DeliverToSession, DeliverTracked, DeviceSession } from '../session.ts';
import { ERRORS_TOPIC } from './telemetry.ts';

/**
 * ThingsBoard's gateway API (`v1/gateway/…`; a device registered with `isGateway`): the gateway
 * connects sub-devices by name, publishes their telemetry and client attributes, asks for their
 * attributes, receives their shared-attribute updates and commands, and answers the commands.
 * Sub-devices are found or created by core/gateways.ts; their telemetry goes through ingest
 * exactly as a device's own (validated against the sub-device's type, refusals recorded under the
 * sub-device), and a QoS 1 publish is acknowledged once every sub-device's part is committed.
 *
 * Refusals are acknowledged (the gateway must not resend them forever), logged, counted, kept in
 * rejected_messages and explained to the gateway on `v1/devices/me/errors` as
 * `{"topic", "ts", "stored", "errors": [{"device", "reason", "key"?, "detail"}]}`; the rest of the
 * message is processed. (ThingsBoard closes the gateway's connection on a malformed message.)
 */

export interface GatewayHandlerOptions {
  gateways: GatewaySessions;
  ingest: Pick<Ingest, 'telemetry' | 'recordRejection'>;
  attributes: AttributeService;
  rpc: Pick<RpcService, 'respond'>;
  deliver: Deliver;
  deliverToSession: DeliverToSession;
  log: Logger;
  /** Largest gateway message (INGEST_MAX_PAYLOAD_BYTES, as for a device's own messages). */
  maxPayloadBytes: number;
  /** Sub-devices named in one telemetry or attributes message (GATEWAY_MAX_DEVICES_PER_MESSAGE). */
  maxDevicesPerMessage: number;
  /** Counts refusals that are not kept in rejected_messages (answers to commands). */
  count: (reason: string) => void;
}

/** One refusal as the gateway is told of it: which sub-device, why. */
interface GatewayError {
  device?: string;
  reason: string;
  key?: string;
  detail: string;
}

const bufferOf = (packet: PublishPacket): Buffer => (typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload);
const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const withDevice = (device: string, r: { reason: string; key?: string; detail: string }): GatewayError =>
  r.key === undefined ? { device, reason: r.reason, detail: r.detail } : { device, reason: r.reason, key: r.key, detail: r.detail };

/** One sub-device's part of a message, as it is kept with a refusal: `{"Name": <its part as sent>}`. */
const entryPayload = (entry: DeviceEntry): Buffer => Buffer.from(`{${JSON.stringify(entry.device)}:${entry.raw}}`);

/** All of the gateway API but claiming (broker/handlers/claim.ts gatewayClaimHandler). */
export function gatewayHandlers(options: GatewayHandlerOptions): Omit<NonNullable<DeviceApiHandlers['gateway']>, 'claim'> {
  const { gateways, ingest, attributes, rpc, deliver, deliverToSession, log, maxPayloadBytes, maxDevicesPerMessage } = options;

  const notify = (gateway: DeviceSession, topic: string, stored: number, errors: GatewayError[]) => {
    if (errors.length === 0) return;
    void deliver(gateway.device.id, ERRORS_TOPIC, JSON.stringify({ topic, ts: Date.now(), stored, errors: errors.slice(0, 100) }), 0);
  };
  type Part = { stored: number; errors: GatewayError[] };
  /** One sub-device's part refused as a whole, kept under the gateway (`named`: the detail starts with the device's name). */
  const refuseEntry = (gateway: DeviceSession, topic: string, entry: DeviceEntry, rejection: Rejection, named = false): Part => {
    ingest.recordRejection(gateway.device.id, topic, entryPayload(entry), named ? { ...rejection, detail: `${entry.device}: ${rejection.detail}` } : rejection);
    return { stored: 0, errors: [withDevice(entry.device, rejection)] };
  };
  const notifyParts = (gateway: DeviceSession, topic: string, parts: Part[]) =>
    notify(
      gateway,
      topic,
      parts.reduce((n, p) => n + p.stored, 0),
      parts.flatMap((p) => p.errors),
    );
  /** A refusal decided here (not by ingest): kept under the gateway, counted, logged, explained. */
  const refuse = (gateway: DeviceSession, topic: string, payload: Buffer, rejection: Rejection, device?: string) => {
    ingest.recordRejection(gateway.device.id, topic, payload, device === undefined ? rejection : { ...rejection, detail: `${device}: ${rejection.detail}` });
    notify(gateway, topic, 0, [device === undefined ? rejection : withDevice(device, rejection)]);
  };

  return {
    /** `{"device": "Name", "type": "…"}`: the sub-device is found or created, and is online through the gateway. */
    async connect(gateway, packet) {
      const payload = bufferOf(packet);
      const parsed = parseConnect(payload, maxPayloadBytes);
      if (!parsed.ok) return refuse(gateway, packet.topic, payload, parsed.error);
      const found = await gateways.resolve(gateway, parsed.device, { type: parsed.type, create: true });
      if (!found.ok) return refuse(gateway, packet.topic, payload, found.rejection, parsed.device);
      if (parsed.type !== undefined && found.sub.session.device.type.name !== parsed.type) {
        // ThingsBoard keeps an existing device's profile too.
        log.debug({ gateway: gateway.device.id, device: found.sub.session.device.id, type: parsed.type }, 'gateway connect: existing sub-device keeps its type');
      }
    },

    /** `{"device": "Name"}`: the sub-device is offline; nothing more is relayed to it. */
    async disconnect(gateway, packet) {
      const payload = bufferOf(packet);
      const parsed = parseDisconnect(payload, maxPayloadBytes);
      if (!parsed.ok) return refuse(gateway, packet.topic, payload, parsed.error);
      if (!gateways.disconnect(gateway, parsed.device)) log.debug({ gateway: gateway.device.id, name: parsed.device }, 'gateway disconnect of a device not connected through it');
    },

    /** `{"Name": [{"ts", "values"}, …], …}`; acknowledged once every sub-device's readings are committed. */
    async telemetry(gateway, packet) {
      const payload = bufferOf(packet);
      const split = splitByDevice(payload, maxPayloadBytes, maxDevicesPerMessage, '{"Pump 7": [{"ts": 1732600000000, "values": {"rpm": 1200}}]}');
      if (!split.ok) return refuse(gateway, packet.topic, payload, split.error);
      const receivedAt = Date.now();
      const parts = await Promise.all(
        split.entries.map(async (entry): Promise<Part> => {
          // ThingsBoard: an array of {"ts","values"} or flat objects. One such object alone is accepted too.
          if (!Array.isArray(entry.value) && !isPlainObject(entry.value)) {
            return refuseEntry(gateway, packet.topic, entry, { reason: 'invalid_shape', detail: `a device's telemetry must be an array of {"ts", "values"} (or flat) objects, got ${entry.raw.slice(0, 60)}` });
          }
          const found = await gateways.resolve(gateway, entry.device, { create: true });
          if (!found.ok) return refuseEntry(gateway, packet.topic, entry, found.rejection, true);
          // The sub-device's part goes through ingest as its own message (recorded under it when refused).
          const outcome = await ingest.telemetry(found.sub.session.device, Buffer.from(entry.raw), packet.topic, receivedAt);
          return { stored: outcome.stored, errors: outcome.rejections.map((r) => withDevice(entry.device, r)) };
        }),
      );
      notifyParts(gateway, packet.topic, parts);
    },

    /** `{"Name": {"attr": value, …}, …}`: client attributes of each sub-device, acknowledged once committed. */
    async attributes(gateway, packet) {
      const payload = bufferOf(packet);
      const split = splitByDevice(payload, maxPayloadBytes, maxDevicesPerMessage, '{"Pump 7": {"fw": "1.2"}}');
      if (!split.ok) return refuse(gateway, packet.topic, payload, split.error);
      const parts = await Promise.all(
        split.entries.map(async (entry): Promise<Part> => {
          if (!isPlainObject(entry.value)) {
            return refuseEntry(gateway, packet.topic, entry, { reason: 'invalid_shape', detail: `a device's attributes must be one JSON object of key/value pairs, got ${entry.raw.slice(0, 60)}` });
          }
          const found = await gateways.resolve(gateway, entry.device, { create: true });
          if (!found.ok) return refuseEntry(gateway, packet.topic, entry, found.rejection, true);
          const deviceId = found.sub.session.device.id;
          const { stored, rejections } = await attributes.saveReported(deviceId, entry.value);
          if (rejections.length > 0) ingest.recordRejection(deviceId, packet.topic, Buffer.from(entry.raw), rejections, stored);
          return { stored, errors: rejections.map((r) => withDevice(entry.device, r)) };
        }),
      );
      notifyParts(gateway, packet.topic, parts);
    },

    /**
     * `{"id", "device", "client": true|false, "key": "k"}` (or `"keys": […]`), answered on
     * `v1/gateway/attributes/response` as `{"id", "device", "value"}` (or `"values"`); the newer
     * `{"id", "device", "client": […], "shared": […]}` as `{"id", "device", "client": {…}, "shared": {…}}`.
     */
    async attributesRequest(gateway, packet) {
      const payload = bufferOf(packet);
      const parsed = parseAttributeRequest(payload, maxPayloadBytes);
      if (!parsed.ok) return refuse(gateway, packet.topic, payload, parsed.error);
      const request = parsed.request;
      const found = await gateways.resolve(gateway, request.device, { create: true });
      if (!found.ok) return refuse(gateway, packet.topic, payload, found.rejection, request.device);
      const deviceId = found.sub.session.device.id;
      let response;
      if (request.form === 'scope') {
        response = attributeResponse(request, await attributes.values(deviceId, request.scope, request.keys));
      } else {
        const { clientKeys, sharedKeys } = request;
        const got = await attributes.request(deviceId, { clientKeys: clientKeys ?? [], sharedKeys: sharedKeys ?? [] });
        response = scopesResponse(request.id, request.device, got);
      }
      void deliverToSession(gateway, GATEWAY_TOPICS.attributesResponse, JSON.stringify(response));
    },

    /** `{"device", "id", "data"}`: a sub-device's answer to command `id` (data kept as sent). */
    async rpc(gateway, packet) {
      const payload = bufferOf(packet);
      const parsed = parseRpcResponse(payload, maxPayloadBytes);
      if (!parsed.ok) return refuse(gateway, packet.topic, payload, parsed.error);
      const found = await gateways.resolve(gateway, parsed.device, { create: false });
      let refusal: GatewayError | undefined;
      if (!found.ok) {
        refusal = found.missing
          ? { device: parsed.device, reason: 'rpc_unknown', detail: `no command ${parsed.id} was sent to "${parsed.device}" (no such device)` }
          : withDevice(parsed.device, found.rejection);
      } else {
        const outcome = await rpc.respond(found.sub.session.device.id, parsed.id, parsed.data);
        if (!outcome.accepted) refusal = { device: parsed.device, reason: outcome.reason, detail: outcome.detail };
      }
      if (!refusal) return;
      options.count(refusal.reason);
      log.info({ gateway: gateway.device.id, device: parsed.device, reason: refusal.reason, detail: refusal.detail }, 'gateway rpc answer refused');
      notify(gateway, packet.topic, 0, [refusal]);
    },
  };
}

/**
 * Commands to sub-devices go through their gateway's session on `v1/gateway/rpc` as
 * `{"device": "Name", "data": {"id", "method", "params"}}`, once the gateway subscribed to that
 * topic and while the sub-device is connected through it. Combine with the direct transport
 * (core/rpc.ts routeTransports): a sub-device with a session of its own gets them directly.
 */
export function gatewayTransport(gateways: Pick<GatewaySessions, 'subDevice'>, deliverTracked: DeliverTracked): RpcTransport {
  const reachable = (sub: SubDevice | undefined): sub is SubDevice => sub !== undefined && sub.gateway.subscriptions.has(GATEWAY_TOPICS.rpc);
  return {
    connected: (deviceId) => gateways.subDevice(deviceId) !== undefined,
    reachable: (deviceId) => reachable(gateways.subDevice(deviceId)),
    send(deviceId, request) {
      const sub = gateways.subDevice(deviceId);
      if (!reachable(sub)) return undefined;
      return deliverTracked(sub.gateway, GATEWAY_TOPICS.rpc, rpcRequestMessage(sub.session.device.name, request));
    },
  };
}

/**
 * Shared-attribute changes of a sub-device connected through a gateway, pushed to the gateway (if
 * it subscribed to `v1/gateway/attributes`) as `{"device": "Name", "data": {changed keys}}`, a
 * deletion as `"data": {"deleted": [keys]}`. As for devices, nothing is kept for later.
 */
export function gatewayAttributesPusher(gateways: Pick<GatewaySessions, 'subDevice'>, deliverToSession: DeliverToSession): AttributeListener {
  return (change) => {
    if (change.scope !== 'shared') return false;
    const sub = gateways.subDevice(change.deviceId);
    if (!sub || !sub.gateway.subscriptions.has(GATEWAY_TOPICS.attributes)) return false;
    void deliverToSession(sub.gateway, GATEWAY_TOPICS.attributes, attributeUpdateForGateway(sub.session.device.name, change));
    return true;
  };
}
