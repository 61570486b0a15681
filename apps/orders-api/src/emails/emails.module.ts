import { type INestApplication, Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from '../config/orders-api.config';
import { EmailsController } from './emails.controller';
import { EmailsService } from './emails.service';
import { MailSender } from './mail-sender';
import { MailerController } from './mailer.controller';
import { OutboxMessage } from './outbox-message.entity';
import { OutboxRelay } from './relay/outbox-relay';
import {
  AmqpEmailPublisher,
  EmailPublisher,
  InProcessEmailPublisher,
} from './transport/email-publisher';
import { EmailsRmqServer } from './transport/emails-rmq.server';
import { InProcessEmailTransport } from './transport/in-process.transport';

/**
 * Emails: `POST /emails` writes the outbox, the relay publishes it (to RabbitMQ with `AMQP_URL`,
 * else to the consumer in process), and the mailer sends each message once (over SMTP with
 * `SMTP_URL`, else to a capture kept with the row).
 */
@Module({
  imports: [TypeOrmModule.forFeature([OutboxMessage])],
  controllers: [EmailsController, MailerController],
  providers: [
    EmailsService,
    MailSender,
    OutboxRelay,
    InProcessEmailTransport,
    {
      provide: EmailPublisher,
      inject: [ORDERS_API_CONFIG, InProcessEmailTransport],
      useFactory: (config: OrdersApiConfig, transport: InProcessEmailTransport) =>
        config.amqpUrl === undefined
          ? new InProcessEmailPublisher(transport)
          : new AmqpEmailPublisher(config),
    },
  ],
})
export class EmailsModule {}

/**
 * Connects the mailer's transport to `app` (a hybrid application): Nest's RabbitMQ server on
 * `AMQP_QUEUE` when `AMQP_URL` is set, else the in-process transport the relay delivers to. Call
 * `app.startAllMicroservices()` afterwards.
 */
export function connectEmailConsumer(app: INestApplication, config: OrdersApiConfig): void {
  app.connectMicroservice({
    strategy:
      config.amqpUrl === undefined
        ? app.get(InProcessEmailTransport)
        : new EmailsRmqServer(
            { url: config.amqpUrl, queue: config.amqpQueue },
            config.shutdownTimeoutMs,
          ),
  });
}
