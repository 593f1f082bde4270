import type { PublishPacket } from 'aedes';
import type { Logger } from '../../core/log.ts';
import { keyPrefix, type OtaPackage, type OtaType } from '../../core/ota/packages.ts';
import type { DeliverToSession, DeviceSession } from '../session.ts';

/**
 * `v2/fw/request/{requestId}/chunk/{n}` and `v2/sw/request/{requestId}/chunk/{n}` (ThingsBoard
 * MqttTopics DEVICE_FIRMWARE_REQUEST_TOPIC_PATTERN: request id and chunk are digits).
 */
export const OTA_REQUEST_TOPIC = /^v2\/(fw|sw)\/request\/(\d+)\/chunk\/(\d+)$/;

/**
 * Where every OTA error goes, for software too: ThingsBoard's sendOtaPackageError always
 * publishes on MqttTopics.DEVICE_FIRMWARE_ERROR_TOPIC.
 */
export const OTA_ERROR_TOPIC = 'v2/fw/error';

/** The error texts ThingsBoard sends (MqttTransportHandler PAYLOAD_TOO_LARGE; TransportProtos.ResponseStatus names). */
export const OTA_ERRORS = { payloadTooLarge: 'PAYLOAD_TOO_LARGE', notFound: 'NOT_FOUND' } as const;

/** Request ids remembered per session (ThingsBoard keeps every one for the session's life; a bound here). */
const TRANSFERS_PER_SESSION = 16;

/** java.lang.Integer.parseInt: an optional sign, decimal digits, within int32; null where it would throw. */
export function parseJavaInt(text: string): number | null {
  if (!/^[+-]?\d+$/.test(text)) return null;
  const n = Number(text);
  return n >= -2_147_483_648 && n <= 2_147_483_647 ? n : null;
}

interface Transfer {
  /** The chunk size the device last asked for under this request id (0: the whole package). */
  chunkSize: number;
  /** The package resolved by the first request of this id: later chunks come from it, whatever is assigned meanwhile. */
  pkg?: OtaPackage;
}

export interface OtaRequestDeps {
  /** The package a device should run now (core/ota/assignments.ts target). */
  target: (deviceId: number, type: OtaType) => Promise<OtaPackage | undefined>;
  /** Bytes of a package's data (core/ota/packages.ts read). */
  read: (packageId: number, offset: number, length: number) => Promise<Buffer>;
  deliverToSession: DeliverToSession;
  /** Ends the session: after an error (`ota_error`, MQTT 5 DISCONNECT 0x83) or for numbers Java cannot parse (`ota_bad_request`, 0x8B as ThingsBoard). */
  close: (session: DeviceSession, reason: 'ota_error' | 'ota_bad_request') => void;
  /** The largest chunk a device may ask for: the payload size getSessionLimits reports. */
  maxPayloadSize: number;
  log: Logger;
}

/**
 * A device downloads its target package in chunks, as ThingsBoard serves it
 * (MqttTransportHandler getOtaPackageCallback / sendOtaPackage / sendOtaPackageError):
 *  - the payload is the chunk size in bytes as decimal text; empty (or ≤ 0) means the size given
 *    earlier under the same request id, else 0: the whole package in one message;
 *  - the first request of an id resolves the device's target package of that type and keeps it
 *    for the id (a later change of assignment applies to a new request id);
 *  - chunk n holds bytes [n·size, (n+1)·size) on `v2/{fw|sw}/response/{requestId}/chunk/{n}`;
 *    the last is shorter, and a chunk past the end is empty (OtaPackageDataCache.get);
 *  - a chunk size above the session's payload limit gets `PAYLOAD_TOO_LARGE`, a device with no
 *    package of that type `NOT_FOUND`, on `v2/fw/error`; then the session is closed, the request
 *    unacknowledged;
 *  - a payload or chunk number Java's Integer.parseInt refuses closes the session, with no
 *    answer (ThingsBoard: the NumberFormatException reaches exceptionCaught, which closes the
 *    session with SERVER_SHUTTING_DOWN).
 * GuanLink differs in one place: a whole-package request (size 0) for a package larger than the
 * payload limit gets PAYLOAD_TOO_LARGE instead of a message no client would take.
 */
export function otaRequestHandler(deps: OtaRequestDeps) {
  const transfers = new WeakMap<DeviceSession, Map<string, Transfer>>();

  const fail = async (session: DeviceSession, error: string, detail: string) => {
    deps.log.info({ device: session.device.id, error, detail }, 'OTA request refused; session closed');
    await deps.deliverToSession(session, OTA_ERROR_TOPIC, error);
    deps.close(session, 'ota_error');
  };

  return async (session: DeviceSession, packet: PublishPacket): Promise<void> => {
    const match = OTA_REQUEST_TOPIC.exec(packet.topic);
    if (!match) throw new Error(`not an OTA request topic: ${packet.topic}`); // routed here by device-api.ts only when it is
    const type: OtaType = match[1] === 'fw' ? 'FIRMWARE' : 'SOFTWARE';
    const requestId = match[2]!;
    const payload = (typeof packet.payload === 'string' ? packet.payload : packet.payload.toString('utf8')).trim();
    const asked = payload === '' ? 0 : parseJavaInt(payload);
    const chunk = parseJavaInt(match[3]!);
    if (asked === null || chunk === null) {
      deps.log.info({ device: session.device.id, topic: packet.topic }, 'OTA request with a chunk size or number that is not a 32-bit integer; session closed');
      deps.close(session, 'ota_bad_request');
      return;
    }

    let mine = transfers.get(session);
    if (!mine) transfers.set(session, (mine = new Map()));
    let transfer = mine.get(requestId);
    if (!transfer) {
      if (mine.size >= TRANSFERS_PER_SESSION) mine.delete(mine.keys().next().value!);
      mine.set(requestId, (transfer = { chunkSize: 0 }));
    }
    if (asked > 0) transfer.chunkSize = asked;
    const chunkSize = transfer.chunkSize;
    if (chunkSize > deps.maxPayloadSize) return fail(session, OTA_ERRORS.payloadTooLarge, `chunk size ${chunkSize} > ${deps.maxPayloadSize}`);

    transfer.pkg ??= await deps.target(session.device.id, type);
    const pkg = transfer.pkg;
    if (!pkg || pkg.size === null) {
      mine.delete(requestId);
      return fail(session, OTA_ERRORS.notFound, `device ${session.device.id} has no ${type.toLowerCase()} assigned`);
    }
    if (chunkSize === 0 && pkg.size > deps.maxPayloadSize) {
      return fail(session, OTA_ERRORS.payloadTooLarge, `whole package of ${pkg.size} bytes asked for (chunk size 0) > ${deps.maxPayloadSize}`);
    }
    let data: Buffer;
    try {
      data = chunkSize === 0 ? await deps.read(pkg.id, 0, pkg.size) : await deps.read(pkg.id, chunk * chunkSize, chunkSize);
    } catch (err) {
      if ((err as { code?: string }).code !== 'not_found') throw err;
      mine.delete(requestId);
      return fail(session, OTA_ERRORS.notFound, `package ${pkg.id} was deleted`);
    }
    await deps.deliverToSession(session, `v2/${keyPrefix(type)}/response/${requestId}/chunk/${chunk}`, data);
  };
}
