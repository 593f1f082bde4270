import { isUtf8 } from 'node:buffer';
import type { Rejection } from '../ingest/readings.ts';
import { describeValue } from '../ingest/telemetry-payload.ts';
import { ATTRIBUTE_LIMITS, attributeUpdateMessage, type AttributeChange, type AttributeValues, type Json } from './attributes.ts';

/**
 * ThingsBoard's gateway MQTT API, its messages only (pure functions; the sessions are in
 * core/gateways.ts, the handlers in broker/handlers/gateway.ts). A gateway is a device whose
 * payloads are keyed by sub-device *name*. ThingsBoard's transport (AbstractGatewaySessionHandler,
 * JsonConverter) is the authority for the shapes; where GuanLink is more lenient it says so.
 */

export const GATEWAY_TOPICS = {
  connect: 'v1/gateway/connect',
  disconnect: 'v1/gateway/disconnect',
  telemetry: 'v1/gateway/telemetry',
  attributes: 'v1/gateway/attributes',
  attributesRequest: 'v1/gateway/attributes/request',
  attributesResponse: 'v1/gateway/attributes/response',
  rpc: 'v1/gateway/rpc',
} as const;

/** A device name as the REST API accepts it: 1–200 characters, no control characters. */
export const MAX_DEVICE_NAME_LENGTH = 200;

type Parsed<T> = ({ ok: true } & T) | { ok: false; error: Rejection };

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Why a sub-device name is unusable, or undefined. */
export function deviceNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string') return `a device name must be a string, got ${describeValue(name)}`;
  if (name.length === 0) return 'the device name is empty';
  if (name.length > MAX_DEVICE_NAME_LENGTH) return `the device name is ${name.length} characters; at most ${MAX_DEVICE_NAME_LENGTH}`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'the device name contains control characters';
  if (!name.isWellFormed()) return 'the device name is not well-formed Unicode (lone surrogate)';
  return undefined;
}

/** JSON text (UTF-8, at most `maxBytes`) holding one object. */
export function parseJsonObject(payload: Buffer, maxBytes: number, expected: string): Parsed<{ doc: Record<string, unknown>; text: string }> {
  if (payload.length > maxBytes) return { ok: false, error: { reason: 'payload_too_large', detail: `payload is ${payload.length} bytes; the limit is ${maxBytes}` } };
  if (!isUtf8(payload)) return { ok: false, error: { reason: 'invalid_json', detail: 'payload is not valid UTF-8 (JSON text must be UTF-8)' } };
  const text = payload.toString('utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { ok: false, error: { reason: 'invalid_json', detail: `payload is not JSON: ${(err as Error).message}` } };
  }
  if (!isPlainObject(doc)) return { ok: false, error: { reason: 'invalid_shape', detail: `expected a JSON object such as ${expected}, got ${describeValue(doc)}` } };
  return { ok: true, doc, text };
}

/**
 * `v1/gateway/connect`: `{"device": "Name", "type": "optional type"}`. ThingsBoard: a missing or
 * null type means the default (its device profile "default"; GuanLink's GATEWAY_DEFAULT_DEVICE_TYPE);
 * an empty one too.
 */
export function parseConnect(payload: Buffer, maxBytes: number): Parsed<{ device: string; type: string | undefined }> {
  const parsed = parseJsonObject(payload, maxBytes, '{"device": "Pump 7", "type": "generic"}');
  if (!parsed.ok) return parsed;
  const { device, type } = parsed.doc;
  const problem = deviceNameProblem(device);
  if (problem) return { ok: false, error: { reason: device === undefined ? 'invalid_shape' : 'invalid_device_name', detail: device === undefined ? '"device" (the sub-device name) is missing' : problem } };
  if (type !== undefined && type !== null && typeof type !== 'string') {
    return { ok: false, error: { reason: 'invalid_shape', detail: `"type" must be a device type name, got ${describeValue(type)}` } };
  }
  return { ok: true, device: device as string, type: typeof type === 'string' && type.length > 0 ? type : undefined };
}

