import { Body, Controller, Get, Header, Post, Res } from '@nestjs/common';
import { ApiExcludeEndpoint, ApiTags } from '@nestjs/swagger';
import { Idempotent } from 'nestjs-idempotency';
import type { HttpResponse } from '../common/http';
import { CreatePaymentDto, PaymentResponse } from '../payments/dto/payment.dto';
import { ApiPaymentResponses, storePaymentIf } from '../payments/payments.controller';
import { PaymentsService } from '../payments/payments.service';
import { CHECKOUT_CSP, CHECKOUT_PAGE } from './checkout.page';

/** The scope name of the keys `POST /idempotency-keys` issues, and the only ones checkout takes. */
export const CHECKOUT_KEY_SCOPE = 'checkout';

/**
 * The checkout page (`GET /checkout`) and the payment route it posts to. That route takes only
 * keys this server issued for checkout (`POST /idempotency-keys`): a browser never makes one up,
 * and a key cannot be reused from another operation. `POST /payments` stays open to API clients'
 * own keys.
 */
@ApiTags('checkout')
@Controller('checkout')
export class CheckoutController {
  constructor(private readonly payments: PaymentsService) {}

  @Get()
  @ApiExcludeEndpoint()
  @Header('Content-Type', 'text/html; charset=utf-8')
  @Header('Content-Security-Policy', CHECKOUT_CSP)
  @Header('Cache-Control', 'no-store')
  page(): string {
    return CHECKOUT_PAGE;
  }

  /** `POST /payments`, with an issued key: one payment per key, and one per order whatever the key. */
  @Post('payments')
  @Idempotent({ key: { issued: CHECKOUT_KEY_SCOPE }, storeIf: storePaymentIf })
  @ApiPaymentResponses()
  async pay(
    @Body() dto: CreatePaymentDto,
    @Res({ passthrough: true }) res: HttpResponse,
  ): Promise<PaymentResponse> {
    const payment = await this.payments.pay(dto);
    res.header('Location', `/payments/${payment.id}`);
    return PaymentResponse.of(payment);
  }
}
