export { CreateIdempotencyRecordsTable1763800000000 } from './create-idempotency-records.migration';
export { IdempotencyRecord } from './idempotency-record.entity';
export {
  IDEMPOTENCY_RECORDS_TABLE,
  TypeOrmIdempotencyStore,
  type IdempotencyTransactionHost,
  type TypeOrmIdempotencyStoreOptions,
} from './typeorm-idempotency.store';
export { transactionalEntityManager } from './idempotency-transaction';
