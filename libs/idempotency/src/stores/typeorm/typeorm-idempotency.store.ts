import { Logger, type OnModuleDestroy } from '@nestjs/common';
import { createHash } from 'node:crypto';
import type { DataSource, EntityManager, QueryRunner } from 'typeorm';
import {
  type ClaimOptions,
  type ClaimResult,
  type CompleteOptions,
  IdempotencyStore,
  type IdempotencyStoreTransaction,
  type ReleaseOptions,
  type RenewOptions,
  type StoreTransactionOptions,
} from '../idempotency-store';
import { transactionStorage } from './idempotency-transaction';
import { dialectOf, type IdempotencyDialect, LEASE_LOST_SQLSTATE } from './typeorm-dialects';

/** Default table of the records, created by `CreateIdempotencyRecordsTable`. */
export const IDEMPOTENCY_RECORDS_TABLE = 'idempotency_records';

/** Options of {@link TypeOrmIdempotencyStore}. */
export interface TypeOrmIdempotencyStoreOptions {
  /**
   * The DataSource holding the records (PostgreSQL, MySQL/MariaDB, or SQLite through
   * better-sqlite3). With `@nestjs/typeorm`, inject it with `getDataSourceToken(name?)`.
   */
  dataSource: DataSource;
  /**
   * Table of the records.
   * @default 'idempotency_records'
   */
  tableName?: string;
  /**
   * How often one unref'd timer deletes expired records, in milliseconds; `0` turns it off (run
   * `purgeExpired()` from a cron job instead). Safe with several instances running it.
   * @default 60000
   */
  purgeIntervalMs?: number;
  /**
   * Rows deleted per statement while purging, so a purge never holds long locks.
   * @default 1000
   */
  purgeBatchSize?: number;
  /**
   * PostgreSQL: send the store's statements as named prepared statements, which each connection
   * parses and plans once instead of on every request. Turn it off behind a pooler that does not
   * keep prepared statements (PgBouncer in transaction mode before 1.21, or without
   * `max_prepared_statements`).
   * @default true
   */
  preparedStatements?: boolean;
  /**
   * For apps on `@nestjs-cls/transactional` with its TypeORM adapter: the `TransactionHost` of
   * that adapter (same DataSource). Transactional runs then open their transaction through it,
   * so services that use `txHost.tx` (or `@Transactional()`, which joins) work in the same
   * transaction as the record, unchanged. It needs an active CLS context, as `TransactionHost`
   * always does (ClsModule's middleware for HTTP; `@UseCls()` or `cls.run()` for a consumer).
   * @default undefined (the store opens its own transaction; see `transactionalEntityManager()`)
   */
  transactionHost?: IdempotencyTransactionHost;
}

/**
 * What the store uses of `TransactionHost<TransactionalAdapterTypeOrm>` from
 * `@nestjs-cls/transactional` (typed here so the package stays an optional peer).
 */
export interface IdempotencyTransactionHost {
  withTransaction<R>(
    // A string, not the library's level type: the adapter takes TypeORM's `IsolationLevel`
    // (with SNAPSHOT), and its option is not optional. The store passes its own levels only.
    options: { isolationLevel?: string },
    fn: () => Promise<R>,
  ): Promise<R>;
  readonly tx: EntityManager;
}

/** SQL text in the dialect's placeholders, and the named parameters in the order it takes them. */
interface Statement {
  text: string;
  names: string[];
}

interface RecordRow {
  state: string;
  fingerprint: string | null;
  owner_token: string | null;
  lease_remaining_ms: string | number | null;
  response_status: number | null;
  response_headers: string | null;
  response_body: string | null;
  response_error: boolean | number | null;
  /** Milliseconds until the record expires (PostgreSQL's claim answers expired records too). */
  remaining_ms?: string | number | null;
}

/** What the store needs of a connection to inline values (node-postgres's client has it). */
interface LiteralEscaper {
  escapeLiteral(value: string): string;
}

/** The state of TypeORM's query runner that `commitTransaction` keeps (see `completeAndCommit`). */
interface TransactionState {
  isTransactionActive: boolean;
  transactionDepth?: number;
}

