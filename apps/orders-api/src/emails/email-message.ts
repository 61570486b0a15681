/** The pattern of the mailer's handler: the name the queue's messages are routed to. */
export const EMAILS_PATTERN = 'emails';

/**
 * What the relay publishes for one outbox row, as the JSON body of the message; its AMQP
 * `messageId` is `id`.
 */
export interface EmailMessage {
  /** The outbox row's id (a UUID). */
  id: string;
  to: string;
  subject: string;
  body: string;
}

/** Reads a message body; answers why it is not an {@link EmailMessage} when it is not one. */
export function parseEmailMessage(value: unknown): EmailMessage | { invalid: string } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { invalid: 'the body is not a JSON object' };
  }
  const fields = value as Record<string, unknown>;
  for (const field of ['id', 'to', 'subject', 'body'] as const) {
    if (typeof fields[field] !== 'string') {
      return { invalid: `"${field}" is not a string` };
    }
  }
  const { id, to, subject, body } = fields as unknown as EmailMessage;
  if (!/^[\w-]{1,36}$/.test(id)) {
    return { invalid: '"id" is not an outbox id' };
  }
  if (!/^[^\s@]+@[^\s@]+$/.test(to) || /[\r\n]/.test(subject)) {
    return { invalid: '"to" is not an address, or "subject" holds a line break' };
  }
  return { id, to, subject, body };
}
