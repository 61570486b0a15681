import { randomBytes } from 'node:crypto';

/**
 * The SQL of the TypeORM store, one set per dialect. Every statement takes the time from the
 * database's clock, so application servers with skewed clocks agree on leases.
 */
export interface IdempotencyDialect {
  /** Placeholder of the n-th (1-based) parameter. */
  param(n: number): string;
  /** Epoch milliseconds, from the database clock. */
  readonly now: string;
  /** Claims in one statement; `returnsRecord` when it also answers a held record (PostgreSQL). */
  claim(table: string): string;
  /**
   * When `claim` leaves an expired record in place (PostgreSQL, whose claim never locks an existing
   * row, so a replay writes nothing): the statement that takes it over, fenced on its expiry.
   */
  takeover?(table: string): string;
  readonly claimReturnsRecord: boolean;
  /** Whether `claim` says by its returned rows that the key was acquired (else: read back). */
  readonly claimReturnsAcquired: boolean;
  purge(table: string): string;
  createTable(table: string): string[];
  dropTable(table: string): string[];
  /** Whether a transaction takes an isolation level (SQLite has only SERIALIZABLE). */
  readonly isolation: boolean;
  /**
   * A query answering the isolation level a new transaction gets when none is set (one row, one
   * column), where setting it costs a round trip of its own: TypeORM sends `SET TRANSACTION
   * ISOLATION LEVEL` after `START TRANSACTION` on PostgreSQL.
   */
  readonly defaultIsolationQuery?: string;
  /** Whether TypeORM runs every query on one connection (SQLite). */
  readonly singleConnection: boolean;
  /**
   * Where the driver takes several statements in one query (PostgreSQL's simple query protocol):
   * `completion` (the fenced UPDATE, values inlined as literals) and `COMMIT` as one query, so
   * the completion costs no round trip of its own. When the UPDATE matches no row it raises
   * {@link LEASE_LOST_SQLSTATE}, which aborts the transaction and skips the `COMMIT`.
   */
  completeAndCommit?(completion: string): string;
  /** Converts a boolean to what the driver stores. */
  bool(value: boolean): boolean | number;
  /**
   * Whether the driver's pool (`driver.master`, node-postgres's `Pool`) runs the statements outside
   * a transaction, rather than a TypeORM query runner per statement.
   */
  readonly directPool?: boolean;
}

const TAKEOVER_COLUMNS =
  'fingerprint, state, owner_token, lease_expires_at, expires_at, created_at, response_status, response_headers, response_body, response_error';

/** What a claim that takes over an expired record sets (PostgreSQL and SQLite upserts). */
const TAKEOVER_SET = `fingerprint = excluded.fingerprint, state = excluded.state,
  owner_token = excluded.owner_token, lease_expires_at = excluded.lease_expires_at,
  expires_at = excluded.expires_at, created_at = excluded.created_at, response_status = NULL,
  response_headers = NULL, response_body = NULL, response_error = NULL`;

/** The table, with the column types that differ by dialect. */
const createTableSql = (
  table: string,
  types: { int: string; headers: string; body: string; bool: string },
  extra: { columns?: string; options?: string } = {},
) => `CREATE TABLE IF NOT EXISTS ${table} (
  storage_key varchar(64) NOT NULL PRIMARY KEY,
  fingerprint varchar(64) NULL,
  state varchar(16) NOT NULL,
  owner_token varchar(64) NULL,
  lease_expires_at bigint NULL,
  response_status ${types.int} NULL,
  response_headers ${types.headers} NULL,
  response_body ${types.body} NULL,
  response_error ${types.bool} NULL,
  expires_at bigint NOT NULL,
  created_at bigint NOT NULL${extra.columns ?? ''})${extra.options ?? ''}`;

/** The SQLSTATE of `completeAndCommit` when the completion matched no row (the lease was lost). */
export const LEASE_LOST_SQLSTATE = 'IDEM0';

