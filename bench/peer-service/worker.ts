/**
 * The programmatic benchmark's worker for the peer: `makeIdempotent` of
 * `@aws-lambda-powertools/idempotency` with its Redis persistence layer (`CachePersistenceLayer`)
 * on `@redis/client`, from this folder's own node_modules. The key is the call's `id`
 * (`eventKeyJmesPath`). The payload is not validated: this layer's completion does not keep the
 * payload hash (`_updateRecord` writes status, expiry and data only), so with
 * `payloadValidationJmesPath` every replay fails with "Payload does not match stored record"; the
 * nestjs-idempotency worker gives no payload either. A stand-in Lambda context gives the
 * in-progress record a 30 s lease, as nestjs-idempotency's default `lockTtl`, and keeps the layer
 * from warning on every call. See bench/common/service-worker.ts for the protocol.
 *
 * Environment: BENCH_REDIS_URL, BENCH_REDIS_PREFIX, BENCH_CLIENT_NAME, BENCH_TTL_MS.
 */
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency';
import { CachePersistenceLayer } from '@aws-lambda-powertools/idempotency/cache';
import { createClient } from '@redis/client';
import { type BenchOrderInput, makeWork, serveWorker } from '../common/service-worker';

/** What makeIdempotent reads of a Lambda context: the time left, which becomes the lease. */
interface LambdaContextLike {
  getRemainingTimeInMillis(): number;
}

const LEASE_MS = 30_000;

async function main(): Promise<void> {
  const client = await createClient({
    url: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
    name: process.env.BENCH_CLIENT_NAME,
  }).connect();
  const { work, executed } = makeWork();
  const idempotent = makeIdempotent(
    (event: { id: string; order: BenchOrderInput }, _context: LambdaContextLike) =>
      work(event.order),
    {
      persistenceStore: new CachePersistenceLayer({ client }),
      keyPrefix: `${process.env.BENCH_REDIS_PREFIX ?? 'bench:'}powertools`,
      config: new IdempotencyConfig({
        eventKeyJmesPath: 'id',
        expiresAfterSeconds: Math.ceil(Number(process.env.BENCH_TTL_MS ?? 15 * 60_000) / 1000),
      }),
    },
  );
  const context: LambdaContextLike = { getRemainingTimeInMillis: () => LEASE_MS };
  await serveWorker((id, order) => idempotent({ id, order }, context), executed);
  await client.quit();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
