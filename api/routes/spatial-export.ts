import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyBaseLogger, FastifyReply } from 'fastify';
import type { ServerResponse } from 'node:http';
import { stringify } from 'csv-stringify/sync';
import { Type, type Static } from 'typebox';
import type { NonNumericValue, TelemetryValue } from '../../ingest/readings.ts';
import { exportBatches, selectionKeyIds, type ExportRow } from '../../db/spatial-export.ts';
import { QUERY_CANCELED, resolveSelection, runHeavy, selectsNothing, withSpatialSession, withinScope, type SpatialDeps } from '../../db/spatial-query.ts';
import type { Scope } from '../../core/access/scope.ts';
import { MAX_WINDOW_DAYS, SelectionError, SelectionFields, geometryRefusal, parseSelectionWith, type SelectionInput } from '../spatial-selection.ts';

/** Window when `from` is left out: the 24 hours before `to`. */
const DEFAULT_SPAN_MS = 24 * 3_600_000;
/**
 * Exports running at once; each holds one database connection for as long as its client reads, so
 * more would starve ingest and the other queries of the pool. Beyond it: 503 with Retry-After.
 */
export const MAX_CONCURRENT_EXPORTS = 4;

/** Rows formatted into one string and written at once (~30–70 KB). */
const WRITE_ROWS = 250;

const FORMATS = ['ndjson', 'csv', 'geojson'] as const;
type ExportFormat = (typeof FORMATS)[number];
const Format = Type.Union([Type.Literal('ndjson'), Type.Literal('csv'), Type.Literal('geojson')], {
  description: 'ndjson (default): one JSON object per line; csv: a header row, one row per reading, a column per key; geojson: a FeatureCollection of Points',
});

const ExportQuery = Type.Object({ ...SelectionFields, format: Type.Optional(Format) });
const FormatQuery = Type.Object({ format: Type.Optional(Format) });

/** `code` of the errors answered before the export starts. */
export const EXPORT_ERRORS = ['invalid_selection', 'too_many_exports', 'query_timeout'] as const;
type ExportErrorCode = (typeof EXPORT_ERRORS)[number];
const ExportError = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String({ description: `${EXPORT_ERRORS.join(', ')}, area_too_complex (413), geometry_busy, geometry_timeout (503), or FST_ERR_VALIDATION` })),
  error: Type.String(),
  message: Type.String(),
});

const CONTENT_TYPES: Record<ExportFormat, string> = {
  ndjson: 'application/x-ndjson; charset=utf-8',
  csv: 'text/csv; charset=utf-8; header=present',
  geojson: 'application/geo+json; charset=utf-8',
};

/** The columns (CSV) and properties (GeoJSON) every row has; a telemetry key of one of these names is written as `values.<key>`. */
export const FIXED_COLUMNS = ['deviceId', 'name', 'type', 'domain', 'time', 'ts', 'lat', 'lng', 'alt', 'cell'] as const;
const FIXED = new Set<string>(FIXED_COLUMNS);
const keyColumn = (key: string): string => (FIXED.has(key) ? `values.${key}` : key);

/** 20261126T080000Z: an instant for a file name. */
const compact = (d: Date): string => d.toISOString().replace(/\.\d{3}Z$/, 'Z').replaceAll('-', '').replaceAll(':', '');

/** The client went away: stop reading, roll back, release the connection. */
class ClientGone extends Error {
  override readonly name = 'ClientGone';
}

/**
 * Writes one export's rows in a format. `keyName(id)` names a key id, undefined for a key not to
 * be written; `columns` are CSV's key columns (in order).
 */
interface Formatter {
  head(): string;
  rows(batch: readonly ExportRow[]): string;
  tail(): string;
}

