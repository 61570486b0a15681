import type { WorkerResult } from '../common/service-worker';
import type { LoadResult } from './load';
import type { Platform, ServerKind } from './servers';

export interface Measured {
  id: string;
  platform: Platform;
  kind: ServerKind;
  path: 'bare' | 'execute' | 'replay';
  rounds: LoadResult[];
  roundTrips?: { perRequest: number; detail: string; check: string };
}

/** A scenario of the programmatic API (bench/lib/service.ts), round by round. */
export interface ServiceMeasured {
  id: string;
  library: 'ours' | 'powertools';
  path: 'execute' | 'replay';
  rounds: WorkerResult[];
  roundTrips?: { perRequest: number; detail: string; check: string };
}

interface MemorySnapshot {
  rss: number;
  heapUsed: number;
  records: number;
}

export interface MemoryFigures {
  keys: number;
  ttlMs: number;
  sweepMs: number;
  loadMs: number;
  failed: number;
  baseline: MemorySnapshot;
  loaded: MemorySnapshot;
  swept: MemorySnapshot;
  /** After as many keys again, once the first ones were swept. */
  reloaded: MemorySnapshot;
}

export interface Report {
  command: string;
  date: string;
  node: string;
  cpu: string;
  settings: {
    rounds: number;
    durationS: number;
    connections: number;
    countRequests: number;
    replayKeys: number;
  };
  elapsedS: number;
  scenarios: Measured[];
  service?: ServiceMeasured[];
  memory?: MemoryFigures;
}

interface Summary {
  rps: number;
  /** Server CPU time per request, in microseconds (NaN when unknown). */
  cpuUs: number;
  p50: number;
  p99: number;
  failed: number;
}

const STORE_LABEL: Record<ServerKind, string> = {
  none: 'bare handler, no idempotency',
  memory: 'nestjs-idempotency, memory store',
  redis: 'nestjs-idempotency, Redis store',
  typeorm: 'nestjs-idempotency, TypeORM store on PostgreSQL',
  'typeorm-tx': 'nestjs-idempotency, TypeORM store on PostgreSQL, transactional mode',
  peer: 'peer: @node-idempotency/nestjs, Redis',
  nest10: "bare handler on Nest 10 (the peer's framework)",
  echo: 'what a replay answers, no idempotency, no database',
  echo10: "what a replay answers, no idempotency, no database, on Nest 10 (the peer's framework)",
};

const PATH_LABEL = { bare: '', execute: 'new key (execute)', replay: 'repeated key (replay)' };

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
};

/** Requests per second over all rounds; latency percentiles as the median of the rounds'. */
export function summarize(measured: Measured): Summary {
  const requests = measured.rounds.reduce((sum, r) => sum + r.requests, 0);
  const seconds = measured.rounds.reduce((sum, r) => sum + r.durationS, 0);
  const cpuRounds = measured.rounds.filter((r) => r.serverCpuMs !== undefined);
  const cpuMs = cpuRounds.reduce((sum, r) => sum + (r.serverCpuMs ?? 0), 0);
  const cpuRequests = cpuRounds.reduce((sum, r) => sum + r.requests, 0);
  return {
    rps: seconds > 0 ? requests / seconds : 0,
    cpuUs: cpuRequests > 0 ? (cpuMs * 1000) / cpuRequests : NaN,
    p50: median(measured.rounds.map((r) => r.p50Ms)),
    p99: median(measured.rounds.map((r) => r.p99Ms)),
    failed: measured.rounds.reduce((sum, r) => sum + r.non2xx + r.errors, 0),
  };
}

/** A ratio of two scenarios over the whole run, with its lowest and highest round. */
export interface Spread {
  ratio: number;
  min: number;
  max: number;
}

/**
 * `a / b` of two per-round series measured in the same rounds: the ratio of the totals, and the
 * lowest and highest of the rounds' own ratios (round i of `a` against round i of `b`, measured
 * minutes apart at most), so that a reader can tell a gap from noise.
 */
export function spreadOf(
  a: { value: number; weight: number }[],
  b: { value: number; weight: number }[],
): Spread {
  const total = (series: { value: number; weight: number }[]) =>
    series.reduce((sum, r) => sum + r.value * r.weight, 0) /
    series.reduce((sum, r) => sum + r.weight, 0);
  const perRound = a
    .slice(0, Math.min(a.length, b.length))
    .map((round, i) => round.value / b[i].value)
    .filter(Number.isFinite);
  return {
    ratio: total(a) / total(b),
    min: perRound.length ? Math.min(...perRound) : NaN,
    max: perRound.length ? Math.max(...perRound) : NaN,
  };
}

