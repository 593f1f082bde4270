import type { Permission } from './permissions.ts';
import { UNRESTRICTED, type Scope } from './scope.ts';

/**
 * Who is asking: an API key, an OpenID Connect identity, or the bootstrap admin key. Every route,
 * live stream and MQTT application session carries one, and core/access/access.ts decides with it.
 */
export interface Principal {
  kind: 'key' | 'oidc' | 'bootstrap';
  /** Stable identifier for audit and rate limits: `key:<id>`, `oidc:<issuer subject>`, `bootstrap`. */
  id: string;
  /** The key's name or the identity's display name. */
  name: string;
  /** The agency or person the key belongs to. */
  owner: string;
  roles: readonly string[];
  permissions: ReadonlySet<Permission>;
  scope: Scope;
  /** When the credential stops being valid (ms since epoch); streams opened with it are closed then. */
  expiresAt: number | null;
  /** The API key's id, when the principal is a key (revocation closes its streams). */
  keyId?: number;
  /** An API key's own request rate limit (`1200/min`, `off`; core/access/rate-limits.ts); absent: its roles' limits. */
  rateLimit?: string | null;
}

/** The bootstrap admin key (ADMIN_KEY or DATA_DIR/admin-key): every permission, no scope. */
export function bootstrapPrincipal(permissions: ReadonlySet<Permission>): Principal {
  return { kind: 'bootstrap', id: 'bootstrap', name: 'bootstrap admin key', owner: 'platform', roles: ['admin'], permissions, scope: UNRESTRICTED, expiresAt: null };
}

/** What a principal looks like to itself (GET /api/v1/me) and in the audit log. */
export const describePrincipal = (p: Principal) => ({
  kind: p.kind,
  id: p.id,
  name: p.name,
  owner: p.owner,
  roles: [...p.roles],
  permissions: [...p.permissions].sort(),
  scope: p.scope.input,
  expiresAt: p.expiresAt === null ? null : new Date(p.expiresAt).toISOString(),
});
