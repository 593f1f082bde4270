import type pg from 'pg';

/** What the connected database can do; detected once at start and passed to whoever needs it. */
export interface Dialect {
  kind: 'timescaledb' | 'postgresql';
  serverVersion: string;
  /** TimescaleDB version and licence ('apache' lacks continuous aggregates and compression). */
  timescaledb?: { version: string; license: string };
  postgis?: string;
  h3?: string;
}

/** Creates the optional extensions the server offers (TimescaleDB only when preloaded), then reports. */
export async function prepareExtensions(client: pg.ClientBase): Promise<string[]> {
  const warnings: string[] = [];
  const available = await client.query<{ name: string }>(
    `SELECT name FROM pg_available_extensions WHERE name IN ('timescaledb', 'postgis', 'h3', 'h3_postgis')`,
  );
  const names = new Set(available.rows.map((r) => r.name));
  const preload = (await client.query<{ v: string }>(`SELECT current_setting('shared_preload_libraries') AS v`)).rows[0]?.v ?? '';
  const wanted = [
    names.has('timescaledb') && preload.includes('timescaledb') ? 'timescaledb' : undefined,
    names.has('postgis') ? 'postgis' : undefined,
    names.has('h3') ? 'h3' : undefined,
  ].filter((n): n is string => n !== undefined);
  for (const ext of wanted) {
    try {
      await client.query('SAVEPOINT ext');
      await client.query(`CREATE EXTENSION IF NOT EXISTS ${ext}`);
      await client.query('RELEASE SAVEPOINT ext');
    } catch (err) {
      await client.query('ROLLBACK TO SAVEPOINT ext');
      warnings.push(`extension ${ext} is available but could not be created: ${(err as Error).message}`);
    }
  }
  return warnings;
}

export async function detectDialect(pool: pg.Pool): Promise<Dialect> {
  const { rows } = await pool.query<{ extname: string; extversion: string }>(
    `SELECT extname, extversion FROM pg_extension WHERE extname IN ('timescaledb', 'postgis', 'h3')`,
  );
  const ext = new Map(rows.map((r) => [r.extname, r.extversion]));
  const serverVersion = (await pool.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0]!.v;
  const dialect: Dialect = { kind: ext.has('timescaledb') ? 'timescaledb' : 'postgresql', serverVersion };
  if (ext.has('timescaledb')) {
    const license = (await pool.query<{ v: string }>(`SELECT current_setting('timescaledb.license', true) AS v`)).rows[0]?.v ?? 'apache';
    dialect.timescaledb = { version: ext.get('timescaledb')!, license };
  }
  if (ext.has('postgis')) dialect.postgis = ext.get('postgis')!;
  if (ext.has('h3')) dialect.h3 = ext.get('h3')!;
  return dialect;
}
