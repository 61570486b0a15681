import { Injectable, NotFoundException } from '@nestjs/common';
import { randomUUID } from 'node:crypto';

export interface OrderItem {
  sku: string;
  quantity: number;
  unitPrice: number;
}

export interface Order {
  id: string;
  customerId: string;
  items: OrderItem[];
  total: number;
  status: 'pending';
  createdAt: Date;
}

/** Orders kept in memory; the full sample with a database is its own issue. */
@Injectable()
export class OrdersService {
  private readonly orders = new Map<string, Order>();

  create(customerId: string, items: OrderItem[]): Order {
    const order: Order = {
      id: randomUUID(),
      customerId,
      items,
      total: items.reduce((sum, item) => sum + item.quantity * item.unitPrice, 0),
      status: 'pending',
      createdAt: new Date(),
    };
    this.orders.set(order.id, order);
    return order;
  }

  list(): Order[] {
    return [...this.orders.values()];
  }

  get(id: string): Order {
    const order = this.orders.get(id);
    if (!order) {
      throw new NotFoundException(`Order ${id} not found`);
    }
    return order;
  }
}
