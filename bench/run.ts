/**
 * `npm run bench`: what an idempotency guard costs per request, side by side in one run.
 *
 * Starts small Nest apps as child processes on loopback (Express and Fastify): the bare handler,
 * the handler behind nestjs-idempotency with the memory, Redis and TypeORM-on-PostgreSQL stores,
 * and behind the peer (@node-idempotency/nestjs on Redis, bench/peer). Drives them with
 * autocannon in rounds of alternating order, counts store round trips on the servers, measures
 * memory over 100,000 keys, then prints a markdown table and writes it to bench/results/latest.md.
 *
 * Then the programmatic API: `IdempotencyService.run()` against the second peer,
 * `@aws-lambda-powertools/idempotency`'s `makeIdempotent` with its Redis persistence layer
 * (bench/peer-service), each in a worker process of its own calling its library in process on the
 * same Redis, in ops/s, in rounds of alternating order too.
 *
 * Only a full run (the full preset, every scenario, no override, no profiler) replaces
 * bench/results/latest.md; BENCH_QUICK=1 (a short run) writes bench/results/quick.md, any other
 * partial run bench/results/partial.md. BENCH_ONLY=<regex>: only the matching scenarios (the bare handler
 * is always kept, for the ratios; the programmatic ones are named service-ours and
 * service-powertools). BENCH_PROFILE=<regex>: servers and workers whose name matches run with
 * --cpu-prof (profiles in bench/results/profiles; read them with `npm run bench:profile`).
 * BENCH_SKIP_MEMORY=1: no memory run. BENCH_ROUNDS, BENCH_DURATION (seconds per round): override
 * the preset. REDIS_URL and POSTGRES_URL (or DATABASE_URL) point at the servers.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { Client } from 'pg';
import type { WorkerCommand, WorkerResult } from './common/service-worker';
import { countRedisCommands, PgTransactionCounter, type RedisCount } from './lib/counters';
import { createBenchDatabase, databaseUrl as serverDatabaseUrl } from './lib/database';
import { load, type LoadResult, send, sleep } from './lib/load';
import {
  type Measured,
  renderReport,
  type MemoryFigures,
  type Report,
  type ServiceMeasured,
} from './lib/report';
import { type ServiceLibrary, type ServiceWorker, startServiceWorker } from './lib/service';
import {
  type Platform,
  type RunningServer,
  type ServerKind,
  type ServerSpec,
  cpuTimeMs,
  startServer,
} from './lib/servers';

const ROOT = join(__dirname, '..');
const QUICK = process.env.BENCH_QUICK === '1';
const PRESET = QUICK
  ? {
      rounds: 2,
      durationS: 1,
      warmupS: 1,
      connections: 16,
      countRequests: 40,
      memoryKeys: 5_000,
      memoryTtlMs: 60 * 60_000,
      sweepMs: 1_000,
    }
  : {
      rounds: 3,
      durationS: 8,
      warmupS: 3,
      connections: 16,
      countRequests: 500,
      memoryKeys: 100_000,
      memoryTtlMs: 60 * 60_000,
      sweepMs: 1_000,
    };
/** BENCH_ROUNDS and BENCH_DURATION (seconds) override the preset, for profiling runs. */
const SETTINGS = {
  ...PRESET,
  rounds: Number(process.env.BENCH_ROUNDS ?? PRESET.rounds),
  durationS: Number(process.env.BENCH_DURATION ?? PRESET.durationS),
};
/** Keys a replay scenario cycles through, all completed before it is measured. */
const REPLAY_KEYS = 64;
const PLATFORMS: Platform[] = ['express', 'fastify'];
const KINDS: ServerKind[] = ['none', 'memory', 'redis', 'typeorm', 'typeorm-tx', 'peer', 'nest10'];
const FIRST_PORT = 4101;

const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_URL =
  process.env.POSTGRES_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const BENCH_DB = 'idempotency_bench';
