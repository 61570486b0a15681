import { Column, Entity, PrimaryColumn } from 'typeorm';
import { decimalTransformer } from '../database/money';

export type PaymentStatus = 'pending' | 'succeeded';

/**
 * A payment of an order, in the `payments` table. `order_id` is unique: an order has at most one
 * payment, whatever key or instance created it. While `pending`, an attempt holds it under a
 * lease (`lease_token`, `lease_expires_at`); an attempt whose process died is taken over once the
 * lease lapses.
 */
@Entity('payments')
export class Payment {
  @PrimaryColumn({ type: 'varchar', length: 36 })
  id!: string;

  @Column({ name: 'order_id', type: 'varchar', length: 36 })
  orderId!: string;

  @Column({ type: 'decimal', precision: 14, scale: 2, transformer: decimalTransformer })
  amount!: number;

  @Column({ type: 'varchar', length: 16 })
  status!: PaymentStatus;

  @Column({ name: 'lease_token', type: 'varchar', length: 36, nullable: true })
  leaseToken!: string | null;

  @Column({ name: 'lease_expires_at', type: Date, nullable: true })
  leaseExpiresAt!: Date | null;

  @Column({ name: 'created_at', type: Date })
  createdAt!: Date;
}
