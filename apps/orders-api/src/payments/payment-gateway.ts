import { Inject, Injectable } from '@nestjs/common';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from '../config/orders-api.config';

/** A charge the gateway made. */
export interface GatewayCharge {
  id: string;
  /** The merchant's key for the charge: charging under it again returns this charge. */
  idempotencyKey: string;
  amount: number;
  createdAt: Date;
}

/** The gateway refused or failed the charge; nothing was charged. */
export class PaymentGatewayError extends Error {
  constructor(message = 'The payment gateway failed to process the charge.') {
    super(message);
    this.name = 'PaymentGatewayError';
  }
}

/** How many charges the simulation remembers for deduplication. */
const REMEMBERED_CHARGES = 10_000;

/**
 * A simulated card gateway. Like real ones (Stripe, Adyen) it is idempotent on the key the
 * merchant sends: charging under one key twice returns the first charge, so an attempt that is
 * retried after a crash never charges twice. Latency and failure rate come from
 * `PAYMENT_GATEWAY_LATENCY_MS` and `PAYMENT_GATEWAY_FAILURE_RATE` (both off by default).
 */
@Injectable()
export class PaymentGateway {
  /** Milliseconds each charge takes. */
  latencyMs: number;
  /** Share of charges, from 0 to 1, that fail with {@link PaymentGatewayError}. */
  failureRate: number;
  private readonly charges = new Map<string, GatewayCharge>();
  private made = 0;

  constructor(@Inject(ORDERS_API_CONFIG) config: OrdersApiConfig) {
    this.latencyMs = config.gatewayLatencyMs;
    this.failureRate = config.gatewayFailureRate;
  }

  /** Charges `amount` under `idempotencyKey`, once. */
  async charge({
    idempotencyKey,
    amount,
  }: {
    idempotencyKey: string;
    amount: number;
  }): Promise<GatewayCharge> {
    if (this.latencyMs > 0) {
      await sleep(this.latencyMs);
    }
    const existing = this.charges.get(idempotencyKey);
    if (existing) {
      return existing;
    }
    if (this.failureRate > 0 && Math.random() < this.failureRate) {
      throw new PaymentGatewayError();
    }
    const charge = { id: `ch_${randomUUID()}`, idempotencyKey, amount, createdAt: new Date() };
    this.charges.set(idempotencyKey, charge);
    this.made++;
    if (this.charges.size > REMEMBERED_CHARGES) {
      this.charges.delete(this.charges.keys().next().value as string);
    }
    return charge;
  }

  /** How many distinct charges this process made. */
  get chargeCount(): number {
    return this.made;
  }
}
