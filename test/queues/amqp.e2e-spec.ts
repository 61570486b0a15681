import { randomBytes, randomUUID } from 'node:crypto';
import { type ChannelModel, type ConfirmChannel, connect } from 'amqplib';
import { POSTGRES_URL } from '../utils/databases';
import { eventually, killAllChildren } from '../utils/processes';
import { describeWithServers } from '../utils/services';
import { type Consumer, ConsumerPool, isStopped, ShipmentsDatabase } from './queue-suite';

/**
 * A raw amqplib consumer (manual acks) through `IdempotencyService.run()`: two consumer processes
 * (test/queues/amqp/consumer.ts) compete on one RabbitMQ queue, keyed by the AMQP `messageId`, and
 * each message ships an order by writing a row in PostgreSQL in transactional mode. A consumer is
 * killed (SIGKILL) at a point the message's `x-test-fault` header names; RabbitMQ puts its unacked
 * messages back at once and delivers them to the other consumer. Every scenario counts the
 * committed rows of its order: exactly one, never two.
 */

afterAll(() => killAllChildren());

const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const QUEUE = `shipments-${randomBytes(4).toString('hex')}`;

/** The lease: a redelivery after a kill meets it live (RabbitMQ redelivers at once). */
const LOCK_TTL_MS = 3_000;

(await describeWithServers(['RabbitMQ', AMQP_URL], ['PostgreSQL', POSTGRES_URL]))(
  'A raw amqplib consumer through IdempotencyService.run()',
  () => {
    let db: ShipmentsDatabase;
    let connection: ChannelModel;
    let channel: ConfirmChannel;
    let pool: ConsumerPool;

    beforeAll(async () => {
      db = await ShipmentsDatabase.create();
      connection = await connect(AMQP_URL);
      channel = await connection.createConfirmChannel();
      await channel.assertQueue(QUEUE, { durable: true });
      pool = new ConsumerPool({
        name: 'amqp',
        script: 'test/queues/amqp/consumer.ts',
        env: {
          DATABASE_URL: db.url,
          AMQP_URL,
          QUEUE,
          LOCK_TTL_MS: String(LOCK_TTL_MS),
          RETRY_AFTER_MS: '250',
        },
      });
      await pool.ensure(2);
    }, 120_000);

    afterAll(async () => {
      await pool?.stop();
      await channel?.deleteQueue(QUEUE);
      await connection?.close();
      await db?.drop();
    });

    beforeEach(() => pool.ensure(2), 120_000);

    /** Publishes one order as a persistent message, confirmed by the broker. */
    async function publish(messageId: string, orderId: string, fault?: string): Promise<void> {
      channel.sendToQueue(QUEUE, Buffer.from(JSON.stringify({ orderId })), {
        messageId,
        persistent: true,
        headers: fault ? { 'x-test-fault': fault } : {},
      });
      await channel.waitForConfirms();
    }

    const ids = () => ({ messageId: `msg-${randomUUID()}`, orderId: `order-${randomUUID()}` });
    const eventsOf = (event: string, messageId: string) =>
      pool.events((e) => e.event === event && e.delivery === messageId);
    const victimOf = async (messageId: string): Promise<Consumer> => {
      const fault = await pool.waitFor(
        `the fault of ${messageId}`,
        (e) => e.event === 'fault' && e.delivery === messageId,
      );
      return pool.byName(fault.worker);
    };
    /** Resolves once the queue holds no message ready (the unacked ones are not counted). */
    const drained = () =>
      eventually(
        'the queue to drain',
        async () => (await channel.checkQueue(QUEUE)).messageCount === 0,
      );

    it('a consumer killed between COMMIT and ack: the broker redelivers to the other, which replays and acks', async () => {
      const { messageId, orderId } = ids();
      await publish(messageId, orderId, 'kill-after-commit');
      const victim = await victimOf(messageId);
      expect(await victim.child.exited).toEqual({ code: null, signal: 'SIGKILL' });
      const [shipment] = await db.shipments(orderId);
      expect(shipment).toMatchObject({ worker: victim.name, delivery: messageId });

      const replay = await pool.waitFor(
        'the redelivery',
        (e) => e.event === 'done' && e.delivery === messageId,
      );
      expect(replay).toMatchObject({
        redelivered: true,
        replayed: true,
        shipmentId: shipment.id,
        shippedBy: victim.name,
      });
      expect(replay.worker).not.toBe(victim.name);
      await drained();
      expect(await db.shipments(orderId)).toEqual([shipment]);
    });

    it('a consumer killed before COMMIT: the redelivery meets its live lease, is nacked and requeued, then ships once', async () => {
      const { messageId, orderId } = ids();
      await publish(messageId, orderId, 'stop-before-commit');
      const victim = await victimOf(messageId);
      await eventually('the consumer to stop', async () => isStopped(victim.child.pid));
      expect(await db.openTransactions()).toBe(1);
      victim.child.signal('SIGKILL');
      await victim.child.exited;

      const done = await pool.waitFor(
        'the redelivery to ship',
        (e) => e.event === 'done' && e.delivery === messageId,
      );
      const refused = eventsOf('in-progress', messageId);
      // Refused while the dead consumer's lease was live: requeued, never acked as done.
      expect(refused.length).toBeGreaterThan(0);
      expect(refused.every((e) => e.redelivered === true && e.worker === done.worker)).toBe(true);
      expect(done).toMatchObject({ redelivered: true, replayed: false, shippedBy: done.worker });
      await drained();
      const shipments = await db.shipments(orderId);
      expect(shipments).toEqual([
        expect.objectContaining({ id: done.shipmentId, worker: done.worker }),
      ]);
    });

    it('50 copies of one message while the first runs: each is nacked with requeue, never acked, then replays', async () => {
      const { messageId, orderId } = ids();
      await db.lock();
      try {
        await publish(messageId, orderId);
        await db.insertHeld();
        for (let i = 0; i < 50; i++) {
          await publish(messageId, orderId);
        }
        await eventually(
          '50 refusals',
          async () => eventsOf('in-progress', messageId).length >= 50,
        );
        expect(eventsOf('done', messageId)).toEqual([]);
        expect(new Set(eventsOf('in-progress', messageId).map((e) => e.worker)).size).toBe(2);
      } finally {
        await db.unlock();
      }

      await eventually('51 acks', async () => eventsOf('done', messageId).length === 51);
      const [shipment] = await db.shipments(orderId);
      const done = eventsOf('done', messageId);
      expect(done.filter((e) => !e.replayed)).toHaveLength(1);
      expect(done.every((e) => e.shipmentId === shipment.id)).toBe(true);
      await drained();
      expect(await db.shipments(orderId)).toHaveLength(1);
    });
  },
);
