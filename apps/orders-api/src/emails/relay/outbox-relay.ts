import {
  type BeforeApplicationShutdown,
  Inject,
  Injectable,
  Logger,
  type OnApplicationBootstrap,
} from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import type { Repository } from 'typeorm';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from '../../config/orders-api.config';
import { OutboxMessage } from '../outbox-message.entity';
import { EmailPublisher } from '../transport/email-publisher';

/** Rows one pass takes at most. */
const BATCH = 50;

/** The first retry of a failed publish; each further one waits twice as long, up to the lease. */
const FIRST_RETRY_MS = 1_000;

/**
 * Publishes the outbox, at least once: every `OUTBOX_POLL_INTERVAL` it takes the queued rows that
 * are due, publishes each (to RabbitMQ, or to the consumer in process), and marks it published
 * only once the publish was confirmed. A relay that dies between publishing and marking leaves the
 * row queued, and it is published again: duplicates are the consumer's to drop (it is idempotent,
 * keyed by the outbox id), losses cannot happen.
 *
 * Several instances may relay the same outbox. A row is taken with one conditional UPDATE (its
 * `attempts` as the version), which also sets `next_attempt_at` to the end of an `OUTBOX_LEASE`:
 * no other relay takes it before then, and if this one dies, another takes it after. A failed
 * publish is retried after a backoff (1 s, doubling, up to the lease).
 */
@Injectable()
export class OutboxRelay implements OnApplicationBootstrap, BeforeApplicationShutdown {
  private readonly logger = new Logger('OutboxRelay');
  private stopped = false;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  /** Whether a pass is under way (its publishes not all settled). */
  private passing = false;
  private lastWarning = { text: '', at: 0 };

  constructor(
    @InjectRepository(OutboxMessage) private readonly outbox: Repository<OutboxMessage>,
    private readonly publisher: EmailPublisher,
    @Inject(ORDERS_API_CONFIG) private readonly config: OrdersApiConfig,
  ) {}

  onApplicationBootstrap(): void {
    this.stopped = false;
    this.loop = this.run();
  }

  /** Stops polling and lets the pass under way finish, before Nest closes the consumer and the database. */
  async beforeApplicationShutdown(): Promise<void> {
    this.stopped = true;
    this.wake?.();
    if (this.passing) {
      this.logger.log('Stopping: waiting for the emails being published');
    }
    await this.loop;
  }

  private async run(): Promise<void> {
    while (!this.stopped) {
      let taken = 0;
      this.passing = true;
      try {
        taken = await this.relayOnce();
      } catch (error) {
        this.warn(`Could not read the outbox: ${String(error)}`);
      } finally {
        this.passing = false;
      }
      // A full batch: more may be waiting, go on at once.
      if (taken < BATCH && !this.stopped) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, this.config.outboxPollIntervalMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
      }
    }
  }

  /** One pass: publishes the due rows it could take; answers how many were due. */
  async relayOnce(): Promise<number> {
    const now = new Date();
    const due = await this.outbox
      .createQueryBuilder('message')
      .where('message.status = :queued', { queued: 'queued' })
      .andWhere('(message.nextAttemptAt IS NULL OR message.nextAttemptAt <= :now)', { now })
      .orderBy('message.createdAt', 'ASC')
      .addOrderBy('message.id', 'ASC')
      .limit(BATCH)
      .getMany();
    const taken: OutboxMessage[] = [];
    for (const row of due) {
      if (this.stopped) {
        break;
      }
      if (await this.take(row, now)) {
        taken.push(row);
      }
    }
    const failures: string[] = [];
    for (let i = 0; i < taken.length; i += this.publisher.concurrency) {
      await Promise.all(
        taken.slice(i, i + this.publisher.concurrency).map(async (row) => {
          const error = await this.publish(row);
          if (error !== undefined) {
            failures.push(error);
          }
        }),
      );
    }
    if (failures.length > 0) {
      this.warn(`Could not publish ${failures.length} email(s), retried later: ${failures[0]}`);
    }
    return due.length;
  }

  /** Takes the row for one lease, unless another relay took it since it was read. */
  private async take(row: OutboxMessage, now: Date): Promise<boolean> {
    const result = await this.outbox
      .createQueryBuilder()
      .update(OutboxMessage)
      .set({
        attempts: row.attempts + 1,
        nextAttemptAt: new Date(now.getTime() + this.config.outboxLeaseMs),
      })
      .where('id = :id AND status = :queued AND attempts = :attempts', {
        id: row.id,
        queued: 'queued',
        attempts: row.attempts,
      })
      .execute();
    if (result.affected !== 1) {
      return false;
    }
    row.attempts += 1;
    return true;
  }

  /** Publishes one taken row and records the outcome; answers why it failed, if it did. */
  private async publish(row: OutboxMessage): Promise<string | undefined> {
    const handedAt = new Date();
    try {
      await this.publisher.publish({
        id: row.id,
        to: row.to,
        subject: row.subject,
        body: row.body,
      });
    } catch (error) {
      const retryMs = Math.min(
        FIRST_RETRY_MS * 2 ** Math.min(row.attempts - 1, 20),
        this.config.outboxLeaseMs,
      );
      await this.outbox
        .createQueryBuilder()
        .update(OutboxMessage)
        .set({ nextAttemptAt: new Date(Date.now() + retryMs) })
        .where('id = :id AND status = :queued AND attempts = :attempts', {
          id: row.id,
          queued: 'queued',
          attempts: row.attempts,
        })
        .execute()
        .catch(() => undefined);
      return error instanceof Error ? error.message : String(error);
    }
    try {
      // The consumer may have sent it already (and marked it sent): only a queued row becomes
      // published, and the first hand-over time is kept.
      await this.outbox
        .createQueryBuilder()
        .update(OutboxMessage)
        .set({
          status: () => "CASE WHEN status = 'queued' THEN 'published' ELSE status END",
          publishedAt: () => 'COALESCE(published_at, :handedAt)',
        })
        .where('id = :id', { id: row.id })
        .setParameter('handedAt', handedAt)
        .execute();
    } catch (error) {
      return `published, but not marked, so it will be published again (${String(error)})`;
    }
    return undefined;
  }

  /** Logs a warning, but the same one at most every 30 s: a broker outage fills no log. */
  private warn(text: string): void {
    const now = Date.now();
    if (text !== this.lastWarning.text || now - this.lastWarning.at > 30_000) {
      this.logger.warn(text);
      this.lastWarning = { text, at: now };
    }
  }
}
