import { AsyncLocalStorage } from 'node:async_hooks';
import type { EntityManager } from 'typeorm';

/** The EntityManager of the transactional run the current async context belongs to. */
export const transactionStorage = new AsyncLocalStorage<EntityManager>();

/**
 * In transactional mode (`@Idempotent({ transaction: true })`, or `run()` with it), the
 * EntityManager of the transaction the idempotency record commits in. Database work done through
 * it commits with the record, or not at all. Outside such a run it answers `fallback` (or
 * `undefined` without one), so one service serves both.
 *
 * Work done through any other manager or repository (one injected with `@InjectRepository()`,
 * or `dataSource.manager`) is outside that transaction, and outside the guarantee.
 *
 * @example
 * constructor(private readonly dataSource: DataSource) {}
 *
 * create(dto: CreateOrderDto) {
 *   const manager = transactionalEntityManager(this.dataSource.manager);
 *   return manager.getRepository(Order).save(manager.create(Order, dto));
 * }
 */
export function transactionalEntityManager(fallback: EntityManager): EntityManager;
export function transactionalEntityManager(): EntityManager | undefined;
export function transactionalEntityManager(fallback?: EntityManager): EntityManager | undefined {
  return transactionStorage.getStore() ?? fallback;
}
