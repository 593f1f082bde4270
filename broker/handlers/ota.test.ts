import { describe, expect, it } from 'vitest';
import { OTA_REQUEST_TOPIC, parseJavaInt } from './ota.ts';

describe('OTA request parsing, as ThingsBoard parses it', () => {
  it('takes what java.lang.Integer.parseInt takes', () => {
    for (const [text, n] of [
      ['16384', 16_384],
      ['0', 0],
      ['-5', -5],
      ['+7', 7],
      ['007', 7],
      ['2147483647', 2_147_483_647],
      ['-2147483648', -2_147_483_648],
    ] as const) {
      expect(parseJavaInt(text), text).toBe(n);
    }
    for (const text of ['2147483648', '1e3', '16 384', '0x10', 'ten', '', '1.0']) expect(parseJavaInt(text), text).toBeNull();
  });

  it('matches v2/fw and v2/sw requests with digits only', () => {
    expect(OTA_REQUEST_TOPIC.exec('v2/fw/request/12/chunk/0')?.slice(1)).toEqual(['fw', '12', '0']);
    expect(OTA_REQUEST_TOPIC.exec('v2/sw/request/1/chunk/99')?.slice(1)).toEqual(['sw', '1', '99']);
    for (const topic of ['v2/fw/request/a/chunk/0', 'v2/fw/request/1/chunk/-1', 'v2/fw/request/1/chunk/0/x', 'v2/hw/request/1/chunk/0']) expect(OTA_REQUEST_TOPIC.test(topic), topic).toBe(false);
  });
});
