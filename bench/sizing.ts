/**
 * `npm run bench:sizing`: how many bytes one completed record takes in each store, and what the
 * stores cost per operation, measured through the stores' public API on the servers at hand.
 *
 * For each stored response (the sample's `POST /orders` 201, and bodies of about 2 KB and 16 KB)
 * it claims and completes SIZING_RECORDS records (20,000 by default) in:
 * - Redis: `MEMORY USAGE ... SAMPLES 0` over a sample of the keys and the `INFO memory` delta,
 *   under a key prefix unique to the run, deleted at the end; the server's CPU per request
 *   (`INFO cpu`), and `redis-benchmark` on the claim script (new keys, and a replay).
 * - PostgreSQL: a database of its own, dropped at the end; heap, TOAST and index sizes after
 *   VACUUM ANALYZE and after VACUUM FULL, `pg_column_size` of the rows; requests per second on
 *   one connection and on eight; the time `purgeExpired()` takes to delete expired rows.
 * - Redis Cluster: a one-node Cluster and a standalone Redis of its own (`redis-server` started
 *   and stopped by the script, on a random port), for the per-key cost of cluster mode; and the
 *   slots of 1,000,000 record keys (CRC16 of the hash tag), for the balance of the slots.
 * - MariaDB/MySQL: the same, from information_schema after ANALYZE TABLE.
 * - The memory store: the heap delta after a full GC.
 * It prints a markdown report and writes it to bench/results/sizing.md.
 *
 * REDIS_URL, POSTGRES_URL (or DATABASE_URL), MYSQL_URL point at the servers. SIZING_RECORDS sets
 * the number of records per body; SIZING_SKIP=<regex> skips sections (redis, postgres, mariadb,
 * memory, redis-benchmark,
 * redis-cluster, slots).
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Cluster, Redis } from 'ioredis';
import { Client } from 'pg';
import { DataSource } from 'typeorm';
import { requestFingerprint, storageKeyOf } from 'nestjs-idempotency';
import {
  type IdempotencyStore,
  MemoryIdempotencyStore,
  type StoredResponse,
} from 'nestjs-idempotency/store';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
// The library's own body encoding (not exported: the interceptor applies it), so the stored
// bodies are byte for byte what the sample stores.
import { encodeBody } from '../libs/idempotency/src/engine/body-codec';
import { databaseUrl } from './lib/database';
import { cpuDeltaMs, processCpuMs } from './lib/proc';

const RECORDS = Number(process.env.SIZING_RECORDS ?? 20_000);
const SKIP = process.env.SIZING_SKIP ? new RegExp(process.env.SIZING_SKIP) : undefined;
const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const PG_URL =
  process.env.POSTGRES_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const MYSQL_URL = process.env.MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/test';
const RUN_ID = randomBytes(4).toString('hex');
/**
 * 14 characters, close to the default `idempotency:` (12): the key then takes the same jemalloc
 * size class in Redis as a default key would (both 96 B for the sds).
 */
const REDIS_PREFIX = `idsz:${RUN_ID}:`;
const DB_NAME = `idempotency_sizing_${RUN_ID}`;
const TABLE = 'idempotency_records';
const TTL_MS = 24 * 3_600_000;
const LEASE_MS = 30_000;
/** Records sampled with `MEMORY USAGE`. */
const SAMPLED_KEYS = 500;
const ROOT = join(__dirname, '..');

const T0 = Date.now();
function log(message: string): void {
  process.stderr.write(`[${((Date.now() - T0) / 1000).toFixed(0).padStart(4)} s] ${message}\n`);
}

const skipped = (section: string): boolean => SKIP?.test(section) ?? false;

/**
 * What to undo if the run is interrupted (Ctrl-C): the finally blocks of the stages do it on any
 * other exit. Each stage adds its own and removes it once done.
 */
const cleanups = new Set<() => Promise<unknown>>();
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    log(`${signal}: cleaning up`);
    void Promise.allSettled([...cleanups].map((cleanup) => cleanup())).then(() =>
      process.exit(130),
    );
  });
}

// ---------------------------------------------------------------------------------------------
// The stored responses
// ---------------------------------------------------------------------------------------------

interface BodyKind {
  name: string;
  /** Order lines: 2 is the sample's `POST /orders`; more make the larger bodies. */
  items: number;
}

/** What `POST /orders` answers (`OrderResponse`), with `items` lines. */
function orderBody(items: number): Record<string, unknown> {
  const at = new Date(Date.UTC(2026, 11, 3, 15, 0, 0) + randomInt(86_400_000));
  const lines = Array.from({ length: items }, () => ({
    sku: `SKU-${Math.floor(Math.random() * 0x1000000)
      .toString(16)
      .toUpperCase()
      .padStart(6, '0')}`,
    quantity: 1 + Math.floor(Math.random() * 5),
    unitPrice: (100 + Math.floor(Math.random() * 99_900)) / 100,
  }));
  const total = lines.reduce((sum, line) => sum + line.quantity * line.unitPrice, 0);
  return {
    id: randomUUID(),
    customerId: `customer-${randomBytes(5).toString('hex')}`,
    items: lines,
    total: Math.round(total * 100) / 100,
    status: 'pending',
    createdAt: at,
    updatedAt: at,
  };
}

/** The stored response of one `POST /orders` 201, as the HTTP adapter keeps it. */
function storedResponse(items: number): StoredResponse {
  const body = orderBody(items);
  return {
    status: 201,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      location: `/orders/${String(body.id)}`,
      etag: '"1"',
      'last-modified': (body.updatedAt as Date).toUTCString(),
    },
    body: encodeBody(body),
  };
}

/** Order lines that make an encoded body of at least `bytes`. */
function itemsFor(bytes: number): number {
  let items = 2;
  while (storedResponse(items).body.length < bytes) {
    items++;
  }
  return items;
}

const BODIES: BodyKind[] = [
  { name: 'POST /orders 201 (2 lines)', items: 2 },
  { name: '~2 KB body', items: itemsFor(2_048) },
  { name: '~16 KB body', items: itemsFor(16_384) },
];

