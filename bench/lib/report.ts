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
  const bareRps = (platform: Platform) => {
    const bare = find(platform, 'none', 'bare');
    return bare ? summarize(bare).rps : NaN;
  };
  const ratio = (platform: Platform, kind: ServerKind, path: Measured['path'], base?: number) => {
    const measured = find(platform, kind, path);
    return measured ? summarize(measured).rps / (base ?? bareRps(platform)) : NaN;
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
    '| platform | scenario | req/s | p50 ms | p99 ms | vs bare | app CPU µs / request | store round trips / request | floor | checked |',
  );
  lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |');
  for (const m of report.scenarios) {
    const s = summarize(m);
    const name = [STORE_LABEL[m.kind], PATH_LABEL[m.path]].filter(Boolean).join(', ');
    const failed = s.failed > 0 ? ` (${s.failed} failed)` : '';
    lines.push(
      `| ${m.platform} | ${name}${failed} | ${fixed(s.rps)} | ${s.p50} | ${s.p99} | ` +
        `${fixed(s.rps / bareRps(m.platform), 2)} | ${fixed(s.cpuUs)} | ${m.roundTrips?.detail ?? 'not counted'} | ` +
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
        `| ${platform} | ${PATH_LABEL[path]} | ${fixed(a.rps)} | ${fixed(b.rps)} | ${fixed(a.rps / b.rps, 2)}x | ` +
          `${ours.roundTrips?.detail ?? '-'} | ${peer.roundTrips?.detail ?? '-'} |`,
      ];
    }),
  );
  if (peerRows.length > 0) {
    lines.push('## Against the peer, same endpoint, same Redis');
    lines.push('');
    lines.push(
      '| platform | path | nestjs-idempotency req/s | @node-idempotency/nestjs req/s | ratio | our round trips | peer round trips |',
    );
    lines.push('| --- | --- | ---: | ---: | ---: | --- | --- |');
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
      `| ${platform} | ${fixed(a.rps)} | ${fixed(b.rps)} | ${fixed(b.rps / a.rps, 2)} | ` +
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
  target(
    'Redis execute >= 0.80 x bare',
    (p) => ratio(p, 'redis', 'execute'),
    (v) => v >= 0.8,
  );
  target(
    'Redis replay >= 1.00 x bare',
    (p) => ratio(p, 'redis', 'replay'),
    (v) => v >= 1,
  );
  const vsPeer = (path: Measured['path']) => (p: Platform) => {
    const peer = find(p, 'peer', path);
    return peer ? ratio(p, 'redis', path, summarize(peer).rps) : NaN;
  };
  target('Redis execute >= 1.5 x peer', vsPeer('execute'), (v) => v >= 1.5);
  target('Redis replay >= 1.5 x peer', vsPeer('replay'), (v) => v >= 1.5);
  lines.push('');

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
  lines.push('');
  return lines.join('\n');
}
