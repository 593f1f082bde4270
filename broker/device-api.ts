import type { PublishPacket } from 'aedes';
import type { DeviceSession, ProvisionSession, Session } from './session.ts';

/**
 * A handler for one topic family. Resolves when the publish may be acknowledged (for telemetry:
 * once committed); rejecting closes the connection unacknowledged. `requestId` is the numeric
 * topic suffix of request/response topics (`…/request/{id}`).
 */
export type TopicHandler<S extends Session = DeviceSession> = (session: S, packet: PublishPacket, requestId: number | undefined) => Promise<void>;

/** The device API's handlers (ThingsBoard-compatible; see README). Families not configured are refused. */
export interface DeviceApiHandlers {
  telemetry: TopicHandler;
  /** Client attributes the device reports. */
  attributes?: TopicHandler;
  /** The device asks for attribute values (answered on …/attributes/response/{id}). */
  attributesRequest?: TopicHandler;
  /** The device answers a server-side RPC. */
  rpcResponse?: TopicHandler;
  /** The device calls the server (client-side RPC, answered on …/rpc/response/{id}). */
  rpcRequest?: TopicHandler;
  /** The device asks to be claimed by an agency (core/claims.ts). */
  claim?: TopicHandler;
  /** The device downloads a chunk of its firmware or software (`v2/fw/request/{id}/chunk/{n}`, `v2/sw/…`; handlers/ota.ts). */
  otaRequest?: TopicHandler;
  gateway?: {
    connect: TopicHandler;
    disconnect: TopicHandler;
    telemetry: TopicHandler;
    attributes: TopicHandler;
    attributesRequest: TopicHandler;
    rpc: TopicHandler;
    claim: TopicHandler;
  };
  provision?: TopicHandler<ProvisionSession>;
}

export type Route =
  | { kind: 'device'; handler: TopicHandler; requestId?: number }
  | { kind: 'provision'; handler: TopicHandler<ProvisionSession> }
  | { kind: 'refused'; reason: string };

const ID = '(\\d{1,9})';
const DEVICE_PATTERNS: [RegExp, keyof Omit<DeviceApiHandlers, 'gateway' | 'provision'>][] = [
  [/^(?:v1\/devices\/me\/telemetry|v2\/t|v2\/t\/j)$/, 'telemetry'],
  [/^(?:v1\/devices\/me\/attributes|v2\/a|v2\/a\/j)$/, 'attributes'],
  [new RegExp(`^(?:v1/devices/me/attributes/request/|v2/a/req/)${ID}$`), 'attributesRequest'],
  [new RegExp(`^(?:v1/devices/me/rpc/response/|v2/r/res/)${ID}$`), 'rpcResponse'],
  [new RegExp(`^(?:v1/devices/me/rpc/request/|v2/r/req/)${ID}$`), 'rpcRequest'],
  [/^(?:v1\/devices\/me\/claim|v2\/c|v2\/c\/j)$/, 'claim'],
  [/^v2\/(?:fw|sw)\/request\/(\d+)\/chunk\/\d+$/, 'otaRequest'],
];
const GATEWAY_TOPICS: Record<string, keyof NonNullable<DeviceApiHandlers['gateway']>> = {
  'v1/gateway/connect': 'connect',
  'v1/gateway/disconnect': 'disconnect',
  'v1/gateway/telemetry': 'telemetry',
  'v1/gateway/attributes': 'attributes',
  'v1/gateway/attributes/request': 'attributesRequest',
  'v1/gateway/rpc': 'rpc',
  'v1/gateway/claim': 'claim',
};

// ThingsBoard topics GuanLink does not implement yet: refused as any unsupported topic, but named.
const NOT_IMPLEMENTED: [RegExp, string][] = [
  [/^v2\/[tac]\/p$/, 'protobuf payloads (v2/…/p) are not supported; send JSON'],
];

/**
 * The PUBACK a device's publish to an unsupported topic gets: the connection stays open (ThingsBoard,
 * MqttTransportHandler processPublish: an unknown topic is acknowledged with reason 0x90 "topic
 * name invalid" under MQTT 5, a plain PUBACK under 3.1.1). The one place that chooses it: the
 * broker sends the plain PUBACK, and tells the MQTT 5 front end (mqtt5/front-end.ts) to send 0x90.
 */
export const UNSUPPORTED_TOPIC_PUBACK = { mqtt311: 'plain PUBACK', mqtt5ReasonCode: 0x90 } as const;

/**
 * Access control and routing of what a client publishes: a device only under `v1/devices/me/…`
 * (and ThingsBoard's `v2/…` short forms), a gateway also under `v1/gateway/…`, a provisioning
 * session only to `/provision/request`. Anything else is refused.
 */
