import { getDataSourceToken } from '@nestjs/typeorm';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { eventually } from '../../../test/utils/processes';
import { describeWithServer } from '../../../test/utils/services';
import { OutboxMessage } from '../src/emails/outbox-message.entity';
import { InProcessEmailTransport } from '../src/emails/transport/in-process.transport';
import { MailerCalls, Rabbit, RABBITMQ_URL, uniqueQueue } from './emails.support';
import { DEPLOYMENTS, PLATFORMS, type RunningApp, startOrdersApi } from './orders-api.harness';
import { SmtpSink } from './smtp-sink';

/**
 * The sample's emails, end to end: `POST /emails` → the outbox → the relay → the queue (RabbitMQ,
 * or the consumer in process) → the idempotent mailer → a real SMTP server (`smtp-server`), which
 * counts deliveries per `Message-ID`. The app runs in this process (SQLite, the TypeORM store in
 * transactional mode); `emails.process.e2e-spec.ts` kills real processes.
 */

const SQLITE = DEPLOYMENTS[0];
const messageIdOf = (id: string) => `<${id}@example.com>`;
const email = (to = `${randomUUID()}@example.com`) => ({
  to,
  subject: 'Your order',
  body: 'It has shipped.',
});

const rabbitGate = await describeWithServer('RabbitMQ', RABBITMQ_URL);
const TRANSPORTS: [string, jest.Describe, () => NodeJS.ProcessEnv][] = [
  ['in process', describe, () => ({})],
  [
    'RabbitMQ',
    rabbitGate,
    () => ({ AMQP_URL: RABBITMQ_URL, AMQP_QUEUE: uniqueQueue('emails-e2e') }),
  ],
];

let sink: SmtpSink;
let rabbit: Rabbit | undefined;
const queues: string[] = [];

beforeAll(async () => {
  sink = await SmtpSink.start();
  if (rabbitGate === describe) {
    rabbit = await Rabbit.connect();
  }
});

afterAll(async () => {
  for (const queue of queues) {
    await rabbit?.deleteQueue(queue).catch(() => undefined);
  }
  await rabbit?.close();
  await sink?.close();
});

/** Starts the app on a fresh SQLite database with the sink as SMTP server. */
async function startApp(
  env: NodeJS.ProcessEnv,
): Promise<RunningApp & { cleanup(): Promise<void> }> {
  const provisioned = await SQLITE.provision();
  if (env.AMQP_QUEUE) {
    queues.push(env.AMQP_QUEUE);
  }
  const running = await startOrdersApi({
    ...provisioned.env,
    SMTP_URL: sink.url,
    OUTBOX_POLL_INTERVAL: '100ms',
    ...env,
  });
  return {
    ...running,
    cleanup: async () => {
      await running.close();
      await provisioned.cleanup();
    },
  };
}

/** `POST /emails` of `body` with a key of its own: the id of the queued email. */
async function queueEmail(app: RunningApp, body: ReturnType<typeof email>): Promise<string> {
  const response = await request(app.url)
    .post('/emails')
    .set('Idempotency-Key', randomUUID())
    .send(body)
    .expect(202);
  return (response.body as { id: string }).id;
}

/** The row once `ready(row)` holds (the relay may record the publish after the mailer the send). */
async function rowWhen(
  app: RunningApp,
  id: string,
  ready: (row: Record<string, unknown>) => boolean,
): Promise<Record<string, unknown>> {
  let row: Record<string, unknown> = {};
  await eventually(`email ${id} to be done`, async () => {
    row = (await request(app.url).get(`/emails/${id}`).expect(200)).body;
    return ready(row);
  });
  return row;
}

