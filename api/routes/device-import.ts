import { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { stringify } from 'csv-stringify/sync';
import { Type, type Static } from 'typebox';
import type { Device, DeviceFilter, DeviceRegistry } from '../../core/registry.ts';
import { MAX_IMPORT_ROWS, csvImportEntries, jsonImportEntries, markDuplicateNames, type ImportEntry } from '../device-import.ts';
import { DeviceFilterQuery, toDeviceFilter, withinScope } from '../device-filter.ts';
import type { Access } from '../../core/access/access.ts';
import { registryErrorHandler } from '../registry-errors.ts';
import { ErrorResponse } from '../schemas.ts';

const ImportReport = Type.Object({
  totals: Type.Object({ rows: Type.Integer(), created: Type.Integer(), updated: Type.Integer(), unchanged: Type.Integer(), errors: Type.Integer() }),
  ms: Type.Integer({ description: 'time the import took' }),
  rows: Type.Array(
    Type.Object({
      row: Type.Integer({ description: 'JSON: the array index (from 0); CSV: the line number (the header is line 1)' }),
      name: Type.Union([Type.Null(), Type.String()]),
      status: Type.Union([Type.Literal('created'), Type.Literal('updated'), Type.Literal('unchanged'), Type.Literal('error')]),
      id: Type.Optional(Type.Integer()),
      accessToken: Type.Optional(Type.String({ description: 'new devices only; shown only here' })),
      error: Type.Optional(Type.String()),
    }),
  ),
});
type ImportReport = Static<typeof ImportReport>;

const CSV_HEADER = ['id', 'name', 'type', 'domain', 'label', 'lat', 'lng', 'alt', 'isGateway', 'gatewayId', 'createdAt', 'updatedAt'];
const csvRow = (d: Device) => [
  d.id,
  d.name,
  d.type,
  d.domain,
  d.label,
  d.location?.lat ?? null,
  d.location?.lng ?? null,
  d.location?.alt ?? null,
  d.isGateway,
  d.gatewayId,
  d.createdAt,
  d.updatedAt,
];
const toCsv = (rows: unknown[][]): string => stringify(rows, { cast: { boolean: (b) => String(b) } });
const EXPORT_PAGE = 1000;

/** Bulk import (JSON or CSV, idempotent by name) and streamed export of the registry. */
export const deviceImportRoutes: FastifyPluginAsyncTypebox<{ registry: DeviceRegistry; access: Access }> = async (app, { registry, access }) => {
  app.setErrorHandler(registryErrorHandler);
  app.addContentTypeParser('text/csv', { parseAs: 'string' }, (_request, body, done) => done(null, body));

  app.post(
    '/devices/import',
    {
      bodyLimit: 32 * 1024 * 1024,
      config: { permission: 'devices:write' }, schema: {
        summary: 'Create or update many devices (JSON or CSV), by name',
        description:
          'JSON (application/json): an array of `{name, type?, label?, location? | lat?, lng?, alt?, isGateway?}`. ' +
          'CSV (text/csv): a header row `name,type,label,lat,lng,alt,isGateway` (only name is required; any order), one device per row. ' +
          'An export can be imported as it is (its other fields are ignored). ' +
          'A device whose name exists is updated if its description differs, else unchanged (its credentials are kept); a new one is created and its ' +
          `accessToken is in the report (shown only here). Invalid rows are reported and never stop the others. At most ${MAX_IMPORT_ROWS} rows.`,
        tags: ['devices'],
        body: {
          content: {
            'application/json': { schema: Type.Array(Type.Unknown(), { maxItems: MAX_IMPORT_ROWS }) },
            'text/csv': { schema: Type.String() },
          },
        },
        response: { 200: ImportReport, 400: ErrorResponse },
      },
    },
    async (request) => {
      access.requireUnscoped(request.principal, 'bulk import');
      const started = performance.now();
      const body = request.body as unknown[] | string; // checked per content type by the schema above
      const entries: ImportEntry[] = typeof body === 'string' ? csvImportEntries(body) : jsonImportEntries(body);
      markDuplicateNames(entries);
      const valid = entries.filter((e) => e.input !== undefined);
      const outcomes = await registry.importDevices(valid.map((e) => e.input!));
      const report: ImportReport = { totals: { rows: entries.length, created: 0, updated: 0, unchanged: 0, errors: 0 }, ms: 0, rows: [] };
      const outcomeOf = new Map(valid.map((e, i) => [e, outcomes[i]!]));
      for (const entry of entries) {
        const outcome = outcomeOf.get(entry);
        if (!outcome || outcome.status === 'error') {
          report.totals.errors++;
          report.rows.push({ row: entry.row, name: entry.name, status: 'error', error: outcome?.status === 'error' ? outcome.error : entry.error! });
          continue;
        }
        report.totals[outcome.status]++;
        const line = { row: entry.row, name: outcome.device.name, status: outcome.status, id: outcome.device.id };
        report.rows.push(outcome.status === 'created' ? { ...line, accessToken: outcome.accessToken } : line);
      }
      report.ms = Math.round(performance.now() - started);
      request.log.info({ ...report.totals, ms: report.ms }, 'devices imported');
      return report;
    },
  );

  app.get(
    '/devices/export',
    {
      config: { permission: 'read', concurrency: 'export' }, schema: {
        summary: 'Every device (no credentials), streamed as JSON or CSV',
        description:
          'Same filters as the list. JSON: an array of devices as the list gives them; CSV: id,name,type,domain,label,lat,lng,alt,isGateway,gatewayId,createdAt,updatedAt. ' +
          'Either can be imported again. Devices are read in pages: changes made during the export may or may not be in it.',
        tags: ['devices'],
        produces: ['application/json', 'text/csv'],
        querystring: Type.Object({ ...DeviceFilterQuery.properties, format: Type.Union([Type.Literal('json'), Type.Literal('csv')], { default: 'json' }) }),
        response: { 200: Type.Unknown({ description: 'a JSON array of devices, or CSV with a header row' }), 400: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { format, ...query } = request.query;
      const filter = await withinScope(toDeviceFilter(query, registry), access, request.principal);
      const pages = devicePages(registry, filter);
      const body =
        format === 'csv'
          ? (async function* () {
              yield toCsv([CSV_HEADER]);
              for await (const page of pages) yield toCsv(page.map(csvRow));
            })()
          : (async function* () {
              let first = true;
              yield '[';
              for await (const page of pages) {
                yield `${first ? '\n' : ',\n'}${page.map((d) => JSON.stringify(d)).join(',\n')}`;
                first = false;
              }
              yield '\n]\n';
            })();
      return reply
        .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/json; charset=utf-8')
        .header('content-disposition', `attachment; filename="devices.${format}"`)
        .send(Readable.from(body));
    },
  );
};

/** The devices matching a filter, a page at a time in id order. */
async function* devicePages(registry: DeviceRegistry, filter: DeviceFilter): AsyncGenerator<Device[]> {
  for (let after = 0; ; ) {
    const page = await registry.list({ ...filter, limit: EXPORT_PAGE, afterId: after });
    if (page.length > 0) yield page;
    if (page.length < EXPORT_PAGE) return;
    after = page[page.length - 1]!.id;
  }
}