interface Shape {
  body: number;
  headers: number;
  /** `JSON.stringify(response)`: what Redis stores in the record's `r` field. */
  stored: number;
}

const shapes = new Map<BodyKind, Shape>();
function shapeOf(kind: BodyKind): Shape {
  const known = shapes.get(kind);
  if (known) {
    return known;
  }
  const samples = Array.from({ length: 200 }, () => storedResponse(kind.items));
  const mean = (f: (r: StoredResponse) => number) =>
    samples.reduce((sum, r) => sum + f(r), 0) / samples.length;
  const shape = {
    body: mean((r) => Buffer.byteLength(r.body)),
    headers: mean((r) => Buffer.byteLength(JSON.stringify(r.headers))),
    stored: mean((r) => Buffer.byteLength(JSON.stringify(r))),
  };
  shapes.set(kind, shape);
  return shape;
}

// ---------------------------------------------------------------------------------------------
// Filling a store
// ---------------------------------------------------------------------------------------------

interface Filled {
  keys: string[];
  ms: number;
}

/** Runs `work(i)` for i < n, `concurrency` at a time; none is started after `deadline`. */
async function inParallel(
  n: number,
  concurrency: number,
  work: (i: number) => Promise<void>,
  deadline = Infinity,
): Promise<number> {
  let next = 0;
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n && performance.now() < deadline) {
        await work(next++);
        done++;
      }
    }),
  );
  return done;
}

/**
 * Claims and completes `n` new keys, each with its own response and fingerprint, as `POST
 * /orders` would: one claim, one completion. Answers the storage keys.
 */
