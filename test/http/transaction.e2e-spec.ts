import { randomBytes, randomUUID } from 'node:crypto';
import { subscribe } from 'node:diagnostics_channel';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  Body,
  Controller,
  Injectable,
  Logger,
  Post,
  UnprocessableEntityException,
} from '@nestjs/common';
import { Test, type TestingModule } from '@nestjs/testing';
import {
  type ClaimOptions,
  type ClaimResult,
  Idempotent,
  IdempotencyChannel,
  type IdempotencyLeaseLostEvent,
  IdempotencyModule,
  IdempotencyRequestInProgressException,
  IdempotencyService,
  MemoryIdempotencyStore,
  storageKeyOf,
} from 'nestjs-idempotency';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
  transactionalEntityManager,
} from 'nestjs-idempotency/typeorm';
import request from 'supertest';
import {
  DataSource,
  type DataSourceOptions,
  type EntityManager,
  type EntitySubscriberInterface,
  EventSubscriber,
  type TransactionCommitEvent,
} from 'typeorm';
import { MYSQL_URL, POSTGRES_URL } from '../utils/databases';
import { eventually } from '../utils/processes';
import { describeWithServer } from '../utils/services';
import { describeWithSqlite } from '../utils/sqlite';
import { createApp, delay, PLATFORMS, type TestApp } from './platforms';

/**
 * Transactional mode of the TypeORM store: the handler's database work and the record's completion
 * commit in one transaction, on PostgreSQL, MariaDB and SQLite, on Express and Fastify. Each case
 * counts the effect rows the handler wrote, since that is what a retry must never double.
 */

// E2E_LOG=1 shows the library's logs (lease lost, rollbacks), for debugging a failing case.
Logger.overrideLogger(process.env.E2E_LOG ? ['log', 'warn', 'error'] : false);

const sqliteDir = mkdtempSync(join(tmpdir(), 'idempotency-tx-'));
afterAll(() => rmSync(sqliteDir, { recursive: true, force: true }));

const DATABASES: [string, Promise<jest.Describe>, DataSourceOptions][] = [
  [
    'PostgreSQL',
    describeWithServer('PostgreSQL', POSTGRES_URL),
    { type: 'postgres', url: POSTGRES_URL, extra: { max: 6 } },
  ],
  [
    'MariaDB',
    describeWithServer('MariaDB', MYSQL_URL),
    { type: 'mariadb', url: MYSQL_URL, extra: { connectionLimit: 6 } },
  ],
  [
    'SQLite',
    Promise.resolve(describeWithSqlite()),
    {
      type: 'better-sqlite3',
      database: join(sqliteDir, 'tx.sqlite'),
      enableWAL: true,
      timeout: 10_000,
    } as DataSourceOptions,
  ],
];

/** The effect table the handlers write to, one row per effect. */
const EFFECTS = `tx_effects_${randomBytes(3).toString('hex')}`;

/** Placeholders of the dialect (`$1` on PostgreSQL, `?` elsewhere). */
const params = (manager: EntityManager, n: number) =>
  Array.from({ length: n }, (_, i) =>
    manager.connection.options.type === 'postgres' ? `$${i + 1}` : '?',
  ).join(', ');

async function insertEffect(manager: EntityManager, key: string): Promise<string> {
  const id = randomUUID();
  await manager.query(`INSERT INTO ${EFFECTS} (id, effect_key) VALUES (${params(manager, 2)})`, [
    id,
    key,
  ]);
  return id;
}

/** How many times each effect key's handler started, to hold only a first run. */
const started = new Map<string, number>();

/** The lease of the long-running routes, in ms (renewed every third of it). */
const LONG_LEASE_MS = 500;

/** Every lease loss the engine reports, by storage key. */
const leasesLost: IdempotencyLeaseLostEvent[] = [];
subscribe(IdempotencyChannel.LeaseLost, (event) =>
  leasesLost.push(event as IdempotencyLeaseLostEvent),
);

/** A promise and what settles it. */
function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((done) => (resolve = done));
  return { promise, resolve };
}

/**
 * Where the test holds a run of one effect key, with its transaction open: after its write (until
 * `work` is resolved), and once its completion ran, just before its COMMIT (until `commit` is).
 */
