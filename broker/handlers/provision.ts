import type { PublishPacket } from 'aedes';
import type { Logger } from '../../core/log.ts';
import type { Provisioning, ProvisionResponse } from '../../core/provisioning.ts';
import type { DeliverToSession, ProvisionSession } from '../session.ts';

export const PROVISION_RESPONSE_TOPIC = '/provision/response';

/**
 * `/provision/request` of a provisioning session (CONNECT with username or client id `provision`,
 * no password): ThingsBoard's device provisioning. The answer goes to this session only, on
 * `/provision/response` (`{"credentialsValue", "credentialsType", "status": "SUCCESS"}`, or
 * `{"errorMsg", "status": "NOT_FOUND" | "FAILURE"}`), and the session is closed `closeAfterMs`
 * later (ThingsBoard: 60 s), whatever the outcome. A payload that is not JSON is answered with a
 * FAILURE (ThingsBoard closes the connection without an answer).
 */
export function provisionHandler(opts: { provisioning: Provisioning; deliverToSession: DeliverToSession; closeAfterMs: number; log: Logger }) {
  return async (session: ProvisionSession, packet: PublishPacket): Promise<void> => {
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
    let request: unknown;
    let response: ProvisionResponse;
    try {
      request = JSON.parse(payload.toString('utf8'));
    } catch {
      request = undefined;
    }
    if (request === undefined) {
      opts.log.info({ address: session.address }, 'provisioning refused: the request is not JSON');
      response = { errorMsg: 'Failed to provision device! The request is not valid JSON', status: 'FAILURE' };
    } else {
      response = await opts.provisioning.provision(request, { address: session.address, via: 'mqtt' });
    }
    await opts.deliverToSession(session, PROVISION_RESPONSE_TOPIC, JSON.stringify(response));
    session.answered = true;
    const timer = setTimeout(() => session.client.close(), opts.closeAfterMs);
    timer.unref();
  };
}
