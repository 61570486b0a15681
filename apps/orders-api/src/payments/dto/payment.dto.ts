import { ApiProperty } from '@nestjs/swagger';
import { IsNumber, IsOptional, IsString, IsUUID, Max, MaxLength, Min } from 'class-validator';
import type { Payment, PaymentStatus } from '../payment.entity';

/** Body of `POST /payments`. */
export class CreatePaymentDto {
  @ApiProperty({ format: 'uuid' })
  @IsUUID()
  orderId!: string;

  @ApiProperty({ example: 19.98, description: "Must equal the order's total." })
  @IsNumber({ allowNaN: false, allowInfinity: false, maxDecimalPlaces: 2 })
  @Min(0)
  @Max(1_000_000_000)
  amount!: number;
}

/** A payment as the API returns it. */
export class PaymentResponse {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty({ format: 'uuid' })
  orderId!: string;

  @ApiProperty()
  amount!: number;

  @ApiProperty({ enum: ['pending', 'succeeded'] })
  status!: PaymentStatus;

  @ApiProperty({ format: 'date-time' })
  createdAt!: Date;

  static of(payment: Payment): PaymentResponse {
    return {
      id: payment.id,
      orderId: payment.orderId,
      amount: payment.amount,
      status: payment.status,
      createdAt: payment.createdAt,
    };
  }
}

/** Query of `GET /payments`. */
export class ListPaymentsQuery {
  @ApiProperty({ required: false, format: 'uuid', description: 'Only the payments of this order.' })
  @IsOptional()
  @IsString()
  @MaxLength(36)
  orderId?: string;
}
