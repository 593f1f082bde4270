import { describe, expect, it } from 'vitest';
import { matches, type AlarmScalar, type MatchOperator } from './alarm-match.ts';
import { initialCondition, stepCondition, thresholdObservation, type ConditionState, type ThresholdOperator } from './alarms.ts';

interface Rule {
  operator: ThresholdOperator;
  raiseThreshold: number;
  clearThreshold: number;
  minDurationSeconds: number;
  clearDurationSeconds: number;
}

/** Runs values (one per `stepMs`, from t = 0) through a rule; returns the changes with their times. */
function run(rule: Rule, values: number[], stepMs = 1000, start: ConditionState = initialCondition()) {
  let state = start;
  const changes: { change: 'raise' | 'clear'; ts: number }[] = [];
  values.forEach((v, i) => {
    const ts = i * stepMs;
    const out = stepCondition(state, thresholdObservation(rule, ts, v), { raiseAfterMs: rule.minDurationSeconds * 1000, clearAfterMs: rule.clearDurationSeconds * 1000 });
    state = out.state;
    if (out.change) changes.push({ change: out.change, ts });
  });
  return { changes, state };
}

const flood: Rule = { operator: '>', raiseThreshold: 3.8, clearThreshold: 3.5, minDurationSeconds: 0, clearDurationSeconds: 0 };

describe('alarm condition: thresholds', () => {
  it('raises when the value crosses the raise threshold and clears only past the clear threshold', () => {
    const { changes, state } = run(flood, [3.0, 3.7, 3.81, 3.6, 3.51, 3.5, 3.49, 3.0]);
    expect(changes).toEqual([
      { change: 'raise', ts: 2000 },
      { change: 'clear', ts: 6000 },
    ]);
    expect(state.open).toBe(false);
  });

  it('hysteresis: a value oscillating around the raise threshold raises once', () => {
    const wobble = Array.from({ length: 200 }, (_, i) => 3.8 + (i % 2 === 0 ? 0.05 : -0.05));
    const { changes, state } = run(flood, wobble);
    expect(changes).toEqual([{ change: 'raise', ts: 0 }]);
    expect(state.open).toBe(true);
  });

  it('without hysteresis (clear = raise) the same oscillation flaps: what the clear threshold prevents', () => {
    const wobble = Array.from({ length: 10 }, (_, i) => 3.8 + (i % 2 === 0 ? 0.05 : -0.05));
    expect(run({ ...flood, clearThreshold: 3.8 }, wobble).changes).toHaveLength(10);
  });

  it('minimum duration: a spike shorter than the duration raises nothing; a longer one raises when the duration is reached', () => {
    const rule = { ...flood, minDurationSeconds: 60 };
    // 59 s above the line (readings at 0..59 s), then back below
    const spike = [...Array.from({ length: 60 }, () => 4.5), 3.0, 3.0];
    expect(run(rule, spike).changes).toEqual([]);
    // 61 readings above: the one at 60 s completes the minute
    const sustained = Array.from({ length: 61 }, () => 4.5);
    expect(run(rule, sustained).changes).toEqual([{ change: 'raise', ts: 60_000 }]);
  });

  it('minimum duration: one reading back below the line restarts the wait', () => {
    const rule = { ...flood, minDurationSeconds: 10 };
    const values = [...Array.from({ length: 9 }, () => 4), 3.7, ...Array.from({ length: 9 }, () => 4)];
    expect(run(rule, values).changes).toEqual([]);
    // between the thresholds counts as "not above" too
    expect(run(rule, [4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 3.79, 4]).changes).toEqual([]);
  });

  it('clear duration: the value must stay past the clear threshold that long', () => {
    const rule = { ...flood, clearDurationSeconds: 30 };
    const values = [4, ...Array.from({ length: 20 }, () => 3), 3.6, ...Array.from({ length: 31 }, () => 3)];
    const { changes } = run(rule, values);
    // back below 3.5 at 1 s for 20 s, then 3.6 (between the lines) restarts the wait; cleared 30 s after 22 s
    expect(changes).toEqual([
      { change: 'raise', ts: 0 },
      { change: 'clear', ts: 52_000 },
    ]);
  });

  it('downward rules: raised below the line, cleared above the clear threshold', () => {
    const congestion: Rule = { operator: '<', raiseThreshold: 20, clearThreshold: 30, minDurationSeconds: 0, clearDurationSeconds: 0 };
    expect(run(congestion, [50, 19, 25, 21, 29.9, 30, 31]).changes).toEqual([
      { change: 'raise', ts: 1000 },
      { change: 'clear', ts: 6000 },
    ]);
  });

  it('inclusive operators include the threshold itself', () => {
    expect(thresholdObservation({ operator: '>=', raiseThreshold: 20, clearThreshold: 10 }, 0, 20)).toMatchObject({ breach: true, recovered: false });
    expect(thresholdObservation({ operator: '>', raiseThreshold: 20, clearThreshold: 10 }, 0, 20)).toMatchObject({ breach: false, recovered: false });
    expect(thresholdObservation({ operator: '<=', raiseThreshold: 20, clearThreshold: 30 }, 0, 20)).toMatchObject({ breach: true, recovered: false });
    expect(thresholdObservation({ operator: '<', raiseThreshold: 20, clearThreshold: 30 }, 0, 30)).toMatchObject({ breach: false, recovered: false });
  });

  it('ignores readings older than the last one evaluated', () => {
    const rule = { ...flood, minDurationSeconds: 10 };
    let s = initialCondition();
    const timing = { raiseAfterMs: 10_000, clearAfterMs: 0 };
    s = stepCondition(s, thresholdObservation(rule, 20_000, 4), timing).state;
    // a late reading from before the wait started cannot complete it
    const late = stepCondition(s, thresholdObservation(rule, 5_000, 4), timing);
    expect(late.change).toBeNull();
    expect(late.state).toBe(s);
    expect(stepCondition(s, thresholdObservation(rule, 30_000, 4), timing).change).toBe('raise');
  });

  it('an alarm reloaded open after a restart clears when the value has recovered', () => {
    const { changes } = run(flood, [4, 3.4], 1000, initialCondition(true));
    expect(changes).toEqual([{ change: 'clear', ts: 1000 }]);
  });
});

