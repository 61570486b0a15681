import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DataSource, type QueryRunner } from 'typeorm';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import {
  createTemporaryDatabase,
  MYSQL_URL,
  POSTGRES_URL,
  type TemporaryDatabase,
} from '../utils/databases';
import { eventually, killAllChildren } from '../utils/processes';
import { describeWithServer } from '../utils/services';
import {
  EFFECTS,
  type Effect,
  inProgress,
  key,
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
import { type Response } from 'supertest';

/**
 * Exactly once for effects: the sample in transactional mode (TypeORM store, the default), two
 * real instances on one database. The handler's INSERT is held by a table lock the test takes, so
 * the test decides when the write happens, and a holder is frozen with SIGSTOP (a long GC pause, a
 * VM stall), killed with SIGKILL, or has its connection cut, between its write and its COMMIT.
 * Every scenario counts the effect rows per key: it must end at exactly one, never two.
 */

const LOCK_TTL_MS = 2_000;

afterAll(() => killAllChildren());

type Kind = 'postgres' | 'mariadb';

/** What a scenario needs of the database: a lock on an effect table, and what to look at. */
class Database {
  private lockRunner?: QueryRunner;

  constructor(
    readonly kind: Kind,
    readonly sql: DataSource,
  ) {}

  static async open(kind: Kind, url: string): Promise<Database> {
    const sql = await new DataSource({
      type: kind,
      url,
      ...(kind === 'postgres' ? { extra: { max: 2 } } : { extra: { connectionLimit: 2 } }),
    }).initialize();
    return new Database(kind, sql);
  }

  private param(n: number) {
    return this.kind === 'postgres' ? `$${n}` : '?';
  }

  /** Blocks every INSERT into `table` (reads still pass) until {@link unlock}. */
  async lock(table: string): Promise<void> {
    this.lockRunner = this.sql.createQueryRunner();
    await this.lockRunner.connect();
    if (this.kind === 'postgres') {
      await this.lockRunner.startTransaction();
      await this.lockRunner.query(`LOCK TABLE ${table} IN SHARE MODE`);
    } else {
      await this.lockRunner.query(`LOCK TABLES ${table} READ`);
    }
  }

  async unlock(): Promise<void> {
    const runner = this.lockRunner!;
    this.lockRunner = undefined;
    if (this.kind === 'postgres') {
      await runner.commitTransaction();
    } else {
      await runner.query('UNLOCK TABLES');
    }
    await runner.release();
  }

  /** Resolves once some session of the app waits on the table lock (its INSERT is held). */
  async insertHeld(): Promise<void> {
    const query =
      this.kind === 'postgres'
        ? `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock'`
        : `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST
           WHERE DB = DATABASE() AND STATE LIKE 'Waiting for table%lock'`;
    await eventually('an INSERT waiting on the table lock', async () => {
      const [{ n }] = await this.sql.query(query);
      return Number(n) > 0;
    });
  }

  /** Resolves once a session of the app holds an open transaction that wrote (and waits idle). */
  async writtenNotCommitted(): Promise<void> {
    const query =
      this.kind === 'postgres'
        ? `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND state = 'idle in transaction'`
        : `SELECT COUNT(*) AS n FROM information_schema.INNODB_TRX t
           JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
           WHERE p.DB = DATABASE() AND t.trx_rows_modified > 0 AND p.COMMAND = 'Sleep'`;
    await eventually('a written, uncommitted transaction', async () => {
      const [{ n }] = await this.sql.query(query);
      return Number(n) > 0;
    });
  }

  /** Cuts the connection of every transaction of the app that wrote and is not committed. */
  async terminateOpenTransactions(): Promise<number> {
    if (this.kind === 'postgres') {
      const [{ n }] = await this.sql.query(
        `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND state = 'idle in transaction'`,
      );
      return Number(n);
    }
    const threads: { id: string | number }[] = await this.sql.query(
      `SELECT t.trx_mysql_thread_id AS id FROM information_schema.INNODB_TRX t
       JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id
       WHERE p.DB = DATABASE() AND t.trx_rows_modified > 0`,
    );
    for (const { id } of threads) {
      await this.sql.query(`KILL CONNECTION ${Number(id)}`);
    }
    return threads.length;
  }

  /** Effect rows of one key's payload (its customer or recipient, unique per scenario). */
  async effects(effect: Effect, tag: string): Promise<{ id: string }[]> {
    const { table, column, value } = EFFECTS[effect];
    return this.sql.query(`SELECT id FROM ${table} WHERE ${column} = ${this.param(1)}`, [
      value(tag),
    ]);
  }

  /**
   * Makes the completion of `storageKey`'s record fail (a trigger raises on it) until
   * {@link letCompletionsThrough}: the store fails after the handler succeeded.
   */
  async failCompletionOf(storageKey: string): Promise<void> {
    await this.sql.query(
      `CREATE TABLE IF NOT EXISTS fail_completion (storage_key varchar(64) PRIMARY KEY)`,
    );
    await this.sql.query(`INSERT INTO fail_completion (storage_key) VALUES (${this.param(1)})`, [
      storageKey,
    ]);
    if (this.kind === 'postgres') {
      await this.sql.query(`CREATE OR REPLACE FUNCTION fail_completion() RETURNS trigger AS $$
        BEGIN
          IF NEW.state = 'completed' AND EXISTS (
            SELECT 1 FROM fail_completion WHERE storage_key = NEW.storage_key) THEN
            RAISE EXCEPTION 'completion refused by the fault test';
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql`);
      await this.sql.query(`DROP TRIGGER IF EXISTS fail_completion ON idempotency_records`);
      await this.sql.query(`CREATE TRIGGER fail_completion BEFORE UPDATE ON idempotency_records
        FOR EACH ROW EXECUTE FUNCTION fail_completion()`);
    } else {
      await this.sql.query(`DROP TRIGGER IF EXISTS fail_completion`);
      await this.sql.query(`CREATE TRIGGER fail_completion BEFORE UPDATE ON idempotency_records
        FOR EACH ROW BEGIN
          IF NEW.state = 'completed' AND EXISTS (
            SELECT 1 FROM fail_completion WHERE storage_key = NEW.storage_key) THEN
            SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'completion refused by the fault test';
          END IF;
        END`);
    }
  }

  async letCompletionsThrough(): Promise<void> {
    await this.sql.query('DELETE FROM fail_completion');
  }
}

const DATABASES: [string, Kind, Promise<jest.Describe>][] = [
  ['PostgreSQL', 'postgres', describeWithServer('PostgreSQL', POSTGRES_URL)],
  ['MariaDB', 'mariadb', describeWithServer('MariaDB', MYSQL_URL)],
];

for (const [name, kind, gate] of DATABASES) {
  (await gate)(`Transactional mode on ${name}: effects per key`, () => {
    let database: TemporaryDatabase;
    let db: Database;
    let a: AppProcess;
    let b: AppProcess;

    beforeAll(async () => {
      database = await createTemporaryDatabase(kind, 'faults_tx');
      const env = {
        DATABASE_URL: database.url,
        IDEMPOTENCY_STORE: 'typeorm',
        IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
      };
      // One after the other: both would run the migrations at once (they take a lock, but a
      // slow second start is all that would buy).
      a = await startApp(env, `tx-a-${kind}`);
      b = await startApp(env, `tx-b-${kind}`);
      db = await Database.open(kind, database.url);
    }, START_MS);

    afterAll(async () => {
      await db?.sql.destroy();
      await Promise.all([a?.stop(), b?.stop()]);
      await database?.drop();
    });

    it.each(['orders', 'emails'] as const)(
      'a holder frozen (SIGSTOP) past its lease while its %s INSERT waits on a lock, then taken over: 1 effect, one id, no 5xx',
      async (effect) => {
        const { table, post } = EFFECTS[effect];
        const k = key(`frozen-${effect}`);
        const tag = `c-frozen-${randomUUID()}`;
        await db.lock(table);
        const first = post(a, k, tag).then((res) => res);
        let frozenAt = 0;
        try {
          await db.insertHeld();
          a.signal('SIGSTOP');
          frozenAt = Date.now();
          // No renewal while frozen: the lease lapses.
          await sleep(LOCK_TTL_MS + 700);
        } finally {
          // A's INSERT now runs on the database, inside A's transaction, which A cannot commit.
          await db.unlock();
        }
        const winner = await post(b, k, tag);
        a.signal('SIGCONT');
        const frozenMs = Date.now() - frozenAt;
        const late = await first;
        const effects = await db.effects(effect, tag);
        const answers = new StatusTally();
        [winner, late].forEach((res) => answers.add(res.status));

        expect(winner.status).toBe(effect === 'orders' ? 201 : 202);
        expect(late.status).toBe(winner.status);
        expect(late.body.id).toBe(winner.body.id);
        expect(late.headers['idempotent-replayed']).toBe('true');
        expect(effects).toEqual([{ id: winner.body.id }]);
        expect(answers.between(500, 599)).toBe(0);

        recordOutcome(`transactional-frozen-${effect}-${kind}`, {
          fault: `Transactional mode, ${name}: a holder frozen past its lease (${effect})`,
          trigger: `two instances, TypeORM store, lease ${LOCK_TTL_MS} ms; the test locks ${table}, A's POST ${EFFECTS[effect].route} waits in its INSERT; SIGSTOP A for ${frozenMs} ms; the lock is released (A's INSERT runs inside A's open transaction); B sends the same key and takes it over; SIGCONT A`,
          measured: {
            effectsPerKey: effects.length,
            winnerAnswer: winner.status,
            frozenHolderAnswer: `${late.status}${late.headers['idempotent-replayed'] ? ' replayed' : ''}`,
            sameIdForBothClients: String(late.body.id === winner.body.id),
            answers5xx: answers.between(500, 599),
            frozenMs,
          },
          effectsPerKey: effects.length,
          outcome: `1 ${effect === 'orders' ? 'order' : 'email'} for the key: the frozen holder's completion matched nothing (lease lost), its transaction rolled back, and its client got the winner's answer, replayed`,
          file: 'test/faults/transactional.e2e-spec.ts',
        });
      },
      30_000,
    );

    it('a holder killed (SIGKILL) after its write and before COMMIT: 0 effects until the retry, then exactly 1', async () => {
      const k = key('killed');
      const tag = `c-killed-${randomUUID()}`;
      // A spare instance to kill, so the suite keeps A and B.
      const victim = await startApp(
        {
          DATABASE_URL: database.url,
          IDEMPOTENCY_STORE: 'typeorm',
          IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
        },
        `tx-victim-${kind}`,
      );
      await db.lock('orders');
      const first = postOrder(victim, k, orderFor(tag)).then(
        (res) => res.status,
        (error: NodeJS.ErrnoException) => error.code ?? error.message,
      );
      try {
        await db.insertHeld();
        victim.signal('SIGSTOP');
      } finally {
        await db.unlock();
      }
      await db.writtenNotCommitted();
      const beforeKill = (await db.effects('orders', tag)).length;
      victim.signal('SIGKILL');
      await victim.exited;
      expect(await first).toBe('ECONNRESET');
      const afterKill = (await db.effects('orders', tag)).length;
      const startedAt = Date.now();
      const tries = await untilNotInProgress(() => postOrder(b, k, orderFor(tag)), 15_000);
      const waitedMs = Date.now() - startedAt;
      const retries = new StatusTally();
      tries.forEach((res) => retries.add(res.status));
      const last = tries.at(-1)!;
      const again = await postOrder(a, k, orderFor(tag));
      const effects = await db.effects('orders', tag);

      expect([beforeKill, afterKill]).toEqual([0, 0]);
      expect(last.status).toBe(201);
      expect(last.headers['idempotent-replayed']).toBeUndefined();
      expect(tries.slice(0, -1).every(inProgress)).toBe(true);
      expect(again.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(effects).toEqual([{ id: last.body.id }]);

      recordOutcome(`transactional-killed-${kind}`, {
        fault: `Transactional mode, ${name}: kill -9 between the write and COMMIT`,
        trigger: `an instance's POST /orders waits in its INSERT on a table lock; SIGSTOP, the lock released (the INSERT runs, uncommitted), SIGKILL; the client retries on another instance every 50 ms`,
        measured: {
          effectsBeforeKill: beforeKill,
          effectsAfterKill: afterKill,
          retryAnswers: retries.toString(),
          retryRanAfterMs: waitedMs,
          effectsPerKey: effects.length,
        },
        effectsPerKey: effects.length,
        outcome: `the killed holder left no order (its transaction never committed); the retry got 409 until the lease lapsed (${waitedMs} ms), then ran once: 1 order`,
        file: 'test/faults/transactional.e2e-spec.ts',
      });
    }, 60_000);

    it('the connection cut between the write and COMMIT: 503 (not 500), no effect, the key free at once, the retry runs once', async () => {
      const k = key('cut');
      const tag = `c-cut-${randomUUID()}`;
      await db.lock('orders');
      const first = postOrder(a, k, orderFor(tag)).then((res) => res);
      let terminated = 0;
      try {
        await db.insertHeld();
        a.signal('SIGSTOP');
      } finally {
        await db.unlock();
      }
      try {
        await db.writtenNotCommitted();
        terminated = await db.terminateOpenTransactions();
      } finally {
        a.signal('SIGCONT');
      }
      const cut: Response = await first;
      const afterCut = (await db.effects('orders', tag)).length;
      const startedAt = Date.now();
      const tries = await untilNotInProgress(() => postOrder(b, k, orderFor(tag)), 15_000);
      const freeAfterMs = Date.now() - startedAt;
      const last = tries.at(-1)!;
      const effects = await db.effects('orders', tag);

      expect(terminated).toBeGreaterThan(0);
      expect({ status: cut.status, code: cut.body.code }).toEqual({
        status: 503,
        code: 'IDEMPOTENCY_STORE_UNAVAILABLE',
      });
      expect(cut.headers['content-type']).toMatch(PROBLEM);
      expect(afterCut).toBe(0);
      expect(last.status).toBe(201);
      expect(freeAfterMs).toBeLessThan(LOCK_TTL_MS);
      expect(effects).toEqual([{ id: last.body.id }]);

      recordOutcome(`transactional-connection-cut-${kind}`, {
        fault: `Transactional mode, ${name}: the connection cut before COMMIT`,
        trigger: `POST /orders waits in its INSERT on a table lock; SIGSTOP, the lock released (the INSERT runs, uncommitted); the test terminates that connection (${kind === 'postgres' ? 'pg_terminate_backend' : 'KILL CONNECTION'}); SIGCONT; the client retries on another instance`,
        measured: {
          firstAnswer: `${cut.status} ${cut.body.code}`,
          connectionsTerminated: terminated,
          effectsAfterCut: afterCut,
          retryAnswers: tries.map((res) => res.status).join(', '),
          keyFreeAfterMs: freeAfterMs,
          effectsPerKey: effects.length,
        },
        effectsPerKey: effects.length,
        outcome: `the client got 503 IDEMPOTENCY_STORE_UNAVAILABLE, nothing was committed, the key was released at once (the retry ran after ${freeAfterMs} ms, within the lease): 1 order`,
        file: 'test/faults/transactional.e2e-spec.ts',
      });
    }, 60_000);

    it('the store fails after the handler succeeded (the completion refused): no order, 503, then exactly 1', async () => {
      const k = key('refused');
      const tag = `c-refused-${randomUUID()}`;
      await db.failCompletionOf(storageKeyOfRoute('/orders', k));
      let refused: Response;
      try {
        refused = await postOrder(a, k, orderFor(tag));
      } finally {
        await db.letCompletionsThrough();
      }
      const afterFailure = (await db.effects('orders', tag)).length;
      const retry = await postOrder(b, k, orderFor(tag));
      const replay = await postOrder(a, k, orderFor(tag));
      const effects = await db.effects('orders', tag);

      expect({ status: refused.status, code: refused.body.code }).toEqual({
        status: 503,
        code: 'IDEMPOTENCY_STORE_UNAVAILABLE',
      });
      expect(afterFailure).toBe(0);
      expect(retry.status).toBe(201);
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.body.id).toBe(retry.body.id);
      expect(effects).toEqual([{ id: retry.body.id }]);

      recordOutcome(`transactional-store-fails-after-success-${kind}`, {
        fault: `Transactional mode, ${name}: the store fails after the handler succeeded`,
        trigger: `a trigger on idempotency_records refuses the completion of one key, once: POST /orders inserts its order, then its completion (inside the transaction) fails; the client retries on the other instance`,
        measured: {
          firstAnswer: `${refused.status} ${refused.body.code}`,
          effectsAfterFailure: afterFailure,
          retryAnswer: retry.status,
          effectsPerKey: effects.length,
        },
        effectsPerKey: effects.length,
        outcome:
          'the order rolled back with the refused completion (outside transactional mode it stays, and the retry after the lease makes a second one); the retry ran at once: 1 order',
        file: 'test/faults/transactional.e2e-spec.ts',
      });
    }, 30_000);
  });
}
