import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type pg from 'pg';
import { Type } from 'typebox';
import { ErrorResponse, badRequest, Int32Id, Int64Id, Limit, SafeText } from '../schemas.ts';
import { parseInstant } from './telemetry.ts';

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);

const AuditEntry = Type.Object({
  id: Type.Integer(),
  at: Type.String({ format: 'date-time', description: 'when the request arrived (a stream: when it subscribed)' }),
  principal: Nullable(Type.String({ description: 'key:<id>, oidc:<subject> or bootstrap; null: not authenticated (a refused attempt)' })),
  principalName: Nullable(Type.String()),
  owner: Nullable(Type.String()),
  roles: Type.Array(Type.String()),
  kind: Type.Union([Type.Literal('http'), Type.Literal('stream'), Type.Literal('mqtt')]),
  method: Nullable(Type.String()),
  route: Type.String({ description: 'the route pattern (/api/v1/devices/:id), or subscribe' }),
  deviceId: Nullable(Type.Integer()),
  essentials: Type.Record(Type.String(), Type.Unknown(), {
    description: 'what was asked: area (kind and extent: a polygon as its vertex count and bbox), window, keys, domains, types, format, limit, …',
  }),
  status: Type.Integer({ description: 'HTTP status; 499: the client went away before an answer' }),
  reason: Nullable(Type.String({ description: 'why it was refused or cut short' })),
  rows: Nullable(Type.Integer()),
  bytes: Nullable(Type.Integer({ description: 'body bytes sent' })),
  durationMs: Nullable(Type.Number()),
  sourceIp: Nullable(Type.String()),
  userAgent: Nullable(Type.String()),
});

const AuditPage = Type.Object({
  entries: Type.Array(AuditEntry),
  nextCursor: Nullable(Type.Integer({ description: 'pass as `before` for the next (older) page; null on the last' })),
});

const AuditQuery = Type.Object(
  {
    principal: Type.Optional(SafeText(300, { minLength: 1, description: 'key:<id>, oidc:<subject>, bootstrap; `none`: refused attempts without a principal' })),
    owner: Type.Optional(SafeText(200, { minLength: 1 })),
    route: Type.Optional(SafeText(300, { minLength: 1, description: 'a route pattern as recorded (/api/v1/devices/:id/telemetry); a trailing * matches a prefix (/api/v1/spatial/*)' })),
    status: Type.Optional(SafeText(10, { minLength: 1, description: 'exact (404) or a class (4xx)' })),
    deviceId: Type.Optional(Int32Id()),
    from: Type.Optional(SafeText(40, { description: 'ISO 8601 date-time or epoch milliseconds: entries at or after' })),
    to: Type.Optional(SafeText(40, { description: 'ISO 8601 date-time or epoch milliseconds: entries before' })),
    kind: Type.Optional(Type.Union([Type.Literal('http'), Type.Literal('stream'), Type.Literal('mqtt')])),
    before: Type.Optional(Int64Id({ description: "the previous page's nextCursor: entries older than it" })),
    limit: Limit(1000, { default: 100 }),
  },
  { additionalProperties: false },
);

interface AuditRow {
  id: string;
  at: Date;
  principal: string | null;
  principal_name: string | null;
  owner: string | null;
  roles: string[];
  kind: 'http' | 'stream' | 'mqtt';
  method: string | null;
  route: string;
  device_id: number | null;
  essentials: Record<string, unknown>;
  status: number;
  reason: string | null;
  rows: number | null;
  bytes: string | null;
  duration_ms: number | null;
  source_ip: string | null;
  user_agent: string | null;
}

/** `404` → [404, 404]; `4xx` → [400, 499]; undefined when it is neither. */
export function statusRange(raw: string): [number, number] | undefined {
  const s = raw.trim().toLowerCase();
  if (/^[1-5]\d\d$/.test(s)) return [Number(s), Number(s)];
  if (/^[1-5]xx$/.test(s)) return [Number(s[0]) * 100, Number(s[0]) * 100 + 99];
  return undefined;
}

