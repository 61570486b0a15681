/**
 * The part of `pg` the benchmark uses. The driver is installed (TypeORM uses it) but its types
 * (@types/pg) are not, and the benchmark is not worth a new dev dependency.
 */
declare module 'pg' {
  interface QueryResult<R> {
    rows: R[];
  }
  interface Queryable {
    query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
  }
  export class Pool implements Queryable {
    constructor(config: { connectionString: string; max?: number; idleTimeoutMillis?: number });
    query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
    /** A named (prepared) statement. */
    query<R = Record<string, unknown>>(config: {
      name: string;
      text: string;
      values: unknown[];
    }): Promise<QueryResult<R>>;
    end(): Promise<void>;
  }
  export class Client implements Queryable {
    constructor(config: { connectionString: string });
    connect(): Promise<void>;
    query<R = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<R>>;
    end(): Promise<void>;
  }
}