/** `v1/gateway/disconnect`: `{"device": "Name"}`. */
export function parseDisconnect(payload: Buffer, maxBytes: number): Parsed<{ device: string }> {
  const parsed = parseJsonObject(payload, maxBytes, '{"device": "Pump 7"}');
  if (!parsed.ok) return parsed;
  const problem = deviceNameProblem(parsed.doc.device);
  if (problem) {
    return { ok: false, error: { reason: parsed.doc.device === undefined ? 'invalid_shape' : 'invalid_device_name', detail: parsed.doc.device === undefined ? '"device" (the sub-device name) is missing' : problem } };
  }
  return { ok: true, device: parsed.doc.device as string };
}

/** One sub-device's part of a gateway telemetry or attributes message. */
export interface DeviceEntry {
  device: string;
  /** The parsed value. */
  value: unknown;
  /** The value exactly as sent (its JSON text): ingest parses it as a device's own payload. */
  raw: string;
}

/**
 * `v1/gateway/telemetry` and `v1/gateway/attributes`: one JSON object keyed by sub-device name.
 * Returns each device's part with its raw text (a name sent twice: the last, as JSON.parse does).
 * More than `maxDevices` names refuses the whole message (`too_many_values`).
 */
export function splitByDevice(payload: Buffer, maxBytes: number, maxDevices: number, expected: string): Parsed<{ entries: DeviceEntry[] }> {
  const parsed = parseJsonObject(payload, maxBytes, expected);
  if (!parsed.ok) return parsed;
  const names = Object.keys(parsed.doc);
  if (names.length === 0) return { ok: false, error: { reason: 'empty', detail: 'no device in the message' } };
  if (names.length > maxDevices) {
    return { ok: false, error: { reason: 'too_many_values', detail: `${names.length} devices in one message; at most ${maxDevices} (GATEWAY_MAX_DEVICES_PER_MESSAGE)` } };
  }
  const raw = new Map(topLevelMembers(parsed.text));
  return { ok: true, entries: names.map((device) => ({ device, value: parsed.doc[device], raw: raw.get(device)! })) };
}

/**
 * The members of a JSON text's top-level object as [key, raw value text] pairs, in order (a key
 * sent twice appears twice; a Map of them keeps the last, as JSON.parse does). `text` must be
 * valid JSON whose top level is an object (check with JSON.parse first).
 */
export function topLevelMembers(text: string): [string, string][] {
  const members: [string, string][] = [];
  let i = 0;
  const ws = () => {
    while (i < text.length && (text[i] === ' ' || text[i] === '\t' || text[i] === '\n' || text[i] === '\r')) i++;
  };
  /** From an opening quote to just past its closing quote. */
  const skipString = () => {
    i++;
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    i++;
  };
  const skipValue = () => {
    const c = text[i];
    if (c === '"') return skipString();
    if (c === '{' || c === '[') {
      let depth = 0;
      do {
        const d = text[i];
        if (d === '"') {
          skipString();
          continue;
        }
        if (d === '{' || d === '[') depth++;
        else if (d === '}' || d === ']') depth--;
        i++;
      } while (depth > 0);
      return;
    }
    while (i < text.length && !',}] \t\n\r'.includes(text[i]!)) i++; // number, true, false, null
  };
  ws();
  i++; // {
  for (;;) {
    ws();
    if (text[i] === '}') break;
    const keyStart = i;
    skipString();
    const key = JSON.parse(text.slice(keyStart, i)) as string;
    ws();
    i++; // :
    ws();
    const valueStart = i;
    skipValue();
    members.push([key, text.slice(valueStart, i)]);
    ws();
    if (text[i] === ',') i++;
  }
  return members;
}

