import type { EndReason } from '../session.ts';

/**
 * MQTT 5.0 reason codes GuanLink sends (MQTT 5.0 §2.4, Table 2-6), with the choices ThingsBoard
 * makes (MqttTransportHandler, ReturnCodeResolver; thingsboard.io/docs/reference/mqtt-v5-errors-code).
 */
export const REASON = {
  success: 0x00,
  disconnectWithWill: 0x04,
  unspecifiedError: 0x80,
  malformedPacket: 0x81,
  protocolError: 0x82,
  implementationSpecificError: 0x83,
  unsupportedProtocolVersion: 0x84,
  clientIdentifierNotValid: 0x85,
  badUserNameOrPassword: 0x86,
  notAuthorized: 0x87,
  serverUnavailable: 0x88,
  serverBusy: 0x89,
  serverShuttingDown: 0x8b,
  badAuthenticationMethod: 0x8c,
  keepAliveTimeout: 0x8d,
  sessionTakenOver: 0x8e,
  topicFilterInvalid: 0x8f,
  topicNameInvalid: 0x90,
  receiveMaximumExceeded: 0x93,
  topicAliasInvalid: 0x94,
  packetTooLarge: 0x95,
  messageRateTooHigh: 0x96,
  quotaExceeded: 0x97,
  administrativeAction: 0x98,
  qosNotSupported: 0x9b,
  retainNotSupported: 0x9a,
  sharedSubscriptionsNotSupported: 0x9e,
  connectionRateExceeded: 0x9f,
} as const;

/**
 * The v5 CONNACK reason of a refusal the broker answered with an MQTT 3.1.1 return code, as
 * ThingsBoard chooses it when credentials are not found (onValidateDeviceResponse): bad user name
 * or password (0x86) when a user name or password was sent, else client identifier not valid
 * (0x85) when a client id was, else not authorized (0x87). Return code 3 (server unavailable) is 0x88.
 */
export function connectRefusal(returnCode: number, connect: { username?: string; password?: Buffer; clientId: string }): number {
  switch (returnCode) {
    case 1:
      return REASON.unsupportedProtocolVersion;
    case 3:
      return REASON.serverUnavailable;
    case 2:
    case 4:
    case 5:
      if (connect.username !== undefined || connect.password !== undefined) return REASON.badUserNameOrPassword;
      return connect.clientId.trim() !== '' ? REASON.clientIdentifierNotValid : REASON.notAuthorized;
    default:
      return REASON.unspecifiedError;
  }
}

/** The reason of the DISCONNECT a v5 client gets when the server ends its session (MQTT 5.0 §3.14.2.1). */
export function disconnectReason(end: EndReason | undefined): number {
  switch (end) {
    case 'provisioned':
      return REASON.success; // 0x00 Normal disconnection [MQTT-3.14.2.1]
    case 'taken_over':
      return REASON.sessionTakenOver;
    case 'server_shutdown':
      return REASON.serverShuttingDown;
    case 'rate_limited':
      return REASON.messageRateTooHigh;
    case 'keepalive_timeout':
      return REASON.keepAliveTimeout;
    case 'protocol_error':
      return REASON.protocolError;
    case 'ota_error':
      return REASON.implementationSpecificError; // ThingsBoard sendOtaPackageError: closeCtx(IMPLEMENTATION_SPECIFIC_ERROR)
    case 'ota_bad_request':
      // ThingsBoard: Integer.parseInt's NumberFormatException reaches exceptionCaught, which closes
      // every session it sees fail with SERVER_SHUTTING_DOWN.
      return REASON.serverShuttingDown;
    case 'deleted':
    case 'credentials_changed':
      return REASON.administrativeAction;
    default:
      return REASON.unspecifiedError;
  }
}
