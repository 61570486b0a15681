import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { type ClientProxy, ClientProxyFactory } from '@nestjs/microservices';
import { connect as amqpConnect } from 'amqplib';
import { firstValueFrom } from 'rxjs';
import { DataSource } from 'typeorm';
import { CreateIdempotencyRecordsTable1763800000000 } from 'nestjs-idempotency/typeorm';
import { createTemporaryDatabase, POSTGRES_URL, type TemporaryDatabase } from '../utils/databases';
import { type Child, eventually, killAllChildren, spawnChild } from '../utils/processes';
import { describeWithServer } from '../utils/services';
import { type BrokerTransport, brokerTransports, consumerPatterns } from './brokers';

/**
 * Two consumer processes (consumer.app.ts) on each real broker, their handlers in transactional
 * mode on PostgreSQL, every effect a row: duplicates delivered to both run each effect once, and a
 * consumer killed (SIGKILL) after its effect committed but before the message was acked does not
 * repeat the effect when the message comes again: from the broker to the other consumer on
 * RabbitMQ (manual acks), from the publisher's retry on NATS, MQTT and Redis.
 */

const SUFFIX = randomBytes(4).toString('hex');
const PATTERNS = consumerPatterns(SUFFIX);
const TRANSPORTS = brokerTransports(SUFFIX);
const START_MS = 120_000;

const describePostgres = await describeWithServer('PostgreSQL', POSTGRES_URL);
const gates = await Promise.all(
  TRANSPORTS.map(async (transport) => ({
    name: transport.name,
    transport,
    gate: await describeWithServer(transport.broker, transport.url),
  })),
);
const available = gates.filter(({ gate }) => gate === describe).map(({ name }) => name);

