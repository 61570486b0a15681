import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy between the app and its database that loses one transaction's COMMIT: the network
 * failing at the worst moment. It passes every byte through, reading the client's messages (the
 * PostgreSQL frontend protocol, the MySQL/MariaDB client protocol) to find the COMMIT of the
 * transaction that completes one idempotency record, and then closes both sides of that
 * connection at one of two points:
 *
 * - `commit-lost`: as the client sends its COMMIT, which never reaches the server. The server sees
 *   the connection closed and rolls the transaction back; the client sees the connection lost
 *   with its COMMIT sent, so it cannot tell whether it committed.
 * - `answer-lost`: once the server has answered the COMMIT (PostgreSQL: ReadyForQuery; MySQL: the
 *   OK packet), before the answer reaches the client. The transaction committed; the client sees
 *   the same connection lost.
 *
 * The completion is recognised by the record's storage key and `'completed'` in the same message;
 * the COMMIT is the first message ending in `COMMIT` on that connection from then on: on
 * PostgreSQL the completion and COMMIT travel as one query (the store's DO block), on MySQL the
 * COMMIT follows the completion.
 */

/** Where the connection is cut: the COMMIT lost on its way, or the server's answer to it. */
export type CommitCut = 'commit-lost' | 'answer-lost';

/** What happened at the cut. */
export interface CommitCutReport {
  how: CommitCut;
  /** `answer-lost`: what the server answered the COMMIT (`ok`, or `error` when it refused it). */
  serverAnswer?: 'ok' | 'error';
}

type Protocol = 'postgres' | 'mysql';

interface Armed {
  key: Buffer;
  how: CommitCut;
  resolve: (report: CommitCutReport) => void;
}

const COMPLETED = Buffer.from("'completed'");
/** PostgreSQL startup messages that another untyped message follows (SSL and GSS encryption). */
const PG_ENCRYPTION_REQUESTS = new Set([80877103, 80877104]);

/** The length of the first complete message in `buffer`, or `undefined` while it is incomplete. */
type Framing = (buffer: Buffer) => number | undefined;

const mysqlFraming: Framing = (buffer) =>
  buffer.length >= 4 && buffer.length >= 4 + buffer.readUIntLE(0, 3)
    ? 4 + buffer.readUIntLE(0, 3)
    : undefined;

const pgTypedFraming: Framing = (buffer) =>
  buffer.length >= 5 && buffer.length >= 1 + buffer.readUInt32BE(1)
    ? 1 + buffer.readUInt32BE(1)
    : undefined;

const pgUntypedFraming: Framing = (buffer) =>
  buffer.length >= 4 && buffer.length >= buffer.readUInt32BE(0)
    ? buffer.readUInt32BE(0)
    : undefined;

/** Splits a byte stream into complete messages. */
class Frames {
  private pending: Buffer = Buffer.alloc(0);

  constructor(private framing: () => Framing) {}

  /** The complete messages `chunk` ends, in order; an incomplete tail is kept for the next. */
  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    const frames: Buffer[] = [];
    for (;;) {
      const length = this.framing()(this.pending);
      if (length === undefined) {
        return frames;
      }
      frames.push(this.pending.subarray(0, length));
      this.pending = this.pending.subarray(length);
    }
  }
}

/** Whether a client message's text ends with COMMIT (ignoring the C string's NUL and spaces). */
function endsWithCommit(frame: Buffer, protocol: Protocol): boolean {
  // PostgreSQL 'Q': type, length, query text; MySQL COM_QUERY: length, sequence, 0x03, query text.
  if (protocol === 'postgres' ? frame[0] !== 0x51 : frame[4] !== 0x03) {
    return false;
  }
  const text = frame.subarray(5).toString('latin1');
  return /COMMIT[\s;\0]*$/i.test(text);
}

export class CommitProxy {
  private armed?: Armed;
  private readonly sockets = new Set<Socket>();