function formatter(format: ExportFormat, keyName: (id: number) => string | undefined, columns: readonly string[]): Formatter {
  const values = (r: ExportRow): Record<string, TelemetryValue> => {
    const out: Record<string, TelemetryValue> = {};
    const [, , , , , , , , , keys, vals, jvals] = r;
    for (let i = 0; i < keys.length; i++) {
      const name = keyName(keys[i]!);
      if (name !== undefined) out[name] = vals[i]!;
    }
    for (const id in jvals) {
      const name = keyName(Number(id));
      if (name !== undefined) out[name] = jvals[id]!;
    }
    return out;
  };
  if (format === 'ndjson') {
    return {
      head: () => '',
      rows: (batch) => {
        let s = '';
        for (const r of batch) {
          const [deviceId, name, type, domain, ts, lat, lng, alt, cell] = r;
          s += JSON.stringify({ deviceId, name, type, domain, ts, time: new Date(ts).toISOString(), lat, lng, alt, cell, values: values(r) }) + '\n';
        }
        return s;
      },
      tail: () => '',
    };
  }
  if (format === 'geojson') {
    let first = true;
    return {
      head: () => '{"type":"FeatureCollection","features":[',
      rows: (batch) => {
        let s = '';
        for (const r of batch) {
          const [deviceId, name, type, domain, ts, lat, lng, alt, cell] = r;
          const properties: Record<string, unknown> = { deviceId, name, type, domain, ts, time: new Date(ts).toISOString(), cell };
          for (const [k, v] of Object.entries(values(r))) properties[keyColumn(k)] = v;
          const coordinates = alt === null ? [lng, lat] : [lng, lat, alt];
          s += `${first ? '\n' : ',\n'}${JSON.stringify({ type: 'Feature', geometry: { type: 'Point', coordinates }, properties })}`;
          first = false;
        }
        return s;
      },
      tail: () => '\n]}\n',
    };
  }
  const index = new Map(columns.map((c, i) => [c, i]));
  return {
    head: () => stringify([[...FIXED_COLUMNS, ...columns.map(keyColumn)]]),
    rows: (batch) =>
      stringify(
        batch.map((r) => {
          const [deviceId, name, type, domain, ts, lat, lng, alt, cell, keys, vals, jvals] = r;
          const row: unknown[] = [deviceId, name, type, domain, new Date(ts).toISOString(), ts, lat, lng, alt, cell];
          row.length = FIXED_COLUMNS.length + columns.length;
          for (let i = 0; i < keys.length; i++) {
            const name = keyName(keys[i]!);
            const at = name === undefined ? undefined : index.get(name);
            if (at !== undefined) row[FIXED_COLUMNS.length + at] = vals[i];
          }
          for (const id in jvals) {
            const name = keyName(Number(id));
            const at = name === undefined ? undefined : index.get(name);
            if (at !== undefined) row[FIXED_COLUMNS.length + at] = csvCell(jvals[id]!);
          }
          return row;
        }),
      ),
    tail: () => '',
  };
}

/** A string as it is, a boolean as true/false (csv-stringify would write 1 or nothing), a JSON object or array as its JSON text. */
const csvCell = (v: NonNumericValue): string => (typeof v === 'string' ? v : JSON.stringify(v));

