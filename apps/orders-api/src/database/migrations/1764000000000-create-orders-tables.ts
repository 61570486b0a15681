import {
  type MigrationInterface,
  type QueryRunner,
  Table,
  type TableColumnOptions,
  TableForeignKey,
  TableIndex,
} from 'typeorm';

/**
 * The app's tables: `orders`, `payments` (one per order, by a unique key) and `outbox_messages`.
 * Written with TypeORM's schema builder so one migration serves PostgreSQL, MySQL/MariaDB and
 * SQLite; only the timestamp type differs.
 */
export class CreateOrdersTables1764000000000 implements MigrationInterface {
  name = 'CreateOrdersTables1764000000000';

  async up(queryRunner: QueryRunner): Promise<void> {
    const type = String(queryRunner.connection.options.type);
    const timestamp = (name: string, nullable = false): TableColumnOptions =>
      type === 'postgres'
        ? { name, type: 'timestamptz', isNullable: nullable }
        : type === 'mysql' || type === 'mariadb'
          ? { name, type: 'datetime', precision: 3, isNullable: nullable }
          : { name, type: 'datetime', isNullable: nullable };
    const id = (name = 'id'): TableColumnOptions => ({
      name,
      type: 'varchar',
      length: '36',
      isPrimary: name === 'id',
    });
    const money = (name: string): TableColumnOptions => ({
      name,
      type: 'decimal',
      precision: 14,
      scale: 2,
    });
    const text = (name: string, length: string): TableColumnOptions => ({
      name,
      type: 'varchar',
      length,
    });

    await queryRunner.createTable(
      new Table({
        name: 'orders',
        columns: [
          id(),
          text('customer_id', '100'),
          { name: 'items', type: 'text' },
          money('total'),
          text('status', '16'),
          { name: 'version', type: 'integer' },
          timestamp('created_at'),
          timestamp('updated_at'),
        ],
        indices: [
          new TableIndex({ name: 'IDX_orders_customer', columnNames: ['customer_id'] }),
          new TableIndex({ name: 'IDX_orders_created', columnNames: ['created_at'] }),
        ],
      }),
      true,
    );
    await queryRunner.createTable(
      new Table({
        name: 'payments',
        columns: [
          id(),
          id('order_id'),
          money('amount'),
          text('status', '16'),
          { ...text('lease_token', '36'), isNullable: true },
          timestamp('lease_expires_at', true),
          timestamp('created_at'),
        ],
        uniques: [{ name: 'UQ_payments_order', columnNames: ['order_id'] }],
        foreignKeys: [
          new TableForeignKey({
            name: 'FK_payments_order',
            columnNames: ['order_id'],
            referencedTableName: 'orders',
            referencedColumnNames: ['id'],
            onDelete: 'RESTRICT',
          }),
        ],
      }),
      true,
    );
    await queryRunner.createTable(
      new Table({
        name: 'outbox_messages',
        columns: [
          id(),
          text('recipient', '320'),
          text('subject', '200'),
          { name: 'body', type: 'text' },
          text('status', '16'),
          timestamp('created_at'),
        ],
        indices: [new TableIndex({ name: 'IDX_outbox_created', columnNames: ['created_at'] })],
      }),
      true,
    );
  }

  async down(queryRunner: QueryRunner): Promise<void> {
    await queryRunner.dropTable('outbox_messages', true);
    await queryRunner.dropTable('payments', true);
    await queryRunner.dropTable('orders', true);
  }
}
