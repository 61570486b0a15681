import { ApiProperty } from '@nestjs/swagger';
import type { Order, OrderStatus } from '../order.entity';
import { OrderItemDto } from './order-input.dto';

/** An order as the API returns it. */
export class OrderResponse {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty()
  customerId!: string;

  @ApiProperty({ type: [OrderItemDto] })
  items!: OrderItemDto[];

  @ApiProperty({ example: 19.98, description: 'Sum of quantity x unitPrice.' })
  total!: number;

  @ApiProperty({ enum: ['pending', 'paid'] })
  status!: OrderStatus;

  @ApiProperty({ format: 'date-time' })
  createdAt!: Date;

  @ApiProperty({ format: 'date-time' })
  updatedAt!: Date;

  static of(order: Order): OrderResponse {
    return {
      id: order.id,
      customerId: order.customerId,
      items: order.items.map(({ sku, quantity, unitPrice }) => ({ sku, quantity, unitPrice })),
      total: order.total,
      status: order.status,
      createdAt: order.createdAt,
      updatedAt: order.updatedAt,
    };
  }
}
