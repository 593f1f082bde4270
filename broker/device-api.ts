import type { PublishPacket } from 'aedes';
import type { Session } from './session.ts';

export type TopicHandler = (session: Session, packet: PublishPacket) => Promise<void>;

export interface DeviceApiRoutes {
  telemetry: TopicHandler;
}

/**
 * The device API's topic table (ThingsBoard-compatible; see README). Returns the handler for a
 * topic a device publishes to, or undefined for a topic outside the API.
 */
export function routePublish(routes: DeviceApiRoutes, topic: string): TopicHandler | undefined {
  switch (topic) {
    case 'v1/devices/me/telemetry':
    case 'v2/t':
    case 'v2/t/j':
      return routes.telemetry;
    default:
      return undefined;
  }
}

/** Topic filters a device may subscribe to; everything else gets SUBACK failure (0x80). */
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
]);

export function maySubscribe(topic: string): boolean {
  return DEVICE_SUBSCRIPTIONS.has(topic);
}
