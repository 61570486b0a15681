import { readFileSync } from 'node:fs';
import { CreateIdempotencyRecordsTable1763800000000 } from 'nestjs-idempotency/typeorm';
import { DataSource, type QueryRunner } from 'typeorm';
import { createTemporaryDatabase, type TemporaryDatabase } from '../utils/databases';
import { type Child, eventually, spawnChild } from '../utils/processes';

/**
 * What the queue suites share: a temporary PostgreSQL database holding the idempotency records and
 * the effect (`shipments`), and the consumer processes (the fixtures under test/queues/), whose
 * JSON lines say what each delivery did.
 */

/** One line a fixture printed (../fixtures/shipments.ts `report()`). */
export interface FixtureEvent {
  /** `ready`, `done` (ran or replayed, then acknowledged), `in-progress` (put back), `fault`, `failed`, `worker-error`. */
  event: string;
  worker: string;
  /** The job id, message id or stream sequence the line is about. */
  delivery?: string;
  replayed?: boolean;
  shipmentId?: string;
  /** The process that wrote the shipment a run returned (another one's, on a replay). */
  shippedBy?: string;
  [field: string]: unknown;
}

/** A row of the effect table. */
export interface ShipmentRow {
  id: string;
  order_id: string;
  worker: string;
  delivery: string;
}

/** The suite's database: the records, the effect, and a lock that holds the effect's INSERT. */
export class ShipmentsDatabase {
  private lockRunner?: QueryRunner;

  private constructor(
    private readonly database: TemporaryDatabase,
    readonly sql: DataSource,
  ) {}

  get url(): string {
    return this.database.url;
  }

  /** A new database `queues_<random>`, migrated, with an empty `shipments` table. */
  static async create(): Promise<ShipmentsDatabase> {
    const database = await createTemporaryDatabase('postgres', 'queues');
    const sql = await new DataSource({
      type: 'postgres',
      url: database.url,
      extra: { max: 3 },
      migrations: [CreateIdempotencyRecordsTable1763800000000],
    }).initialize();
    await sql.runMigrations();
    await sql.query(`CREATE TABLE shipments (
      id uuid PRIMARY KEY, order_id text NOT NULL, worker text NOT NULL, delivery text NOT NULL)`);
    return new ShipmentsDatabase(database, sql);
  }

  /** Committed shipments of one order: the effect, which must end at exactly one. */
  shipments(orderId: string): Promise<ShipmentRow[]> {
    return this.sql.query('SELECT * FROM shipments WHERE order_id = $1', [orderId]);
  }

  /** Blocks every INSERT into `shipments` (reads pass) until {@link unlock}: a run held mid-work. */
  async lock(): Promise<void> {
    this.lockRunner = this.sql.createQueryRunner();
    await this.lockRunner.connect();
    await this.lockRunner.startTransaction();
    await this.lockRunner.query('LOCK TABLE shipments IN SHARE MODE');
  }

  async unlock(): Promise<void> {
    const runner = this.lockRunner;
    this.lockRunner = undefined;
    await runner?.commitTransaction();
    await runner?.release();
  }

