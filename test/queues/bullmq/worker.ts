/**
 * A BullMQ worker written as the README's recipe writes it (`@nestjs/bullmq`, a `@Processor` with
 * `WorkerHost`, the effect through `IdempotencyService.run()` in transactional mode), plus the
 * fault hooks of ../fixtures/faults.ts on a job's first start. Started as a child process, twice,
 * by bullmq.e2e-spec.ts (Nest is ESM-only, and only Node's require(esm) loads it for @nestjs/bullmq
 * here, as `npm start` does).
 *
 * Environment, besides that of ../fixtures/shipments.ts: REDIS_URL, QUEUE (the queue's name),
 * QUEUE_PREFIX (BullMQ's key prefix), LOCK_DURATION_MS and STALLED_INTERVAL_MS (BullMQ's
 * stall detection, short so a killed worker's job comes back quickly).
 */
import 'reflect-metadata';
import { BullModule, OnWorkerEvent, Processor, WorkerHost } from '@nestjs/bullmq';
import { Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import { DelayedError, type Job } from 'bullmq';
import { IdempotencyRequestInProgressException, IdempotencyService } from 'nestjs-idempotency';
import { DeliveryFaults, type Fault } from '../fixtures/faults';
import { report, type Shipped, ShipmentsModule, ShipmentsService } from '../fixtures/shipments';

const QUEUE = process.env.QUEUE ?? 'shipments';

/** A job of the queue. `fault` applies to the job's first start only. */
interface ShipOrder {
  orderId: string;
  fault?: Fault;
}

@Processor(QUEUE, {
  concurrency: 4,
  lockDuration: Number(process.env.LOCK_DURATION_MS ?? 1_000),
  stalledInterval: Number(process.env.STALLED_INTERVAL_MS ?? 500),
  maxStalledCount: 1,
})
class ShipmentsProcessor extends WorkerHost {
  constructor(
    private readonly idempotency: IdempotencyService,
    private readonly shipments: ShipmentsService,
  ) {
    super();
  }

  async process(job: Job<ShipOrder>, token?: string): Promise<Shipped> {
    // Jobs named `by-job-id` are keyed by their id (a stalled or retried job keeps it); the others
    // by the order they ship, however many jobs carry it.
    const key = job.name === 'by-job-id' ? job.id! : job.data.orderId;
    const faults = new DeliveryFaults(
      job.id!,
      job.attemptsStarted === 1 ? job.data.fault : undefined,
    );
    faults.beforeRun('ship-order', key);
    try {
      const { value, replayed } = await this.idempotency.run(
        key,
        async () => {
          const shipped = await this.shipments.ship(job.data.orderId, job.id!);
          faults.inWork();
          return shipped;
        },
        { scope: 'ship-order', payload: job.data, transaction: true },
      );
      report('done', {
        delivery: job.id,
        attempt: job.attemptsStarted,
        replayed,
        shipmentId: value.shipmentId,
        shippedBy: value.worker,
      });
      faults.afterRun();
      return value;
    } catch (error) {
      if (error instanceof IdempotencyRequestInProgressException) {
        report('in-progress', { delivery: job.id, retryAfterMs: error.retryAfterMs });
        await job.moveToDelayed(Date.now() + error.retryAfterMs, token);
        throw new DelayedError();
      }
      throw error;
    }
  }

  @OnWorkerEvent('failed')
  onFailed(job: Job | undefined, error: Error): void {
    report('failed', { delivery: job?.id, message: error.message });
  }

  @OnWorkerEvent('error')
  onError(error: Error): void {
    report('worker-error', { message: error.message });
  }
}

@Module({
  imports: [
    ShipmentsModule,
    BullModule.forRoot({
      connection: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
      prefix: process.env.QUEUE_PREFIX ?? 'bull',
    }),
    BullModule.registerQueue({ name: QUEUE }),
  ],
  providers: [ShipmentsProcessor],
})
class WorkerModule {}

async function main(): Promise<void> {
  const app = await NestFactory.createApplicationContext(WorkerModule, {
    logger: ['error', 'warn'],
  });
  await app.get(ShipmentsProcessor).worker.waitUntilReady();
  report('ready');
  const stop = () => void app.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

void main();
