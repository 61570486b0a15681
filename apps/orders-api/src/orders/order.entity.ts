import { Column, Entity, PrimaryColumn } from 'typeorm';
import { decimalTransformer } from '../database/money';

/** A line of an order. */
export interface OrderItem {
  sku: string;
  quantity: number;
  unitPrice: number;
}

export type OrderStatus = 'pending' | 'paid';

/** An order, as stored in the `orders` table and returned by the API. */
@Entity('orders')
export class Order {
  @PrimaryColumn({ type: 'varchar', length: 36 })
  id!: string;

  @Column({ name: 'customer_id', type: 'varchar', length: 100 })
  customerId!: string;

  @Column({ type: 'simple-json' })
  items!: OrderItem[];

  @Column({ type: 'decimal', precision: 14, scale: 2, transformer: decimalTransformer })
  total!: number;

  @Column({ type: 'varchar', length: 16 })
  status!: OrderStatus;

  /** Incremented by every change; the order's ETag. Not part of the JSON body. */
  @Column({ type: 'integer' })
  version!: number;

  @Column({ name: 'created_at', type: Date })
  createdAt!: Date;

  @Column({ name: 'updated_at', type: Date })
  updatedAt!: Date;
}
