import { type ChildProcess, spawn } from 'node:child_process';
import { statTimes } from './proc';
import { join } from 'node:path';

export type Platform = 'express' | 'fastify';
/**
 * `none`: the bare handler; `peer`: @node-idempotency/nestjs on Redis (bench/peer, Nest 10);
 * `nest10`: the bare handler on the peer's Nest 10; `echo` and `echo10`: what a replay answers,
 * without idempotency or database, on Nest 12 and on the peer's Nest 10; `typeorm-tx`: the TypeORM store in transactional
 * mode, the handler's INSERT inside the record's transaction.
 */
export type ServerKind =
  'echo' | 'echo10' | 'none' | 'memory' | 'redis' | 'typeorm' | 'typeorm-tx' | 'peer' | 'nest10';

export interface ServerSpec {
  name: string;
  platform: Platform;
  kind: ServerKind;
  port: number;
  /** Redis client name of the server's store connection, to find it in CLIENT LIST. */
  clientName?: string;
  env?: Record<string, string>;
  nodeArgs?: string[];
  /** A command the app runs under (`valgrind ...`): the app is started as its last arguments. */
  wrapper?: string[];
}

export interface RunningServer {
  spec: ServerSpec;
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/**
 * The server kind and environment of a `bench:cpu` / `bench:instructions` app name: a kind, or
 * `echo` / `echo10` with `+i` (a replay-shaped interceptor answers), `+r` (after one ioredis GET)
 * or both (`+ir`), `none+i`, `none+ir`, `none+ip` and `none+is` (the bare handler behind an
 * execute-shaped interceptor: alone, with two Redis GETs, with the TypeORM store's two PostgreSQL
 * writes, with what SEMANTICS requires done inline on the Redis store), or `redis+nc` (the Redis
 * store with `coalesceWrites: false`).
 */
export function appOf(name: string): { kind: ServerKind; env: Record<string, string> } {
  const suffix = /\+(i|r|ir|ip|is|nc)$/.exec(name)?.[1] ?? '';
  const env: Record<string, string> = {};
  if (suffix === 'nc') {
    env.BENCH_REDIS_COALESCE = '0';
  } else {
    if (suffix.includes('i')) {
      env.BENCH_ECHO_INTERCEPTOR = '1';
    }
    if (suffix.includes('r')) {
      env.BENCH_ECHO_REDIS = '1';
    }
    if (suffix === 'ip') {
      env.BENCH_ECHO_PG = '1';
    }
    if (suffix === 'is') {
      env.BENCH_ECHO_STORE = '1';
    }
  }
  return { kind: name.slice(0, name.length - (suffix ? suffix.length + 1 : 0)) as ServerKind, env };
}

/**
 * CPU time (user + system) the server process has used so far, in milliseconds, from
 * /proc/<pid>/stat; `undefined` where there is no /proc (the report then leaves the column out).
 */
export function cpuTimeMs(server: RunningServer): number | undefined {
  try {
    const { user, system } = statTimes(`/proc/${server.child.pid}/stat`);
    return user + system;
  } catch {
    return undefined;
  }
}

const ROOT = join(__dirname, '..', '..');

/**
 * Starts one app as a child process, the way `npm start` runs the sample (ts-node in
 * transpile-only mode, CommonJS, Nest loaded through require(esm)), and resolves once it listens.
 */
export function startServer(
  spec: ServerSpec,
  baseEnv: Record<string, string>,
): Promise<RunningServer> {
  const peer = spec.kind === 'peer' || spec.kind === 'nest10' || spec.kind === 'echo10';
  const entry = peer ? join(ROOT, 'bench/peer/main.ts') : join(ROOT, 'bench/app/main.ts');
  const args = [
    ...(spec.nodeArgs ?? []),
    '-r',
    'ts-node/register/transpile-only',
    ...(peer ? [] : ['-r', 'tsconfig-paths/register']),
    entry,
  ];
  const wrapper = spec.wrapper ?? [];
  const command = wrapper.length > 0 ? wrapper[0] : process.execPath;
  const commandArgs = wrapper.length > 0 ? [...wrapper.slice(1), process.execPath, ...args] : args;
  const child = spawn(command, commandArgs, {
    cwd: ROOT,
    env: {
      ...process.env,
      ...baseEnv,
      ...spec.env,
      ...(peer ? { TS_NODE_PROJECT: join(ROOT, 'bench/peer/tsconfig.json') } : {}),
      BENCH_PORT: String(spec.port),
      BENCH_PLATFORM: spec.platform,
      BENCH_STORE: spec.kind,
      ...(spec.clientName ? { BENCH_CLIENT_NAME: spec.clientName } : {}),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stderr?.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) {
      process.stderr.write(`[${spec.name}] ${line}\n`);
    }
  });
  return new Promise((resolve, reject) => {
    const startMs = wrapper.length > 0 ? 300_000 : 90_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${spec.name} did not start within ${startMs / 1000} s`));
    }, startMs);
    let output = '';
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('BENCH_READY')) {
        clearTimeout(timer);
        output = '';
        resolve({
          spec,
          url: `http://127.0.0.1:${spec.port}`,
          child,
          stop: async () => {
            if (child.exitCode === null && child.signalCode === null) {
              child.kill('SIGTERM');
              const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
              await exited;
              clearTimeout(killer);
            }
          },
        });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${spec.name} exited before listening (code ${code}, signal ${signal})`));
    });
  });
}
