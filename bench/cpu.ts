/**
 * `npm run bench:cpu -- <platform> <kinds> <path> [requests] [rounds] [--prepare]`: app CPU per
 * request from /proc over a fixed number of requests, for a few apps side by side, in interleaved
 * rounds (A, B, A, B), with the minimum over the rounds: noise on a shared machine only adds CPU.
 * It gives user + system time of the whole process, user time, and the main thread's time (the
 * JavaScript; the rest is V8's GC helper threads and libuv's pool).
 *
 * kinds: comma-separated server kinds (redis, peer, memory, typeorm, none, nest10; echo and echo10:
 * the answer a replay gives, with no idempotency and no database, on Nest 12 and on the peer's
 * Nest 10; echo+i and echo10+i: the same answered by a global interceptor shaped like a replay
 * (the handler does not run); echo+r: the echo handler answering after one Redis GET on ioredis;
 * echo+ir and echo10+ir: the interceptor answering after that GET; none+i: the bare handler behind
 * a pass-through async interceptor; none+ir: the same interceptor with one Redis GET before the
 * handler and one after, as a claim and a completion; none+ip: the same with the TypeORM store's
 * two PostgreSQL writes instead of the GETs; none+is: the same interceptor doing what SEMANTICS
 * requires of an execute and nothing else, inline, on the Redis store's claim and completion;
 * redis+nc: the Redis store with coalesceWrites: false). path: replay (64 keys completed first,
 * round robin) or execute (a new key per request).
 * BENCH_CPU_PROFILE=1 starts the apps with --cpu-prof (profiles in bench/results/profiles, written
 * when they stop; read them with `npm run bench:profile -- <file> <requests>`, with the requests
 * served that it prints). It uses a database of its own, BENCH_CPU_DB (default
 * idempotency_bench_cpu), which `--prepare` (re)creates with the benchmark's tables.
 */
import { randomBytes } from 'node:crypto';
import { cpuDeltaMs, processCpuMs, statTimes } from './lib/proc';
import { join } from 'node:path';
import { createBenchDatabase, databaseUrl as serverDatabaseUrl } from './lib/database';
import { load, send } from './lib/load';
import { appOf, type Platform, type RunningServer, startServer } from './lib/servers';

/**
 * A server's CPU time so far, in milliseconds: user and system of the whole process, and of its
 * main thread alone (the JavaScript; the rest is V8's GC helpers and libuv's thread pool).
 */
function cpuTimes(server: RunningServer): { user: number; system: number; main: number } {
  const pid = server.child.pid!;
  const main = statTimes(`/proc/${pid}/task/${pid}/stat`);
  return { ...statTimes(`/proc/${pid}/stat`), main: main.user + main.system };
}

/** CPU time (ms) so far of each process of the local PostgreSQL and Redis servers, by pid. */
function serverTimes(): { postgres: Map<number, number>; redis: Map<number, number> } {
  return { postgres: processCpuMs('postgres'), redis: processCpuMs('redis-server') };
}

const ROOT = join(__dirname, '..');
const args = process.argv.slice(2).filter((arg) => arg !== '--prepare');
const [platform = 'express', kindList = 'redis,peer', path = 'replay'] = args;
const REQUESTS = Number(args[3] ?? 20_000);
const ROUNDS = Number(args[4] ?? 3);
/** BENCH_CPU_CONNECTIONS: connections in the measured rounds (16; 1 as bench:instructions counts). */
const CONNECTIONS = Number(process.env.BENCH_CPU_CONNECTIONS ?? 16);
const RUN_ID = randomBytes(4).toString('hex');
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_URL = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = process.env.BENCH_CPU_DB ?? 'idempotency_bench_cpu';

function databaseUrl(name: string): string {
  return serverDatabaseUrl(PG_URL, name);
}

async function prepare(): Promise<void> {
  await createBenchDatabase(PG_URL, DB);
}

