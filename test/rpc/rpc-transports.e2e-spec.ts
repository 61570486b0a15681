import { randomBytes, randomUUID } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Controller, type INestApplication } from '@nestjs/common';
import {
  ClientProxyFactory,
  EventPattern,
  MessagePattern,
  Payload,
  RpcException,
  type ClientProxy,
} from '@nestjs/microservices';
import { Test } from '@nestjs/testing';
import { connect as amqpConnect } from 'amqplib';
import { firstValueFrom, from, toArray } from 'rxjs';
import {
  IdempotencyChannel,
  type IdempotencyExecutedEvent,
  type IdempotencyRejectedEvent,
  type IdempotencyReplayedEvent,
  Idempotent,
  IdempotencyModule,
  type IdempotencyRpcError,
  isIdempotencyRpcError,
} from 'nestjs-idempotency';
import { eventually } from '../utils/processes';
import { describeWithServer } from '../utils/services';
import { brokerTransports, type BrokerTransport } from './brokers';

/**
 * `@Idempotent()` on `@MessagePattern` and `@EventPattern` handlers, in one process, on each real
 * broker: the key as each transport carries it, duplicates published 100 times, replies replayed
 * (streams too), rejections as a `ClientProxy.send()` caller receives them, and, on RabbitMQ with
 * manual acks, an in-flight duplicate requeued until the first attempt completes.
 */

const SUFFIX = randomBytes(4).toString('hex');
const pattern = (name: string) => `rpc-${name}-${SUFFIX}`;

/** What the handlers did, by key (the data carries it too, for the assertions). */
const effects = new Map<string, number>();
const count = (key: string) => effects.get(key) ?? 0;
const effect = (key: string) => effects.set(key, count(key) + 1);

/** Opens the gate of a `slow` call, by key. */
const gates = new Map<string, () => void>();
const gate = (key: string) =>
  new Promise<void>((resolve) => {
    gates.set(key, resolve);
  });

type Keyed = { key: string; amount?: number; fail?: boolean };

@Controller()
@Idempotent({ concurrent: 'wait', acknowledge: true })
class PaymentsController {
  @MessagePattern(pattern('charge'))
  charge(@Payload() data: Keyed) {
    effect(data.key);
    return { chargeId: randomUUID(), amount: data.amount };
  }

  @EventPattern<Record<string, Keyed>>(pattern('shipped'))
  shipped(@Payload() data: Keyed) {
    effect(data.key);
  }

  @MessagePattern(pattern('stream'))
  stream(@Payload() data: Keyed) {
    effect(data.key);
    return from([{ part: 1 }, { part: 2 }, { part: 3, id: randomUUID() }]);
  }

  @MessagePattern(pattern('declined'))
  declined(@Payload() data: Keyed) {
    effect(data.key);
    if (data.fail) {
      throw new Error('gateway down');
    }
    throw new RpcException({ reason: 'card declined', attempt: count(data.key) });
  }

  @MessagePattern(pattern('slow'))
  @Idempotent({ concurrent: 'reject', retryAfter: 150 })
  async slow(@Payload() data: Keyed) {
    effect(data.key);
    await gate(data.key);
    return { done: data.key };
  }

  @EventPattern<Record<string, Keyed>>(pattern('slow-event'))
  @Idempotent({ concurrent: 'reject', retryAfter: 100 })
  async slowEvent(@Payload() data: Keyed) {
    effect(data.key);
    await gate(data.key);
  }

  @EventPattern<Record<string, Keyed>>(pattern('flaky-event'))
  @Idempotent({ retryAfter: 100 })
  flakyEvent(@Payload() data: Keyed) {
    effect(data.key);
    if (count(data.key) === 1) {
      throw new Error('first delivery fails');
    }
  }

  @MessagePattern(pattern('optional'))
  @Idempotent({ required: false })
  optional(@Payload() data: Keyed) {
    effect(data.key);
    return { ran: count(data.key) };
  }

  @MessagePattern(pattern('by-path'))
  @Idempotent({ key: { path: 'meta.eventId' } })
  byPath(@Payload() data: { meta: { eventId: string } }) {
    effect(data.meta.eventId);
    return { id: randomUUID() };
  }
}

/** Events published on the library's channels while a test runs. */
class Recorder {
  readonly executed: IdempotencyExecutedEvent[] = [];
  readonly replayed: IdempotencyReplayedEvent[] = [];
  readonly rejected: IdempotencyRejectedEvent[] = [];
  private readonly listeners = [
    [IdempotencyChannel.Executed, (e: unknown) => this.executed.push(e as never)],
    [IdempotencyChannel.Replayed, (e: unknown) => this.replayed.push(e as never)],
    [IdempotencyChannel.Rejected, (e: unknown) => this.rejected.push(e as never)],
  ] as const;

  constructor() {
    for (const [name, listener] of this.listeners) {
      subscribe(name, listener);
    }
  }