/** Requests per second of each round (weighted by its duration). */
const rpsRounds = (m: Measured) =>
  m.rounds.map((r) => ({ value: r.requests / r.durationS, weight: r.durationS }));
/** CPU µs per request of each round (weighted by its requests). */
const cpuRounds = (m: Measured) =>
  m.rounds
    .filter((r) => r.serverCpuMs !== undefined && r.requests > 0)
    .map((r) => ({ value: ((r.serverCpuMs ?? 0) * 1000) / r.requests, weight: r.requests }));
const opsRounds = (m: ServiceMeasured) =>
  m.rounds.map((r) => ({ value: r.calls / r.seconds, weight: r.seconds }));
const cpuPerOpRounds = (m: ServiceMeasured) =>
  m.rounds.map((r) => ({ value: r.cpuUs / Math.max(1, r.calls), weight: r.calls }));

/** `0.93 (0.88-0.97)`: the ratio and, in parentheses, its lowest and highest round. */
export function formatSpread(spread: Spread, suffix = ''): string {
  if (!Number.isFinite(spread.ratio)) {
    return '-';
  }
  const range = Number.isFinite(spread.min)
    ? ` (${spread.min.toFixed(2)}-${spread.max.toFixed(2)})`
    : '';
  return `${spread.ratio.toFixed(2)}${suffix}${range}`;
}

function floorOf(measured: Measured): string {
  switch (measured.kind) {
    case 'none':
    case 'nest10':
      return '-';
    case 'memory':
      return '0';
    case 'typeorm':
      return measured.path === 'replay' ? '1 statement' : '2 statements';
    case 'typeorm-tx':
      // The claim, then BEGIN before the handler's work, and the completion with COMMIT after it.
      return '3 statements';
    default:
      return measured.path === 'replay' ? '1' : '2';
  }
}

