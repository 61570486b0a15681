/**
 * `npm run bench:instructions -- <platform> <kinds> <path> [requests] [warmup] [--prepare]`:
 * instructions per request of a few apps, counted by valgrind's callgrind and charged to the
 * JavaScript package that caused them (see lib/callgrind.ts). Unlike CPU time, an instruction count
 * does not move with what else the machine runs: the same app, requests and warm-up give the same
 * figure within a percent or two, so two apps can be compared on a shared machine.
 *
 * Each app (kinds as in `bench:cpu`: redis, peer, none, nest10, echo+ir, echo10+ir, none+ir, ...)
 * runs under `valgrind --tool=callgrind` with instrumentation off and Node's `--perf-basic-prof`;
 * it serves `warmup` requests (16 connections, default 40,000) so that V8 has compiled the hot code,
 * then counts `requests` requests (default 1,000) sent one at a time, one connection, and stops.
 * What it leaves out: the kernel's work (system calls, loopback TCP), which `bench:cpu`'s system
 * time shows; V8's compilers, reported apart (tiering up that had not settled by the end of the
 * warm-up); and V8's garbage collector, reported apart too (whether a full collection falls within
 * the counted requests is chance, and moves the figure more than any library does). Needs valgrind
 * (Debian: `apt-get install valgrind`); an app runs about 30 times slower under it, so count on two
 * to three minutes per app, more on Express.
 *
 * It uses `bench:cpu`'s database (BENCH_CPU_DB, default idempotency_bench_cpu), which `--prepare`
 * (re)creates. BENCH_INSTRUCTIONS_FUNCTIONS=<package>[;<package>]: also the functions charged to
 * those packages (`;` between them: some names, such as `(V8 runtime, not called from
 * JavaScript)`, hold a comma). BENCH_INSTRUCTIONS_CALLERS=<regex>: also the JavaScript functions
 * (`<package> <function>`) the regex matches, each with what it called.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { type InstructionProfile, readInstructionProfile } from './lib/callgrind';
import { createBenchDatabase, databaseUrl } from './lib/database';
import { load, send } from './lib/load';
import { appOf, type Platform, startServer } from './lib/servers';

const ROOT = join(__dirname, '..');
const OUT = join(ROOT, 'bench/results/profiles');
const args = process.argv.slice(2).filter((arg) => arg !== '--prepare');
const [platform = 'fastify', kindList = 'redis,echo+ir,peer', path = 'replay'] = args;
const REQUESTS = Number(args[3] ?? 1_000);
const WARMUP = Number(args[4] ?? 40_000);
const RUN_ID = randomBytes(4).toString('hex');
const PG_URL = process.env.POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const DB = process.env.BENCH_CPU_DB ?? 'idempotency_bench_cpu';
const CALLERS = process.env.BENCH_INSTRUCTIONS_CALLERS;

async function measure(kindName: string, port: number): Promise<InstructionProfile> {
  const { kind, env } = appOf(kindName);
  const name = `${platform}-${kindName}`;
  const output = join(OUT, `callgrind.${name}.${RUN_ID}.out`);
  const server = await startServer(
    {
      name,
      platform: platform as Platform,
      kind,
      port,
      clientName: `instructions-${RUN_ID}-${name}`,
      env: { BENCH_REDIS_PREFIX: `nestjs-idempotency-instructions:${RUN_ID}:${kind}:`, ...env },
      nodeArgs: ['--perf-basic-prof'],
      wrapper: [
        'valgrind',
        '--tool=callgrind',
        '--instr-atstart=no',
        // V8 writes and rewrites machine code at run time.
        '--smc-check=all-non-file',
        `--callgrind-out-file=${output}`,
      ],
    },
    {
      BENCH_DATABASE_URL: databaseUrl(PG_URL, DB),
      BENCH_REDIS_URL: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
      BENCH_REDIS_PREFIX: `nestjs-idempotency-instructions:${RUN_ID}:`,
      BENCH_TTL_MS: String(60 * 60_000),
    },
  );
  const pid = String(server.child.pid);
  let seq = 0;
  const nextKey =
    path === 'replay' ? () => `${RUN_ID}:replay:${seq++ % 64}` : () => `${RUN_ID}:${name}:${seq++}`;
  let served: number;
  try {
    if (path === 'replay') {
      await send(server.url, 64, nextKey);
    }
    await load(server.url, { connections: 16, amount: WARMUP, nextKey });
    execFileSync('callgrind_control', ['--instr=on', pid], { stdio: 'ignore' });
    const result = await load(server.url, { connections: 1, amount: REQUESTS, nextKey });
    execFileSync('callgrind_control', ['--instr=off', pid], { stdio: 'ignore' });
    execFileSync('callgrind_control', ['--dump', pid], { stdio: 'ignore' });
    if (result.non2xx + result.errors > 0) {
      throw new Error(`${name}: ${result.non2xx} non-2xx, ${result.errors} errors`);
    }
    served = result.requests;
  } finally {
    await server.stop();
  }
  const perfMap = `/tmp/perf-${pid}.map`;
  try {
    // `--dump` wrote part 1: the counted requests alone.
    return readInstructionProfile(`${output}.1`, perfMap, served, { byCaller: Boolean(CALLERS) });
  } finally {
    rmSync(perfMap, { force: true });
  }
}

/** The most expensive `entries` under `title`, one a line. */
function printTop(title: string, entries: Iterable<[string, number]>, limit: number): void {
  console.log(`\n${title}`);
  for (const [fn, count] of [...entries].sort((a, b) => b[1] - a[1]).slice(0, limit)) {
    console.log(`${count.toFixed(2).padStart(8)}  ${fn.slice(0, 140)}`);
  }
}

