import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { type Child, eventually, spawnChild } from './processes';

const run = promisify(execFile);

/** One shard: the master serving a range of slots, and its replica. */
export interface Shard {
  master: number;
  replica: number;
  /** The slot ranges the master serves, `[from, to]` inclusive. */
  slots: [number, number][];
}

/**
 * A throwaway Redis Cluster of three masters with one replica each, on loopback ports
 * `basePort` to `basePort + 5` (and their bus ports, + 10000), started with redis-server without
 * persistence and a short `cluster-node-timeout`, so a test can fail a master over (`CLUSTER
 * FAILOVER FORCE`, or SIGKILL and the automatic failover) and start it again as a replica. Every
 * server is a child of the suite (`killAllChildren` ends them too).
 */
export class ReplicatedRedisCluster {
  private readonly servers = new Map<number, Child>();
  private readonly admins = new Map<number, Redis>();

  private constructor(
    readonly ports: number[],
    private readonly dir: string,
    readonly nodeTimeoutMs: number,
  ) {}

  /** Seed nodes for an ioredis `Cluster`. */
  get nodes(): { host: string; port: number }[] {
    return this.ports.map((port) => ({ host: '127.0.0.1', port }));
  }

  static async start(basePort: number, nodeTimeoutMs = 1_000): Promise<ReplicatedRedisCluster> {
    const ports = Array.from({ length: 6 }, (_, i) => basePort + i);
    const cluster = new ReplicatedRedisCluster(
      ports,
      mkdtempSync(join(tmpdir(), 'idempotency-replicated-cluster-')),
      nodeTimeoutMs,
    );
    try {
      await Promise.all(ports.map((port) => cluster.startServer(port)));
      await run('redis-cli', [
        '--cluster',
        'create',
        ...ports.map((port) => `127.0.0.1:${port}`),
        '--cluster-replicas',
        '1',
        '--cluster-yes',
      ]);
      await cluster.waitHealthy();
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** Starts redis-server on `port` (again: with its nodes.conf it rejoins the cluster). */
  async startServer(port: number): Promise<void> {
    if (this.servers.get(port)?.running) {
      throw new Error(`redis-server ${port} is already running`);
    }
    const server = spawnChild(`redis-server:${port}`, 'redis-server', [
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      join(this.dir, `nodes-${port}.conf`),
      '--cluster-node-timeout',
      String(this.nodeTimeoutMs),
      '--save',
      '',
      '--appendonly',
      'no',
      // A resync (an old master rejoining) starts at once, not after the default 5 s.
      '--repl-diskless-sync-delay',
      '0',
      '--dir',
      this.dir,
    ]);
    this.servers.set(port, server);
    await server.waitForOutput(/Ready to accept connections/, 15_000);
  }

  /** SIGKILL to the server on `port`; resolves once it has exited. */
  async kill(port: number): Promise<void> {
    await this.admins
      .get(port)
      ?.quit()
      .catch(() => undefined);
    this.admins.get(port)?.disconnect();
    this.admins.delete(port);
    const server = this.servers.get(port);
    server?.signal('SIGKILL');
    await server?.exited;
  }

  /** Sends `signal` to the server on `port` (SIGSTOP and SIGCONT pause and resume it). */
  signal(port: number, signal: NodeJS.Signals): void {
    this.servers.get(port)?.signal(signal);
  }

  /** A connection of the test's own to one node (not through the Cluster client). */
  admin(port: number): Redis {
    let client = this.admins.get(port);
    if (!client) {
      client = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 1, lazyConnect: false });
      client.on('error', () => undefined);
      this.admins.set(port, client);
    }
    return client;
  }

  /** The three shards as the running nodes see them now. */
  async shards(): Promise<Shard[]> {
    const port = this.ports.find((p) => this.servers.get(p)?.running)!;
    const text = String(await this.admin(port).call('CLUSTER', 'NODES'));
    const lines = text
      .trim()
      .split('\n')
      .map((line) => line.split(' '));
    const portOf = (address: string) => Number(address.split('@')[0].split(':')[1]);
    return lines
      .filter((fields) => fields[2].includes('master') && !fields[2].includes('fail'))
      .map((fields) => {
        const replica = lines.find((other) => other[3] === fields[0] && !other[2].includes('fail'));
        return {
          master: portOf(fields[1]),
          replica: replica ? portOf(replica[1]) : -1,
          slots: fields
            .slice(8)
            .filter((range) => !range.startsWith('['))
            .map((range) => {
              const [from, to = from] = range.split('-').map(Number);
              return [from, to] as [number, number];
            }),
        };
      })
      .filter((shard) => shard.slots.length > 0)
      .sort((a, b) => a.slots[0][0] - b.slots[0][0]);
  }

  /**
   * Waits until every running node says `cluster_state:ok` and knows six nodes, each of the three
   * masters has its replica, and every replica is linked to its master and has caught up.
   */
  async waitHealthy(timeoutMs = 20_000): Promise<Shard[]> {
    let shards: Shard[] = [];
    await eventually(
      'the Redis Cluster to be healthy (3 masters, 3 replicas in sync)',
      async () => {
        try {
          for (const port of this.ports) {
            const info = String(await this.admin(port).call('CLUSTER', 'INFO'));
            if (!info.includes('cluster_state:ok') || !info.includes('cluster_known_nodes:6')) {
              return false;
            }
          }
          shards = await this.shards();
          if (shards.length !== 3 || shards.some((shard) => shard.replica < 0)) {
            return false;
          }
          for (const shard of shards) {
            const [masterInfo, replicaInfo] = await Promise.all([
              this.admin(shard.master).info('replication'),
              this.admin(shard.replica).info('replication'),
            ]);
            const masterOffset = /master_repl_offset:(\d+)/.exec(masterInfo)?.[1];
            if (
              !/role:slave/.test(replicaInfo) ||
              !/master_link_status:up/.test(replicaInfo) ||
              !/master_sync_in_progress:0/.test(replicaInfo) ||
              /slave_repl_offset:(\d+)/.exec(replicaInfo)?.[1] !== masterOffset ||
              !/slave0:.*state=online/.test(masterInfo)
            ) {
              return false;
            }
          }
          return true;
        } catch {
          return false;
        }
      },
      timeoutMs,
      50,
    );
    return shards;
  }

  /** Kills every server and removes the directory. */
  async stop(): Promise<void> {
    for (const client of this.admins.values()) {
      client.disconnect();
    }
    this.admins.clear();
    for (const server of this.servers.values()) {
      server.signal('SIGKILL');
    }
    await Promise.all([...this.servers.values()].map((server) => server.exited));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** CRC16-XMODEM, as Redis Cluster hashes keys to slots. */
function crc16(text: string): number {
  let crc = 0;
  for (const byte of Buffer.from(text)) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc;
}

/** The Cluster slot of a key, honouring a `{hash tag}` as Redis does. */
export function slotOf(key: string): number {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) {
      return crc16(key.slice(open + 1, close)) % 16_384;
    }
  }
  return crc16(key) % 16_384;
}
