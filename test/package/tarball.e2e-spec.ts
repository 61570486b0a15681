import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

/**
 * The package as a user installs it: `npm pack` of libs/idempotency (its prepack builds dist),
 * the tarball installed with npm into a throwaway app outside the monorepo, compiled by tsc under
 * moduleResolution node10 and nodenext (CommonJS and ESM), and run on Node 20 and Node 24, where
 * it must answer a replay. A custom store's contract suite runs there under Jest's default
 * CommonJS mode on both Node versions. The dependencies are the monorepo's own versions, so npm
 * finds them in its cache after `npm ci`.
 */

const run = promisify(execFile);
// npm test runs from the repository's root (jest's rootDir).
const ROOT = process.cwd();
const FIXTURE = join(ROOT, 'test', 'package', 'fixture');
const MINUTES = 60_000;

/** The monorepo's installed version of a package, pinned in the throwaway app. */
const version = (name: string): string =>
  (
    JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;

/** Environment of the children: no Jest worker variables, no flags of this process's Node. */
function childEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith('JEST_') || name === 'NODE_OPTIONS' || name.startsWith('npm_')) {
      delete env[name];
    }
  }
  return env;
}

const VARIANTS = [
  {
    name: 'node10 (CommonJS)',
    dir: 'node10',
    module: 'commonjs',
    resolution: 'node10',
    esm: false,
  },
  {
    name: 'nodenext (CommonJS)',
    dir: 'nodenext-cjs',
    module: 'nodenext',
    resolution: 'nodenext',
    esm: false,
  },
  {
    name: 'nodenext (ESM)',
    dir: 'nodenext-esm',
    module: 'nodenext',
    resolution: 'nodenext',
    esm: true,
  },
] as const;

