import { describe, expect, it } from 'vitest';
import { QueryBusyError, QueryGate } from './spatial-query.ts';

describe('QueryGate', () => {
  it('runs at most `max` at once, queues up to `queue`, refuses beyond with a 503 that says when to retry', async () => {
    const gate = new QueryGate(1, 1);
    const order: string[] = [];
    let release!: () => void;
    const first = gate.run(() => new Promise<void>((r) => (release = () => (order.push('first'), r()))));
    const second = gate.run(async () => void order.push('second'));
    expect(gate.busy).toBe(1);
    expect(gate.queued).toBe(1);
    const third = gate.run(async () => order.push('third'));
    await expect(third).rejects.toBeInstanceOf(QueryBusyError);
    await expect(third).rejects.toMatchObject({ statusCode: 503, headers: { 'retry-after': '2' } });
    expect(order).toEqual([]); // the second waits for the first
    release();
    await Promise.all([first, second]);
    expect(order).toEqual(['first', 'second']);
    expect(gate.busy).toBe(0);
    expect(gate.queued).toBe(0);
  });

  it('passes its slot on when a query fails', async () => {
    const gate = new QueryGate(1, 5);
    const failing = gate.run(async () => {
      throw new Error('boom');
    });
    const next = gate.run(async () => 'ran');
    await expect(failing).rejects.toThrow('boom');
    expect(await next).toBe('ran');
    expect(gate.busy).toBe(0);
  });

  it('lets a caller that must not be refused (an export mid-stream) wait beyond the queue', async () => {
    const gate = new QueryGate(1, 0);
    let release!: () => void;
    const first = gate.run(() => new Promise<void>((r) => (release = r)));
    await expect(gate.run(async () => 'refused')).rejects.toBeInstanceOf(QueryBusyError);
    const waiting = gate.run(async () => 'waited', { wait: true });
    release();
    await first;
    expect(await waiting).toBe('waited');
  });
});
