import { execFileSync } from 'node:child_process';
import os from 'node:os';

/**
 * CPU pinning for part (c): the broker under test on CPU 0, the publishers on the other CPUs, so
 * that each broker has one core to itself (as in production, where the devices are elsewhere) and
 * the generator's own cost cannot eat into it. Uses util-linux `taskset`; `-a` pins every thread,
 * and threads started later inherit it.
 */
export function canPin(): boolean {
  if (os.cpus().length < 2) return false;
  try {
    execFileSync('taskset', ['-p', String(process.pid)], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export function pin(pid: number, cpus: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
}

/** CPU 0 for the broker, the others for the publishers (taskset lists). */
export const BROKER_CPUS = '0';
export const GENERATOR_CPUS = os.cpus().length > 2 ? `1-${os.cpus().length - 1}` : '1';
