import { parse as parseCsv, type CsvError } from 'csv-parse/sync';
import { Type, type Static } from 'typebox';
import { Compile } from 'typebox/compile';
import type { DeviceInput } from '../core/registry.ts';
import { badRequest } from './device-filter.ts';
import { DeviceLabel, DeviceName, Location, SafeText } from './schemas.ts';

/** What one import row asks for. */
export type ImportInput = Omit<DeviceInput, 'gatewayId'>;

/** One row of an import, parsed: its device, or why it cannot be imported. */
export interface ImportEntry {
  /** JSON: the array index (from 0); CSV: the line number (the header is line 1). */
  row: number;
  name: string | null;
  input?: ImportInput;
  error?: string;
}

export const MAX_IMPORT_ROWS = 50_000;

/** A device as a row of a JSON import. The fields of an export that describe no device are accepted and ignored. */
export const ImportRow = Type.Object(
  {
    name: DeviceName,
    type: Type.Optional(SafeText(64, { minLength: 1, description: 'default generic' })),
    label: Type.Optional(Type.Union([Type.Null(), DeviceLabel])),
    location: Type.Optional(Type.Union([Type.Null(), Location])),
    lat: Type.Optional(Location.properties.lat),
    lng: Type.Optional(Location.properties.lng),
    alt: Type.Optional(Type.Unsafe<number>(Location.properties.alt)),
    isGateway: Type.Optional(Type.Boolean()),
    id: Type.Optional(Type.Unknown()),
    domain: Type.Optional(Type.Unknown()),
    gatewayId: Type.Optional(Type.Unknown()),
    createdAt: Type.Optional(Type.Unknown()),
    updatedAt: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
const rowCheck = Compile(ImportRow);
const FIELDS = 'name, type, label, location (or lat, lng, alt), isGateway';

/** The first problem of a row, the most specific one (union branches report noise). */
function rowProblem(value: unknown): string | undefined {
  if (rowCheck.Check(value)) return undefined;
  const errors = [...rowCheck.Errors(value)].filter((e) => e.keyword !== 'anyOf');
  if (errors.length === 0) return 'invalid row';
  const extra = errors.find((e) => e.keyword === 'additionalProperties');
  if (extra) {
    const names = (extra.params as { additionalProperties?: string[] }).additionalProperties ?? [];
    return `unknown field${names.length > 1 ? 's' : ''} ${names.map((n) => `"${n}"`).join(', ')} (fields: ${FIELDS})`;
  }
  const best = errors.reduce((a, b) => (b.instancePath.length > a.instancePath.length ? b : a));
  const where = best.instancePath.replace(/^\//, '').replaceAll('/', '.');
  return where ? `${where} ${best.message}` : best.message;
}

/** A row object (JSON, or a CSV record made into one) → the device it describes, or an error. */
function toEntry(row: number, value: unknown): ImportEntry {
  const name = typeof value === 'object' && value !== null && typeof (value as { name?: unknown }).name === 'string' ? (value as { name: string }).name : null;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { row, name, error: 'expected an object with at least a name' };
  const problem = rowProblem(value);
  if (problem) return { row, name, error: problem };
  const r = value as Static<typeof ImportRow>;
  const flat = r.lat !== undefined || r.lng !== undefined || r.alt !== undefined;
  if (flat && r.location !== undefined) return { row, name, error: 'give location or lat/lng/alt, not both' };
  if ((r.lat === undefined) !== (r.lng === undefined)) return { row, name, error: 'lat and lng go together' };
  if (r.alt !== undefined && r.lat === undefined) return { row, name, error: 'alt needs lat and lng' };
  const location = flat ? { lat: r.lat!, lng: r.lng!, ...(r.alt === undefined ? {} : { alt: r.alt }) } : (r.location ?? null);
  return { row, name: r.name, input: { name: r.name, type: r.type ?? 'generic', label: r.label ?? null, location, isGateway: r.isGateway ?? false } };
}

/** A JSON import: an array of device objects. */
export function jsonImportEntries(rows: unknown[]): ImportEntry[] {
  if (rows.length > MAX_IMPORT_ROWS) throw badRequest(`at most ${MAX_IMPORT_ROWS} rows per import, got ${rows.length}`);
  return rows.map((value, i) => toEntry(i, value));
}

const CSV_COLUMNS: Record<string, 'name' | 'type' | 'label' | 'lat' | 'lng' | 'alt' | 'isGateway' | null> = {
  name: 'name',
  type: 'type',
  label: 'label',
  lat: 'lat',
  lng: 'lng',
  alt: 'alt',
  isgateway: 'isGateway',
  is_gateway: 'isGateway',
  // Columns of an export, ignored.
  id: null,
  domain: null,
  gatewayid: null,
  createdat: null,
  updatedat: null,
};
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const TRUE = /^(true|1|yes|y)$/i;
const FALSE = /^(false|0|no|n)$/i;

/**
 * A CSV import: a header row (name,type,label,lat,lng,alt,isGateway in any order, case-insensitive;
 * only name is required), then one device per row. Parsed with csv-parse (RFC 4180 quoting,
 * quoted newlines, a UTF-8 byte-order mark as spreadsheets write it; a quote inside an unquoted
 * field is kept as text, `12" pipe`). A record with the wrong number of fields is reported on its
 * own; an unclosed quote makes the rest of the file one error, as nothing after it can be told apart.
 * Fields are trimmed here, not by the parser: its `trim` loses records after a stray quote.
 */
export function csvImportEntries(text: string): ImportEntry[] {
  const skipped: ImportEntry[] = [];
  const records = parseCsv(text, {
    bom: true,
    relax_quotes: true,
    skip_empty_lines: true,
    info: true,
    skip_records_with_error: true,
    on_skip: (err: CsvError | undefined) => {
      if (!err) return undefined;
      const rest = err.code === 'CSV_QUOTE_NOT_CLOSED' ? ' (everything after the opening quote was read as one field: no row after it was imported)' : '';
      skipped.push({ row: Number((err as CsvError & { lines?: number }).lines ?? 0), name: null, error: `CSV: ${err.message}${rest}` });
      return undefined;
    },
  }) as unknown as { record: string[]; info: { lines: number } }[];
  if (records.length === 0) throw badRequest('CSV: empty; expected a header row (name,type,label,lat,lng,alt,isGateway)');
  const header = records[0]!.record.map((h) => h.trim());
  const columns = header.map((h) => {
    const key = h.toLowerCase();
    if (!Object.hasOwn(CSV_COLUMNS, key)) throw badRequest(`CSV header: unknown column "${h}"; columns: name,type,label,lat,lng,alt,isGateway`);
    return CSV_COLUMNS[key]!;
  });
  const seen = columns.filter((c) => c !== null);
  if (new Set(seen).size !== seen.length) throw badRequest('CSV header: a column appears twice');
  if (!columns.includes('name')) throw badRequest('CSV header: the name column is required');
  if (records.length - 1 > MAX_IMPORT_ROWS) throw badRequest(`at most ${MAX_IMPORT_ROWS} rows per import, got ${records.length - 1}`);

  const entries = records.slice(1).map(({ record, info }) => {
    // info.lines is where the record ends; quoted newlines move its start up.
    const row = info.lines - record.reduce((n, field) => n + (field.match(/\n/g)?.length ?? 0), 0);
    const fields = record.map((f) => f.trim());
    const name = fields[columns.indexOf('name')] || null;
    const value: Record<string, unknown> = {};
    for (let c = 0; c < columns.length; c++) {
      const column = columns[c];
      const raw = fields[c] ?? '';
      if (column === null || column === undefined || raw === '') continue;
      if (column === 'lat' || column === 'lng' || column === 'alt') {
        if (!NUMBER.test(raw)) return { row, name, error: `${column}: "${raw}" is not a number` };
        value[column] = Number(raw);
      } else if (column === 'isGateway') {
        if (!TRUE.test(raw) && !FALSE.test(raw)) return { row, name, error: `isGateway: "${raw}" is not true or false` };
        value[column] = TRUE.test(raw);
      } else {
        value[column] = raw;
      }
    }
    if (name === null) return { row, name, error: 'name is empty' };
    return toEntry(row, value);
  });
  return [...entries, ...skipped].sort((a, b) => a.row - b.row);
}

/** Later rows repeating a name are errors: an import describes each device once. */
export function markDuplicateNames(entries: ImportEntry[]): void {
  const first = new Map<string, number>();
  for (const entry of entries) {
    if (!entry.input) continue;
    const earlier = first.get(entry.input.name);
    if (earlier === undefined) first.set(entry.input.name, entry.row);
    else {
      entry.error = `the name appears earlier in this import (row ${earlier})`;
      delete entry.input;
    }
  }
}
