import { randomBytes } from 'node:crypto';
import { headers as natsHeaders } from '@nats-io/transport-node';
import {
  type ClientOptions,
  type ClientProxy,
  type MicroserviceOptions,
  MqttRecordBuilder,
  NatsRecordBuilder,
  RmqRecordBuilder,
  Transport,
} from '@nestjs/microservices';
import { REDIS_URL } from '../utils/databases';

/** The machine's brokers (see .ci/run), overridable for another machine. */
export const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';
export const MQTT_URL = process.env.MQTT_URL ?? 'mqtt://127.0.0.1:1883';
export { REDIS_URL };

/** The name `describeWithServer` knows each broker by. */
export type BrokerName = 'RabbitMQ' | 'NATS' | 'Mosquitto' | 'Redis';

/** One transport under test: how a server and a client reach it, and how a key travels on it. */
export interface BrokerTransport {
  /** Transport name in test titles. */
  name: 'RabbitMQ' | 'NATS' | 'MQTT' | 'Redis';
  broker: BrokerName;
  url: string;
  /** Options of the consumer (`connectMicroservice`); RabbitMQ with manual acks. */
  server: MicroserviceOptions;
  /** Options of `ClientProxyFactory.create()` for the same queue or subjects. */
  client: ClientOptions;
  /**
   * The data to `send()` / `emit()` so that the message carries `key` the transport's own way
   * (AMQP header, NATS header, MQTT 5 user property, Redis packet metadata).
   */
  keyed(client: ClientProxy, data: object, key: string): unknown;
}

/** Keys set on the next Redis packets, by data object: the dispatch hook puts them in metadata. */
const redisKeys = new WeakMap<object, string>();

/**
 * The four transports, each on names of its own (`suffix`): a RabbitMQ queue, and NATS subjects,
 * MQTT topics and Redis channels named by the patterns (which the suite suffixes too).
 */
export function brokerTransports(suffix = randomBytes(4).toString('hex')): BrokerTransport[] {
  const queue = `rpc-${suffix}`;
  const rmq = {
    urls: [AMQP_URL],
    queue,
    queueOptions: { durable: false },
  };
  const redis = new URL(REDIS_URL);
  const redisOptions = { host: redis.hostname, port: Number(redis.port || 6379) };
  return [
    {
      name: 'RabbitMQ',
      broker: 'RabbitMQ',
      url: AMQP_URL,
      server: {
        transport: Transport.RMQ,
        options: { ...rmq, noAck: false, prefetchCount: 200 },
      },
      client: { transport: Transport.RMQ, options: rmq },
      keyed: (_client, data, key) =>
        new RmqRecordBuilder(data).setOptions({ headers: { 'Idempotency-Key': key } }).build(),
    },
    {
      name: 'NATS',
      broker: 'NATS',
      url: NATS_URL,
      server: { transport: Transport.NATS, options: { servers: [NATS_URL] } },
      client: { transport: Transport.NATS, options: { servers: [NATS_URL] } },
      keyed: (_client, data, key) => {
        const headers = natsHeaders();
        headers.set('Idempotency-Key', key);
        return new NatsRecordBuilder(data).setHeaders(headers).build();
      },
    },
    {
      name: 'MQTT',
      broker: 'Mosquitto',
      url: MQTT_URL,
      server: { transport: Transport.MQTT, options: { url: MQTT_URL, protocolVersion: 5 } },
      client: { transport: Transport.MQTT, options: { url: MQTT_URL, protocolVersion: 5 } },
      keyed: (_client, data, key) =>
        new MqttRecordBuilder(data)
          .setProperties({ userProperties: { 'Idempotency-Key': key } })
          .setQoS(1)
          .build(),
    },
    {
      name: 'Redis',
      broker: 'Redis',
      url: REDIS_URL,
      server: { transport: Transport.REDIS, options: redisOptions },
      client: { transport: Transport.REDIS, options: redisOptions },
      keyed: (client, data, key) => {
        // Packet metadata is set by the client's dispatch hook, the one way Nest 12 offers.
        client.setOnDispatchHook((packet) => {
          const forPacket = redisKeys.get(packet.data as object);
          if (forPacket !== undefined) {
            packet.metadata = { 'Idempotency-Key': forPacket };
          }
        });
        redisKeys.set(data, key);
        return data;
      },
    },
  ];
}

/** The patterns of the consumer fixture (consumer.app.ts), named by the suite's suffix. */
export const consumerPatterns = (suffix: string) => ({
  effect: `rpc-effect-${suffix}`,
  charge: `rpc-charge-${suffix}`,
  crash: `rpc-crash-${suffix}`,
});
