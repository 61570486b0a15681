export {
  describeIdempotencyStoreContract,
  type IdempotencyStoreContractOptions,
} from './store-contract';
