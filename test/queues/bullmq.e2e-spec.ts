import { randomBytes, randomUUID } from 'node:crypto';
import { type Job, Queue } from 'bullmq';
import { POSTGRES_URL, REDIS_URL } from '../utils/databases';
import { eventually, killAllChildren } from '../utils/processes';
import { describeWithServers } from '../utils/services';
import { type Consumer, ConsumerPool, isStopped, ShipmentsDatabase } from './queue-suite';

/**
 * BullMQ through `IdempotencyService.run()`: two worker processes (test/queues/bullmq/worker.ts,
 * `@nestjs/bullmq` on the machine's Redis) compete for the jobs of one queue, and each job ships an
 * order by writing a row in PostgreSQL in transactional mode, so the row commits with the record.
 * A worker is killed (SIGKILL) or frozen (SIGSTOP) at a point the job's data names; BullMQ's stall
 * detection (lockDuration 1 s, stalledInterval 0.5 s) hands the job to the other worker. Every
 * scenario counts the committed rows of its order: exactly one, never two.
 */

afterAll(() => killAllChildren());

const suffix = randomBytes(4).toString('hex');
const QUEUE = `shipments-${suffix}`;
const PREFIX = `idempotency-queues-${suffix}`;

/** The idempotency lease: longer than BullMQ's stall detection, so a taken-over job meets it. */
const LOCK_TTL_MS = 2_000;

