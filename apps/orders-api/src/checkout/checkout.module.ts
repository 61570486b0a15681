import { Module } from '@nestjs/common';
import { PaymentsModule } from '../payments/payments.module';
import { CheckoutController } from './checkout.controller';
import { IdempotencyKeysController } from './idempotency-keys.controller';

/** The checkout page, its payment route, and the keys it pays with. */
@Module({
  imports: [PaymentsModule],
  controllers: [CheckoutController, IdempotencyKeysController],
})
export class CheckoutModule {}
