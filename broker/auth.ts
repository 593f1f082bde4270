import { AccessError, type Access } from '../core/access/access.ts';
import type { Principal } from '../core/access/principal.ts';
import { credentialId, describeRefusal, type Attempt, type AuthThrottle } from '../core/auth-throttle.ts';
import type { DeviceAuthOutcome, DeviceRegistry, DeviceContext } from '../core/registry.ts';

/** The MQTT username of application sessions (operators' systems subscribing to platform events). */
export const APPLICATION_USERNAME = 'guanlink-app';

export type AuthResult =
  | { kind: 'device'; device: DeviceContext; method: 'token' | 'basic' }
  | { kind: 'provision' }
  /** An operator's system: may only subscribe to `guanlink/events/…` (see device-api.ts), and gets only the events of its scope. */
  | { kind: 'application'; principal: Principal }
  /** CONNACK return code (MQTT 3.1.1): 2 identifier rejected, 5 not authorized; throttled: refused unchecked after too many failures (MQTT 5: 0x9F). */
  | { kind: 'refused'; returnCode: 2 | 5; reason: string; throttled?: true };

export interface ConnectCredentials {
  clientId: string;
  username: string | undefined;
  password: Buffer | undefined;
  /** The client's address (failed attempts are throttled per address). */
  address?: string | undefined;
}

/**
 * ThingsBoard's rules for a CONNECT (see README), after GuanLink's own application session
 * (username `guanlink-app`, password an API key, an OpenID Connect access token or the bootstrap
 * admin key, with the `live` permission; see README "Platform events over MQTT"):
 * - username or client id `provision`, no password: a provisioning session (no credentials yet);
 * - a username and a password: MQTT basic credentials (the stored client id, if any, must match);
 * - a username alone: an access token;
 * - neither: a client id registered alone as basic credentials.
 * Refusals use ThingsBoard's codes: 5 (not authorized) for bad credentials, 2 (identifier
 * rejected) for a client id that matches nothing when no username was given.
 *
 * Failed attempts are throttled (core/auth-throttle.ts) per source address and per credential (the
 * token, the username, the client id): once blocked, a CONNECT whose credentials this node has not
 * verified before is refused at once with CONNACK 5 — no database query, no scrypt — until the
 * backoff ends. (5, not 3 "server unavailable": the credentials were not accepted, and clients
 * retry 3 at once; the CONNACK carries no reason in MQTT 3.1.1, the log says why.)
 */
export function createAuthenticator(registry: DeviceRegistry, options: { access?: Access; throttle?: AuthThrottle } = {}) {
  const throttle = options.throttle;
  /** The registry's outcome as an AuthResult; failures and successes reported to the throttle. */
  const settle = (attempt: Attempt, method: 'token' | 'basic', outcome: DeviceAuthOutcome, refusal: { returnCode: 2 | 5; reason: string }): AuthResult => {
    if (outcome.ok) {
      throttle?.succeeded(attempt);
      return { kind: 'device', device: outcome.device, method };
    }
    if (outcome.reason === 'throttled') return { kind: 'refused', returnCode: 5, reason: `throttled: ${describeRefusal(outcome.admission, 'credential')}`, throttled: true };
    throttle?.failed(attempt, outcome.reason);
    return { kind: 'refused', ...refusal };
  };
  const gate = (attempt: Attempt) => (throttle ? { admit: () => throttle.admit(attempt) } : {});

  return async ({ clientId, username, password, address }: ConnectCredentials): Promise<AuthResult> => {
    const secret = password && password.length > 0 ? password.toString('utf8') : undefined;
    // GuanLink's application session: username `guanlink-app`, a credential as password (checked
    // by core/access like any REST request). The username is reserved: it never falls through to
    // the device rules below.
    if (username === APPLICATION_USERNAME) {
      if (!options.access) return { kind: 'refused', returnCode: 5, reason: `${APPLICATION_USERNAME}: application sessions are not enabled` };
      if (secret === undefined) {
        return { kind: 'refused', returnCode: 5, reason: `${APPLICATION_USERNAME}: no password: send an API key, an OpenID Connect access token or the admin key` };
      }
      try {
        const principal = await options.access.authenticate(secret, { source: address, via: 'mqtt' });
        options.access.require(principal, 'live');
        return { kind: 'application', principal };
      } catch (err) {
        if (err instanceof AccessError) return { kind: 'refused', returnCode: 5, reason: `${APPLICATION_USERNAME}: ${err.message}` };
        throw err;
      }
    }
    if ((username === 'provision' || clientId === 'provision') && secret === undefined) return { kind: 'provision' };
    if (username && secret !== undefined) {
      const attempt: Attempt = { via: 'mqtt', source: address, credential: credentialId('username', username) };
      return settle(attempt, 'basic', await registry.authenticateBasic(clientId, username, secret, gate(attempt)), { returnCode: 5, reason: 'unknown username or wrong password' });
    }
    if (username) {
      const attempt: Attempt = { via: 'mqtt', source: address, credential: credentialId('token', username) };
      return settle(attempt, 'token', await registry.authenticate(username, gate(attempt)), { returnCode: 5, reason: 'unknown access token' });
    }
    const refusal = { returnCode: 2, reason: 'no credentials: send the access token as the MQTT username' } as const;
    if (!clientId) {
      throttle?.counted('mqtt', 'no_credentials');
      return { kind: 'refused', ...refusal };
    }
    const attempt: Attempt = { via: 'mqtt', source: address, credential: credentialId('client', clientId) };
    return settle(attempt, 'basic', await registry.authenticateBasic(clientId, undefined, undefined, gate(attempt)), refusal);
  };
}
