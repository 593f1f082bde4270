import type pg from 'pg';
import { POSITION_KEYS } from './device-types.ts';
import type { Domain } from './domains.ts';
import type { GeofenceEvent } from './geofences.ts';
import type { Logger } from './log.ts';
import type { Device, DeviceRegistry } from './registry.ts';
import type { Reading } from '../ingest/readings.ts';
import { keyProblem } from '../ingest/validate.ts';
import { comparableValue, MATCH_OPERATORS, matches, matchValueProblem, type AlarmScalar, type MatchOperator } from './alarm-match.ts';
import type { ValueType } from './device-types.ts';

/**
 * Alarms: rules per device type and telemetry key (or geofence), evaluated against every
 * committed reading, with hysteresis (separate raise and clear thresholds) and minimum durations
 * so a value wobbling around a line does not flap; match rules compare a key for equality
 * (core/alarm-match.ts). Lifecycle: raised → acknowledged → cleared
 * (by the condition, by hand, or because the rule was disabled, changed or deleted), each step
 * with who and when. Changes go to `onChange` listeners after they are committed (live streams,
 * MQTT events).
 *
 * Evaluation never holds ingest up: committed batches go to a bounded queue (ALARM_QUEUE_READINGS
 * readings; a geofence event counts as one); when it is full, further batches are dropped,
 * counted (`droppedReadings`) and logged, and evaluation carries on with later readings. Dropped
 * readings are simply not seen: a raise or clear comes with a later reading, and a pending wait
 * misses an interruption only they showed; a dropped geofence event waits for the device's next
 * one. The queue only fills when the database cannot take the rare writes or the process is
 * starved; evaluation itself is a comparison per rule in memory. The queue is drained in order by
 * one worker; a raise or clear is written (one statement each, rare) before the next reading is
 * evaluated, and when that write fails the transition is undone in memory and retried with the
 * next reading.
 *
 * State kept in memory per (rule, device): whether an alarm is open, and since when a pending
 * raise or clear condition has held. After a restart open alarms are reloaded from the database
 * (so they clear correctly); pending durations start again from the first reading after the restart.
 * Readings older than the last one evaluated for a (rule, device) are ignored.
 */

export const ALARM_SEVERITIES = ['critical', 'major', 'minor', 'warning'] as const;
export type AlarmSeverity = (typeof ALARM_SEVERITIES)[number];
export const THRESHOLD_OPERATORS = ['>', '>=', '<', '<='] as const;
export type ThresholdOperator = (typeof THRESHOLD_OPERATORS)[number];
export const ALARM_OPERATORS = [...THRESHOLD_OPERATORS, ...MATCH_OPERATORS] as const;
export type AlarmOperator = (typeof ALARM_OPERATORS)[number];
export const ALARM_RULE_KINDS = ['threshold', 'geofence_exit', 'match'] as const;
export type AlarmRuleKind = (typeof ALARM_RULE_KINDS)[number];
export const ALARM_STATUSES = ['raised', 'acknowledged', 'cleared'] as const;
export type AlarmStatus = (typeof ALARM_STATUSES)[number];
export const CLEAR_REASONS = ['condition', 'manual', 'rule_disabled', 'rule_changed', 'rule_deleted', 'device_type_changed'] as const;
export type ClearReason = (typeof CLEAR_REASONS)[number];

/** Readings waiting for evaluation at most; batches beyond are dropped (see above). */
export const ALARM_QUEUE_READINGS = 200_000;
/** How often the latest and worst values of open alarms are written. */
const LAST_VALUE_FLUSH_MS = 5000;
const MAX_DURATION_SECONDS = 604_800;

// ---------------------------------------------------------------------------------------------
// The condition state machine (pure)

/** What one observation says about a rule's condition. */
export interface Observation {
  /** Epoch milliseconds. */
  ts: number;
  /** The raise condition holds (value beyond the raise threshold; outside the geofence). */
  breach: boolean;
  /** The clear condition holds (value back beyond the clear threshold; inside the geofence). */
  recovered: boolean;
}

export interface ConditionState {
  open: boolean;
  /** Since when the pending condition (breach while closed, recovered while open) has held; null: none. */
  pendingSince: number | null;
  /** Timestamp of the last observation evaluated (older ones are ignored). */
  lastTs: number;
}

export const initialCondition = (open = false): ConditionState => ({ open, pendingSince: null, lastTs: -Infinity });

/**
 * One step: the state after `o`, and whether an alarm is to be raised or cleared. A raise needs
 * the breach on every observation for `raiseAfterMs` (0: at once); a clear needs the recovery for
 * `clearAfterMs`. Between the thresholds (neither breach nor recovered) an open alarm stays open
 * and a closed one stays closed, and any pending wait starts over.
 */
export function stepCondition(
  state: ConditionState,
  o: Observation,
  timing: { raiseAfterMs: number; clearAfterMs: number },
): { state: ConditionState; change: 'raise' | 'clear' | null } {
  if (o.ts < state.lastTs) return { state, change: null };
  const holds = state.open ? o.recovered : o.breach;
  if (!holds) return { state: { open: state.open, pendingSince: null, lastTs: o.ts }, change: null };
  const since = state.pendingSince ?? o.ts;
  if (o.ts - since >= (state.open ? timing.clearAfterMs : timing.raiseAfterMs)) {
    return { state: { open: !state.open, pendingSince: null, lastTs: o.ts }, change: state.open ? 'clear' : 'raise' };
  }
  return { state: { open: state.open, pendingSince: since, lastTs: o.ts }, change: null };
}

/** Whether `value` is beyond the rule's raise threshold (breach) and beyond its clear threshold (recovered). */
export function thresholdObservation(rule: Pick<ThresholdRule, 'operator' | 'raiseThreshold' | 'clearThreshold'>, ts: number, value: number): Observation {
  const { operator, raiseThreshold: raise, clearThreshold: clear } = rule;
  switch (operator) {
    case '>':
      return { ts, breach: value > raise, recovered: value < clear };
    case '>=':
      return { ts, breach: value >= raise, recovered: value < clear };
    case '<':
      return { ts, breach: value < raise, recovered: value > clear };
    case '<=':
      return { ts, breach: value <= raise, recovered: value > clear };
  }
}

