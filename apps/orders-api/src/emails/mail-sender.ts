import { Inject, Injectable, Logger, type OnApplicationShutdown } from '@nestjs/common';
import { createTransport, type Transporter } from 'nodemailer';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from '../config/orders-api.config';
import type { EmailMessage } from './email-message';

/** How one email left: accepted by the SMTP server, captured, or refused for good. */
export type Delivery =
  | {
      outcome: 'sent';
      messageId: string;
      smtpResponse: string | null;
      capturedMessage: string | null;
    }
  | { outcome: 'refused'; messageId: string; smtpResponse: string };

/**
 * A send that may pass on a retry (a 4xx answer, no connection, a timeout, a refused login or
 * sender): the mailer's key is released and the message goes back to the queue.
 */
export class MailNotSentError extends Error {
  constructor(id: string, cause: unknown) {
    super(
      `Email ${id} not sent, it goes back to the queue: ${cause instanceof Error ? cause.message : String(cause)}`,
      { cause },
    );
    this.name = 'MailNotSentError';
  }
}

/** SMTP timeouts: a server that hangs fails the attempt (and it is retried) within a minute. */
const TIMEOUTS = { connectionTimeout: 10_000, greetingTimeout: 10_000, socketTimeout: 30_000 };

/**
 * Sends emails with nodemailer: over SMTP to `SMTP_URL` (pooled connections), or, without it, to
 * a capture that renders the whole message and hands it back to be kept with the outbox row.
 *
 * Every message carries the `Message-ID` `<id@domain of MAIL_FROM>`, derived from the outbox id,
 * so a resend (see the README: the window between the SMTP server's acceptance and the COMMIT)
 * is the same message to the receiving side, which may drop it by that header.
 */
@Injectable()
export class MailSender implements OnApplicationShutdown {
  private readonly logger = new Logger('Mailer');
  private readonly transporter: Transporter;
  private readonly domain: string;
  /** `true` when mails go to the capture rather than an SMTP server. */
  readonly capturing: boolean;

  constructor(@Inject(ORDERS_API_CONFIG) private readonly config: OrdersApiConfig) {
    this.capturing = config.smtpUrl === undefined;
    this.transporter =
      config.smtpUrl === undefined
        ? createTransport({ streamTransport: true, buffer: true, newline: 'unix' })
        : createTransport({ url: config.smtpUrl, pool: true, maxConnections: 2, ...TIMEOUTS });
    this.domain = /@([^\s<>@]+)>?$/.exec(config.mailFrom)?.[1] ?? 'localhost';
  }

  /**
   * Sends `message`. Resolves `refused` when the server refused this message for good (a 5xx
   * answer to its recipient or its content: a resend would be refused again); rejects with a
   * {@link MailNotSentError} on anything that may pass on a retry.
   */
  async send(message: EmailMessage): Promise<Delivery> {
    const messageId = `<${message.id}@${this.domain}>`;
    try {
      const info = (await this.transporter.sendMail({
        from: this.config.mailFrom,
        to: message.to,
        subject: message.subject,
        text: message.body,
        messageId,
      })) as { response?: string; message?: Buffer };
      return {
        outcome: 'sent',
        messageId,
        smtpResponse: this.capturing ? null : (info.response ?? null),
        capturedMessage: this.capturing ? (info.message?.toString('utf8') ?? null) : null,
      };
    } catch (error) {
      const { responseCode, response, command } = error as {
        responseCode?: number;
        response?: string;
        command?: string;
      };
      // Only a refusal of this message (its recipient, its content) is final: a 5xx to the
      // sender or the login (a wrong MAIL_FROM or password) would refuse every email, and is
      // retried until it is fixed.
      if (
        responseCode !== undefined &&
        responseCode >= 500 &&
        responseCode < 600 &&
        (command === 'RCPT TO' || command === 'DATA')
      ) {
        this.logger.warn(`The SMTP server refused ${messageId} for good: ${response}`);
        return { outcome: 'refused', messageId, smtpResponse: response ?? String(responseCode) };
      }
      throw new MailNotSentError(message.id, error);
    }
  }

  onApplicationShutdown(): void {
    this.transporter.close();
  }
}