/** What a gateway asks for on `v1/gateway/attributes/request`. */
export type GatewayAttributeRequest =
  /**
   * ThingsBoard's transport (and thingsboard-gateway): `{"id", "device", "client": true|false,
   * "key": "k"}` or `"keys": ["a", "b"]`; `client: false` is the shared scope. Answered with
   * `"value"` (key) or `"values"` (keys).
   */
  | { form: 'scope'; id: number; device: string; scope: 'client' | 'shared'; keys: string[]; multiple: boolean }
  /** ThingsBoard's newer documentation: `{"id", "device", "client": ["a"], "shared": ["b"]}`, answered per scope. */
  | { form: 'scopes'; id: number; device: string; clientKeys?: string[]; sharedKeys?: string[] };

function keyList(raw: unknown, field: string): string[] | Rejection {
  let keys: string[];
  if (typeof raw === 'string') keys = raw.split(',');
  else if (Array.isArray(raw) && raw.every((k) => typeof k === 'string')) keys = raw as string[];
  else return { reason: 'invalid_shape', detail: `"${field}" must be a key or a list of keys, got ${describeValue(raw)}` };
  return [...new Set(keys.map((k) => k.trim()).filter((k) => k.length > 0))];
}

/** A JSON integer id (ThingsBoard reads it with getAsInt: a numeric string works too). */
function requestId(raw: unknown): number | undefined {
  const n = typeof raw === 'number' ? raw : typeof raw === 'string' && /^\s*-?\d{1,10}\s*$/.test(raw) ? Number(raw) : Number.NaN;
  return Number.isSafeInteger(n) && n >= -2_147_483_648 && n <= 2_147_483_647 ? n : undefined;
}

/**
 * `v1/gateway/attributes/request`. Both shapes ThingsBoard has used are accepted (see
 * GatewayAttributeRequest). Leniencies: a missing `client` means shared (ThingsBoard refuses the
 * message); `"key": "a,b"` (older SDKs join keys with commas) asks for both keys.
 */
export function parseAttributeRequest(payload: Buffer, maxBytes: number): Parsed<{ request: GatewayAttributeRequest }> {
  const parsed = parseJsonObject(payload, maxBytes, '{"id": 1, "device": "Pump 7", "client": true, "key": "fw"}');
  if (!parsed.ok) return parsed;
  const doc = parsed.doc;
  const id = requestId(doc.id);
  if (id === undefined) return { ok: false, error: { reason: 'invalid_shape', detail: `"id" must be an integer request id, got ${describeValue(doc.id)}` } };
  const problem = deviceNameProblem(doc.device);
  if (problem) return { ok: false, error: { reason: doc.device === undefined ? 'invalid_shape' : 'invalid_device_name', detail: doc.device === undefined ? '"device" is missing' : problem } };
  const device = doc.device as string;
  const tooMany = (n: number): Rejection | undefined =>
    n > ATTRIBUTE_LIMITS.maxKeysPerMessage ? { reason: 'too_many_values', detail: `${n} keys asked for; the limit is ${ATTRIBUTE_LIMITS.maxKeysPerMessage}` } : undefined;

  if (Array.isArray(doc.client) || Array.isArray(doc.shared)) {
    const request: GatewayAttributeRequest = { form: 'scopes', id, device };
    for (const [field, target] of [
      ['client', 'clientKeys'],
      ['shared', 'sharedKeys'],
    ] as const) {
      if (doc[field] === undefined || doc[field] === null) continue;
      const keys = keyList(doc[field], field);
      if (!Array.isArray(keys)) return { ok: false, error: keys };
      request[target] = keys;
    }
    const error = tooMany((request.clientKeys?.length ?? 0) + (request.sharedKeys?.length ?? 0));
    return error ? { ok: false, error } : { ok: true, request };
  }

  const client = doc.client;
  if (client !== undefined && client !== null && typeof client !== 'boolean' && client !== 'true' && client !== 'false') {
    return { ok: false, error: { reason: 'invalid_shape', detail: `"client" must be true (client attributes) or false (shared), got ${describeValue(client)}` } };
  }
  const scope = client === true || client === 'true' ? 'client' : 'shared';
  const field = doc.key !== undefined && doc.key !== null ? 'key' : doc.keys !== undefined && doc.keys !== null ? 'keys' : undefined;
  if (!field) return { ok: false, error: { reason: 'invalid_shape', detail: 'give "key": "name" or "keys": ["a", "b"]' } };
  const keys = keyList(doc[field], field);
  if (!Array.isArray(keys)) return { ok: false, error: keys };
  if (keys.length === 0) return { ok: false, error: { reason: 'invalid_shape', detail: `"${field}" names no key` } };
  const error = tooMany(keys.length);
  if (error) return { ok: false, error };
  return { ok: true, request: { form: 'scope', id, device, scope, keys, multiple: field === 'keys' || keys.length > 1 } };
}

