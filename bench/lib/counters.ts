import { Redis } from 'ioredis';
import { Client } from 'pg';
import { sleep } from './load';

export interface RedisCount {
  /** Commands the server received from the app's connection: its round trips. */
  commands: number;
  /** The same, by command name (EVALSHA, SET, GET, ...). */
  byCommand: Record<string, number>;
}

/**
 * Counts, on the Redis server, the commands one client connection sends while `work` runs.
 *
 * The server is shared (other clients use it at the same time), so the global `INFO commandstats`
 * counters would count their commands too; `MONITOR` shows each command with the address of the
 * connection that sent it, so only the app's own connection (found by its client name in
 * `CLIENT LIST`) is counted. Commands a Lua script runs inside the server are shown as coming from
 * `lua` and are not round trips, so they are left out.
 */
export async function countRedisCommands(
  redisUrl: string,
  clientName: string,
  work: () => Promise<void>,
): Promise<RedisCount> {
  const admin = new Redis(redisUrl, { lazyConnect: true });
  await admin.connect();
  try {
    const list = String(await admin.client('LIST'));
    const addresses = list
      .split('\n')
      .filter((line) => line.includes(` name=${clientName} `))
      .map((line) => /\baddr=(\S+)/.exec(line)?.[1])
      .filter((addr): addr is string => Boolean(addr));
    if (addresses.length === 0) {
      throw new Error(`no Redis connection named ${clientName}`);
    }
    const monitor = await admin.duplicate().monitor();
    const count: RedisCount = { commands: 0, byCommand: {} };
    const marker = `bench-marker-${process.pid}-${Date.now()}`;
    let markerSeen: () => void = () => undefined;
    const seen = new Promise<void>((resolve) => (markerSeen = resolve));
    monitor.on('monitor', (_time: string, args: string[], source: string) => {
      if (args[0]?.toLowerCase() === 'echo' && args[1] === marker) {
        markerSeen();
      } else if (addresses.includes(source)) {
        const name = String(args[0]).toUpperCase();
        count.commands++;
        count.byCommand[name] = (count.byCommand[name] ?? 0) + 1;
      }
    });
    // MONITOR starts streaming only once its reply arrived; a first marker proves it did.
    await admin.echo(`${marker}-start`);
    await sleep(50);
    await work();
    // The server streams commands in the order it ran them: once the marker shows, all are in.
    await admin.echo(marker);
    await Promise.race([seen, sleep(5_000)]);
    monitor.disconnect();
    return count;
  } finally {
    admin.disconnect();
  }
}

/**
 * Statements run in one database, from `pg_stat_database`, read over a connection to another
 * database so that the reading itself is not counted. Every statement sent outside a transaction
 * is one transaction, and so is the start of every new session (its catalog lookups): the count
 * is the delta of `xact_commit + xact_rollback` minus the delta of `sessions`.
 */
export class PgTransactionCounter {
  private readonly client: Client;

  constructor(
    adminUrl: string,
    private readonly database: string,
  ) {
    this.client = new Client({ connectionString: adminUrl });
  }

  async open(): Promise<void> {
    await this.client.connect();
  }

  async close(): Promise<void> {
    await this.client.end();
  }

  /**
   * The count once every backend of the database has reported. A busy backend may hold its
   * statistics back for up to 10 s (PGSTAT_IDLE_INTERVAL), but one that exits flushes them: the
   * apps' pools close idle connections after a second, so wait until none is left (20 s at most).
   */
  async settled(): Promise<number> {
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const { rows } = await this.client.query<{ n: string }>(
        'SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1',
        [this.database],
      );
      if (Number(rows[0]?.n) === 0) {
        return this.read();
      }
      await sleep(100);
    }
    throw new Error(`connections to ${this.database} stayed open; cannot count its statements`);
  }

  private async read(): Promise<number> {
    const { rows } = await this.client.query<{ n: string }>(
      'SELECT xact_commit + xact_rollback - sessions AS n FROM pg_stat_database WHERE datname = $1',
      [this.database],
    );
    return Number(rows[0]?.n ?? 0);
  }
}