const RUN_ID = randomBytes(4).toString('hex');
const REDIS_PREFIX = `nestjs-idempotency-bench:${RUN_ID}:`;

export type Path = 'bare' | 'execute' | 'replay';

export interface Scenario {
  id: string;
  platform: Platform;
  kind: ServerKind;
  path: Path;
  server: RunningServer;
  rounds: LoadResult[];
  roundTrips?: { perRequest: number; detail: string; check: string };
}

function databaseUrl(name: string): string {
  return serverDatabaseUrl(PG_URL, name);
}

let keySeq = 0;
function keys(scenario: Pick<Scenario, 'id' | 'path'>): () => string {
  if (scenario.path === 'replay') {
    let i = 0;
    return () => `${RUN_ID}:${scenario.id}:replay:${i++ % REPLAY_KEYS}`;
  }
  return () => `${RUN_ID}:${scenario.id}:${keySeq++}`;
}

const T0 = Date.now();
function log(message: string): void {
  process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);
}

/** Installs the peers from their lock files (bench/peer, bench/peer-service) when missing. */
async function preparePeers(): Promise<void> {
  for (const [folder, marker] of [
    ['bench/peer', '@node-idempotency/nestjs'],
    ['bench/peer-service', '@aws-lambda-powertools/idempotency'],
  ]) {
    if (existsSync(join(ROOT, folder, 'node_modules', marker))) {
      continue;
    }
    log(`installing a peer (npm ci --prefix ${folder}) ...`);
    execFileSync('npm', ['ci', '--prefix', join(ROOT, folder), '--no-audit', '--no-fund'], {
      stdio: 'inherit',
    });
  }
}

/** A fresh database of the benchmark's own, with the handler's table and the library's migration. */
async function prepareDatabase(): Promise<void> {
  await createBenchDatabase(PG_URL, BENCH_DB);
}

async function dropDatabase(): Promise<void> {
  const admin = new Client({ connectionString: databaseUrl('postgres') });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS ${BENCH_DB} WITH (FORCE)`);
  } finally {
    await admin.end();
  }
}

/** Deletes this run's keys (its own prefix only) from the shared Redis. */
async function cleanRedis(): Promise<number> {
  const redis = new Redis(REDIS_URL);
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${REDIS_PREFIX}*`, 'COUNT', 1000);
      cursor = next;
      if (found.length > 0) {
        deleted += await redis.unlink(...found);
      }
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
  return deleted;
}

const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : undefined;
const PROFILE = process.env.BENCH_PROFILE ? new RegExp(process.env.BENCH_PROFILE) : undefined;
const profileArgs = (name: string): string[] | undefined =>
  PROFILE?.test(name)
    ? ['--cpu-prof', `--cpu-prof-dir=${join(ROOT, 'bench/results/profiles')}`]
    : undefined;
const SERVICE_LIBRARIES: ServiceLibrary[] = ['ours', 'powertools'];

/**
 * Whether this run measures everything with the full preset and no profiler (which slows the apps
 * it watches): only such a run is `latest.md`.
 */
const FULL_RUN =
  !QUICK &&
  !ONLY &&
  !PROFILE &&
  process.env.BENCH_ROUNDS === undefined &&
  process.env.BENCH_DURATION === undefined &&
  process.env.BENCH_SKIP_MEMORY !== '1';

function serverSpecs(): ServerSpec[] {
  const only = ONLY;
  const specs: ServerSpec[] = [];
  let port = FIRST_PORT;
  for (const platform of PLATFORMS) {
    for (const kind of KINDS) {
      const name = `${platform}-${kind}`;
      port++;
      if (only && kind !== 'none' && !only.test(name)) {
        continue;
      }
      specs.push({
        name,
        platform,
        kind,
        port,
        clientName: kind === 'redis' || kind === 'peer' ? `bench-${RUN_ID}-${name}` : undefined,
        env: kind === 'peer' ? { BENCH_REDIS_PREFIX: `${REDIS_PREFIX}peer` } : undefined,
        nodeArgs: profileArgs(name),
      });
    }
  }
  return specs;
}

