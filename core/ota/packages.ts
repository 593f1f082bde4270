import type pg from 'pg';
import { inTransaction } from '../../db/pool.ts';
import { CHECKSUM_HEX_LENGTH, createChecksum, type ChecksumAlgorithm } from './checksum.ts';

/** ThingsBoard's OtaPackageType: firmware (`fw_*` keys, `v2/fw/…`) or software (`sw_*`, `v2/sw/…`). */
export const OTA_TYPES = ['FIRMWARE', 'SOFTWARE'] as const;
export type OtaType = (typeof OTA_TYPES)[number];

/** The key prefix of a type: `fw` or `sw` (ThingsBoard OtaPackageType.getKeyPrefix). */
export const keyPrefix = (type: OtaType): 'fw' | 'sw' => (type === 'FIRMWARE' ? 'fw' : 'sw');

/**
 * Bytes per stored block. A package is kept in PostgreSQL as rows of this size (the last one
 * shorter), so every GuanLink node sharing the database serves it and any byte range is read
 * with one or two rows, never the whole package.
 */
export const OTA_BLOCK_BYTES = 65_536;

export interface OtaPackage {
  id: number;
  type: OtaType;
  title: string;
  version: string;
  /** Only for devices of this type (ThingsBoard: the package's device profile); null: any. */
  deviceType: string | null;
  checksumAlgorithm: ChecksumAlgorithm;
  /** Lower-case hex; null until the data is uploaded when none was given. */
  checksum: string | null;
  fileName: string;
  contentType: string;
  /** Bytes; null until the data is uploaded. */
  size: number | null;
  createdAt: string;
  uploadedAt: string | null;
}

export interface NewOtaPackage {
  type: OtaType;
  title: string;
  version: string;
  deviceType?: string | null;
  checksumAlgorithm: ChecksumAlgorithm;
  checksum?: string | null;
  fileName?: string;
  contentType?: string;
}

/** A request about packages that cannot be done; the code picks the HTTP status (404, 409, 400, 413). */
export class OtaError extends Error {
  constructor(
    readonly code: 'not_found' | 'conflict' | 'invalid' | 'too_large',
    message: string,
  ) {
    super(message);
  }
}

interface PackageRow {
  id: number;
  type: OtaType;
  title: string;
  version: string;
  device_type: string | null;
  checksum_algorithm: ChecksumAlgorithm;
  checksum: string | null;
  file_name: string;
  content_type: string;
  size: string | null;
  block_bytes: number;
  created_at: Date;
  uploaded_at: Date | null;
}

const COLUMNS = 'id, type, title, version, device_type, checksum_algorithm, checksum, file_name, content_type, size, block_bytes, created_at, uploaded_at';

const toPackage = (r: PackageRow): OtaPackage => ({
  id: r.id,
  type: r.type,
  title: r.title,
  version: r.version,
  deviceType: r.device_type,
  checksumAlgorithm: r.checksum_algorithm,
  checksum: r.checksum,
  fileName: r.file_name,
  contentType: r.content_type,
  size: r.size === null ? null : Number(r.size),
  createdAt: r.created_at.toISOString(),
  uploadedAt: r.uploaded_at?.toISOString() ?? null,
});

/**
 * OTA packages and their data (`ota_packages`, `ota_package_blocks`). The data is uploaded once,
 * streamed: checked against the package's size limit and checksum while it arrives and written
 * block by block in one transaction, so a refused upload leaves nothing behind.
 */
export class OtaPackages {
  constructor(
    private readonly pool: pg.Pool,
    private readonly maxPackageBytes: number,
  ) {}

