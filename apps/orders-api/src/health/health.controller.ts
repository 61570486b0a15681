import { Controller, Get, HttpStatus, ServiceUnavailableException } from '@nestjs/common';
import { ApiTags } from '@nestjs/swagger';
import {
  HealthCheck,
  type HealthCheckResult,
  HealthCheckService,
  HealthIndicatorService,
  TypeOrmHealthIndicator,
} from '@nestjs/terminus';
import { IdempotencyStore } from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import { ProblemCode, ProblemException } from '../common/problem';

const TIMEOUT_MS = 1_500;

/** `GET /health`: 200 when the database and the idempotency store answer, 503 otherwise. */
@ApiTags('health')
@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly database: TypeOrmHealthIndicator,
    private readonly indicators: HealthIndicatorService,
    private readonly store: IdempotencyStore,
  ) {}

  @Get()
  @HealthCheck()
  async check(): Promise<HealthCheckResult> {
    try {
      return await this.checkAll();
    } catch (error) {
      // Terminus answers 503 with the results as the body; keep them (which check is down) in the
      // problem, which the filter would otherwise turn into a bare internal error.
      if (error instanceof ServiceUnavailableException) {
        const { info, error: down, details } = error.getResponse() as HealthCheckResult;
        throw new ProblemException(
          HttpStatus.SERVICE_UNAVAILABLE,
          ProblemCode.HealthCheckFailed,
          'Service unavailable',
          `Not reachable: ${Object.keys(down ?? {}).join(', ')}.`,
          { info, error: down, details },
        );
      }
      throw error;
    }
  }

  private checkAll(): Promise<HealthCheckResult> {
    const store = this.store;
    return this.health.check([
      () => this.database.pingCheck('database').withTimeout(TIMEOUT_MS),
      () =>
        this.indicators
          .check('idempotencyStore')
          .attempt(async () => {
            // The TypeORM store lives in the database checked above; memory is always there.
            if (store instanceof RedisIdempotencyStore) {
              await store.client.ping();
              return { store: 'redis' };
            }
            return { store: store.constructor.name };
          })
          .withTimeout(TIMEOUT_MS),
    ]);
  }
}
