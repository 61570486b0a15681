import { randomBytes, randomUUID } from 'node:crypto';
import {
  AckPolicy,
  jetstream,
  type JetStreamClient,
  type JetStreamManager,
  jetstreamManager,
  type PubAck,
  StorageType,
} from '@nats-io/jetstream';
import { connect, headers, type NatsConnection, nanos } from '@nats-io/transport-node';
import { POSTGRES_URL } from '../utils/databases';
import { eventually, killAllChildren } from '../utils/processes';
import { describeWithServers } from '../utils/services';
import { type Consumer, ConsumerPool, isStopped, ShipmentsDatabase } from './queue-suite';

/**
 * A NATS JetStream consumer (durable pull consumer, explicit acks) through
 * `IdempotencyService.run()`: two consumer processes (test/queues/jetstream/consumer.ts) pull from
 * one durable consumer, keyed by the publisher's `Nats-Msg-Id`, and each message ships an order by
 * writing a row in PostgreSQL in transactional mode. A consumer is killed (SIGKILL) at a point the
 * message's `x-test-fault` header names; JetStream redelivers its unacked message once `ack_wait`
 * has passed. The stream's `duplicate_window` drops a re-publish of the same `Nats-Msg-Id` within
 * the window only; past it, the message is stored and delivered again, and the key replays it.
 */

afterAll(() => killAllChildren());

const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
const suffix = randomBytes(4).toString('hex');
const STREAM = `SHIPMENTS_${suffix}`;
const SUBJECT = `shipments.${suffix}`;
const CONSUMER = 'shippers';
const ACK_WAIT_MS = 1_500;
const DUPLICATE_WINDOW_MS = 2_000;