/** Whether `b` is worse than `a` for a rule with this operator. */
const worse = (operator: ThresholdOperator, a: number, b: number) => (operator === '>' || operator === '>=' ? b > a : b < a);

// ---------------------------------------------------------------------------------------------
// Rules

interface RuleCommon {
  id: number;
  name: string;
  description: string | null;
  deviceType: string;
  minDurationSeconds: number;
  clearDurationSeconds: number;
  severity: AlarmSeverity;
  enabled: boolean;
  builtin: boolean;
  createdAt: string;
  updatedAt: string;
}
export interface ThresholdRule extends RuleCommon {
  kind: 'threshold';
  key: string;
  operator: ThresholdOperator;
  raiseThreshold: number;
  clearThreshold: number;
}
export interface GeofenceExitRule extends RuleCommon {
  kind: 'geofence_exit';
  geofence: string;
}
export interface MatchRule extends RuleCommon {
  kind: 'match';
  key: string;
  operator: MatchOperator;
  value: AlarmScalar;
}
export type AlarmRule = ThresholdRule | GeofenceExitRule | MatchRule;

/** What a rule is made of (create and replace); clearThreshold defaults to the raise threshold. */
export interface AlarmRuleInput {
  name: string;
  description?: string | null;
  kind?: AlarmRuleKind;
  deviceType: string;
  key?: string | null;
  operator?: AlarmOperator | null;
  raiseThreshold?: number | null;
  clearThreshold?: number | null;
  geofence?: string | null;
  /** Match rules: the value compared with. */
  value?: AlarmScalar | null;
  minDurationSeconds?: number;
  clearDurationSeconds?: number;
  severity: AlarmSeverity;
  enabled?: boolean;
}

export class AlarmError extends Error {
  constructor(
    readonly code: 'invalid' | 'not_found' | 'conflict' | 'read_only',
    message: string,
  ) {
    super(message);
  }
}

/** Geofences a rule may name: whether one exists (absent until geofences are wired). */
export type GeofenceLookup = (name: string) => Promise<boolean> | boolean;

// ---------------------------------------------------------------------------------------------
// Alarms

export interface Alarm {
  id: number;
  ruleId: number | null;
  ruleName: string;
  kind: AlarmRuleKind;
  key: string | null;
  operator: AlarmOperator | null;
  threshold: number | null;
  /** Match rules: the value compared with when it was raised. */
  matchValue: AlarmScalar | null;
  geofence: string | null;
  severity: AlarmSeverity;
  status: AlarmStatus;
  device: { id: number; name: string; type: string; domain: Domain };
  /** Where the device was when it was raised (moving devices), else its registered location; null when unknown. */
  position: { lat: number; lng: number } | null;
  conditionSince: string;
  raisedAt: string;
  value: AlarmScalar | null;
  lastValue: AlarmScalar | null;
  lastValueAt: string | null;
  peakValue: number | null;
  acknowledgedAt: string | null;
  acknowledgedBy: string | null;
  ackNote: string | null;
  clearedAt: string | null;
  clearedBy: string | null;
  clearReason: ClearReason | null;
  clearNote: string | null;
}

export interface AlarmChange {
  kind: 'raised' | 'acknowledged' | 'cleared';
  alarm: Alarm;
}

export interface AlarmFilter {
  status?: AlarmStatus[];
  deviceId?: number;
  /**
   * A principal's scope (core/access/visibility.ts, the same rule as live streams): alarms of
   * these domains; with an area, those whose position (`positionSql` on \`lng\`/\`lat\`) is inside or,
   * without a position, of these devices.
   */
  scope?: { domains?: readonly Domain[]; positionSql?: string; unpositionedDeviceIds?: readonly number[] | null; ownedDeviceIds?: readonly number[] };
  domain?: Domain;
  severity?: AlarmSeverity[];
  from?: Date;
  to?: Date;
  limit: number;
  /** Alarms with an id below this (the previous page's last id). */
  beforeId?: number;
}

/** A geofence event as the geofences module reports it (only what alarms need). */
export type GeofenceEventLike = Pick<GeofenceEvent, 'kind' | 'deviceId' | 'geofenceName' | 'ts' | 'lat' | 'lng'>;

interface DeviceInfo {
  id: number;
  name: string;
  type: string;
  domain: Domain;
}

interface TrackedState extends ConditionState {
  alarmId: number | null;
  /** Outside the rule's geofence (geofence_exit rules). */
  outside?: boolean;
  lastValue?: AlarmScalar;
  lastValueTs?: number;
  peak?: number;
  dirty?: boolean;
}

type QueueItem = { kind: 'readings'; rows: readonly Reading[] } | { kind: 'geofence'; event: GeofenceEventLike };

const ALARM_SELECT = `
  SELECT a.*, d.name AS device_name, d.type AS device_type, t.domain AS device_domain, d.lat AS device_lat, d.lng AS device_lng
  FROM alarms a JOIN devices d ON d.id = a.device_id JOIN device_types t ON t.name = d.type`;

interface AlarmRow {
  id: string;
  rule_id: number | null;
  device_id: number;
  rule_name: string;
  kind: AlarmRuleKind;
  key: string | null;
  operator: AlarmOperator | null;
  threshold: number | null;
  match_value: AlarmScalar | null;
  geofence: string | null;
  severity: AlarmSeverity;
  status: AlarmStatus;
  condition_since: Date;
  raised_at: Date;
  value: number | null;
  value_json: AlarmScalar | null;
  last_value: number | null;
  last_value_json: AlarmScalar | null;
  last_value_at: Date | null;
  peak_value: number | null;
  lat: number | null;
  lng: number | null;
  acknowledged_at: Date | null;
  acknowledged_by: string | null;
  ack_note: string | null;
  cleared_at: Date | null;
  cleared_by: string | null;
  clear_reason: ClearReason | null;
  clear_note: string | null;
  device_name: string;
  device_type: string;
  device_domain: Domain;
  device_lat: number | null;
  device_lng: number | null;
}

const iso = (d: Date | null) => (d === null ? null : d.toISOString());

