import { HttpStatus, Inject, Injectable, Logger } from '@nestjs/common';
import { InjectDataSource, InjectRepository } from '@nestjs/typeorm';
import { randomUUID } from 'node:crypto';
import { transactionalEntityManager } from 'nestjs-idempotency/typeorm';
import type { DataSource, EntityManager, Repository } from 'typeorm';
import {
  orderAlreadyPaid,
  orderNotFound,
  paymentInProgress,
  ProblemCode,
  ProblemException,
} from '../common/problem';
import { ORDERS_API_CONFIG, type OrdersApiConfig } from '../config/orders-api.config';
import {
  isForeignKeyViolation,
  isUniqueViolation,
  retryTransient,
} from '../database/database-errors';
import { toCents } from '../database/money';
import { Order } from '../orders/order.entity';
import type { CreatePaymentDto } from './dto/payment.dto';
import { PaymentGateway } from './payment-gateway';
import { Payment } from './payment.entity';

/** Attempts when the order changes between the checks and the reservation. */
const MAX_ATTEMPTS = 3;

/**
 * Pays orders. One order has at most one payment: the payment row is inserted (unique on the
 * order) before the gateway is called, so two requests racing with different idempotency keys
 * cannot both charge. The row is held under a lease while the gateway runs; a row left behind by
 * a process that died is taken over once its lease lapses and charged again under the same key
 * (the order's), which the gateway deduplicates.
 */
@Injectable()
export class PaymentsService {
  private readonly logger = new Logger('Payments');

  constructor(
    @InjectRepository(Payment) private readonly payments: Repository<Payment>,
    @InjectRepository(Order) private readonly orders: Repository<Order>,
    @InjectDataSource() private readonly dataSource: DataSource,
    private readonly gateway: PaymentGateway,
    @Inject(ORDERS_API_CONFIG) private readonly config: OrdersApiConfig,
  ) {}

  async pay({ orderId, amount }: CreatePaymentDto): Promise<Payment> {
    for (let attempt = 1; ; attempt++) {
      const order = await this.payableOrder(orderId, amount);
      const { payment, token } = await this.reserve(order, amount);
      // A PUT may have changed the order between the checks and the reservation (afterwards the
      // reservation blocks it): check again, and start over if it did. A resumed payment's row
      // existed all along, so its order cannot have changed.
      const now = await this.orders.findOneBy({ id: orderId });
      if (now?.version !== order.version) {
        await this.abandon(payment, token);
        if (attempt >= MAX_ATTEMPTS) {
          throw paymentInProgress(orderId);
        }
        continue;
      }
      try {
        // Keyed by the order, which has one payment at most: a retry after a crash charges under
        // the same key whether it resumed the reservation or, on SQLite in transactional mode
        // (one connection, so the reservation is in the crashed attempt's transaction), made a
        // new one.
        await this.gateway.charge({
          idempotencyKey: `order:${payment.orderId}`,
          amount: payment.amount,
        });
      } catch (error) {
        this.logger.warn(`Charge for payment ${payment.id} failed: ${String(error)}`);
        await this.abandon(payment, token);
        throw new ProblemException(
          HttpStatus.BAD_GATEWAY,
          ProblemCode.PaymentGatewayFailed,
          'Payment gateway failed',
          'The payment gateway did not complete the charge; nothing was charged. Retry with the same Idempotency-Key.',
        );
      }
      return this.settle(payment);
    }
  }

  async get(id: string): Promise<Payment> {
    const payment = await this.payments.findOneBy({ id });
    if (!payment) {
      throw new ProblemException(
        HttpStatus.NOT_FOUND,
        ProblemCode.PaymentNotFound,
        'Payment not found',
        `There is no payment ${id}.`,
      );
    }
    return payment;
  }

  list(orderId?: string): Promise<Payment[]> {
    return this.payments.find({
      where: orderId === undefined ? {} : { orderId },
      order: { createdAt: 'ASC', id: 'ASC' },
    });
  }

