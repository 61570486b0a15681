/**
 * What the RPC adapter reads of each transport's context object (`@Ctx()`), typed structurally so
 * that `@nestjs/microservices` and the brokers' clients stay optional: each context class is
 * recognised by its accessors.
 */

/** The parts of an amqplib message read or acknowledged here. */
export interface AmqpMessageLike {
  properties?: { headers?: Record<string, unknown>; messageId?: unknown };
}

/** The parts of an amqplib channel used to settle a message. */
export interface AmqpChannelLike {
  ack(message: AmqpMessageLike): void;
  nack(message: AmqpMessageLike, allUpTo?: boolean, requeue?: boolean): void;
}

/** What a transport offers the adapter for one message. */
export interface RpcTransport {
  /** Transport name, for messages. */
  name: 'RabbitMQ' | 'NATS' | 'MQTT' | 'Redis' | 'TCP' | 'Kafka' | 'unknown';
  /** Every value the transport carries under `name` (case-insensitive), in order. */
  values(name: string): unknown[];
  /** The key when no value is found: the AMQP `messageId` property. */
  fallback?: unknown;
  /** The concrete pattern, subject, topic or channel the message came on. */
  pattern?: string;
  /** The amqplib message and channel, to acknowledge (RabbitMQ only). */
  amqp?: { message: AmqpMessageLike; channel: AmqpChannelLike };
}

type Accessors = Record<string, unknown>;

const has = (ctx: Accessors, ...names: string[]) =>
  names.every((name) => typeof ctx[name] === 'function');

const call = <T>(ctx: Accessors, name: string): T => (ctx[name] as () => T).call(ctx);

/** The values of a plain record's entries named `name`, matched case-insensitively. */
function fromRecord(record: unknown, name: string): unknown[] {
  if (typeof record !== 'object' || record === null) {
    return [];
  }
  const lower = name.toLowerCase();
  const values: unknown[] = [];
  for (const [entry, value] of Object.entries(record)) {
    if (entry.toLowerCase() === lower && value !== undefined && value !== null) {
      values.push(...(Array.isArray(value) ? (value as unknown[]) : [value]));
    }
  }
  return values;
}

/** NATS `MsgHdrs`: `keys()` and `values(key)`. */
interface NatsHeadersLike {
  keys(): string[];
  values(key: string): string[];
}

function fromNatsHeaders(headers: unknown, name: string): unknown[] {
  const candidate = headers as Partial<NatsHeadersLike> | undefined;
  if (typeof candidate?.keys !== 'function' || typeof candidate.values !== 'function') {
    return [];
  }
  const lower = name.toLowerCase();
  return candidate
    .keys()
    .filter((key) => key.toLowerCase() === lower)
    .flatMap((key) => (candidate as NatsHeadersLike).values(key));
}

/** Recognises the RPC context of Nest's transports by their accessors. */
export function transportOf(ctx: unknown): RpcTransport {
  const context = (typeof ctx === 'object' && ctx !== null ? ctx : {}) as Accessors;
  if (has(context, 'getChannelRef', 'getMessage', 'getPattern')) {
    const message = call<AmqpMessageLike>(context, 'getMessage');
    const properties = message?.properties;
    return {
      name: 'RabbitMQ',
      values: (name) => fromRecord(properties?.headers, name),
      fallback: properties?.messageId,
      pattern: call<string>(context, 'getPattern'),
      amqp: { message, channel: call<AmqpChannelLike>(context, 'getChannelRef') },
    };
  }
  if (has(context, 'getSubject', 'getHeaders')) {
    const headers = call<unknown>(context, 'getHeaders');
    return {
      name: 'NATS',
      values: (name) => fromNatsHeaders(headers, name),
      pattern: call<string>(context, 'getSubject'),
    };
  }
  if (has(context, 'getTopic', 'getPacket')) {
    const packet = call<{ properties?: { userProperties?: unknown } } | undefined>(
      context,
      'getPacket',
    );
    return {
      name: 'MQTT',
      values: (name) => fromRecord(packet?.properties?.userProperties, name),
      pattern: call<string>(context, 'getTopic'),
    };
  }
  if (has(context, 'getChannel', 'getMetadata')) {
    const metadata = call<unknown>(context, 'getMetadata');
    return {
      name: 'Redis',
      values: (name) => fromRecord(metadata, name),
      pattern: call<string>(context, 'getChannel'),
    };
  }
  if (has(context, 'getSocketRef', 'getMetadata', 'getPattern')) {
    const metadata = call<unknown>(context, 'getMetadata');
    return {
      name: 'TCP',
      values: (name) => fromRecord(metadata, name),
      pattern: call<string>(context, 'getPattern'),
    };
  }
  if (has(context, 'getPartition', 'getMessage', 'getTopic')) {
    const message = call<{ headers?: unknown } | undefined>(context, 'getMessage');
    return {
      name: 'Kafka',
      values: (name) => fromRecord(message?.headers, name),
      pattern: call<string>(context, 'getTopic'),
    };
  }
  return { name: 'unknown', values: () => [] };
}