export function routePublish(handlers: DeviceApiHandlers, session: Session, topic: string): Route {
  if (session.kind === 'provision') {
    if (topic === '/provision/request' && handlers.provision) return { kind: 'provision', handler: handlers.provision };
    return { kind: 'refused', reason: `a provisioning session may only publish to /provision/request` };
  }
  if (session.kind === 'application') return { kind: 'refused', reason: `an application session may not publish; it subscribes to ${PLATFORM_EVENTS_PREFIX}…` };
  if (topic.startsWith('v1/gateway/')) {
    const family = GATEWAY_TOPICS[topic];
    if (!family || !handlers.gateway) return { kind: 'refused', reason: `${topic} is not part of the gateway API` };
    if (!session.device.isGateway) return { kind: 'refused', reason: `device ${session.device.name} is not a gateway: v1/gateway/… is refused` };
    return { kind: 'device', handler: handlers.gateway[family] };
  }
  for (const [pattern, family] of DEVICE_PATTERNS) {
    const match = pattern.exec(topic);
    if (!match) continue;
    const handler = handlers[family];
    if (!handler) return { kind: 'refused', reason: `${topic} is not served` };
    return match[1] === undefined ? { kind: 'device', handler } : { kind: 'device', handler, requestId: Number(match[1]) };
  }
  for (const [pattern, reason] of NOT_IMPLEMENTED) if (pattern.test(topic)) return { kind: 'refused', reason: `${topic}: ${reason}` };
  return { kind: 'refused', reason: `${topic} is outside the device API (v1/devices/me/…)` };
}

const DEVICE_SUBSCRIPTIONS = new Set([
  'v1/devices/me/errors',
  'v1/devices/me/attributes',
  'v1/devices/me/attributes/response/+',
  'v1/devices/me/rpc/request/+',
  'v1/devices/me/rpc/response/+',
  'v2/a',
  'v2/a/res/+',
  'v2/r/req/+',
  'v2/r/res/+',
  // Firmware and software chunks and errors (ThingsBoard MqttTopics DEVICE_FIRMWARE_RESPONSES_TOPIC …).
  // Chunks are written to the device's connection whatever it subscribed to, as ThingsBoard does:
  // the python SDK subscribes to `v2/fw/response/+` (refused, as by ThingsBoard) and still gets them.
  'v2/fw/response/+/chunk/+',
  'v2/fw/error',
  'v2/sw/response/+/chunk/+',
  'v2/sw/error',
]);
const GATEWAY_SUBSCRIPTIONS = new Set(['v1/gateway/attributes', 'v1/gateway/attributes/response', 'v1/gateway/rpc']);

// Beyond ThingsBoard (which takes only the `+` filters): the response topic of one request id, so
// that request/response clients such as `mosquitto_rr -e v1/devices/me/attributes/response/1`
// work. A device still receives only what is sent to its own connection.
const RESPONSE_BY_ID = new RegExp(`^(?:v1/devices/me/attributes/response/|v1/devices/me/rpc/response/|v2/a/res/|v2/r/res/)${ID}$`);
// The same for one OTA chunk (`mosquitto_rr -e v2/fw/response/1/chunk/0`).
const OTA_CHUNK_BY_ID = /^v2\/(?:fw|sw)\/response\/\d+\/chunk\/\d+$/;

/** Platform events (geofences, alarms…) are published under this prefix, to application sessions only. */
export const PLATFORM_EVENTS_PREFIX = 'guanlink/events/';

/** Topic filters a client may subscribe to; everything else gets SUBACK failure (0x80). */
export function maySubscribe(session: Session, topic: string): boolean {
  if (session.kind === 'provision') return topic === '/provision/response';
  if (session.kind === 'application') return topic.startsWith(PLATFORM_EVENTS_PREFIX);
  return DEVICE_SUBSCRIPTIONS.has(topic) || RESPONSE_BY_ID.test(topic) || OTA_CHUNK_BY_ID.test(topic) || (session.device.isGateway && GATEWAY_SUBSCRIPTIONS.has(topic));
}

/** The ThingsBoard topics a message to a device goes out on: its v1 name, or the v2 short form when the device subscribed to that. */
export const OUTBOUND = {
  attributes: { v1: 'v1/devices/me/attributes', v2: 'v2/a', filterV2: 'v2/a' },
  attributesResponse: { v1: 'v1/devices/me/attributes/response/', v2: 'v2/a/res/', filterV2: 'v2/a/res/+' },
  rpcRequest: { v1: 'v1/devices/me/rpc/request/', v2: 'v2/r/req/', filterV2: 'v2/r/req/+' },
  rpcResponse: { v1: 'v1/devices/me/rpc/response/', v2: 'v2/r/res/', filterV2: 'v2/r/res/+' },
} as const;

/** The topic (with `suffix`, e.g. a request id) a device expects a message of this kind on. */
export function outboundTopic(session: Session, kind: keyof typeof OUTBOUND, suffix = ''): string {
  const t = OUTBOUND[kind];
  return `${session.subscriptions.has(t.filterV2) ? t.v2 : t.v1}${suffix}`;
}