/** Resolves when `res` can take more (drained) or is gone (closed). */
function drained(res: ServerResponse): Promise<void> {
  if (res.closed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/**
 * Streamed export of the readings in an area and time window as NDJSON, CSV or GeoJSON, oldest
 * first, in constant memory: the database is read through a cursor a batch at a time, and the next
 * batch only once the client has taken the previous one.
 */
export const spatialExportRoutes: FastifyPluginAsyncTypebox<{ spatial: SpatialDeps }> = async (app, { spatial }) => {
  const context = {
    knownTypes: (t: string) => spatial.registry.deviceType(t) !== undefined,
    knownKey: (k: string) => spatial.keys.id(k) !== undefined,
  };
  let running = 0;
  // Shutdown (fastify.close waits for open requests) cuts the exports still running: their clients see an incomplete transfer.
  const streaming = new Set<ServerResponse>();
  app.addHook('preClose', async () => {
    for (const res of streaming) res.destroy();
  });

  const fail = (reply: FastifyReply, statusCode: 400 | 503, code: ExportErrorCode, message: string) =>
    reply.code(statusCode).send({ statusCode, code, error: statusCode === 400 ? 'Bad Request' : 'Service Unavailable', message });

  const refuse = (reply: FastifyReply, refused: NonNullable<ReturnType<typeof geometryRefusal>>) => {
    const { retryAfterS, ...body } = refused;
    if (retryAfterS !== undefined) void reply.header('retry-after', String(retryAfterS));
    return reply.code(body.statusCode).send(body);
  };

  /** Names of the key ids met so far, undefined for keys not asked for (the dictionary reloads once for an id another node added). */
  const namer = (wanted: readonly string[] | undefined) => {
    const names = new Map<number, string | undefined>();
    const keep = wanted && new Set(wanted);
    return {
      keyName: (id: number) => names.get(id),
      async learn(batch: readonly ExportRow[]) {
        for (const r of batch) {
          for (const id of r[11] ? [...r[9], ...Object.keys(r[11]).map(Number)] : r[9]) {
            if (names.has(id)) continue;
            const name = spatial.keys.nameSync(id) ?? (await spatial.keys.name(id));
            names.set(id, name !== undefined && (!keep || keep.has(name)) ? name : undefined);
          }
        }
      },
    };
  };

  const handler = async (input: SelectionInput, format: ExportFormat, reply: FastifyReply, log: FastifyBaseLogger, scope: Scope) => {
    let sel;
    try {
      sel = withinScope(await parseSelectionWith(input, context, DEFAULT_SPAN_MS, spatial.geometry), scope);
    } catch (err) {
      if (err instanceof SelectionError) return fail(reply, 400, 'invalid_selection', err.message);
      const refused = geometryRefusal(err);
      if (refused) return refuse(reply, refused);
      throw err;
    }
    if (running >= MAX_CONCURRENT_EXPORTS) {
      void reply.header('retry-after', '10');
      return fail(reply, 503, 'too_many_exports', `${MAX_CONCURRENT_EXPORTS} exports are running; try again when one has finished`);
    }
    running++;
    const started = Date.now();
    let rowsSent = 0;
    try {
      const resolved = await resolveSelection(spatial, sel);
      await withSpatialSession(spatial, resolved, async (client) => {
        // One snapshot for the whole export: its slices neither miss nor repeat rows written meanwhile.
        await client.query('SET TRANSACTION ISOLATION LEVEL REPEATABLE READ');
        const empty = selectsNothing(resolved);
        const names = namer(sel.keys);
        let columns: string[] = [];
        if (format === 'csv') {
          if (sel.keys) columns = sel.keys;
          else if (!empty) {
            const ids = await selectionKeyIds(client, resolved);
            columns = (await Promise.all(ids.map(async (id) => spatial.keys.nameSync(id) ?? (await spatial.keys.name(id)))))
              .filter((n): n is string => n !== undefined)
              .sort();
          }
        }
        const out = formatter(format, names.keyName, columns);
        // Each fetch takes its turn on the database beside history and aggregates (SPATIAL_MAX_CONCURRENT_QUERIES).
        const batches = empty ? undefined : exportBatches(client, resolved, { turn: (fetch) => runHeavy(spatial, fetch, { wait: true }) });
        // The first batch is read before the status line: a statement that fails or times out now still gets a proper error response.
        let next = batches ? await batches.next() : undefined;

        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, {
          'content-type': CONTENT_TYPES[format],
          'content-disposition': `attachment; filename="guanlink-export-${compact(sel.from)}-${compact(sel.to)}.${format}"`,
          'cache-control': 'no-store',
        });
        streaming.add(res);
        res.on('close', () => streaming.delete(res));
        const write = async (chunk: string) => {
          // `closed`: the connection ended (client gone, or shutdown); writing on would wait for a drain that never comes.
          if (res.closed) throw new ClientGone('the client closed the connection');
          if (chunk.length > 0 && !res.write(chunk)) await drained(res);
          if (res.closed) throw new ClientGone('the client closed the connection');
        };
        try {
          await write(out.head());
          while (next && !next.done) {
            const batch = next.value;
            await names.learn(batch);
            // Written in pieces of WRITE_ROWS rows: no string or socket write is ever large.
            for (let i = 0; i < batch.length; i += WRITE_ROWS) {
              await write(out.rows(batch.slice(i, i + WRITE_ROWS)));
              rowsSent += Math.min(WRITE_ROWS, batch.length - i);
              reply.request.auditRows = rowsSent;
            }
            next = await batches!.next();
          }
          await write(out.tail());
          res.end();
        } catch (err) {
          if (!(err instanceof ClientGone)) {
            // Mid-stream failure: the response is cut off without its last chunk, so every HTTP
            // client sees an incomplete body; NDJSON also says why on a last line.
            const reason = (err as { code?: string }).code === QUERY_CANCELED ? 'query_timeout' : 'export_failed';
            if (format === 'ndjson' && !res.closed) {
              const line = JSON.stringify({ error: { code: reason, message: `the export stopped after ${rowsSent} readings: ${(err as Error).message}` } }) + '\n';
              // Flushed before the cut, unless the client has stopped reading (then not waited for long).
              await new Promise<void>((resolve) => {
                const timer = setTimeout(resolve, 5000);
                res.write(line, () => {
                  clearTimeout(timer);
                  resolve();
                });
              });
            }
            res.destroy();
          }
          throw err;
        } finally {
          await batches?.return(undefined);
        }
      });
      log.info({ format, rows: rowsSent, ms: Date.now() - started }, 'spatial export finished');
    } catch (err) {
      const refused = geometryRefusal(err);
      if (!reply.sent && refused) return refuse(reply, refused);
      if (!reply.sent && (err as { code?: string }).code === QUERY_CANCELED) {
        return fail(reply, 503, 'query_timeout', `the query ran longer than ${spatial.statementTimeoutMs} ms (SPATIAL_STATEMENT_TIMEOUT_MS); ask for a smaller area or a shorter window`);
      }
      if (!reply.sent) throw err;
      if (err instanceof ClientGone) log.info({ format, rows: rowsSent, ms: Date.now() - started }, 'spatial export: client went away');
      else log.warn({ err, format, rows: rowsSent }, 'spatial export failed mid-stream');
    } finally {
      running--;
    }
    return reply;
  };

  const schema = {
    summary: 'Export the readings in an area and time window as NDJSON, CSV or GeoJSON (streamed, oldest first)',
    description:
      'Area: exactly one of bbox, lat+lng+radius, cells or geometry (boundaries count as inside). Window: from (default to − 24 h) … to (default now), ' +
      `at most ${MAX_WINDOW_DAYS} days. Filters: domain, type, keys (readings holding none of the keys are left out; only those keys are written). ` +
      'Rows in (ts, deviceId) order, each: deviceId, name, type, domain, ts (epoch ms), time (ISO 8601), lat, lng, alt, cell (H3 res 15), values. ' +
      'ndjson: one object per line, values as an object. csv: columns deviceId,name,type,domain,time,ts,lat,lng,alt,cell then one per key ' +
      '(the keys asked for, in that order, else every key present in the selection, alphabetical); empty cell = no value. ' +
      'geojson: a FeatureCollection of Points [lng, lat(, alt)], the key values as properties. A key named like a fixed column is written as `values.<key>`. ' +
      'The export is one consistent snapshot. If it fails after the first byte, the response ends without its terminating chunk (the client sees an ' +
      'incomplete transfer) and NDJSON ends with a line {"error": {code, message}}.',
    tags: ['spatial'],
    produces: ['application/x-ndjson', 'text/csv', 'application/geo+json'],
    response: {
      200: Type.Unknown({ description: 'the readings in the chosen format (Content-Disposition: attachment)' }),
      400: ExportError,
      413: ExportError,
      503: ExportError,
    },
  };

  app.get('/spatial/export', { exposeHeadRoute: false, config: { permission: 'read', concurrency: 'export' }, schema: { ...schema, querystring: ExportQuery } }, async (request, reply) =>
    handler(request.query, request.query.format ?? 'ndjson', reply, request.log, request.principal.scope),
  );
  app.post('/spatial/export', { config: { permission: 'read', concurrency: 'export' }, schema: { ...schema, querystring: FormatQuery, body: ExportQuery } }, async (request, reply) => {
    const { format: inBody, ...input } = request.body as Static<typeof ExportQuery>;
    const inQuery = request.query.format;
    if (inBody !== undefined && inQuery !== undefined && inBody !== inQuery) {
      return fail(reply, 400, 'invalid_selection', `format: ${inQuery} in the query string but ${inBody} in the body; give one`);
    }
    return handler(input, inBody ?? inQuery ?? 'ndjson', reply, request.log, request.principal.scope);
  });
};
