import { Reflector } from '@nestjs/core';
import type { IdempotentOptions } from './idempotency.options';

/**
 * Makes a handler, or every POST and PATCH handler of a controller, idempotent under the client's
 * `Idempotency-Key`. Options merge field by field: handler over class over module options.
 *
 * On a class it applies to the verbs in `methods` (POST and PATCH by default); on a handler it
 * applies to that handler's verb, so it is the explicit opt-in for PUT or DELETE. GET, HEAD and
 * OPTIONS are never protected. On a microservice controller it covers every `@MessagePattern` and
 * `@EventPattern` handler (keyed by the transport's header or metadata, see `key`).
 *
 * @example
 * @Post()
 * @Idempotent({ ttl: '1h' })
 * create(@Body() dto: CreateOrderDto) { ... }
 */
export const Idempotent = Reflector.createDecorator<
  IdempotentOptions | undefined,
  IdempotentOptions
>({
  key: 'nestjs-idempotency:options',
  transform: (options) => ({ ...options }),
});