/** A lease as a renewal left it: who holds it, and until when (database clock, epoch ms). */
interface Renewal {
  key: string;
  ownerToken: string;
  expiresAt: number;
}

/** What the store uses of node-postgres's `Pool`, TypeORM's PostgreSQL driver's `master`. */
interface PgPool {
  query(config: { text: string; values: unknown[]; name?: string }): Promise<{
    rows: unknown[];
    rowCount: number | null;
  }>;
  connect(): unknown;
}

/** Deadlock and serialization failures, which a retry of the same statement resolves. */
const RETRYABLE = new Set(['ER_LOCK_DEADLOCK', '40P01', '40001', 'SQLITE_BUSY']);
const MAX_ATTEMPTS = 5;

/** Whether a statement that failed with the driver's error `code` on try `attempt` is tried again. */
function triesAgain(code: unknown, attempt: number): boolean {
  return attempt < MAX_ATTEMPTS && typeof code === 'string' && RETRYABLE.has(code);
}

/**
 * A store in a SQL database through TypeORM: PostgreSQL, MySQL/MariaDB, or SQLite
 * (better-sqlite3). Records live in one table (see `CreateIdempotencyRecordsTable` and the
 * `IdempotencyRecord` entity).
 *
 * The claim lets the database decide, with no read-then-write window. On PostgreSQL one statement
 * inserts a new key or returns the record already there (a replay locks and writes nothing); an
 * expired record is taken over by a second statement fenced on its expiry. On MySQL and SQLite one
 * upsert inserts the key or takes over an expired record, and the row is read back in a second
 * statement. Complete, release and renew are single statements conditional on the owner token and
 * a live lease. All times come from the database clock. Expired rows are purged in batches by one
 * unref'd interval.
 *
 * @example
 * IdempotencyModule.forRootAsync({
 *   inject: [getDataSourceToken()],
 *   useFactory: (dataSource: DataSource) => ({ store: new TypeOrmIdempotencyStore({ dataSource }) }),
 * })
 */
export class TypeOrmIdempotencyStore extends IdempotencyStore implements OnModuleDestroy {
  private readonly logger = new Logger('TypeOrmIdempotencyStore');
  private readonly dataSource: DataSource;
  private readonly transactionHost?: IdempotencyTransactionHost;
  private readonly dialect: IdempotencyDialect;
  private readonly sql: Record<
    'claim' | 'select' | 'complete' | 'release' | 'renew' | 'restore' | 'purge',
    Statement
  >;
  /** The completion with `:name` parameters, for `completeAndCommit` to inline. */
  private readonly completionTemplate: string;
  private readonly purgeBatchSize: number;
  /** The statement taking over an expired record, for dialects whose claim leaves it in place. */
  private readonly takeover?: string;
  private purgeTimer?: NodeJS.Timeout;
  /** The queue of {@link exclusive}. */
  private turns: Promise<unknown> = Promise.resolve();
  /** Transactional runs open or waiting for their turn. */
  private openTransactions = 0;
  /** The isolation level of a transaction that sets none, once read (see `isolationToSet`). */
  private defaultIsolation?: Promise<string | undefined>;
  /** SQLite: transactional runs and the store's statements take turns on the one connection. */
  private readonly transactionsTakeTurns: boolean;
  /**
   * SQLite: the leases renewed while a transactional run was open, by key and owner. A renewal
   * then runs inside that run's transaction (the one connection), and is restored if it rolls
   * back (see {@link restoreRenewals}).
   */
  private readonly renewedInTransaction = new Map<string, Renewal>();
  /** SQLite: how many transactional runs rolled back, for a renewal under way across one. */
  private rollbacks = 0;
  private purging?: Promise<number>;
  /**
   * PostgreSQL: the driver's pool, on which the statements outside a transaction run directly (a
   * TypeORM query runner per statement costs more client CPU than the statement); `null` for the
   * other drivers. Read once the DataSource is initialized.
   */
  private pool?: PgPool | null;
  private readonly preparedStatements: boolean;
  /** The prepared statement name of each statement text. */
  private readonly statementNames = new Map<string, string>();

