import { Readable } from 'node:stream';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { Access } from '../../core/access/access.ts';
import { CHECKSUM_ALGORITHMS } from '../../core/ota/checksum.ts';
import { OtaError, OTA_TYPES, type OtaPackage, type OtaPackages, type OtaType } from '../../core/ota/packages.ts';
import type { OtaAssignments } from '../../core/ota/assignments.ts';
import type { OtaCampaigns } from '../../core/ota/campaigns.ts';
import type { OtaDeviceStates } from '../../core/ota/device-states.ts';
import type { DeviceRegistry } from '../../core/registry.ts';
import { noDevice } from '../registry-errors.ts';
import { DeviceIdParams, ErrorResponse, Int32After, Int32Id, Limit, SafeName, SafeText } from '../schemas.ts';

const OtaTypeSchema = Type.Enum(OTA_TYPES, { description: 'FIRMWARE (fw_* attributes, v2/fw/…) or SOFTWARE (sw_*, v2/sw/…)' });
const ChecksumAlgorithmSchema = Type.Enum(CHECKSUM_ALGORITHMS, { description: "ThingsBoard's checksum algorithms" });

const Package = Type.Object({
  id: Type.Integer(),
  type: OtaTypeSchema,
  title: Type.String(),
  version: Type.String(),
  deviceType: Type.Union([Type.String(), Type.Null()], { description: 'only for devices of this type; null: any' }),
  checksumAlgorithm: ChecksumAlgorithmSchema,
  checksum: Type.Union([Type.String(), Type.Null()], { description: 'lower-case hex as ThingsBoard writes it; null until uploaded when none was given' }),
  fileName: Type.String(),
  contentType: Type.String(),
  size: Type.Union([Type.Integer(), Type.Null()], { description: 'bytes; null until the data is uploaded' }),
  createdAt: Type.String({ format: 'date-time' }),
  uploadedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
});

const NewPackage = Type.Object(
  {
    type: OtaTypeSchema,
    title: SafeName(255),
    version: SafeName(255),
    deviceType: Type.Optional(Type.Union([SafeName(100), Type.Null()], { description: 'the device type it is for (ThingsBoard: device profile); assignment to other types is refused' })),
    checksumAlgorithm: Type.Optional(Type.Enum(CHECKSUM_ALGORITHMS, { default: 'SHA256', description: "ThingsBoard's checksum algorithms (default SHA256)" })),
    checksum: Type.Optional(Type.Union([Type.String({ pattern: '^[0-9a-fA-F]{8,128}$' }), Type.Null()], { description: 'hex; the upload is refused when the data does not match it. Omitted: computed on upload' })),
    fileName: Type.Optional(SafeName(255, { description: 'sent to HTTP downloads (Content-Disposition); default: the title' })),
    contentType: Type.Optional(Type.String({ pattern: '^[a-zA-Z0-9!#$&^_.+-]+/[a-zA-Z0-9!#$&^_.+-]+$', maxLength: 255, description: 'default application/octet-stream' })),
  },
  { additionalProperties: false },
);

const IdParams = Type.Object({ id: Int32Id() });
const TypeParam = Type.Union([Type.Literal('firmware'), Type.Literal('software')]);
const toOtaType = (t: 'firmware' | 'software'): OtaType => (t === 'firmware' ? 'FIRMWARE' : 'SOFTWARE');

const Campaign = Type.Object({
  id: Type.Integer(),
  packageId: Type.Integer(),
  devicesPerMinute: Type.Integer(),
  status: Type.Union([Type.Literal('running'), Type.Literal('done'), Type.Literal('cancelled')]),
  devices: Type.Integer({ description: 'devices in the campaign' }),
  assigned: Type.Integer({ description: 'devices given the package so far' }),
  createdBy: Type.String(),
  createdAt: Type.String({ format: 'date-time' }),
  finishedAt: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
});