  /** Resolves once some session waits on the lock: a run's INSERT is held. */
  async insertHeld(): Promise<void> {
    await eventually('an INSERT waiting on the lock of shipments', async () => {
      const [{ n }] = await this.sql.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'`,
      );
      return n > 0;
    });
  }

  /** Sessions holding a transaction that wrote and waits (a frozen holder before COMMIT). */
  async openTransactions(): Promise<number> {
    const [{ n }] = await this.sql.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity
       WHERE datname = current_database() AND state = 'idle in transaction'`,
    );
    return n;
  }

  async drop(): Promise<void> {
    await this.unlock();
    await this.sql.destroy();
    await this.database.drop();
  }
}

/** Whether the process is stopped (SIGSTOP): its state in /proc is `T`. */
export function isStopped(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T');
  } catch {
    return false;
  }
}

/** A consumer process of a suite: one fixture, with the JSON lines it printed. */
export class Consumer {
  constructor(readonly child: Child) {}

  get name(): string {
    return this.child.name;
  }

  /** Every line the fixture printed, in order. */
  get events(): FixtureEvent[] {
    return this.child.stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as FixtureEvent);
  }

  /** Resolves with the first event `matches` accepts, once it is printed. */
  async waitFor(what: string, matches: (event: FixtureEvent) => boolean): Promise<FixtureEvent> {
    let found: FixtureEvent | undefined;
    await eventually(
      `${this.name}: ${what}`,
      async () => {
        found = this.events.find(matches);
        if (!found && !this.child.running) {
          throw new Error(`${this.name} exited before ${what}${this.child.tail()}`);
        }
        return found !== undefined;
      },
      20_000,
      50,
    );
    return found!;
  }
}

/** Options of {@link ConsumerPool}. */
export interface ConsumerPoolOptions {
  /** The suite, for process names (`bullmq-1`, `bullmq-2`...). */
  name: string;
  /** The fixture's path from the repository root. */
  script: string;
  /** The fixture's environment (WORKER is set per process). */
  env: NodeJS.ProcessEnv;
}

/**
 * Competing consumer processes of one fixture, started as `npm start` starts the sample
 * (`node -r ts-node/register/transpile-only -r tsconfig-paths/register <script>`). A process a
 * scenario killed is replaced by {@link ensure}.
 */
export class ConsumerPool {
  private readonly running: Consumer[] = [];
  private started = 0;

  constructor(private readonly options: ConsumerPoolOptions) {}

  /** Every consumer started so far that is still running. */
  get consumers(): Consumer[] {
    return this.running.filter((consumer) => consumer.child.running);
  }

  /** Starts consumers until `count` run, and waits until each is ready. */
  async ensure(count: number): Promise<Consumer[]> {
    const starting: Consumer[] = [];
    while (this.consumers.length + starting.length < count) {
      this.started += 1;
      const name = `${this.options.name}-${this.started}`;
      const child = spawnChild(
        name,
        process.execPath,
        [
          '-r',
          'ts-node/register/transpile-only',
          '-r',
          'tsconfig-paths/register',
          this.options.script,
        ],
        { env: { ...process.env, ...this.options.env, WORKER: name } },
      );
      const consumer = new Consumer(child);
      this.running.push(consumer);
      starting.push(consumer);
    }
    await Promise.all(
      starting.map((consumer) => consumer.waitFor('ready', (e) => e.event === 'ready')),
    );
    return this.consumers;
  }

  /** The consumer named `worker` (as a fixture's line names it). */
  byName(worker: string): Consumer {
    const consumer = this.running.find((candidate) => candidate.name === worker);
    if (!consumer) {
      throw new Error(`no consumer named ${worker}`);
    }
    return consumer;
  }

  /** Every event of every consumer, started so far, that `matches` accepts. */
  events(matches: (event: FixtureEvent) => boolean): FixtureEvent[] {
    return this.running.flatMap((consumer) => consumer.events.filter(matches));
  }

  /** Resolves with the first event of any consumer that `matches` accepts. */
  async waitFor(what: string, matches: (event: FixtureEvent) => boolean): Promise<FixtureEvent> {
    let found: FixtureEvent | undefined;
    await eventually(
      what,
      async () => {
        found = this.events(matches)[0];
        return found !== undefined;
      },
      20_000,
      50,
    ).catch((error: Error) => {
      const tails = this.running.map(
        (consumer) => `${consumer.name}:${consumer.child.tail(2_000)}`,
      );
      throw new Error(`${error.message}\n${tails.join('\n')}`);
    });
    return found!;
  }

  /** SIGTERM to every consumer, and waits for them. */
  async stop(): Promise<void> {
    await Promise.all(this.consumers.map((consumer) => consumer.child.stop()));
  }
}
