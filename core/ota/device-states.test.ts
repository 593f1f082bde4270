import { describe, expect, it } from 'vitest';
import { reportedStates } from './device-states.ts';

describe('reportedStates: the OTA keys of a reading, as the python SDK sends them', () => {
  const reading = (values: Record<string, number>, jsonValues?: Record<string, string>) => ({ deviceId: 7, domain: 'generic' as const, ts: 1_000, values, jsonValues });

  it('reads fw_state, current_fw_title/version and fw_error (strings; a numeric version as text)', () => {
    expect(reportedStates(reading({ current_fw_version: 2 }, { current_fw_title: 'meter', fw_state: 'downloading', fw_error: '' }))).toEqual([
      { deviceId: 7, type: 'FIRMWARE', ts: 1_000, state: 'DOWNLOADING', currentTitle: 'meter', currentVersion: '2', error: '' },
    ]);
  });

  it('reads software keys apart, and nothing from a reading without OTA keys', () => {
    expect(reportedStates(reading({ temperature: 21 }, { sw_state: 'FAILED', sw_error: 'no space' }))).toEqual([
      { deviceId: 7, type: 'SOFTWARE', ts: 1_000, state: 'FAILED', error: 'no space' },
    ]);
    expect(reportedStates(reading({ temperature: 21 }, { fw: '1.10' }))).toEqual([]);
  });
});