  /** The order, if it exists (404), is not paid (409) and its total is `amount` (422). */
  private async payableOrder(orderId: string, amount: number): Promise<Order> {
    const order = await this.orders.findOneBy({ id: orderId });
    if (!order) {
      throw orderNotFound(orderId);
    }
    if (order.status === 'paid') {
      throw orderAlreadyPaid(orderId, 'paid again');
    }
    if (toCents(amount) !== toCents(order.total)) {
      throw new ProblemException(
        HttpStatus.UNPROCESSABLE_ENTITY,
        ProblemCode.AmountMismatch,
        'Amount does not match',
        `The amount ${amount} differs from the total ${order.total} of order ${orderId}.`,
        { expectedAmount: order.total },
      );
    }
    return order;
  }

  /**
   * Inserts the pending payment, which the unique key on `order_id` lets only one request do; or
   * takes over a pending payment whose lease lapsed (its process died).
   */
  private async reserve(
    order: Order,
    amount: number,
  ): Promise<{ payment: Payment; token: string }> {
    const token = randomUUID();
    const now = new Date();
    const leaseExpiresAt = new Date(now.getTime() + this.config.paymentLeaseMs);
    const payment = this.payments.create({
      id: randomUUID(),
      orderId: order.id,
      amount,
      status: 'pending',
      leaseToken: token,
      leaseExpiresAt,
      createdAt: now,
    });
    try {
      await retryTransient(() => this.payments.insert(payment));
      return { payment, token };
    } catch (error) {
      if (isForeignKeyViolation(error)) {
        throw orderNotFound(order.id);
      }
      if (!isUniqueViolation(error)) {
        throw error;
      }
    }
    const taken = await retryTransient(() =>
      this.payments
        .createQueryBuilder()
        .update(Payment)
        .set({ leaseToken: token, leaseExpiresAt })
        .where('order_id = :orderId AND status = :pending AND lease_expires_at < :now', {
          orderId: order.id,
          pending: 'pending',
          now,
        })
        .execute(),
    );
    const existing = await this.payments.findOneBy({ orderId: order.id });
    if (taken.affected && existing?.leaseToken === token) {
      this.logger.warn(`Resuming payment ${existing.id}, abandoned by an attempt that stopped.`);
      return { payment: existing, token };
    }
    if (existing?.status === 'succeeded') {
      throw orderAlreadyPaid(order.id, 'paid again');
    }
    throw paymentInProgress(order.id);
  }

  /** Deletes a pending payment this attempt holds, so the order can be paid again. */
  private async abandon(payment: Payment, token: string): Promise<void> {
    await retryTransient(() =>
      this.payments
        .createQueryBuilder()
        .delete()
        .from(Payment)
        .where('id = :id AND status = :pending AND lease_token = :token', {
          id: payment.id,
          pending: 'pending',
          token,
        })
        .execute(),
    );
  }

  /**
   * Marks the payment succeeded and its order paid, together. In transactional mode this is the
   * request's own transaction, which commits with the idempotency record: a holder that lost its
   * lease rolls it back. The reservation and the charge are not in it, on purpose: the payment id
   * must be durable before the gateway is called, so that a retry after a crash charges under the
   * same id (which the gateway deduplicates) instead of a new one.
   */
  private async settle(payment: Payment): Promise<Payment> {
    const request = transactionalEntityManager();
    if (request) {
      // A deadlock here aborts the whole transaction, so it cannot be retried statement by
      // statement: it fails the request (503), the key is released, and the retry runs again.
      await this.settleWith(request, payment);
    } else {
      await retryTransient(() =>
        this.dataSource.transaction((manager) => this.settleWith(manager, payment)),
      );
    }
    return { ...payment, status: 'succeeded', leaseToken: null, leaseExpiresAt: null };
  }

  private async settleWith(manager: EntityManager, payment: Payment): Promise<void> {
    await manager
      .createQueryBuilder()
      .update(Payment)
      .set({ status: 'succeeded', leaseToken: null, leaseExpiresAt: null })
      .where('id = :id AND status = :pending', { id: payment.id, pending: 'pending' })
      .execute();
    await manager
      .createQueryBuilder()
      .update(Order)
      .set({ status: 'paid', version: () => 'version + 1', updatedAt: new Date() })
      .where('id = :id AND status = :pending', { id: payment.orderId, pending: 'pending' })
      .execute();
  }
}
