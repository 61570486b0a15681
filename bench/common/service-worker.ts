/**
 * The loop of the programmatic benchmark's workers (bench/service/ours.ts and
 * bench/peer-service/worker.ts): each is a child process of bench/run.ts that wraps one library's
 * programmatic API around the same work, and runs it on command, in process, without HTTP. Only
 * Node's own modules here: the peer's worker runs from its own folder and node_modules.
 *
 * Protocol: the worker prints `READY` once set up, then reads one JSON {@link WorkerCommand} per
 * line on stdin and answers each with one JSON {@link WorkerResult} line on stdout.
 */
import { createInterface } from 'node:readline';

/** What the work takes: the same small order for every call, as the HTTP scenarios send. */
export interface BenchOrderInput {
  customerId: string;
  amount: number;
  currency: string;
}

export const ORDER: BenchOrderInput = { customerId: 'c-1042', amount: 1999, currency: 'EUR' };

/** One idempotent call: `key` and the payload, resolving once the library answered. */
export type IdempotentCall = (key: string, order: BenchOrderInput) => Promise<unknown>;

export interface WorkerCommand {
  /** `run`: for `durationS` seconds; `count`: exactly `calls` calls; `exit`. */
  cmd: 'run' | 'count' | 'exit';
  /** `execute`: a new key per call; `replay`: `replayKeys` keys round robin, completed first. */
  path?: 'execute' | 'replay';
  durationS?: number;
  calls?: number;
  /** Calls in flight at once. */
  concurrency?: number;
  /** Prefix of the keys, unique per scenario. */
  keyPrefix?: string;
  replayKeys?: number;
}

export interface WorkerResult {
  calls: number;
  seconds: number;
  /** CPU time of the worker process (user + system), in microseconds. */
  cpuUs: number;
  /** Calls that ran the work. */
  executed: number;
  failed: number;
  /** The first failure's message, if any. */
  error?: string;
}

/** The work both libraries wrap: what the bench's handler answers, without the database. */
export function makeWork(): {
  work: (order: BenchOrderInput) => Promise<Record<string, unknown>>;
  executed: () => number;
} {
  let runs = 0;
  return {
    work: async (order) => {
      runs++;
      return {
        id: `ord_${runs}`,
        ...order,
        status: 'created',
        createdAt: new Date().toISOString(),
      };
    },
    executed: () => runs,
  };
}

/** Runs the worker: `call` makes one idempotent call, `executed` counts the work's runs. */
export async function serveWorker(call: IdempotentCall, executed: () => number): Promise<void> {
  const primed = new Set<string>();
  let seq = 0;
  const lines = createInterface({ input: process.stdin });
  process.stdout.write('READY\n');
  for await (const line of lines) {
    const command = JSON.parse(line) as WorkerCommand;
    if (command.cmd === 'exit') {
      break;
    }
    const prefix = command.keyPrefix ?? 'k';
    const replayKeys = command.replayKeys ?? 64;
    if (command.path === 'replay' && !primed.has(prefix)) {
      for (let i = 0; i < replayKeys; i++) {
        await call(`${prefix}:${i}`, ORDER);
      }
      primed.add(prefix);
    }
    let i = 0;
    const nextKey =
      command.path === 'replay'
        ? () => `${prefix}:${i++ % replayKeys}`
        : () => `${prefix}:${seq++}`;
    const result: WorkerResult = { calls: 0, seconds: 0, cpuUs: 0, executed: 0, failed: 0 };
    const before = executed();
    const deadline =
      command.cmd === 'run' ? performance.now() + (command.durationS ?? 1) * 1000 : Infinity;
    const limit = command.cmd === 'count' ? (command.calls ?? 100) : Infinity;
    let started = 0;
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    const loop = async () => {
      while (started < limit && performance.now() < deadline) {
        started++;
        try {
          await call(nextKey(), ORDER);
          result.calls++;
        } catch (error) {
          result.failed++;
          result.error ??= error instanceof Error ? error.message : String(error);
        }
      }
    };
    await Promise.all(Array.from({ length: command.concurrency ?? 16 }, loop));
    result.seconds = (performance.now() - t0) / 1000;
    const used = process.cpuUsage(cpu);
    result.cpuUs = used.user + used.system;
    result.executed = executed() - before;
    process.stdout.write(`${JSON.stringify(result)}\n`);
  }
  lines.close();
}
