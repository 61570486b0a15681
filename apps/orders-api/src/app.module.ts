import { Module } from '@nestjs/common';
import { IdempotencyModule } from 'nestjs-idempotency';
import { OrdersController } from './orders/orders.controller';
import { OrdersService } from './orders/orders.service';

@Module({
  imports: [IdempotencyModule.forRoot()],
  controllers: [OrdersController],
  providers: [OrdersService],
})
export class AppModule {}
