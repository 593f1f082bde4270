import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from 'typebox';
import {
  ALARM_OPERATORS,
  ALARM_RULE_KINDS,
  ALARM_SEVERITIES,
  ALARM_STATUSES,
  AlarmError,
  CLEAR_REASONS,
  type Alarm,
  type AlarmFilter,
  type AlarmRule,
  type AlarmRuleInput,
  type AlarmService,
  type AlarmSeverity,
  type AlarmStatus,
} from '../../core/alarms.ts';
import { DOMAINS, Domain, type Domain as DomainName } from '../../core/domains.ts';
import { MAX_KEY_LENGTH, TELEMETRY_VALUE_LIMITS } from '../../ingest/validate.ts';
import { ErrorResponse, badRequest, Int32Id, Int64Id, Limit, SafeName, SafeText } from '../schemas.ts';
import { parseInstant } from './telemetry.ts';
import type { Access } from '../../core/access/access.ts';
import type { Principal } from '../../core/access/principal.ts';
import { subjectVisible } from '../../core/access/visibility.ts';
import type { DeviceRegistry } from '../../core/registry.ts';

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(schema: T) => Type.Union([schema, Type.Null()]);
const At = Type.String({ format: 'date-time' });
const Text = (maxLength: number, description?: string) =>
  SafeName(maxLength, description === undefined ? {} : { description });
const Seconds = (description: string) => Type.Integer({ minimum: 0, maximum: 604_800, description });

const Kind = Type.Enum(ALARM_RULE_KINDS, { description: 'threshold: a telemetry key against thresholds; geofence_exit: leaving a geofence; match: a telemetry key equal (or not) to a value' });
const Operator = Type.Enum(ALARM_OPERATORS, {
  description: "threshold rules: '>'/'>=' raised above the raise threshold, cleared below the clear threshold; '<'/'<=' the other way round. match rules: '==' raised while the value equals, '!=' while it differs; cleared by the opposite",
});
/** A value a match rule compares with, or a match alarm observed. */
const Scalar = (description: string) =>
  Type.Union([Type.Number(), Type.String({ maxLength: TELEMETRY_VALUE_LIMITS.maxStringLength }), Type.Boolean()], { description });
const Severity = Type.Enum(ALARM_SEVERITIES);

const AlarmRuleSchema = Type.Object({
  id: Type.Integer(),
  name: Type.String(),
  description: Nullable(Type.String()),
  kind: Kind,
  deviceType: Type.String(),
  key: Type.Optional(Type.String()),
  operator: Type.Optional(Operator),
  raiseThreshold: Type.Optional(Type.Number()),
  clearThreshold: Type.Optional(Type.Number()),
  geofence: Type.Optional(Type.String()),
  value: Type.Optional(Scalar('match rules: the value compared with')),
  minDurationSeconds: Type.Integer(),
  clearDurationSeconds: Type.Integer(),
  severity: Severity,
  enabled: Type.Boolean(),
  builtin: Type.Boolean({ description: 'seeded with GuanLink: may be changed and disabled, not deleted' }),
  createdAt: At,
  updatedAt: At,
});

const ruleFields = {
  description: Type.Optional(Nullable(SafeText(1000))),
  kind: Type.Optional(Kind),
  deviceType: SafeText(64, { description: 'the device type whose devices the rule watches' }),
  key: Type.Optional(
    Nullable(SafeText(MAX_KEY_LENGTH, { description: 'threshold and match rules: a telemetry key the type declares (or latitude/longitude/altitude for moving types)' })),
  ),
  operator: Type.Optional(Nullable(Operator)),
  raiseThreshold: Type.Optional(Nullable(Type.Number({ description: 'threshold rules: the line whose crossing raises the alarm' }))),
  clearThreshold: Type.Optional(
    Nullable(Type.Number({ description: "threshold rules: the line back past which it clears (hysteresis); default the raise threshold. For '>' at or below it, for '<' at or above it" })),
  ),
  geofence: Type.Optional(Nullable(SafeText(200, { description: 'geofence_exit rules: the name of the geofence the devices must stay in' }))),
  // Checked by core/alarm-match.ts, not here: ajv's type coercion would take false for 0 (or 0 for false) in a union of scalars.
  value: Type.Optional(
    Type.Unknown({
      description: `match rules: the string (at most ${TELEMETRY_VALUE_LIMITS.maxStringLength} characters), number or boolean the key is compared with, of the key's declared type (strings compare exactly)`,
    }),
  ),
  minDurationSeconds: Type.Optional(Seconds('the raise condition must hold on every reading this long before the alarm is raised (default 0)')),
  clearDurationSeconds: Type.Optional(Seconds('the clear condition must hold this long before the alarm is cleared (default 0)')),
  severity: Severity,
  enabled: Type.Optional(Type.Boolean({ default: true })),
};
const RuleBody = Type.Object({ name: Text(100, 'unique'), ...ruleFields }, { additionalProperties: false });
const RulePatch = Type.Partial(RuleBody, { additionalProperties: false });
const RuleIdParams = Type.Object({ id: Int32Id() });
const AlarmIdParams = Type.Object({ id: Int64Id() });