describePostgres('RPC consumers as processes', () => {
  let database: TemporaryDatabase;
  let sql: DataSource;
  /** The two consumers running now (a killed one is replaced). */
  let consumers: Child[] = [];
  let spawned = 0;

  /** Starts a consumer; resolves once it listens on every available broker. */
  async function startConsumer(): Promise<Child> {
    const name = `consumer-${String.fromCharCode(65 + spawned++)}`;
    const env: NodeJS.ProcessEnv = { ...process.env, NO_COLOR: '1' };
    delete env.NODE_OPTIONS;
    Object.assign(env, {
      CONSUMER: name,
      SUFFIX,
      TRANSPORTS: available.join(','),
      DATABASE_URL: database.url,
    });
    const child = spawnChild(
      name,
      process.execPath,
      [
        '-r',
        'ts-node/register/transpile-only',
        '-r',
        'tsconfig-paths/register',
        join('test', 'rpc', 'consumer.app.ts'),
      ],
      { env },
    );
    await child.waitForOutput(new RegExp(`^${name} ready$`, 'm'), START_MS);
    return child;
  }

  /** Effect rows by key. */
  async function effectsOf(keys: string[]): Promise<Map<string, number>> {
    const rows: { effect_key: string; count: string }[] = await sql.query(
      'SELECT effect_key, count(*) AS count FROM rpc_effects WHERE effect_key = ANY($1) GROUP BY effect_key',
      [keys],
    );
    return new Map(rows.map((row) => [row.effect_key, Number(row.count)]));
  }

  /** Outcome lines (`<consumer> <outcome> <pattern>`) a consumer printed after `from` chars. */
  const outcomes = (child: Child, outcome: string, pattern: string, from = 0) =>
    child.stdout
      .slice(from)
      .split('\n')
      .filter((line) => line.startsWith(`${child.name} ${outcome} ${pattern}`)).length;

  beforeAll(async () => {
    database = await createTemporaryDatabase('postgres', 'rpc_processes');
    sql = await new DataSource({
      type: 'postgres',
      url: database.url,
      migrations: [CreateIdempotencyRecordsTable1763800000000],
    }).initialize();
    await sql.runMigrations();
    await sql.query(
      'CREATE TABLE rpc_effects (id serial PRIMARY KEY, effect_key varchar(100) NOT NULL, transport varchar(20) NOT NULL, consumer varchar(20) NOT NULL, in_transaction boolean NOT NULL)',
    );
    consumers = await Promise.all([startConsumer(), startConsumer()]);
  }, 2 * START_MS);

  afterAll(async () => {
    await killAllChildren();
    await sql?.destroy();
    await database?.drop();
    const rmq = TRANSPORTS.find((transport) => transport.name === 'RabbitMQ')!;
    if (available.includes('RabbitMQ')) {
      const connection = await amqpConnect(rmq.url);
      try {
        const queue = (rmq.server as { options: { queue: string } }).options.queue;
        await (await connection.createChannel()).deleteQueue(queue);
      } finally {
        await connection.close();
      }
    }
  });

  describe.each(gates)('on $name', ({ transport, gate }) => {
    gate('two consumers', () => {
      let client: ClientProxy;
      /** Whether each copy of a message reaches both consumers (not RabbitMQ's competing queue). */
      const fanOut = transport.name !== 'RabbitMQ';
      const emit = (pattern: string, key: string) =>
        firstValueFrom(
          client.emit(pattern, (transport as BrokerTransport).keyed(client, { key }, key)),
          { defaultValue: undefined },
        );

      beforeAll(async () => {
        client = ClientProxyFactory.create(transport.client);
        await client.connect();
      });

      afterAll(() => client?.close());

      it('get duplicates of 20 events, 5 copies each, interleaved: each effect happens once', async () => {
        const keys = Array.from(
          { length: 20 },
          (_, i) => `${transport.name}-effect-${i}-${randomUUID()}`,
        );
        const from = consumers.map((child) => child.stdout.length);
        const copies = keys.flatMap((key) => Array.from({ length: 5 }, () => key));
        copies.sort(() => Math.random() - 0.5);
        await Promise.all(copies.map((key) => emit(PATTERNS.effect, key)));
        const deliveries = copies.length * (fanOut ? 2 : 1);
        const seen = () =>
          consumers.reduce(
            (sum, child, i) =>
              sum +
              outcomes(child, 'executed', PATTERNS.effect, from[i]) +
              outcomes(child, 'replayed', PATTERNS.effect, from[i]),
            0,
          );
        await eventually(`${deliveries} deliveries`, async () => seen() >= deliveries, 30_000);
        const effects = await effectsOf(keys);
        expect(keys.map((key) => effects.get(key))).toEqual(keys.map(() => 1));
        for (const [i, child] of consumers.entries()) {
          const handled =
            outcomes(child, 'executed', PATTERNS.effect, from[i]) +
            outcomes(child, 'replayed', PATTERNS.effect, from[i]);
          expect({ consumer: child.name, handled: handled > 0 }).toEqual({
            consumer: child.name,
            handled: true,
          });
        }
      });

      it('answer 20 duplicate requests with one effect and 20 equal replies', async () => {
        const key = `${transport.name}-charge-${randomUUID()}`;
        const data = { key, amount: 12.5 };
        const replies = await Promise.all(
          Array.from({ length: 20 }, () =>
            firstValueFrom(
              client.send<object>(PATTERNS.charge, transport.keyed(client, data, key)),
            ),
          ),
        );
        expect(new Set(replies.map((reply) => JSON.stringify(reply))).size).toBe(1);
        expect(replies[0]).toEqual({
          effectId: expect.any(Number),
          amount: 12.5,
          by: expect.any(String),
        });
        expect((await effectsOf([key])).get(key)).toBe(1);
      });

      it(
        'kill -9 after the effect committed, before the ack: the message comes again and the effect does not repeat',
        async () => {
          const key = `${transport.name}-crash-${randomUUID()}`;
          const from = consumers.map((child) => child.stdout.length);
          await emit(PATTERNS.crash, key);
          const killed = await Promise.race(
            consumers.map((child) => child.exited.then(() => child)),
          );
          expect(await killed.exited).toEqual({ code: null, signal: 'SIGKILL' });
          expect(killed.stdout).toMatch(new RegExp(`executed ${PATTERNS.crash} stored`));
          const survivor = consumers.find((child) => child !== killed)!;
          const replacement = startConsumer();
          expect((await effectsOf([key])).get(key)).toBe(1);
          const survivorFrom = from[consumers.indexOf(survivor)];
          if (!fanOut) {
            // RabbitMQ: the broker redelivers the unacked message to the other consumer.
            await eventually(
              'the redelivery to replay',
              async () => outcomes(survivor, 'replayed', PATTERNS.crash, survivorFrom) === 1,
            );
          } else {
            // No acks: the publisher's retry brings the message again.
            const before = outcomes(survivor, 'replayed', PATTERNS.crash, survivorFrom);
            await emit(PATTERNS.crash, key);
            await eventually(
              'the retry to replay',
              async () => outcomes(survivor, 'replayed', PATTERNS.crash, survivorFrom) > before,
            );
          }
          expect(outcomes(survivor, 'executed', PATTERNS.crash, survivorFrom)).toBe(0);
          expect((await effectsOf([key])).get(key)).toBe(1);
          consumers = [survivor, await replacement];
        },
        START_MS,
      );
    });
  });

  it('wrote every effect in the transaction of its record (transactionalEntityManager())', async () => {
    const [{ outside, total }] = await sql.query(
      'SELECT count(*) FILTER (WHERE NOT in_transaction) AS outside, count(*) AS total FROM rpc_effects',
    );
    expect(Number(total)).toBeGreaterThan(0);
    expect(Number(outside)).toBe(0);
  });
});
