import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import request from 'supertest';
import { type AppProcess, startOrdersApi } from '../../apps/orders-api/test/orders-api.process';
import { killAllChildren } from '../utils/processes';
import { storageKey } from '../../libs/idempotency/src/engine/idempotency.hashing';
import {
  createTemporaryDatabase,
  POSTGRES_URL,
  REDIS_URL,
  type TemporaryDatabase,
} from '../utils/databases';
import { describeWithServer } from '../utils/services';
import {
  CATEGORIES,
  type Category,
  CORPUS_BODY_LIMIT,
  type CorpusCase,
  type CorpusRequest,
  hostileCorpus,
  type Outcome,
  replayCorpus,
} from './hostile-corpus';
import { recordOutcome } from './outcomes';
import { exchange, type Exchange, type RawResponse } from './raw-http';

/**
 * Hostile input against the sample app as a real process (`npm start`'s command): a generated
 * corpus of more than 1,000 requests with broken keys, headers, bodies and framing, sent over raw
 * sockets. No answer may be a 5xx, the process must live through all of it, no request with an
 * invalid key may run the handler (every order in the database was answered 201 to a valid key),
 * and the app must serve normally afterwards. Runs on a SQLite file with the TypeORM store (no
 * server needed) and on PostgreSQL with the Redis store.
 */

const START_MS = 90_000;
const CORPUS_MS = 120_000;
/** Connections open at once. */
const CONCURRENCY = 24;
const PROBLEM = /^application\/problem\+json/;

const withPostgres = (await describeWithServer('PostgreSQL', POSTGRES_URL)) === describe;
const withRedis = (await describeWithServer('Redis', REDIS_URL)) === describe;

/** How the app under test keeps its data, and how to clean up after it. */
interface Setup {
  env: NodeJS.ProcessEnv;
  /** Removes what the run left behind; `keys` are the valid keys it sent. */
  cleanup(keys: ReadonlySet<string>): Promise<Record<string, number>>;
}

interface Target {
  id: string;
  name: string;
  setUp(): Promise<Setup>;
}

const TARGETS: Target[] = [
  {
    id: 'hostile-input-sqlite',
    name: 'SQLite file, TypeORM store',
    setUp: async () => {
      const dir = mkdtempSync(join(tmpdir(), 'hostile-input-'));
      return {
        env: { DATABASE_URL: join(dir, 'orders.sqlite'), IDEMPOTENCY_STORE: 'typeorm' },
        cleanup: async () => {
          rmSync(dir, { recursive: true, force: true });
          return {};
        },
      };
    },
  },
  ...(withPostgres && withRedis
    ? [
        {
          id: 'hostile-input-postgres-redis',
          name: 'PostgreSQL, Redis store',
          setUp: async (): Promise<Setup> => {
            const database: TemporaryDatabase = await createTemporaryDatabase(
              'postgres',
              'hostile',
            );
            return {
              env: { DATABASE_URL: database.url, IDEMPOTENCY_STORE: 'redis', REDIS_URL },
              cleanup: async (keys) => {
                await database.drop();
                // The app's records under its default prefix: the storage key of each valid key
                // sent (scope: POST /orders, anonymous), computed as the interceptor does.
                const redis = new Redis(REDIS_URL);
                try {
                  const names = [...keys].map(
                    (key) =>
                      `idempotency:{${storageKey(['nestjs-idempotency:v1', 'endpoint', 'POST', '/orders', 'anonymous', key])}}`,
                  );
                  let removed = 0;
                  for (let i = 0; i < names.length; i += 500) {
                    removed += await redis.del(...names.slice(i, i + 500));
                  }
                  return { 'Redis records removed afterwards': removed };
                } finally {
                  await redis.quit();
                }
              },
            };
          },
        },
      ]
    : []),
];

/** What one answer was. */
function classify(response: RawResponse): Outcome {
  if (response.status >= 500) {
    return '5xx';
  }
  const type = response.headers['content-type'] ?? '';
  if (PROBLEM.test(type)) {
    const code = (JSON.parse(response.body.toString('utf8')) as { code?: string }).code;
    return (code ?? `other ${response.status}`) as Outcome;
  }
  if (response.status === 201) {
    return response.headers['idempotent-replayed'] === 'true' ? 'replayed' : 'created';
  }
  // Node's own refusals carry no body type (400, 413, 417, 431).
  if (response.status >= 400 && response.status < 500 && type === '') {
    return 'node-4xx';
  }
  return `other ${response.status}`;
}

/** Every answer of a run, and what was wrong with any of them. */
interface Tally {
  requests: number;
  connections: number;
  byCategory: Map<Category, number>;
  statuses: Map<string, number>;
  outcomes: Map<string, number>;
  fiveHundreds: number;
  nodeRefusals: number;
  closedWithoutAnswer: number;
  socketErrors: Map<string, number>;
  /** Order id created by each valid key. */
  createdByKey: Map<string, string>;
  createdAnswers: number;
  replayedAnswers: number;
  /** Valid keys the run sent, for cleanup. */
  validKeys: Set<string>;
  /** Valid requests whose answer never came (their connection was destroyed), to send again. */
  lostAnswers: CorpusRequest[];
  /** Keys whose first answer seen was a replay: the answer of the execution was lost. */
  recoveredByReplay: number;
  violations: string[];
}

