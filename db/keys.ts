import type pg from 'pg';

/**
 * Telemetry key names ↔ small integer ids (readings store ids). Loaded at start; new names are
 * admitted during validation (up to `maxKeys`, so a device inventing keys cannot grow it without
 * bound) and saved before the batch that first uses them is written.
 */
export class KeyDictionary {
  private ids = new Map<string, number>();
  private names = new Map<number, string>();
  private pending = new Set<string>();

  constructor(
    private readonly pool: pg.Pool,
    readonly maxKeys: number,
  ) {}

  async load(): Promise<void> {
    const { rows } = await this.pool.query<{ id: number; name: string }>('SELECT id, name FROM telemetry_keys');
    for (const r of rows) this.remember(r.id, r.name);
  }

  get size(): number {
    return this.ids.size;
  }

  id(name: string): number | undefined {
    return this.ids.get(name);
  }

  /** The name of a stored id; reloads once when another node added it. */
  async name(id: number): Promise<string | undefined> {
    if (!this.names.has(id)) await this.load();
    return this.names.get(id);
  }

  nameSync(id: number): string | undefined {
    return this.names.get(id);
  }

  /** Whether readings may use this key: known, or room for one more. */
  admit(name: string): boolean {
    if (this.ids.has(name) || this.pending.has(name)) return true;
    if (this.ids.size + this.pending.size >= this.maxKeys) return false;
    this.pending.add(name);
    return true;
  }

  /** Gives every name an id, saving new ones (idempotent across nodes). */
  async ensure(names: Iterable<string>): Promise<void> {
    const missing = [...new Set(names)].filter((n) => !this.ids.has(n));
    if (missing.length === 0) return;
    const { rows } = await this.pool.query<{ id: number; name: string }>(
      `INSERT INTO telemetry_keys (name) SELECT unnest($1::text[]) ORDER BY 1
       ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id, name`,
      [missing],
    );
    for (const r of rows) this.remember(r.id, r.name);
  }

  private remember(id: number, name: string): void {
    this.ids.set(name, id);
    this.names.set(id, name);
    this.pending.delete(name);
  }
}
