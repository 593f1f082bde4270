import type pg from 'pg';
import type { Domain } from '../core/domains.ts';
import type { NonNumericValue } from '../ingest/readings.ts';
import { Params } from './area-query.ts';
import { selectionRowsSql, type ResolvedSelection } from './spatial-query.ts';

/**
 * The readings of a spatial selection for an export, oldest first (ties by device id), read in
 * bounded pieces so that neither the database nor this process ever holds more than a slice:
 *
 * - the window is cut into time slices; each slice is one statement over every domain table
 *   (UNION ALL, sorted by the database), so no statement sorts more than a slice and each stays
 *   far below the statement timeout;
 * - each slice is read through a server-side cursor (DECLARE … CURSOR, then FETCH `batchRows`
 *   at a time: every FETCH is its own statement), so this process holds one batch at a time and
 *   reads the next only when the caller asks for it (a slow client stops the reads);
 * - the slice length adapts to the data: it doubles after a slice of fewer than a quarter of
 *   `sliceRows` readings and halves after one of more than twice as many.
 *
 * Must run inside withSpatialSession (one connection, one transaction). A device keeps its domain
 * once it has readings, so (ts, device id) orders the rows of all domain tables totally.
 */

/** One exported row, as the database returns it (rowMode array). */
export type ExportRow = [
  deviceId: number,
  name: string,
  type: string,
  domain: Domain,
  /** Epoch milliseconds. */
  ts: number,
  lat: number,
  lng: number,
  alt: number | null,
  /** H3 res-15 index as its usual hex string (the stored int8 in hex, as h3-js writes it). */
  cell: string,
  keys: number[],
  vals: number[],
  /** The values that are not numbers, by key id (as text); null when there are none. */
  jvals: Record<string, NonNumericValue> | null,
];

export interface ExportReadOptions {
  /** Rows per FETCH (default 1000). */
  batchRows?: number;
  /** Readings one time slice should hold (default 50 000). */
  sliceRows?: number;
  /** Length of the first slice (default 1 minute). */
  firstSliceMs?: number;
  /** Runs each FETCH (the statements that do the work) when the database is free for it (QueryGate); never held while a batch is being sent. */
  turn?: <T>(fetch: () => Promise<T>) => Promise<T>;
}

const CURSOR = 'guanlink_export';

// ts as epoch ms (float8 keeps the parse cheap), alt as real (its text form is the value sent), the
// cell as hex text: the H3 index string, without a bigint round trip in JavaScript.
const columns = (domain: Domain): string =>
  `r.device_id, r.ts, floor(extract(epoch FROM r.ts) * 1000)::float8 AS ms, r.lat, r.lng, r.alt, to_hex(r.cell) AS cell, r.keys, r.vals, r.jvals, '${domain}'::text AS domain`;

/** The statement reading one time slice [from, to) of the selection, in export order. */
export function exportSliceSql(sel: ResolvedSelection, from: Date, to: Date, params: Params): string {
  const parts = sel.domains.map((d) => `(${selectionRowsSql(sel, d, columns(d), params, { from, to })})`);
  return (
    `SELECT x.device_id, d.name, d.type, x.domain, x.ms, x.lat, x.lng, x.alt, x.cell, x.keys, x.vals, x.jvals ` +
    `FROM (${parts.join(' UNION ALL ')}) x JOIN devices d ON d.id = x.device_id ` +
    `ORDER BY x.ts, x.device_id`
  );
}

/** Batches of the selection's readings in export order; stop iterating to stop reading. */
export async function* exportBatches(client: pg.ClientBase, sel: ResolvedSelection, options: ExportReadOptions = {}): AsyncGenerator<ExportRow[]> {
  const batchRows = options.batchRows ?? 1000;
  const sliceRows = options.sliceRows ?? 50_000;
  let sliceMs = options.firstSliceMs ?? 60_000;
  const turn = options.turn ?? ((fetch) => fetch());
  const end = sel.to.getTime();
  for (let start = sel.from.getTime(); start < end; ) {
    const stop = Math.min(end, start + sliceMs);
    const params = new Params();
    const sql = exportSliceSql(sel, new Date(start), new Date(stop), params);
    await client.query({ text: `DECLARE ${CURSOR} NO SCROLL CURSOR FOR ${sql}`, values: params.values });
    let rows = 0;
    for (;;) {
      const batch = await turn(() => client.query<ExportRow>({ text: `FETCH ${batchRows} FROM ${CURSOR}`, rowMode: 'array' }));
      rows += batch.rows.length;
      if (batch.rows.length > 0) yield batch.rows;
      if (batch.rows.length < batchRows) break;
    }
    await client.query(`CLOSE ${CURSOR}`);
    start = stop;
    if (rows < sliceRows / 4) sliceMs *= 2;
    else if (rows > sliceRows * 2) sliceMs = Math.max(1000, Math.floor(sliceMs / 2));
  }
}

/** Ids of the telemetry keys present in the selection's readings (one pass; the CSV columns when no keys were asked for). */
export async function selectionKeyIds(client: pg.ClientBase, sel: ResolvedSelection): Promise<number[]> {
  const params = new Params();
  const parts = sel.domains.map((d) => `(${selectionRowsSql(sel, d, 'r.keys, r.jvals', params)})`);
  const { rows } = await client.query<[number]>({
    text: `SELECT DISTINCT k FROM (${parts.join(' UNION ALL ')}) x,
             LATERAL (SELECT unnest(x.keys) UNION ALL SELECT jsonb_object_keys(x.jvals)::smallint) AS u(k) ORDER BY 1`,
    values: params.values,
    rowMode: 'array',
  });
  return rows.map((r) => r[0]);
}
