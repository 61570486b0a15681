import {
  Body,
  Controller,
  Delete,
  Get,
  Headers,
  HttpCode,
  HttpStatus,
  Param,
  Post,
  Put,
  Query,
  Res,
} from '@nestjs/common';
import {
  ApiConflictResponse,
  ApiCreatedResponse,
  ApiHeader,
  ApiNoContentResponse,
  ApiNotFoundResponse,
  ApiNotModifiedResponse,
  ApiOkResponse,
  ApiPreconditionFailedResponse,
  ApiTags,
} from '@nestjs/swagger';
import { Idempotent } from 'nestjs-idempotency';
import { entityTag, matchesEntityTag } from '../common/etag';
import type { HttpResponse } from '../common/http';
import { ListOrdersQuery, OrderInputDto } from './dto/order-input.dto';
import { OrderResponse } from './dto/order.response';
import type { Order } from './order.entity';
import { OrdersService } from './orders.service';

@ApiTags('orders')
@Controller('orders')
export class OrdersController {
  constructor(private readonly orders: OrdersService) {}

  /** Creates an order once per Idempotency-Key; a retry replays the same 201, body and Location. */
  @Post()
  @Idempotent()
  @ApiCreatedResponse({ type: OrderResponse, description: 'Created; `Location` names the order.' })
  async create(
    @Body() dto: OrderInputDto,
    @Res({ passthrough: true }) res: HttpResponse,
  ): Promise<OrderResponse> {
    const order = await this.orders.create(dto);
    res.header('Location', `/orders/${order.id}`);
    return this.represent(order, res);
  }

  @Get()
  @ApiOkResponse({ type: [OrderResponse] })
  async list(@Query() query: ListOrdersQuery): Promise<OrderResponse[]> {
    const orders = await this.orders.list(query.customerId);
    return orders.map((order) => OrderResponse.of(order));
  }

  @Get(':id')
  @ApiHeader({ name: 'If-None-Match', required: false })
  @ApiOkResponse({ type: OrderResponse, description: 'The order; `ETag` is its version.' })
  @ApiNotModifiedResponse({ description: 'The `If-None-Match` ETag is current.' })
  @ApiNotFoundResponse({ description: 'No such order.' })
  async get(
    @Param('id') id: string,
    @Headers('if-none-match') ifNoneMatch: string | undefined,
    @Res({ passthrough: true }) res: HttpResponse,
  ): Promise<OrderResponse | undefined> {
    const order = await this.orders.get(id);
    const etag = entityTag(order.version);
    if (ifNoneMatch !== undefined && matchesEntityTag(ifNoneMatch, etag, true)) {
      res.header('ETag', etag);
      res.status(HttpStatus.NOT_MODIFIED);
      return undefined;
    }
    return this.represent(order, res);
  }

  /** Replaces customer and items of a pending order; sending the same body again changes nothing. */
  @Put(':id')
  @ApiHeader({ name: 'If-Match', required: false })
  @ApiOkResponse({ type: OrderResponse })
  @ApiNotFoundResponse({ description: 'No such order.' })
  @ApiConflictResponse({ description: 'The order is paid, or being paid.' })
  @ApiPreconditionFailedResponse({ description: 'The `If-Match` ETag is stale.' })
  async replace(
    @Param('id') id: string,
    @Body() dto: OrderInputDto,
    @Headers('if-match') ifMatch: string | undefined,
    @Res({ passthrough: true }) res: HttpResponse,
  ): Promise<OrderResponse> {
    return this.represent(await this.orders.replace(id, dto, ifMatch), res);
  }

  @Delete(':id')
  @HttpCode(HttpStatus.NO_CONTENT)
  @ApiHeader({ name: 'If-Match', required: false })
  @ApiNoContentResponse({ description: 'Deleted.' })
  @ApiNotFoundResponse({ description: 'No such order (or already deleted).' })
  @ApiConflictResponse({ description: 'The order is paid, or being paid.' })
  @ApiPreconditionFailedResponse({ description: 'The `If-Match` ETag is stale.' })
  async remove(
    @Param('id') id: string,
    @Headers('if-match') ifMatch: string | undefined,
  ): Promise<void> {
    await this.orders.remove(id, ifMatch);
  }

  private represent(order: Order, res: HttpResponse): OrderResponse {
    res.header('ETag', entityTag(order.version));
    return OrderResponse.of(order);
  }
}
