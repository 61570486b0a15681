/** The driver's error code of a failed query (TypeORM wraps it in `driverError`). */
function codeOf(error: unknown): string | undefined {
  const driverError = (error as { driverError?: { code?: unknown } })?.driverError;
  const code = driverError?.code ?? (error as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A unique or primary key violation, on PostgreSQL, MySQL/MariaDB or SQLite. */
export function isUniqueViolation(error: unknown): boolean {
  const code = codeOf(error);
  return (
    code === '23505' ||
    code === 'ER_DUP_ENTRY' ||
    code === 'SQLITE_CONSTRAINT_UNIQUE' ||
    code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
  );
}

/** A foreign key violation (a missing parent, or a parent that still has children). */
export function isForeignKeyViolation(error: unknown): boolean {
  const code = codeOf(error);
  return (
    code === '23503' ||
    code === 'ER_NO_REFERENCED_ROW_2' ||
    code === 'ER_ROW_IS_REFERENCED_2' ||
    code === 'SQLITE_CONSTRAINT_FOREIGNKEY' ||
    // SQLite reports a foreign key checked at the end of a statement under this code.
    (code === 'SQLITE_CONSTRAINT_TRIGGER' &&
      /FOREIGN KEY constraint failed/.test(String((error as Error).message)))
  );
}

/**
 * The database refused a value of the request itself: too long for its column as the database
 * counts characters, a number out of the column's range, or a character it cannot store (U+0000
 * on PostgreSQL). SQLSTATE class 22 (data exception) on PostgreSQL, the matching MySQL errors.
 */
export function isUnstorableValue(error: unknown): boolean {
  const code = codeOf(error);
  return (
    (code !== undefined && /^22[0-9A-Z]{3}$/.test(code)) ||
    code === 'ER_DATA_TOO_LONG' ||
    code === 'ER_WARN_DATA_OUT_OF_RANGE' ||
    code === 'ER_TRUNCATED_WRONG_VALUE_FOR_FIELD' ||
    code === 'ER_TRUNCATED_WRONG_VALUE'
  );
}

const CONNECTION_CODES = new Set([
  '57P01', // admin_shutdown (pg_terminate_backend)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  'ECONNRESET',
  'ECONNREFUSED',
  'ETIMEDOUT',
  'EPIPE',
  'PROTOCOL_CONNECTION_LOST',
  'ER_SERVER_SHUTDOWN',
]);

/**
 * The database connection was lost or refused (a restart, a failover, `pg_terminate_backend`): the
 * request did not happen and may be retried, so it is a 503, not a 500.
 */
export function isConnectionLost(error: unknown): boolean {
  const code = codeOf(error);
  if (code !== undefined && (CONNECTION_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) {
    return true;
  }
  // In transactional mode the handler queries on the request's own query runner, which TypeORM
  // releases when its connection breaks: later queries on it fail with this error.
  if ((error as Error)?.name === 'QueryRunnerAlreadyReleasedError') {
    return true;
  }
  const message = String((error as Error)?.message ?? '');
  return /Connection terminated|connection is closed|Can't add new command when connection is in closed state|has encountered a connection error and is not queryable/i.test(
    message,
  );
}

/** A deadlock or serialization failure: running the same statement again resolves it. */
export function isTransientConflict(error: unknown): boolean {
  const code = codeOf(error);
  return (
    code === '40P01' ||
    code === '40001' ||
    code === 'ER_LOCK_DEADLOCK' ||
    code === 'SQLITE_BUSY' ||
    code === 'SQLITE_BUSY_SNAPSHOT'
  );
}

/**
 * Runs `work`, again when it fails on a deadlock or serialization failure (InnoDB deadlocks
 * between a payment's insert, whose foreign key check locks the order, and another's settlement).
 * `work` must be safe to repeat: a single statement or a transaction.
 */
export async function retryTransient<T>(work: () => Promise<T>, attempts = 5): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await work();
    } catch (error) {
      if (attempt >= attempts || !isTransientConflict(error)) {
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 5 * attempt + Math.random() * 20));
    }
  }
}