  constructor(options: TypeOrmIdempotencyStoreOptions) {
    super();
    const table = options.tableName ?? IDEMPOTENCY_RECORDS_TABLE;
    if (!/^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$/.test(table)) {
      throw new Error(
        `nestjs-idempotency: tableName must be a plain SQL identifier (optionally schema.table); got ${JSON.stringify(table)}.`,
      );
    }
    this.dataSource = options.dataSource;
    this.transactionHost = options.transactionHost;
    this.dialect = dialectOf(String(options.dataSource.options.type));
    this.transactionsTakeTurns = this.dialect.singleConnection;
    const d = this.dialect;
    const owned = `storage_key = :key AND state = 'in_flight' AND owner_token = :owner AND lease_expires_at > ${d.now}`;
    this.completionTemplate = `UPDATE ${table} SET state = 'completed', owner_token = NULL,
        lease_expires_at = NULL, response_status = :status, response_headers = :headers,
        response_body = :body, response_error = :error, expires_at = ${d.now} + :ttl WHERE ${owned}`;
    this.sql = {
      claim: { text: d.claim(table), names: [] },
      select: this
        .compile(`SELECT state, fingerprint, owner_token, lease_expires_at - ${d.now} AS lease_remaining_ms,
        response_status, response_headers, response_body, response_error
        FROM ${table} WHERE storage_key = :key AND expires_at > ${d.now}`),
      complete: this.compile(this.completionTemplate),
      release: this.compile(`DELETE FROM ${table} WHERE ${owned}`),
      // SQLite answers the new expiry, to restore it after a rollback that undid it.
      renew: this
        .compile(`UPDATE ${table} SET lease_expires_at = ${d.now} + :lease, expires_at = ${d.now} + :lease
        WHERE ${owned}${this.transactionsTakeTurns ? ' RETURNING lease_expires_at' : ''}`),
      // Never revives a lapsed lease, nor shortens one renewed since.
      restore: this.compile(`UPDATE ${table} SET lease_expires_at = :expiry, expires_at = :expiry
        WHERE storage_key = :key AND state = 'in_flight' AND owner_token = :owner
        AND lease_expires_at < :expiry AND :expiry > ${d.now}`),
      purge: { text: d.purge(table), names: [] },
    };
    this.takeover = d.takeover?.(table);
    this.purgeBatchSize = options.purgeBatchSize ?? 1_000;
    this.preparedStatements = options.preparedStatements ?? true;
    const interval = options.purgeIntervalMs ?? 60_000;
    if (interval > 0) {
      this.purgeTimer = setInterval(() => {
        this.purgeExpired().catch((error: unknown) =>
          this.logger.error(`Purging expired idempotency records failed: ${String(error)}`),
        );
      }, interval);
      this.purgeTimer.unref();
    }
  }

  async claim({ key, fingerprint, ownerToken, leaseMs }: ClaimOptions): Promise<ClaimResult> {
    const lease = Math.ceil(leaseMs);
    const claimParams = this.dialect.claimReturnsRecord
      ? [key, fingerprint, ownerToken, lease]
      : [key, fingerprint, ownerToken, lease, lease];
    if (this.transactionsTakeTurns && this.openTransactions > 0) {
      // A key held under a live lease is answered without waiting for the turn of a transactional
      // run: the claim would write nothing anyway. A read outside the turn may see that run's
      // uncommitted work, so only this answer, which never depends on it, is taken from it.
      const [held] = await this.withRetry(
        (runner) => runner.query(...this.bind(this.sql.select, { key })) as Promise<RecordRow[]>,
        false,
      );
      if (held?.state === 'in_flight' && Number(held.lease_remaining_ms) > 0) {
        return this.toResult(held);
      }
    }
    for (let attempt = 1; ; attempt++) {
      const rows = await this.run<RecordRow[] | { storage_key: string }[]>(
        this.sql.claim.text,
        claimParams,
      );
      let row: RecordRow | undefined;
      if (this.dialect.claimReturnsRecord) {
        row = (rows as RecordRow[])[0];
        if (this.takeover && row && row.state !== 'acquired' && Number(row.remaining_ms) <= 0) {
          // Expired (or its lease lapsed): take it over, unless another claimer just did.
          if ((await this.affected(this.takeover, claimParams)) > 0) {
            return { outcome: 'acquired' };
          }
          row = undefined;
        }
      } else if (this.dialect.claimReturnsAcquired && Array.isArray(rows) && rows.length > 0) {
        return { outcome: 'acquired' };
      } else {
        row = (await this.run<RecordRow[]>(...this.bind(this.sql.select, { key })))[0];
        if (row?.state === 'in_flight' && row.owner_token === ownerToken) {
          return { outcome: 'acquired' };
        }
      }
      if (row?.state === 'acquired') {
        return { outcome: 'acquired' };
      }
      if (row) {
        return this.toResult(row);
      }
      // The record vanished between the upsert and the read (released, or not yet visible to
      // this snapshot), or another claimer took an expired one over first: claim again.
      if (attempt >= MAX_ATTEMPTS) {
        throw new Error('nestjs-idempotency: the claim did not settle after several attempts.');
      }
    }
  }

