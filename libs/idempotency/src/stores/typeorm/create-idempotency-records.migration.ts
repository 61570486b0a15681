import type { MigrationInterface, QueryRunner } from 'typeorm';
import { dialectOf } from './typeorm-dialects';
import { IDEMPOTENCY_RECORDS_TABLE } from './typeorm-idempotency.store';

/**
 * Creates the `idempotency_records` table and its `expires_at` index, with the column types of
 * the DataSource's dialect (LONGTEXT bodies on MySQL/MariaDB). Add it to your DataSource's
 * `migrations`, or run `up()` yourself.
 *
 * @example
 * new DataSource({ ..., migrations: [CreateIdempotencyRecordsTable1763800000000, ...] })
 */
export class CreateIdempotencyRecordsTable1763800000000 implements MigrationInterface {
  name = 'CreateIdempotencyRecordsTable1763800000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    for (const sql of dialectOf(String(queryRunner.connection.options.type)).createTable(
      IDEMPOTENCY_RECORDS_TABLE,
    )) {
      await queryRunner.query(sql);
    }
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    for (const sql of dialectOf(String(queryRunner.connection.options.type)).dropTable(
      IDEMPOTENCY_RECORDS_TABLE,
    )) {
      await queryRunner.query(sql);
    }
  }
}