const Position = Type.Object({ lat: Type.Number(), lng: Type.Number() });
const AlarmSchema = Type.Object({
  id: Type.Integer(),
  ruleId: Nullable(Type.Integer({ description: 'null once the rule was deleted' })),
  ruleName: Type.String(),
  kind: Kind,
  key: Nullable(Type.String()),
  operator: Nullable(Operator),
  threshold: Nullable(Type.Number({ description: 'threshold rules: the raise threshold when it was raised' })),
  matchValue: Nullable(Scalar('match rules: the value compared with when it was raised')),
  geofence: Nullable(Type.String()),
  severity: Severity,
  status: Type.Enum(ALARM_STATUSES),
  device: Type.Object({ id: Type.Integer(), name: Type.String(), type: Type.String(), domain: Domain }),
  position: Nullable(Position),
  conditionSince: At,
  raisedAt: At,
  value: Nullable(Scalar('the value that raised it (a number for threshold rules; as sent for match rules)')),
  lastValue: Nullable(Scalar('the latest value while open (written every few seconds) or at clear')),
  lastValueAt: Nullable(At),
  peakValue: Nullable(Type.Number({ description: "the worst value while open (highest for '>' rules, lowest for '<')" })),
  acknowledgedAt: Nullable(At),
  acknowledgedBy: Nullable(Type.String()),
  ackNote: Nullable(Type.String()),
  clearedAt: Nullable(At),
  clearedBy: Nullable(Type.String({ description: 'who cleared it by hand; null when the system did' })),
  clearReason: Nullable(Type.Enum(CLEAR_REASONS)),
  clearNote: Nullable(Type.String()),
});
const { position: _position, ...alarmProperties } = AlarmSchema.properties;
const AlarmFeature = Type.Object({
  type: Type.Literal('Feature'),
  id: Type.Integer(),
  geometry: Nullable(Type.Object({ type: Type.Literal('Point'), coordinates: Type.Array(Type.Number()) })),
  properties: Type.Object(alarmProperties),
});
const AlarmPage = Type.Object({
  items: Type.Array(AlarmSchema),
  nextCursor: Nullable(Type.Integer({ description: 'pass as cursor for the next page; null on the last' })),
});
const AlarmFeatureCollection = Type.Object({
  type: Type.Literal('FeatureCollection'),
  features: Type.Array(AlarmFeature),
  nextCursor: Nullable(Type.Integer()),
});
const Actor = Type.Object(
  { by: Type.Optional(Text(200, "who does it (a user name); default: the credential's name")), note: Type.Optional(SafeText(1000)) },
  { additionalProperties: false },
);

const KIND_FIELDS: Record<AlarmRule['kind'], readonly ('key' | 'operator' | 'raiseThreshold' | 'clearThreshold' | 'geofence' | 'value')[]> = {
  threshold: ['key', 'operator', 'raiseThreshold', 'clearThreshold'],
  geofence_exit: ['geofence'],
  match: ['key', 'operator', 'value'],
};

const STATUS_TEXT = `${ALARM_STATUSES.join(', ')} or open (raised and acknowledged)`;
const GEOJSON = 'application/geo+json';


const ERROR_STATUS: Record<AlarmError['code'], [number, string]> = {
  invalid: [400, 'Bad Request'],
  read_only: [403, 'Forbidden'],
  not_found: [404, 'Not Found'],
  conflict: [409, 'Conflict'],
};

async function alarmErrorHandler(err: FastifyError | Error, _request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  if (!(err instanceof AlarmError)) throw err;
  const [statusCode, error] = ERROR_STATUS[err.code];
  return reply.code(statusCode).send({ statusCode, error, message: err.message });
}

