import { Type, type Static } from 'typebox';
import { Domain } from '../core/domains.ts';

/** Schemas shared by several routes; each route's own schemas live beside it. */

/**
 * Every answer ≥ 400: RFC 9457 problem details (`application/problem+json`, api/problem.ts), with
 * `statusCode`, `error` and `message` kept as extension members. type, title, status, detail and
 * instance are always sent; they are optional here only because routes send the older members and
 * api/problem.ts completes the body.
 */
export const ErrorResponse = Type.Object(
  {
    type: Type.Optional(Type.String({ description: 'RFC 9457: a URI reference of the problem type; "about:blank" (no semantics beyond the status)' })),
    title: Type.Optional(Type.String({ description: "RFC 9457: the status code's phrase" })),
    status: Type.Optional(Type.Integer({ description: 'RFC 9457: the HTTP status code' })),
    detail: Type.Optional(Type.String({ description: 'RFC 9457: what is wrong, for a person (the same as message)' })),
    instance: Type.Optional(Type.String({ description: "RFC 9457: this occurrence, urn:uuid:<request id>: the server log's reqId (the reference to quote)" })),
    statusCode: Type.Integer({ description: 'the HTTP status code (as status)' }),
    error: Type.String({ description: 'the status phrase (as title)' }),
    message: Type.String({ description: 'what is wrong (as detail)' }),
    code: Type.Optional(Type.String({ description: 'a machine-readable reason, where the route has one (e.g. FST_ERR_VALIDATION)' })),
    permission: Type.Optional(Type.String({ description: 'on a 403: the permission the credential lacks' })),
  },
  { description: 'RFC 9457 problem details (application/problem+json)' },
);

/** The body of a 400: `message` says exactly what is wrong. */
export const badRequest = (message: string) => ({ statusCode: 400, error: 'Bad Request', message });

/*
 * Parameter schemas every route uses for what a client sends (path, query string, body), so that
 * nothing a client can send reaches the database outside what its columns hold:
 *  - integers with the range of their column (int4 ids, int8 ids, page sizes);
 *  - numbers with explicit bounds — and finite: ajv's type coercion turns the query text
 *    "Infinity" into Infinity and then skips minimum/maximum for it, so api/input-guard.ts refuses
 *    every non-finite number after validation, in any route;
 *  - text without NUL (PostgreSQL's text and jsonb cannot hold U+0000) and without unpaired UTF-16
 *    surrogates (not Unicode text: jsonb refuses them, text would silently get U+FFFD) — the
 *    pattern says so in the OpenAPI document, and api/input-guard.ts checks every string and
 *    member name of every request, including JSON values no schema describes (RPC params, attributes).
 */

/** Largest value of a PostgreSQL integer (int4) column. */
export const INT32_MAX = 2_147_483_647;

/**
 * Text as GuanLink stores it: no U+0000 and no unpaired surrogate. ajv compiles patterns with the
 * `u` flag, where a surrogate pair is one code point (outside U+D800–U+DFFF) and a lone surrogate
 * is a code point inside it.
 */
export const SAFE_TEXT_PATTERN = '^[^\\u0000\\uD800-\\uDFFF]*$';
/** A name or short label: no control characters either (C0 and DEL), and not empty. */
export const SAFE_NAME_PATTERN = '^[^\\u0000-\\u001f\\u007f\\uD800-\\uDFFF]+$';

type StringOptions = Parameters<typeof Type.String>[0];
type IntegerOptions = Parameters<typeof Type.Integer>[0];
type NumberOptions = Parameters<typeof Type.Number>[0];

/** Free text of at most `maxLength` characters (descriptions, notes, filters). */
export const SafeText = (maxLength: number, options: StringOptions = {}) => Type.String({ maxLength, pattern: SAFE_TEXT_PATTERN, ...options });
/** A name of 1–`maxLength` characters without control characters. */
export const SafeName = (maxLength: number, options: StringOptions = {}) => Type.String({ minLength: 1, maxLength, pattern: SAFE_NAME_PATTERN, ...options });

/** An id in an int4 column (devices, geofences, alarm rules, API keys, provision keys): 1 … 2³¹ − 1. */
export const Int32Id = (options: IntegerOptions = {}) => Type.Integer({ minimum: 1, maximum: INT32_MAX, ...options });
/** An id in an int8 column (alarms, commands, audit entries): 1 … 2⁵³ − 1, the integers a JSON number holds exactly. */
export const Int64Id = (options: IntegerOptions = {}) => Type.Integer({ minimum: 1, maximum: Number.MAX_SAFE_INTEGER, ...options });
/** A page cursor over an int4 id: the last id of the previous page, 0 for the first. */
export const Int32After = (options: IntegerOptions = {}) => Type.Integer({ minimum: 0, maximum: INT32_MAX, ...options });
/** Items per page: 1 … `max`. */
export const Limit = (max: number, options: IntegerOptions = {}) => Type.Integer({ minimum: 1, maximum: max, ...options });
/** A number within [minimum, maximum] (both required: a number without bounds is a number the database may refuse). */
export const BoundedNumber = (minimum: number, maximum: number, options: NumberOptions = {}) => Type.Number({ minimum, maximum, ...options });

export const Location = Type.Object(
  {
    lat: Type.Number({ minimum: -90, maximum: 90 }),
    lng: Type.Number({ minimum: -180, maximum: 180 }),
    alt: Type.Optional(Type.Number({ minimum: -12000, maximum: 100000000, description: 'metres' })),
  },
  { additionalProperties: false },
);

export const Device = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  label: Type.Union([Type.String(), Type.Null()], { description: 'free text shown with the name' }),
  type: Type.String(),
  domain: Domain,
  location: Type.Union([Location, Type.Null()]),
  isGateway: Type.Boolean({ description: 'may publish for sub-devices on v1/gateway/…' }),
  gatewayId: Type.Union([Type.Integer(), Type.Null()], { description: 'the gateway this sub-device belongs to' }),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});
export type Device = Static<typeof Device>;

/** A device's unique name: 1–200 characters, no control characters. */
export const DeviceName = SafeName(200);
export const DeviceLabel = SafeText(200);

export const DeviceIdParams = Type.Object({ id: Int32Id() });

export const TelemetryValue = Type.Unknown({
  description: 'a number, or one of ThingsBoard\'s other value types as the device sent it: a string, a boolean, or a JSON object or array (aggregates are numbers)',
});

export const Point = Type.Object({ ts: Type.Integer({ description: 'epoch milliseconds' }), value: TelemetryValue });