  async complete(options: CompleteOptions): Promise<boolean> {
    return (await this.affected(...this.completion(options))) > 0;
  }

  /**
   * Transactional mode: runs `work` in a transaction on a connection of its own, with
   * {@link transactionalEntityManager} answering that transaction's EntityManager meanwhile, and
   * completes the record in it (`transaction.complete`, fenced) before COMMIT. The claim and the
   * renewals run on other connections and commit on their own; the record's row is locked only
   * by that last statement. On PostgreSQL the completion and COMMIT travel as one query, so the
   * transaction costs one round trip more than a plain run (its START TRANSACTION), not two.
   *
   * It holds one connection of the pool for as long as the handler runs. On SQLite, whose TypeORM
   * driver has one connection, transactional runs take turns with the store's other statements.
   */
  override async transaction<T>(
    options: StoreTransactionOptions,
    work: (transaction: IdempotencyStoreTransaction) => Promise<T>,
  ): Promise<T> {
    const isolationLevel = this.dialect.isolation ? options.isolationLevel : undefined;
    this.openTransactions++;
    try {
      return await this.openTransaction(isolationLevel, work);
    } finally {
      this.openTransactions--;
    }
  }

  private openTransaction<T>(
    isolationLevel: StoreTransactionOptions['isolationLevel'] | undefined,
    work: (transaction: IdempotencyStoreTransaction) => Promise<T>,
  ): Promise<T> {
    const host = this.transactionHost;
    if (host) {
      return this.exclusive(() =>
        host
          .withTransaction({ isolationLevel }, () => this.runIn(host.tx, work))
          .then(
            (result) => this.renewalsKept(result),
            (error: unknown) => this.restoreRenewals().then(() => Promise.reject(error)),
          ),
      );
    }
    return this.exclusive(async () => {
      const runner = this.dataSource.createQueryRunner();
      try {
        const connection = (await runner.connect()) as Partial<LiteralEscaper> | undefined;
        await runner.startTransaction(await this.isolationToSet(runner, isolationLevel));
        let result: T;
        try {
          result = await this.runIn(
            runner.manager,
            work,
            this.dialect.completeAndCommit && typeof connection?.escapeLiteral === 'function'
              ? (completion) =>
                  this.completeAndCommit(runner, connection as LiteralEscaper, completion)
              : undefined,
          );
        } catch (error) {
          // A runner TypeORM released for a lost connection has nothing to roll back: the server
          // ends the transaction with the connection.
          if (runner.isTransactionActive && !runner.isReleased) {
            await runner.rollbackTransaction().catch((rollback: unknown) => {
              this.logger.error(`Rolling back a transactional run failed: ${String(rollback)}`);
            });
          }
          throw error;
        }
        // Already committed when the completion took COMMIT with it.
        if (runner.isTransactionActive) {
          try {
            await runner.commitTransaction();
          } catch (error) {
            // A COMMIT the database refused (SQLite keeps the transaction open after a deferred
            // constraint failed) must not leave it open on the connection.
            if (runner.isTransactionActive && !runner.isReleased) {
              await runner.rollbackTransaction().catch(() => undefined);
            }
            throw error;
          }
        }
        return this.renewalsKept(result);
      } catch (error) {
        await this.restoreRenewals();
        throw error;
      } finally {
        await runner.release();
      }
    });
  }