  stop(): void {
    for (const [name, listener] of this.listeners) {
      unsubscribe(name, listener);
    }
  }

  of<T extends { target: string }>(events: T[], name: string): T[] {
    return events.filter((event) => event.target === pattern(name));
  }
}

/** Messages ready in the suite's queue (those a closed consumer left unacknowledged come back). */
async function readyMessages(transport: BrokerTransport): Promise<number> {
  const connection = await amqpConnect(transport.url);
  try {
    const channel = await connection.createChannel();
    return (await channel.checkQueue(queueOf(transport))).messageCount;
  } finally {
    await connection.close();
  }
}

async function deleteQueue(transport: BrokerTransport): Promise<void> {
  const connection = await amqpConnect(transport.url);
  try {
    await (await connection.createChannel()).deleteQueue(queueOf(transport));
  } finally {
    await connection.close();
  }
}

const queueOf = (transport: BrokerTransport) =>
  (transport.server as { options: { queue: string } }).options.queue;

const gated = await Promise.all(
  brokerTransports(SUFFIX).map(
    async (transport) =>
      [transport, await describeWithServer(transport.broker, transport.url)] as const,
  ),
);

describe.each(gated.map(([transport, gate]) => ({ transport, gate, name: transport.name })))(
  'RPC context on $name',
  ({ transport, gate: describeBroker }: { transport: BrokerTransport; gate: jest.Describe }) => {
    describeBroker('in one process', () => {
      let app: INestApplication;
      let client: ClientProxy;
      let recorder: Recorder;
      let closed: (() => Promise<void>) | undefined;

      const send = <T>(name: string, data: Keyed | object, key?: string) =>
        firstValueFrom(
          client.send<T>(
            pattern(name),
            key === undefined ? data : transport.keyed(client, data, key),
          ),
        );
      const sendAll = <T>(name: string, data: Keyed, key: string) =>
        firstValueFrom(
          client.send<T>(pattern(name), transport.keyed(client, data, key)).pipe(toArray()),
        );
      const failure = async (promise: Promise<unknown>): Promise<unknown> => {
        try {
          await promise;
        } catch (error) {
          return error;
        }
        throw new Error('expected the call to fail');
      };

      beforeAll(async () => {
        const moduleRef = await Test.createTestingModule({
          imports: [IdempotencyModule.forRoot()],
          controllers: [PaymentsController],
        }).compile();
        app = moduleRef.createNestApplication({ logger: false });
        app.connectMicroservice(transport.server, { inheritAppConfig: true });
        await app.startAllMicroservices();
        await app.init();
        closed = async () => {
          closed = undefined;
          await app.close();
        };
        client = ClientProxyFactory.create(transport.client);
        await client.connect();
      });

      afterAll(async () => {
        await client?.close();
        await closed?.();
        if (transport.name === 'RabbitMQ') {
          await deleteQueue(transport);
        }
      });

      beforeEach(() => {
        recorder = new Recorder();
      });

      afterEach(() => recorder.stop());

      it('runs a message published 100 times once; all 100 replies are the first one', async () => {
        const key = `charge-${randomUUID()}`;
        const data = { key, amount: 42 };
        const replies = await Promise.all(
          Array.from({ length: 100 }, () => send<{ chargeId: string }>('charge', data, key)),
        );
        expect(count(key)).toBe(1);
        expect(new Set(replies.map((reply) => JSON.stringify(reply))).size).toBe(1);
        expect(replies[0]).toEqual({ chargeId: expect.any(String), amount: 42 });
        const executed = recorder.of(recorder.executed, 'charge');
        expect(executed).toHaveLength(1);
        expect(executed[0]).toMatchObject({ context: 'rpc', record: 'stored' });
        expect(recorder.of(recorder.replayed, 'charge')).toHaveLength(99);
      });

      it('runs an event published 100 times once', async () => {
        const key = `shipped-${randomUUID()}`;
        const data = { key };
        await Promise.all(
          Array.from({ length: 100 }, () =>
            firstValueFrom(client.emit(pattern('shipped'), transport.keyed(client, data, key)), {
              defaultValue: undefined,
            }),
          ),
        );
        await eventually('100 deliveries', async () => {
          const seen =
            recorder.of(recorder.executed, 'shipped').length +
            recorder.of(recorder.replayed, 'shipped').length;
          return seen === 100;
        });
        expect(count(key)).toBe(1);
        expect(recorder.of(recorder.executed, 'shipped')).toHaveLength(1);
      });

      it('replays every value of a handler that returns several', async () => {
        const key = `stream-${randomUUID()}`;
        const first = await sendAll<object>('stream', { key }, key);
        expect(first).toEqual([{ part: 1 }, { part: 2 }, { part: 3, id: expect.any(String) }]);
        const again = await sendAll<object>('stream', { key }, key);
        expect(again).toEqual(first);
        expect(count(key)).toBe(1);
      });

      it('stores an RpcException and throws it again; releases the key after another error', async () => {
        const key = `declined-${randomUUID()}`;
        const error = await failure(send('declined', { key }, key));
        expect(error).toEqual({ reason: 'card declined', attempt: 1 });
        expect(await failure(send('declined', { key }, key))).toEqual(error);
        expect(count(key)).toBe(1);

        const failing = `failing-${randomUUID()}`;
        await failure(send('declined', { key: failing, fail: true }, failing));
        await failure(send('declined', { key: failing, fail: true }, failing));
        expect(count(failing)).toBe(2);
      });

      it('reads the key from a field of the data with key: { path }', async () => {
        const eventId = `evt-${randomUUID()}`;
        const data = { meta: { eventId } };
        const [a, b] = [await send('by-path', data), await send('by-path', data)];
        expect(b).toEqual(a);
        expect(count(eventId)).toBe(1);
      });

      describe('rejections, as a ClientProxy.send() caller receives them', () => {
        it('a missing key', async () => {
          const error = await failure(send('charge', { key: 'none' }));
          expect(isIdempotencyRpcError(error)).toBe(true);
          expect(error).toMatchObject({
            code: 'IDEMPOTENCY_KEY_MISSING',
            status: 400,
            message: expect.stringContaining('Idempotency-Key'),
          });
          expect(count('none')).toBe(0);
        });

        it('an invalid key', async () => {
          const error = await failure(send('charge', { key: 'bad' }, 'caf\u00e9'));
          expect(error).toMatchObject({ code: 'IDEMPOTENCY_KEY_INVALID', status: 400 });
          expect(count('bad')).toBe(0);
        });

        it('a key reused with other data', async () => {
          const key = `reused-${randomUUID()}`;
          await send('charge', { key, amount: 1 }, key);
          const error = await failure(send('charge', { key, amount: 2 }, key));
          expect(error).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', status: 422 });
          expect(count(key)).toBe(1);
        });

        it('a call in flight, with retryAfterMs', async () => {
          const key = `slow-${randomUUID()}`;
          const first = send('slow', { key }, key);
          await eventually('the first call to start', async () => count(key) === 1);
          const error = (await failure(send('slow', { key }, key))) as IdempotencyRpcError;
          expect(error).toMatchObject({
            code: 'IDEMPOTENCY_REQUEST_IN_PROGRESS',
            status: 409,
            retryAfterMs: 150,
          });
          gates.get(key)!();
          expect(await first).toEqual({ done: key });
          expect(await send('slow', { key }, key)).toEqual({ done: key });
          expect(count(key)).toBe(1);
        });
      });

      if (transport.name === 'RabbitMQ') {
        it('requeues an in-flight duplicate event until the first attempt completes, then acks it as done', async () => {
          const key = `slow-event-${randomUUID()}`;
          const data = { key };
          await firstValueFrom(
            client.emit(pattern('slow-event'), transport.keyed(client, data, key)),
            { defaultValue: undefined },
          );
          await eventually('the first delivery to start', async () => count(key) === 1);
          await firstValueFrom(
            client.emit(pattern('slow-event'), transport.keyed(client, data, key)),
            { defaultValue: undefined },
          );
          await eventually(
            'the duplicate to be requeued twice',
            async () => recorder.of(recorder.rejected, 'slow-event').length >= 2,
          );
          expect(recorder.of(recorder.rejected, 'slow-event')[0].code).toBe(
            'IDEMPOTENCY_REQUEST_IN_PROGRESS',
          );
          gates.get(key)!();
          await eventually(
            'the redelivered duplicate to replay',
            async () => recorder.of(recorder.replayed, 'slow-event').length === 1,
          );
          expect(count(key)).toBe(1);
          expect(recorder.of(recorder.executed, 'slow-event')).toHaveLength(1);
        });

        it('requeues an event whose handler failed and released its key: the redelivery runs it', async () => {
          const key = `flaky-${randomUUID()}`;
          await firstValueFrom(
            client.emit(pattern('flaky-event'), transport.keyed(client, { key }, key)),
            { defaultValue: undefined },
          );
          await eventually(
            'the redelivery to complete',
            async () =>
              recorder.of(recorder.executed, 'flaky-event').filter((e) => !e.failed).length === 1,
          );
          expect(recorder.of(recorder.executed, 'flaky-event')).toMatchObject([
            { failed: true, record: 'released' },
            { failed: false, record: 'stored' },
          ]);
          expect(count(key)).toBe(2);
        });

        it('acks a message it ran unprotected (required: false, no key)', async () => {
          const key = `optional-${randomUUID()}`;
          expect(await send('optional', { key })).toEqual({ ran: 1 });
          expect(await send('optional', { key })).toEqual({ ran: 2 });
        });

        it('acknowledged every message it settled: none is left in the queue once the consumer closes', async () => {
          await client.close();
          await closed?.();
          expect(await readyMessages(transport)).toBe(0);
        });
      }
    });
  },
);
