import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { type IncomingHttpHeaders, request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DataSource } from 'typeorm';
import { type AppProcess } from '../../apps/orders-api/test/orders-api.process';
import { eventually, killAllChildren } from '../utils/processes';
import { describeWithSqlite } from '../utils/sqlite';
import {
  EFFECTS,
  type Effect,
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
 * Exactly once for effects on SQLite: the sample in transactional mode (TypeORM store, the
 * default) as a real process on a SQLite file, ONE process at a time on the file (SQLite has one
 * writer at a time; issue 11 asks for SQLite with one process). A retry goes to that same process,
 * or to the process started again on the file after a kill.
 *
 * How the process is held inside its transaction: on PostgreSQL and MariaDB a table lock holds the
 * handler's INSERT on the server. SQLite has one lock for every write, and the claim, which commits
 * on its own before the handler, takes it too: a lock the test held (BEGIN IMMEDIATE) would stop
 * the claim, not the INSERT. So the test puts triggers of its own on the tables that, for one
 * scenario's row only, run a long query (a 400-row table joined with itself three times, about a
 * second on an idle core) inside a statement of the transaction: the effect's INSERT (the row written) or the
 * record's completion (the last statement before COMMIT, after the INSERT finished). better-sqlite3
 * is synchronous, so the whole process is then inside that statement, its transaction open and
 * SQLite's write lock held, until the query ends; the test sees that state and stops or kills the
 * process there. A trigger holds only statements made within a window after the test armed it, so
 * the run that follows (the retry, or a run after the takeover) is not held.
 *
 * The connection cut during COMMIT has no SQLite counterpart: the database is a file the process
 * writes itself, with no connection to lose (a full disk or an I/O error are what is left, and are
 * not tried here).
 */

const LOCK_TTL_MS = 2_000;
/** What the engine logs when a transactional run's fenced completion matched no row. */
const LATE_COMPLETION = /lease lost before COMMIT/;
/** Rows of the table the hold trigger joins with itself three times (64 million rows). */
const HOLD_ROWS = 400;

afterAll(() => killAllChildren());

/** An answer as the scenarios read it; supertest's `Response` has the same fields. */
interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: { id?: string; code?: string };
}

/**
 * Sends a POST and resolves `sent` once the whole request is handed to the kernel: a stopped
 * process still accepts the connection (its listen queue does) and reads the request when it runs
 * again. `answer` rejects with the socket error if there is no answer.
 */
function send(
  url: string,
  k: string,
  body: object,
): { sent: Promise<void>; answer: Promise<Answer> } {
  const payload = JSON.stringify(body);
  const req = httpRequest(url, {
    method: 'POST',
    agent: false,
    headers: {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(payload),
      'idempotency-key': k,
    },
  });
  const answer = new Promise<Answer>((resolve, reject) => {
    req.once('error', reject);
    req.once('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.once('error', reject);
      res.once('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: text ? JSON.parse(text) : {},
        });
      });
    });
  });
  const sent = new Promise<void>((resolve) => {
    req.once('finish', resolve);
    // A failed request is reported by `answer`.
    req.once('error', () => resolve());
  });
  // Awaited by the test; a test failing before that must not leave an unhandled rejection.
  answer.catch(() => undefined);
  req.end(payload);
  return { sent, answer };
}

/** An answer in one line: its status, its problem code if any, and whether it was a replay. */
const describeAnswer = (res: Answer) =>
  `${res.status}${res.body.code ? ` ${res.body.code}` : ''}${res.headers['idempotent-replayed'] ? ' replayed' : ''}`;

/** The app's SQLite file, through a connection of the test's own. */
class SqliteFile {
  private constructor(readonly sql: DataSource) {}

  /** Opens the file once the app has made it (its tables, and WAL mode, which the file keeps). */
  static async open(file: string): Promise<SqliteFile> {
    const sql = await new DataSource({
      type: 'better-sqlite3',
      database: file,
      timeout: 10_000,
    }).initialize();
    const sqlite = new SqliteFile(sql);
    await sqlite.installHold();
    return sqlite;
  }