  /** SQLite: a transactional run committed, and the renewals made meanwhile with it. */
  private renewalsKept<T>(result: T): T {
    this.renewedInTransaction.clear();
    return result;
  }

  /**
   * SQLite, after a transactional run rolled back (or never began): the renewals that ran inside
   * its transaction (of its own lease, and of any other run's) were undone with it, so a lease
   * renewed in time would look lapsed, and its holder's completion or release be refused. Each is
   * restored to the expiry it had set, unless that has passed (a lapsed lease stays lapsed) or the
   * record changed hands. Runs in the rolled-back run's turn, so no other transaction is open.
   */
  private async restoreRenewals(): Promise<void> {
    if (!this.transactionsTakeTurns) {
      return;
    }
    this.rollbacks++;
    const renewals = [...this.renewedInTransaction.values()];
    this.renewedInTransaction.clear();
    for (const renewal of renewals) {
      await this.restore(renewal).catch((error: unknown) =>
        this.logger.error(`Restoring a lease after a rollback failed: ${String(error)}`),
      );
    }
  }

  private async restore({ key, ownerToken, expiresAt }: Renewal): Promise<void> {
    const [sql, params] = this.bind(this.sql.restore, {
      key,
      owner: ownerToken,
      expiry: expiresAt,
    });
    await this.withRetry((runner) => runner.query(sql, params), false);
  }

  /**
   * The isolation level to pass to `startTransaction`: none when the database would give the
   * requested one anyway (PostgreSQL's default is READ COMMITTED), which saves TypeORM's separate
   * `SET TRANSACTION` round trip. The database's default is read once, on the first transactional
   * run (every connection of the pool has the same settings).
   */
  private async isolationToSet(
    runner: QueryRunner,
    requested: StoreTransactionOptions['isolationLevel'] | undefined,
  ): Promise<StoreTransactionOptions['isolationLevel'] | undefined> {
    const query = this.dialect.defaultIsolationQuery;
    if (!requested || !query || this.dataSource.options.isolationLevel !== undefined) {
      return requested;
    }
    this.defaultIsolation ??= runner.query(query).then(
      (rows: Record<string, unknown>[]) =>
        String(Object.values(rows[0] ?? {})[0] ?? '')
          .replace(/-/g, ' ')
          .toUpperCase(),
      () => {
        // Unknown this time (the connection failed?): set the level, and read it again next time.
        this.defaultIsolation = undefined;
        return undefined;
      },
    );
    return (await this.defaultIsolation) === requested ? undefined : requested;
  }

  /**
   * Runs `work` with `manager` as the transaction of `transactionalEntityManager()`; the
   * completion commits too when `completeAndCommit` is given and the transaction is still at its
   * outermost level.
   */
  private runIn<T>(
    manager: EntityManager,
    work: (transaction: IdempotencyStoreTransaction) => Promise<T>,
    completeAndCommit?: (completion: CompleteOptions) => Promise<boolean>,
  ): Promise<T> {
    const runner = manager.queryRunner;
    if (!runner?.isTransactionActive) {
      throw new Error(
        'nestjs-idempotency: the transactional run has no open transaction on its EntityManager (is transactionHost the TransactionHost of this DataSource?).',
      );
    }
    return transactionStorage.run(manager, () =>
      work({
        complete: async (completion) => {
          if (completeAndCommit && (runner as unknown as TransactionState).transactionDepth === 1) {
            return completeAndCommit(completion);
          }
          const result = (await runner.query(...this.completion(completion), true)) as {
            affected?: number;
          };
          return Number(result.affected ?? 0) > 0;
        },
      }),
    );
  }

