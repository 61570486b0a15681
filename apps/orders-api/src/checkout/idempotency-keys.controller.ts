import { Controller, Header, Post } from '@nestjs/common';
import { ApiCreatedResponse, ApiProperty, ApiTags } from '@nestjs/swagger';
import { IdempotencyKeyIssuer } from 'nestjs-idempotency';
import { CHECKOUT_KEY_SCOPE } from './checkout.controller';

/** A key the server issued, for the `Idempotency-Key` header of one checkout payment. */
export class IssuedKeyResponse {
  @ApiProperty({
    description: 'Send it as the Idempotency-Key header of one payment and its retries.',
  })
  key!: string;

  @ApiProperty({ format: 'date-time', description: 'When the key stops being accepted.' })
  expiresAt!: Date;
}

/**
 * `POST /idempotency-keys`: a new signed key for `POST /checkout/payments`. Issuing writes
 * nothing; the key is checked by its signature when it is used.
 */
@ApiTags('checkout')
@Controller('idempotency-keys')
export class IdempotencyKeysController {
  constructor(private readonly issuer: IdempotencyKeyIssuer) {}

  @Post()
  @Header('Cache-Control', 'no-store')
  @ApiCreatedResponse({ type: IssuedKeyResponse, description: 'A new key, for one payment.' })
  issue(): IssuedKeyResponse {
    return this.issuer.issue({ scope: CHECKOUT_KEY_SCOPE });
  }
}