async function fill(
  store: IdempotencyStore,
  tag: string,
  kind: BodyKind,
  n: number,
  concurrency: number,
  ttlMs = TTL_MS,
): Promise<Filled> {
  const keys: string[] = new Array<string>(n);
  const started = performance.now();
  await inParallel(n, concurrency, async (i) => {
    const key = storageKeyOf(['sizing', RUN_ID, tag, 'POST', '/orders'], `client-key-${i}`);
    const ownerToken = randomUUID();
    const fingerprint = requestFingerprint({
      method: 'POST',
      route: '/orders',
      body: { customerId: `customer-${i}`, items: [{ sku: 'SKU-1', quantity: 1 }] },
      query: {},
    });
    const claim = await store.claim({ key, fingerprint, ownerToken, leaseMs: LEASE_MS });
    if (claim.outcome !== 'acquired') {
      throw new Error(`claim of a new key answered ${claim.outcome}`);
    }
    const response = storedResponse(kind.items);
    if (!(await store.complete({ key, ownerToken, response, ttlMs }))) {
      throw new Error('the completion was refused');
    }
    keys[i] = key;
  });
  return { keys, ms: performance.now() - started };
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

const out: string[] = [];
function section(title: string, ...lines: string[]): void {
  out.push('', `## ${title}`, '', ...lines);
}
function table(head: string[], rows: (string | number)[][], right: boolean[] = []): string[] {
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map((_h, i) => (right[i] ? '---:' : '---')).join(' | ')} |`,
    ...rows.map((row) => `| ${row.join(' | ')} |`),
  ];
}
const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const dec = (n: number, digits = 1): string =>
  n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

function infoField(info: string, field: string): number {
  const match = new RegExp(`^${field}:(\\S+)`, 'm').exec(info);
  return match ? Number(match[1]) : NaN;
}

async function redisCpuSeconds(client: Redis): Promise<number> {
  const info = await client.info('cpu');
  return infoField(info, 'used_cpu_user') + infoField(info, 'used_cpu_sys');
}

async function redisEvalsha(client: Redis): Promise<{ calls: number; usec: number }> {
  const info = await client.info('commandstats');
  const match = /^cmdstat_evalsha:calls=(\d+),usec=(\d+)/m.exec(info);
  return { calls: Number(match?.[1] ?? 0), usec: Number(match?.[2] ?? 0) };
}

async function usedMemory(client: Redis): Promise<number> {
  return infoField(await client.info('memory'), 'used_memory');
}

/** Deletes every key under the run's prefix; answers how many there were. */
async function deleteRunKeys(client: Redis): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, found] = await client.scan(cursor, 'MATCH', `${REDIS_PREFIX}*`, 'COUNT', 1_000);
    cursor = next;
    if (found.length > 0) {
      deleted += await client.unlink(...found);
    }
  } while (cursor !== '0');
  return deleted;
}

interface RedisFigures {
  kind: BodyKind;
  shape: Shape;
  encoding: string;
  memoryUsage: number;
  usedMemoryDelta: number;
  fillMs: number;
  serverCpuUsPerRequest: number;
  evalshaUsPerCall: number;
  ttlS: number;
}

async function measureRedis(): Promise<void> {
  const admin = new Redis(REDIS_URL, { lazyConnect: true });
  await admin.connect();
  const client = new Redis(REDIS_URL, { lazyConnect: true, connectionName: `sizing-${RUN_ID}` });
  await client.connect();
  const store = new RedisIdempotencyStore({ client, keyPrefix: REDIS_PREFIX });
  const cleanup = () => deleteRunKeys(admin);
  cleanups.add(cleanup);
  const redisKey = (key: string) => `${REDIS_PREFIX}{${key}}`;
  const figures: RedisFigures[] = [];
  const server = await admin.info('server');
  const config = (await admin.config('GET', 'hash-max-listpack-value')) as string[];
  try {
    for (const kind of BODIES) {
      log(`Redis: ${RECORDS} records, ${kind.name}`);
      await deleteRunKeys(admin);
      const memBefore = await usedMemory(admin);
      const cpuBefore = await redisCpuSeconds(admin);
      const evalBefore = await redisEvalsha(admin);
      const filled = await fill(store, `redis-${kind.items}`, kind, RECORDS, 32);
      const cpuAfter = await redisCpuSeconds(admin);
      const evalAfter = await redisEvalsha(admin);
      const memAfter = await usedMemory(admin);
      const sample = filled.keys.slice(0, SAMPLED_KEYS).map(redisKey);
      const usages = await Promise.all(
        sample.map(
          (key) => admin.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') as Promise<number | null>,
        ),
      );
      if (usages.some((usage) => usage === null)) {
        throw new Error('a record is missing from Redis');
      }
      figures.push({
        kind,
        shape: shapeOf(kind),
        encoding: String(await admin.object('ENCODING', sample[0])),
        memoryUsage: usages.reduce<number>((sum, usage) => sum + Number(usage), 0) / usages.length,
        usedMemoryDelta: (memAfter - memBefore) / RECORDS,
        fillMs: filled.ms,
        serverCpuUsPerRequest: ((cpuAfter - cpuBefore) * 1e6) / RECORDS,
        evalshaUsPerCall:
          (evalAfter.usec - evalBefore.usec) / Math.max(1, evalAfter.calls - evalBefore.calls),
        ttlS: await admin.ttl(sample[0]),
      });
      await deleteRunKeys(admin);
    }

    // A record in flight: claimed, not completed (what a running handler holds).
    log('Redis: 1,000 records in flight');
    const owners: { key: string; ownerToken: string }[] = [];
    for (let i = 0; i < 1_000; i++) {
      const key = storageKeyOf(['sizing', RUN_ID, 'in-flight'], String(i));
      const ownerToken = randomUUID();
      await store.claim({ key, fingerprint: 'f'.repeat(64), ownerToken, leaseMs: LEASE_MS });
      owners.push({ key, ownerToken });
    }
    const flightUsages = await Promise.all(
      owners
        .slice(0, 200)
        .map(
          ({ key }) =>
            admin.call('MEMORY', 'USAGE', redisKey(key), 'SAMPLES', '0') as Promise<number>,
        ),
    );
    const flightEncoding = String(await admin.object('ENCODING', redisKey(owners[0].key)));
    for (const owner of owners) {
      await store.release(owner);
    }
    const inFlight =
      flightUsages.reduce<number>((sum, usage) => sum + Number(usage), 0) / flightUsages.length;

    section(
      'Redis: bytes per record',
      `Redis ${/redis_version:(\S+)/.exec(server)?.[1] ?? '?'}, standalone, \`hash-max-listpack-value ${config[1]}\`. ${int(RECORDS)} completed records per row (claim, then complete with a 24 h ttl), key \`${REDIS_PREFIX}{<64 hex>}\` (${REDIS_PREFIX.length + 66} B, the same jemalloc class as the default prefix's 78 B). A record is a hash \`{ s, fp, r }\` (state, fingerprint, response JSON).`,
      '',
      ...table(
        [
          'stored response',
          'body B',
          'headers B',
          '`r` field B',
          'encoding',
          '`MEMORY USAGE` B (mean of 500)',
          '`used_memory` delta B / record',
          'server CPU µs / request',
          'EVALSHA µs / call',
        ],
        figures.map((f) => [
          f.kind.name,
          int(f.shape.body),
          int(f.shape.headers),
          int(f.shape.stored),
          f.encoding,
          int(f.memoryUsage),
          int(f.usedMemoryDelta),
          dec(f.serverCpuUsPerRequest),
          dec(f.evalshaUsPerCall),
        ]),
        [false, true, true, true, false, true, true, true, true],
      ),
      '',
      `In flight (claimed, not completed; \`{ s, fp, o }\`): ${int(inFlight)} B by \`MEMORY USAGE\`, encoding ${flightEncoding}.`,
      '',
      `- \`MEMORY USAGE\` counts the value, the key and its main-dictionary entry; \`used_memory\` delta also counts the entry in the expires dictionary and the dictionaries' bucket arrays (which double in steps, so the delta per record depends on where the table stood). The server is shared: other clients' writes during the fill would show in the delta.`,
      `- Server CPU is \`used_cpu_user + used_cpu_sys\` of \`INFO cpu\` over the fill (two EVALSHA per request, the client at ${32} in flight), server-wide. EVALSHA µs / call is \`cmdstat_evalsha\` (execution only, no I/O), also server-wide.`,
      `- Expiry: the record's key has a TTL (${int(figures[0]?.ttlS ?? 0)} s read back on the first row): Redis removes it itself (lazily on access, and by its active expiry cycle, 10 times a second by default), so there is nothing to purge.`,
    );
    if (!skipped('redis-benchmark')) {
      await redisBenchmark(admin, client, store);
    }
  } finally {
    await store.close();
    client.disconnect();
    const left = await deleteRunKeys(admin);
    if (left > 0) {
      log(`Redis: deleted ${left} leftover keys`);
    }
    cleanups.delete(cleanup);
    admin.disconnect();
  }
}

const run = promisify(execFile);

/**
 * `redis-benchmark` on the store's own claim script (loaded by the store, by its SHA): new keys
 * (the claim of an execute, with a 2 s lease so the keys expire by themselves) and a completed key
 * (a replay, answering the stored response). Also reads the server's CPU over each run.
 */
