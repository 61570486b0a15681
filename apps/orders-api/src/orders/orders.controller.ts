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
import { httpDate, modifiedSince, parseHttpDate } from '../common/http-date';
import type { HttpResponse } from '../common/http';
import { ListOrdersQuery, OrderInputDto } from './dto/order-input.dto';
import { OrderResponse } from './dto/order.response';
import type { Order } from './order.entity';
import { OrdersService } from './orders.service';

const IF_UNMODIFIED_SINCE = {
  name: 'If-Unmodified-Since',
  required: false,
  description: 'An HTTP-date; 412 when the order changed after it. Ignored when If-Match is sent.',
};

const STALE =
  'The `If-Match` ETag is stale, or the order changed after the `If-Unmodified-Since` date.';

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

  /**
   * One order, with its version as `ETag` and its last change as `Last-Modified`. A cache that
   * holds the current version gets 304: `If-None-Match` decides when sent, `If-Modified-Since`
   * only without it (RFC 9110 13.2.2), compared in whole seconds.
   */
  @Get(':id')
  @ApiHeader({ name: 'If-None-Match', required: false })
  @ApiHeader({
    name: 'If-Modified-Since',
    required: false,
    description: 'An HTTP-date; ignored when If-None-Match is sent.',
  })
  @ApiOkResponse({
    type: OrderResponse,
    description: 'The order; `ETag` is its version, `Last-Modified` its last change.',
    headers: {
      ETag: { description: 'The version of the order.', schema: { type: 'string' } },
      'Last-Modified': { description: 'When it last changed.', schema: { type: 'string' } },
    },
  })
  @ApiNotModifiedResponse({
    description:
      'The `If-None-Match` ETag is current, or the order has not changed since `If-Modified-Since`.',
  })
  @ApiNotFoundResponse({ description: 'No such order.' })
  async get(
    @Param('id') id: string,
    @Headers('if-none-match') ifNoneMatch: string | undefined,
    @Headers('if-modified-since') ifModifiedSince: string | undefined,
    @Res({ passthrough: true }) res: HttpResponse,
  ): Promise<OrderResponse | undefined> {
    const order = await this.orders.get(id);
    if (notModified(order, ifNoneMatch, ifModifiedSince)) {
      this.validators(order, res);
      res.status(HttpStatus.NOT_MODIFIED);
      return undefined;
    }
    return this.represent(order, res);
  }

  /** Replaces customer and items of a pending order; sending the same body again changes nothing. */
  @Put(':id')
  @ApiHeader({ name: 'If-Match', required: false })
  @ApiHeader(IF_UNMODIFIED_SINCE)
  @ApiOkResponse({ type: OrderResponse })
  @ApiNotFoundResponse({ description: 'No such order.' })
  @ApiConflictResponse({ description: 'The order is paid, or being paid.' })
  @ApiPreconditionFailedResponse({ description: STALE })
  async replace(
    @Param('id') id: string,
    @Body() dto: OrderInputDto,
    @Headers('if-match') ifMatch: string | undefined,
    @Headers('if-unmodified-since') ifUnmodifiedSince: string | undefined,
    @Res({ passthrough: true }) res: HttpResponse,
  ): Promise<OrderResponse> {
    const order = await this.orders.replace(id, dto, { ifMatch, ifUnmodifiedSince });
    return this.represent(order, res);
  }

  @Delete(':id')
  @HttpCode(HttpStatus.NO_CONTENT)
  @ApiHeader({ name: 'If-Match', required: false })
  @ApiHeader(IF_UNMODIFIED_SINCE)
  @ApiNoContentResponse({ description: 'Deleted.' })
  @ApiNotFoundResponse({ description: 'No such order (or already deleted).' })
  @ApiConflictResponse({ description: 'The order is paid, or being paid.' })
  @ApiPreconditionFailedResponse({ description: STALE })
  async remove(
    @Param('id') id: string,
    @Headers('if-match') ifMatch: string | undefined,
    @Headers('if-unmodified-since') ifUnmodifiedSince: string | undefined,
  ): Promise<void> {
    await this.orders.remove(id, { ifMatch, ifUnmodifiedSince });
  }

  private represent(order: Order, res: HttpResponse): OrderResponse {
    this.validators(order, res);
    return OrderResponse.of(order);
  }

  /** The validators of an order's current version (RFC 9110 8.8): its ETag and Last-Modified. */
  private validators(order: Order, res: HttpResponse): void {
    res.header('ETag', entityTag(order.version));
    res.header('Last-Modified', httpDate(order.updatedAt));
  }
}

/**
 * Whether a GET is answered 304 (RFC 9110 13.2.2): `If-None-Match` when sent, else
 * `If-Modified-Since` when it is a valid HTTP-date.
 */
function notModified(
  order: Order,
  ifNoneMatch: string | undefined,
  ifModifiedSince: string | undefined,
): boolean {
  if (ifNoneMatch !== undefined) {
    return matchesEntityTag(ifNoneMatch, entityTag(order.version), true);
  }
  const since = parseHttpDate(ifModifiedSince);
  return since !== undefined && !modifiedSince(order.updatedAt, since);
}