  async create(input: NewOtaPackage): Promise<OtaPackage> {
    const checksum = input.checksum ? input.checksum.toLowerCase() : null;
    if (checksum !== null && !new RegExp(`^[0-9a-f]{${CHECKSUM_HEX_LENGTH[input.checksumAlgorithm]}}$`).test(checksum)) {
      throw new OtaError('invalid', `checksum: a ${input.checksumAlgorithm} checksum is ${CHECKSUM_HEX_LENGTH[input.checksumAlgorithm]} hex digits`);
    }
    try {
      const { rows } = await this.pool.query<PackageRow>(
        `INSERT INTO ota_packages (type, title, version, device_type, checksum_algorithm, checksum, file_name, content_type, block_bytes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING ${COLUMNS}`,
        [
          input.type,
          input.title,
          input.version,
          input.deviceType ?? null,
          input.checksumAlgorithm,
          checksum,
          input.fileName ?? input.title,
          input.contentType ?? 'application/octet-stream',
          OTA_BLOCK_BYTES,
        ],
      );
      return toPackage(rows[0]!);
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (code === '23505') throw new OtaError('conflict', `a ${input.type.toLowerCase()} package "${input.title}" version "${input.version}" exists already`);
      if (code === '23503') throw new OtaError('invalid', `deviceType: no device type "${input.deviceType}"`);
      throw err;
    }
  }

  async get(id: number): Promise<OtaPackage | undefined> {
    const { rows } = await this.pool.query<PackageRow>(`SELECT ${COLUMNS} FROM ota_packages WHERE id = $1`, [id]);
    return rows[0] && toPackage(rows[0]);
  }

  async list(filter: { type?: OtaType; title?: string; limit: number; afterId?: number }): Promise<OtaPackage[]> {
    const { rows } = await this.pool.query<PackageRow>(
      `SELECT ${COLUMNS} FROM ota_packages
        WHERE ($1::text IS NULL OR type = $1) AND ($2::text IS NULL OR title = $2) AND id > $3
        ORDER BY id LIMIT $4`,
      [filter.type ?? null, filter.title ?? null, filter.afterId ?? 0, filter.limit],
    );
    return rows.map(toPackage);
  }

  /** Deletes a package with its data; refused (conflict) while a device type, a device or a running campaign uses it. */
  async delete(id: number): Promise<OtaPackage> {
    return inTransaction(this.pool, async (client) => {
      const { rows } = await client.query<PackageRow>(`SELECT ${COLUMNS} FROM ota_packages WHERE id = $1 FOR UPDATE`, [id]);
      if (!rows[0]) throw new OtaError('not_found', `no OTA package ${id}`);
      const { rows: uses } = await client.query<{ types: number; devices: number; campaigns: number }>(
        `SELECT (SELECT count(*)::int FROM ota_type_assignments WHERE package_id = $1) AS types,
                (SELECT count(*)::int FROM ota_device_assignments WHERE package_id = $1) AS devices,
                (SELECT count(*)::int FROM ota_campaigns WHERE package_id = $1 AND status = 'running') AS campaigns`,
        [id],
      );
      const u = uses[0]!;
      if (u.types + u.devices + u.campaigns > 0) {
        throw new OtaError(
          'conflict',
          `OTA package ${id} is assigned to ${u.types} device type(s) and ${u.devices} device(s), with ${u.campaigns} running campaign(s); unassign it (and cancel its campaigns) first`,
        );
      }
      await client.query('DELETE FROM ota_campaigns WHERE package_id = $1', [id]);
      await client.query('DELETE FROM ota_packages WHERE id = $1', [id]);
      return toPackage(rows[0]);
    });
  }