  /**
   * The hold triggers: an INSERT into an effect table, or a completion of a record, whose value
   * (customer, recipient, storage key) `fault_hold` lists within its window (by the database
   * clock) runs a long query inside the statement, after its row is written.
   */
  private async installHold(): Promise<void> {
    await this.sql.query(
      'CREATE TABLE fault_hold (value varchar(320) PRIMARY KEY, until_ms bigint NOT NULL)',
    );
    await this.sql.query('CREATE TABLE fault_hold_rows (n integer NOT NULL)');
    await this.sql.query(
      `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${HOLD_ROWS})
       INSERT INTO fault_hold_rows (n) SELECT i FROM n`,
    );
    const held = (value: string) => `EXISTS (SELECT 1 FROM fault_hold WHERE value = ${value}
      AND until_ms > CAST(unixepoch('subsec') * 1000 AS INTEGER))`;
    const hold = 'SELECT count(*) FROM fault_hold_rows a, fault_hold_rows b, fault_hold_rows c;';
    for (const { table, column } of Object.values(EFFECTS)) {
      await this.sql.query(`CREATE TRIGGER fault_hold_${table} AFTER INSERT ON ${table}
        WHEN ${held(`NEW.${column}`)} BEGIN ${hold} END`);
    }
    await this.sql.query(`CREATE TRIGGER fault_hold_completion AFTER UPDATE ON idempotency_records
      WHEN NEW.state = 'completed' AND ${held('NEW.storage_key')} BEGIN ${hold} END`);
  }

  /** Holds the INSERT of `tag`'s effect made within the next `windowMs`. */
  async holdInsert(effect: Effect, tag: string, windowMs: number): Promise<void> {
    await this.holdValue(EFFECTS[effect].value(tag), windowMs);
  }

  /** Holds the completion of `storageKey`'s record made within the next `windowMs`. */
  async holdCompletion(storageKey: string, windowMs: number): Promise<void> {
    await this.holdValue(storageKey, windowMs);
  }

  private async holdValue(value: string, windowMs: number): Promise<void> {
    await this.sql.query(
      `INSERT INTO fault_hold (value, until_ms)
       VALUES (?, CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?)`,
      [value, windowMs],
    );
  }

  /** Whether a connection holds SQLite's write lock (a write transaction is open). */
  async writeLocked(): Promise<boolean> {
    await this.sql.query('PRAGMA busy_timeout = 0');
    try {
      await this.sql.query('BEGIN IMMEDIATE');
      await this.sql.query('ROLLBACK');
      return false;
    } catch (error) {
      if ((error as { driverError?: { code?: string } }).driverError?.code === 'SQLITE_BUSY') {
        return true;
      }
      throw error;
    } finally {
      await this.sql.query('PRAGMA busy_timeout = 10000');
    }
  }

  /** The record of `storageKey`, with its lease's remaining time by the database clock. */
  async record(
    storageKey: string,
  ): Promise<{ state: string; leaseRemainingMs: number | null } | undefined> {
    const [row] = (await this.sql.query(
      `SELECT state, lease_expires_at - CAST(unixepoch('subsec') * 1000 AS INTEGER) AS remaining
       FROM idempotency_records WHERE storage_key = ?`,
      [storageKey],
    )) as { state: string; remaining: number | null }[];
    return row && { state: row.state, leaseRemainingMs: row.remaining };
  }

  /**
   * Resolves once the request that claimed `storageKey` is inside its held statement: the claim
   * committed, and the write lock held for 100 ms without a break (a statement that is not held
   * takes it for well under a millisecond, and a statement that commits on its own releases it).
   */
  async insideHeldStatement(storageKey: string): Promise<void> {
    let heldSince: number | undefined;
    await eventually(
      'the claim committed and a held statement keeping the write lock',
      async () => {
        if ((await this.record(storageKey))?.state !== 'in_flight' || !(await this.writeLocked())) {
          heldSince = undefined;
          return false;
        }
        heldSince ??= Date.now();
        return Date.now() - heldSince >= 100;
      },
      15_000,
      10,
    );
  }