/** The rule as its JSON: the fields of its kind only. */
function ruleJson(rule: AlarmRule): Static<typeof AlarmRuleSchema> {
  return rule;
}

function feature(alarm: Alarm) {
  const { position, ...properties } = alarm;
  return { type: 'Feature' as const, id: alarm.id, geometry: position && { type: 'Point' as const, coordinates: [position.lng, position.lat] }, properties };
}

/** Comma-separated values, each one of `allowed`; the 400 message when one is not. */
function parseList<T extends string>(raw: string | undefined, allowed: readonly T[], name: string, aliases: Record<string, T[]> = {}): T[] | string | undefined {
  if (raw === undefined) return undefined;
  const out = new Set<T>();
  for (const part of raw.split(',').map((s) => s.trim())) {
    if (Object.hasOwn(aliases, part)) aliases[part]!.forEach((v) => out.add(v));
    else if ((allowed as readonly string[]).includes(part)) out.add(part as T);
    else return `${name}: "${part}" is not one of ${allowed.join(', ')}${Object.keys(aliases).length ? `, ${Object.keys(aliases).join(', ')}` : ''}`;
  }
  return [...out];
}

/**
 * Alarm rules (CRUD) and alarms: list, one, acknowledge, clear. Alarms are raised and cleared by
 * core/alarms.ts from committed readings and geofence events; these routes are the operators' side.
 */
