import {
  type MigrationInterface,
  type QueryRunner,
  TableColumn,
  type TableColumnOptions,
  TableIndex,
} from 'typeorm';

/**
 * What the outbox relay and the mailer record on `outbox_messages`: the relay's attempts and when
 * it may try again (`attempts`, `next_attempt_at`), when the message was handed to the queue
 * (`published_at`), and the delivery (`sent_at`, the `Message-ID`, the SMTP server's answer or the
 * captured message, a permanent failure). An index serves the relay's look-up of queued messages.
 */
export class OutboxDelivery1765000000000 implements MigrationInterface {
  name = 'OutboxDelivery1765000000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    const type = String(queryRunner.connection.options.type);
    const timestamp = (name: string): TableColumnOptions =>
      type === 'postgres'
        ? { name, type: 'timestamptz', isNullable: true }
        : type === 'mysql' || type === 'mariadb'
          ? { name, type: 'datetime', precision: 3, isNullable: true }
          : { name, type: 'datetime', isNullable: true };
    await queryRunner.addColumns('outbox_messages', [
      new TableColumn({ name: 'attempts', type: 'integer', default: 0 }),
      new TableColumn(timestamp('next_attempt_at')),
      new TableColumn(timestamp('published_at')),
      new TableColumn(timestamp('sent_at')),
      new TableColumn({ name: 'message_id', type: 'varchar', length: '255', isNullable: true }),
      new TableColumn({ name: 'smtp_response', type: 'text', isNullable: true }),
      new TableColumn({ name: 'captured_message', type: 'text', isNullable: true }),
    ]);
    await queryRunner.createIndex(
      'outbox_messages',
      new TableIndex({ name: 'IDX_outbox_status', columnNames: ['status', 'created_at'] }),
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.dropIndex('outbox_messages', 'IDX_outbox_status');
    for (const column of [
      'captured_message',
      'smtp_response',
      'message_id',
      'sent_at',
      'published_at',
      'next_attempt_at',
      'attempts',
    ]) {
      await queryRunner.dropColumn('outbox_messages', column);
    }
  }
}