  /** Effect rows of one key's payload (its customer or recipient, unique per scenario). */
  async effects(effect: Effect, tag: string): Promise<{ id: string }[]> {
    const { table, column, value } = EFFECTS[effect];
    return this.sql.query(`SELECT id FROM ${table} WHERE ${column} = ?`, [value(tag)]);
  }

  /**
   * Makes the completion of `storageKey`'s record fail (a trigger raises on it) until
   * {@link letCompletionsThrough}: the store fails after the handler succeeded.
   */
  async failCompletionOf(storageKey: string): Promise<void> {
    await this.sql.query(
      'CREATE TABLE IF NOT EXISTS fail_completion (storage_key varchar(64) PRIMARY KEY)',
    );
    await this.sql.query('INSERT INTO fail_completion (storage_key) VALUES (?)', [storageKey]);
    await this.sql.query(`CREATE TRIGGER IF NOT EXISTS fail_completion
      BEFORE UPDATE ON idempotency_records
      WHEN NEW.state = 'completed' AND EXISTS (
        SELECT 1 FROM fail_completion WHERE storage_key = NEW.storage_key)
      BEGIN
        SELECT RAISE(ABORT, 'completion refused by the fault test');
      END`);
  }

  async letCompletionsThrough(): Promise<void> {
    await this.sql.query('DELETE FROM fail_completion');
  }
}