const PORTABLE_TYPES = { int: 'integer', headers: 'text', body: 'text', bool: 'boolean' };

const postgres: IdempotencyDialect = {
  param: (n) => `$${n}`,
  now: '(extract(epoch from clock_timestamp()) * 1000)::bigint',
  claimReturnsRecord: true,
  claimReturnsAcquired: true,
  directPool: true,
  isolation: true,
  defaultIsolationQuery: 'SHOW default_transaction_isolation',
  singleConnection: false,
  // The insert takes a new key; on a conflict it does nothing, so a replay locks no row and writes
  // nothing (no transaction id, no WAL flush), and the second branch reads the record in the same
  // round trip with its remaining time. An expired record is taken over by `takeover`, fenced on
  // its expiry. Under a concurrent insert the snapshot may miss the row: the caller claims again.
  claim: (t) => `
    WITH clock AS (SELECT ${postgres.now} AS ms),
    claimed AS (
      INSERT INTO ${t} (storage_key, ${TAKEOVER_COLUMNS})
      SELECT $1, $2, 'in_flight', $3, ms + $4::bigint, ms + $4::bigint, ms, NULL, NULL, NULL, NULL FROM clock
      ON CONFLICT (storage_key) DO NOTHING
      RETURNING storage_key
    )
    SELECT 'acquired'::varchar AS state, NULL::varchar AS fingerprint, NULL::varchar AS owner_token,
      NULL::bigint AS lease_remaining_ms, NULL::integer AS response_status,
      NULL::text AS response_headers, NULL::text AS response_body, NULL::boolean AS response_error,
      NULL::bigint AS remaining_ms
    FROM claimed
    UNION ALL
    SELECT r.state, r.fingerprint, r.owner_token, r.lease_expires_at - (SELECT ms FROM clock),
      r.response_status, r.response_headers, r.response_body, r.response_error,
      r.expires_at - (SELECT ms FROM clock)
    FROM ${t} r
    WHERE r.storage_key = $1 AND NOT EXISTS (SELECT 1 FROM claimed)`,
  takeover: (t) => `
    WITH clock AS (SELECT ${postgres.now} AS ms)
    UPDATE ${t} AS r SET fingerprint = $2, state = 'in_flight', owner_token = $3,
      lease_expires_at = clock.ms + $4::bigint, expires_at = clock.ms + $4::bigint,
      created_at = clock.ms, response_status = NULL, response_headers = NULL,
      response_body = NULL, response_error = NULL
    FROM clock
    WHERE r.storage_key = $1 AND r.expires_at <= clock.ms
    RETURNING r.storage_key`,
  purge: (t) => `
    DELETE FROM ${t} WHERE storage_key IN (
      SELECT storage_key FROM ${t} WHERE expires_at <= ${postgres.now}
      LIMIT $1 FOR UPDATE SKIP LOCKED)`,
  createTable: (t) => [
    createTableSql(t, PORTABLE_TYPES),
    `CREATE INDEX IF NOT EXISTS ${indexName(t)} ON ${t} (expires_at)`,
  ],
  dropTable: (t) => [`DROP TABLE IF EXISTS ${t}`],
  bool: (value) => value,
  // A DO block takes no parameters, hence the literals; its dollar quote gets a random tag that
  // the inlined values do not contain. On an error the server skips the rest of the query string.
  completeAndCommit: (completion) => {
    let tag: string;
    do {
      tag = `$idempotency_${randomBytes(6).toString('hex')}$`;
    } while (completion.includes(tag));
    return `DO ${tag}BEGIN
      ${completion};
      IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = '${LEASE_LOST_SQLSTATE}',
          MESSAGE = 'nestjs-idempotency: the lease was lost before COMMIT; rolling back';
      END IF;
    END${tag}; COMMIT`;
  },
};