  /**
   * Stores a package's data from a stream (once: a package's data cannot be changed, as in
   * ThingsBoard). Refused (OtaError) — with nothing kept — when the package has data already, the
   * stream is empty or longer than the limit, or its checksum differs from the one given at creation;
   * without one the checksum is computed (BaseOtaPackageService generateChecksum). A stream that
   * fails (the client went away) rolls back too.
   */
  async upload(id: number, source: AsyncIterable<Uint8Array>): Promise<OtaPackage> {
    return inTransaction(this.pool, async (client) => {
      const { rows } = await client.query<PackageRow>(`SELECT ${COLUMNS} FROM ota_packages WHERE id = $1 FOR UPDATE`, [id]);
      const row = rows[0];
      if (!row) throw new OtaError('not_found', `no OTA package ${id}`);
      if (row.size !== null) throw new OtaError('conflict', `OTA package ${id} has its data already; a package's data cannot be changed (create a new version)`);
      const checksum = createChecksum(row.checksum_algorithm);
      const block = Buffer.allocUnsafe(row.block_bytes);
      let filled = 0;
      let n = 0;
      let total = 0;
      const flush = async () => {
        await client.query('INSERT INTO ota_package_blocks (package_id, n, data) VALUES ($1, $2, $3)', [id, n++, block.subarray(0, filled)]);
        filled = 0;
      };
      for await (const piece of source) {
        total += piece.byteLength;
        if (total > this.maxPackageBytes) throw new OtaError('too_large', `the package is larger than OTA_MAX_PACKAGE_BYTES (${this.maxPackageBytes} bytes)`);
        checksum.update(piece);
        for (let at = 0; at < piece.byteLength; ) {
          const take = Math.min(block.length - filled, piece.byteLength - at);
          block.set(piece.subarray(at, at + take), filled);
          filled += take;
          at += take;
          if (filled === block.length) await flush();
        }
      }
      if (filled > 0) await flush();
      if (total === 0) throw new OtaError('invalid', 'the package data is empty (ThingsBoard: "OtaPackage data should be specified!")');
      const computed = checksum.digest();
      if (row.checksum !== null && row.checksum !== computed) {
        throw new OtaError('invalid', `Wrong otaPackage file! The ${row.checksum_algorithm} checksum of the data is ${computed}, not ${row.checksum} as given; nothing was stored`);
      }
      const { rows: updated } = await client.query<PackageRow>(
        `UPDATE ota_packages SET size = $2, checksum = $3, uploaded_at = now() WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, total, computed],
      );
      return toPackage(updated[0]!);
    });
  }

  /**
   * `length` bytes of a package's data from `offset` (fewer at the end, none past it), read from
   * the blocks that hold them only.
   */
  async read(id: number, offset: number, length: number): Promise<Buffer> {
    const { rows: info } = await this.pool.query<{ size: string | null; block_bytes: number }>('SELECT size, block_bytes FROM ota_packages WHERE id = $1', [id]);
    const pkg = info[0];
    if (!pkg || pkg.size === null) throw new OtaError('not_found', `OTA package ${id} has no data`);
    const size = Number(pkg.size);
    const end = Math.min(size, offset + length);
    if (offset >= end) return Buffer.alloc(0);
    const first = Math.floor(offset / pkg.block_bytes);
    const last = Math.floor((end - 1) / pkg.block_bytes);
    const { rows } = await this.pool.query<{ n: number; data: Buffer }>(
      'SELECT n, data FROM ota_package_blocks WHERE package_id = $1 AND n BETWEEN $2 AND $3 ORDER BY n',
      [id, first, last],
    );
    const out = Buffer.allocUnsafe(end - offset);
    let written = 0;
    for (const { n, data } of rows) {
      const blockStart = n * pkg.block_bytes;
      const from = Math.max(offset, blockStart) - blockStart;
      const to = Math.min(end, blockStart + data.length) - blockStart;
      written += data.copy(out, written, from, to);
    }
    if (written !== out.length) throw new Error(`OTA package ${id}: blocks ${first}–${last} hold ${written} of ${out.length} bytes`);
    return out;
  }

  /** The whole data, block by block (one block in memory at a time). */
  async *stream(id: number, offset = 0, length = Number.MAX_SAFE_INTEGER): AsyncGenerator<Buffer> {
    const pkg = await this.get(id);
    if (!pkg || pkg.size === null) throw new OtaError('not_found', `OTA package ${id} has no data`);
    const end = Math.min(pkg.size, offset + length);
    for (let at = offset; at < end; at += OTA_BLOCK_BYTES) yield await this.read(id, at, Math.min(OTA_BLOCK_BYTES, end - at));
  }
}
