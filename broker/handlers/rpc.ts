import type { PublishPacket } from 'aedes';
import type { Logger } from '../../core/log.ts';
import type { RpcRefusal, RpcService, RpcTransport } from '../../core/rpc.ts';
import type { DeliverTracked, Deliver, DeviceSession } from '../session.ts';
import { ERRORS_TOPIC } from './telemetry.ts';

/**
 * RPC over the device API (ThingsBoard-compatible):
 * - `v1/devices/me/rpc/response/{id}` (`v2/r/res/{id}`): the device answers server-side command
 *   `{id}` (rpcResponseHandler); the body is opaque and kept as sent.
 * - `v1/devices/me/rpc/request/{id}` (`v2/r/req/{id}`): the device calls the server
 *   (client-side RPC, rpcRequestHandler), answered on `…/rpc/response/{id}` (`v2/r/res/{id}`).
 * Refusals are acknowledged and explained on `v1/devices/me/errors`.
 */

/** What getSessionLimits tells a device (ThingsBoard's transport answers it itself). */
export interface SessionLimits {
  /** Largest payload the device should send (GuanLink: the telemetry payload limit). */
  maxPayloadSize: number;
  /** QoS 1 messages a device should keep unacknowledged at once. */
  maxInflightMessages: number;
  /** The per-device publish limit as ThingsBoard writes it ("500:1,20000:60"); "" when off. */
  messageRateLimit: string;
}

type Refused = { reason: string; detail: string };

function refuse(deliver: Deliver, session: DeviceSession, topic: string, refusal: Refused, log: Logger, count?: (reason: string) => void): void {
  count?.(refusal.reason);
  log.info({ device: session.device.id, topic, reason: refusal.reason, detail: refusal.detail }, 'rpc message refused');
  const message = JSON.stringify({ topic, ts: Date.now(), stored: 0, errors: [refusal] });
  void deliver(session.device.id, ERRORS_TOPIC, message, 0);
}

const payloadOf = (packet: PublishPacket): Buffer => (typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload);

/** The device answers a server-side command. Resolves once the answer is stored (then the publish is acknowledged). */
export function rpcResponseHandler(rpc: Pick<RpcService, 'respond'>, deliver: Deliver, log: Logger, count?: (reason: string) => void) {
  return async (session: DeviceSession, packet: PublishPacket, requestId: number | undefined): Promise<void> => {
    const outcome = await rpc.respond(session.device.id, requestId!, payloadOf(packet));
    if (!outcome.accepted) refuse(deliver, session, packet.topic, { reason: outcome.reason, detail: outcome.detail } satisfies RpcRefusal, log, count);
  };
}

/**
 * Client-side RPC: `{"method": "…", "params": …}` on …/rpc/request/{id}, answered on
 * …/rpc/response/{id} in the same topic family (v1 or v2) the request used. Built in:
 * `getSessionLimits` (ThingsBoard's, used by its SDKs), `getTime` and `getCurrentTime`.
 * Anything else is answered `{"error": "…"}`.
 */
export function rpcRequestHandler(options: { deliver: Deliver; limits: SessionLimits; log: Logger; count?: (reason: string) => void }) {
  const { deliver, limits, log, count } = options;
  return async (session: DeviceSession, packet: PublishPacket, requestId: number | undefined): Promise<void> => {
    const responseTopic = `${packet.topic.startsWith('v2/') ? 'v2/r/res/' : 'v1/devices/me/rpc/response/'}${requestId}`;
    const answer = (body: unknown) => void deliver(session.device.id, responseTopic, JSON.stringify(body));
    const payload = payloadOf(packet);
    const request = parseRequest(payload, limits.maxPayloadSize);
    if ('reason' in request) {
      refuse(deliver, session, packet.topic, request, log, count);
      answer({ error: `${request.reason}: ${request.detail}` });
      return;
    }
    switch (request.method) {
      case 'getSessionLimits': {
        const rateLimits = { messages: limits.messageRateLimit, telemetryMessages: limits.messageRateLimit, telemetryDataPoints: '' };
        answer({
          maxPayloadSize: limits.maxPayloadSize,
          maxInflightMessages: limits.maxInflightMessages,
          rateLimits,
          ...(session.device.isGateway ? { gatewayRateLimits: rateLimits } : {}),
        });
        return;
      }
      case 'getTime': {
        const now = new Date();
        answer({ ts: now.getTime(), time: now.toISOString() });
        return;
      }
      case 'getCurrentTime':
        answer(Date.now());
        return;
      default:
        log.debug({ device: session.device.id, method: request.method }, 'client-side RPC with an unknown method');
        answer({ error: `unknown method "${request.method}"; GuanLink answers getSessionLimits, getTime and getCurrentTime` });
    }
  };
}

function parseRequest(payload: Buffer, maxBytes: number): { method: string; params: unknown } | Refused {
  if (payload.length > maxBytes) return { reason: 'payload_too_large', detail: `the request is ${payload.length} bytes; at most ${maxBytes}` };
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    return { reason: 'invalid_json', detail: 'the request is not JSON (or not valid UTF-8); expected {"method": "…", "params": {…}}' };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    return { reason: 'invalid_shape', detail: 'expected a JSON object {"method": "…", "params": {…}}' };
  }
  const { method, params } = body as { method?: unknown; params?: unknown };
  if (typeof method !== 'string' || method.length === 0 || method.length > 255) {
    return { reason: 'invalid_shape', detail: '"method" must be a non-empty string (at most 255 characters)' };
  }
  return { method, params };
}

const COMMAND_FILTERS = ['v1/devices/me/rpc/request/+', 'v2/r/req/+'];

/**
 * Commands reach a device through its own MQTT session on this node, once it subscribed to them
 * (ThingsBoard sends pending commands when the device subscribes to its RPC topic).
 */
export function directTransport(broker: { session(deviceId: number): DeviceSession | undefined; deliverTracked: DeliverTracked }): RpcTransport {
  return {
    connected: (deviceId) => broker.session(deviceId) !== undefined,
    reachable(deviceId) {
      const session = broker.session(deviceId);
      return session !== undefined && COMMAND_FILTERS.some((filter) => session.subscriptions.has(filter));
    },
    send(deviceId, request) {
      const session = broker.session(deviceId);
      if (!session) return undefined;
      const body = JSON.stringify({ method: request.method, params: request.params });
      return broker.deliverTracked(session, { kind: 'rpcRequest', suffix: String(request.requestId) }, body);
    },
  };
}
