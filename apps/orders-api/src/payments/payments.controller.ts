import { applyDecorators, Body, Controller, Get, Param, Post, Query, Res } from '@nestjs/common';
import {
  ApiBadGatewayResponse,
  ApiConflictResponse,
  ApiCreatedResponse,
  ApiNotFoundResponse,
  ApiOkResponse,
  ApiTags,
  ApiUnprocessableEntityResponse,
} from '@nestjs/swagger';
import { Idempotent } from 'nestjs-idempotency';
import type { HttpResponse } from '../common/http';
import { CreatePaymentDto, ListPaymentsQuery, PaymentResponse } from './dto/payment.dto';
import { PaymentsService } from './payments.service';

/**
 * A 409 (the order is being paid under another key) is not stored: it describes a moment, not the
 * request's result. Nor is a 5xx: a gateway failure releases the key for a retry.
 */
export const storePaymentIf = (status: number) => status < 500 && status !== 409;

/** The OpenAPI answers of a payment route. */
export const ApiPaymentResponses = () =>
  applyDecorators(
    ApiCreatedResponse({ type: PaymentResponse, description: 'Charged; the order is now paid.' }),
    ApiNotFoundResponse({ description: 'No such order.' }),
    ApiConflictResponse({ description: 'The order is paid, or a payment for it is under way.' }),
    ApiUnprocessableEntityResponse({ description: "The amount differs from the order's total." }),
    ApiBadGatewayResponse({ description: 'The gateway failed; nothing was charged; retry.' }),
  );

@ApiTags('payments')
@Controller('payments')
export class PaymentsController {
  constructor(private readonly payments: PaymentsService) {}

  /**
   * Pays an order once per Idempotency-Key, and once per order whatever the key. A gateway failure
   * (502) releases the key, so the client retries with the same one; a 409 is not stored either
   * (`storePaymentIf`).
   */
  @Post()
  @Idempotent({ storeIf: storePaymentIf })
  @ApiPaymentResponses()
  async create(
    @Body() dto: CreatePaymentDto,
    @Res({ passthrough: true }) res: HttpResponse,
  ): Promise<PaymentResponse> {
    const payment = await this.payments.pay(dto);
    res.header('Location', `/payments/${payment.id}`);
    return PaymentResponse.of(payment);
  }

  @Get()
  @ApiOkResponse({ type: [PaymentResponse] })
  async list(@Query() query: ListPaymentsQuery): Promise<PaymentResponse[]> {
    const payments = await this.payments.list(query.orderId);
    return payments.map((payment) => PaymentResponse.of(payment));
  }

  @Get(':id')
  @ApiOkResponse({ type: PaymentResponse })
  @ApiNotFoundResponse({ description: 'No such payment.' })
  async get(@Param('id') id: string): Promise<PaymentResponse> {
    return PaymentResponse.of(await this.payments.get(id));
  }
}