function scenariosOf(servers: RunningServer[]): Scenario[] {
  const scenarios: Scenario[] = [];
  for (const server of servers) {
    const bare = server.spec.kind === 'none' || server.spec.kind === 'nest10';
    // A transactional replay is the plain one (no transaction opens): only its execute is measured.
    const paths: Path[] = bare
      ? ['bare']
      : server.spec.kind === 'typeorm-tx'
        ? ['execute']
        : ['execute', 'replay'];
    for (const path of paths) {
      scenarios.push({
        id: `${server.spec.name}-${path}`,
        platform: server.spec.platform,
        kind: server.spec.kind,
        path,
        server,
        rounds: [],
      });
    }
  }
  return scenarios;
}

/** Counts the store's round trips per request on the server side, and checks the path taken. */
async function countRoundTrips(scenario: Scenario): Promise<void> {
  const n = SETTINGS.countRequests;
  const next = keys(scenario);
  const expectPath = (sent: Awaited<ReturnType<typeof send>>): string => {
    const ok =
      sent.failed === 0 && (scenario.path === 'replay' ? sent.replayed === n : sent.executed === n);
    return ok
      ? `${n}/${n} ${scenario.path === 'replay' ? 'replayed' : 'ran the handler'}`
      : `unexpected: ${sent.executed} ran, ${sent.replayed} replayed, ${sent.failed} failed`;
  };
  /** `EVALSHA 1.00, ...`: each command's (or statement's) count per request. */
  const perRequestOf = (counts: Record<string, number>): string =>
    Object.entries(counts)
      .map(([name, calls]) => `${name} ${(calls / n).toFixed(2)}`)
      .join(', ');
  switch (scenario.kind) {
    case 'none':
    case 'nest10':
    case 'memory': {
      const sent = await send(scenario.server.url, n, next);
      scenario.roundTrips = {
        perRequest: 0,
        detail: scenario.kind === 'memory' ? '0 (in process)' : '-',
        check: expectPath(sent),
      };
      return;
    }
    case 'redis':
    case 'peer': {
      let sent: Awaited<ReturnType<typeof send>> | undefined;
      const count: RedisCount = await countRedisCommands(
        REDIS_URL,
        scenario.server.spec.clientName ?? '',
        async () => {
          sent = await send(scenario.server.url, n, next);
        },
      );
      const perRequest = count.commands / n;
      scenario.roundTrips = {
        perRequest,
        detail: `${perRequest.toFixed(2)} (${perRequestOf(count.byCommand)})`,
        check: sent ? expectPath(sent) : 'no requests',
      };
      return;
    }
    case 'typeorm':
    case 'typeorm-tx': {
      const counter = new PgTransactionCounter(databaseUrl('postgres'), BENCH_DB);
      await counter.open();
      try {
        const statementsSent = () =>
          fetch(`${scenario.server.url}/orders/statements`).then(
            (r) => r.json() as Promise<Record<string, number>>,
          );
        const before = await counter.settled();
        const sentBefore = await statementsSent();
        const sent = await send(scenario.server.url, n, next);
        const sentAfter = await statementsSent();
        const after = await counter.settled();
        // The statements the app's DataSource sent (the handler's INSERT left out), by first word.
        const byWord = Object.fromEntries(
          Object.entries(sentAfter)
            .map(([word, total]) => [word, total - (sentBefore[word] ?? 0)] as const)
            .filter(([, calls]) => calls > 0),
        );
        const statements = Object.values(byWord).reduce((sum, calls) => sum + calls, 0) / n;
        // On the server: transactions that ended. In plain mode the handler's INSERT is one of its
        // own; in transactional mode it is inside the record's.
        const transactions =
          (after - before - (scenario.kind === 'typeorm' ? sent.executed : 0)) / n;
        scenario.roundTrips = {
          perRequest: statements,
          detail:
            `${statements.toFixed(2)} statements (${perRequestOf(byWord)}); ` +
            `${transactions.toFixed(2)} transactions on the server`,
          check: expectPath(sent),
        };
      } finally {
        await counter.close();
      }
      return;
    }
  }
}