/**
 * ThingsBoard's answer on `v1/gateway/attributes/response` (JsonConverter.getJsonObjectForGateway):
 * `{"id", "device", "value": v}` for one key asked with `key`, `{"id", "device", "values": {…}}`
 * for `keys`; nothing found: only id and device.
 */
export function attributeResponse(request: Extract<GatewayAttributeRequest, { form: 'scope' }>, found: AttributeValues): Record<string, Json> {
  const response: Record<string, Json> = { id: request.id, device: request.device };
  const keys = Object.keys(found);
  if (keys.length === 1 && !request.multiple) response.value = found[keys[0]!]!;
  else if (keys.length > 0) response.values = found;
  return response;
}

/** The newer form's answer: `{"id", "device", "client": {…}, "shared": {…}}`, empty scopes left out. */
export function scopesResponse(id: number, device: string, found: { client?: AttributeValues; shared?: AttributeValues }): Record<string, Json> {
  const response: Record<string, Json> = { id, device };
  if (found.client && Object.keys(found.client).length > 0) response.client = found.client;
  if (found.shared && Object.keys(found.shared).length > 0) response.shared = found.shared;
  return response;
}

/**
 * A gateway's answer to a command on `v1/gateway/rpc`: `{"device": "Name", "id": 12, "data": …}`.
 * `data` is passed on as its JSON text (ThingsBoard: `data.toString()`), so any JSON value works.
 */
export function parseRpcResponse(payload: Buffer, maxBytes: number): Parsed<{ device: string; id: number; data: Buffer }> {
  const parsed = parseJsonObject(payload, maxBytes, '{"device": "Pump 7", "id": 12, "data": {"ok": true}}');
  if (!parsed.ok) return parsed;
  const doc = parsed.doc;
  const problem = deviceNameProblem(doc.device);
  if (problem) return { ok: false, error: { reason: doc.device === undefined ? 'invalid_shape' : 'invalid_device_name', detail: doc.device === undefined ? '"device" is missing' : problem } };
  const id = requestId(doc.id);
  if (id === undefined || id < 1) return { ok: false, error: { reason: 'invalid_shape', detail: `"id" must be the command's id (a positive integer), got ${describeValue(doc.id)}` } };
  if (!('data' in doc)) return { ok: false, error: { reason: 'invalid_shape', detail: '"data" (the answer) is missing' } };
  const raw = new Map(topLevelMembers(parsed.text)).get('data')!;
  return { ok: true, device: doc.device as string, id, data: Buffer.from(raw) };
}

/** A command to a sub-device, as the gateway receives it on `v1/gateway/rpc`. */
export function rpcRequestMessage(device: string, request: { requestId: number; method: string; params: unknown }): string {
  return JSON.stringify({ device, data: { id: request.requestId, method: request.method, params: request.params } });
}

/** A sub-device's shared-attribute change, as the gateway receives it on `v1/gateway/attributes`. */
export function attributeUpdateForGateway(device: string, change: AttributeChange): string {
  return JSON.stringify({ device, data: attributeUpdateMessage(change) });
}