describeWithSqlite()('Transactional mode on SQLite, one process: effects per key', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv & { DATABASE_URL: string };
  let app: AppProcess;
  let file: SqliteFile;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'faults-tx-sqlite-'));
    env = {
      DATABASE_URL: join(dir, 'orders.sqlite'),
      IDEMPOTENCY_STORE: 'typeorm',
      IDEMPOTENCY_LOCK_TTL: String(LOCK_TTL_MS),
    };
    app = await startApp(env, 'tx-sqlite');
    file = await SqliteFile.open(env.DATABASE_URL);
  }, START_MS);

  afterAll(async () => {
    await file?.sql.destroy();
    await app?.stop();
    if (dir) {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it.each(['orders', 'emails'] as const)(
    'a holder frozen (SIGSTOP) inside its %s transaction past its lease, the same key sent again to that process: 1 effect, one id, no 5xx',
    async (effect) => {
      const { route, post, body } = EFFECTS[effect];
      const k = key(`sqlite-frozen-${effect}`);
      const tag = `c-frozen-${randomUUID()}`;
      const storageKey = storageKeyOfRoute(route, k);
      const refusedBefore = logLines(app, LATE_COMPLETION).length;
      await file.holdInsert(effect, tag, LOCK_TTL_MS);
      const first = send(`${app.url}${route}`, k, body(tag));
      let frozenAt = 0;
      let retry!: ReturnType<typeof send>;
      try {
        await file.insideHeldStatement(storageKey);
        app.signal('SIGSTOP');
        frozenAt = Date.now();
        // No renewal while frozen: the lease lapses by the database clock.
        await sleep(LOCK_TTL_MS + 700);
        retry = send(`${app.url}${route}`, k, body(tag));
        await retry.sent;
      } finally {
        app.signal('SIGCONT');
      }
      const frozenMs = Date.now() - frozenAt;
      const answers = await Promise.all([first.answer, retry.answer]);
      // A client told 409 (the other run still going) retries, as a client would.
      const finals: Answer[] = [];
      for (const answer of answers) {
        finals.push(
          inProgress(answer)
            ? (await untilNotInProgress(() => post(app, k, tag), 15_000)).at(-1)!
            : answer,
        );
      }
      const effects = await file.effects(effect, tag);
      const tally = new StatusTally();
      [...answers, ...finals].forEach((res) => tally.add(res.status));
      const winners = finals.filter((res) => !res.headers['idempotent-replayed']);
      const lateCompletionsRefused = logLines(app, LATE_COMPLETION).length - refusedBefore;
      const success = effect === 'orders' ? 201 : 202;

      expect(finals.map((res) => res.status)).toEqual([success, success]);
      expect(winners).toHaveLength(1);
      expect(finals[1].body.id).toBe(finals[0].body.id);
      expect(effects).toEqual([{ id: finals[0].body.id }]);
      expect(tally.between(500, 599)).toBe(0);
      // The late completion matched no row (its lease had lapsed): the frozen run rolled back.
      expect(lateCompletionsRefused).toBe(1);

      // With one process the retry cannot take the key over while the frozen run's transaction is
      // open (it waits for its turn on the one connection), so either request may run next.
      const frozenWon = winners[0] === finals[0];
      const effectName = effect === 'orders' ? 'order' : 'email';
      recordOutcome(`transactional-frozen-${effect}-sqlite`, {
        fault: `Transactional mode, SQLite (one process): a holder frozen past its lease (${effect})`,
        trigger: `one process on a SQLite file, TypeORM store, lease ${LOCK_TTL_MS} ms; POST ${route} held inside its INSERT, the row written, by a long query in an AFTER INSERT trigger of the test (transaction open, write lock held); SIGSTOP for ${frozenMs} ms; the same key sent to the stopped process; SIGCONT`,
        measured: {
          effectsPerKey: effects.length,
          frozenHolderAnswer: describeAnswer(answers[0]),
          retryAnswer: describeAnswer(answers[1]),
          finalAnswers: finals.map(describeAnswer).join(', '),
          lateCompletionsRefused,
          winner: frozenWon ? 'the frozen request, run again' : 'the retry',
          sameIdForBothClients: String(finals[1].body.id === finals[0].body.id),
          answers5xx: tally.between(500, 599),
          frozenMs,
        },
        effectsPerKey: effects.length,
        outcome: `1 ${effectName} for the key: the frozen run's fenced completion matched nothing (its lease had lapsed), so its transaction rolled back; ${
          frozenWon
            ? `the frozen request then claimed the lapsed key again and ran once, and the retry got that ${effectName}, replayed`
            : `the retry took the lapsed key over and ran once, and the frozen request's client got that ${effectName}, replayed`
        } (with one process the retry waits for the open transaction's turn, so it cannot take over before the late completion)`,
        file: 'test/faults/transactional-sqlite.e2e-spec.ts',
      });
    },
    60_000,
  );

  it('the store fails after the handler succeeded (the completion refused): no order, 503, then exactly 1', async () => {
    const k = key('sqlite-refused');
    const tag = `c-refused-${randomUUID()}`;
    await file.failCompletionOf(storageKeyOfRoute('/orders', k));
    let refused: Awaited<ReturnType<typeof postOrder>>;
    try {
      refused = await postOrder(app, k, orderFor(tag));
    } finally {
      await file.letCompletionsThrough();
    }
    const afterFailure = (await file.effects('orders', tag)).length;
    const retry = await postOrder(app, k, orderFor(tag));
    const replay = await postOrder(app, k, orderFor(tag));
    const effects = await file.effects('orders', tag);

    expect({ status: refused.status, code: refused.body.code }).toEqual({
      status: 503,
      code: 'IDEMPOTENCY_STORE_UNAVAILABLE',
    });
    expect(refused.headers['content-type']).toMatch(PROBLEM);
    expect(afterFailure).toBe(0);
    expect(retry.status).toBe(201);
    expect(retry.headers['idempotent-replayed']).toBeUndefined();
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(replay.body.id).toBe(retry.body.id);
    expect(effects).toEqual([{ id: retry.body.id }]);

    recordOutcome('transactional-store-fails-after-success-sqlite', {
      fault:
        'Transactional mode, SQLite (one process): the store fails after the handler succeeded',
      trigger:
        'one process on a SQLite file; a trigger on idempotency_records refuses the completion of one key, once: POST /orders inserts its order, then its completion (inside the transaction) fails; the client retries',
      measured: {
        firstAnswer: `${refused.status} ${refused.body.code}`,
        effectsAfterFailure: afterFailure,
        retryAnswer: retry.status,
        effectsPerKey: effects.length,
      },
      effectsPerKey: effects.length,
      outcome:
        'the order rolled back with the refused completion and the key was released; the retry ran at once: 1 order',
      file: 'test/faults/transactional-sqlite.e2e-spec.ts',
    });
  }, 30_000);

  it(
    'the process killed (SIGKILL) inside its completion, after the INSERT and before COMMIT: 0 effects until the retry on the restarted process, then exactly 1',
    async () => {
      const k = key('sqlite-killed');
      const tag = `c-killed-${randomUUID()}`;
      const storageKey = storageKeyOfRoute('/orders', k);
      await file.holdCompletion(storageKey, LOCK_TTL_MS);
      const first = postOrder(app, k, orderFor(tag)).then(
        (res) => res.status,
        (error: NodeJS.ErrnoException) => error.code ?? error.message,
      );
      await file.insideHeldStatement(storageKey);
      const beforeKill = (await file.effects('orders', tag)).length;
      app.signal('SIGKILL');
      const killedAt = Date.now();
      await app.exited;
      expect(await first).toBe('ECONNRESET');
      const afterKill = (await file.effects('orders', tag)).length;
      const left = await file.record(storageKey);
      const lockFreed = !(await file.writeLocked());

      app = await startApp(env, 'tx-sqlite-restarted');
      const restartMs = Date.now() - killedAt;
      const beforeRetry = (await file.effects('orders', tag)).length;
      const leaseLeftMs = (await file.record(storageKey))?.leaseRemainingMs ?? null;
      const tries = await untilNotInProgress(() => postOrder(app, k, orderFor(tag)), 15_000);
      const ranAfterKillMs = Date.now() - killedAt;
      const retries = new StatusTally();
      tries.forEach((res) => retries.add(res.status));
      const last = tries.at(-1)!;
      const again = await postOrder(app, k, orderFor(tag));
      const effects = await file.effects('orders', tag);

      expect([beforeKill, afterKill, beforeRetry]).toEqual([0, 0, 0]);
      // The claim stays, so the key is held until its lease lapses, never run twice meanwhile.
      expect(left?.state).toBe('in_flight');
      expect(lockFreed).toBe(true);
      expect(last.status).toBe(201);
      expect(last.headers['idempotent-replayed']).toBeUndefined();
      expect(tries.slice(0, -1).every(inProgress)).toBe(true);
      expect(again.status).toBe(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.id).toBe(last.body.id);
      expect(effects).toEqual([{ id: last.body.id }]);

      recordOutcome('transactional-killed-sqlite', {
        fault: 'Transactional mode, SQLite (one process): kill -9 between the write and COMMIT',
        trigger: `one process on a SQLite file, lease ${LOCK_TTL_MS} ms; POST /orders inserts its order, then is held inside its completion (the last statement before COMMIT) by a long query in an AFTER UPDATE trigger of the test (transaction open, write lock held); SIGKILL; the process started again on the same file; the client retries every 50 ms`,
        measured: {
          effectsBeforeKill: beforeKill,
          effectsAfterKill: afterKill,
          recordLeftByTheKilledProcess: left?.state ?? 'none',
          writeLockFreedByTheKill: String(lockFreed),
          restartMs,
          leaseAtRestart:
            leaseLeftMs === null
              ? 'none'
              : leaseLeftMs > 0
                ? `${leaseLeftMs} ms left`
                : `lapsed ${-leaseLeftMs} ms before`,
          effectsBeforeRetry: beforeRetry,
          retryAnswers: retries.toString(),
          retryRanAfterKillMs: ranAfterKillMs,
          effectsPerKey: effects.length,
        },
        effectsPerKey: effects.length,
        outcome: `the killed process left no order (its transaction never committed) and its claim in flight; ${
          retries.count(409) > 0
            ? `on the process restarted on the same file the retry got 409 until the lease lapsed, then ran once (${ranAfterKillMs} ms after the kill)`
            : `the process was back on the same file after ${restartMs} ms, past the lease, and the retry ran at once`
        }: 1 order, replayed afterwards`,
        file: 'test/faults/transactional-sqlite.e2e-spec.ts',
      });
    },
    START_MS,
  );
});
