import { ApiProperty } from '@nestjs/swagger';
import { IsEmail, IsNotEmpty, IsString, MaxLength } from 'class-validator';
import type { OutboxMessage, OutboxStatus } from '../outbox-message.entity';

/** Body of `POST /emails`. */
export class SendEmailDto {
  @ApiProperty({ example: 'ada@example.com', maxLength: 320 })
  @IsEmail()
  @MaxLength(320)
  to!: string;

  @ApiProperty({ example: 'Your order', maxLength: 200 })
  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  subject!: string;

  @ApiProperty({ example: 'It has shipped.', maxLength: 10_000 })
  @IsString()
  @MaxLength(10_000)
  body!: string;
}

/** What `POST /emails` answers: the message is in the outbox. */
export class EmailQueuedResponse {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty({ enum: ['queued'] })
  status!: 'queued';
}

const STATUSES: OutboxStatus[] = ['queued', 'published', 'sent', 'failed'];

/** A message of the outbox, as `GET /emails` lists it. */
export class OutboxMessageResponse {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty()
  to!: string;

  @ApiProperty()
  subject!: string;

  @ApiProperty()
  body!: string;

  @ApiProperty({
    enum: STATUSES,
    description:
      '`queued` in the outbox, `published` to the queue, `sent` (accepted by the SMTP server, or captured), `failed` (refused for good by the SMTP server).',
  })
  status!: OutboxStatus;

  @ApiProperty({ format: 'date-time' })
  createdAt!: Date;

  @ApiProperty({
    format: 'date-time',
    nullable: true,
    type: String,
    description: 'When the relay handed it to the queue.',
  })
  publishedAt!: Date | null;

  @ApiProperty({
    format: 'date-time',
    nullable: true,
    type: String,
    description: 'When it was sent (or captured), or refused for good.',
  })
  sentAt!: Date | null;

  static of(message: OutboxMessage): OutboxMessageResponse {
    const { id, to, subject, body, status, createdAt, publishedAt, sentAt } = message;
    return { id, to, subject, body, status, createdAt, publishedAt, sentAt };
  }
}

/** One message of the outbox with its delivery, as `GET /emails/:id` shows it. */
export class OutboxMessageDetailResponse extends OutboxMessageResponse {
  @ApiProperty({
    nullable: true,
    type: String,
    description: 'The `Message-ID` header it was sent with (the same on every resend).',
  })
  messageId!: string | null;

  @ApiProperty({
    nullable: true,
    type: String,
    description: "The SMTP server's answer: `250 ...` when sent, the refusal when failed.",
  })
  smtpResponse!: string | null;

  @ApiProperty({
    nullable: true,
    type: String,
    description:
      'The whole message as it would have gone out (RFC 5322), when no `SMTP_URL` is set and mails are captured.',
  })
  capturedMessage!: string | null;

  static override of(message: OutboxMessage): OutboxMessageDetailResponse {
    const { messageId, smtpResponse, capturedMessage } = message;
    return { ...OutboxMessageResponse.of(message), messageId, smtpResponse, capturedMessage };
  }
}
