import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { DataSource } from 'typeorm';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import {
  createTemporaryDatabase,
  MYSQL_URL,
  POSTGRES_URL,
  type TemporaryDatabase,
} from '../utils/databases';
import { eventually, killAllChildren } from '../utils/processes';
import { parsePrometheusText } from '../utils/prometheus-text';
import { describeWithServer } from '../utils/services';
import { type CommitCut, CommitProxy } from './commit-proxy';
import {
  inProgress,
  key,
  logLines,
  orderFor,
  PROBLEM,
  postOrder,
  START_MS,
  startApp,
  StatusTally,
  storageKeyOfRoute,
  untilNotInProgress,
} from './fault-suite';
import { recordOutcome } from './outcomes';

/**
 * Transactional mode when the database connection is lost DURING COMMIT, the window the other
 * scenarios leave out (they cut an idle-in-transaction session before COMMIT). The sample runs as
 * a real process whose connections to the database pass through a proxy of the test
 * (`commit-proxy.ts`), which loses one transaction's COMMIT on its way, or the server's answer to
 * it after the transaction committed. The client cannot tell these two apart; the library answers
 * both with the documented 503, and what a retry then meets must follow what the database did:
 * the order rolled back and the key released (the retry runs once), or the order committed with
 * its record (the retry replays it). On PostgreSQL a third case has the server itself inside
 * COMMIT (a deferred trigger of the test sleeping there) when the test terminates the session.
 */

const LOCK_TTL_MS = 2_000;
/** What the engine logs when a transactional run's transaction failed. */
const TRANSACTION_FAILED = /the transaction of a transactional run failed/;
/** What the engine logs when it finds its lease lost (and counts in idempotency_lease_lost_total). */
const LEASE_LOST = /Lease lost|lease lost/;

/** The app's idempotency_lease_lost_total, every label summed, from its GET /metrics. */
async function leaseLostTotal(app: AppProcess): Promise<number> {
  const res = await request(app.url).get('/metrics').expect(200);
  return parsePrometheusText(res.text)
    .filter((sample) => sample.name === 'idempotency_lease_lost_total')
    .reduce((total, sample) => total + sample.value, 0);
}

afterAll(() => killAllChildren());

type Kind = 'postgres' | 'mariadb';

const DATABASES: [string, Kind, Promise<jest.Describe>][] = [
  ['PostgreSQL', 'postgres', describeWithServer('PostgreSQL', POSTGRES_URL)],
  ['MariaDB', 'mariadb', describeWithServer('MariaDB', MYSQL_URL)],
];

/** What each cut leaves, and what the retry must then do. */
const CUTS: Record<
  CommitCut,
  { label: string; committed: boolean; record: string; retry: string; how: string }
> = {
  'commit-lost': {
    label: 'the COMMIT lost on its way (never applied)',
    committed: false,
    record: 'none',
    retry: 'runs once',
    how: 'closes both sides of the connection as the app sends its COMMIT, which never reaches the server',
  },
  'answer-lost': {
    label: 'the COMMIT applied, its answer lost',
    committed: true,
    record: 'completed',
    retry: 'replays the committed order',
    how: "forwards the COMMIT, holds the server's answer (it committed) and closes both sides of the connection before the app reads it",
  },
};