(await describeWithServers(['Redis', REDIS_URL], ['PostgreSQL', POSTGRES_URL]))(
  'BullMQ workers through IdempotencyService.run()',
  () => {
    let db: ShipmentsDatabase;
    let queue: Queue;
    let pool: ConsumerPool;

    beforeAll(async () => {
      db = await ShipmentsDatabase.create();
      queue = new Queue(QUEUE, { connection: { url: REDIS_URL }, prefix: PREFIX });
      pool = new ConsumerPool({
        name: 'bullmq',
        script: 'test/queues/bullmq/worker.ts',
        env: {
          DATABASE_URL: db.url,
          REDIS_URL,
          QUEUE,
          QUEUE_PREFIX: PREFIX,
          LOCK_TTL_MS: String(LOCK_TTL_MS),
          RETRY_AFTER_MS: '250',
          LOCK_DURATION_MS: '1000',
          STALLED_INTERVAL_MS: '500',
        },
      });
      await pool.ensure(2);
    }, 120_000);

    afterAll(async () => {
      await pool?.stop();
      await queue?.obliterate({ force: true });
      await queue?.close();
      await db?.drop();
    });

    // Each scenario starts with two live workers (one may have been killed by the last).
    beforeEach(() => pool.ensure(2), 120_000);

    /** The job once BullMQ finished it (completed or failed). */
    async function finished(id: string): Promise<Job> {
      await eventually(`job ${id} to finish`, async () => {
        const state = await queue.getJobState(id);
        return state === 'completed' || state === 'failed';
      });
      // Read once finished: a job read before holds the state of then.
      return (await queue.getJob(id))!;
    }

    const order = () => `order-${randomUUID()}`;
    const doneOf = (id: string) => pool.events((e) => e.event === 'done' && e.delivery === id);
    /** The worker that met the fault of job `id` (it printed so before it stopped or died). */
    const victimOf = async (id: string): Promise<Consumer> => {
      const fault = await pool.waitFor(
        `the fault of job ${id}`,
        (e) => e.event === 'fault' && e.delivery === id,
      );
      return pool.byName(fault.worker);
    };

    it('a worker killed after COMMIT, before BullMQ completed the job: the stalled job replays on the other worker', async () => {
      const orderId = order();
      // Keyed by the job's id: the stalled job comes back with it.
      const { id } = await queue.add('by-job-id', { orderId, fault: 'kill-after-commit' });
      const victim = await victimOf(id!);
      expect(await victim.child.exited).toEqual({ code: null, signal: 'SIGKILL' });
      const [shipment] = await db.shipments(orderId);
      expect(shipment).toMatchObject({ worker: victim.name, delivery: id });

      const job = await finished(id!);
      expect(await job.getState()).toBe('completed');
      // BullMQ never heard of the first run's end: the job came back through its stall check.
      expect(job.stalledCounter).toBe(1);
      expect(job.returnvalue).toEqual({ shipmentId: shipment.id, worker: victim.name });
      expect(doneOf(id!)).toEqual([
        expect.objectContaining({
          replayed: true,
          shipmentId: shipment.id,
          shippedBy: victim.name,
        }),
      ]);
      expect(doneOf(id!)[0].worker).not.toBe(victim.name);
      expect(await db.shipments(orderId)).toHaveLength(1);
    });

    it('a worker killed mid-job, before COMMIT: its write is rolled back and the other worker ships once', async () => {
      const orderId = order();
      const { id } = await queue.add('ship', { orderId, fault: 'stop-before-commit' });
      const victim = await victimOf(id!);
      await eventually('the worker to stop', async () => isStopped(victim.child.pid));
      // Frozen between its INSERT and COMMIT: the row is written, not committed.
      expect(await db.openTransactions()).toBe(1);
      expect(await db.shipments(orderId)).toEqual([]);
      victim.child.signal('SIGKILL');
      await victim.child.exited;

      const job = await finished(id!);
      expect(await job.getState()).toBe('completed');
      const shipments = await db.shipments(orderId);
      expect(shipments).toHaveLength(1);
      expect(shipments[0].worker).not.toBe(victim.name);
      expect(job.returnvalue).toEqual({ shipmentId: shipments[0].id, worker: shipments[0].worker });
      expect(doneOf(id!)).toEqual([
        expect.objectContaining({ replayed: false, worker: shipments[0].worker }),
      ]);
    });

    it('a worker frozen mid-job past its lease: the other worker ships, and the thawed COMMIT is fenced and rolled back', async () => {
      const orderId = order();
      const { id } = await queue.add('ship', { orderId, fault: 'stop-before-commit' });
      const victim = await victimOf(id!);
      await eventually('the worker to stop', async () => isStopped(victim.child.pid));

      // BullMQ hands the stalled job over; the lease lapses unrenewed, and the other worker ships.
      const job = await finished(id!);
      expect(await job.getState()).toBe('completed');
      const [shipment] = await db.shipments(orderId);
      expect(shipment.worker).not.toBe(victim.name);

      victim.child.signal('SIGCONT');
      // The thawed worker's fenced completion matches nothing: it rolls back, and its run()
      // answers with the shipment that committed.
      const late = await victim.waitFor(
        'its late run',
        (e) => e.event === 'done' && e.delivery === id,
      );
      expect(late).toMatchObject({ replayed: true, shipmentId: shipment.id });
      expect(victim.child.stdout).toMatch(/lease lost before COMMIT/);
      // BullMQ refuses its completion of the job too: it lost the job's lock.
      await victim.waitFor('its completion refused', (e) =>
        /Missing lock for job/.test(String(e.message)),
      );
      await eventually(
        'the frozen transaction to end',
        async () => (await db.openTransactions()) === 0,
      );
      expect(await db.shipments(orderId)).toEqual([shipment]);
      expect(await job.getState()).toBe('completed');
    });

    it('20 jobs for one order while the first runs: the others are delayed, never completed, then replay', async () => {
      const orderId = order();
      await db.lock();
      let jobs: Job[];
      try {
        jobs = await queue.addBulk(
          Array.from({ length: 20 }, () => ({ name: 'ship', data: { orderId } })),
        );
        await db.insertHeld();
        const ids = new Set(jobs.map((job) => job.id!));
        await eventually('19 jobs refused as in progress', async () => {
          const refused = pool.events((e) => e.event === 'in-progress' && ids.has(e.delivery!));
          return new Set(refused.map((e) => e.delivery)).size === 19;
        });
        const states = await Promise.all(jobs.map((job) => queue.getJobState(job.id!)));
        expect(states.filter((state) => state === 'completed' || state === 'failed')).toEqual([]);
      } finally {
        await db.unlock();
      }

      const finishedJobs = await Promise.all(jobs.map((job) => finished(job.id!)));
      const [shipment] = await db.shipments(orderId);
      expect(await db.shipments(orderId)).toHaveLength(1);
      for (const job of finishedJobs) {
        expect(await job.getState()).toBe('completed');
        expect(job.returnvalue).toEqual({ shipmentId: shipment.id, worker: shipment.worker });
        // Delayed on an in-progress refusal without spending an attempt: the one is its success.
        expect(job.attemptsMade).toBe(1);
      }
      const done = jobs.flatMap((job) => doneOf(job.id!));
      expect(done.map((e) => e.replayed).sort()).toEqual([false, ...Array(19).fill(true)]);
    });

    it("retried by BullMQ's attempts after the work failed before COMMIT: the retry ships once", async () => {
      const orderId = order();
      const { id } = await queue.add(
        'ship',
        { orderId, fault: 'throw-before-commit' },
        { attempts: 3, backoff: { type: 'fixed', delay: 100 } },
      );
      const job = await finished(id!);
      expect(await job.getState()).toBe('completed');
      expect(job.attemptsMade).toBe(2);
      const shipments = await db.shipments(orderId);
      expect(shipments).toHaveLength(1);
      expect(doneOf(id!)).toEqual([
        expect.objectContaining({ replayed: false, shipmentId: shipments[0].id }),
      ]);
    });

    it("retried by BullMQ's attempts after the job failed past run(): the retry replays", async () => {
      const orderId = order();
      const { id } = await queue.add(
        'ship',
        { orderId, fault: 'throw-after-run' },
        { attempts: 3, backoff: { type: 'fixed', delay: 100 } },
      );
      const job = await finished(id!);
      expect(await job.getState()).toBe('completed');
      expect(job.attemptsMade).toBe(2);
      const shipments = await db.shipments(orderId);
      expect(shipments).toHaveLength(1);
      // Two workers run: each one's lines are in order, the pool's are not, so order by attempt.
      const done = doneOf(id!).sort((a, b) => Number(a.attempt) - Number(b.attempt));
      expect(done.map((e) => [e.attempt, e.replayed, e.shipmentId])).toEqual([
        [1, false, shipments[0].id],
        [2, true, shipments[0].id],
      ]);
    });
  },
);