function newTally(): Tally {
  return {
    requests: 0,
    connections: 0,
    byCategory: new Map(),
    statuses: new Map(),
    outcomes: new Map(),
    fiveHundreds: 0,
    nodeRefusals: 0,
    closedWithoutAnswer: 0,
    socketErrors: new Map(),
    createdByKey: new Map(),
    createdAnswers: 0,
    replayedAnswers: 0,
    validKeys: new Set(),
    lostAnswers: [],
    recoveredByReplay: 0,
    violations: [],
  };
}

const bump = <K>(map: Map<K, number>, key: K, by = 1) => map.set(key, (map.get(key) ?? 0) + by);

/** Checks the answers of one connection against what its requests allow, and counts them. */
function tallyCase(tally: Tally, testCase: CorpusCase, seen: Exchange): void {
  const where = `${testCase.category} / ${testCase.label}`;
  tally.connections++;
  if (seen.error) {
    bump(tally.socketErrors, seen.error);
    if (seen.error === 'timeout') {
      tally.violations.push(`${where}: no answer and no close within the timeout`);
    }
  }
  testCase.requests.forEach((sent, index) => {
    tally.requests++;
    bump(tally.byCategory, testCase.category);
    if (sent.key !== undefined) {
      tally.validKeys.add(sent.key);
    }
    const response = seen.responses[index];
    let outcome: Outcome | 'unanswered';
    if (response) {
      outcome = classify(response);
      bump(tally.statuses, String(response.status));
    } else {
      outcome = index === 0 ? 'closed' : 'unanswered';
      bump(tally.statuses, 'no answer');
      tally.closedWithoutAnswer++;
    }
    bump(tally.outcomes, outcome);
    if (outcome === '5xx') {
      tally.fiveHundreds++;
    }
    if (outcome === 'node-4xx') {
      tally.nodeRefusals++;
    }
    const acceptable =
      (sent.allowed as readonly string[]).includes(outcome) ||
      (outcome === 'unanswered' && testCase.mayCloseEarly === true);
    if (
      sent.body !== undefined &&
      sent.keyHeader !== undefined &&
      (outcome === 'node-4xx' || outcome === 'unanswered' || outcome === 'closed')
    ) {
      tally.lostAnswers.push(sent);
    }
    if (!acceptable) {
      const status = response
        ? `${response.status} ${response.body.toString('utf8').slice(0, 200)}`
        : (seen.error ?? 'closed');
      tally.violations.push(
        `${where} (request ${index + 1}): got ${outcome} (${status}); allowed ${sent.allowed.join(', ')}`,
      );
      return;
    }
    if (outcome === 'created' || outcome === 'replayed') {
      if (sent.key === undefined) {
        tally.violations.push(`${where}: 201 for a request with an invalid key`);
        return;
      }
      const body = JSON.parse(response!.body.toString('utf8')) as { id?: string };
      if (typeof body.id !== 'string' || response!.headers.location !== `/orders/${body.id}`) {
        tally.violations.push(`${where}: a 201 without an order and its Location`);
        return;
      }
      const first = tally.createdByKey.get(sent.key);
      if (outcome === 'created') {
        tally.createdAnswers++;
        if (first !== undefined) {
          tally.violations.push(`${where}: key ${JSON.stringify(sent.key)} created a second order`);
        }
        tally.createdByKey.set(sent.key, body.id);
      } else {
        tally.replayedAnswers++;
        if (first === undefined) {
          // The execution's own answer was lost; this replay is the first to name its order.
          tally.recoveredByReplay++;
          tally.createdByKey.set(sent.key, body.id);
        } else if (first !== body.id) {
          tally.violations.push(`${where}: a replay names order ${body.id}, not ${first}`);
        }
      }
    }
  });
  // Answers beyond the requests written (a request split by a bare line break): never a 201.
  for (const extra of seen.responses.slice(testCase.requests.length)) {
    const outcome = classify(extra);
    bump(tally.statuses, String(extra.status));
    if (outcome === '5xx' || outcome === 'created' || outcome === 'replayed') {
      tally.violations.push(`${where}: an extra answer ${extra.status}`);
    }
  }
}

/** Sends every case, `CONCURRENCY` connections at a time. */
async function send(port: number, cases: readonly CorpusCase[]): Promise<Exchange[]> {
  const results: Exchange[] = new Array(cases.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < cases.length) {
        const index = next++;
        const testCase = cases[index];
        results[index] = await exchange(
          port,
          Buffer.concat(testCase.requests.map((r) => r.bytes)),
          { halfClose: testCase.halfClose },
        );
      }
    }),
  );
  return results;
}

const listing = (map: Map<string, number>) =>
  [...map.entries()]
    .sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))
    .map(([name, count]) => `${name}: ${count}`)
    .join(', ');

afterAll(() => killAllChildren());

