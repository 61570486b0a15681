import { Column, Entity, Index, PrimaryColumn } from 'typeorm';

/**
 * The row of one record in `idempotency_records`, for applications that want it in their
 * `entities` (to read records with a repository, for example). The store itself uses SQL of its
 * own. Create the table with `CreateIdempotencyRecordsTable1763800000000` rather than
 * `synchronize`: the migration gives MySQL/MariaDB a LONGTEXT body, where this entity says `text`
 * to stay portable.
 */
@Entity('idempotency_records')
export class IdempotencyRecord {
  /** Hex SHA-256 of prefix, scope and client key. */
  @PrimaryColumn({ name: 'storage_key', type: 'varchar', length: 64 })
  storageKey!: string;

  @Column({ type: 'varchar', length: 64, nullable: true })
  fingerprint!: string | null;

  /** `'in_flight'` or `'completed'`. */
  @Column({ type: 'varchar', length: 16 })
  state!: string;

  @Column({ name: 'owner_token', type: 'varchar', length: 64, nullable: true })
  ownerToken!: string | null;

  /** Epoch milliseconds (database clock) when the lease lapses; null once completed. */
  @Column({ name: 'lease_expires_at', type: 'bigint', nullable: true })
  leaseExpiresAt!: string | null;

  @Column({ name: 'response_status', type: 'int', nullable: true })
  responseStatus!: number | null;

  /** JSON object of the stored headers. */
  @Column({ name: 'response_headers', type: 'text', nullable: true })
  responseHeaders!: string | null;

  /** The stored body in the library's tagged JSON encoding. */
  @Column({ name: 'response_body', type: 'text', nullable: true })
  responseBody!: string | null;

  @Column({ name: 'response_error', type: 'boolean', nullable: true })
  responseError!: boolean | null;

  /** Epoch milliseconds when the record is gone: lease expiry in flight, retention once completed. */
  @Index('idempotency_records_expires_at')
  @Column({ name: 'expires_at', type: 'bigint' })
  expiresAt!: string;

  @Column({ name: 'created_at', type: 'bigint' })
  createdAt!: string;
}