async function redisBenchmark(admin: Redis, client: Redis, store: RedisIdempotencyStore) {
  const scripts = (client as unknown as { scriptsSet?: Record<string, { sha?: string }> })
    .scriptsSet;
  const sha = scripts?.idempotencyClaim?.sha;
  const [loaded] = sha ? ((await admin.script('EXISTS', sha)) as number[]) : [0];
  if (!sha || loaded !== 1) {
    log('redis-benchmark: the claim script is not loaded; skipped');
    return;
  }
  // One completed record to replay.
  const kind = BODIES[0];
  const [replayKey] = (await fill(store, 'redis-benchmark', kind, 1, 1)).keys;
  const url = new URL(REDIS_URL);
  const host = url.hostname || '127.0.0.1';
  const port = url.port || '6379';
  const fp = 'f'.repeat(64);
  const owner = randomUUID();
  const requests = 100_000;
  const cases = [
    {
      name: 'claim, new key (execute)',
      args: ['-r', '1000000000', 'EVALSHA', sha, '1', `${REDIS_PREFIX}rb:{__rand_int__}`],
      lease: '2000',
    },
    {
      name: `claim, completed key (replay, ${int(shapeOf(kind).stored)} B answered)`,
      args: ['EVALSHA', sha, '1', `${REDIS_PREFIX}{${replayKey}}`],
      lease: String(LEASE_MS),
    },
  ];
  const rows: string[][] = [];
  for (const c of cases) {
    log(`redis-benchmark: ${c.name}`);
    const cpuBefore = await redisCpuSeconds(admin);
    const started = performance.now();
    const { stdout } = await run(
      'redis-benchmark',
      ['-h', host, '-p', port, '-c', '32', '-n', String(requests), '-P', '1', '-q'].concat(c.args, [
        fp,
        owner,
        c.lease,
      ]),
      { maxBuffer: 16 * 1024 * 1024 },
    );
    const wall = (performance.now() - started) / 1000;
    const cpu = (await redisCpuSeconds(admin)) - cpuBefore;
    const rps = Number(/([\d.]+) requests per second/.exec(stdout)?.[1] ?? NaN);
    const p50 = /p50=([\d.]+)/.exec(stdout)?.[1] ?? '?';
    rows.push([
      c.name,
      int(rps),
      p50,
      dec(cpu / wall, 2),
      dec((cpu * 1e6) / requests),
      int(requests / cpu),
    ]);
  }
  await admin.unlink(`${REDIS_PREFIX}{${replayKey}}`);
  // The new keys expire in 2 s: wait, then make sure none is left.
  await new Promise((resolve) => setTimeout(resolve, 2_500));
  section(
    'Redis: the claim script under redis-benchmark',
    `\`redis-benchmark -c 32 -n ${int(requests)} -P 1 EVALSHA <claim sha> 1 <key> <fingerprint> <owner> <lease>\`, on the store's own script. redis-benchmark and Redis share the machine's ${cpus().length} cores, so the last column divides the requests by the CPU Redis itself used: what one Redis core would sustain on this script.`,
    '',
    ...table(
      [
        'operation',
        'req/s (wall)',
        'p50 ms',
        'Redis cores busy',
        'Redis CPU µs / op',
        'ops / s per Redis core',
      ],
      rows,
      [false, true, true, true, true, true],
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Redis Cluster: the per-key cost of cluster mode, and the balance of the slots
// ---------------------------------------------------------------------------------------------

/** CRC16/XMODEM, the hash of Redis Cluster's key slots. */
function crc16(text: string): number {
  let crc = 0;
  for (const byte of Buffer.from(text)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** The slot of a key: CRC16 of its hash tag (the first non-empty `{...}`), else of the key. */
function keySlot(key: string): number {
  const open = key.indexOf('{');
  const close = open < 0 ? -1 : key.indexOf('}', open + 1);
  return crc16(close > open + 1 ? key.slice(open + 1, close) : key) % 16_384;
}

interface PrivateRedis {
  port: number;
  client: Redis;
  stop(): Promise<void>;
}

/** A `redis-server` of the script's own, empty, on a random port, stopped by `stop()`. */
async function privateRedis(cluster: boolean): Promise<PrivateRedis> {
  for (let attempt = 1; ; attempt++) {
    const dir = mkdtempSync(join(tmpdir(), 'idsz-'));
    const port = 30_000 + randomInt(10_000);
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly'];
    args.push('no', '--dir', dir);
    if (cluster) {
      args.push('--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'));
      // Else CLUSTER SLOTS answers an empty host, which ioredis's Cluster never connects to.
      args.push('--cluster-announce-ip', '127.0.0.1');
    }
    const child: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const stop = async () => {
      cleanups.delete(stop);
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    };
    cleanups.add(stop);
    const client = new Redis({ port, lazyConnect: true, retryStrategy: () => null });
    // Refused connections while the server starts are retried below, not reported.
    client.on('error', () => undefined);
    try {
      for (let wait = 0; ; wait++) {
        try {
          await client.connect();
          break;
        } catch (error) {
          if (child.exitCode !== null || wait >= 50) {
            throw error;
          }
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      if (cluster) {
        await client.call('CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
        while (!/cluster_state:ok/.test(String(await client.call('CLUSTER', 'INFO')))) {
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      return {
        port,
        client,
        stop: async () => {
          client.disconnect();
          await stop();
        },
      };
    } catch (error) {
      client.disconnect();
      await stop();
      if (attempt >= 3) {
        throw error;
      }
    }
  }
}

async function measureCluster(): Promise<void> {
  const rows: string[][] = [];
  let slotCheck = '';
  for (const cluster of [false, true]) {
    const node = await privateRedis(cluster);
    const client: Redis | Cluster = cluster
      ? new Cluster([{ host: '127.0.0.1', port: node.port }])
      : new Redis({ port: node.port });
    const store = new RedisIdempotencyStore({ client, keyPrefix: 'idempotency:' });
    try {
      const kind = BODIES[0];
      log(
        `Redis ${cluster ? 'Cluster node' : 'standalone'} of the script's own: ${RECORDS} records`,
      );
      const before = await usedMemory(node.client);
      const filled = await fill(store, `private-${cluster}`, kind, RECORDS, 32);
      const after = await usedMemory(node.client);
      const sample = filled.keys.slice(0, SAMPLED_KEYS).map((key) => `idempotency:{${key}}`);
      const usages = await Promise.all(
        sample.map(
          (key) => node.client.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') as Promise<number>,
        ),
      );
      if (cluster) {
        const served = await Promise.all(
          sample
            .slice(0, 100)
            .map((key) => node.client.call('CLUSTER', 'KEYSLOT', key) as Promise<number>),
        );
        const agree = served.every((slot, i) => Number(slot) === keySlot(sample[i]));
        slotCheck = agree
          ? 'The slots computed here agree with `CLUSTER KEYSLOT` on 100 record keys.'
          : '**The slots computed here disagree with `CLUSTER KEYSLOT`.**';
      }
      rows.push([
        cluster ? 'Cluster (one node, all 16,384 slots)' : 'standalone',
        int(usages.reduce<number>((sum, usage) => sum + Number(usage), 0) / usages.length),
        int((after - before) / RECORDS),
      ]);
    } finally {
      await store.close();
      client.disconnect();
      await node.stop();
    }
  }

  log('slots of 1,000,000 record keys');
  const keys = 1_000_000;
  const perSlot = new Uint32Array(16_384);
  for (let i = 0; i < keys; i++) {
    perSlot[keySlot(`idempotency:{${storageKeyOf(['slots', RUN_ID], String(i))}}`)]++;
  }
  const mean = keys / 16_384;
  const sd = Math.sqrt(perSlot.reduce((sum, n) => sum + (n - mean) ** 2, 0) / 16_384);
  const shardRows = [3, 12, 36, 100].map((shards) => {
    const counts = Array.from({ length: shards }, (_v, shard) => {
      const first = Math.floor((shard * 16_384) / shards);
      const last = Math.floor(((shard + 1) * 16_384) / shards);
      return perSlot.slice(first, last).reduce((sum, n) => sum + n, 0);
    });
    const expected = keys / shards;
    return [
      String(shards),
      int(expected),
      int(Math.min(...counts)),
      int(Math.max(...counts)),
      `${dec(((Math.max(...counts) - expected) / expected) * 100, 2)} %`,
      `${dec((100 * Math.sqrt(expected)) / expected, 2)} %`,
    ];
  });
  section(
    'Redis Cluster: cost per key, and slot balance',
    `Two \`redis-server\` of the script's own (same binary, empty, no other client), one standalone and one a one-node Cluster holding every slot, each with ${int(RECORDS)} POST /orders records under the default prefix \`idempotency:\`, through the store (an ioredis \`Cluster\` client for the Cluster):`,
    '',
    ...table(['Redis', '`MEMORY USAGE` B', '`used_memory` delta B / record'], rows, [
      false,
      true,
      true,
    ]),
    '',
    `Every key is \`prefix + '{' + sha256 hex + '}'\`, so its slot is CRC16 of the 64 hex digits alone, whatever the prefix. Over ${int(keys)} record keys: ${dec(mean)} keys per slot on average, standard deviation ${dec(sd)} (a uniform hash gives √mean = ${dec(Math.sqrt(mean))}), fewest ${int(Math.min(...perSlot))}, most ${int(Math.max(...perSlot))}. ${slotCheck}`,
    '',
    'With the slots split into equal contiguous ranges, one range per shard:',
    '',
    ...table(
      [
        'shards',
        'keys expected per shard',
        'fewest',
        'most',
        'most vs expected',
        'one standard deviation of a uniform hash (1/√expected)',
      ],
      shardRows,
      [true, true, true, true, true, true],
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

async function walLsn(db: Client): Promise<string> {
  return (await db.query<{ lsn: string }>('SELECT pg_current_wal_lsn()::text AS lsn')).rows[0].lsn;
}

/** WAL bytes written since `lsn`, by the whole server. */
async function walSince(db: Client, lsn: string): Promise<number> {
  const { rows } = await db.query<{ bytes: string }>(
    'SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn) AS bytes',
    [lsn],
  );
  return Number(rows[0].bytes);
}

interface PgSizes {
  rows: number;
  heap: number;
  toast: number;
  pkey: number;
  expiresIndex: number;
  total: number;
  rowBytes: number;
  bodyColumn: number;
  bodyText: number;
}

async function pgSizes(admin: Client): Promise<PgSizes> {
  const {
    rows: [size],
  } = await admin.query<Record<string, string>>(`
    SELECT pg_relation_size(c.oid) AS heap,
      pg_table_size(c.oid) - pg_relation_size(c.oid) AS toast,
      pg_relation_size('${TABLE}_pkey') AS pkey,
      pg_relation_size('${TABLE}_expires_at') AS expires_index,
      pg_total_relation_size(c.oid) AS total
    FROM pg_class c WHERE c.oid = '${TABLE}'::regclass`);
  const {
    rows: [row],
  } = await admin.query<Record<string, string>>(`
    SELECT count(*) AS rows, avg(pg_column_size(t.*)) AS row_bytes,
      avg(pg_column_size(response_body)) AS body_column, avg(octet_length(response_body)) AS body_text
    FROM ${TABLE} t`);
  return {
    rows: Number(row.rows),
    heap: Number(size.heap),
    toast: Number(size.toast),
    pkey: Number(size.pkey),
    expiresIndex: Number(size.expires_index),
    total: Number(size.total),
    rowBytes: Number(row.row_bytes),
    bodyColumn: Number(row.body_column),
    bodyText: Number(row.body_text),
  };
}

interface Throughput {
  name: string;
  requests: number;
  seconds: number;
  statements: number;
  /** The server's CPU seconds over the run. */
  serverCpu?: number;
}

/** Requests per second of claim + complete (execute) or of a claim of a completed key (replay). */
async function throughput(
  url: string,
  type: 'postgres' | 'mariadb',
  connections: number,
  seconds: number,
  serverProcess: string,
): Promise<Throughput[]> {
  const dataSource = new DataSource({
    type,
    url,
    extra: type === 'postgres' ? { max: connections } : { connectionLimit: connections },
  } as ConstructorParameters<typeof DataSource>[0]);
  await dataSource.initialize();
  const store = new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
  const kind = BODIES[0];
  const concurrency = connections === 1 ? 1 : connections * 2;
  const results: Throughput[] = [];
  try {
    // Execute: as many new keys as fit in `seconds`.
    const tag = `tp-${connections}`;
    let cpuBefore = processCpuMs(serverProcess);
    let started = performance.now();
    const done = await inParallel(
      Number.MAX_SAFE_INTEGER,
      concurrency,
      async (i) => void (await fill(store, `${tag}-${i}`, kind, 1, 1)),
      started + seconds * 1000,
    );
    results.push({
      name: `execute (claim + complete), ${connections} connection${connections > 1 ? 's' : ''}, ${concurrency} in flight`,
      requests: done,
      seconds: (performance.now() - started) / 1000,
      statements: type === 'postgres' ? 2 : 3,
      serverCpu: cpuDeltaMs(cpuBefore, processCpuMs(serverProcess)) / 1000,
    });
    // Replay: claims of completed keys, round robin over 64.
    const replayKeys = (await fill(store, `${tag}-replay`, kind, 64, 8)).keys;
    cpuBefore = processCpuMs(serverProcess);
    started = performance.now();
    const replayed = await inParallel(
      Number.MAX_SAFE_INTEGER,
      concurrency,
      async (i) => {
        const claim = await store.claim({
          key: replayKeys[i % replayKeys.length],
          fingerprint: null,
          ownerToken: randomUUID(),
          leaseMs: LEASE_MS,
        });
        if (claim.outcome !== 'completed') {
          throw new Error(`replay answered ${claim.outcome}`);
        }
      },
      started + seconds * 1000,
    );
    results.push({
      name: `replay (claim of a completed key), ${connections} connection${connections > 1 ? 's' : ''}, ${concurrency} in flight`,
      requests: replayed,
      seconds: (performance.now() - started) / 1000,
      statements: type === 'postgres' ? 1 : 2,
      serverCpu: cpuDeltaMs(cpuBefore, processCpuMs(serverProcess)) / 1000,
    });
  } finally {
    store.onModuleDestroy();
    await dataSource.destroy();
  }
  return results;
}

interface PurgeFigure {
  batch: number;
  rows: number;
  ms: number;
}

/** Fills `n` records that expire at once, then times `purgeExpired()` with `batch`. */
async function timePurge(
  dataSource: DataSource,
  truncate: () => Promise<void>,
  batch: number,
  n: number,
): Promise<PurgeFigure> {
  await truncate();
  const store = new TypeOrmIdempotencyStore({
    dataSource,
    purgeIntervalMs: 0,
    purgeBatchSize: batch,
  });
  await fill(store, `purge-${batch}`, BODIES[0], n, 8, 1);
  await new Promise((resolve) => setTimeout(resolve, 50));
  const started = performance.now();
  const rows = await store.purgeExpired();
  const ms = performance.now() - started;
  store.onModuleDestroy();
  if (rows !== n) {
    throw new Error(`purgeExpired() deleted ${rows} of ${n} expired rows`);
  }
  return { batch, rows, ms };
}

function throughputRows(results: Throughput[]): string[][] {
  return results.map((r) => {
    const rps = r.requests / r.seconds;
    return [
      r.name,
      int(rps),
      `${r.statements}`,
      int(rps * r.statements),
      r.serverCpu === undefined || r.serverCpu <= 0
        ? '-'
        : `${dec((r.serverCpu * 1e6) / r.requests, 0)} (${int(r.requests / r.serverCpu)} req/s per core)`,
    ];
  });
}

async function measurePostgres(): Promise<void> {
  const admin = new Client({ connectionString: PG_URL });
  await admin.connect();
  const version = (
    await admin.query<{ v: string }>('SELECT current_setting($1) AS v', ['server_version'])
  ).rows[0].v;
  const settings = (
    await admin.query<{ name: string; setting: string }>(
      `SELECT name, current_setting(name) AS setting FROM pg_settings WHERE name IN ('autovacuum', 'fsync', 'synchronous_commit', 'shared_buffers')`,
    )
  ).rows
    .map((s) => `${s.name}=${s.setting}`)
    .join(', ');
  await admin.query(`CREATE DATABASE ${DB_NAME}`);
  const drop = () => admin.query(`DROP DATABASE IF EXISTS ${DB_NAME} WITH (FORCE)`);
  cleanups.add(drop);
  const url = databaseUrl(PG_URL, DB_NAME);
  const db = new Client({ connectionString: url });
  let dataSource: DataSource | undefined;
  try {
    await db.connect();
    dataSource = new DataSource({ type: 'postgres', url, extra: { max: 8 } });
    await dataSource.initialize();
    const runner = dataSource.createQueryRunner();
    await new CreateIdempotencyRecordsTable1763800000000().up(runner);
    await runner.release();
    const store = new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
    const rows: string[][] = [];
    const compact: string[][] = [];
    for (const kind of BODIES) {
      log(`PostgreSQL: ${RECORDS} records, ${kind.name}`);
      await db.query(`TRUNCATE ${TABLE}`);
      const walBefore = await walLsn(db);
      const filled = await fill(store, `pg-${kind.items}`, kind, RECORDS, 16);
      const wal = await walSince(db, walBefore);
      await db.query(`VACUUM ANALYZE ${TABLE}`);
      const s = await pgSizes(db);
      if (s.rows !== RECORDS) {
        throw new Error(`${s.rows} rows in the table, expected ${RECORDS}`);
      }
      const per = (bytes: number) => int(bytes / RECORDS);
      rows.push([
        kind.name,
        int(shapeOf(kind).body),
        int((RECORDS * 1000) / filled.ms),
        int(wal / RECORDS),
        int(s.rowBytes),
        `${int(s.bodyText)} / ${int(s.bodyColumn)}`,
        per(s.heap),
        per(s.toast),
        per(s.pkey),
        per(s.expiresIndex),
        per(s.total),
      ]);
      await db.query(`VACUUM FULL ANALYZE ${TABLE}`);
      const c = await pgSizes(db);
      compact.push([
        kind.name,
        per(c.heap),
        per(c.toast),
        per(c.pkey),
        per(c.expiresIndex),
        per(c.total),
      ]);
    }
    store.onModuleDestroy();

    log('PostgreSQL: purge');
    const purges: PurgeFigure[] = [];
    const vacuums: number[] = [];
    for (const batch of [1_000, 5_000]) {
      purges.push(
        await timePurge(
          dataSource,
          () => db.query(`TRUNCATE ${TABLE}`).then(() => undefined),
          batch,
          RECORDS,
        ),
      );
      // What autovacuum then has to do: the deleted rows are dead tuples until a VACUUM.
      const started = performance.now();
      await db.query(`VACUUM ${TABLE}`);
      vacuums.push(performance.now() - started);
    }
    await db.query(`TRUNCATE ${TABLE}`);

    log('PostgreSQL: throughput');
    const local = processCpuMs('postgres').size > 0;
    const tp = [
      ...(await throughput(url, 'postgres', 1, 5, 'postgres')),
      ...(await throughput(url, 'postgres', 8, 5, 'postgres')),
    ];
    if (!local) {
      tp.forEach((t) => (t.serverCpu = undefined));
    }

    section(
      'PostgreSQL: bytes per record',
      `PostgreSQL ${version} (${settings}), the table and indexes of \`CreateIdempotencyRecordsTable\`. ${int(RECORDS)} records per row, each claimed (INSERT) then completed (UPDATE, which is not HOT: it changes the indexed \`expires_at\`, so it writes a new heap tuple and new entries in both indexes). Sizes in bytes per record after \`VACUUM ANALYZE\`: the dead versions left by the completions are free space to reuse, not returned to the OS, so this is the footprint of a table in steady state. Fill req/s: the store on a pool of 8, 16 requests in flight. WAL B / request: \`pg_current_wal_lsn()\` over the fill, server-wide (full-page images after a checkpoint included), divided by the requests.`,
      '',
      ...table(
        [
          'stored response',
          'body B',
          'fill req/s',
          'WAL B / request',
          '`pg_column_size(row)`',
          'body text / stored',
          'heap',
          'TOAST (+fsm, vm)',
          'primary key',
          '`expires_at` index',
          '`pg_total_relation_size`',
        ],
        rows,
        [false, true, true, true, true, true, true, true, true, true, true],
      ),
      '',
      'After `VACUUM FULL` (rewritten, no free space; the lower bound, what a table of only completed records takes):',
      '',
      ...table(
        ['stored response', 'heap', 'TOAST', 'primary key', '`expires_at` index', 'total'],
        compact,
        [false, true, true, true, true, true],
      ),
      '',
      `- Bodies past about 2 KB of row are compressed (pglz) and, if still too large, moved to TOAST: "body text / stored" is \`octet_length\` against \`pg_column_size\` of \`response_body\`.`,
      '',
      '### PostgreSQL: purge',
      '',
      `\`purgeExpired()\` on ${int(RECORDS)} expired rows (POST /orders bodies), one \`DELETE ... WHERE storage_key IN (SELECT ... WHERE expires_at <= now LIMIT $batch FOR UPDATE SKIP LOCKED)\` per batch, on an otherwise idle table:`,
      '',
      ...table(
        ['`purgeBatchSize`', 'rows', 'ms', 'ms / batch', 'rows / s', 'then `VACUUM` ms'],
        purges.map((p, i) => [
          int(p.batch),
          int(p.rows),
          int(p.ms),
          dec(p.ms / (Math.floor(p.rows / p.batch) + 1)),
          int((p.rows * 1000) / p.ms),
          int(vacuums[i]),
        ]),
        [true, true, true, true, true, true],
      ),
      '',
      '### PostgreSQL: requests per connection',
      '',
      `The store on a pool of 1 and of 8 connections, 5 s each, POST /orders bodies, client and server on the same ${cpus().length} cores. Server CPU is the utime + stime of every local \`postgres\` process over the run (other databases' work included).`,
      '',
      ...table(
        ['run', 'req/s', 'statements / req', 'statements / s', 'server CPU µs / req'],
        throughputRows(tp),
        [false, true, true, true, false],
      ),
    );
  } finally {
    await dataSource?.destroy().catch(() => undefined);
    await db.end().catch(() => undefined);
    await drop();
    cleanups.delete(drop);
    await admin.end();
  }
}

// ---------------------------------------------------------------------------------------------
// MariaDB / MySQL
// ---------------------------------------------------------------------------------------------

async function measureMariaDb(): Promise<void> {
  const base = new URL(MYSQL_URL);
  base.pathname = '/';
  const adminSource = new DataSource({ type: 'mariadb', url: base.toString() });
  await adminSource.initialize();
  const version = String(
    ((await adminSource.query('SELECT VERSION() AS v')) as { v: string }[])[0].v,
  );
  await adminSource.query(`CREATE DATABASE ${DB_NAME}`);
  const drop = () => adminSource.query(`DROP DATABASE IF EXISTS ${DB_NAME}`);
  cleanups.add(drop);
  let dataSource: DataSource | undefined;
  try {
    const url = databaseUrl(MYSQL_URL, DB_NAME);
    dataSource = new DataSource({ type: 'mariadb', url, extra: { connectionLimit: 8 } });
    await dataSource.initialize();
    const runner = dataSource.createQueryRunner();
    await new CreateIdempotencyRecordsTable1763800000000().up(runner);
    await runner.release();
    const store = new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 });
    const sizes = async () => {
      await dataSource!.query(`ANALYZE TABLE ${TABLE}`);
      const [row] = (await dataSource!.query(
        `SELECT data_length, index_length, data_free, avg_row_length FROM information_schema.TABLES WHERE table_schema = ? AND table_name = ?`,
        [DB_NAME, TABLE],
      )) as Record<string, string>[];
      const lower = Object.fromEntries(Object.entries(row).map(([k, v]) => [k.toLowerCase(), v]));
      return {
        data: Number(lower.data_length),
        index: Number(lower.index_length),
        avgRow: Number(lower.avg_row_length),
      };
    };
    const rows: string[][] = [];
    for (const kind of BODIES) {
      log(`MariaDB: ${RECORDS} records, ${kind.name}`);
      await dataSource.query(`TRUNCATE TABLE ${TABLE}`);
      await fill(store, `my-${kind.items}`, kind, RECORDS, 16);
      const s = await sizes();
      await dataSource.query(`OPTIMIZE TABLE ${TABLE}`);
      const c = await sizes();
      const per = (bytes: number) => int(bytes / RECORDS);
      rows.push([
        kind.name,
        int(shapeOf(kind).body),
        per(s.data),
        per(s.index),
        per(s.data + s.index),
        per(c.data + c.index),
        int(c.avgRow),
      ]);
    }
    store.onModuleDestroy();
    log('MariaDB: purge');
    const purges: PurgeFigure[] = [];
    for (const batch of [1_000, 5_000]) {
      purges.push(
        await timePurge(
          dataSource,
          () => dataSource!.query(`TRUNCATE TABLE ${TABLE}`).then(() => undefined),
          batch,
          RECORDS,
        ),
      );
    }
    await dataSource.query(`TRUNCATE TABLE ${TABLE}`);
    log('MariaDB: throughput');
    const tp = [
      ...(await throughput(url, 'mariadb', 1, 5, 'mariadbd')),
      ...(await throughput(url, 'mariadb', 8, 5, 'mariadbd')),
    ];
    section(
      'MariaDB: bytes per record',
      `MariaDB ${version}, InnoDB (16 KB pages), the table of \`CreateIdempotencyRecordsTable\` (LONGTEXT body). ${int(RECORDS)} records per row; information_schema \`data_length\` (the clustered index, rows and off-page columns) and \`index_length\` (the \`expires_at\` index) after \`ANALYZE TABLE\`, in bytes per record, then after \`OPTIMIZE TABLE\` (rebuilt). These are page counts: estimates to a page.`,
      '',
      ...table(
        [
          'stored response',
          'body B',
          'data',
          'index',
          'total',
          'total after OPTIMIZE',
          '`avg_row_length`',
        ],
        rows,
        [false, true, true, true, true, true, true],
      ),
      '',
      '### MariaDB: purge',
      '',
      `\`purgeExpired()\` on ${int(RECORDS)} expired rows, one \`DELETE ... WHERE expires_at <= now LIMIT $batch\` per batch:`,
      '',
      ...table(
        ['`purgeBatchSize`', 'rows', 'ms', 'rows / s'],
        purges.map((p) => [int(p.batch), int(p.rows), int(p.ms), int((p.rows * 1000) / p.ms)]),
        [true, true, true, true],
      ),
      '',
      '### MariaDB: requests per connection',
      '',
      'As for PostgreSQL; the claim is an upsert and a read back (2 statements), the completion 1. Server CPU is that of the local `mariadbd` process.',
      '',
      ...table(
        ['run', 'req/s', 'statements / req', 'statements / s', 'server CPU µs / req'],
        throughputRows(tp),
        [false, true, true, true, false],
      ),
    );
  } finally {
    await dataSource?.destroy().catch(() => undefined);
    await drop();
    cleanups.delete(drop);
    await adminSource.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Memory store
// ---------------------------------------------------------------------------------------------

async function measureMemory(): Promise<void> {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const heap = () => {
    gc();
    gc();
    return process.memoryUsage().heapUsed;
  };
  const rows: string[][] = [];
  for (const kind of BODIES) {
    log(`memory store: ${RECORDS} records, ${kind.name}`);
    const store = new MemoryIdempotencyStore({ sweepIntervalMs: 0 });
    const before = heap();
    const filled = await fill(store, `memory-${kind.items}`, kind, RECORDS, 1);
    filled.keys.length = 0;
    const after = heap();
    if (store.size !== RECORDS) {
      throw new Error(`${store.size} records in the memory store`);
    }
    rows.push([kind.name, int(shapeOf(kind).stored), int((after - before) / RECORDS)]);
    store.close();
  }
  section(
    'Memory store: bytes per record',
    `V8 heap used after a full GC, before and after ${int(RECORDS)} completed records (Node ${process.version}); the record holds the 64-character key, the fingerprint and the response object (status, headers, body string). RSS grows more and does not come back down (see the Benchmarks section of the README).`,
    '',
    ...table(['stored response', 'response JSON B', 'heap B / record'], rows, [false, true, true]),
  );
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const startedAt = new Date();
  log(`run ${RUN_ID}: ${RECORDS} records per body`);
  const stages: [string, () => Promise<void>][] = [
    ['memory', measureMemory],
    ['redis', measureRedis],
    ['redis-cluster', measureCluster],
    ['postgres', measurePostgres],
    ['mariadb', measureMariaDb],
  ];
  const failures: string[] = [];
  for (const [name, stage] of stages) {
    if (skipped(name)) {
      continue;
    }
    try {
      await stage();
    } catch (error) {
      failures.push(`${name}: ${String(error)}`);
      log(`${name} failed: ${String(error)}`);
    }
  }
  const header = [
    '# Sizing figures',
    '',
    `\`npm run bench:sizing\` on ${startedAt.toISOString().slice(0, 10)}: Node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores shared by the script and the servers; ${int(RECORDS)} records per body; took ${int((Date.now() - T0) / 1000)} s. What the figures mean and how to size a deployment from them: [docs/scaling.md](../../docs/scaling.md).`,
    '',
    "Stored responses: the sample's `POST /orders` 201 (`OrderResponse` with 2 order lines, `Date` fields in the library's tagged encoding; headers `content-type`, `location`, `etag`, `last-modified`), and the same with more order lines for bodies of about 2 KB and 16 KB (random SKUs and prices, so about as compressible as real JSON).",
  ];
  if (failures.length > 0) {
    header.push('', '**Failed sections**:', '', ...failures.map((f) => `- ${f}`));
  }
  const report = [...header, ...out, ''].join('\n');
  process.stdout.write(`${report}\n`);
  writeFileSync(join(ROOT, 'bench/results/sizing.md'), report);
  log('wrote bench/results/sizing.md');
  if (failures.length > 0) {
    process.exitCode = 1;
  }
}

void main();