describe('the packed tarball, installed into an app outside the monorepo', () => {
  let work: string;
  let app: string;
  let files: string[];
  const nodes: [string, string][] = [['Node 20', process.execPath]];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'nestjs-idempotency-tarball-'));
    const node24 = await run(process.execPath, [join(ROOT, 'test', 'utils', 'node24.mjs')], {
      timeout: 5 * MINUTES,
    });
    nodes.push(['Node 24', node24.stdout.trim()]);
    const { stdout } = await run('npm', ['pack', '--json', '--pack-destination', work], {
      cwd: join(ROOT, 'libs', 'idempotency'),
      env: childEnv(),
      maxBuffer: 64 * 1024 * 1024,
    });
    // prepack's tsc may print before the JSON; the JSON is the last array on stdout.
    const [packed] = JSON.parse(stdout.slice(stdout.lastIndexOf('\n[') + 1)) as {
      filename: string;
      files: { path: string }[];
    }[];
    files = packed.files.map((f) => f.path);
    const tarball = join(work, packed.filename);

    app = join(work, 'app');
    mkdirSync(app);
    const pinned = (names: string[]) =>
      Object.fromEntries(names.map((name) => [name, version(name)]));
    writeFileSync(
      join(app, 'package.json'),
      JSON.stringify({
        name: 'tarball-check',
        private: true,
        dependencies: {
          'nestjs-idempotency': `file:${tarball}`,
          ...pinned([
            '@nestjs/common',
            '@nestjs/core',
            '@nestjs/platform-express',
            'reflect-metadata',
            'rxjs',
            'ioredis',
            'typeorm',
            '@nestjs/typeorm',
            'prom-client',
            '@opentelemetry/api',
          ]),
        },
        devDependencies: pinned(['typescript', '@types/node', 'jest']),
      }),
    );
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], {
      cwd: app,
      env: childEnv(),
      timeout: 8 * MINUTES,
      maxBuffer: 64 * 1024 * 1024,
    });
    copyFileSync(join(FIXTURE, 'contract.test.js'), join(app, 'contract.test.js'));
    for (const variant of VARIANTS) {
      const dir = join(app, variant.dir);
      mkdirSync(dir);
      copyFileSync(join(FIXTURE, 'main.ts'), join(dir, 'main.ts'));
      writeFileSync(
        join(dir, 'package.json'),
        JSON.stringify({ type: variant.esm ? 'module' : 'commonjs' }),
      );
      writeFileSync(
        join(dir, 'tsconfig.json'),
        JSON.stringify({
          compilerOptions: {
            module: variant.module,
            moduleResolution: variant.resolution,
            target: 'ES2022',
            strict: true,
            experimentalDecorators: true,
            emitDecoratorMetadata: true,
            // As `nest new` sets it; errors in the app's own imports (TS2307) are still reported.
            skipLibCheck: true,
            types: ['node'],
            outDir: 'dist',
          },
          files: ['main.ts'],
        }),
      );
    }
  }, 12 * MINUTES);

  afterAll(() => {
    if (work) {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('ships the README, the LICENSE, the CHANGELOG and the typings, and no source maps or specs', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'README.md',
        'LICENSE',
        'CHANGELOG.md',
        'package.json',
        'dist/index.js',
        'dist/index.d.ts',
        'dist/stores/index.d.ts',
        'dist/stores/redis/index.d.ts',
        'dist/stores/typeorm/index.d.ts',
        'dist/testing/index.d.ts',
        'dist/observability/prometheus/index.d.ts',
        'dist/observability/opentelemetry/index.d.ts',
      ]),
    );
    expect(
      files.filter((f) => f.endsWith('.map') || /\.spec\./.test(f) || f.startsWith('src/')),
    ).toEqual([]);
    const manifest = JSON.parse(
      readFileSync(join(app, 'node_modules', 'nestjs-idempotency', 'package.json'), 'utf8'),
    ) as Record<string, unknown>;
    // The range the README states, and the repository's own (npm start runs the sample on it).
    const node = (
      JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
        engines: { node: string };
      }
    ).engines.node;
    expect(manifest).toMatchObject({
      license: 'MIT',
      repository: expect.objectContaining({ url: expect.any(String) }),
      homepage: expect.any(String),
      bugs: expect.objectContaining({ url: expect.any(String) }),
      engines: { node },
    });
    const readme = readFileSync(
      join(app, 'node_modules', 'nestjs-idempotency', 'README.md'),
      'utf8',
    );
    expect(readme).toContain('npm install nestjs-idempotency');
    expect(readme).toContain(`Node.js \`${node}\``);
  });

  describe.each(VARIANTS)('compiled with tsc under moduleResolution $name', (variant) => {
    beforeAll(async () => {
      const tsc = join(app, 'node_modules', 'typescript', 'bin', 'tsc');
      await run(process.execPath, [tsc, '-p', join(app, variant.dir)], { env: childEnv() }).catch(
        (error: { stdout?: string }) => {
          throw new Error(`tsc failed under ${variant.name}:\n${error.stdout ?? String(error)}`);
        },
      );
    }, 2 * MINUTES);

    it.each([0, 1])('answers a replay (%#: Node 20, Node 24)', async (index) => {
      const [label, node] = nodes[index];
      const { stdout } = await run(node, [join(app, variant.dir, 'dist', 'main.js')], {
        cwd: app,
        env: childEnv(),
        timeout: MINUTES,
      });
      const result = JSON.parse(stdout.trim()) as {
        node: string;
        first: { status: number; body: unknown };
        second: { status: number; replayed: string | null; body: unknown };
        created: number;
        storeIsTheToken: boolean;
      };
      expect(result.node.startsWith(label === 'Node 20' ? 'v20.' : 'v24.')).toBe(true);
      expect(result.first).toEqual({ status: 201, body: { id: 1, amount: 42 } });
      expect(result.second).toEqual({ status: 201, replayed: 'true', body: { id: 1, amount: 42 } });
      expect(result.created).toBe(1);
      expect(result.storeIsTheToken).toBe(true);
    });
  });

  it.each([0, 1])(
    "runs a custom store's contract suite under Jest's CommonJS mode, no Nest loaded (%#: Node 20, Node 24)",
    async (index) => {
      const [, node] = nodes[index];
      const jest = join(app, 'node_modules', 'jest', 'bin', 'jest.js');
      const { stderr } = await run(node, [jest, '--ci', '--rootDir', app, 'contract.test.js'], {
        cwd: app,
        env: childEnv(),
        timeout: 3 * MINUTES,
      }).catch((error: { stderr?: string }) => {
        throw new Error(
          `the contract suite failed on ${nodes[index][0]}:\n${error.stderr ?? String(error)}`,
        );
      });
      expect(stderr).toMatch(/Tests:\s+\d+ passed, \d+ total/);
      expect(stderr).not.toMatch(/failed/);
    },
    4 * MINUTES,
  );
});