const MYSQL_NOW = 'CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)';
/** `ON DUPLICATE KEY UPDATE` assigns left to right, so `expires_at`, the condition, comes last. */
const mysqlTakeover = (column: string, value: string) =>
  `${column} = IF(expires_at <= ${MYSQL_NOW}, ${value}, ${column})`;

const mysql: IdempotencyDialect = {
  param: () => '?',
  now: MYSQL_NOW,
  claimReturnsRecord: false,
  claimReturnsAcquired: false,
  isolation: true,
  singleConnection: false,
  claim: (t) => `
    INSERT INTO ${t} (storage_key, ${TAKEOVER_COLUMNS})
    VALUES (?, ?, 'in_flight', ?, ${MYSQL_NOW} + ?, ${MYSQL_NOW} + ?, ${MYSQL_NOW}, NULL, NULL, NULL, NULL)
    ON DUPLICATE KEY UPDATE
      ${[
        'fingerprint',
        'state',
        'owner_token',
        'lease_expires_at',
        'created_at',
        'response_status',
        'response_headers',
        'response_body',
        'response_error',
        'expires_at',
      ]
        .map((column) => mysqlTakeover(column, `VALUES(${column})`))
        .join(',\n      ')}`,
  purge: (t) => `DELETE FROM ${t} WHERE expires_at <= ${MYSQL_NOW} LIMIT ?`,
  createTable: (t) => [
    createTableSql(
      t,
      { int: 'int', headers: 'mediumtext', body: 'longtext', bool: 'tinyint(1)' },
      {
        columns: `,\n  INDEX ${indexName(t)} (expires_at)`,
        options: ' ENGINE=InnoDB DEFAULT CHARSET=utf8mb4',
      },
    ),
  ],
  dropTable: (t) => [`DROP TABLE IF EXISTS ${t}`],
  bool: (value) => (value ? 1 : 0),
};

const SQLITE_NOW = "CAST(unixepoch('subsec') * 1000 AS INTEGER)";

const sqlite: IdempotencyDialect = {
  param: () => '?',
  now: SQLITE_NOW,
  claimReturnsRecord: false,
  claimReturnsAcquired: true,
  isolation: false,
  singleConnection: true,
  claim: (t) => `
    INSERT INTO ${t} (storage_key, ${TAKEOVER_COLUMNS})
    VALUES (?, ?, 'in_flight', ?, ${SQLITE_NOW} + ?, ${SQLITE_NOW} + ?, ${SQLITE_NOW}, NULL, NULL, NULL, NULL)
    ON CONFLICT (storage_key) DO UPDATE SET ${TAKEOVER_SET}
    WHERE ${t}.expires_at <= ${SQLITE_NOW}
    RETURNING storage_key`,
  purge: (t) => `
    DELETE FROM ${t} WHERE storage_key IN (
      SELECT storage_key FROM ${t} WHERE expires_at <= ${SQLITE_NOW} LIMIT ?)`,
  createTable: (t) => [
    createTableSql(t, PORTABLE_TYPES),
    `CREATE INDEX IF NOT EXISTS ${indexName(t)} ON ${t} (expires_at)`,
  ],
  dropTable: (t) => [`DROP TABLE IF EXISTS ${t}`],
  bool: (value) => (value ? 1 : 0),
};

function indexName(table: string): string {
  return `${table.replace(/\W/g, '_')}_expires_at`;
}

/** The dialect of a TypeORM driver type; throws, naming the supported ones, for any other. */
export function dialectOf(type: string): IdempotencyDialect {
  switch (type) {
    case 'postgres':
      return postgres;
    case 'mysql':
    case 'mariadb':
      return mysql;
    case 'better-sqlite3':
      return sqlite;
    default:
      throw new Error(
        `nestjs-idempotency: TypeOrmIdempotencyStore supports the postgres, mysql, mariadb and better-sqlite3 drivers; this DataSource uses "${type}".`,
      );
  }
}