class Gate {
  /** The run wrote its effect and waits; resolves with its transaction's manager. */
  readonly wrote = deferred<EntityManager>();
  readonly work = deferred();
  /** The run's completion ran and its COMMIT waits (PostgreSQL: the completion goes with it). */
  readonly committing = deferred();
  readonly commit = deferred();
  manager?: EntityManager;
}

/** Gates by effect key: only the first run of a key with a gate is held. */
const gates = new Map<string, Gate>();

/**
 * Holds the COMMIT of a gated run (TypeORM awaits `beforeTransactionCommit`). Matched by query
 * runner: on SQLite, TypeORM's one runner gets a new `manager` each time a runner is asked for.
 */
@EventSubscriber()
class CommitGate implements EntitySubscriberInterface {
  async beforeTransactionCommit(event: TransactionCommitEvent) {
    const gate = [...gates.values()].find(
      (held) => held.manager?.queryRunner === event.queryRunner,
    );
    if (gate) {
      gate.committing.resolve();
      await gate.commit.promise;
    }
  }
}

interface EffectBody {
  key: string;
  /** Hold the first run this long after its write, before the completion. */
  holdMs?: number;
  fail?: 'crash' | 'unprocessable';
}

@Injectable()
class EffectsService {
  constructor(private readonly dataSource: DataSource) {}

  async create({ key, holdMs, fail }: EffectBody) {
    const run = (started.get(key) ?? 0) + 1;
    started.set(key, run);
    const manager = transactionalEntityManager(this.dataSource.manager);
    const id = await insertEffect(manager, key);
    const gate = gates.get(key);
    if (gate && run === 1) {
      gate.manager = manager;
      gate.wrote.resolve(manager);
      await gate.work.promise;
    }
    if (holdMs && run === 1) {
      await delay(holdMs);
    }
    if (fail === 'crash') {
      throw new Error('crashed after the write');
    }
    if (fail === 'unprocessable') {
      throw new UnprocessableEntityException({ reason: 'refused after the write' });
    }
    return { id, run, inTransaction: manager !== this.dataSource.manager };
  }

  /** Writes the effect and a child of no parent, which its deferred foreign key refuses at COMMIT. */
  async createOrphan({ key }: EffectBody) {
    started.set(key, (started.get(key) ?? 0) + 1);
    const manager = transactionalEntityManager(this.dataSource.manager);
    const id = await insertEffect(manager, key);
    await manager.query(
      `INSERT INTO ${EFFECTS}_children (id, parent_id) VALUES (${params(manager, 2)})`,
      [randomUUID(), randomUUID()],
    );
    return { id };
  }
}

@Controller('effects')
class EffectsController {
  constructor(private readonly effects: EffectsService) {}

  @Post()
  @Idempotent({ transaction: true })
  create(@Body() body: EffectBody) {
    return this.effects.create(body);
  }

  @Post('stalling')
  @Idempotent({ transaction: true, lockTtl: 400, maxLockHold: 1 })
  stalling(@Body() body: EffectBody) {
    return this.effects.create(body);
  }

  @Post('waiting')
  @Idempotent({ transaction: true, concurrent: 'wait', waitTimeout: 30_000 })
  waiting(@Body() body: EffectBody) {
    return this.effects.create(body);
  }

  @Post('long')
  @Idempotent({ transaction: true, lockTtl: LONG_LEASE_MS })
  long(@Body() body: EffectBody) {
    return this.effects.create(body);
  }

  @Post('refused-at-commit')
  @Idempotent({ transaction: true })
  refusedAtCommit(@Body() body: EffectBody) {
    return this.effects.createOrphan(body);
  }

  /** Renews for a while, then stops (a hung handler past maxLockHold), and runs on. */
  @Post('renewing-then-stalling')
  @Idempotent({ transaction: true, lockTtl: 300, maxLockHold: 700 })
  renewingThenStalling(@Body() body: EffectBody) {
    return this.effects.create(body);
  }

