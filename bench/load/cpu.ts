import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** CPU time (user + system, all threads) of the processes of a group, over a timed window, from /proc. */

const TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

function processTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime, stime
  } catch {
    return undefined; // gone
  }
}

/** Busy and total jiffies of the whole machine (all cores). */
function machineTicks(): { busy: number; total: number } {
  const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = cpu.slice(0, 8).reduce((a, b) => a + b, 0); // user … steal (guest time is already in user)
  const idle = cpu[3]! + cpu[4]!; // idle + iowait
  return { busy: total - idle, total };
}

export interface ProcessGroup {
  name: string;
  /** The group's processes; asked at the start and again at the end (to catch processes started meanwhile). */
  pids: () => number[] | Promise<number[]>;
}

export interface GroupUsage {
  name: string;
  /** Average cores used over the window (1.0 = one core fully busy). */
  cores: number;
  processes: number;
}

export interface CpuReport {
  seconds: number;
  groups: GroupUsage[];
  /** Cores busy machine-wide (every process, this benchmark's or not). */
  machineCores: number;
  cores: number;
}

export class CpuWindow {
  private constructor(
    private readonly groups: ProcessGroup[],
    private readonly start: Map<number, number>[],
    private readonly machine: { busy: number; total: number },
    private readonly started: bigint,
  ) {}

  static async open(groups: ProcessGroup[]): Promise<CpuWindow> {
    const start: Map<number, number>[] = [];
    for (const g of groups) {
      const m = new Map<number, number>();
      for (const pid of await g.pids()) {
        const t = processTicks(pid);
        if (t !== undefined) m.set(pid, t);
      }
      start.push(m);
    }
    return new CpuWindow(groups, start, machineTicks(), process.hrtime.bigint());
  }

  async close(): Promise<CpuReport> {
    const seconds = Number(process.hrtime.bigint() - this.started) / 1e9;
    const machineEnd = machineTicks();
    const groups: GroupUsage[] = [];
    for (const [i, g] of this.groups.entries()) {
      const before = this.start[i]!;
      const pids = new Set([...before.keys(), ...(await g.pids())]);
      let ticks = 0;
      for (const pid of pids) {
        const now = processTicks(pid);
        if (now !== undefined) ticks += now - (before.get(pid) ?? 0); // started during the window: all of it counts
      }
      groups.push({ name: g.name, cores: ticks / TICKS_PER_SECOND / seconds, processes: pids.size });
    }
    const total = machineEnd.total - this.machine.total;
    const cores = total / TICKS_PER_SECOND / seconds;
    return { seconds, groups, machineCores: ((machineEnd.busy - this.machine.busy) / total) * cores, cores: Math.round(cores) };
  }
}
