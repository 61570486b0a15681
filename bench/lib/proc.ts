import { readdirSync, readFileSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ: 100 on Linux). */
const TICKS_PER_SECOND = 100;

/**
 * User and system CPU time (ms) so far in a /proc stat file: `/proc/<pid>/stat`, or a thread's
 * `/proc/<pid>/task/<tid>/stat`. Throws when the process is gone.
 */
export function statTimes(file: string): { user: number; system: number } {
  const stat = readFileSync(file, 'utf8');
  // Fields after the command name (which may hold spaces, inside parentheses): utime is the 14th
  // field of the line and stime the 15th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return {
    user: (Number(fields[11]) * 1000) / TICKS_PER_SECOND,
    system: (Number(fields[12]) * 1000) / TICKS_PER_SECOND,
  };
}

/** CPU time (user + system, ms) so far of each local process named `command`, by pid. */
export function processCpuMs(command: string): Map<number, number> {
  const cpu = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')) !== command) {
        continue;
      }
      const { user, system } = statTimes(`/proc/${entry}/stat`);
      cpu.set(Number(entry), user + system);
    } catch {
      // The process ended meanwhile.
    }
  }
  return cpu;
}

/**
 * The CPU time (ms) between two readings of {@link processCpuMs}, process by process: one that
 * started in between counts from zero, one that ended in between is missed.
 */
export function cpuDeltaMs(before: Map<number, number>, after: Map<number, number>): number {
  let total = 0;
  for (const [pid, ms] of after) {
    total += ms - (before.get(pid) ?? 0);
  }
  return total;
}
