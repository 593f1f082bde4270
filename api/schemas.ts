import { Type, type Static } from 'typebox';
import { Domain } from '../core/domains.ts';

/** Schemas shared by several routes; each route's own schemas live beside it. */

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String(),
});

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
  type: Type.String(),
  domain: Domain,
  location: Type.Union([Location, Type.Null()]),
  createdAt: Type.String({ format: 'date-time' }),
  updatedAt: Type.String({ format: 'date-time' }),
});
export type Device = Static<typeof Device>;

export const DeviceIdParams = Type.Object({ id: Type.Integer({ minimum: 1, maximum: 2147483647 }) });

export const Point = Type.Object({ ts: Type.Integer({ description: 'epoch milliseconds' }), value: Type.Number() });
