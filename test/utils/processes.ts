import { type ChildProcess, spawn, type SpawnOptions } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Child processes of a test suite (app instances, redis-server...), with their output kept for
 * assertions and failure messages, and never left behind.
 */

/** How long a child may take to print that it is ready, on a slow machine. */
export const START_TIMEOUT_MS = 60_000;

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A child process of the suite, with its output kept for assertions and failure messages. */
export class Child {
  readonly pid: number;
  private readonly startedAt = Date.now();
  /** Settles when the process has exited. */
  readonly exited: Promise<Exit>;
  private stdoutText = '';
  private stderrText = '';
  private exit: Exit | undefined;
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly name: string,
    private readonly child: ChildProcess,
  ) {
    // Without a listener a failed spawn (ENOENT) would crash the test process.
    child.once('error', (error) => {
      this.stderrText += String(error);
    });
    if (child.pid === undefined) {
      throw new Error(`${name} did not start`);
    }
    this.pid = child.pid;
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stdoutText += chunk;
      this.notify();
    });
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderrText += chunk;
      this.notify();
    });
    this.exited = new Promise((resolve) => {
      child.once('close', (code, signal) => {
        this.exit = { code, signal };
        children.delete(this);
        this.notify();
        resolve(this.exit);
      });
    });
    children.add(this);
  }

  get stdout(): string {
    return this.stdoutText;
  }

  get stderr(): string {
    return this.stderrText;
  }

  /** Whether the process is still running. */
  get running(): boolean {
    return this.exit === undefined;
  }

  /** Resolves once `pattern` appears in stdout or stderr; rejects if the process exits first. */
  waitForOutput(pattern: RegExp, timeoutMs = START_TIMEOUT_MS): Promise<void> {
    return whenNotified(
      this.listeners,
      () =>
        pattern.test(this.stdoutText) ||
        pattern.test(this.stderrText) ||
        (this.exit
          ? new Error(`${this.name} exited (${this.describeExit()}) ${this.tail()}`)
          : false),
      () => new Error(`${this.name}: no ${pattern} after ${timeoutMs} ms ${this.tail()}`),
      timeoutMs,
    );
  }

  /** Sends `signal`, if the process still runs. */
  signal(signal: NodeJS.Signals): void {
    if (this.running) {
      this.child.kill(signal);
    }
  }

  /** SIGTERM, then SIGKILL if it has not exited after `graceMs`. */
  async stop(graceMs = 5_000): Promise<Exit> {
    this.signal('SIGTERM');
    const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(timer);
    }
  }

  private describeExit(): string {
    const how = this.exit?.signal ? `signal ${this.exit.signal}` : `code ${this.exit?.code}`;
    return `pid ${this.pid}, ${how}, ${Date.now() - this.startedAt} ms after spawn`;
  }

  /** The end of the output, for failure messages. */
  tail(chars = 4_000): string {
    return `\n--- stdout\n${this.stdoutText.slice(-chars)}\n--- stderr\n${this.stderrText.slice(-chars)}`;
  }

  private notify(): void {
    for (const listener of [...this.listeners]) {
      listener();
    }
  }
}

const children = new Set<Child>();

/** Kills every child still running (SIGKILL) and waits for them; for `afterAll`. */
export async function killAllChildren(): Promise<void> {
  const running = [...children];
  for (const child of running) {
    child.signal('SIGKILL');
  }
  await Promise.all(running.map((child) => child.exited));
}

// A last resort if jest exits without running afterAll: never leave a child behind.
process.once('exit', () => {
  for (const child of children) {
    child.signal('SIGKILL');
  }
});

/** Starts `command` as a child of the suite (never detached, so it dies with `killAllChildren`). */
export function spawnChild(
  name: string,
  command: string,
  args: string[],
  options: SpawnOptions = {},
): Child {
  return new Child(name, spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options }));
}

const handedOut = new Set<number>();

/** A port from 4300-4399 that nothing listens on now, never the same one twice in a run. */
export async function freePort(): Promise<number> {
  const start = Math.floor(Math.random() * 100);
  for (let i = 0; i < 100; i++) {
    const port = 4300 + ((start + i) % 100);
    if (!handedOut.has(port) && (await canListen(port))) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('No free port in 4300-4399');
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () =>
      server.close(() => resolve(true)),
    );
  });
}

/** What a new TCP connection to the port meets: `connected`, or the error code (`ECONNREFUSED`). */
export function tryConnect(port: number, timeoutMs = 2_000): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const done = (outcome: string) => {
      socket.destroy();
      resolve(outcome);
    };
    socket.setTimeout(timeoutMs, () => done('timeout'));
    socket.once('connect', () => done('connected'));
    socket.once('error', (error: NodeJS.ErrnoException) => done(error.code ?? error.message));
  });
}

/** Polls `probe` every `intervalMs` until it answers true, or fails after `timeoutMs`. */
export async function eventually(
  what: string,
  probe: () => Promise<boolean>,
  timeoutMs = 15_000,
  intervalMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Resolves once `settled()` is `true`, or rejects with the Error it returns, checked now and each
 * time one of `listeners` is called (the caller calls them on news); rejects with `timeout()`
 * after `timeoutMs`. Its listener is removed either way.
 */
export function whenNotified(
  listeners: Set<() => void>,
  settled: () => boolean | Error,
  timeout: () => Error,
  timeoutMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      const outcome = settled();
      if (outcome === false) {
        return;
      }
      done();
      if (outcome === true) {
        resolve();
      } else {
        reject(outcome);
      }
    };
    const timer = setTimeout(() => {
      done();
      reject(timeout());
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      listeners.delete(check);
    };
    listeners.add(check);
    check();
  });
}
