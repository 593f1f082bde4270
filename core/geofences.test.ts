import { describe, expect, it } from 'vitest';
import { applyReading, watches, type Presence } from './geofences.ts';

const S = 1000;

describe('applyReading: enter / exit / dwell', () => {
  const watched = new Map([
    [1, { dwellSeconds: 60 }],
    [2, { dwellSeconds: null }],
  ]);
  const run = (steps: [ts: number, inside: number[]][], presence = new Map<number, Presence>()) =>
    steps.map(([ts, inside]) => applyReading(presence, ts, new Set(inside), watched).map((e) => `${e.kind}:${e.geofenceId}`));

  it('enters on the first reading inside, dwells once after dwellSeconds, exits on the first reading outside', () => {
    expect(
      run([
        [0, []],
        [10 * S, [1]],
        [30 * S, [1]],
        [69 * S, [1]], // 59 s inside: not yet
        [70 * S, [1]], // 60 s: dwell
        [200 * S, [1]], // once per stay
        [210 * S, []],
        [220 * S, []],
      ]),
    ).toEqual([[], ['enter:1'], [], [], ['dwell:1'], [], ['exit:1'], []]);
  });

  it('starts a new stay (and a new dwell) after leaving', () => {
    expect(
      run([
        [0, [1]],
        [60 * S, [1]],
        [61 * S, []],
        [62 * S, [1]],
        [121 * S, [1]],
        [122 * S, [1]],
      ]),
    ).toEqual([['enter:1'], ['dwell:1'], ['exit:1'], ['enter:1'], [], ['dwell:1']]);
  });

  it('reports the exit before the enter when a device moves from one fence to another, and no dwell without dwellSeconds', () => {
    expect(
      run([
        [0, [1]],
        [S, [2]],
        [1000 * S, [2]],
        [1001 * S, [1, 2]],
      ]),
    ).toEqual([['enter:1'], ['exit:1', 'enter:2'], [], ['enter:1']]);
  });

  it('continues a stay recorded before a restart: no second enter, dwell counted from the stored time', () => {
    const presence = new Map<number, Presence>([[1, { insideSince: 0, dwellReported: false }]]);
    expect(run([[100 * S, [1]]], presence)).toEqual([['dwell:1']]);
    const reported = new Map<number, Presence>([[1, { insideSince: 0, dwellReported: true }]]);
    expect(run([[100 * S, [1]], [101 * S, []]], reported)).toEqual([[], ['exit:1']]);
  });

  it('drops a stay silently when the fence no longer watches the device (deleted, or its types changed)', () => {
    const presence = new Map<number, Presence>([[9, { insideSince: 0, dwellReported: false }]]);
    expect(run([[S, [1]]], presence)).toEqual([['enter:1']]);
    expect(presence.has(9)).toBe(false);
  });

  it('ignores fences that contain the point but do not watch the device', () => {
    expect(run([[0, [3]]])).toEqual([[]]);
  });
});

describe('watches', () => {
  const drone = { name: 'drone', domain: 'air-space-ground' as const, moving: true };
  const bus = { name: 'bus', domain: 'traffic' as const, moving: true };
  const station = { name: 'ground-station', domain: 'air-space-ground' as const, moving: false };

  it('an empty type list watches every moving type of the fence domain', () => {
    const fence = { domain: 'air-space-ground' as const, deviceTypes: [] };
    expect(watches(fence, drone)).toBe(true);
    expect(watches(fence, bus)).toBe(false);
    expect(watches(fence, station)).toBe(false);
  });

  it('a type list watches exactly those types, whatever their domain, if they move', () => {
    const fence = { domain: 'traffic' as const, deviceTypes: ['drone'] };
    expect(watches(fence, drone)).toBe(true);
    expect(watches(fence, bus)).toBe(false);
    expect(watches({ domain: 'air-space-ground', deviceTypes: ['ground-station'] }, station)).toBe(false);
  });
});
