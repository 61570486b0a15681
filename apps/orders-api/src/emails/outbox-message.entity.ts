import { Column, Entity, PrimaryColumn } from 'typeorm';

/**
 * Where an email is: `queued` in the outbox, `published` to the queue (the broker confirmed it),
 * `sent` (the SMTP server accepted it, or it was captured), or `failed` (the SMTP server refused
 * it for good: a 5xx answer).
 */
export type OutboxStatus = 'queued' | 'published' | 'sent' | 'failed';

/**
 * An email of the outbox (`outbox_messages`). `POST /emails` writes it `queued`; the relay
 * publishes it and the mailer sends it.
 */
@Entity('outbox_messages')
export class OutboxMessage {
  @PrimaryColumn({ type: 'varchar', length: 36 })
  id!: string;

  @Column({ name: 'recipient', type: 'varchar', length: 320 })
  to!: string;

  @Column({ type: 'varchar', length: 200 })
  subject!: string;

  @Column({ type: 'text' })
  body!: string;

  @Column({ type: 'varchar', length: 16 })
  status!: OutboxStatus;

  @Column({ name: 'created_at', type: Date })
  createdAt!: Date;

  /** How many times a relay took the message to publish it. */
  @Column({ type: 'integer', default: 0 })
  attempts!: number;

  /** When a relay may take it (again); `null` is now. Also the lease of the relay publishing it. */
  @Column({ name: 'next_attempt_at', type: Date, nullable: true })
  nextAttemptAt!: Date | null;

  /** When it was first handed to the queue (RabbitMQ, or the consumer in process). */
  @Column({ name: 'published_at', type: Date, nullable: true })
  publishedAt!: Date | null;

  /** When the SMTP server accepted it (or it was captured), or refused it for good. */
  @Column({ name: 'sent_at', type: Date, nullable: true })
  sentAt!: Date | null;

  /** The `Message-ID` header it was sent with: `<id@domain of MAIL_FROM>`, the same on a resend. */
  @Column({ name: 'message_id', type: 'varchar', length: 255, nullable: true })
  messageId!: string | null;

  /** The SMTP server's last answer: `250 ...` when sent, the 5xx refusal when failed. */
  @Column({ name: 'smtp_response', type: 'text', nullable: true })
  smtpResponse!: string | null;

  /** The whole message (RFC 5322) when no `SMTP_URL` is set and mails are captured. */
  @Column({ name: 'captured_message', type: 'text', nullable: true })
  capturedMessage!: string | null;
}
