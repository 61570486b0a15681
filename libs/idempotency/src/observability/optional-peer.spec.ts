import { loadOptionalPeer } from './optional-peer';

// Through a variable, so that neither TypeScript nor Jest resolves it ahead of the call.
const importOf = (specifier: string) => () => import(specifier) as Promise<unknown>;

describe('loadOptionalPeer', () => {
  it('gives the loaded module', async () => {
    const prom = (await loadOptionalPeer(
      'prom-client',
      'nestjs-idempotency/prometheus',
      importOf('prom-client'),
    )) as { Registry?: unknown };
    expect(typeof prom.Registry).toBe('function');
  });

  it('names the package and the npm install command when the peer is not installed', async () => {
    const failure = loadOptionalPeer(
      'no-such-peer-xyz',
      'nestjs-idempotency/prometheus',
      importOf('no-such-peer-xyz'),
    );
    await expect(failure).rejects.toThrow(
      'nestjs-idempotency/prometheus needs "no-such-peer-xyz", an optional peer dependency that is not installed: npm install no-such-peer-xyz',
    );
    await expect(failure).rejects.toHaveProperty('cause.code', expect.stringMatching(/NOT_FOUND/));
  });

  it('rethrows as is what is missing inside an installed peer, and any other error', async () => {
    const inner = Object.assign(new Error("Cannot find module 'tdigest'"), {
      code: 'MODULE_NOT_FOUND',
    });
    await expect(loadOptionalPeer('prom-client', 'x', () => Promise.reject(inner))).rejects.toBe(
      inner,
    );
    const broken = new TypeError('boom');
    await expect(loadOptionalPeer('prom-client', 'x', () => Promise.reject(broken))).rejects.toBe(
      broken,
    );
  });
});