/**
 * RSS and heap of a memory-store app: after a warm-up, after `memoryKeys` distinct keys, and after
 * they expired and the sweep ran. The store's clock is moved past the ttl (GET /orders/clock)
 * rather than waiting for it, so the run does not depend on how long the keys took to send.
 */
async function memoryRun(baseEnv: Record<string, string>): Promise<MemoryFigures> {
  const server = await startServer(
    {
      name: 'express-memory-rss',
      platform: 'express',
      kind: 'memory',
      port: FIRST_PORT + 20,
      nodeArgs: ['--expose-gc'],
      env: { BENCH_TTL_MS: String(SETTINGS.memoryTtlMs), BENCH_SWEEP_MS: String(SETTINGS.sweepMs) },
    },
    baseEnv,
  );
  const get = async <T>(path: string) => (await (await fetch(`${server.url}${path}`)).json()) as T;
  const snapshot = () => get<{ rss: number; heapUsed: number; records: number }>('/orders/memory');
  try {
    const next = keys({ id: 'memory-rss', path: 'execute' });
    await load(server.url, { connections: SETTINGS.connections, amount: 2_000, nextKey: next });
    const baseline = await snapshot();
    const started = Date.now();
    const result = await load(server.url, {
      connections: SETTINGS.connections,
      amount: SETTINGS.memoryKeys,
      nextKey: next,
    });
    const loadMs = Date.now() - started;
    const loaded = await snapshot();
    await get(`/orders/clock?ms=${SETTINGS.memoryTtlMs + 1}`);
    // One sweep interval later (and a margin), the sweep has deleted every expired record.
    await sleep(2 * SETTINGS.sweepMs);
    const swept = await snapshot();
    // The same number of keys again: the memory freed by the sweep is reused, RSS does not climb.
    await load(server.url, {
      connections: SETTINGS.connections,
      amount: SETTINGS.memoryKeys,
      nextKey: next,
    });
    const reloaded = await snapshot();
    return {
      keys: SETTINGS.memoryKeys,
      ttlMs: SETTINGS.memoryTtlMs,
      sweepMs: SETTINGS.sweepMs,
      loadMs,
      failed: result.non2xx + result.errors,
      baseline,
      loaded,
      swept,
      reloaded,
    };
  } finally {
    await server.stop();
  }
}

/**
 * The programmatic API: each library's worker calls it in process, `connections` calls in flight,
 * new keys (execute) or 64 completed keys round robin (replay); then its Redis commands are
 * counted over `countRequests` more calls, as for the HTTP scenarios.
 */