function toAlarm(r: AlarmRow): Alarm {
  const lat = r.lat ?? r.device_lat;
  const lng = r.lng ?? r.device_lng;
  return {
    id: Number(r.id),
    ruleId: r.rule_id,
    ruleName: r.rule_name,
    kind: r.kind,
    key: r.key,
    operator: r.operator,
    threshold: r.threshold,
    matchValue: r.match_value,
    geofence: r.geofence,
    severity: r.severity,
    status: r.status,
    device: { id: r.device_id, name: r.device_name, type: r.device_type, domain: r.device_domain },
    position: lat !== null && lng !== null ? { lat, lng } : null,
    conditionSince: r.condition_since.toISOString(),
    raisedAt: r.raised_at.toISOString(),
    value: r.value ?? r.value_json,
    lastValue: r.last_value ?? r.last_value_json,
    lastValueAt: iso(r.last_value_at),
    peakValue: r.peak_value,
    acknowledgedAt: iso(r.acknowledged_at),
    acknowledgedBy: r.acknowledged_by,
    ackNote: r.ack_note,
    clearedAt: iso(r.cleared_at),
    clearedBy: r.cleared_by,
    clearReason: r.clear_reason,
    clearNote: r.clear_note,
  };
}

interface RuleRow {
  id: number;
  name: string;
  description: string | null;
  kind: AlarmRuleKind;
  device_type: string;
  key: string | null;
  operator: AlarmOperator | null;
  raise_threshold: number | null;
  clear_threshold: number | null;
  geofence: string | null;
  value: AlarmScalar | null;
  min_duration_seconds: number;
  clear_duration_seconds: number;
  severity: AlarmSeverity;
  enabled: boolean;
  builtin: boolean;
  created_at: Date;
  updated_at: Date;
}

function toRule(r: RuleRow): AlarmRule {
  const common: RuleCommon = {
    id: r.id,
    name: r.name,
    description: r.description,
    deviceType: r.device_type,
    minDurationSeconds: r.min_duration_seconds,
    clearDurationSeconds: r.clear_duration_seconds,
    severity: r.severity,
    enabled: r.enabled,
    builtin: r.builtin,
    createdAt: r.created_at.toISOString(),
    updatedAt: r.updated_at.toISOString(),
  };
  if (r.kind === 'geofence_exit') return { ...common, kind: 'geofence_exit', geofence: r.geofence! };
  if (r.kind === 'match') return { ...common, kind: 'match', key: r.key!, operator: r.operator as MatchOperator, value: r.value! };
  return { ...common, kind: 'threshold', key: r.key!, operator: r.operator as ThresholdOperator, raiseThreshold: r.raise_threshold!, clearThreshold: r.clear_threshold! };
}

/**
 * The reading's value of `key`: position keys come from the reading's position; a boolean counts
 * as 1 (true) or 0 (false), so `relay >= 1` alarms while it is true; strings and JSON values are
 * not compared.
 */
function readingValue(row: Reading, key: string): number | undefined {
  const value = positionValue(row, key) ?? row.values[key];
  if (value !== undefined) return value;
  const other = row.jsonValues?.[key];
  return typeof other === 'boolean' ? Number(other) : undefined;
}

function positionValue(row: Reading, key: string): number | undefined {
  if (key === 'latitude') return row.lat;
  if (key === 'longitude') return row.lng;
  if (key === 'altitude') return row.alt;
  return undefined;
}

/** The reading's value of `key` for a match rule: a string, number or boolean as sent (objects and arrays are not compared). */
const readingScalar = (row: Reading, key: string): AlarmScalar | undefined => positionValue(row, key) ?? comparableValue(row.values[key] ?? row.jsonValues?.[key]);

/** An observed value in the alarm's columns: numbers in the float8 one, strings and booleans as JSON text for the jsonb one. */
const valueColumns = (v: AlarmScalar | undefined): [number | null, string | null] =>
  v === undefined ? [null, null] : typeof v === 'number' ? [v, null] : [null, JSON.stringify(v)];

