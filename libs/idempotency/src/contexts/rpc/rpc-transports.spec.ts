import type { ExecutionContext } from '@nestjs/common';
import {
  KafkaContext,
  MqttContext,
  NatsContext,
  RedisContext,
  RmqContext,
  TcpContext,
} from '@nestjs/microservices';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { resolveOptions } from '../../engine/resolved-options';
import type { IdempotentOptions } from '../../idempotency.options';
import type { IdempotencyKeyIssuer } from '../../idempotency-key-issuer';
import type { IdempotentHandler } from '../idempotent-handlers';
import { RpcContextAdapter } from './rpc-context.adapter';
import { transportOf } from './rpc-transports';

/** An RPC execution context of `ctx` and `data`, as Nest builds it for a handler. */
function rpcContext(ctx: object, data: unknown = {}): ExecutionContext {
  return {
    getType: () => 'rpc',
    switchToRpc: () => ({ getData: () => data, getContext: () => ctx }),
  } as unknown as ExecutionContext;
}

function handlerWith(options: IdempotentOptions = {}): IdempotentHandler {
  class Consumer {
    handle() {}
  }
  Reflect.defineMetadata('microservices:pattern', ['orders.created'], Consumer.prototype.handle);
  return {
    options: resolveOptions(options),
    controller: Consumer,
    handler: Consumer.prototype.handle as IdempotentHandler['handler'],
    name: 'Consumer.handle',
  };
}

const amqp = (properties: object) =>
  new RmqContext([{ properties, fields: {}, content: Buffer.from('{}') }, {}, 'orders.created']);

describe('transportOf', () => {
  it('reads AMQP headers in any case, and the messageId', () => {
    const transport = transportOf(amqp({ headers: { 'idempotency-KEY': 'k1' }, messageId: 'm1' }));
    expect(transport.name).toBe('RabbitMQ');
    expect(transport.values('Idempotency-Key')).toEqual(['k1']);
    expect(transport.fallback).toBe('m1');
    expect(transport.amqp).toBeDefined();
  });

  it('reads NATS headers in any case', () => {
    const headers = natsHeaders();
    headers.set('idempotency-key', 'k1');
    const transport = transportOf(new NatsContext(['orders', headers]));
    expect(transport.name).toBe('NATS');
    expect(transport.values('Idempotency-Key')).toEqual(['k1']);
    expect(transportOf(new NatsContext(['orders', undefined])).values('Idempotency-Key')).toEqual(
      [],
    );
  });

  it('reads MQTT 5 user properties, a repeated one as all its values', () => {
    const packet = { properties: { userProperties: { 'Idempotency-Key': ['k1', 'k1'] } } };
    const transport = transportOf(new MqttContext(['orders', packet]));
    expect(transport.name).toBe('MQTT');
    expect(transport.values('idempotency-key')).toEqual(['k1', 'k1']);
  });

  it('reads Redis and TCP packet metadata', () => {
    const metadata = { 'Idempotency-Key': 'k1' };
    expect(transportOf(new RedisContext(['orders', metadata])).values('idempotency-key')).toEqual([
      'k1',
    ]);
    const tcp = transportOf(new TcpContext([{} as never, 'orders', metadata]));
    expect(tcp.name).toBe('TCP');
    expect(tcp.values('Idempotency-Key')).toEqual(['k1']);
  });

  it('reads Kafka headers', () => {
    const message = { headers: { 'Idempotency-Key': Buffer.from('k1') } };
    const kafka = new KafkaContext([
      message as never,
      0,
      'orders',
      {} as never,
      async () => {},
      {} as never,
    ]);
    const transport = transportOf(kafka);
    expect(transport.name).toBe('Kafka');
    expect(transport.values('Idempotency-Key')).toEqual([Buffer.from('k1')]);
  });

  it('finds nothing in a context it does not know', () => {
    expect(transportOf({}).values('Idempotency-Key')).toEqual([]);
    expect(transportOf(undefined).name).toBe('unknown');
  });
});

describe('RpcContextAdapter.describe', () => {
  const adapter = new RpcContextAdapter({} as IdempotencyKeyIssuer);
  const describeCall = (ctx: object, options?: IdempotentOptions, data?: unknown) =>
    adapter.describe(rpcContext(ctx, data), handlerWith(options));

  it('takes the AMQP messageId when no header carries the key', () => {
    const a = describeCall(amqp({ messageId: 'm1' }));
    const b = describeCall(amqp({ headers: { 'Idempotency-Key': 'm1' } }));
    expect(a).toMatchObject({ target: 'orders.created', key: expect.any(String) });
    expect(a && typeof a === 'object' && 'key' in a ? a.key : undefined).toBe(
      b && typeof b === 'object' && 'key' in b ? b.key : 'different',
    );
  });

  it('prefers the header to the messageId, and reads a Buffer header as UTF-8', () => {
    const header = describeCall(amqp({ headers: { 'Idempotency-Key': Buffer.from('h1') } }));
    const both = describeCall(amqp({ headers: { 'Idempotency-Key': 'h1' }, messageId: 'm1' }));
    expect(header).toEqual(both);
  });

  it('refuses a key carried twice with different values, or one that is not a string', () => {
    const packet = { properties: { userProperties: { 'Idempotency-Key': ['k1', 'k2'] } } };
    expect(describeCall(new MqttContext(['orders', packet]))).toMatchObject({
      rejection: { code: 'IDEMPOTENCY_KEY_INVALID', detail: expect.stringContaining('different') },
    });
    expect(describeCall(amqp({ messageId: 42 }))).toMatchObject({
      rejection: { code: 'IDEMPOTENCY_KEY_INVALID' },
    });
    expect(describeCall(amqp({ headers: { 'Idempotency-Key': 7 } }))).toMatchObject({
      rejection: { code: 'IDEMPOTENCY_KEY_INVALID' },
    });
  });

  it('answers a missing key, or unprotected when none is required', () => {
    expect(describeCall(amqp({}))).toMatchObject({
      rejection: { code: 'IDEMPOTENCY_KEY_MISSING' },
    });
    expect(describeCall(amqp({}), { required: false })).toBe('unprotected');
  });

  it('uses a custom header name', () => {
    const ctx = new RedisContext(['orders', { 'X-Event-Id': 'e1' }]);
    expect(describeCall(ctx, { headerName: 'x-event-id' })).toMatchObject({
      key: expect.any(String),
    });
  });

  it('claims once per handler when the interceptor runs twice on one message', () => {
    const ctx = amqp({ messageId: 'm1' });
    const handler = handlerWith();
    expect(adapter.describe(rpcContext(ctx), handler)).toMatchObject({ key: expect.any(String) });
    expect(adapter.describe(rpcContext(ctx), handler)).toBeUndefined();
  });
});
