import { SMTPServer } from 'smtp-server';
import type { AddressInfo } from 'node:net';
import { whenNotified } from '../../../test/utils/processes';

/** One message the sink accepted. */
export interface SinkDelivery {
  /** The `Message-ID` header, `<...>` included. */
  messageId: string;
  from: string;
  to: string[];
  /** The whole message as it was sent (RFC 5322). */
  raw: string;
}

/** A refusal the sink answers to RCPT TO for one address, `times` times (default always). */
export interface SinkRefusal {
  code: number;
  message: string;
  times?: number;
}

/**
 * A real SMTP server on a free loopback port (the `smtp-server` package, no TLS, no auth) that
 * keeps what it accepted, to count deliveries per `Message-ID`. Tests can refuse recipients and
 * hold a message between its DATA and the server's 250, to act at that exact point.
 */
export class SmtpSink {
  readonly deliveries: SinkDelivery[] = [];
  /** RCPT TO commands seen, by address (refused ones included). */
  readonly recipientAttempts = new Map<string, number>();
  /** Refusals by address, of a recipient (RCPT TO) or of the sender (MAIL FROM). */
  readonly refusals = new Map<string, SinkRefusal>();
  /**
   * Awaited after a message's DATA and before the 250 that accepts it: a test acts there
   * (the client has sent the message but is not told it was accepted yet).
   */
  beforeAccept: ((delivery: SinkDelivery) => Promise<void> | void) | undefined;
  private readonly listeners = new Set<() => void>();

  private readonly server: SMTPServer;
  private port = 0;

  private constructor() {
    this.server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS', 'AUTH'],
      logger: false,
      closeTimeout: 1_000,
      onMailFrom: (address, _session, callback) => callback(this.refusal(address.address)),
      onRcptTo: (address, _session, callback) => {
        const to = address.address.toLowerCase();
        this.recipientAttempts.set(to, (this.recipientAttempts.get(to) ?? 0) + 1);
        callback(this.refusal(to));
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (chunk: Buffer) => chunks.push(chunk));
        stream.on('end', () => {
          const raw = Buffer.concat(chunks).toString('utf8');
          const delivery: SinkDelivery = {
            messageId: /^Message-ID:\s*(<[^>]*>)/im.exec(raw)?.[1] ?? '',
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : '',
            to: session.envelope.rcptTo.map((rcpt) => rcpt.address),
            raw,
          };
          void Promise.resolve(this.beforeAccept?.(delivery)).then(
            () => {
              this.deliveries.push(delivery);
              this.notify();
              callback(null, `OK queued as ${this.deliveries.length}`);
            },
            (error: unknown) => callback(error as Error),
          );
        });
      },
    });
  }

  /** `smtp://127.0.0.1:<port>`, for `SMTP_URL`. */
  get url(): string {
    return `smtp://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<SmtpSink> {
    const sink = new SmtpSink();
    sink.port = await new Promise<number>((resolve, reject) => {
      sink.server.once('error', reject);
      const listener = sink.server.listen(0, '127.0.0.1', () =>
        resolve((listener.address() as AddressInfo).port),
      );
    });
    return sink;
  }

  /** The error refusing `address` (a sender or a recipient), if it is to be refused now. */
  private refusal(address: string): Error | undefined {
    const refusal = this.refusals.get(address.toLowerCase());
    if (!refusal || (refusal.times !== undefined && refusal.times <= 0)) {
      return undefined;
    }
    if (refusal.times !== undefined) {
      refusal.times--;
    }
    return Object.assign(new Error(refusal.message), { responseCode: refusal.code });
  }

  /** Messages accepted with this `Message-ID`. */
  count(messageId: string): number {
    return this.deliveries.filter((delivery) => delivery.messageId === messageId).length;
  }

  /** Resolves once `count(messageId)` reaches `n`; fails after `timeoutMs`. */
  waitFor(messageId: string, n = 1, timeoutMs = 20_000): Promise<void> {
    return this.until(() => this.count(messageId) >= n, `${n} delivery of ${messageId}`, timeoutMs);
  }

  /** Resolves once `condition()` holds, checked on every delivery; fails after `timeoutMs`. */
  until(condition: () => boolean, what: string, timeoutMs = 20_000): Promise<void> {
    return whenNotified(
      this.listeners,
      condition,
      () => new Error(`SMTP sink: no ${what} after ${timeoutMs} ms`),
      timeoutMs,
    );
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private notify(): void {
    for (const listener of [...this.listeners]) {
      listener();
    }
  }
}