async function serviceRun(baseEnv: Record<string, string>): Promise<ServiceMeasured[]> {
  const libraries = SERVICE_LIBRARIES.filter((library) => !ONLY || ONLY.test(`service-${library}`));
  if (libraries.length === 0) {
    return [];
  }
  const workers: ServiceWorker[] = [];
  try {
    for (const library of libraries) {
      const name = `service-${library}`;
      workers.push(
        await startServiceWorker(
          library,
          { ...baseEnv, BENCH_CLIENT_NAME: `bench-${RUN_ID}-${name}` },
          profileArgs(name),
        ),
      );
    }
    const measured: (ServiceMeasured & { worker: ServiceWorker })[] = workers.flatMap((worker) =>
      (['execute', 'replay'] as const).map((path) => ({
        id: `service-${worker.library}-${path}`,
        library: worker.library,
        path,
        rounds: [],
        worker,
      })),
    );
    const command = (
      m: (typeof measured)[number],
      extra: Partial<WorkerCommand>,
    ): WorkerCommand => ({
      cmd: 'run',
      path: m.path,
      concurrency: SETTINGS.connections,
      keyPrefix: `${RUN_ID}:${m.id}`,
      replayKeys: REPLAY_KEYS,
      ...extra,
    });
    for (const worker of workers) {
      await worker.send({
        cmd: 'run',
        path: 'execute',
        durationS: SETTINGS.warmupS,
        concurrency: SETTINGS.connections,
        keyPrefix: `${RUN_ID}:service-${worker.library}-warmup`,
      });
    }
    for (let round = 0; round < SETTINGS.rounds; round++) {
      const order = round % 2 === 0 ? measured : [...measured].reverse();
      for (const m of order) {
        const result = await m.worker.send(command(m, { durationS: SETTINGS.durationS }));
        m.rounds.push(result);
        log(
          `round ${round + 1}/${SETTINGS.rounds} ${m.id.padEnd(28)} ${(result.calls / result.seconds).toFixed(0).padStart(6)} ops/s  cpu ${(result.cpuUs / Math.max(1, result.calls)).toFixed(1)} us/op${result.failed ? `  ${result.failed} failed (${result.error})` : ''}`,
        );
      }
    }
    for (const m of measured) {
      const n = SETTINGS.countRequests;
      let sent: WorkerResult | undefined;
      const count = await countRedisCommands(REDIS_URL, m.worker.clientName, async () => {
        sent = await m.worker.send(command(m, { cmd: 'count', calls: n, concurrency: 4 }));
      });
      const executed = sent?.executed ?? 0;
      const ok =
        sent !== undefined &&
        sent.failed === 0 &&
        sent.calls === n &&
        executed === (m.path === 'execute' ? n : 0);
      m.roundTrips = {
        perRequest: count.commands / n,
        detail: `${(count.commands / n).toFixed(2)} (${Object.entries(count.byCommand)
          .map(([name, calls]) => `${name} ${(calls / n).toFixed(2)}`)
          .join(', ')})`,
        check: ok
          ? `${n}/${n} ${m.path === 'replay' ? 'replayed' : 'ran the work'}`
          : `unexpected: ${sent?.calls ?? 0} answered, ${executed} ran the work, ${sent?.failed ?? '?'} failed`,
      };
      log(`round trips ${m.id.padEnd(28)} ${m.roundTrips.detail} [${m.roundTrips.check}]`);
    }
    return measured.map(({ worker: _worker, ...m }) => m);
  } finally {
    await Promise.all(workers.map((worker) => worker.stop()));
  }
}