describe.each(TARGETS)('Hostile input against the sample process ($name)', (target) => {
  let app: AppProcess;
  let setup: Setup;
  let tally: Tally;

  beforeAll(async () => {
    setup = await target.setUp();
    app = await startOrdersApi({
      env: { ...setup.env, BODY_LIMIT: CORPUS_BODY_LIMIT, HOST: '127.0.0.1' },
    });
  }, START_MS);

  afterAll(async () => {
    await app?.stop();
    await setup?.cleanup(tally?.validKeys ?? new Set());
  });

  it(
    'answers a corpus of 1,000+ hostile requests with no 5xx and no handler run for an invalid key, and keeps serving',
    async () => {
      const runId = randomBytes(5).toString('hex');
      const started = Date.now();
      const first = hostileCorpus(runId);
      tally = newTally();

      const firstSeen = await send(app.port, first);
      first.forEach((testCase, i) => tallyCase(tally, testCase, firstSeen[i]));
      expect(app.running).toBe(true);
      const replays = replayCorpus(first, runId, tally.lostAnswers);
      // Replays only after every first request has answered: no 409 from a race of our own.
      const replaysSeen = await send(app.port, replays);
      replays.forEach((testCase, i) => tallyCase(tally, testCase, replaysSeen[i]));
      const elapsedMs = Date.now() - started;

      // The process lived through all of it: never restarted, never crashed.
      expect(app.running).toBe(true);
      expect(tally.requests).toBeGreaterThanOrEqual(1_000);
      expect(new Set(tally.byCategory.keys())).toEqual(new Set(CATEGORIES));
      expect(tally.violations).toEqual([]);
      expect(tally.fiveHundreds).toBe(0);

      // Exactly one order per valid key that answered 201, and no other order at all: no handler
      // ran for a request with an invalid key, nor for one whose answer was lost.
      const orders = await request(app.url).get('/orders').expect(200);
      const orderIds = (orders.body as { id: string }[]).map((order) => order.id).sort();
      expect(orderIds).toEqual([...tally.createdByKey.values()].sort());
      expect(tally.createdAnswers + tally.recoveredByReplay).toBe(tally.createdByKey.size);
      expect(tally.replayedAnswers).toBeGreaterThan(50);

      // Serving as before: health, a new order, and its replay.
      const health = await request(app.url).get('/health').expect(200);
      expect(health.body.status).toBe('ok');
      const key = `after-${runId}`;
      const body = {
        customerId: `after-${runId}`,
        items: [{ sku: 'S', quantity: 1, unitPrice: 1 }],
      };
      const created = await request(app.url)
        .post('/orders')
        .set('Idempotency-Key', key)
        .send(body)
        .expect(201);
      const replayed = await request(app.url)
        .post('/orders')
        .set('Idempotency-Key', key)
        .send(body)
        .expect(201);
      expect(replayed.headers['idempotent-replayed']).toBe('true');
      expect(replayed.body).toEqual(created.body);
      tally.validKeys.add(key);
      // No 5xx means nothing logged as an error either (the filter logs every 5xx).
      expect(`${app.stdout}${app.stderr}`).not.toMatch(/\bERROR\b/);
      expect(app.running).toBe(true);

      const removed = await setup.cleanup(tally.validKeys);
      setup.cleanup = async () => ({});
      recordOutcome(target.id, {
        fault: `Hostile input (${target.name})`,
        trigger: `A generated corpus (seed 0x5eed) of ${tally.requests} requests on ${tally.connections} raw TCP connections, ${CONCURRENCY} at a time, against a real process of the sample app (BODY_LIMIT ${CORPUS_BODY_LIMIT}): broken keys, duplicated headers, malformed bodies, framing and versions, pipelining, valid requests and replays mixed in.`,
        measured: {
          requests: tally.requests,
          connections: tally.connections,
          'requests per category': listing(tally.byCategory),
          '5xx answers': tally.fiveHundreds,
          'process exits': 0,
          'statuses seen': listing(tally.statuses),
          'outcomes seen': listing(tally.outcomes),
          "Node's parser refusals (bare 4xx)": tally.nodeRefusals,
          'closed without an answer': tally.closedWithoutAnswer,
          'socket errors': listing(tally.socketErrors) || 'none',
          'handler executions (orders created)': orderIds.length,
          'valid keys answered 201': tally.createdByKey.size,
          'replays answered': tally.replayedAnswers,
          'answers lost with a destroyed connection, sent again': tally.lostAnswers.length,
          'orders first named by a replay (their answer was lost)': tally.recoveredByReplay,
          'orders for invalid keys': 0,
          'corpus time ms': elapsedMs,
          ...removed,
        },
        outcome:
          'No 5xx and no crash; every order in the database was answered 201 to a request with a valid key (one order per key, every replay naming it); every invalid key got 400 IDEMPOTENCY_KEY_INVALID/MISSING, every bad body a 400/413/415 problem, unparseable bytes Node’s own 4xx; health, a new order and its replay work afterwards.',
        file: 'test/faults/hostile-input.e2e-spec.ts',
      });
    },
    CORPUS_MS,
  );
});