  /** Not transactional and writes nothing: only its lease, renewed while it waits. */
  @Post('plain-long')
  @Idempotent({ lockTtl: LONG_LEASE_MS })
  async plainLong(@Body() { key, holdMs }: EffectBody) {
    const run = (started.get(key) ?? 0) + 1;
    started.set(key, run);
    await delay(holdMs ?? 0);
    return { key, run };
  }
}

/** A claim made to the store, and once answered, its outcome and when. */
interface ClaimSeen {
  key: string;
  startedAt: number;
  outcome?: ClaimResult['outcome'];
  answeredAt?: number;
}

/** The TypeORM store, noting every claim made to it. */
class WatchedStore extends TypeOrmIdempotencyStore {
  readonly claims: ClaimSeen[] = [];

  override async claim(options: ClaimOptions): Promise<ClaimResult> {
    const seen: ClaimSeen = { key: options.key, startedAt: performance.now() };
    this.claims.push(seen);
    const result = await super.claim(options);
    seen.outcome = result.outcome;
    seen.answeredAt = performance.now();
    return result;
  }
}

for (const [name, gate, options] of DATABASES) {
  (await gate)(`Transactional mode on ${name}`, () => {
    let dataSource: DataSource;
    let observer: DataSource;
    /** The committed effect rows of `key`, as another connection sees them. */
    const committed = async (key: string): Promise<number> => {
      const rows: { n: string | number }[] = await observer.query(
        `SELECT COUNT(*) AS n FROM ${EFFECTS} WHERE effect_key = ${params(observer.manager, 1)}`,
        [key],
      );
      return Number(rows[0].n);
    };
    const count = async (key: string): Promise<number> => {
      const rows: { n: string | number }[] = await dataSource.query(
        `SELECT COUNT(*) AS n FROM ${EFFECTS} WHERE effect_key = ${params(dataSource.manager, 1)}`,
        [key],
      );
      return Number(rows[0].n);
    };

    beforeAll(async () => {
      dataSource = await new DataSource({
        ...options,
        migrations: [CreateIdempotencyRecordsTable1763800000000],
        migrationsTableName: 'idempotency_tx_migrations',
        subscribers: [CommitGate],
      } as DataSourceOptions).initialize();
      await dataSource.runMigrations();
      await dataSource.query(
        `CREATE TABLE ${EFFECTS} (id varchar(36) NOT NULL PRIMARY KEY, effect_key varchar(64) NOT NULL)`,
      );
      if (name !== 'MariaDB') {
        // InnoDB checks foreign keys at once; these two check at COMMIT.
        await dataSource.query(
          `CREATE TABLE ${EFFECTS}_parents (id varchar(36) NOT NULL PRIMARY KEY)`,
        );
        await dataSource.query(`CREATE TABLE ${EFFECTS}_children (
          id varchar(36) NOT NULL PRIMARY KEY,
          parent_id varchar(36) NOT NULL REFERENCES ${EFFECTS}_parents (id) DEFERRABLE INITIALLY DEFERRED)`);
      }
      // A connection of its own (SQLite: a second one on the file), which sees committed rows only.
      observer = await new DataSource({ ...options } as DataSourceOptions).initialize();
    });
    afterAll(async () => {
      await observer?.destroy();
      if (name !== 'MariaDB') {
        await dataSource.query(`DROP TABLE ${EFFECTS}_children`);
        await dataSource.query(`DROP TABLE ${EFFECTS}_parents`);
      }
      await dataSource.query(`DROP TABLE ${EFFECTS}`);
      await dataSource.destroy();
    });

    describe.each(PLATFORMS)('over HTTP (%s)', (platform) => {
      let t: TestApp;
      let store: WatchedStore;
      const post = (path: string, key: string, body: EffectBody) =>
        request(t.url).post(path).set('Idempotency-Key', key).send(body);

      beforeAll(async () => {
        store = new WatchedStore({ dataSource, purgeIntervalMs: 0 });
        t = await createApp(platform, {
          imports: [IdempotencyModule.forRoot({ store })],
          controllers: [EffectsController],
          providers: [EffectsService, { provide: DataSource, useValue: dataSource }],
        });
      });
      afterAll(() => t.app.close());

      it('commits the effect with the record: one row, replayed without a second one', async () => {
        const key = `tx-${randomUUID()}`;
        const first = await post('/effects', key, { key }).expect(201);
        expect(first.body).toEqual({ id: expect.any(String), run: 1, inTransaction: true });
        const again = await post('/effects', key, { key }).expect(201);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(again.body).toEqual(first.body);
        expect(await count(key)).toBe(1);
      });

      it('rolls the effect back when the handler throws, releases the key, and the retry writes once', async () => {
        const key = `tx-${randomUUID()}`;
        await post('/effects', key, { key, fail: 'crash' }).expect(500);
        expect(await count(key)).toBe(0);
        const retry = await post('/effects', key, { key }).expect(201);
        expect(retry.headers['idempotent-replayed']).toBeUndefined();
        expect(await count(key)).toBe(1);
      });

      it('rolls the effect back on a 4xx and still stores the 4xx, so the retry replays it', async () => {
        const key = `tx-${randomUUID()}`;
        const first = await post('/effects', key, { key, fail: 'unprocessable' }).expect(422);
        expect(await count(key)).toBe(0);
        const again = await post('/effects', key, { key, fail: 'unprocessable' }).expect(422);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(again.body).toEqual(first.body);
        expect(await count(key)).toBe(0);
        expect(started.get(key)).toBe(1);
      });

      it('rolls back a holder whose lease lapsed before COMMIT: one effect, and both clients get the same id', async () => {
        // The first run writes, then stalls without renewing (maxLockHold 1 ms) past its 400 ms
        // lease; a retry takes the key over and commits its own effect. When the first reaches its
        // completion the fence matches nothing: it rolls back and answers the winner's result.
        const key = `tx-${randomUUID()}`;
        const stalled = post('/effects/stalling', key, { key, holdMs: 1_200 }).then((r) => r);
        await delay(700);
        const winner = await post('/effects/stalling', key, { key, holdMs: 1_200 });
        const loser = await stalled;
        expect([winner.status, loser.status]).toEqual([201, 201]);
        expect(loser.body.id).toBe(winner.body.id);
        expect(loser.headers['idempotent-replayed']).toBe('true');
        expect(await count(key)).toBe(1);
      });

      if (name !== 'MariaDB') {
        it('a COMMIT the database refuses (a deferred foreign key): 503, nothing kept, no transaction left open, the key free', async () => {
          const key = `tx-${randomUUID()}`;
          const refused = await post('/effects/refused-at-commit', key, { key });
          const again = await post('/effects/refused-at-commit', key, { key });
          const other = `tx-${randomUUID()}`;
          await post('/effects', other, { key: other }).expect(201);

          for (const res of [refused, again]) {
            expect({ status: res.status, code: res.body.code }).toEqual({
              status: 503,
              code: 'IDEMPOTENCY_STORE_UNAVAILABLE',
            });
          }
          // Released, so the retry ran (and was refused at COMMIT again), not told 409.
          expect(started.get(key)).toBe(2);
          expect(await committed(key)).toBe(0);
          // What runs next commits for real (SQLite: not inside a transaction left open).
          expect(await committed(other)).toBe(1);
        });
      }

      describe('lease renewal while the transaction is open', () => {
        const lost = (route: string, key: string) => {
          const storageKey = storageKeyOf(['endpoint', 'POST', route, 'anonymous'], key);
          return leasesLost.filter((event) => event.key === storageKey).map((e) => e.during);
        };

        it('keeps the key for several lease lengths: every duplicate meanwhile gets 409, then one effect, replayed', async () => {
          const key = `tx-${randomUUID()}`;
          const startedAt = Date.now();
          let answered = false;
          const body = { key, holdMs: 4 * LONG_LEASE_MS };
          const first = post('/effects/long', key, body).then((res) => {
            answered = true;
            return res;
          });
          await eventually('the first run to start', async () => started.get(key) === 1);
          const duplicates: { status: number; code?: string; replayed: boolean; at: number }[] = [];
          while (!answered) {
            const res = await post('/effects/long', key, body);
            duplicates.push({
              status: res.status,
              code: res.body.code,
              replayed: res.headers['idempotent-replayed'] === 'true',
              at: Date.now() - startedAt,
            });
            await delay(LONG_LEASE_MS / 4);
          }
          const created = await first;

          expect(created.status).toBe(201);
          // Only a duplicate sent as the first finished may have met its stored answer.
          const refused = duplicates.filter((res) => res.status === 409);
          expect(duplicates.slice(0, -1)).toEqual(
            refused.slice(0, duplicates.length - 1).map((res) => ({
              ...res,
              code: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
            })),
          );
          expect(duplicates.at(-1)).toMatchObject(
            duplicates.at(-1)!.status === 409
              ? { code: 'IDEMPOTENCY_REQUEST_IN_PROGRESS' }
              : { status: 201, replayed: true },
          );
          expect(Math.max(...refused.map((res) => res.at))).toBeGreaterThan(3 * LONG_LEASE_MS);
          expect(started.get(key)).toBe(1);
          expect(await count(key)).toBe(1);
          expect(lost('/effects/long', key)).toEqual([]);
          const replay = await post('/effects/long', key, body).expect(201);
          expect(replay.headers['idempotent-replayed']).toBe('true');
          expect(replay.body).toEqual(created.body);
        });

        it('still holds the lease after a rollback: a 4xx thrown after several lease lengths is stored and replayed, the handler ran once', async () => {
          const key = `tx-${randomUUID()}`;
          const body = { key, holdMs: 4 * LONG_LEASE_MS, fail: 'unprocessable' } as const;
          const first = await post('/effects/long', key, body).expect(422);
          const again = await post('/effects/long', key, body).expect(422);

          expect(again.headers['idempotent-replayed']).toBe('true');
          expect(again.body).toEqual(first.body);
          expect(started.get(key)).toBe(1);
          expect(await count(key)).toBe(0);
          expect(lost('/effects/long', key)).toEqual([]);
        });

        it('releases the key at once after a rollback: a crash after several lease lengths, then the retry runs once', async () => {
          const key = `tx-${randomUUID()}`;
          await post('/effects/long', key, {
            key,
            holdMs: 4 * LONG_LEASE_MS,
            fail: 'crash',
          }).expect(500);
          const retry = await post('/effects/long', key, { key }).expect(201);

          expect(retry.headers['idempotent-replayed']).toBeUndefined();
          expect(started.get(key)).toBe(2);
          expect(await count(key)).toBe(1);
          // Released by its holder, fenced on its live lease: no lease reported lost.
          expect(lost('/effects/long', key)).toEqual([]);
        });

        it("keeps another run's lease through a rollback: a plain run renewing while a transactional run rolls back is stored and replayed", async () => {
          const plainKey = `plain-${randomUUID()}`;
          const key = `tx-${randomUUID()}`;
          const plainBody = { key: plainKey, holdMs: 5 * LONG_LEASE_MS };
          const plain = post('/effects/plain-long', plainKey, plainBody).then((res) => res);
          await eventually('the plain run to start', async () => started.get(plainKey) === 1);
          // Opened after the plain run's claim, rolled back while it still runs.
          await post('/effects/long', key, {
            key,
            holdMs: 2 * LONG_LEASE_MS,
            fail: 'crash',
          }).expect(500);
          const done = await plain;
          const again = await post('/effects/plain-long', plainKey, plainBody);

          expect(done.status).toBe(201);
          expect(again.status).toBe(201);
          expect(again.headers['idempotent-replayed']).toBe('true');
          expect(again.body).toEqual({ key: plainKey, run: 1 });
          expect(lost('/effects/plain-long', plainKey)).toEqual([]);
        });

        it('does not revive a lease its rolled-back renewals had extended: a holder that stopped renewing and lost its lease rolls back, and the call runs again', async () => {
          // Renewed inside its transaction for 700 ms (maxLockHold), then not: the lease lapses
          // ~300 ms later, and at 2 s the fenced completion matches nothing and rolls back. The
          // call is then decided again: the key is free, so it runs once more, at once.
          const key = `tx-${randomUUID()}`;
          const res = await post('/effects/renewing-then-stalling', key, {
            key,
            holdMs: 2_000,
          });

          expect(res.status).toBe(201);
          expect(res.headers['idempotent-replayed']).toBeUndefined();
          expect(res.body.run).toBe(2);
          expect(await count(key)).toBe(1);
          expect(lost('/effects/renewing-then-stalling', key)).toEqual(['completion']);
        });
      });

      it("wait mode: a duplicate polls while the first run's transaction is open, never blocked by it and never shown its uncommitted record, and gets the committed answer", async () => {
        const key = `tx-${randomUUID()}`;
        const storageKey = storageKeyOf(['endpoint', 'POST', '/effects/waiting', 'anonymous'], key);
        const claimsOf = () => store.claims.filter((claim) => claim.key === storageKey);
        const gate = new Gate();
        gates.set(key, gate);
        try {
          const first = post('/effects/waiting', key, { key }).then((res) => res);
          await gate.wrote.promise;
          let duplicateAnswered = false;
          const duplicate = post('/effects/waiting', key, { key }).then((res) => {
            duplicateAnswered = true;
            return res;
          });
          // The first run holds its transaction open after its write: the duplicate's claims
          // keep being answered, in flight, because the record's row is not locked.
          await eventually(
            'three claims of the duplicate answered while the transaction is open',
            async () => claimsOf().filter((claim) => claim.outcome === 'in_flight').length >= 3,
          );
          expect(duplicateAnswered).toBe(false);

          // Its completion ran (on PostgreSQL it is sent with the COMMIT): the record is completed
          // inside the open transaction, and the duplicate claims again meanwhile.
          gate.work.resolve();
          await gate.committing.promise;
          const committingAt = performance.now();
          await eventually('a claim of the duplicate started before the COMMIT', async () =>
            claimsOf().some((claim) => claim.startedAt > committingAt),
          );
          const committedAt = performance.now();
          gate.commit.resolve();
          const [created, waited] = await Promise.all([first, duplicate]);

          expect(created.status).toBe(201);
          expect(created.headers['idempotent-replayed']).toBeUndefined();
          expect(waited.status).toBe(201);
          expect(waited.headers['idempotent-replayed']).toBe('true');
          expect(waited.body).toEqual(created.body);
          expect(await count(key)).toBe(1);
          expect(started.get(key)).toBe(1);
          const claims = claimsOf();
          // The first acquired; the duplicate saw the record in flight until the COMMIT, and
          // completed only after it (a claim that came during the COMMIT waited for it).
          expect(claims[0].outcome).toBe('acquired');
          expect(claims.slice(1, -1).every((claim) => claim.outcome === 'in_flight')).toBe(true);
          expect(claims.at(-1)!.outcome).toBe('completed');
          expect(
            claims.filter(
              (claim) =>
                claim.outcome !== 'in_flight' &&
                claim.answeredAt! > claims[0].answeredAt! &&
                claim.answeredAt! < committedAt,
            ),
          ).toEqual([]);
        } finally {
          gate.work.resolve();
          gate.commit.resolve();
          gates.delete(key);
        }
      });
    });

    /** The isolation level of the open transaction, as the handler sees it ('READ COMMITTED'). */
    const levelSeen = async (manager: EntityManager): Promise<string> => {
      if (manager.connection.options.type === 'postgres') {
        const [row] = (await manager.query('SHOW transaction_isolation')) as Record<
          string,
          string
        >[];
        return row.transaction_isolation.toUpperCase();
      }
      // MariaDB: @@tx_isolation is the session's level, not the transaction's; InnoDB lists the
      // transaction once it has read something, in a table it refreshes every 100 ms at most.
      await manager.query(`SELECT COUNT(*) FROM ${EFFECTS}`);
      await delay(150);
      const [row] = (await manager.query(
        'SELECT trx_isolation_level AS level FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = CONNECTION_ID()',
      )) as { level: string }[];
      return row.level;
    };

    if (name !== 'SQLite') {
      it('runs at READ COMMITTED by default and at the configured level otherwise, whatever the database default', async () => {
        // The database's own default is made SERIALIZABLE for these connections (PostgreSQL) or is
        // REPEATABLE READ (MariaDB's): a transactional run must still get READ COMMITTED.
        const stricter = await new DataSource(
          (name === 'PostgreSQL'
            ? {
                ...options,
                extra: { max: 2, options: '-c default_transaction_isolation=serializable' },
              }
            : options) as DataSourceOptions,
        ).initialize();
        const moduleRef = await Test.createTestingModule({
          imports: [
            IdempotencyModule.forRoot({
              store: new TypeOrmIdempotencyStore({ dataSource: stricter, purgeIntervalMs: 0 }),
            }),
          ],
        }).compile();
        await moduleRef.init();
        try {
          const service = moduleRef.get(IdempotencyService);
          const seen = (
            transaction: true | { isolationLevel: 'SERIALIZABLE' | 'READ COMMITTED' },
          ) =>
            service.run(`level-${randomUUID()}`, () => levelSeen(transactionalEntityManager()!), {
              transaction,
              scope: 'levels',
            });
          expect((await seen(true)).value).toBe('READ COMMITTED');
          expect((await seen({ isolationLevel: 'SERIALIZABLE' })).value).toBe('SERIALIZABLE');
          expect((await seen(true)).value).toBe('READ COMMITTED');
        } finally {
          await moduleRef.close();
          await stricter.destroy();
        }
      });
    }

    if (name === 'PostgreSQL') {
      describe('the completion and COMMIT in one query', () => {
        /** What the DataSource sent, by first word, in order; the effect table's statements left out. */
        const sent: string[] = [];
        const events: string[] = [];
        const POOL_NAME = `one-query-${randomBytes(3).toString('hex')}`;
        let counted: DataSource;
        let moduleRef: TestingModule;
        let service: IdempotencyService;

        @EventSubscriber()
        class TransactionEvents implements EntitySubscriberInterface {
          beforeTransactionCommit() {
            events.push('before commit');
          }
          afterTransactionCommit() {
            events.push('after commit');
          }
          afterTransactionRollback() {
            events.push('after rollback');
          }
        }

        beforeAll(async () => {
          counted = await new DataSource({
            ...options,
            // Two connections: each run's transaction reuses one that a previous run committed on.
            extra: { max: 2, application_name: POOL_NAME },
            logging: true,
            logger: {
              logQuery: (query: string) => {
                if (!query.includes(EFFECTS)) {
                  sent.push(query.trim().split(/\s+/, 1)[0].toUpperCase());
                }
              },
              logQueryError: () => undefined,
              logQuerySlow: () => undefined,
              logSchemaBuild: () => undefined,
              logMigration: () => undefined,
              log: () => undefined,
            },
            subscribers: [TransactionEvents],
          } as DataSourceOptions).initialize();
          moduleRef = await Test.createTestingModule({
            imports: [
              IdempotencyModule.forRoot({
                store: new TypeOrmIdempotencyStore({ dataSource: counted, purgeIntervalMs: 0 }),
              }),
            ],
          }).compile();
          await moduleRef.init();
          service = moduleRef.get(IdempotencyService);
          // The first run reads the database's default isolation level (SHOW), once per store.
          await runOnce(`warm-up-${randomUUID()}`, 'one-query', () => 'warm');
        });
        afterAll(async () => {
          await moduleRef.close();
          await counted.destroy();
        });
        beforeEach(() => {
          sent.length = 0;
          events.length = 0;
        });

        const runOnce = <T>(key: string, scope: string, value: () => T) =>
          service.run(
            key,
            async () => {
              await insertEffect(transactionalEntityManager()!, key);
              return value();
            },
            { transaction: true, scope },
          );

        it('costs one round trip more than a plain run: START TRANSACTION, then the completion with COMMIT', async () => {
          const key = `one-query-${randomUUID()}`;
          const first = await runOnce(key, 'one-query', () => 'done');
          // The claim is a WITH statement; the completion is a DO block, COMMIT in the same query.
          expect(sent).toEqual(['WITH', 'START', 'DO']);
          expect(events).toEqual(['before commit', 'after commit']);
          expect(await count(key)).toBe(1);
          sent.length = 0;
          expect(await runOnce(key, 'one-query', () => 'again')).toEqual({
            value: first.value,
            replayed: true,
          });
          expect(sent).toEqual(['WITH']);
          expect(await count(key)).toBe(1);
        });

        it('leaves the connection ready for the next run, and for plain transactions', async () => {
          for (let i = 0; i < 5; i++) {
            await runOnce(`one-query-${randomUUID()}`, 'one-query', () => i);
          }
          // No connection of the pool was left inside a transaction.
          const left = (await dataSource.query(
            "SELECT state FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'",
            [POOL_NAME],
          )) as { state: string }[];
          expect(left).toEqual([]);
          const key = `plain-${randomUUID()}`;
          await counted.transaction((manager) => insertEffect(manager, key));
          expect(await count(key)).toBe(1);
        });

        it('stores any value exactly, whatever quotes, backslashes or dollar quotes it holds', async () => {
          const key = `one-query-${randomUUID()}`;
          const nasty = {
            quotes: `it's "quoted" '' ''' `,
            backslashes: String.raw`\ \' E'\x41' \n \\`,
            dollars: '$$ $idempotency_$ $idempotency_0123456789ab$ $tag$ END$$; COMMIT; --',
            injection: "'); DROP TABLE idempotency_records; --",
            unicode: 'Zürich 日本 🎉 \u2028',
            controls: 'a\nb\r\nc\td\u0001',
            big: 'x'.repeat(300_000),
          };
          const first = await runOnce(key, 'nasty', () => nasty);
          expect(sent).toEqual(['WITH', 'START', 'DO']);
          expect(first.value).toEqual(nasty);
          expect(await runOnce(key, 'nasty', () => ({}))).toEqual({ value: nasty, replayed: true });
          expect(await count(key)).toBe(1);
        });

        it('rolls back, with the rollback events, when the lease was lost before the completion', async () => {
          const key = `one-query-${randomUUID()}`;
          const run = runOnce(key, 'lost', async () => {
            // Another instance took the key over meanwhile (the lease lapsed): a new owner.
            await counted.query(
              "UPDATE idempotency_records SET owner_token = 'someone-else' WHERE state = 'in_flight' AND owner_token <> 'someone-else'",
            );
            return 'late';
          });
          await expect(run).rejects.toBeInstanceOf(IdempotencyRequestInProgressException);
          expect(events).toEqual(['before commit', 'after rollback']);
          expect(await count(key)).toBe(0);
        });
      });
    }

    it('runs IdempotencyService.run() work in the transaction too', async () => {
      const moduleRef = await Test.createTestingModule({
        imports: [
          IdempotencyModule.forRoot({
            store: new TypeOrmIdempotencyStore({ dataSource, purgeIntervalMs: 0 }),
          }),
        ],
      }).compile();
      await moduleRef.init();
      try {
        const service = moduleRef.get(IdempotencyService);
        const key = `job-${randomUUID()}`;
        const work = async () => {
          const manager = transactionalEntityManager();
          expect(manager).toBeDefined();
          return insertEffect(manager!, key);
        };
        const first = await service.run(key, work, { transaction: true, scope: 'jobs' });
        const again = await service.run(key, work, { transaction: true, scope: 'jobs' });
        expect(again).toEqual({ value: first.value, replayed: true });
        await expect(
          service.run(
            `${key}-failing`,
            async () => {
              await work();
              throw new Error('consumer crashed');
            },
            { transaction: true, scope: 'jobs' },
          ),
        ).rejects.toThrow('consumer crashed');
        expect(await count(key)).toBe(1);
      } finally {
        await moduleRef.close();
      }
    });
  });
}

describe('Transactional mode on a store without transactions', () => {
  it('fails at bootstrap, naming the handler and the fix', async () => {
    @Controller('no-tx')
    class NoTransactionController {
      @Post()
      @Idempotent({ transaction: true })
      create() {
        return {};
      }
    }
    await expect(
      createApp('express', {
        imports: [IdempotencyModule.forRoot({ store: new MemoryIdempotencyStore() })],
        controllers: [NoTransactionController],
      }),
    ).rejects.toThrow(
      /@Idempotent\(\) on NoTransactionController\.create uses transactional mode .*MemoryIdempotencyStore has no transactions; use TypeOrmIdempotencyStore/,
    );
  });
});
