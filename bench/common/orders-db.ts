import { Pool } from 'pg';

/** What the benchmark handler writes and answers: one small row, a Date included. */
export interface BenchOrder {
  id: string;
  customerId: string;
  amount: number;
  currency: string;
  status: 'created';
  createdAt: Date;
}

/** The creation time every echo answer carries (the references of `bench:cpu`). */
const ECHO_CREATED_AT = new Date('2026-12-06T00:00:00.000Z').getTime();

/**
 * What the echo apps of `bench:cpu` answer for a request body: the order a replay answers (a
 * `Date` in it), built without any database.
 */
export function echoOrder(body: {
  customerId?: unknown;
  amount?: unknown;
  currency?: unknown;
}): BenchOrder {
  return {
    id: '1',
    customerId: String(body.customerId ?? 'anonymous'),
    amount: Number(body.amount ?? 0),
    currency: String(body.currency ?? 'EUR'),
    status: 'created',
    createdAt: new Date(ECHO_CREATED_AT),
  };
}

/** What the handler's INSERT ... RETURNING answers. */
type InsertedRow = { id: string; created_at: Date };

/** The table the handler writes to, in the benchmark's own database. */
export const ORDERS_TABLE = 'bench_orders';

export const CREATE_ORDERS_TABLE = `CREATE TABLE IF NOT EXISTS ${ORDERS_TABLE} (
  id bigserial PRIMARY KEY,
  customer_id varchar(64) NOT NULL,
  amount integer NOT NULL,
  currency char(3) NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now())`;

/**
 * The handler's one database write, shared by the app under test and the peer's app so that
 * both run the same work: one INSERT ... RETURNING on PostgreSQL through a small pool.
 */
export class OrdersDb {
  private readonly pool: Pool;

  constructor(url: string) {
    // Small, and idle connections close after a second: a dozen servers share the machine's
    // PostgreSQL with other users, and a closing connection reports its statistics at once.
    this.pool = new Pool({ connectionString: url, max: 4, idleTimeoutMillis: 1_000 });
  }

  /** `query`: where the INSERT runs (by default the pool; a transaction's manager in the app). */
  async create(
    input: { customerId?: unknown; amount?: unknown; currency?: unknown },
    query?: (sql: string, params: unknown[]) => Promise<InsertedRow[]>,
  ): Promise<BenchOrder> {
    const customerId = String(input.customerId ?? 'anonymous');
    const amount = Number(input.amount ?? 0);
    const currency = String(input.currency ?? 'EUR');
    const sql = `INSERT INTO ${ORDERS_TABLE} (customer_id, amount, currency) VALUES ($1, $2, $3) RETURNING id, created_at`;
    const params = [customerId, amount, currency];
    const rows = query
      ? await query(sql, params)
      : (await this.pool.query<InsertedRow>(sql, params)).rows;
    return {
      id: rows[0].id,
      customerId,
      amount,
      currency,
      status: 'created',
      createdAt: rows[0].created_at,
    };
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}