  private constructor(
    private readonly server: Server,
    private readonly protocol: Protocol,
    private readonly target: { host: string; port: number },
  ) {
    server.on('connection', (client) => this.relay(client));
  }

  /** Starts a proxy on a free loopback port to the server of `url` (postgres:// or mysql://). */
  static async start(url: string): Promise<CommitProxy> {
    const { hostname, port, protocol } = new URL(url);
    const kind: Protocol = protocol.startsWith('postgres') ? 'postgres' : 'mysql';
    const server = createServer();
    const proxy = new CommitProxy(server, kind, {
      host: hostname,
      port: Number(port) || (kind === 'postgres' ? 5432 : 3306),
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  /** `url` (a database on the proxied server) with the proxy's address instead of the server's. */
  urlThrough(url: string): string {
    const through = new URL(url);
    through.hostname = '127.0.0.1';
    through.port = String((this.server.address() as { port: number }).port);
    return through.toString();
  }

  /**
   * Cuts the connection of the next transaction that completes `storageKey`'s record, at its
   * COMMIT, as `how` says. Resolves once it is cut.
   */
  cutCommitOf(storageKey: string, how: CommitCut): Promise<CommitCutReport> {
    if (this.armed) {
      throw new Error('A cut is already armed.');
    }
    return new Promise((resolve) => {
      this.armed = { key: Buffer.from(storageKey), how, resolve };
    });
  }

  /** Stops arming (a test that failed before the cut), so later traffic passes. */
  disarm(): void {
    this.armed = undefined;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) {
      socket.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private relay(client: Socket): void {
    const upstream = connect(this.target);
    this.sockets.add(client).add(upstream);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('error', closeBoth).on('close', closeBoth);
    upstream.on('error', closeBoth).on('close', closeBoth);

    let untypedLeft = this.protocol === 'postgres' ? 1 : 0;
    const fromClient = new Frames(() =>
      this.protocol === 'mysql'
        ? mysqlFraming
        : untypedLeft > 0
          ? pgUntypedFraming
          : pgTypedFraming,
    );
    /** This connection's transaction completed the armed record: its next COMMIT is the one. */
    let completing: Armed | undefined;
    /** `answer-lost`: the server's answer is held, read message by message, until it is whole. */
    let holding: { armed: Armed; frames: Frames; error: boolean } | undefined;

    client.on('data', (chunk: Buffer) => {
      for (const frame of fromClient.push(chunk)) {
        if (untypedLeft > 0) {
          untypedLeft--;
          if (frame.length >= 8 && PG_ENCRYPTION_REQUESTS.has(frame.readUInt32BE(4))) {
            untypedLeft++;
          }
          upstream.write(frame);
          continue;
        }
        const armed = this.armed;
        if (armed && frame.includes(armed.key) && frame.includes(COMPLETED)) {
          completing = armed;
        }
        if (completing && completing === this.armed && endsWithCommit(frame, this.protocol)) {
          this.armed = undefined;
          if (completing.how === 'commit-lost') {
            closeBoth();
            completing.resolve({ how: 'commit-lost' });
            return;
          }
          holding = {
            armed: completing,
            frames: new Frames(() => (this.protocol === 'mysql' ? mysqlFraming : pgTypedFraming)),
            error: false,
          };
        }
        upstream.write(frame);
      }
    });

    upstream.on('data', (chunk: Buffer) => {
      if (!holding) {
        client.write(chunk);
        return;
      }
      for (const frame of holding.frames.push(chunk)) {
        // PostgreSQL: ErrorResponse 'E' before ReadyForQuery 'Z'; MySQL: one packet, ERR is 0xff.
        const done = this.protocol === 'mysql' || frame[0] === 0x5a;
        holding.error ||= this.protocol === 'mysql' ? frame[4] === 0xff : frame[0] === 0x45;
        if (done) {
          const { armed, error } = holding;
          holding = undefined;
          closeBoth();
          armed.resolve({ how: 'answer-lost', serverAnswer: error ? 'error' : 'ok' });
          return;
        }
      }
    });
  }
}