const Rollout = Type.Object({
  package: Package,
  targeted: Type.Integer({ description: 'devices (in your scope) whose target is this package: their own assignment, else their type’s' }),
  states: Type.Record(Type.String(), Type.Integer(), {
    description: 'targeted devices by the state they last reported for this package (fw_state / sw_state): QUEUED (nothing yet), INITIATED, DOWNLOADING, DOWNLOADED, VERIFIED, UPDATING, UPDATED, FAILED',
  }),
  versions: Type.Array(Type.Object({ title: Type.Union([Type.String(), Type.Null()]), version: Type.Union([Type.String(), Type.Null()]), devices: Type.Integer() }), {
    description: 'targeted devices by what they report running (current_fw_title / current_fw_version); null: not reported',
  }),
  failures: Type.Array(Type.Object({ deviceId: Type.Integer(), deviceName: Type.String(), error: Type.Union([Type.String(), Type.Null()]), at: Type.String({ format: 'date-time' }) }), {
    description: 'targeted devices whose last state is FAILED, with the fw_error they reported (most recent first, at most 100)',
  }),
  campaigns: Type.Array(Campaign, { description: 'its campaigns (at most 100)' }),
});


const STATUS: Record<OtaError['code'], [number, string]> = {
  invalid: [400, 'Bad Request'],
  not_found: [404, 'Not Found'],
  conflict: [409, 'Conflict'],
  too_large: [413, 'Payload Too Large'],
};

async function otaErrorHandler(err: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  if (!(err instanceof OtaError)) throw err;
  const [statusCode, error] = STATUS[err.code];
  // An upload refused before its end: the rest of the body is not read, so the connection cannot carry another request.
  if (!request.raw.complete) reply.header('connection', 'close');
  return reply.code(statusCode).send({ statusCode, error, message: err.message });
}

/**
 * Firmware and software updates (OTA), ThingsBoard's model: packages (created, then their data
 * uploaded once, streamed and checked), assigned to a device type and/or a device (the device's
 * own wins), or rolled out to devices at a rate (campaigns); the rollout view counts what the
 * targeted devices report.
 */