for (const [transport, gate, transportEnv] of TRANSPORTS) {
  gate(`emails through ${transport}`, () => {
    describe.each(PLATFORMS)('on %s', (platform) => {
      let app: Awaited<ReturnType<typeof startApp>>;

      beforeAll(async () => {
        app = await startApp({ ...transportEnv(), HTTP_PLATFORM: platform });
      });

      afterAll(() => app?.cleanup());

      it('sends POST /emails exactly once, and a retried POST with its key sends nothing more', async () => {
        const key = `email-${randomUUID()}`;
        const body = email();
        const first = await request(app.url)
          .post('/emails')
          .set('Idempotency-Key', key)
          .send(body)
          .expect(202);
        const { id } = first.body as { id: string };
        await sink.waitFor(messageIdOf(id));
        const row = await rowWhen(app, id, (r) => r.status === 'sent' && r.publishedAt !== null);
        expect(row).toMatchObject({
          id,
          ...body,
          status: 'sent',
          messageId: messageIdOf(id),
          smtpResponse: expect.stringMatching(/^250 /),
          capturedMessage: null,
        });
        expect(Date.parse(row.publishedAt as string)).toBeLessThanOrEqual(
          Date.parse(row.sentAt as string),
        );
        const [delivery] = sink.deliveries.filter((d) => d.messageId === messageIdOf(id));
        expect(delivery.to).toEqual([body.to]);
        expect(delivery.from).toBe('orders@example.com');
        expect(delivery.raw).toContain(`Subject: ${body.subject}`);
        expect(delivery.raw).toContain(body.body);

        const retry = await request(app.url)
          .post('/emails')
          .set('Idempotency-Key', key)
          .send(body)
          .expect(202);
        expect(retry.body).toEqual(first.body);
        expect(retry.headers['idempotent-replayed']).toBe('true');
        // Several relay passes (every 100 ms) later, still one message and one delivery.
        await sleep(600);
        const outbox = (await request(app.url).get('/emails').expect(200)).body as {
          to: string;
        }[];
        expect(outbox.filter((m) => m.to === body.to)).toHaveLength(1);
        expect(sink.count(messageIdOf(id))).toBe(1);
      });

      it('answers 404 EMAIL_NOT_FOUND for an unknown email', async () => {
        const res = await request(app.url).get(`/emails/${randomUUID()}`).expect(404);
        expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
        expect(res.body.code).toBe('EMAIL_NOT_FOUND');
      });
    });

    describe('the mailer', () => {
      let app: Awaited<ReturnType<typeof startApp>>;
      let queue: string | undefined;
      let calls: MailerCalls;

      beforeAll(async () => {
        const env = transportEnv();
        queue = env.AMQP_QUEUE;
        app = await startApp(env);
        calls = new MailerCalls();
      });

      afterAll(async () => {
        calls?.close();
        await app?.cleanup();
      });

      /** A row of the outbox the relay leaves alone (already published), to hand over by hand. */
      async function publishedRow(): Promise<OutboxMessage> {
        const dataSource = app.app.get<DataSource>(getDataSourceToken());
        const row = dataSource.getRepository(OutboxMessage).create({
          id: randomUUID(),
          ...email(),
          status: 'published',
          createdAt: new Date(),
          publishedAt: new Date(),
        });
        await dataSource.getRepository(OutboxMessage).insert(row);
        return row;
      }

      it('sends a message handed over twice with the same messageId once', async () => {
        const row = await publishedRow();
        const message = { id: row.id, to: row.to, subject: row.subject, body: row.body };
        const replayed = calls.replayed;
        if (queue) {
          await rabbit!.publish(queue, message, row.id);
          await rabbit!.publish(queue, message, row.id);
        } else {
          const transport = app.app.get(InProcessEmailTransport);
          const both = await Promise.allSettled([
            transport.deliver(message),
            transport.deliver(message),
          ]);
          expect(both.some((result) => result.status === 'fulfilled')).toBe(true);
          // The one refused while the other ran (in flight) is handed over again, as the relay
          // would: acknowledged, not sent.
          await transport.deliver(message);
        }
        await eventually('the duplicate to be replayed', async () => calls.replayed > replayed);
        await rowWhen(app, row.id, (r) => r.status === 'sent');
        expect(sink.count(messageIdOf(row.id))).toBe(1);
      });

      it('marks an email the SMTP server refuses for good (5xx) failed, and never retries it', async () => {
        const to = `refused-${randomUUID()}@example.com`;
        sink.refusals.set(to, { code: 550, message: 'No such mailbox' });
        const id = await queueEmail(app, email(to));
        const row = await rowWhen(app, id, (r) => r.status === 'failed');
        expect(row).toMatchObject({ smtpResponse: expect.stringMatching(/^550 /) });
        expect(row.sentAt).toEqual(expect.any(String));
        // A retry would come within 1 s (requeue delay, relay backoff).
        await sleep(1_500);
        expect(sink.recipientAttempts.get(to)).toBe(1);
        expect(sink.count(messageIdOf(id))).toBe(0);
      });

      it('retries an email the SMTP server refuses for now (4xx) until it is sent, once', async () => {
        const to = `busy-${randomUUID()}@example.com`;
        sink.refusals.set(to, { code: 451, message: 'Try again later', times: 2 });
        const id = await queueEmail(app, email(to));
        await rowWhen(app, id, (r) => r.status === 'sent');
        expect(sink.recipientAttempts.get(to)).toBe(3);
        expect(sink.count(messageIdOf(id))).toBe(1);
      });

      it('retries an email while the SMTP server refuses its sender, even for good (5xx): a setting to fix, not the email', async () => {
        sink.refusals.set('orders@example.com', {
          code: 553,
          message: 'Sender not allowed',
          times: 1,
        });
        const id = await queueEmail(app, email());
        await rowWhen(app, id, (r) => r.status === 'sent');
        expect(sink.refusals.get('orders@example.com')?.times).toBe(0);
        expect(sink.count(messageIdOf(id))).toBe(1);
      });

      if (transport === 'RabbitMQ') {
        it('drops a message that is not an email, and goes on with the next', async () => {
          await rabbit!.publish(queue!, Buffer.from('not json'), 'garbage-1');
          await rabbit!.publish(queue!, { id: randomUUID(), to: 'nobody' }, 'garbage-2');
          await rabbit!.publish(queue!, email()); // no messageId: no key
          const row = await publishedRow();
          await rabbit!.publish(
            queue!,
            { id: row.id, to: row.to, subject: row.subject, body: row.body },
            row.id,
          );
          await rowWhen(app, row.id, (r) => r.status === 'sent');
          expect(await rabbit!.ready(queue!)).toBe(0);
        });
      }
    });
  });
}

