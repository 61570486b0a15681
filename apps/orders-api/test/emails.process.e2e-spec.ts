import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { DataSource, type QueryRunner } from 'typeorm';
import {
  createTemporaryDatabase,
  POSTGRES_URL,
  type TemporaryDatabase,
} from '../../../test/utils/databases';
import { eventually, killAllChildren } from '../../../test/utils/processes';
import { parsePrometheusText } from '../../../test/utils/prometheus-text';
import { describeWithServers } from '../../../test/utils/services';
import { Rabbit, RABBITMQ_URL, uniqueQueue } from './emails.support';
import { type AppProcess, startOrdersApi } from './orders-api.process';
import { type SinkDelivery, SmtpSink } from './smtp-sink';
import { TcpProxy } from './tcp-proxy';

/**
 * The mailer as real processes, killed with SIGKILL at the two sides of the window an SMTP send
 * leaves (see the README): after the COMMIT and before the ack, a redelivery is acknowledged
 * without a second send; after the SMTP server accepted and before the COMMIT, the redelivery
 * sends again, with the same Message-ID. Also: a relay killed between a publish and its mark
 * publishes again and the consumer sends once, and SIGTERM lets a send under way finish. On
 * PostgreSQL with the TypeORM store (transactional mode) and RabbitMQ; a TCP proxy in front of
 * RabbitMQ holds an ack or a confirm, a row lock holds the COMMIT, the SMTP sink holds its 250.
 */

/** ts-node starts the app in several seconds on a small machine. */
const CASE_MS = 120_000;
const messageIdOf = (id: string) => `<${id}@example.com>`;
const idOf = (delivery: SinkDelivery) => /^<([^@]+)@/.exec(delivery.messageId)![1];

let sink: SmtpSink;
beforeAll(async () => {
  sink = await SmtpSink.start();
});
afterAll(async () => {
  await killAllChildren();
  await sink?.close();
});

/** Holds the next message the sink receives before its 250, until `release()`. */
function holdNextDelivery(before?: (delivery: SinkDelivery) => Promise<void>) {
  let received!: (delivery: SinkDelivery) => void;
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const delivery = new Promise<SinkDelivery>((resolve) => (received = resolve));
  sink.beforeAccept = async (d) => {
    sink.beforeAccept = undefined;
    await before?.(d);
    received(d);
    await released;
  };
  return { delivery, release };
}

/** Replays of the mailer the app counted (`GET /metrics`). */
async function mailerReplays(app: AppProcess): Promise<number> {
  const text = (await request(app.url).get('/metrics').expect(200)).text;
  return parsePrometheusText(text)
    .filter(
      (s) =>
        s.name === 'idempotency_requests_total' &&
        s.labels.outcome === 'replayed' &&
        s.labels.target.includes('emails'),
    )
    .reduce((sum, s) => sum + s.value, 0);
}

const postEmail = async (app: AppProcess) =>
  (
    await request(app.url)
      .post('/emails')
      .set('Idempotency-Key', randomUUID())
      .send({ to: `${randomUUID()}@example.com`, subject: 'Receipt', body: 'Thanks.' })
      .expect(202)
  ).body.id as string;