export const otaRoutes: FastifyPluginAsyncTypebox<{
  packages: OtaPackages;
  assignments: OtaAssignments;
  campaigns: OtaCampaigns;
  states: OtaDeviceStates;
  registry: DeviceRegistry;
  access: Access;
  maxPackageBytes: number;
}> = async (app, { packages, assignments, campaigns, states, registry, access, maxPackageBytes }) => {
  app.setErrorHandler(otaErrorHandler);
  // The package data is read by its route, streamed: this parser hands the request over unread.
  app.addContentTypeParser('application/octet-stream', (_request, _payload, done) => done(null, undefined));

  const packageOr404 = async (id: number): Promise<OtaPackage> => {
    const pkg = await packages.get(id);
    if (!pkg) throw new OtaError('not_found', `no OTA package ${id}`);
    return pkg;
  };

  app.post(
    '/ota/packages',
    {
      config: { permission: 'ota:write' },
      schema: {
        summary: 'Create an OTA package (its data is uploaded next, with PUT …/data)',
        tags: ['ota'],
        body: NewPackage,
        response: { 201: Package, 400: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      const b = request.body;
      if (b.deviceType != null && !registry.deviceType(b.deviceType)) throw new OtaError('invalid', `deviceType: no device type "${b.deviceType}"`);
      const pkg = await packages.create({ ...b, checksumAlgorithm: b.checksumAlgorithm ?? 'SHA256' });
      return reply.code(201).send(pkg);
    },
  );

  app.get(
    '/ota/packages',
    {
      config: { permission: 'read' },
      schema: {
        summary: 'List OTA packages (cursor pagination by id)',
        tags: ['ota'],
        querystring: Type.Object({
          type: Type.Optional(OtaTypeSchema),
          title: Type.Optional(SafeText(255)),
          limit: Limit(1000, { default: 100 }),
          after: Type.Optional(Int32After()),
        }),
        response: { 200: Type.Object({ items: Type.Array(Package), nextAfter: Type.Union([Type.Integer(), Type.Null()]) }), 400: ErrorResponse },
      },
    },
    async (request) => {
      const { type, title, limit, after } = request.query;
      const items = await packages.list({ type, title, limit, afterId: after });
      request.auditRows = items.length;
      return { items, nextAfter: items.length === limit ? items[items.length - 1]!.id : null };
    },
  );

  app.get(
    '/ota/packages/:id',
    { config: { permission: 'read' }, schema: { summary: 'An OTA package', tags: ['ota'], params: IdParams, response: { 200: Package, 404: ErrorResponse } } },
    async (request) => packageOr404(request.params.id),
  );

  app.put(
    '/ota/packages/:id/data',
    {
      config: { permission: 'ota:write' },
      schema: {
        summary: "Upload a package's data (once), as the request body (application/octet-stream, streamed)",
        description:
          'Checked while it arrives: at most OTA_MAX_PACKAGE_BYTES (413), not empty, and its checksum equal to the one given at creation (400); otherwise nothing is kept. Without a checksum at creation, it is computed now.',
        tags: ['ota'],
        params: IdParams,
        consumes: ['application/octet-stream'],
        body: Type.Unknown({ description: 'the package file' }),
        response: { 200: Package, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 413: ErrorResponse, 415: ErrorResponse },
      },
    },
    async (request, reply) => {
      if (!/^application\/octet-stream\b/i.test(request.headers['content-type'] ?? '')) {
        return reply.code(415).send({ statusCode: 415, error: 'Unsupported Media Type', message: 'send the package as the body, Content-Type: application/octet-stream' });
      }
      const declared = Number(request.headers['content-length']);
      if (Number.isFinite(declared) && declared > maxPackageBytes) throw new OtaError('too_large', `the package is larger than OTA_MAX_PACKAGE_BYTES (${maxPackageBytes} bytes)`);
      return packages.upload(request.params.id, request.raw);
    },
  );

  app.get(
    '/ota/packages/:id/data',
    {
      // Firmware images can hold what a device maker keeps from others: only whoever manages updates reads them back.
      config: { permission: 'ota:write' },
      schema: {
        summary: "Download a package's data",
        tags: ['ota'],
        params: IdParams,
        response: { 200: Type.Unknown({ description: 'the package file (Content-Disposition: attachment)' }), 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const pkg = await packageOr404(request.params.id);
      if (pkg.size === null) throw new OtaError('not_found', `OTA package ${pkg.id} has no data yet`);
      return reply
        .type(pkg.contentType)
        .header('content-length', pkg.size)
        .header('content-disposition', `attachment; filename="${pkg.fileName.replace(/["\\\r\n]/g, '_')}"`)
        .send(Readable.from(packages.stream(pkg.id)));
    },
  );

  app.delete(
    '/ota/packages/:id',
    {
      config: { permission: 'ota:write' },
      schema: { summary: 'Delete an OTA package (refused while assigned or in a running campaign)', tags: ['ota'], params: IdParams, response: { 200: Package, 404: ErrorResponse, 409: ErrorResponse } },
    },
    async (request) => packages.delete(request.params.id),
  );

  app.get(
    '/ota/packages/:id/rollout',
    {
      config: { permission: 'read' },
      schema: { summary: "A package's rollout: the targeted devices by state and by running version, the failures, its campaigns", tags: ['ota'], params: IdParams, response: { 200: Rollout, 404: ErrorResponse } },
    },
    async (request) => {
      const pkg = await packageOr404(request.params.id);
      const visible = await access.visibleDevices(request.principal);
      const [rollout, own] = await Promise.all([states.rollout(pkg, visible), campaigns.list({ packageId: pkg.id, limit: 100 })]);
      return { package: pkg, ...rollout, campaigns: own };
    },
  );

  app.get(
    '/ota/assignments',
    {
      config: { permission: 'read' },
      schema: {
        summary: 'Packages assigned to device types',
        tags: ['ota'],
        response: { 200: Type.Array(Type.Object({ deviceType: Type.String(), type: OtaTypeSchema, packageId: Type.Integer(), assignedAt: Type.String({ format: 'date-time' }) })) },
      },
    },
    async () => assignments.typeAssignments(),
  );

  const TypeAssignmentParams = Type.Object({ deviceType: SafeName(100) });
  app.put(
    '/ota/assignments/:deviceType',
    {
      config: { permission: 'ota:write' },
      schema: {
        summary: "Assign a package to a device type: every device of the type without its own assignment is told (fw_* / sw_* shared attributes)",
        tags: ['ota'],
        params: TypeAssignmentParams,
        body: Type.Object({ packageId: Int32Id() }, { additionalProperties: false }),
        response: { 200: Type.Object({ deviceType: Type.String(), type: OtaTypeSchema, packageId: Type.Integer(), devicesTold: Type.Integer() }), 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => {
      const { deviceType } = request.params;
      if (!registry.deviceType(deviceType)) throw new OtaError('not_found', `no device type "${deviceType}"`);
      const pkg = await packageOr404(request.body.packageId);
      const { devices } = await assignments.assignDeviceType(deviceType, pkg.id);
      return { deviceType, type: pkg.type, packageId: pkg.id, devicesTold: devices };
    },
  );

  app.delete(
    '/ota/assignments/:deviceType/:type',
    {
      config: { permission: 'ota:write' },
      schema: {
        summary: "Remove a device type's package: its devices without their own are told they have none",
        tags: ['ota'],
        params: Type.Object({ deviceType: SafeName(100), type: TypeParam }),
        response: { 200: Type.Object({ deviceType: Type.String(), type: OtaTypeSchema, devicesTold: Type.Integer() }), 404: ErrorResponse },
      },
    },
    async (request) => {
      const type = toOtaType(request.params.type);
      const { devices } = await assignments.unassignDeviceType(request.params.deviceType, type);
      return { deviceType: request.params.deviceType, type, devicesTold: devices };
    },
  );

  const DeviceOta = Type.Object({
    assignments: Type.Array(
      Type.Object({
        type: OtaTypeSchema,
        own: Type.Union([Type.Integer(), Type.Null()], { description: "the device's own package" }),
        deviceType: Type.Union([Type.Integer(), Type.Null()], { description: "its device type's package" }),
        target: Type.Union([Type.Integer(), Type.Null()], { description: 'the package it should run: its own, else its type’s' }),
      }),
    ),
    states: Type.Array(
      Type.Object({
        type: OtaTypeSchema,
        packageId: Type.Union([Type.Integer(), Type.Null()]),
        state: Type.Union([Type.String(), Type.Null()]),
        currentTitle: Type.Union([Type.String(), Type.Null()]),
        currentVersion: Type.Union([Type.String(), Type.Null()]),
        error: Type.Union([Type.String(), Type.Null()]),
        updatedAt: Type.String({ format: 'date-time' }),
      }),
    ),
  });

  app.get(
    '/devices/:id/ota',
    { config: { permission: 'read' }, schema: { summary: "A device's packages and what it reported of its updates", tags: ['ota'], params: DeviceIdParams, response: { 200: DeviceOta, 404: ErrorResponse } } },
    async (request, reply) => {
      const { id } = request.params;
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const [own, reported] = await Promise.all([assignments.ofDevice(id), states.ofDevice(id)]);
      return { assignments: own, states: reported };
    },
  );

  app.put(
    '/devices/:id/ota',
    {
      config: { permission: 'ota:write' },
      schema: {
        summary: 'Assign a package to a device (overrides its type’s); the device is told through its fw_* / sw_* shared attributes',
        tags: ['ota'],
        params: DeviceIdParams,
        body: Type.Object({ packageId: Int32Id() }, { additionalProperties: false }),
        response: { 200: Type.Object({ deviceId: Type.Integer(), type: OtaTypeSchema, packageId: Type.Integer() }), 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      const device = await registry.get(id);
      if (!device) return reply.code(404).send(noDevice(id));
      const pkg = await assignments.assignDevice(device, request.body.packageId);
      return { deviceId: id, type: pkg.type, packageId: pkg.id };
    },
  );

  app.delete(
    '/devices/:id/ota/:type',
    {
      config: { permission: 'ota:write' },
      schema: {
        summary: "Remove a device's own package: it follows its type's again (or has none)",
        tags: ['ota'],
        params: Type.Object({ id: DeviceIdParams.properties.id, type: TypeParam }),
        response: { 200: Type.Object({ deviceId: Type.Integer(), type: OtaTypeSchema }), 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { id } = request.params;
      if (!(await registry.get(id))) return reply.code(404).send(noDevice(id));
      const type = toOtaType(request.params.type);
      await assignments.unassignDevice(id, type);
      return { deviceId: id, type };
    },
  );

  app.post(
    '/ota/campaigns',
    {
      config: { permission: 'ota:write' },
      schema: {
        summary: 'Roll a package out to devices (listed, or every device of a type in your scope), N devices per minute',
        tags: ['ota'],
        body: Type.Object(
          {
            packageId: Int32Id(),
            deviceIds: Type.Optional(Type.Array(Int32Id(), { minItems: 1, maxItems: 100_000, description: 'in rollout order' })),
            deviceType: Type.Optional(SafeName(100, { description: 'every device of this type (in your scope), by id' })),
            devicesPerMinute: Type.Integer({ minimum: 1, maximum: 100_000 }),
          },
          { additionalProperties: false },
        ),
        response: { 201: Campaign, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { packageId, deviceIds, deviceType, devicesPerMinute } = request.body;
      if ((deviceIds === undefined) === (deviceType === undefined)) throw new OtaError('invalid', 'give deviceIds or deviceType (one of them)');
      const visible = await access.visibleDevices(request.principal);
      let ids: number[];
      if (deviceIds) {
        const hidden = visible === null ? [] : deviceIds.filter((id) => !visible.has(id));
        if (hidden.length > 0) throw new OtaError('invalid', `deviceIds: no device ${hidden.slice(0, 20).join(', ')}`);
        ids = deviceIds;
      } else {
        if (!registry.deviceType(deviceType!)) throw new OtaError('invalid', `deviceType: no device type "${deviceType}"`);
        ids = (await registry.deviceIdsOfType(deviceType!)).filter((id) => visible === null || visible.has(id));
        if (ids.length === 0) throw new OtaError('invalid', `deviceType: no device of type "${deviceType}" in your scope`);
      }
      const campaign = await campaigns.create({ packageId, deviceIds: ids, devicesPerMinute, createdBy: request.principal.id });
      return reply.code(201).send(campaign);
    },
  );

  app.get(
    '/ota/campaigns',
    {
      config: { permission: 'read' },
      schema: {
        summary: 'OTA campaigns (cursor pagination by id)',
        tags: ['ota'],
        querystring: Type.Object({ packageId: Type.Optional(Int32Id()), limit: Limit(1000, { default: 100 }), after: Type.Optional(Int32After()) }),
        response: { 200: Type.Object({ items: Type.Array(Campaign), nextAfter: Type.Union([Type.Integer(), Type.Null()]) }), 400: ErrorResponse },
      },
    },
    async (request) => {
      const { packageId, limit, after } = request.query;
      const items = await campaigns.list({ packageId, limit, afterId: after });
      return { items, nextAfter: items.length === limit ? items[items.length - 1]!.id : null };
    },
  );

  app.get(
    '/ota/campaigns/:id',
    { config: { permission: 'read' }, schema: { summary: 'An OTA campaign and its progress', tags: ['ota'], params: IdParams, response: { 200: Campaign, 404: ErrorResponse } } },
    async (request) => {
      const campaign = await campaigns.get(request.params.id);
      if (!campaign) throw new OtaError('not_found', `no OTA campaign ${request.params.id}`);
      return campaign;
    },
  );

  app.post(
    '/ota/campaigns/:id/cancel',
    {
      config: { permission: 'ota:write' },
      schema: { summary: 'Stop a running campaign (devices already assigned keep the package)', tags: ['ota'], params: IdParams, response: { 200: Campaign, 404: ErrorResponse, 409: ErrorResponse } },
    },
    async (request) => campaigns.cancel(request.params.id),
  );
};