(await describeWithServers(['NATS', NATS_URL], ['PostgreSQL', POSTGRES_URL]))(
  'A NATS JetStream consumer through IdempotencyService.run()',
  () => {
    let db: ShipmentsDatabase;
    let nc: NatsConnection;
    let js: JetStreamClient;
    let jsm: JetStreamManager;
    let pool: ConsumerPool;

    beforeAll(async () => {
      db = await ShipmentsDatabase.create();
      nc = await connect({ servers: NATS_URL });
      jsm = await jetstreamManager(nc);
      js = jetstream(nc);
      await jsm.streams.add({
        name: STREAM,
        subjects: [SUBJECT],
        storage: StorageType.Memory,
        duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      });
      await jsm.consumers.add(STREAM, {
        durable_name: CONSUMER,
        ack_policy: AckPolicy.Explicit,
        ack_wait: nanos(ACK_WAIT_MS),
        max_deliver: -1,
      });
      pool = new ConsumerPool({
        name: 'jetstream',
        script: 'test/queues/jetstream/consumer.ts',
        env: {
          DATABASE_URL: db.url,
          NATS_URL,
          STREAM,
          CONSUMER,
          ACK_WAIT_MS: String(ACK_WAIT_MS),
          LOCK_TTL_MS: '3000',
          RETRY_AFTER_MS: '250',
        },
      });
      await pool.ensure(2);
    }, 120_000);

    afterAll(async () => {
      await pool?.stop();
      await jsm?.streams.delete(STREAM);
      await nc?.close();
      await db?.drop();
    });

    beforeEach(() => pool.ensure(2), 120_000);

    /** Publishes one order with `Nats-Msg-Id: msgID`; the stream's answer says if it was a duplicate. */
    function publish(msgID: string, orderId: string, fault?: string): Promise<PubAck> {
      const h = headers();
      if (fault) {
        h.set('x-test-fault', fault);
      }
      return js.publish(SUBJECT, JSON.stringify({ orderId }), { msgID, headers: h });
    }

    /** Publishes again until the stream stores it: once the duplicate window has passed. */
    async function publishPastWindow(msgID: string, orderId: string): Promise<PubAck> {
      let ack: PubAck | undefined;
      await eventually(
        'the duplicate window to pass',
        async () => {
          ack = await publish(msgID, orderId);
          return !ack.duplicate;
        },
        10_000,
        200,
      );
      return ack!;
    }

    const ids = () => ({ msgID: `msg-${randomUUID()}`, orderId: `order-${randomUUID()}` });
    const eventsOf = (event: string, msgID: string) =>
      pool.events((e) => e.event === event && e.delivery === msgID);
    const victimOf = async (msgID: string): Promise<Consumer> => {
      const fault = await pool.waitFor(
        `the fault of ${msgID}`,
        (e) => e.event === 'fault' && e.delivery === msgID,
      );
      return pool.byName(fault.worker);
    };
    /** Resolves once the consumer has nothing pending and nothing unacknowledged. */
    const allAcked = () =>
      eventually('every message to be acknowledged', async () => {
        const info = await jsm.consumers.info(STREAM, CONSUMER);
        return info.num_pending === 0 && info.num_ack_pending === 0;
      });

    it('a consumer killed after COMMIT, before its ack: redelivered after ack_wait, replayed', async () => {
      const { msgID, orderId } = ids();
      const { seq } = await publish(msgID, orderId, 'kill-after-commit');
      const victim = await victimOf(msgID);
      expect(await victim.child.exited).toEqual({ code: null, signal: 'SIGKILL' });
      const [shipment] = await db.shipments(orderId);
      expect(shipment).toMatchObject({ worker: victim.name, delivery: msgID });

      const replay = await pool.waitFor(
        'the redelivery',
        (e) => e.event === 'done' && e.delivery === msgID,
      );
      expect(replay).toMatchObject({
        seq,
        deliveryCount: 2,
        replayed: true,
        shipmentId: shipment.id,
        shippedBy: victim.name,
      });
      await allAcked();
      expect(await db.shipments(orderId)).toEqual([shipment]);
    });

    it('a consumer killed before COMMIT: its write is rolled back, and the redelivery ships once', async () => {
      const { msgID, orderId } = ids();
      await publish(msgID, orderId, 'stop-before-commit');
      const victim = await victimOf(msgID);
      await eventually('the consumer to stop', async () => isStopped(victim.child.pid));
      expect(await db.openTransactions()).toBe(1);
      victim.child.signal('SIGKILL');
      await victim.child.exited;

      const done = await pool.waitFor(
        'the redelivery to ship',
        (e) => e.event === 'done' && e.delivery === msgID,
      );
      expect(done).toMatchObject({ replayed: false, shippedBy: done.worker });
      expect(done.deliveryCount).toBeGreaterThan(1);
      await allAcked();
      expect(await db.shipments(orderId)).toEqual([
        expect.objectContaining({ id: done.shipmentId, worker: done.worker }),
      ]);
    });

    it('Nats-Msg-Id dedups a re-publish within the window only; past it, the key replays it', async () => {
      const { msgID, orderId } = ids();
      const first = await publish(msgID, orderId);
      expect(first.duplicate).toBe(false);
      // Within the window the stream drops it: one message stored, one delivery.
      expect(await publish(msgID, orderId)).toMatchObject({ duplicate: true, seq: first.seq });
      await pool.waitFor('the first run', (e) => e.event === 'done' && e.delivery === msgID);

      // Past the window it is a new message of the stream, delivered again: the key replays it.
      const again = await publishPastWindow(msgID, orderId);
      expect(again.seq).toBeGreaterThan(first.seq);
      await eventually('the second message', async () => eventsOf('done', msgID).length === 2);
      const [shipment] = await db.shipments(orderId);
      // Each consumer's lines are in order, the pool's are not: order by stream sequence.
      const done = eventsOf('done', msgID).sort((a, b) => Number(a.seq) - Number(b.seq));
      expect(done.map((e) => [e.seq, e.replayed, e.shipmentId])).toEqual([
        [first.seq, false, shipment.id],
        [again.seq, true, shipment.id],
      ]);
      await allAcked();
      expect(await db.shipments(orderId)).toHaveLength(1);
    });

    it("a duplicate while the first runs past ack_wait: nak'ed with a delay, never acked, then replays", async () => {
      const { msgID, orderId } = ids();
      await db.lock();
      let first: PubAck;
      let duplicate: PubAck;
      try {
        first = await publish(msgID, orderId);
        await db.insertHeld();
        duplicate = await publishPastWindow(msgID, orderId);
        // Refused again and again for longer than twice ack_wait while the first is held.
        await eventually('8 refusals', async () => eventsOf('in-progress', msgID).length >= 8);
        expect(eventsOf('done', msgID)).toEqual([]);
        // working() kept the held message from being redelivered: every refusal is the duplicate.
        expect(eventsOf('in-progress', msgID).every((e) => e.seq === duplicate.seq)).toBe(true);
      } finally {
        await db.unlock();
      }

      await eventually('both messages acked', async () => eventsOf('done', msgID).length === 2);
      const [shipment] = await db.shipments(orderId);
      const done = eventsOf('done', msgID);
      expect(done).toEqual([
        expect.objectContaining({
          seq: first!.seq,
          deliveryCount: 1,
          replayed: false,
          shipmentId: shipment.id,
        }),
        expect.objectContaining({ seq: duplicate!.seq, replayed: true, shipmentId: shipment.id }),
      ]);
      await allAcked();
      expect(await db.shipments(orderId)).toHaveLength(1);
    });
  },
);