  /**
   * The fenced completion and COMMIT in one query (PostgreSQL's simple query protocol, which takes
   * no parameters: the values are inlined as literals by the driver's own escaping). When the
   * completion matches no row the server raises, skips the COMMIT and leaves the transaction to
   * be rolled back; `false` then, as for a plain completion. TypeORM's transaction events fire as
   * `commitTransaction()` fires them, and the query runner is left as it leaves it.
   */
  private async completeAndCommit(
    runner: QueryRunner,
    connection: LiteralEscaper,
    completion: CompleteOptions,
  ): Promise<boolean> {
    const [, values] = this.completion(completion);
    const names = this.sql.complete.names;
    const literal = (value: unknown): string => {
      if (typeof value === 'string') {
        return connection.escapeLiteral(value);
      }
      if (typeof value === 'boolean') {
        return value ? 'TRUE' : 'FALSE';
      }
      if (Number.isSafeInteger(value)) {
        return String(value);
      }
      throw new Error(`nestjs-idempotency: cannot inline ${String(value)} in the completion.`);
    };
    const sql = this.completionTemplate.replace(/(?<!:):([a-z]+)\b/g, (_match, name: string) =>
      literal(values[names.indexOf(name)]),
    );
    await runner.broadcaster.broadcast('BeforeTransactionCommit');
    try {
      await runner.query(this.dialect.completeAndCommit!(sql));
    } catch (error) {
      if (
        (error as { driverError?: { code?: string } }).driverError?.code === LEASE_LOST_SQLSTATE
      ) {
        return false;
      }
      throw error;
    }
    const state = runner as unknown as TransactionState;
    state.isTransactionActive = false;
    state.transactionDepth = 0;
    await runner.broadcaster.broadcast('AfterTransactionCommit');
    return true;
  }

  async release({ key, ownerToken }: ReleaseOptions): Promise<boolean> {
    return this.changed(this.sql.release, { key, owner: ownerToken });
  }

  async renew({ key, ownerToken, leaseMs }: RenewOptions): Promise<boolean> {
    const [sql, params] = this.bind(this.sql.renew, {
      key,
      owner: ownerToken,
      lease: Math.ceil(leaseMs),
    });
    if (!this.transactionsTakeTurns) {
      return (await this.affected(sql, params, false)) > 0;
    }
    // Not in turn on SQLite: a renewal must not wait for a transactional run to end (its own lease
    // would lapse meanwhile), so it joins that run's transaction. Committed, it extends the lease;
    // rolled back, it is restored (restoreRenewals), by this call when the rollback came while it
    // was under way (a restore may join the next transaction, hence the loop).
    let rollbacks = this.rollbacks;
    const [row] = (await this.withRetry((runner) => runner.query(sql, params), false)) as {
      lease_expires_at: number | string;
    }[];
    if (!row) {
      return false;
    }
    const renewal: Renewal = { key, ownerToken, expiresAt: Number(row.lease_expires_at) };
    while (rollbacks !== this.rollbacks) {
      rollbacks = this.rollbacks;
      await this.restore(renewal);
    }
    if (this.openTransactions > 0) {
      this.renewedInTransaction.set(`${key}:${ownerToken}`, renewal);
    }
    return true;
  }

  /**
   * Deletes expired records in batches of `purgeBatchSize` and answers how many it removed. Safe
   * to run from several instances at once (PostgreSQL skips rows another purge holds).
   */
  override async purgeExpired(): Promise<number> {
    this.purging ??= this.purgeBatches().finally(() => {
      this.purging = undefined;
    });
    return this.purging;
  }

  /** Stops the purge timer. The DataSource belongs to the application and stays open. */
  onModuleDestroy(): void {
    clearInterval(this.purgeTimer);
    this.purgeTimer = undefined;
  }

  private async purgeBatches(): Promise<number> {
    let total = 0;
    for (;;) {
      const deleted = await this.affected(this.sql.purge.text, [this.purgeBatchSize]);
      total += deleted;
      if (deleted < this.purgeBatchSize) {
        return total;
      }
    }
  }

  private toResult(row: RecordRow): ClaimResult {
    if (row.state === 'completed') {
      return {
        outcome: 'completed',
        fingerprint: row.fingerprint,
        response: {
          status: Number(row.response_status),
          headers: JSON.parse(row.response_headers ?? '{}') as Record<string, string | string[]>,
          body: row.response_body ?? '',
          ...(row.response_error ? { error: true } : {}),
        },
      };
    }
    return {
      outcome: 'in_flight',
      fingerprint: row.fingerprint,
      leaseRemainingMs: Math.max(0, Number(row.lease_remaining_ms)),
    };
  }