(await describeWithServers(['PostgreSQL', POSTGRES_URL], ['RabbitMQ', RABBITMQ_URL]))(
  'the mailer as processes on PostgreSQL and RabbitMQ',
  () => {
    let database: TemporaryDatabase;
    let sql: DataSource | undefined;
    let rabbit: Rabbit;
    let proxy: TcpProxy;
    let queue: string;

    beforeEach(async () => {
      database = await createTemporaryDatabase('postgres', 'emails_process');
      rabbit = await Rabbit.connect();
      proxy = await TcpProxy.start({ host: '127.0.0.1', port: 5672 });
      queue = uniqueQueue('emails-process');
    });

    afterEach(async () => {
      await killAllChildren();
      sink.beforeAccept = undefined;
      await proxy?.close();
      await rabbit?.deleteQueue(queue).catch(() => undefined);
      await rabbit?.close();
      await sql?.destroy();
      sql = undefined;
      await database?.drop();
    });

    /** Starts the app; `viaProxy` sends its RabbitMQ traffic through the test's proxy. */
    async function start(viaProxy: boolean): Promise<AppProcess> {
      const rabbitUrl = new URL(RABBITMQ_URL);
      if (viaProxy) {
        rabbitUrl.host = `127.0.0.1:${proxy.port}`;
      }
      const app = await startOrdersApi({
        env: {
          DATABASE_URL: database.url,
          IDEMPOTENCY_STORE: 'typeorm',
          AMQP_URL: rabbitUrl.toString(),
          AMQP_QUEUE: queue,
          SMTP_URL: sink.url,
          OUTBOX_POLL_INTERVAL: '100ms',
          OUTBOX_LEASE: '2s',
          IDEMPOTENCY_LOCK_TTL: '2s',
        },
      });
      await app.waitForOutput(/Consuming the RabbitMQ queue/);
      await app.waitForOutput(/Publishing to the RabbitMQ queue/);
      sql ??= await new DataSource({ type: 'postgres', url: database.url }).initialize();
      return app;
    }

    async function row(id: string): Promise<{ status: string; attempts: number }> {
      const [found] = await sql!.query(
        'SELECT status, attempts FROM outbox_messages WHERE id = $1',
        [id],
      );
      return found;
    }

    async function kill(app: AppProcess): Promise<void> {
      app.signal('SIGKILL');
      await app.exited;
      proxy.dropAll();
    }

    it(
      'killed after the COMMIT and before the ack: the redelivery is acknowledged, not sent again',
      async () => {
        const first = await start(true);
        // The proxy keeps what the app sends to RabbitMQ from the moment the SMTP server has the
        // message: its ack never arrives.
        const held = holdNextDelivery(async () => proxy.holdUpstream());
        const id = await postEmail(first);
        expect(idOf(await held.delivery)).toBe(id);
        held.release();
        await eventually('the delivery to commit', async () => (await row(id)).status === 'sent');
        await kill(first);
        await eventually('RabbitMQ to requeue the unacknowledged message', async () => {
          return (await rabbit.ready(queue)) === 1;
        });

        const second = await start(false);
        await eventually('the redelivery to be replayed', async () => {
          return (await mailerReplays(second)) === 1;
        });
        await eventually('the queue to be empty', async () => (await rabbit.ready(queue)) === 0);
        expect(sink.count(messageIdOf(id))).toBe(1);
        expect((await row(id)).status).toBe('sent');
      },
      CASE_MS,
    );

    it(
      'killed after the SMTP server accepted and before the COMMIT: the redelivery sends again, with the same Message-ID',
      async () => {
        const first = await start(false);
        let lock: QueryRunner | undefined;
        // A lock on the row (taken once the relay marked it published) holds the mailer's
        // UPDATE, so its transaction cannot commit: SMTP has accepted, the COMMIT is pending.
        const held = holdNextDelivery(async (delivery) => {
          const id = idOf(delivery);
          await eventually(
            'the relay to mark it',
            async () => (await row(id)).status === 'published',
          );
          lock = sql!.createQueryRunner();
          await lock.startTransaction();
          await lock.query('SELECT id FROM outbox_messages WHERE id = $1 FOR UPDATE', [id]);
        });
        const id = await postEmail(first);
        await held.delivery;
        held.release();
        await sink.waitFor(messageIdOf(id));
        await eventually('the mailer to wait for the row', async () => {
          const [{ waiting }] = await sql!.query(
            `SELECT count(*)::int AS waiting FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'`,
          );
          return waiting === 1;
        });
        await kill(first);
        await lock!.rollbackTransaction();
        await lock!.release();
        await eventually('the killed transaction to end', async () => {
          const [{ open }] = await sql!.query(
            `SELECT count(*)::int AS open FROM pg_stat_activity
             WHERE datname = current_database() AND state LIKE 'idle in transaction%'`,
          );
          return open === 0;
        });
        expect((await row(id)).status).toBe('published');

        // Its idempotency record is in flight until the dead holder's lease (2 s) lapses; the
        // redelivery is requeued until then, and then sends.
        const second = await start(false);
        await sink.waitFor(messageIdOf(id), 2);
        await eventually(
          'the second delivery to commit',
          async () => (await row(id)).status === 'sent',
        );
        const deliveries = sink.deliveries.filter((d) => d.messageId === messageIdOf(id));
        expect(deliveries).toHaveLength(2);
        expect(deliveries[1].to).toEqual(deliveries[0].to);
        expect(await mailerReplays(second)).toBe(0);
      },
      CASE_MS,
    );

    it(
      'a relay killed between a publish and its mark publishes again, and the email is sent once',
      async () => {
        const first = await start(true);
        // RabbitMQ gets the publish, the relay never gets the confirm (nor the consumer the message).
        proxy.holdDownstream();
        const id = await postEmail(first);
        await eventually('the publish to reach RabbitMQ', async () => {
          return (await row(id)).attempts === 1 && proxy.forwardedUpstream >= 100;
        });
        await kill(first);
        await eventually(
          'the message to be in the queue',
          async () => (await rabbit.ready(queue)) === 1,
        );
        expect(await row(id)).toEqual({ status: 'queued', attempts: 1 });

        // The next relay takes the row once the dead one's lease (2 s) lapsed, and publishes it
        // again while the first copy is being sent (held by the SMTP server).
        const held = holdNextDelivery();
        const second = await start(false);
        expect(idOf(await held.delivery)).toBe(id);
        await eventually('the row to be published again', async () => {
          const { status, attempts } = await row(id);
          return status === 'published' && attempts === 2;
        });
        held.release();
        await eventually('the second copy to be replayed', async () => {
          return (await mailerReplays(second)) === 1;
        });
        expect(sink.count(messageIdOf(id))).toBe(1);
        expect((await row(id)).status).toBe('sent');
        await eventually('the queue to be empty', async () => (await rabbit.ready(queue)) === 0);
      },
      CASE_MS,
    );

    it(
      'on SIGTERM, stops consuming, lets the send under way finish and be acknowledged, and exits 0',
      async () => {
        const app = await start(false);
        const held = holdNextDelivery();
        const id = await postEmail(app);
        await held.delivery;
        app.signal('SIGTERM');
        await app.waitForOutput(/Waiting for 1 message\(s\) being delivered/, 10_000);
        expect(app.running).toBe(true);
        held.release();
        expect(await app.exited).toEqual({ code: 0, signal: null });
        expect(app.stdout).toContain('Closed');
        expect(app.stdout + app.stderr).not.toMatch(/ERROR/);
        expect((await row(id)).status).toBe('sent');
        expect(await rabbit.ready(queue)).toBe(0);
        expect(sink.count(messageIdOf(id))).toBe(1);
      },
      CASE_MS,
    );
  },
);

describe('the mailer in process, as a process on SQLite', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'emails-process-'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(
    'on SIGTERM, lets the send under way finish, records it, and exits 0',
    async () => {
      const file = join(dir, 'orders.sqlite');
      const app = await startOrdersApi({
        env: { DATABASE_URL: file, SMTP_URL: sink.url, OUTBOX_POLL_INTERVAL: '100ms' },
      });
      const held = holdNextDelivery();
      const id = await postEmail(app);
      await held.delivery;
      app.signal('SIGTERM');
      await app.waitForOutput(/Stopping: waiting for the emails being published/, 10_000);
      expect(app.running).toBe(true);
      held.release();
      expect(await app.exited).toEqual({ code: 0, signal: null });
      expect(app.stdout + app.stderr).not.toMatch(/ERROR/);
      const db = await new DataSource({ type: 'better-sqlite3', database: file }).initialize();
      try {
        expect(await db.query('SELECT status FROM outbox_messages WHERE id = ?', [id])).toEqual([
          { status: 'sent' },
        ]);
      } finally {
        await db.destroy();
      }
      expect(sink.count(messageIdOf(id))).toBe(1);
    },
    CASE_MS,
  );
});