async function main(): Promise<void> {
  if (process.argv.includes('--prepare')) {
    await prepare();
  }
  const kinds = kindList.split(',');
  const servers: RunningServer[] = [];
  let port = 4300;
  for (const kindName of kinds) {
    const { kind, env } = appOf(kindName);
    const name = `${platform}-${kindName}`;
    servers.push(
      await startServer(
        {
          name,
          platform: platform as Platform,
          kind,
          port: port++,
          clientName: `cpu-${RUN_ID}-${name}`,
          env: { BENCH_REDIS_PREFIX: `nestjs-idempotency-cpu:${RUN_ID}:${kind}:`, ...env },
          nodeArgs:
            process.env.BENCH_CPU_PROFILE === '1'
              ? ['--cpu-prof', `--cpu-prof-dir=${join(ROOT, 'bench/results/profiles')}`]
              : undefined,
        },
        {
          BENCH_DATABASE_URL: databaseUrl(DB),
          BENCH_REDIS_URL: REDIS_URL,
          BENCH_REDIS_PREFIX: `nestjs-idempotency-cpu:${RUN_ID}:`,
          BENCH_TTL_MS: String(60 * 60_000),
        },
      ),
    );
  }
  let seq = 0;
  const nextKey =
    path === 'replay' ? () => `${RUN_ID}:replay:${seq++ % 64}` : () => `${RUN_ID}:${seq++}`;
  const served = new Map<RunningServer, number>();
  const figures = new Map<
    RunningServer,
    {
      us: number;
      user: number;
      main: number;
      rps: number;
      postgres: number;
      redis: number;
      loader: number;
    }[]
  >();
  try {
    for (const server of servers) {
      if (path === 'replay') {
        await send(server.url, 64, nextKey);
      }
      await load(server.url, { connections: 16, amount: 3_000, nextKey });
      served.set(server, 3_064);
      figures.set(server, []);
    }
    for (let round = 0; round < ROUNDS; round++) {
      const order = round % 2 === 0 ? servers : [...servers].reverse();
      for (const server of order) {
        const before = cpuTimes(server);
        const serversBefore = serverTimes();
        const loaderBefore = process.cpuUsage();
        const result = await load(server.url, {
          connections: CONNECTIONS,
          amount: REQUESTS,
          nextKey,
        });
        const after = cpuTimes(server);
        const loader = process.cpuUsage(loaderBefore);
        const serversAfter = serverTimes();
        const servers = {
          postgres: cpuDeltaMs(serversBefore.postgres, serversAfter.postgres),
          redis: cpuDeltaMs(serversBefore.redis, serversAfter.redis),
        };
        if (result.non2xx + result.errors > 0) {
          throw new Error(`${server.spec.name}: ${result.non2xx} non-2xx, ${result.errors} errors`);
        }
        figures.get(server)!.push({
          us: ((after.user + after.system - before.user - before.system) * 1000) / result.requests,
          user: ((after.user - before.user) * 1000) / result.requests,
          main: ((after.main - before.main) * 1000) / result.requests,
          rps: result.requests / result.durationS,
          postgres: (servers.postgres * 1000) / result.requests,
          redis: (servers.redis * 1000) / result.requests,
          loader: (loader.user + loader.system) / result.requests,
        });
        served.set(server, served.get(server)! + result.requests);
      }
    }
  } finally {
    for (const server of servers) {
      await server.stop();
    }
  }
  console.log(
    `${platform} ${path}, ${REQUESTS} requests x ${ROUNDS} rounds (interleaved), ${CONNECTIONS} connections`,
  );
  for (const server of servers) {
    const rounds = figures.get(server)!;
    const us = rounds.map((r) => r.us);
    const user = rounds.map((r) => r.user);
    const main = rounds.map((r) => r.main);
    const rps = rounds.map((r) => r.rps);
    console.log(
      `${server.spec.name.padEnd(18)} CPU µs/request min ${Math.min(...us).toFixed(1)} ` +
        `(rounds ${us.map((v) => v.toFixed(1)).join(' ')}), user min ${Math.min(...user).toFixed(1)} ` +
        `(rounds ${user.map((v) => v.toFixed(1)).join(' ')}), main thread min ` +
        `${Math.min(...main).toFixed(1)} (rounds ${main.map((v) => v.toFixed(1)).join(' ')}); req/s max ${Math.max(...rps).toFixed(0)} ` +
        `(rounds ${rps.map((v) => v.toFixed(0)).join(' ')}); served ${served.get(server)}`,
    );
    // The rest of the machine in the same rounds: the servers' CPU (all of their processes, so
    // other clients' work counts too) and this process, the load generator.
    const others = (['postgres', 'redis', 'loader'] as const).map((field) => {
      const values = rounds.map((r) => r[field]);
      return `${field} min ${Math.min(...values).toFixed(1)} (rounds ${values.map((v) => v.toFixed(1)).join(' ')})`;
    });
    console.log(`${''.padEnd(18)} µs/request elsewhere: ${others.join(', ')}`);
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