export const alarmsRoutes: FastifyPluginAsyncTypebox<{ alarms: AlarmService; access: Access; registry: DeviceRegistry }> = async (app, { alarms, access, registry }) => {
  app.setErrorHandler(alarmErrorHandler);
  // Rules belong to device types: a scoped credential sees the rules of its domains and changes none.
  const ruleVisible = (p: Principal, rule: { deviceType: string }) => {
    const type = registry.deviceType(rule.deviceType);
    return !type || access.domainVisible(p, type.domain);
  };
  app.addHook('preValidation', async (request) => {
    if (request.method !== 'GET' && request.routeOptions.url?.startsWith('/api/v1/alarm-rules')) access.requireUnscoped(request.principal, 'changing alarm rules');
  });
  /** An alarm outside the principal's scope (the rule of live streams: core/access/visibility.ts) is answered as one that does not exist. */
  const visibleAlarm = async (p: Principal, id: number) => {
    const alarm = await alarms.get(id);
    if (!alarm || !(await subjectVisible(access, p, { deviceId: alarm.device.id, domain: alarm.device.domain, position: alarm.position }))) {
      throw new AlarmError('not_found', `no alarm ${id}`);
    }
    return alarm;
  };
  /** The same rule as SQL, for lists. */
  const alarmScope = async (p: Principal): Promise<AlarmFilter['scope']> => {
    const positionSql = access.eventsSql(p, { lng: 'pos.lng', lat: 'pos.lat' });
    return {
      domains: p.scope.domains ?? undefined,
      positionSql,
      unpositionedDeviceIds: positionSql ? [...((await access.visibleDevices(p)) ?? [])] : undefined,
      ownedDeviceIds: [...access.ownedDevices(p)],
    };
  };

  app.get(
    '/alarm-rules',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Alarm rules, optionally of one device type',
        tags: ['alarms'],
        querystring: Type.Object({ deviceType: Type.Optional(SafeText(64)), enabled: Type.Optional(Type.Boolean()) }),
        response: { 200: Type.Object({ items: Type.Array(AlarmRuleSchema) }) },
      },
    },
    async (request) => {
      const { deviceType, enabled } = request.query;
      const items = alarms.listRules().filter((r) => ruleVisible(request.principal, r) && (deviceType === undefined || r.deviceType === deviceType) && (enabled === undefined || r.enabled === enabled));
      return { items: items.map(ruleJson) };
    },
  );

  app.get(
    '/alarm-rules/:id',
    { config: { permission: 'read' }, schema: { summary: 'One alarm rule', tags: ['alarms'], params: RuleIdParams, response: { 200: AlarmRuleSchema, 404: ErrorResponse } } },
    async (request) => {
      const rule = alarms.rule(request.params.id);
      if (!rule || !ruleVisible(request.principal, rule)) throw new AlarmError('not_found', `no alarm rule ${request.params.id}`);
      return ruleJson(rule);
    },
  );

  app.post(
    '/alarm-rules',
    {
      config: { permission: 'alarms:write' }, schema: {
        summary: 'Create an alarm rule',
        description:
          'A threshold rule watches one telemetry key of every device of a type: raised when the value is beyond raiseThreshold for minDurationSeconds, ' +
          'cleared when it is back beyond clearThreshold for clearDurationSeconds. A match rule compares the key with value (== or !=) for as long instead, cleared by the opposite. ' +
          'A geofence_exit rule is raised when a device of a moving type leaves the named geofence. ' +
          "400 for an unknown device type, a key the type does not declare, thresholds the wrong way round, an operator of the other kind, or a value not of the key's type.",
        tags: ['alarms'],
        body: RuleBody,
        response: { 201: AlarmRuleSchema, 400: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request, reply) => reply.code(201).send(ruleJson(await alarms.createRule(request.body as AlarmRuleInput))),
  );

  app.put(
    '/alarm-rules/:id',
    {
      config: { permission: 'alarms:write' }, schema: {
        summary: 'Replace an alarm rule',
        description:
          'Open alarms stay open under new thresholds and durations (pending waits start over); they are cleared (clearReason rule_changed) when the kind, type, key, operator, match value or geofence changes, and (rule_disabled) when the rule is disabled.',
        tags: ['alarms'],
        params: RuleIdParams,
        body: RuleBody,
        response: { 200: AlarmRuleSchema, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => ruleJson(await alarms.replaceRule(request.params.id, request.body as AlarmRuleInput)),
  );

  app.patch(
    '/alarm-rules/:id',
    {
      config: { permission: 'alarms:write' }, schema: {
        summary: 'Change some fields of an alarm rule (e.g. {"enabled": false})',
        description: 'Merged with the rule, then checked and applied as a replacement (see PUT).',
        tags: ['alarms'],
        params: RuleIdParams,
        body: RulePatch,
        response: { 200: AlarmRuleSchema, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => {
      const old = alarms.rule(request.params.id);
      if (!old) throw new AlarmError('not_found', `no alarm rule ${request.params.id}`);
      const { id: _id, builtin: _builtin, createdAt: _c, updatedAt: _u, ...fields } = old;
      const merged = { ...fields, ...request.body } as AlarmRuleInput;
      // Switching kind drops the fields the new kind does not have, unless given.
      if (request.body.kind !== undefined && request.body.kind !== old.kind) {
        for (const f of KIND_FIELDS[old.kind]) if (!KIND_FIELDS[request.body.kind].includes(f) && !(f in request.body)) merged[f] = null;
      }
      // A new raise threshold alone takes the clear threshold along (same hysteresis), unless that is given too.
      if (old.kind === 'threshold' && request.body.raiseThreshold != null && request.body.clearThreshold === undefined) {
        merged.clearThreshold = request.body.raiseThreshold - (old.raiseThreshold - old.clearThreshold);
      }
      return ruleJson(await alarms.replaceRule(request.params.id, merged));
    },
  );

  app.delete(
    '/alarm-rules/:id',
    {
      config: { permission: 'alarms:write' }, schema: {
        summary: 'Delete an alarm rule',
        description: 'Its open alarms are cleared (clearReason rule_deleted); its alarms stay in the history with ruleId null. Built-in rules cannot be deleted (403): disable them.',
        tags: ['alarms'],
        params: RuleIdParams,
        response: { 204: Type.Null(), 403: ErrorResponse, 404: ErrorResponse },
      },
    },
    async (request, reply) => {
      await alarms.deleteRule(request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.get(
    '/alarms',
    {
      config: { permission: 'read' }, schema: {
        summary: 'Alarms, newest first, filtered; JSON or GeoJSON',
        description:
          `status: comma-separated ${STATUS_TEXT}. severity: comma-separated ${ALARM_SEVERITIES.join(', ')}. from/to: raisedAt in [from, to). ` +
          `With format=geojson (or Accept: ${GEOJSON}) the answer is a GeoJSON FeatureCollection: one Point feature per alarm at the position it was raised at ` +
          '(moving devices) or the device’s registered location, geometry null when neither is known.',
        tags: ['alarms'],
        querystring: Type.Object({
          status: Type.Optional(SafeText(100)),
          device: Type.Optional(Int32Id({ description: 'device id' })),
          domain: Type.Optional(SafeText(40)),
          severity: Type.Optional(SafeText(100)),
          from: Type.Optional(SafeText(40, { description: 'ISO 8601 date-time or epoch milliseconds' })),
          to: Type.Optional(SafeText(40, { description: 'ISO 8601 date-time or epoch milliseconds' })),
          limit: Limit(1000, { default: 100 }),
          cursor: Type.Optional(Int64Id({ description: "the previous page's nextCursor" })),
          format: Type.Optional(SafeText(20, { description: `json (default) or geojson` })),
        }),
        response: { 200: Type.Union([AlarmPage, AlarmFeatureCollection]), 400: ErrorResponse },
      },
    },
    async (request, reply) => {
      const q = request.query;
      const status = parseList<AlarmStatus>(q.status, ALARM_STATUSES, 'status', { open: ['raised', 'acknowledged'] });
      if (typeof status === 'string') return reply.code(400).send(badRequest(status));
      const severity = parseList<AlarmSeverity>(q.severity, ALARM_SEVERITIES, 'severity');
      if (typeof severity === 'string') return reply.code(400).send(badRequest(severity));
      if (q.domain !== undefined && !(DOMAINS as readonly string[]).includes(q.domain)) {
        return reply.code(400).send(badRequest(`domain: "${q.domain}" is not one of ${DOMAINS.join(', ')}`));
      }
      const from = q.from === undefined ? undefined : parseInstant(q.from);
      if (q.from !== undefined && !from) return reply.code(400).send(badRequest(`from: "${q.from}" is not an ISO 8601 date-time or epoch milliseconds`));
      const to = q.to === undefined ? undefined : parseInstant(q.to);
      if (q.to !== undefined && !to) return reply.code(400).send(badRequest(`to: "${q.to}" is not an ISO 8601 date-time or epoch milliseconds`));
      if (from && to && from >= to) return reply.code(400).send(badRequest('from: must be before to'));
      let geojson: boolean;
      if (q.format === undefined) geojson = (request.headers.accept ?? '').includes(GEOJSON);
      else if (q.format === 'json' || q.format === 'geojson') geojson = q.format === 'geojson';
      else return reply.code(400).send(badRequest(`format: "${q.format}" is not one of json, geojson`));

      const items = await alarms.list({ status, severity, deviceId: q.device, scope: await alarmScope(request.principal), domain: q.domain as DomainName | undefined, from, to, limit: q.limit, beforeId: q.cursor });
      const nextCursor = items.length === q.limit ? items[items.length - 1]!.id : null;
      if (!geojson) return { items, nextCursor };
      reply.type(GEOJSON);
      return { type: 'FeatureCollection' as const, features: items.map(feature), nextCursor };
    },
  );

  app.get(
    '/alarms/:id',
    { config: { permission: 'read' }, schema: { summary: 'One alarm', tags: ['alarms'], params: AlarmIdParams, response: { 200: AlarmSchema, 404: ErrorResponse } } },
    async (request) => visibleAlarm(request.principal, request.params.id),
  );

  app.post(
    '/alarms/:id/ack',
    {
      config: { permission: 'alarms:ack' }, schema: {
        summary: 'Acknowledge a raised alarm (who, with an optional note)',
        description: '409 when it is already acknowledged or cleared.',
        tags: ['alarms'],
        params: AlarmIdParams,
        body: Actor,
        response: { 200: AlarmSchema, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => {
      await visibleAlarm(request.principal, request.params.id);
      return alarms.acknowledge(request.params.id, request.body.by ?? request.principal.name, request.body.note ?? null);
    },
  );

  app.post(
    '/alarms/:id/clear',
    {
      config: { permission: 'alarms:ack' }, schema: {
        summary: 'Clear an open alarm by hand (who, with an optional note)',
        description:
          '409 when it is already cleared. Clearing does not silence the rule: while the condition still holds a new alarm is raised once it has held for the rule’s minimum duration again (acknowledge instead, or disable the rule).',
        tags: ['alarms'],
        params: AlarmIdParams,
        body: Actor,
        response: { 200: AlarmSchema, 400: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse },
      },
    },
    async (request) => {
      await visibleAlarm(request.principal, request.params.id);
      return alarms.clear(request.params.id, request.body.by ?? request.principal.name, request.body.note ?? null);
    },
  );
};