for (const [name, kind, gate] of DATABASES) {
  (await gate)(`Transactional mode on ${name}: the connection lost during COMMIT`, () => {
    let database: TemporaryDatabase;
    let proxy: CommitProxy;
    let app: AppProcess;
    let sql: DataSource;
    const param = (n: number) => (kind === 'postgres' ? `$${n}` : '?');

    /** The orders of one scenario's customer. */
    const orders = async (tag: string): Promise<{ id: string }[]> =>
      sql.query(`SELECT id FROM orders WHERE customer_id = ${param(1)}`, [tag]);

    /** The state of a record (`none` when there is no row), by the test's own connection. */
    const recordState = async (storageKey: string): Promise<string> => {
      const [row] = (await sql.query(
        `SELECT state FROM idempotency_records WHERE storage_key = ${param(1)}`,
        [storageKey],
      )) as { state: string }[];
      return row?.state ?? 'none';
    };

    beforeAll(async () => {
      database = await createTemporaryDatabase(kind, 'faults_commit');
      proxy = await CommitProxy.start(database.url);
      app = await startApp(
        {
          DATABASE_URL: proxy.urlThrough(database.url),
          IDEMPOTENCY_STORE: 'typeorm',
          IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
        },
        `tx-commit-${kind}`,
      );
      sql = await new DataSource({
        type: kind,
        url: database.url,
        ...(kind === 'postgres' ? { extra: { max: 2 } } : { extra: { connectionLimit: 2 } }),
      }).initialize();
    }, START_MS);

    afterAll(async () => {
      proxy?.disarm();
      await sql?.destroy();
      await app?.stop();
      await proxy?.close();
      await database?.drop();
    });

    it.each(['commit-lost', 'answer-lost'] as const)(
      'the connection lost at COMMIT (%s): 503, then 1 order, every 2xx with its id, the key never stuck',
      async (how) => {
        const expected = CUTS[how];
        const k = key(`commit-${how}`);
        const tag = `c-${how}-${randomUUID()}`;
        const storageKey = storageKeyOfRoute('/orders', k);
        const failuresBefore = logLines(app, TRANSACTION_FAILED).length;
        const leaseLostLogsBefore = logLines(app, LEASE_LOST).length;
        const leaseLostBefore = await leaseLostTotal(app);
        const cut = proxy.cutCommitOf(storageKey, how);
        let first: Awaited<ReturnType<typeof postOrder>>;
        try {
          first = await postOrder(app, k, orderFor(tag));
        } finally {
          proxy.disarm();
        }
        const report = await cut;
        const answeredAt = Date.now();
        const ordersAfterCut = (await orders(tag)).length;
        const recordAfterCut = await recordState(storageKey);
        const tries = await untilNotInProgress(() => postOrder(app, k, orderFor(tag)), 15_000);
        const settledAfterMs = Date.now() - answeredAt;
        const retry = tries.at(-1)!;
        const replay = await postOrder(app, k, orderFor(tag));
        const effects = await orders(tag);
        const leaseLostReported = (await leaseLostTotal(app)) - leaseLostBefore;
        const leaseLostLogged = logLines(app, LEASE_LOST).length - leaseLostLogsBefore;
        const answers = new StatusTally();
        [first, ...tries, replay].forEach((res) => answers.add(res.status));
        const ids = [...tries, replay].filter((res) => res.status < 300).map((res) => res.body.id);

        expect(report).toEqual(
          how === 'answer-lost' ? { how, serverAnswer: 'ok' } : { how: 'commit-lost' },
        );
        expect({ status: first.status, code: first.body.code }).toEqual({
          status: 503,
          code: 'IDEMPOTENCY_STORE_UNAVAILABLE',
        });
        expect(first.headers['content-type']).toMatch(PROBLEM);
        expect(logLines(app, TRANSACTION_FAILED).length - failuresBefore).toBe(1);
        // What the database did, as the test reads it: nothing, or the order with its record.
        expect([ordersAfterCut, recordAfterCut]).toEqual(
          expected.committed ? [1, 'completed'] : [0, 'none'],
        );
        // The key is never held: released at once, or completed; the first retry settles it.
        expect(tries).toHaveLength(1);
        expect(retry.status).toBe(201);
        expect(retry.headers['idempotent-replayed']).toBe(expected.committed ? 'true' : undefined);
        expect(replay.status).toBe(201);
        expect(replay.headers['idempotent-replayed']).toBe('true');
        expect(effects).toHaveLength(1);
        expect(ids).toEqual([effects[0].id, effects[0].id]);
        expect(answers.between(500, 599)).toBe(1);
        // The lease was never lost: a COMMIT that went through is not reported as a lost lease.
        expect({ leaseLostReported, leaseLostLogged }).toEqual({
          leaseLostReported: 0,
          leaseLostLogged: 0,
        });

        recordOutcome(`transactional-commit-${how}-${kind}`, {
          fault: `Transactional mode, ${name}: the connection lost during COMMIT, ${expected.label}`,
          trigger: `one instance, TypeORM store, lease ${LOCK_TTL_MS} ms, its database connections through a TCP proxy of the test; POST /orders; the proxy ${expected.how}; the client retries, then sends the key once more`,
          measured: {
            firstAnswer: `${first.status} ${first.body.code}`,
            ordersAfterCut,
            recordAfterCut,
            retryAnswers: tries
              .map((res) => `${res.status}${res.headers['idempotent-replayed'] ? ' replayed' : ''}`)
              .join(', '),
            retrySettledAfterMs: settledAfterMs,
            sameIdForEvery2xx: String(new Set(ids).size === 1),
            effectsPerKey: effects.length,
            answers5xx: answers.between(500, 599),
            leaseLostReported,
          },
          effectsPerKey: effects.length,
          outcome: expected.committed
            ? 'the client got 503 IDEMPOTENCY_STORE_UNAVAILABLE although its transaction committed (it cannot know); the order and its completed record committed together, so the first retry replayed that order: 1 order, one id'
            : 'the client got 503 IDEMPOTENCY_STORE_UNAVAILABLE; the server rolled the order back with the connection and the key was released before the 503 was sent, so the first retry ran once: 1 order, one id',
          file: 'test/faults/transactional-commit.e2e-spec.ts',
        });
      },
      60_000,
    );

    if (kind === 'postgres') {
      it('the session terminated while the server runs its COMMIT: 503, no order, the key released, the retry runs once', async () => {
        // A deferred trigger runs at COMMIT time: for this scenario's customer it sleeps there,
        // inside the COMMIT of the store's one query (completion and COMMIT), until terminated.
        await sql.query(
          'CREATE TABLE IF NOT EXISTS fault_slow_commit (customer_id text PRIMARY KEY)',
        );
        await sql.query(`CREATE OR REPLACE FUNCTION fault_slow_commit() RETURNS trigger AS $$
          BEGIN
            IF EXISTS (SELECT 1 FROM fault_slow_commit WHERE customer_id = NEW.customer_id) THEN
              PERFORM pg_sleep(30);
            END IF;
            RETURN NULL;
          END $$ LANGUAGE plpgsql`);
        await sql.query('DROP TRIGGER IF EXISTS fault_slow_commit ON orders');
        await sql.query(`CREATE CONSTRAINT TRIGGER fault_slow_commit AFTER INSERT ON orders
          DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION fault_slow_commit()`);
        const k = key('commit-terminated');
        const tag = `c-terminated-${randomUUID()}`;
        const storageKey = storageKeyOfRoute('/orders', k);
        await sql.query('INSERT INTO fault_slow_commit (customer_id) VALUES ($1)', [tag]);
        const first = postOrder(app, k, orderFor(tag)).then((res) => res);
        let terminated = 0;
        let recordDuringCommit = '';
        try {
          let pid = 0;
          await eventually('the COMMIT sleeping in the deferred trigger', async () => {
            const [row] = (await sql.query(
              `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
               AND wait_event = 'PgSleep' AND query LIKE 'DO $idempotency%'`,
            )) as { pid: number }[];
            pid = row?.pid ?? 0;
            return pid > 0;
          });
          recordDuringCommit = await recordState(storageKey);
          const [{ ok }] = (await sql.query('SELECT pg_terminate_backend($1) AS ok', [pid])) as {
            ok: boolean;
          }[];
          terminated = ok ? 1 : 0;
        } finally {
          await sql.query('DELETE FROM fault_slow_commit WHERE customer_id = $1', [tag]);
        }
        const cut = await first;
        const answeredAt = Date.now();
        const ordersAfterCut = (await orders(tag)).length;
        const recordAfterCut = await recordState(storageKey);
        const tries = await untilNotInProgress(() => postOrder(app, k, orderFor(tag)), 15_000);
        const settledAfterMs = Date.now() - answeredAt;
        const retry = tries.at(-1)!;
        const replay = await postOrder(app, k, orderFor(tag));
        const effects = await orders(tag);

        expect(terminated).toBe(1);
        // Committed data only: the completion inside the COMMIT is not visible yet.
        expect(recordDuringCommit).toBe('in_flight');
        expect({ status: cut.status, code: cut.body.code }).toEqual({
          status: 503,
          code: 'IDEMPOTENCY_STORE_UNAVAILABLE',
        });
        expect(cut.headers['content-type']).toMatch(PROBLEM);
        expect([ordersAfterCut, recordAfterCut]).toEqual([0, 'none']);
        expect(tries.filter(inProgress)).toEqual([]);
        expect(retry.status).toBe(201);
        expect(retry.headers['idempotent-replayed']).toBeUndefined();
        expect(replay.headers['idempotent-replayed']).toBe('true');
        expect(replay.body.id).toBe(retry.body.id);
        expect(effects).toEqual([{ id: retry.body.id }]);

        recordOutcome('transactional-commit-terminated-postgres', {
          fault:
            'Transactional mode, PostgreSQL: the session terminated while the server runs its COMMIT',
          trigger: `one instance, TypeORM store, lease ${LOCK_TTL_MS} ms; a deferred constraint trigger of the test on orders sleeps at COMMIT time for one customer; POST /orders reaches its one query (the fenced completion, then COMMIT) and sleeps inside the COMMIT; the test terminates that backend (pg_terminate_backend); the client retries, then sends the key once more`,
          measured: {
            recordDuringCommit,
            firstAnswer: `${cut.status} ${cut.body.code}`,
            ordersAfterCut,
            recordAfterCut,
            retryAnswers: tries.map((res) => res.status).join(', '),
            retrySettledAfterMs: settledAfterMs,
            effectsPerKey: effects.length,
          },
          effectsPerKey: effects.length,
          outcome:
            'the COMMIT was aborted with the session: the client got 503 IDEMPOTENCY_STORE_UNAVAILABLE, no order and no completion were kept, the key was released before the 503 was sent, and the first retry ran once: 1 order',
          file: 'test/faults/transactional-commit.e2e-spec.ts',
        });
      }, 60_000);
    }
  });
}