const likePrefix = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`) + '%';

/** The audit log for admins (core/audit.ts): newest first, filtered, a page at a time. */
export const auditRoutes: FastifyPluginAsyncTypebox<{ pool: pg.Pool }> = async (app, { pool }) => {
  app.get(
    '/audit',
    {
      config: { permission: 'audit:read' },
      schema: {
        summary: 'The audit log: who asked what, with what result, when and from where (newest first, paginated)',
        description:
          'Every authenticated request, every refused attempt (401, 403, 429) and every live-stream subscription. Filters combine with AND: principal, owner, ' +
          'route (exact pattern, or a prefix ending in *), status (404 or 4xx), deviceId, from/to (ISO 8601 or epoch ms), kind. Entries come newest first ' +
          '(in the order they were written); pass `nextCursor` as `before` for the next page. Secrets never appear: no credential, query string or body is recorded.',
        tags: ['access'],
        querystring: AuditQuery,
        response: { 200: AuditPage, 400: ErrorResponse },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const params: unknown[] = [];
      const where: string[] = [];
      const add = (v: unknown) => `$${params.push(v)}`;
      if (q.principal !== undefined) where.push(q.principal === 'none' ? 'principal IS NULL' : `principal = ${add(q.principal)}`);
      if (q.owner !== undefined) where.push(`owner = ${add(q.owner)}`);
      if (q.route !== undefined) where.push(q.route.endsWith('*') ? `route LIKE ${add(likePrefix(q.route.slice(0, -1)))}` : `route = ${add(q.route)}`);
      if (q.status !== undefined) {
        const range = statusRange(q.status);
        if (!range) return reply.code(400).send(badRequest(`status: "${q.status}" is neither a status (404) nor a class of statuses (4xx)`));
        where.push(range[0] === range[1] ? `status = ${add(range[0])}` : `status BETWEEN ${add(range[0])} AND ${add(range[1])}`);
      }
      if (q.deviceId !== undefined) where.push(`device_id = ${add(q.deviceId)}`);
      const from = q.from === undefined ? undefined : parseInstant(q.from);
      if (q.from !== undefined && !from) return reply.code(400).send(badRequest(`from: "${q.from}" is not an ISO 8601 date-time or epoch milliseconds`));
      const to = q.to === undefined ? undefined : parseInstant(q.to);
      if (q.to !== undefined && !to) return reply.code(400).send(badRequest(`to: "${q.to}" is not an ISO 8601 date-time or epoch milliseconds`));
      if (from && to && from.getTime() >= to.getTime()) return reply.code(400).send(badRequest(`from (${from.toISOString()}) must be before to (${to.toISOString()})`));
      if (from) where.push(`at >= ${add(from)}`);
      if (to) where.push(`at < ${add(to)}`);
      if (q.kind !== undefined) where.push(`kind = ${add(q.kind)}`);
      if (q.before !== undefined) where.push(`id < ${add(q.before)}`);
      const { rows } = await pool.query<AuditRow>(
        `SELECT id, at, principal, principal_name, owner, roles, kind, method, route, device_id, essentials, status, reason, rows, bytes, duration_ms, source_ip, user_agent
           FROM audit_log ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY id DESC LIMIT ${add(q.limit)}`,
        params,
      );
      const entries = rows.map((r) => ({
        id: Number(r.id),
        at: r.at.toISOString(),
        principal: r.principal,
        principalName: r.principal_name,
        owner: r.owner,
        roles: r.roles,
        kind: r.kind,
        method: r.method,
        route: r.route,
        deviceId: r.device_id,
        essentials: r.essentials,
        status: r.status,
        reason: r.reason,
        rows: r.rows,
        bytes: r.bytes === null ? null : Number(r.bytes),
        durationMs: r.duration_ms,
        sourceIp: r.source_ip,
        userAgent: r.user_agent,
      }));
      return { entries, nextCursor: entries.length === q.limit ? entries[entries.length - 1]!.id : null };
    },
  );
};
