import { Body, Controller, Get, Param, Post, Res } from '@nestjs/common';
import { Idempotent } from 'nestjs-idempotency';
import { type Order, type OrderItem, OrdersService } from './orders.service';

interface CreateOrderBody {
  customerId: string;
  items?: OrderItem[];
}

@Controller('orders')
export class OrdersController {
  constructor(private readonly orders: OrdersService) {}

  /** Creates an order once per Idempotency-Key; a retry replays the same 201 and Location. */
  @Post()
  @Idempotent()
  create(
    @Body() body: CreateOrderBody,
    @Res({ passthrough: true }) res: { header(name: string, value: string): unknown },
  ): Order {
    const order = this.orders.create(String(body.customerId), body.items ?? []);
    res.header('Location', `/orders/${order.id}`);
    return order;
  }

  @Get()
  list(): Order[] {
    return this.orders.list();
  }

  @Get(':id')
  get(@Param('id') id: string): Order {
    return this.orders.get(id);
  }
}
