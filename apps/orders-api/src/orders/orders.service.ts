import { Injectable } from '@nestjs/common';
import { InjectRepository } from '@nestjs/typeorm';
import { transactionalEntityManager } from 'nestjs-idempotency/typeorm';
import { randomUUID } from 'node:crypto';
import type { Repository } from 'typeorm';
import {
  concurrentChange,
  orderAlreadyPaid,
  orderNotFound,
  paymentInProgress,
  preconditionFailed,
} from '../common/problem';
import { entityTag, matchesEntityTag } from '../common/etag';
import { modifiedSince, parseHttpDate } from '../common/http-date';
import { isForeignKeyViolation, retryTransient } from '../database/database-errors';
import { toCents } from '../database/money';
import { Payment } from '../payments/payment.entity';
import type { OrderInputDto } from './dto/order-input.dto';
import { Order, type OrderItem } from './order.entity';

/** How often a change is retried when another request changed the order in between. */
const MAX_ATTEMPTS = 5;

/** The conditional headers of a PUT or DELETE (RFC 9110 13.1), as the client sent them. */
export interface Preconditions {
  /** `If-Match`: the ETags the client expects; wins over `ifUnmodifiedSince`. */
  ifMatch?: string;
  /** `If-Unmodified-Since`: an HTTP-date; ignored when `ifMatch` is given or when not a date. */
  ifUnmodifiedSince?: string;
}

/**
 * Orders in the database. Every change is one conditional statement on the version that was read
 * (optimistic concurrency), so concurrent PUT, DELETE and payments never overwrite each other.
 */
@Injectable()
export class OrdersService {
  constructor(
    @InjectRepository(Order) private readonly orders: Repository<Order>,
    @InjectRepository(Payment) private readonly payments: Repository<Payment>,
  ) {}

  async create(input: OrderInputDto): Promise<Order> {
    const now = new Date();
    const order = this.orders.create({
      id: randomUUID(),
      ...contentOf(input),
      status: 'pending',
      version: 1,
      createdAt: now,
      updatedAt: now,
    });
    // In the request's transaction when the route runs in transactional mode (the TypeORM
    // store), so the order and the idempotency record commit together.
    await transactionalEntityManager(this.orders.manager).getRepository(Order).insert(order);
    return order;
  }

  list(customerId?: string): Promise<Order[]> {
    return this.orders.find({
      where: customerId === undefined ? {} : { customerId },
      order: { createdAt: 'ASC', id: 'ASC' },
    });
  }

  async get(id: string): Promise<Order> {
    const order = await this.orders.findOneBy({ id });
    if (!order) {
      throw orderNotFound(id);
    }
    return order;
  }

  /**
   * Replaces the customer and items of a pending order and recomputes its total. Replacing with
   * what is already there changes nothing (not even the ETag), so a repeated PUT is harmless.
   */
  async replace(
    id: string,
    input: OrderInputDto,
    preconditions: Preconditions = {},
  ): Promise<Order> {
    const content = contentOf(input);
    for (let attempt = 1; ; attempt++) {
      const current = await this.changeable(id, preconditions, 'replaced');
      if (sameContent(current, content)) {
        return current;
      }
      const next = { ...content, version: current.version + 1, updatedAt: new Date() };
      const result = await retryTransient(() =>
        this.orders
          .createQueryBuilder()
          .update(Order)
          .set(next)
          .where('id = :id AND version = :version AND status = :pending', {
            id,
            version: current.version,
            pending: 'pending',
          })
          .andWhere(
            `NOT EXISTS (SELECT 1 FROM ${this.payments.metadata.tableName} p WHERE p.order_id = :id)`,
          )
          .execute(),
      );
      if (result.affected) {
        return { ...current, ...next };
      }
      await this.explainConflict(id, current.version, attempt);
    }
  }

  /** Deletes a pending order; a paid order, or one being paid, stays (409). */
  async remove(id: string, preconditions: Preconditions = {}): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.changeable(id, preconditions, 'deleted');
      let affected: number | null | undefined;
      try {
        ({ affected } = await retryTransient(() =>
          this.orders
            .createQueryBuilder()
            .delete()
            .from(Order)
            .where('id = :id AND version = :version AND status = :pending', {
              id,
              version: current.version,
              pending: 'pending',
            })
            .execute(),
        ));
      } catch (error) {
        // The payments foreign key: a payment for this order is under way.
        if (isForeignKeyViolation(error)) {
          throw paymentInProgress(id);
        }
        throw error;
      }
      if (affected) {
        return;
      }
      await this.explainConflict(id, current.version, attempt);
    }
  }

  /**
   * The order, if it exists (404), meets the preconditions (412) and is still pending (409).
   * Checked against each version read, so a change that lost a race is checked again.
   */
  private async changeable(
    id: string,
    { ifMatch, ifUnmodifiedSince }: Preconditions,
    what: string,
  ): Promise<Order> {
    const current = await this.get(id);
    // RFC 9110 13.2.2: If-Match first; If-Unmodified-Since only without it.
    if (ifMatch !== undefined) {
      if (!matchesEntityTag(ifMatch, entityTag(current.version), false)) {
        throw preconditionFailed(id, 'If-Match');
      }
    } else {
      const since = parseHttpDate(ifUnmodifiedSince);
      if (since !== undefined && modifiedSince(current.updatedAt, since)) {
        throw preconditionFailed(id, 'If-Unmodified-Since');
      }
    }
    if (current.status === 'paid') {
      throw orderAlreadyPaid(id, what);
    }
    return current;
  }

  /**
   * A conditional change matched no row: the order changed, was deleted or paid, or a payment
   * for it is under way. Throws what applies, or returns to retry against the new version.
   */
  private async explainConflict(id: string, version: number, attempt: number): Promise<void> {
    const now = await this.orders.findOneBy({ id });
    if (now && now.version === version && now.status === 'pending') {
      if (await this.payments.existsBy({ orderId: id })) {
        throw paymentInProgress(id);
      }
    }
    if (attempt >= MAX_ATTEMPTS) {
      throw concurrentChange(id);
    }
  }
}

/** Customer, items and total of an order from a request body; the total in exact cents. */
function contentOf(input: OrderInputDto): Pick<Order, 'customerId' | 'items' | 'total'> {
  const items: OrderItem[] = input.items.map(({ sku, quantity, unitPrice }) => ({
    sku,
    quantity,
    unitPrice,
  }));
  const cents = items.reduce((sum, item) => sum + item.quantity * toCents(item.unitPrice), 0);
  return { customerId: input.customerId, items, total: cents / 100 };
}

function sameContent(
  order: Order,
  content: Pick<Order, 'customerId' | 'items' | 'total'>,
): boolean {
  return (
    order.customerId === content.customerId &&
    JSON.stringify(order.items) === JSON.stringify(content.items) &&
    toCents(order.total) === toCents(content.total)
  );
}
