import { Type, type Static } from 'typebox';
import { Domain } from '../core/domains.ts';

/** Schemas shared by several routes; each route's own schemas live beside it. */

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String(),
  permission: Type.Optional(Type.String({ description: 'on a 403: the permission the credential lacks' })),
});

/** The body of a 400: `message` says exactly what is wrong. */
export const badRequest = (message: string) => ({ statusCode: 400, error: 'Bad Request', message });

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
export const DeviceName = Type.String({ minLength: 1, maxLength: 200, pattern: '^[^\\u0000-\\u001f\\u007f]+$' });
export const DeviceLabel = Type.String({ maxLength: 200 });

export const DeviceIdParams = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2147483647 }) });

export const Point = Type.Object({ ts: Type.Integer({ description: 'epoch milliseconds' }), value: Type.Number() });