describe('alarm condition: match rules', () => {
  /** Runs values (one a second from t = 0) through a match rule; the changes with their times. */
  function runMatch(rule: { operator: MatchOperator; value: AlarmScalar; minDurationSeconds: number; clearDurationSeconds: number }, values: AlarmScalar[], start = initialCondition()) {
    let state = start;
    const changes: { change: 'raise' | 'clear'; ts: number }[] = [];
    values.forEach((v, i) => {
      const breach = matches(rule, v);
      const out = stepCondition(state, { ts: i * 1000, breach, recovered: !breach }, { raiseAfterMs: rule.minDurationSeconds * 1000, clearAfterMs: rule.clearDurationSeconds * 1000 });
      state = out.state;
      if (out.change) changes.push({ change: out.change, ts: i * 1000 });
    });
    return changes;
  }
  const failed = { operator: '==' as const, value: 'FAILED', minDurationSeconds: 0, clearDurationSeconds: 0 };

  it('== raises on the value and clears on any other', () => {
    expect(runMatch(failed, ['IDLE', 'DOWNLOADING', 'FAILED', 'FAILED', 'DOWNLOADING', 'FAILED'])).toEqual([
      { change: 'raise', ts: 2000 },
      { change: 'clear', ts: 4000 },
      { change: 'raise', ts: 5000 },
    ]);
  });

  it('!= raises while the value differs and clears when it is back', () => {
    const online = { operator: '!=' as const, value: 'ONLINE', minDurationSeconds: 0, clearDurationSeconds: 0 };
    expect(runMatch(online, ['ONLINE', 'OFFLINE', 'DEGRADED', 'ONLINE'])).toEqual([
      { change: 'raise', ts: 1000 },
      { change: 'clear', ts: 3000 },
    ]);
  });

  it('durations apply: a shorter FAILED raises nothing, the clear waits its duration', () => {
    const rule = { ...failed, minDurationSeconds: 3, clearDurationSeconds: 2 };
    expect(runMatch(rule, ['FAILED', 'FAILED', 'FAILED', 'IDLE', 'FAILED'])).toEqual([]);
    expect(runMatch(rule, ['FAILED', 'FAILED', 'FAILED', 'FAILED', 'IDLE', 'IDLE', 'FAILED', 'IDLE', 'IDLE', 'IDLE'])).toEqual([
      { change: 'raise', ts: 3000 },
      { change: 'clear', ts: 9000 },
    ]);
  });

  it('an alarm reloaded open after a restart clears on another value', () => {
    expect(runMatch(failed, ['FAILED', 'UPDATED'], initialCondition(true))).toEqual([{ change: 'clear', ts: 1000 }]);
  });
});