const fixed = (value: number, digits = 0) => (Number.isFinite(value) ? value.toFixed(digits) : '-');
const mb = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)}`;

export function renderReport(report: Report): string {
  const find = (platform: Platform, kind: ServerKind, path: Measured['path']) =>
    report.scenarios.find((s) => s.platform === platform && s.kind === kind && s.path === path);
  const platforms = [...new Set(report.scenarios.map((s) => s.platform))];
  const versus = (
    platform: Platform,
    kind: ServerKind,
    path: Measured['path'],
    baseKind: ServerKind = 'none',
    basePath: Measured['path'] = 'bare',
    of: (m: Measured) => { value: number; weight: number }[] = rpsRounds,
  ): Spread => {
    const measured = find(platform, kind, path);
    const base = find(platform, baseKind, basePath);
    return measured && base ? spreadOf(of(measured), of(base)) : { ratio: NaN, min: NaN, max: NaN };
  };

  const lines: string[] = [];
  lines.push('# Benchmark results');
  lines.push('');
  lines.push(
    `\`${report.command}\` on ${report.date.slice(0, 10)}: Node ${report.node}, ${report.cpu}; ` +
      `autocannon with ${report.settings.connections} connections, ` +
      `${report.settings.rounds} rounds of ${report.settings.durationS} s per scenario in alternating order; ` +
      `took ${report.elapsedS} s. Absolute numbers are noisy on a shared two-core machine: ` +
      'read the ratios, which compare scenarios measured in the same run.',
  );
  lines.push('');
  lines.push(
    '| platform | scenario | req/s | p50 ms | p99 ms | vs bare (lowest-highest round) | app CPU µs / request | store round trips / request | floor | checked |',
  );
  lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |');
  for (const m of report.scenarios) {
    const s = summarize(m);
    const name = [STORE_LABEL[m.kind], PATH_LABEL[m.path]].filter(Boolean).join(', ');
    const failed = s.failed > 0 ? ` (${s.failed} failed)` : '';
    lines.push(
      `| ${m.platform} | ${name}${failed} | ${fixed(s.rps)} | ${s.p50} | ${s.p99} | ` +
        `${formatSpread(versus(m.platform, m.kind, m.path))} | ${fixed(s.cpuUs)} | ${m.roundTrips?.detail ?? 'not counted'} | ` +
        `${floorOf(m)} | ${m.roundTrips?.check ?? '-'} |`,
    );
  }
  lines.push('');

  const peerRows = platforms.flatMap((platform) =>
    (['execute', 'replay'] as const).flatMap((path) => {
      const ours = find(platform, 'redis', path);
      const peer = find(platform, 'peer', path);
      if (!ours || !peer) {
        return [];
      }
      const a = summarize(ours);
      const b = summarize(peer);
      return [
        `| ${platform} | ${PATH_LABEL[path]} | ${fixed(a.rps)} | ${fixed(b.rps)} | ` +
          `${formatSpread(versus(platform, 'redis', path, 'peer', path), 'x')} | ` +
          `${fixed(a.cpuUs)} / ${fixed(b.cpuUs)} | ` +
          `${formatSpread(versus(platform, 'redis', path, 'peer', path, cpuRounds), 'x')} | ` +
          `${ours.roundTrips?.detail ?? '-'} | ${peer.roundTrips?.detail ?? '-'} |`,
      ];
    }),
  );
  if (peerRows.length > 0) {
    lines.push('## Against the peer, same endpoint, same Redis');
    lines.push('');
    lines.push(
      '| platform | path | nestjs-idempotency req/s | @node-idempotency/nestjs req/s | req/s ratio (lowest-highest round) | app CPU µs / request, ours / peer | CPU ratio | our round trips | peer round trips |',
    );
    lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |');
    lines.push(...peerRows);
    lines.push('');
  }

  const txRows = platforms.flatMap((platform) => {
    const plain = find(platform, 'typeorm', 'execute');
    const tx = find(platform, 'typeorm-tx', 'execute');
    if (!plain || !tx) {
      return [];
    }
    const a = summarize(plain);
    const b = summarize(tx);
    return [
      `| ${platform} | ${fixed(a.rps)} | ${fixed(b.rps)} | ${formatSpread(versus(platform, 'typeorm-tx', 'execute', 'typeorm', 'execute'))} | ` +
        `${fixed(a.cpuUs)} | ${fixed(b.cpuUs)} | ${plain.roundTrips?.detail ?? '-'} | ${tx.roundTrips?.detail ?? '-'} |`,
    ];
  });
  if (txRows.length > 0) {
    lines.push('## Transactional mode against plain, TypeORM on PostgreSQL, new key');
    lines.push('');
    lines.push(
      '| platform | plain req/s | transactional req/s | ratio | plain CPU µs | transactional CPU µs | plain statements | transactional statements |',
    );
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |');
    lines.push(...txRows);
    lines.push('');
  }

  lines.push('## Targets');
  lines.push('');
  lines.push(`| target | ${platforms.join(' | ')} | met |`);
  lines.push(`| --- | ${platforms.map(() => '---:').join(' | ')} | --- |`);
  const target = (
    label: string,
    value: (p: Platform) => number,
    ok: (v: number) => boolean,
    digits = 2,
  ) => {
    const values = platforms.map(value);
    const met = values.every((v) => Number.isFinite(v) && ok(v));
    lines.push(
      `| ${label} | ${values.map((v) => fixed(v, digits)).join(' | ')} | ${met ? 'yes' : 'no'} |`,
    );
  };
  const trips = (kind: ServerKind, path: Measured['path']) => (p: Platform) =>
    find(p, kind, path)?.roundTrips?.perRequest ?? NaN;
  target('Redis replay: round trips = 1', trips('redis', 'replay'), (v) => v <= 1);
  target('Redis execute: round trips = 2', trips('redis', 'execute'), (v) => v <= 2);
  target('PostgreSQL replay: statements = 1', trips('typeorm', 'replay'), (v) => v <= 1);
  target('PostgreSQL execute: statements <= 2', trips('typeorm', 'execute'), (v) => v <= 2);
  target(
    'PostgreSQL transactional execute: statements more than plain <= 1',
    (p) => trips('typeorm-tx', 'execute')(p) - trips('typeorm', 'execute')(p),
    (v) => v <= 1,
  );
  const ratioTarget = (
    label: string,
    value: (p: Platform) => Spread,
    min: number,
    only?: Platform,
  ) => {
    const values = platforms.map((p) => (only && p !== only ? undefined : value(p)));
    const met = values.every(
      (v) => v === undefined || (Number.isFinite(v.ratio) && v.ratio >= min),
    );
    lines.push(
      `| ${label} | ${values.map((v) => (v ? formatSpread(v) : 'n/a')).join(' | ')} | ${met ? 'yes' : 'no'} |`,
    );
  };
  const atMost = (label: string, value: (p: Platform) => Spread, max: number) => {
    const values = platforms.map(value);
    const met = values.every((v) => Number.isFinite(v.ratio) && v.ratio <= max);
    lines.push(
      `| ${label} | ${values.map((v) => formatSpread(v)).join(' | ')} | ${met ? 'yes' : 'no'} |`,
    );
  };
  ratioTarget(
    'Redis replay req/s >= 1.1 x peer',
    (p) => versus(p, 'redis', 'replay', 'peer', 'replay'),
    1.1,
  );
  atMost(
    'Redis replay app CPU per request <= 0.9 x peer',
    (p) => versus(p, 'redis', 'replay', 'peer', 'replay', cpuRounds),
    0.9,
  );
  ratioTarget(
    'Redis execute req/s >= 1.0 x peer',
    (p) => versus(p, 'redis', 'execute', 'peer', 'execute'),
    1,
  );
  ratioTarget('Redis execute >= 0.8 x bare', (p) => versus(p, 'redis', 'execute'), 0.8);
  ratioTarget('Redis replay >= 1.2 x bare', (p) => versus(p, 'redis', 'replay'), 1.2);
  ratioTarget(
    'TypeORM on PostgreSQL execute >= 0.5 x bare',
    (p) => versus(p, 'typeorm', 'execute'),
    0.5,
  );
  ratioTarget(
    'TypeORM on PostgreSQL replay >= 0.9 x bare',
    (p) => versus(p, 'typeorm', 'replay'),
    0.9,
  );
  ratioTarget(
    'Memory store replay >= 2 x bare (Fastify)',
    (p) => versus(p, 'memory', 'replay'),
    2,
    'fastify',
  );
  lines.push('');
  lines.push(
    "A target is met on the ratio of the whole run; the parentheses give the lowest and highest of the rounds' own ratios.",
  );
  lines.push('');

  const service = report.service ?? [];
  const serviceOf = (library: ServiceMeasured['library'], path: ServiceMeasured['path']) =>
    service.find((m) => m.library === library && m.path === path);
  if (service.length > 0) {
    lines.push(
      '## Programmatic API against @aws-lambda-powertools/idempotency, in process, same Redis',
    );
    lines.push('');
    lines.push('| library | path | ops/s | CPU µs / op | Redis round trips / op | checked |');
    lines.push('| --- | --- | ---: | ---: | --- | --- |');
    for (const m of service) {
      const calls = m.rounds.reduce((sum, r) => sum + r.calls, 0);
      const seconds = m.rounds.reduce((sum, r) => sum + r.seconds, 0);
      const cpuUs = m.rounds.reduce((sum, r) => sum + r.cpuUs, 0);
      const failed = m.rounds.reduce((sum, r) => sum + r.failed, 0);
      const label =
        m.library === 'ours'
          ? 'nestjs-idempotency, `IdempotencyService.run()`'
          : '@aws-lambda-powertools/idempotency, `makeIdempotent` (Redis)';
      lines.push(
        `| ${label}${failed ? ` (${failed} failed)` : ''} | ${PATH_LABEL[m.path]} | ${fixed(calls / seconds)} | ` +
          `${fixed(cpuUs / Math.max(1, calls), 1)} | ${m.roundTrips?.detail ?? 'not counted'} | ${m.roundTrips?.check ?? '-'} |`,
      );
    }
    lines.push('');
    lines.push('| path | ops/s, ours / peer (lowest-highest round) | CPU per op, ours / peer |');
    lines.push('| --- | ---: | ---: |');
    for (const path of ['execute', 'replay'] as const) {
      const ours = serviceOf('ours', path);
      const peer = serviceOf('powertools', path);
      if (ours && peer) {
        lines.push(
          `| ${PATH_LABEL[path]} | ${formatSpread(spreadOf(opsRounds(ours), opsRounds(peer)), 'x')} | ` +
            `${formatSpread(spreadOf(cpuPerOpRounds(ours), cpuPerOpRounds(peer)), 'x')} |`,
        );
      }
    }
    lines.push('');
  }

  if (report.memory) {
    const m = report.memory;
    lines.push(
      `## Memory: ${m.keys.toLocaleString('en-US')} distinct keys against the memory store`,
    );
    lines.push('');
    lines.push(
      `Express app started with \`--expose-gc\`, a full GC before each reading; ttl ${fixed(m.ttlMs / 60_000)} min, ` +
        `sweep every ${m.sweepMs / 1000} s. The keys took ${fixed(m.loadMs / 1000, 1)} s to send` +
        `${m.failed ? ` (${m.failed} failed)` : ''}; then the store's clock (its \`now\` option) ` +
        'was moved past the ttl and the sweep left to run.',
    );
    lines.push('');
    lines.push('| when | records held | RSS MB | heap used MB |');
    lines.push('| --- | ---: | ---: | ---: |');
    lines.push(
      `| after 2,000 warm-up keys | ${m.baseline.records} | ${mb(m.baseline.rss)} | ${mb(m.baseline.heapUsed)} |`,
    );
    lines.push(
      `| after the ${m.keys.toLocaleString('en-US')} keys | ${m.loaded.records} | ${mb(m.loaded.rss)} | ${mb(m.loaded.heapUsed)} |`,
    );
    lines.push(
      `| after expiry and the sweep | ${m.swept.records} | ${mb(m.swept.rss)} | ${mb(m.swept.heapUsed)} |`,
    );
    lines.push(
      `| after ${m.keys.toLocaleString('en-US')} new keys | ${m.reloaded.records} | ${mb(m.reloaded.rss)} | ${mb(m.reloaded.heapUsed)} |`,
    );
    const perRecord =
      (m.loaded.heapUsed - m.baseline.heapUsed) /
      Math.max(1, m.loaded.records - m.baseline.records);
    lines.push('');
    lines.push(
      `About ${fixed(perRecord)} bytes of heap per stored record (response body and headers included). ` +
        `After the sweep the heap is ${m.swept.heapUsed <= m.baseline.heapUsed * 1.1 ? 'back at' : 'still above'} its warm-up size. ` +
        (m.reloaded.rss <= m.loaded.rss * 1.05
          ? 'RSS stays near its peak because V8 and the allocator keep freed pages mapped for reuse: ' +
            'as many keys again do not make it climb (last row).'
          : `RSS after as many keys again: ${mb(m.reloaded.rss)} MB against ${mb(m.loaded.rss)} MB the first time.`),
    );
    lines.push('');
  }

  lines.push('## How it is measured');
  lines.push('');
  lines.push(
    '- Every scenario posts the same small JSON body to `POST /orders`, whose handler makes one ' +
      '`INSERT ... RETURNING` on PostgreSQL (its own pool of 4) and answers the row (with a `Date`). ' +
      `Execute: a new \`Idempotency-Key\` on every request. Replay: ${report.settings.replayKeys} keys, ` +
      'completed before the measurement, sent round robin. The bare handler gets a key header too, and ' +
      'no IdempotencyModule is loaded in its app.',
  );
  lines.push(
    '- Each app is its own child process started as `npm start` starts the sample (ts-node, ' +
      'CommonJS, Nest through require(esm)), on loopback; the peer runs Nest 10 from `bench/peer`.',
  );
  lines.push(
    `- Round trips are counted on the servers over ${report.settings.countRequests} more requests ` +
      'per scenario, after the timed rounds. Redis: `MONITOR`, keeping only commands from the ' +
      "app's own connection (found by its client name), so other users of the shared Redis do " +
      'not count and commands run inside a Lua script (shown as `lua`) are not round trips; ' +
      '`INFO commandstats` is server-wide and would count them. PostgreSQL: the statements are ' +
      "those the app's TypeORM DataSource sent (a logger counts them by first word; the claim is " +
      "a `WITH` statement), the handler's own INSERT left out. They are checked on the server, " +
      'where `pg_stat_statements` is not loaded (it needs `shared_preload_libraries` and a ' +
      "restart): the delta of `xact_commit + xact_rollback - sessions` of the benchmark's own " +
      'database in `pg_stat_database` counts the transactions that ended (every statement outside ' +
      "a transaction is one, and so is the start of a session), minus the handler's own INSERT " +
      'in plain mode; the apps close idle connections after a second, which makes PostgreSQL ' +
      'report the figures.',
  );
  lines.push(
    '- Transactional mode (`transaction: true`): the handler makes the same INSERT through ' +
      "`transactionalEntityManager()`, inside the record's transaction, on the TypeORM pool " +
      '(8 connections, where plain mode has 4 for the store and 4 for the handler). Its replay ' +
      'opens no transaction and is the plain replay, so only its execute path is measured.',
  );
  lines.push(
    '- "checked" says how those requests were answered: every execute request must have run ' +
      'the handler, every replay must carry `Idempotent-Replayed: true`.',
  );
  if (service.length > 0) {
    lines.push(
      "- Programmatic API: each library's worker process calls it in process, " +
        `${report.settings.connections} calls in flight, around the same work (it builds the ` +
        "order the handler would answer, with no database). nestjs-idempotency's `run()` on the " +
        "Redis store, the peer's `makeIdempotent` on its `CachePersistenceLayer` with " +
        "`@redis/client`; neither checks the payload, since the peer's Redis layer does not keep " +
        'the payload hash when it completes a record (with `payloadValidationJmesPath` every replay ' +
        'fails). The peer gets a stand-in Lambda context, so that its in-progress record has a ' +
        "30 s lease, as ours has by default. CPU is the worker's own (its Redis client included).",
    );
  }
  lines.push('');
  return lines.join('\n');
}