async function main(): Promise<void> {
  const startedAt = Date.now();
  const command = `${[
    'BENCH_QUICK',
    'BENCH_ONLY',
    'BENCH_ROUNDS',
    'BENCH_DURATION',
    'BENCH_SKIP_MEMORY',
  ]
    .filter((name) => process.env[name] !== undefined)
    .map((name) => `${name}=${process.env[name]} `)
    .join('')}npm run bench`;
  log(
    `${command}: run ${RUN_ID}, ${SETTINGS.rounds} rounds of ${SETTINGS.durationS} s per scenario`,
  );
  await preparePeers();
  await prepareDatabase();
  const baseEnv = {
    BENCH_DATABASE_URL: databaseUrl(BENCH_DB),
    BENCH_REDIS_URL: REDIS_URL,
    BENCH_REDIS_PREFIX: REDIS_PREFIX,
    BENCH_TTL_MS: String(15 * 60_000),
  };
  const servers: RunningServer[] = [];
  const stopAll = () => Promise.all(servers.map((server) => server.stop()));
  process.once('SIGINT', () => {
    void stopAll().finally(() => process.exit(130));
  });
  let memory: MemoryFigures | undefined;
  let scenarios: Scenario[] = [];
  let service: ServiceMeasured[] = [];
  try {
    // Two at a time: the machine has two cores and each start compiles the sources.
    const specs = serverSpecs();
    for (let i = 0; i < specs.length; i += 2) {
      servers.push(
        ...(await Promise.all(specs.slice(i, i + 2).map((s) => startServer(s, baseEnv)))),
      );
    }
    log(`${servers.length} servers up`);
    scenarios = scenariosOf(servers);

    for (const server of servers) {
      await load(server.url, {
        connections: SETTINGS.connections,
        durationS: SETTINGS.warmupS,
        nextKey: keys({ id: `${server.spec.name}-warmup`, path: 'execute' }),
      });
    }
    for (const scenario of scenarios.filter((s) => s.path === 'replay')) {
      const primed = await send(scenario.server.url, REPLAY_KEYS, keys(scenario), 1);
      if (primed.executed !== REPLAY_KEYS) {
        throw new Error(`${scenario.id}: priming ran ${primed.executed} of ${REPLAY_KEYS} keys`);
      }
    }

    for (let round = 0; round < SETTINGS.rounds; round++) {
      const order = round % 2 === 0 ? scenarios : [...scenarios].reverse();
      for (const scenario of order) {
        const cpuBefore = cpuTimeMs(scenario.server);
        const result = await load(scenario.server.url, {
          connections: SETTINGS.connections,
          durationS: SETTINGS.durationS,
          nextKey: keys(scenario),
        });
        const cpuAfter = cpuTimeMs(scenario.server);
        if (cpuBefore !== undefined && cpuAfter !== undefined) {
          result.serverCpuMs = cpuAfter - cpuBefore;
        }
        scenario.rounds.push(result);
        log(
          `round ${round + 1}/${SETTINGS.rounds} ${scenario.id.padEnd(24)} ${(result.requests / result.durationS).toFixed(0).padStart(6)} req/s  p99 ${result.p99Ms} ms  cpu ${result.serverCpuMs === undefined ? '-' : ((result.serverCpuMs * 1000) / result.requests).toFixed(0)} us/req${result.non2xx + result.errors ? `  ${result.non2xx} non-2xx, ${result.errors} errors` : ''}`,
        );
      }
    }

    log('counting round trips on the servers');
    for (const scenario of scenarios) {
      await countRoundTrips(scenario);
      log(
        `round trips ${scenario.id.padEnd(24)} ${scenario.roundTrips?.detail} [${scenario.roundTrips?.check}]`,
      );
    }
    await stopAll();
    service = await serviceRun(baseEnv);
    if (process.env.BENCH_SKIP_MEMORY !== '1') {
      log(`memory run: ${SETTINGS.memoryKeys} keys`);
      memory = await memoryRun(baseEnv);
    }
  } finally {
    await stopAll();
    const deleted = await cleanRedis();
    await dropDatabase();
    log(`cleaned up: ${deleted} Redis keys under ${REDIS_PREFIX}, database ${BENCH_DB} dropped`);
  }

  const report: Report = {
    command,
    date: new Date().toISOString(),
    node: process.version,
    cpu: `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores`,
    settings: { ...SETTINGS, replayKeys: REPLAY_KEYS },
    elapsedS: Math.round((Date.now() - startedAt) / 1000),
    scenarios: scenarios.map((s): Measured => ({
      id: s.id,
      platform: s.platform,
      kind: s.kind,
      path: s.path,
      rounds: s.rounds,
      roundTrips: s.roundTrips,
    })),
    service,
    memory,
  };
  const markdown = renderReport(report);
  process.stdout.write(`\n${markdown}\n`);
  const results = join(ROOT, 'bench/results');
  mkdirSync(results, { recursive: true });
  const file = FULL_RUN ? 'latest.md' : QUICK ? 'quick.md' : 'partial.md';
  writeFileSync(join(results, file), markdown);
  log(
    `written to bench/results/${file}${FULL_RUN ? '' : ' (not a full run: latest.md is left as it was)'}`,
  );
  writeFileSync(
    join(results, `${report.date.replace(/[:.]/g, '-')}.json`),
    JSON.stringify(report, null, 2),
  );
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
