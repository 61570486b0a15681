import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { type Child, freePort, spawnChild } from './processes';

/** `describe` when `redis-server` can be started; under CI its absence is a failure. */
export function describeWithRedisServer(): jest.Describe {
  if (spawnSync('redis-server', ['--version']).status === 0) {
    return describe;
  }
  const message = 'redis-server is not installed; this suite starts a Redis of its own';
  if (process.env.CI) {
    throw new Error(message);
  }
  console.warn(`skipping: ${message}`);
  return describe.skip;
}

/**
 * A `redis-server` of the suite's own on a free loopback port, with no persistence, so a test can
 * stop it, start it again on the same port, pause it or fill it without touching the machine's
 * Redis. `admin` is a connection of the test's own to it.
 */
export class OwnRedis {
  private server: Child | undefined;
  private adminClient: Redis | undefined;

  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<OwnRedis> {
    const dir = mkdtempSync(join(tmpdir(), 'faults-redis-'));
    for (let attempt = 1; ; attempt++) {
      const redis = new OwnRedis(await freePort(), dir);
      try {
        await redis.restart();
        return redis;
      } catch (error) {
        // Another suite took the port between the check and the listen.
        if (attempt >= 3 || !/Address already in use/i.test(redis.server?.stdout ?? '')) {
          throw error;
        }
      }
    }
  }

  /** Starts the server (again) on the same port, and waits until it accepts connections. */
  async restart(): Promise<void> {
    if (this.server?.running) {
      throw new Error('redis-server is already running');
    }
    this.server = spawnChild(`redis-server:${this.port}`, 'redis-server', [
      '--port',
      String(this.port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      this.dir,
    ]);
    await this.server.waitForOutput(/Ready to accept connections/, 15_000);
  }

  /** SIGTERM: with no persistence configured it exits at once, dropping every key. */
  async stop(): Promise<void> {
    await this.adminClient?.quit().catch(() => undefined);
    this.adminClient = undefined;
    const exit = await this.server?.stop();
    if (exit && exit.code !== 0) {
      throw new Error(`redis-server exited with ${JSON.stringify(exit)}`);
    }
  }

  /** A connection of the test's own (not the app's), opened on first use. */
  get admin(): Redis {
    this.adminClient ??= new Redis(this.url, { maxRetriesPerRequest: 1 });
    return this.adminClient;
  }

  /** Stops the server if it runs and removes its directory. */
  async destroy(): Promise<void> {
    await this.stop().catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}