/** Serialises async work (rule changes, REST actions and the evaluator's writes). */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(work: () => Promise<T>): Promise<T> {
    const result = this.tail.then(work, work);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

export class AlarmService {
  private rules = new Map<number, AlarmRule>();
  /** Enabled rules by device type. */
  private byType = new Map<string, AlarmRule[]>();
  private states = new Map<string, TrackedState>();
  private devices = new Map<number, DeviceInfo>();
  private listeners: ((change: AlarmChange) => void)[] = [];
  private queue: QueueItem[] = [];
  private queued = 0;
  private draining: Promise<void> | undefined;
  private readonly lock = new Mutex();
  private flushTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private lastDropWarning = 0;
  private geofenceExists: GeofenceLookup | undefined;
  /** Readings dropped because the queue was full. */
  droppedReadings = 0;

  constructor(
    private readonly opts: {
      pool: pg.Pool;
      registry: DeviceRegistry;
      log: Logger;
      maxQueuedReadings?: number;
    },
  ) {
    opts.registry.onChange((event) => {
      if (event.kind === 'deleted') this.forgetDevice(event.device.id);
      else if (event.kind === 'updated') this.deviceUpdated(event.device);
    });
    // A custom type is deleted only while no device has it: its rules go with it.
    opts.registry.onTypeChange(async (event) => {
      if (event.kind === 'deleted') await this.deleteRulesOfType(event.type.name);
    });
  }

  /** Loads the rules and the open alarms, and starts writing open alarms' latest values. */
  async start(): Promise<void> {
    await this.loadRules();
    const { rows } = await this.opts.pool.query<{ id: string; rule_id: number; device_id: number; kind: AlarmRuleKind }>(
      `SELECT id, rule_id, device_id, kind FROM alarms WHERE status <> 'cleared' AND rule_id IS NOT NULL`,
    );
    for (const r of rows) {
      // A geofence alarm reloaded open: the device is taken to be outside until it enters again.
      this.states.set(stateKey(r.rule_id, r.device_id), { ...initialCondition(true), alarmId: Number(r.id), outside: r.kind === 'geofence_exit' ? true : undefined });
    }
    if (rows.length > 0) this.opts.log.info({ open: rows.length }, 'open alarms reloaded');
    this.flushTimer = setInterval(() => void this.flushLastValues(), LAST_VALUE_FLUSH_MS);
    this.flushTimer.unref();
  }

  /** Evaluates what is queued, writes the latest values, and stops. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.flushTimer) clearInterval(this.flushTimer);
    await this.idle();
    await this.flushLastValues();
  }

  onChange(listener: (change: AlarmChange) => void): void {
    this.listeners.push(listener);
  }

  /** Lets geofence_exit rules be checked against existing geofences. */
  useGeofences(exists: GeofenceLookup): void {
    this.geofenceExists = exists;
  }

  /** Readings waiting for evaluation. */
  get pendingReadings(): number {
    return this.queued;
  }

  /** Alarms open (raised or acknowledged) as known in memory. */
  get openAlarms(): number {
    let n = 0;
    for (const s of this.states.values()) if (s.open) n++;
    return n;
  }

  // ------------------------------------------------------------------ input

  /** A committed batch (ingest's onCommitted listener): queued, never blocks. */
  readingsCommitted(rows: readonly Reading[]): void {
    if (this.stopped || rows.length === 0 || this.byType.size === 0) return;
    if (this.admit(rows.length)) this.enqueue({ kind: 'readings', rows });
  }

  /** A geofence event (the geofences module's listener); counts as one reading in the queue's bound. */
  geofenceEvent(event: GeofenceEventLike): void {
    if (this.stopped || event.kind === 'dwell') return;
    if (this.admit(1)) this.enqueue({ kind: 'geofence', event });
  }

  /** Room for `n` more in the queue? Otherwise they are counted as dropped (and logged now and then). */
  private admit(n: number): boolean {
    if (this.queued + n <= (this.opts.maxQueuedReadings ?? ALARM_QUEUE_READINGS)) {
      this.queued += n;
      return true;
    }
    this.droppedReadings += n;
    const now = Date.now();
    if (now - this.lastDropWarning > 10_000) {
      this.lastDropWarning = now;
      this.opts.log.warn({ queued: this.queued, dropped: this.droppedReadings }, 'alarm evaluation queue full: readings dropped from evaluation');
    }
    return false;
  }

  /** Resolves once everything queued so far has been evaluated (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.draining) await this.draining;
  }

  private enqueue(item: QueueItem): void {
    this.queue.push(item);
    this.kick();
  }

  private kick(): void {
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
      if (this.queue.length > 0) this.kick();
    });
  }

  private async drain(): Promise<void> {
    await new Promise((r) => setImmediate(r));
    while (this.queue.length > 0) {
      const item = this.queue.shift()!;
      this.queued -= item.kind === 'readings' ? item.rows.length : 1;
      try {
        await this.lock.run(() => (item.kind === 'readings' ? this.evaluateReadings(item.rows) : this.evaluateGeofence(item.event)));
      } catch (err) {
        this.opts.log.error({ err }, 'alarm evaluation failed');
      }
    }
  }

  // ------------------------------------------------------------------ evaluation

  private async device(id: number): Promise<DeviceInfo | undefined> {
    const known = this.devices.get(id);
    if (known) return known;
    const d = await this.opts.registry.get(id);
    if (!d) return undefined;
    const info = { id: d.id, name: d.name, type: d.type, domain: d.domain };
    this.devices.set(id, info);
    return info;
  }

  private async evaluateReadings(rows: readonly Reading[]): Promise<void> {
    for (const row of rows) {
      const device = this.devices.get(row.deviceId) ?? (await this.device(row.deviceId));
      if (!device) continue;
      const rules = this.byType.get(device.type);
      if (!rules) continue;
      for (const rule of rules) {
        if (rule.kind === 'threshold') {
          const value = readingValue(row, rule.key);
          if (value === undefined) continue;
          const writing = this.observe(rule, device, thresholdObservation(rule, row.ts, value), row, value);
          if (writing) await writing;
        } else if (rule.kind === 'match') {
          const value = readingScalar(row, rule.key);
          if (value === undefined) continue;
          const breach = matches(rule, value);
          const writing = this.observe(rule, device, { ts: row.ts, breach, recovered: !breach }, row, value);
          if (writing) await writing;
        } else {
          // Still outside (or back in) since the last geofence event: durations advance with readings.
          const state = this.states.get(stateKey(rule.id, device.id));
          if (state?.outside === undefined) continue;
          const writing = this.observe(rule, device, { ts: row.ts, breach: state.outside, recovered: !state.outside }, row, undefined);
          if (writing) await writing;
        }
      }
    }
  }

  private async evaluateGeofence(event: GeofenceEventLike): Promise<void> {
    const device = await this.device(event.deviceId);
    if (!device) return;
    for (const rule of this.byType.get(device.type) ?? []) {
      if (rule.kind !== 'geofence_exit' || rule.geofence !== event.geofenceName) continue;
      const key = stateKey(rule.id, device.id);
      const state = this.states.get(key) ?? { ...initialCondition(), alarmId: null };
      state.outside = event.kind === 'exit';
      this.states.set(key, state);
      const at: Reading = { deviceId: device.id, domain: device.domain, ts: event.ts, values: {}, lat: event.lat, lng: event.lng };
      await this.observe(rule, device, { ts: event.ts, breach: state.outside, recovered: !state.outside }, at, undefined);
    }
  }

  /** Steps the (rule, device) state; returns the write's promise when the step raises or clears, else nothing (the common case stays synchronous). */
  private observe(rule: AlarmRule, device: DeviceInfo, o: Observation, row: Reading, value: AlarmScalar | undefined): Promise<void> | undefined {
    const key = stateKey(rule.id, device.id);
    const before = this.states.get(key) ?? { ...initialCondition(), alarmId: null };
    const { state, change } = stepCondition(before, o, { raiseAfterMs: rule.minDurationSeconds * 1000, clearAfterMs: rule.clearDurationSeconds * 1000 });
    if (state === before) return undefined; // an old reading: ignored
    const next: TrackedState = { ...before, ...state };
    if (state.open && value !== undefined && rule.kind !== 'geofence_exit' && o.ts >= (before.lastValueTs ?? -Infinity)) {
      next.lastValue = value;
      next.lastValueTs = o.ts;
      if (rule.kind === 'threshold' && typeof value === 'number') next.peak = next.peak === undefined || worse(rule.operator, next.peak, value) ? value : next.peak;
      next.dirty = true;
    }
    if (change === null) {
      this.states.set(key, next);
      return undefined;
    }
    return this.transition(rule, device, key, before, next, change, o, row, value);
  }

  private async transition(
    rule: AlarmRule,
    device: DeviceInfo,
    key: string,
    before: TrackedState,
    next: TrackedState,
    change: 'raise' | 'clear',
    o: Observation,
    row: Reading,
    value: AlarmScalar | undefined,
  ): Promise<void> {
    if (change === 'raise') {
      try {
        const since = before.pendingSince ?? o.ts;
        const { id, created } = await this.insertAlarm(rule, device, since, o.ts, value, row);
        next.alarmId = id;
        next.lastValue = value;
        next.lastValueTs = o.ts;
        next.peak = rule.kind === 'threshold' && typeof value === 'number' ? value : undefined;
        next.dirty = false;
        const alarm = created && id !== null ? await this.get(id) : undefined;
        if (alarm) this.emit({ kind: 'raised', alarm });
      } catch (err) {
        this.opts.log.error({ err, rule: rule.name, device: device.id }, 'alarm could not be raised; retrying with the next reading');
        return; // state unchanged: the next reading raises it
      }
    } else if (change === 'clear') {
      try {
        const alarm = await this.clearAlarm(rule.id, device.id, { at: new Date(o.ts), by: null, reason: 'condition', value, flushed: before });
        if (alarm) this.emit({ kind: 'cleared', alarm });
        next.alarmId = null;
        next.lastValue = undefined;
        next.lastValueTs = undefined;
        next.peak = undefined;
        next.dirty = false;
      } catch (err) {
        this.opts.log.error({ err, rule: rule.name, device: device.id }, 'alarm could not be cleared; retrying with the next reading');
        return;
      }
    }
    this.states.set(key, next);
  }

  private async insertAlarm(rule: AlarmRule, device: DeviceInfo, since: number, ts: number, value: AlarmScalar | undefined, row: Reading): Promise<{ id: number | null; created: boolean }> {
    const [number, json] = valueColumns(value);
    const { rows } = await this.opts.pool.query<{ id: string }>(
      `INSERT INTO alarms (rule_id, device_id, rule_name, kind, key, operator, threshold, match_value, geofence, severity, status,
                           condition_since, raised_at, value, value_json, last_value, last_value_json, last_value_at, peak_value, lat, lng)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $15::jsonb, $8, $9, 'raised', to_timestamp($10 / 1000.0), to_timestamp($11 / 1000.0), $12, $16::jsonb, $12, $16::jsonb,
               CASE WHEN $12::float8 IS NULL AND $16::jsonb IS NULL THEN NULL ELSE to_timestamp($11 / 1000.0) END,
               CASE WHEN $4 = 'threshold' THEN $12 END, $13, $14)
       ON CONFLICT (rule_id, device_id) WHERE status <> 'cleared' DO NOTHING
       RETURNING id`,
      [
        rule.id,
        device.id,
        rule.name,
        rule.kind,
        rule.kind === 'geofence_exit' ? null : rule.key,
        rule.kind === 'geofence_exit' ? null : rule.operator,
        rule.kind === 'threshold' ? rule.raiseThreshold : null,
        rule.kind === 'geofence_exit' ? rule.geofence : null,
        rule.severity,
        since,
        ts,
        number,
        row.lat ?? null,
        row.lng ?? null,
        rule.kind === 'match' ? JSON.stringify(rule.value) : null,
        json,
      ],
    );
    if (rows.length > 0) return { id: Number(rows[0]!.id), created: true };
    // Already open (raised meanwhile by another node): follow that one, announce nothing.
    const open = await this.opts.pool.query<{ id: string }>(`SELECT id FROM alarms WHERE rule_id = $1 AND device_id = $2 AND status <> 'cleared'`, [rule.id, device.id]);
    return { id: open.rows[0] ? Number(open.rows[0].id) : null, created: false };
  }

  /** Clears the open alarm of (rule, device) and returns it; undefined when none was open. */
  private async clearAlarm(
    ruleId: number,
    deviceId: number,
    how: { at: Date | null; by: string | null; reason: ClearReason; value?: AlarmScalar; note?: string | null; flushed?: TrackedState },
  ): Promise<Alarm | undefined> {
    const s = how.flushed;
    const [number, json] = valueColumns(how.value ?? s?.lastValue);
    const { rows } = await this.opts.pool.query<{ id: string }>(
      `UPDATE alarms SET status = 'cleared', cleared_at = COALESCE($3, now()), cleared_by = $4, clear_reason = $5, clear_note = $6,
              last_value = CASE WHEN $7::float8 IS NULL AND $9::jsonb IS NULL THEN last_value ELSE $7 END,
              last_value_json = CASE WHEN $7::float8 IS NULL AND $9::jsonb IS NULL THEN last_value_json ELSE $9::jsonb END,
              last_value_at = CASE WHEN $7::float8 IS NULL AND $9::jsonb IS NULL THEN last_value_at ELSE $3 END,
              peak_value = COALESCE($8, peak_value)
       WHERE rule_id = $1 AND device_id = $2 AND status <> 'cleared' RETURNING id`,
      [ruleId, deviceId, how.at, how.by, how.reason, how.note ?? null, number, s?.peak ?? null, json],
    );
    return rows.length === 0 ? undefined : this.get(Number(rows[0]!.id));
  }

  private emit(change: AlarmChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch (err) {
        this.opts.log.error({ err }, 'alarm listener failed');
      }
    }
  }

  private async flushLastValues(): Promise<void> {
    const dirty = [...this.states.values()].filter((s) => s.dirty && s.alarmId !== null && s.lastValue !== undefined);
    if (dirty.length === 0) return;
    for (const s of dirty) s.dirty = false;
    try {
      const columns = dirty.map((s) => valueColumns(s.lastValue));
      await this.opts.pool.query(
        `UPDATE alarms a SET last_value = u.v, last_value_json = u.j::jsonb, last_value_at = to_timestamp(u.ts / 1000.0), peak_value = coalesce(u.peak, a.peak_value)
         FROM (SELECT unnest($1::bigint[]) AS id, unnest($2::float8[]) AS v, unnest($5::text[]) AS j, unnest($3::float8[]) AS ts, unnest($4::float8[]) AS peak) u
         WHERE a.id = u.id AND a.status <> 'cleared'`,
        [dirty.map((s) => s.alarmId), columns.map(([v]) => v), dirty.map((s) => s.lastValueTs), dirty.map((s) => s.peak ?? null), columns.map(([, j]) => j)],
      );
    } catch (err) {
      for (const s of dirty) s.dirty = true;
      this.opts.log.warn({ err: (err as Error).message }, 'latest alarm values not written; retrying');
    }
  }

  private forgetDevice(id: number): void {
    this.devices.delete(id);
    for (const key of [...this.states.keys()]) if (key.endsWith(`:${id}`)) this.states.delete(key);
  }

  private deviceUpdated(d: Device): void {
    this.devices.set(d.id, { id: d.id, name: d.name, type: d.type, domain: d.domain });
    // Rules of another type no longer apply (the device changed type): their open alarms are cleared.
    const stale = [...this.rules.values()].filter((rule) => rule.deviceType !== d.type && this.states.has(stateKey(rule.id, d.id)));
    if (stale.length === 0) return;
    void this.lock
      .run(async () => {
        for (const rule of stale) {
          this.states.delete(stateKey(rule.id, d.id));
          const alarm = await this.clearAlarm(rule.id, d.id, { at: null, by: null, reason: 'device_type_changed' });
          if (alarm) this.emit({ kind: 'cleared', alarm });
        }
      })
      .catch((err: Error) => this.opts.log.error({ err }, 'alarms of a device whose type changed not cleared'));
  }

  // ------------------------------------------------------------------ rules

  private async loadRules(): Promise<void> {
    const { rows } = await this.opts.pool.query<RuleRow>('SELECT * FROM alarm_rules ORDER BY id');
    this.rules = new Map(rows.map((r) => [r.id, toRule(r)]));
    this.index();
  }

  private index(): void {
    this.byType = new Map();
    for (const rule of this.rules.values()) {
      if (!rule.enabled) continue;
      const list = this.byType.get(rule.deviceType);
      if (list) list.push(rule);
      else this.byType.set(rule.deviceType, [rule]);
    }
  }

  listRules(): AlarmRule[] {
    return [...this.rules.values()];
  }

  rule(id: number): AlarmRule | undefined {
    return this.rules.get(id);
  }

  /** Checks a rule and fills in defaults; throws AlarmError('invalid') with the reason. */
  async validateRule(input: AlarmRuleInput): Promise<Required<AlarmRuleInput>> {
    const invalid = (message: string) => new AlarmError('invalid', message);
    const type = this.opts.registry.deviceType(input.deviceType);
    if (!type) throw invalid(`deviceType: no device type "${input.deviceType}"`);
    const kind = input.kind ?? (input.geofence != null ? 'geofence_exit' : 'threshold');
    const minDurationSeconds = input.minDurationSeconds ?? 0;
    const clearDurationSeconds = input.clearDurationSeconds ?? 0;
    for (const [field, v] of [
      ['minDurationSeconds', minDurationSeconds],
      ['clearDurationSeconds', clearDurationSeconds],
    ] as const) {
      if (!Number.isInteger(v) || v < 0 || v > MAX_DURATION_SECONDS) throw invalid(`${field}: ${v} is not a whole number of seconds from 0 to ${MAX_DURATION_SECONDS}`);
    }
    const common = {
      name: input.name,
      description: input.description ?? null,
      kind,
      deviceType: type.name,
      minDurationSeconds,
      clearDurationSeconds,
      severity: input.severity,
      enabled: input.enabled ?? true,
    };
    if (kind === 'geofence_exit') {
      for (const field of ['key', 'operator', 'raiseThreshold', 'clearThreshold', 'value'] as const) {
        if (input[field] != null) throw invalid(`${field}: not used by geofence_exit rules (they watch a geofence)`);
      }
      if (input.geofence == null || input.geofence === '') throw invalid('geofence: required for geofence_exit rules (the name of the geofence the devices must stay in)');
      if (!type.moving) throw invalid(`deviceType: "${type.name}" devices do not move (only moving types can leave a geofence)`);
      if (this.geofenceExists && !(await this.geofenceExists(input.geofence))) throw invalid(`geofence: no geofence "${input.geofence}"`);
      return { ...common, key: null, operator: null, raiseThreshold: null, clearThreshold: null, geofence: input.geofence, value: null };
    }
    if (input.geofence != null) throw invalid(`geofence: only geofence_exit rules name a geofence`);
    const key = input.key;
    if (key == null || key === '') throw invalid(`key: required for ${kind} rules (the telemetry key to watch)`);
    const isPosition = Object.hasOwn(POSITION_KEYS, key);
    if (isPosition && !type.moving) throw invalid(`key: "${key}" is a position key; "${type.name}" devices do not report positions`);
    if (!isPosition && !Object.hasOwn(type.keys, key)) {
      if (!type.acceptsUndeclaredKeys) {
        throw invalid(`key: "${key}" is not declared by device type "${type.name}" (declared: ${Object.keys(type.keys).join(', ') || 'none'})`);
      }
      const problem = keyProblem(key);
      if (problem) throw invalid(`key: ${problem}`);
    }
    // The key's declared type; undefined for an undeclared key (of a type that accepts them).
    const keyType: ValueType | undefined = isPosition ? 'number' : Object.hasOwn(type.keys, key) ? (type.keys[key]!.type ?? 'number') : undefined;
    if (kind === 'match') {
      for (const field of ['raiseThreshold', 'clearThreshold'] as const) {
        if (input[field] != null) throw invalid(`${field}: match rules have no thresholds (and no hysteresis): they compare the key with value`);
      }
      if (input.operator == null || !isMatchOperator(input.operator)) {
        throw invalid(`operator: match rules compare with ${MATCH_OPERATORS.join(' or ')}${input.operator == null ? '' : `, not "${input.operator}"`}`);
      }
      const problem = matchValueProblem(key, keyType, input.value);
      if (problem) throw invalid(problem);
      return { ...common, key, operator: input.operator, raiseThreshold: null, clearThreshold: null, geofence: null, value: input.value! };
    }
    if (input.value != null) throw invalid('value: only match rules compare with a value (threshold rules have raiseThreshold)');
    if (keyType === 'string' || keyType === 'json') {
      throw invalid(`key: "${key}" is a ${keyType} key of device type "${type.name}"; thresholds compare numbers (and booleans as 1 and 0)`);
    }
    if (input.operator == null) throw invalid(`operator: required for threshold rules (one of ${THRESHOLD_OPERATORS.join(' ')})`);
    if (isMatchOperator(input.operator)) throw invalid(`operator: "${input.operator}" compares for equality: give "kind": "match" and a value (threshold rules take ${THRESHOLD_OPERATORS.join(' ')})`);
    const raise = input.raiseThreshold;
    if (raise == null || !Number.isFinite(raise)) throw invalid('raiseThreshold: required for threshold rules (a finite number)');
    const clear = input.clearThreshold ?? raise;
    if (!Number.isFinite(clear)) throw invalid('clearThreshold: must be a finite number');
    const upward = input.operator === '>' || input.operator === '>=';
    if (upward && clear > raise) throw invalid(`clearThreshold: for operator "${input.operator}" the clear threshold (${clear}) must not be above the raise threshold (${raise})`);
    if (!upward && clear < raise) throw invalid(`clearThreshold: for operator "${input.operator}" the clear threshold (${clear}) must not be below the raise threshold (${raise})`);
    return { ...common, key, operator: input.operator, raiseThreshold: raise, clearThreshold: clear, geofence: null, value: null };
  }

  async createRule(input: AlarmRuleInput): Promise<AlarmRule> {
    const r = await this.validateRule(input);
    return this.lock.run(async () => {
      try {
        const { rows } = await this.opts.pool.query<RuleRow>(
          `INSERT INTO alarm_rules (name, description, kind, device_type, key, operator, raise_threshold, clear_threshold, geofence,
                                    min_duration_seconds, clear_duration_seconds, severity, enabled, value)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb) RETURNING *`,
          [r.name, r.description, r.kind, r.deviceType, r.key, r.operator, r.raiseThreshold, r.clearThreshold, r.geofence, r.minDurationSeconds, r.clearDurationSeconds, r.severity, r.enabled, jsonOrNull(r.value)],
        );
        const rule = toRule(rows[0]!);
        this.rules.set(rule.id, rule);
        this.index();
        return rule;
      } catch (err) {
        throw conflictOr(err, r.name);
      }
    });
  }

  /** Replaces a rule. Open alarms stay open under new thresholds; they are cleared when what the rule watches changes or it is disabled. */
  async replaceRule(id: number, input: AlarmRuleInput): Promise<AlarmRule> {
    const r = await this.validateRule(input);
    return this.lock.run(async () => {
      const old = this.rules.get(id);
      if (!old) throw new AlarmError('not_found', `no alarm rule ${id}`);
      const client = await this.opts.pool.connect();
      const cleared: number[] = [];
      let rule: AlarmRule;
      try {
        await client.query('BEGIN');
        const { rows } = await client.query<RuleRow>(
          `UPDATE alarm_rules SET name = $2, description = $3, kind = $4, device_type = $5, key = $6, operator = $7, raise_threshold = $8,
                  clear_threshold = $9, geofence = $10, min_duration_seconds = $11, clear_duration_seconds = $12, severity = $13, enabled = $14,
                  value = $15::jsonb, updated_at = now()
           WHERE id = $1 RETURNING *`,
          [id, r.name, r.description, r.kind, r.deviceType, r.key, r.operator, r.raiseThreshold, r.clearThreshold, r.geofence, r.minDurationSeconds, r.clearDurationSeconds, r.severity, r.enabled, jsonOrNull(r.value)],
        );
        rule = toRule(rows[0]!);
        // A match rule's value is what it watches for: a new one clears its open alarms, as a new key does.
        const watches = (x: AlarmRule) =>
          `${x.kind}|${x.deviceType}|${x.kind === 'geofence_exit' ? x.geofence : `${x.key}|${x.operator}${x.kind === 'match' ? `|${JSON.stringify(x.value)}` : ''}`}`;
        const reason: ClearReason | undefined = !rule.enabled ? 'rule_disabled' : watches(rule) !== watches(old) ? 'rule_changed' : undefined;
        if (reason) cleared.push(...(await clearAllOfRule(client, id, reason)));
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw conflictOr(err, r.name);
      } finally {
        client.release();
      }
      this.rules.set(id, rule);
      this.index();
      // Pending waits start over under the new rule; open alarms stay open unless cleared above.
      for (const [key, s] of this.states) {
        if (!key.startsWith(`${id}:`)) continue;
        if (cleared.length > 0 || !s.open) this.states.delete(key);
        else this.states.set(key, { ...s, pendingSince: null });
      }
      await this.emitCleared(cleared);
      return rule;
    });
  }

  /** Deletes a rule (not a built-in one: disable those); its open alarms are cleared, its history kept. */
  async deleteRule(id: number): Promise<AlarmRule> {
    return this.lock.run(async () => {
      const rule = this.rules.get(id);
      if (!rule) throw new AlarmError('not_found', `no alarm rule ${id}`);
      if (rule.builtin) throw new AlarmError('read_only', `alarm rule "${rule.name}" is built in: disable it instead (PATCH {"enabled": false})`);
      const client = await this.opts.pool.connect();
      let cleared: number[];
      try {
        await client.query('BEGIN');
        cleared = await clearAllOfRule(client, id, 'rule_deleted');
        await client.query('DELETE FROM alarm_rules WHERE id = $1', [id]);
        await client.query('COMMIT');
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
      this.rules.delete(id);
      this.index();
      for (const key of [...this.states.keys()]) if (key.startsWith(`${id}:`)) this.states.delete(key);
      await this.emitCleared(cleared);
      return rule;
    });
  }

  private async deleteRulesOfType(type: string): Promise<void> {
    await this.lock.run(async () => {
      await this.opts.pool.query('DELETE FROM alarm_rules WHERE device_type = $1', [type]);
      await this.loadRules();
    });
  }

  private async emitCleared(ids: number[]): Promise<void> {
    for (const id of ids) {
      const alarm = await this.get(id);
      if (alarm) this.emit({ kind: 'cleared', alarm });
    }
  }

  // ------------------------------------------------------------------ alarms

  async get(id: number): Promise<Alarm | undefined> {
    const { rows } = await this.opts.pool.query<AlarmRow>(`${ALARM_SELECT} WHERE a.id = $1`, [id]);
    return rows[0] && toAlarm(rows[0]);
  }

  /** Alarms newest first (by id), filtered. */
  async list(filter: AlarmFilter): Promise<Alarm[]> {
    const where: string[] = [];
    const params: unknown[] = [];
    const p = (v: unknown) => {
      params.push(v);
      return `$${params.length}`;
    };
    if (filter.status?.length) where.push(`a.status = ANY(${p(filter.status)}::text[])`);
    if (filter.severity?.length) where.push(`a.severity = ANY(${p(filter.severity)}::text[])`);
    if (filter.deviceId !== undefined) where.push(`a.device_id = ${p(filter.deviceId)}`);
    const inScope: string[] = [];
    if (filter.scope?.domains) inScope.push(`t.domain = ANY (${p(filter.scope.domains)}::text[])`);
    if (filter.scope?.positionSql) {
      const unpositioned = filter.scope.unpositionedDeviceIds === null || filter.scope.unpositionedDeviceIds === undefined ? 'true' : `a.device_id = ANY (${p(filter.scope.unpositionedDeviceIds)}::int4[])`;
      inScope.push(`(SELECT CASE WHEN lat IS NULL THEN ${unpositioned} ELSE ${filter.scope.positionSql} END FROM (SELECT coalesce(a.lat, d.lat) AS lat, coalesce(a.lng, d.lng) AS lng) pos)`);
    }
    // In scope, or of a device the principal's owner claimed (core/access/access.ts).
    const owned = filter.scope?.ownedDeviceIds?.length ? `a.device_id = ANY (${p(filter.scope.ownedDeviceIds)}::int4[])` : undefined;
    if (inScope.length > 0) where.push(owned ? `(${owned} OR (${inScope.join(' AND ')}))` : inScope.join(' AND '));
    if (filter.domain !== undefined) where.push(`t.domain = ${p(filter.domain)}`);
    if (filter.from) where.push(`a.raised_at >= ${p(filter.from)}`);
    if (filter.to) where.push(`a.raised_at < ${p(filter.to)}`);
    if (filter.beforeId !== undefined) where.push(`a.id < ${p(filter.beforeId)}`);
    const { rows } = await this.opts.pool.query<AlarmRow>(
      `${ALARM_SELECT} ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY a.id DESC LIMIT ${p(filter.limit)}`,
      params,
    );
    return rows.map(toAlarm);
  }

  /** Acknowledges a raised alarm; 'conflict' when it is already acknowledged or cleared. */
  async acknowledge(id: number, by: string, note: string | null): Promise<Alarm> {
    return this.lock.run(async () => {
      const { rows } = await this.opts.pool.query<{ id: string }>(
        `UPDATE alarms SET status = 'acknowledged', acknowledged_at = now(), acknowledged_by = $2, ack_note = $3
         WHERE id = $1 AND status = 'raised' RETURNING id`,
        [id, by, note],
      );
      const alarm = await this.get(id);
      if (!alarm) throw new AlarmError('not_found', `no alarm ${id}`);
      if (rows.length === 0) {
        throw new AlarmError('conflict', alarm.status === 'cleared' ? `alarm ${id} is already cleared` : `alarm ${id} was already acknowledged by ${alarm.acknowledgedBy} at ${alarm.acknowledgedAt}`);
      }
      this.emit({ kind: 'acknowledged', alarm });
      return alarm;
    });
  }

  /**
   * Clears an open alarm by hand. When the condition still holds, a new alarm is raised once it
   * has again held for the rule's minimum duration: clearing does not silence a rule (acknowledge
   * the alarm, or disable the rule, for that).
   */
  async clear(id: number, by: string, note: string | null): Promise<Alarm> {
    return this.lock.run(async () => {
      const { rows } = await this.opts.pool.query<{ rule_id: number | null; device_id: number }>(
        `UPDATE alarms SET status = 'cleared', cleared_at = now(), cleared_by = $2, clear_reason = 'manual', clear_note = $3
         WHERE id = $1 AND status <> 'cleared' RETURNING rule_id, device_id`,
        [id, by, note],
      );
      const alarm = await this.get(id);
      if (!alarm) throw new AlarmError('not_found', `no alarm ${id}`);
      if (rows.length === 0) throw new AlarmError('conflict', `alarm ${id} is already cleared (${alarm.clearReason}${alarm.clearedBy ? ` by ${alarm.clearedBy}` : ''} at ${alarm.clearedAt})`);
      const { rule_id: ruleId, device_id: deviceId } = rows[0]!;
      if (ruleId !== null) {
        const key = stateKey(ruleId, deviceId);
        const s = this.states.get(key);
        if (s) this.states.set(key, { ...s, open: false, pendingSince: null, alarmId: null, lastValue: undefined, lastValueTs: undefined, peak: undefined, dirty: false });
      }
      this.emit({ kind: 'cleared', alarm });
      return alarm;
    });
  }
}

const stateKey = (ruleId: number, deviceId: number) => `${ruleId}:${deviceId}`;
const isMatchOperator = (op: string): op is MatchOperator => (MATCH_OPERATORS as readonly string[]).includes(op);
const jsonOrNull = (v: AlarmScalar | null) => (v === null ? null : JSON.stringify(v));

async function clearAllOfRule(client: pg.PoolClient, ruleId: number, reason: ClearReason): Promise<number[]> {
  const { rows } = await client.query<{ id: string }>(
    `UPDATE alarms SET status = 'cleared', cleared_at = now(), clear_reason = $2 WHERE rule_id = $1 AND status <> 'cleared' RETURNING id`,
    [ruleId, reason],
  );
  return rows.map((r) => Number(r.id));
}

function conflictOr(err: unknown, name: string): unknown {
  if ((err as { code?: string }).code === '23505') return new AlarmError('conflict', `an alarm rule named "${name}" exists`);
  return err;
}

/** The MQTT topic of a domain's alarm changes (published to application sessions). */
export const alarmEventTopic = (domain: Domain): string => `guanlink/events/alarms/${domain}`;
