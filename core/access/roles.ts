import type pg from 'pg';
import { BUILTIN_ROLES, isPermission, type Permission } from './permissions.ts';

export interface Role {
  name: string;
  description: string;
  permissions: Permission[];
  builtin: boolean;
}

/** A role that cannot be saved or used as asked; the message says why (HTTP 400/404/409). */
export class RoleError extends Error {
  override readonly name = 'RoleError';
  constructor(
    message: string,
    readonly statusCode: 400 | 404 | 409,
  ) {
    super(message);
  }
}

const ROLE_NAME = /^[a-z][a-z0-9_-]{0,39}$/;

/**
 * Roles: named sets of permissions, in the `roles` table. Built-in roles (admin, operator, agency)
 * are written at start if missing; `admin` always has every permission. Kept in memory, re-read
 * every `refreshMs` so that a change made on another node arrives.
 */
export class RoleStore {
  private roles = new Map<string, Role>();
  private timer: NodeJS.Timeout | undefined;
  private listeners: ((role: string) => void)[] = [];

  constructor(
    private readonly pool: pg.Pool,
    private readonly refreshMs = 10_000,
  ) {}

  async start(): Promise<void> {
    for (const [name, role] of Object.entries(BUILTIN_ROLES)) {
      await this.pool.query(
        `INSERT INTO roles (name, description, permissions, builtin) VALUES ($1, $2, $3, true)
         ON CONFLICT (name) DO UPDATE SET permissions = CASE WHEN roles.name = 'admin' THEN EXCLUDED.permissions ELSE roles.permissions END, builtin = true`,
        [name, role.description, role.permissions],
      );
    }
    await this.reload();
    this.timer = setInterval(() => void this.reload().catch(() => {}), this.refreshMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async reload(): Promise<void> {
    const { rows } = await this.pool.query<{ name: string; description: string; permissions: string[]; builtin: boolean }>('SELECT name, description, permissions, builtin FROM roles ORDER BY name');
    this.roles = new Map(rows.map((r) => [r.name, { ...r, permissions: r.permissions.filter(isPermission) }]));
  }

  /** A role was changed or deleted here (open streams of its holders must end: their permissions were fixed when they opened). */
  onChange(listener: (role: string) => void): void {
    this.listeners.push(listener);
  }

  list(): Role[] {
    return [...this.roles.values()];
  }

  get(name: string): Role | undefined {
    return this.roles.get(name);
  }

  /** Names among `names` that are no role. */
  unknown(names: readonly string[]): string[] {
    return names.filter((n) => !this.roles.has(n));
  }

  /** The union of the roles' permissions (unknown roles grant nothing). */
  permissionsOf(names: readonly string[]): Set<Permission> {
    const out = new Set<Permission>();
    for (const n of names) for (const p of this.roles.get(n)?.permissions ?? []) out.add(p);
    return out;
  }

  async save(name: string, input: { description?: string; permissions: string[] }): Promise<Role> {
    if (!ROLE_NAME.test(name)) throw new RoleError(`role name "${name}": lower-case letters, digits, - and _, starting with a letter, at most 40`, 400);
    if (name === 'admin') throw new RoleError('the admin role has every permission and cannot be changed', 409);
    const bad = input.permissions.filter((p) => !isPermission(p));
    if (bad.length > 0) throw new RoleError(`unknown permission${bad.length > 1 ? 's' : ''} ${bad.map((p) => `"${p}"`).join(', ')} (GET /api/v1/roles lists them)`, 400);
    await this.pool.query(
      `INSERT INTO roles (name, description, permissions) VALUES ($1, $2, $3)
       ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, permissions = EXCLUDED.permissions, updated_at = now()`,
      [name, input.description ?? '', [...new Set(input.permissions)]],
    );
    await this.reload();
    for (const l of this.listeners) l(name);
    return this.roles.get(name)!;
  }

  async delete(name: string, inUse: (role: string) => Promise<number>): Promise<void> {
    const role = this.roles.get(name);
    if (!role) throw new RoleError(`no role "${name}"`, 404);
    if (role.builtin) throw new RoleError(`"${name}" is a built-in role and cannot be deleted`, 409);
    const keys = await inUse(name);
    if (keys > 0) throw new RoleError(`role "${name}" is held by ${keys} API key${keys > 1 ? 's' : ''}; change or revoke them first`, 409);
    await this.pool.query('DELETE FROM roles WHERE name = $1', [name]);
    await this.reload();
    for (const l of this.listeners) l(name);
  }
}
