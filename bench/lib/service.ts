import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import type { WorkerCommand, WorkerResult } from '../common/service-worker';

/** `ours`: `IdempotencyService.run()`; `powertools`: the peer's `makeIdempotent` (bench/peer-service). */
export type ServiceLibrary = 'ours' | 'powertools';

/** A worker of the programmatic benchmark, driven by JSON lines (see bench/common/service-worker.ts). */
export interface ServiceWorker {
  library: ServiceLibrary;
  /** Redis client name of its connection, to count its commands. */
  clientName: string;
  send(command: WorkerCommand): Promise<WorkerResult>;
  stop(): Promise<void>;
}

const ROOT = join(__dirname, '..', '..');

/** Starts one library's worker as a child process, and resolves once it is connected. */
export function startServiceWorker(
  library: ServiceLibrary,
  env: Record<string, string>,
  nodeArgs: string[] = [],
): Promise<ServiceWorker> {
  const peer = library === 'powertools';
  const child: ChildProcess = spawn(
    process.execPath,
    [
      ...nodeArgs,
      '-r',
      'ts-node/register/transpile-only',
      ...(peer ? [] : ['-r', 'tsconfig-paths/register']),
      join(ROOT, peer ? 'bench/peer-service/worker.ts' : 'bench/service/ours.ts'),
    ],
    {
      cwd: ROOT,
      env: {
        ...process.env,
        ...env,
        ...(peer ? { TS_NODE_PROJECT: join(ROOT, 'bench/peer-service/tsconfig.json') } : {}),
      },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  child.stderr?.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) {
      process.stderr.write(`[service-${library}] ${line}\n`);
    }
  });
  const lines: Interface = createInterface({ input: child.stdout! });
  const waiting: ((line: string) => void)[] = [];
  let ready: () => void = () => undefined;
  const started = new Promise<void>((resolve) => (ready = resolve));
  lines.on('line', (line) => {
    if (line === 'READY') {
      ready();
    } else if (line.startsWith('{')) {
      waiting.shift()?.(line);
    }
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`service worker ${library} did not start within 90 s`));
    }, 90_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`service worker ${library} exited before it was ready (code ${code})`));
    });
    void started.then(() => {
      clearTimeout(timer);
      resolve({
        library,
        clientName: env.BENCH_CLIENT_NAME,
        send: (command) =>
          new Promise<WorkerResult>((answer, fail) => {
            if (child.exitCode !== null) {
              fail(new Error(`service worker ${library} has exited`));
              return;
            }
            waiting.push((line) => answer(JSON.parse(line) as WorkerResult));
            child.stdin!.write(`${JSON.stringify(command)}\n`);
          }),
        stop: async () => {
          if (child.exitCode === null && child.signalCode === null) {
            child.stdin!.write(`${JSON.stringify({ cmd: 'exit' })}\n`);
            const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
            await exited;
            clearTimeout(killer);
          }
        },
      });
    });
  });
}
