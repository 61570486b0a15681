import { ApiProperty } from '@nestjs/swagger';
import { Type } from 'class-transformer';
import {
  ArrayMaxSize,
  ArrayMinSize,
  IsArray,
  IsInt,
  IsNotEmpty,
  IsNumber,
  IsOptional,
  IsString,
  Max,
  MaxLength,
  Min,
  ValidateNested,
} from 'class-validator';

/** One line of an order in a request. */
export class OrderItemDto {
  @ApiProperty({ example: 'SKU-123', maxLength: 64 })
  @IsString()
  @IsNotEmpty()
  @MaxLength(64)
  sku!: string;

  @ApiProperty({ example: 2, minimum: 1, maximum: 10_000 })
  @IsInt()
  @Min(1)
  @Max(10_000)
  quantity!: number;

  @ApiProperty({
    example: 9.99,
    minimum: 0,
    maximum: 1_000_000,
    description: 'At most two decimals.',
  })
  @IsNumber({ allowNaN: false, allowInfinity: false, maxDecimalPlaces: 2 })
  @Min(0)
  @Max(1_000_000)
  unitPrice!: number;
}

/** Body of `POST /orders` and `PUT /orders/:id`. */
export class OrderInputDto {
  @ApiProperty({ example: 'customer-42', maxLength: 100 })
  @IsString()
  @IsNotEmpty()
  @MaxLength(100)
  customerId!: string;

  @ApiProperty({ type: [OrderItemDto], minItems: 1, maxItems: 100 })
  @IsArray()
  @ArrayMinSize(1)
  @ArrayMaxSize(100)
  @ValidateNested({ each: true })
  @Type(() => OrderItemDto)
  items!: OrderItemDto[];
}

/** Query of `GET /orders`. */
export class ListOrdersQuery {
  @ApiProperty({
    required: false,
    maxLength: 100,
    description: 'Only the orders of this customer.',
  })
  @IsOptional()
  @IsString()
  @MaxLength(100)
  customerId?: string;
}
