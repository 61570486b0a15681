import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { reachable } from './services';

const run = promisify(execFile);

/** A throwaway Redis Cluster of three masters on loopback, started with redis-server. */
export interface LocalRedisCluster {
  nodes: { host: string; port: number }[];
  stop(): Promise<void>;
}

export async function startRedisCluster(basePort: number): Promise<LocalRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'idempotency-cluster-'));
  const ports = [basePort, basePort + 1, basePort + 2];
  const processes: ChildProcess[] = ports.map((port) =>
    spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        join(dir, `nodes-${port}.conf`),
        '--cluster-node-timeout',
        '2000',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        dir,
      ],
      { stdio: 'ignore' },
    ),
  );
  const stop = async () => {
    for (const child of processes) {
      child.kill('SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const port of ports) {
      await waitUntil(() => reachable('127.0.0.1', port, 200));
    }
    await run('redis-cli', [
      '--cluster',
      'create',
      ...ports.map((port) => `127.0.0.1:${port}`),
      '--cluster-replicas',
      '0',
      '--cluster-yes',
    ]);
    await waitUntil(async () => {
      const { stdout } = await run('redis-cli', ['-p', String(ports[0]), 'cluster', 'info']);
      return stdout.includes('cluster_state:ok');
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { nodes: ports.map((port) => ({ host: '127.0.0.1', port })), stop };
}

async function waitUntil(check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) {
      throw new Error('the local Redis Cluster did not come up in time');
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