  /** The fenced completion statement and its parameters. */
  private completion({ key, ownerToken, response, ttlMs }: CompleteOptions): [string, unknown[]] {
    return this.bind(this.sql.complete, {
      key,
      owner: ownerToken,
      status: response.status,
      headers: JSON.stringify(response.headers),
      body: response.body,
      error: this.dialect.bool(response.error === true),
      ttl: Math.ceil(ttlMs),
    });
  }

  /**
   * On SQLite, whose TypeORM driver runs every query on one connection, a statement issued while a
   * transactional run is open would join that transaction (and be rolled back with it): the
   * store's statements and transactional runs take turns. Statements issued from inside a
   * transactional run join it, as they must (waiting would deadlock). Elsewhere this is a no-op.
   */
  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    if (!this.transactionsTakeTurns || transactionStorage.getStore()) {
      return work();
    }
    const turn = this.turns.then(work, work);
    this.turns = turn.catch(() => undefined);
    return turn;
  }

  private async changed(statement: Statement, values: Record<string, unknown>): Promise<boolean> {
    return (await this.affected(...this.bind(statement, values))) > 0;
  }

  /** Turns `:name` parameters into the dialect's placeholders (`$1` or `?`), once per statement. */
  private compile(sql: string): Statement {
    const names: string[] = [];
    const text = sql.replace(/(?<!:):([a-z]+)\b/g, (_match, name: string) => {
      if (this.dialect.param(1) === '?') {
        names.push(name);
        return '?';
      }
      let index = names.indexOf(name);
      if (index < 0) {
        index = names.push(name) - 1;
      }
      return this.dialect.param(index + 1);
    });
    return { text, names };
  }

  private bind(statement: Statement, values: Record<string, unknown>): [string, unknown[]] {
    return [statement.text, statement.names.map((name) => values[name])];
  }

  private async affected(sql: string, params: unknown[], inTurn = true): Promise<number> {
    const pool = this.pgPool();
    if (pool) {
      return (await this.pgQuery(pool, sql, params)).rowCount ?? 0;
    }
    const result = await this.withRetry((runner) => runner.query(sql, params, true), inTurn);
    return Number((result as { affected?: number }).affected ?? 0);
  }

  private async run<T>(sql: string, params: unknown[]): Promise<T> {
    const pool = this.pgPool();
    if (pool) {
      return (await this.pgQuery(pool, sql, params)).rows as T;
    }
    return this.withRetry((runner) => runner.query(sql, params)) as Promise<T>;
  }

  /** The PostgreSQL driver's pool, once the DataSource is initialized; `undefined` elsewhere. */
  private pgPool(): PgPool | undefined {
    if (this.pool === undefined && this.dataSource.isInitialized) {
      const master = (this.dataSource.driver as { master?: Partial<PgPool> }).master;
      this.pool =
        this.dialect.directPool &&
        typeof master?.query === 'function' &&
        typeof master.connect === 'function'
          ? (master as PgPool)
          : null;
    }
    return this.pool ?? undefined;
  }

  /**
   * One statement on the pool, logged through the DataSource's logger as TypeORM logs its own,
   * retried on a deadlock or serialization failure.
   */
  private async pgQuery(pool: PgPool, text: string, values: unknown[]) {
    let name: string | undefined;
    if (this.preparedStatements) {
      name = this.statementNames.get(text);
      if (name === undefined) {
        name = `nestjs_idempotency_${createHash('sha256').update(text).digest('hex').slice(0, 16)}`;
        this.statementNames.set(text, name);
      }
    }
    const logger = this.dataSource.logger;
    for (let attempt = 1; ; attempt++) {
      logger.logQuery(text, values);
      try {
        return await pool.query({ name, text, values });
      } catch (error) {
        logger.logQueryError(error as Error, text, values);
        if (!triesAgain((error as { code?: unknown }).code, attempt)) {
          throw error;
        }
      }
    }
  }

  private async withRetry<T>(work: (runner: QueryRunner) => Promise<T>, inTurn = true): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const runner = this.dataSource.createQueryRunner();
      try {
        return await (inTurn ? this.exclusive(() => work(runner)) : work(runner));
      } catch (error) {
        if (
          !triesAgain((error as { driverError?: { code?: unknown } }).driverError?.code, attempt)
        ) {
          throw error;
        }
      } finally {
        await runner.release();
      }
    }
  }
}