for (const deployment of DEPLOYMENTS) {
  (await deployment.describe)(
    `emails with neither AMQP_URL nor SMTP_URL, on ${deployment.name}`,
    () => {
      let app: RunningApp;
      let cleanup: () => Promise<void>;

      beforeAll(async () => {
        const provisioned = await deployment.provision();
        cleanup = provisioned.cleanup;
        app = await startOrdersApi({ ...provisioned.env, OUTBOX_POLL_INTERVAL: '100ms' });
      });

      afterAll(async () => {
        await app?.close();
        await cleanup?.();
      });

      it('captures the message, once, and GET /emails/:id shows it', async () => {
        const body = email();
        const key = randomUUID();
        const { id } = (
          await request(app.url).post('/emails').set('Idempotency-Key', key).send(body).expect(202)
        ).body as { id: string };
        const row = await rowWhen(app, id, (r) => r.status === 'sent' && r.publishedAt !== null);
        expect(row).toMatchObject({
          status: 'sent',
          smtpResponse: null,
          messageId: messageIdOf(id),
        });
        expect(Date.parse(row.publishedAt as string)).toBeLessThanOrEqual(
          Date.parse(row.sentAt as string),
        );
        const captured = row.capturedMessage as string;
        expect(captured).toContain(`To: ${body.to}`);
        expect(captured).toContain(`Subject: ${body.subject}`);
        expect(captured).toContain(`Message-ID: ${messageIdOf(id)}`);
        expect(captured).toContain(body.body);
        expect(sink.count(messageIdOf(id))).toBe(0);
        await request(app.url).post('/emails').set('Idempotency-Key', key).send(body).expect(202);
        await sleep(300);
        const outbox = (await request(app.url).get('/emails').expect(200)).body as {
          to: string;
        }[];
        expect(outbox.filter((m) => m.to === body.to)).toHaveLength(1);
      });
    },
  );
}
