import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { type Child, eventually, freePort, spawnChild } from './processes';

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

/** Options of {@link OwnRedis.start}. */
export interface OwnRedisOptions {
  /** A fixed port instead of a free one from 4300-4399. */
  port?: number;
  /** Starts it as a replica of that server (`--replicaof`). */
  replicaOf?: OwnRedis;
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
    private readonly replicaOf?: OwnRedis,
  ) {}

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start({ port, replicaOf }: OwnRedisOptions = {}): Promise<OwnRedis> {
    const dir = mkdtempSync(join(tmpdir(), 'faults-redis-'));
    for (let attempt = 1; ; attempt++) {
      const redis = new OwnRedis(port ?? (await freePort()), dir, replicaOf);
      try {
        await redis.restart();
        return redis;
      } catch (error) {
        // Another suite took the port between the check and the listen.
        if (
          port !== undefined ||
          attempt >= 3 ||
          !/Address already in use/i.test(redis.server?.stdout ?? '')
        ) {
          rmSync(dir, { recursive: true, force: true });
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
      ...(this.replicaOf ? ['--replicaof', '127.0.0.1', String(this.replicaOf.port)] : []),
    ]);
    await this.server.waitForOutput(/Ready to accept connections/, 15_000);
  }

  /**
   * SIGSTOP: the process stays, its connections stay open, and it answers nothing (a replica no
   * longer acknowledges, so `WAIT` times out). {@link resume} undoes it.
   */
  pause(): void {
    this.server?.signal('SIGSTOP');
  }

  /** SIGCONT, after {@link pause}. */
  resume(): void {
    this.server?.signal('SIGCONT');
  }

  /**
   * Waits until `count` replicas acknowledge a write: one to a key of its own
   * (`own-redis:replication-check`), then `WAIT`. A replica listed as online may not acknowledge
   * yet, just after its first sync.
   */
  async waitForReplicas(count: number, timeoutMs = 15_000): Promise<void> {
    await eventually(
      `${count} replica(s) of redis-server:${this.port} to acknowledge a write`,
      async () => {
        await this.admin.set('own-redis:replication-check', String(Date.now()));
        return (await this.admin.wait(count, 100)) >= count;
      },
      timeoutMs,
      50,
    );
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
    this.resume();
    await this.stop().catch(() => undefined);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A `redis-server --sentinel` of the suite's own, on a loopback port, monitoring `master` under
 * `name` with a quorum of 1 and short timeouts, so `SENTINEL FAILOVER` completes in seconds.
 */
export class OwnSentinel {
  private adminClient: Redis | undefined;

  private constructor(
    readonly port: number,
    readonly name: string,
    private readonly server: Child,
    private readonly dir: string,
  ) {}

  static async start(port: number, name: string, master: OwnRedis): Promise<OwnSentinel> {
    const dir = mkdtempSync(join(tmpdir(), 'faults-sentinel-'));
    const config = join(dir, 'sentinel.conf');
    // Sentinel rewrites its configuration file, so it must be a file of its own.
    writeFileSync(
      config,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
        `sentinel down-after-milliseconds ${name} 1000`,
        `sentinel failover-timeout ${name} 5000`,
        `sentinel parallel-syncs ${name} 1`,
        '',
      ].join('\n'),
    );
    const server = spawnChild(`redis-sentinel:${port}`, 'redis-server', [config, '--sentinel']);
    try {
      await server.waitForOutput(/Sentinel ID is|monitor master/i, 15_000);
    } catch (error) {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
      throw error;
    }
    return new OwnSentinel(port, name, server, dir);
  }

  /** A connection of the test's own to the sentinel, opened on first use. */
  get admin(): Redis {
    this.adminClient ??= new Redis({ port: this.port, host: '127.0.0.1', maxRetriesPerRequest: 1 });
    return this.adminClient;
  }

  /** The port of the master the sentinel reports now. */
  async masterPort(): Promise<number> {
    const [, port] = (await this.admin.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', this.name)) as [
      string,
      string,
    ];
    return Number(port);
  }

  /** Waits until the sentinel knows `count` replicas of the master that it could promote. */
  async waitForReplicas(count: number, timeoutMs = 20_000): Promise<void> {
    await eventually(
      `sentinel:${this.port} to know ${count} replica(s) of ${this.name}`,
      async () => {
        const replicas = (await this.admin.call('SENTINEL', 'REPLICAS', this.name)) as string[][];
        return (
          replicas.filter((fields) => {
            const flags = fields[fields.indexOf('flags') + 1] ?? '';
            const link = fields[fields.indexOf('master-link-status') + 1];
            return flags === 'slave' && link === 'ok';
          }).length >= count
        );
      },
      timeoutMs,
    );
  }

  /** Stops the sentinel and removes its directory. */
  async destroy(): Promise<void> {
    await this.adminClient?.quit().catch(() => undefined);
    await this.server.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