function table(kinds: string[], profiles: InstructionProfile[]): void {
  const row = (label: string, values: number[]) =>
    console.log(`| ${label} | ${values.map((value) => value.toFixed(1)).join(' | ')} |`);
  console.log(`| thousand instructions per request | ${kinds.join(' | ')} |`);
  console.log(`| --- | ${kinds.map(() => '---:').join(' | ')} |`);
  row(
    '**total** (compilers and GC apart)',
    profiles.map((p) => p.total),
  );
  const packages = [...new Set(profiles.flatMap((p) => [...p.byPackage.keys()]))]
    .map((pkg) => [pkg, Math.max(...profiles.map((p) => p.byPackage.get(pkg) ?? 0))] as const)
    .filter(([, most]) => most >= 0.5)
    .sort((a, b) => b[1] - a[1]);
  for (const [pkg] of packages) {
    row(
      pkg,
      profiles.map((p) => p.byPackage.get(pkg) ?? 0),
    );
  }
  row(
    '(V8 garbage collector, apart)',
    profiles.map((p) => p.gc),
  );
  row(
    '(V8 compilers, apart)',
    profiles.map((p) => p.compilers),
  );
  console.log(
    `\nBy the kind of code that ran (the same instructions and the GC's, not charged to callers):\n`,
  );
  console.log(`| thousand instructions per request | ${kinds.join(' | ')} |`);
  console.log(`| --- | ${kinds.map(() => '---:').join(' | ')} |`);
  const categories = [...new Set(profiles.flatMap((p) => [...p.byCategory.keys()]))].sort(
    (a, b) => (profiles[0].byCategory.get(b) ?? 0) - (profiles[0].byCategory.get(a) ?? 0),
  );
  for (const category of categories) {
    row(
      category,
      profiles.map((p) => p.byCategory.get(category) ?? 0),
    );
  }
}

async function main(): Promise<void> {
  try {
    execFileSync('valgrind', ['--version'], { stdio: 'ignore' });
  } catch {
    console.error('bench:instructions needs valgrind (Debian: apt-get install valgrind).');
    process.exit(2);
  }
  if (!existsSync(OUT)) {
    mkdirSync(OUT, { recursive: true });
  }
  if (process.argv.includes('--prepare')) {
    await createBenchDatabase(PG_URL, DB);
  }
  const kinds = kindList.split(',');
  const profiles: InstructionProfile[] = [];
  let port = 4350;
  for (const kind of kinds) {
    profiles.push(await measure(kind, port++));
  }
  console.log(
    `${platform} ${path}: ${REQUESTS} requests one at a time after ${WARMUP} of warm-up, ` +
      `thousands of instructions per request, charged to the package that caused them\n`,
  );
  table(kinds, profiles);
  for (const pkg of (process.env.BENCH_INSTRUCTIONS_FUNCTIONS ?? '').split(';').filter(Boolean)) {
    kinds.forEach((kind, i) => {
      printTop(
        `${kind}: ${pkg}, top functions (thousand instructions per request)`,
        profiles[i].byFunction.get(pkg) ?? [],
        40,
      );
    });
  }
  if (CALLERS) {
    // BENCH_INSTRUCTIONS_CALLERS: the JavaScript functions the regex matches, each with what it
    // ran and called (natives charged as for packages).
    const match = new RegExp(CALLERS);
    kinds.forEach((kind, i) => {
      printTop(
        `${kind}: JavaScript functions matching /${CALLERS}/, with what they called`,
        [...profiles[i].byCaller!].filter(([fn]) => match.test(fn)),
        30,
      );
    });
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
