import {
  BadRequestException,
  type CanActivate,
  type DynamicModule,
  type ExecutionContext,
  Injectable,
  Module,
  type Type,
  UseGuards,
  UseInterceptors,
} from '@nestjs/common';
import {
  Args,
  Field,
  GqlExecutionContext,
  GraphQLModule,
  ID,
  InputType,
  Int,
  Mutation,
  ObjectType,
  Parent,
  Query,
  ResolveField,
  Resolver,
} from '@nestjs/graphql';
import { GraphQLError } from 'graphql';
import { randomUUID } from 'node:crypto';
import {
  Idempotent,
  IdempotencyInterceptor,
  IdempotencyModule,
  type IdempotencyStore,
  MemoryIdempotencyStore,
} from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';

/**
 * The GraphQL app of test/graphql, code first, for any driver: Apollo on Express runs it in the
 * test process, Mercurius on Fastify as a child process (mercurius-app.ts). Counters are read
 * through the `runs` query, so the suite asserts the same way on both.
 */

/** Runs per label (`placeOrder:<sku>`, `summary:<sku>`...), read by the `runs` query. */
const runs = new Map<string, number>();
const count = (label: string): number => {
  const n = (runs.get(label) ?? 0) + 1;
  runs.set(label, n);
  return n;
};

/** Gates a mutation waits on until the `openGate` mutation opens them. */
const gates = new Map<string, { opened: Promise<void>; open: () => void }>();
const gate = (name: string) => {
  let entry = gates.get(name);
  if (!entry) {
    let open!: () => void;
    const opened = new Promise<void>((resolve) => (open = resolve));
    entry = { opened, open };
    gates.set(name, entry);
  }
  return entry;
};

@ObjectType()
export class Order {
  @Field(() => ID)
  id!: string;

  @Field()
  sku!: string;

  @Field(() => Int)
  quantity!: number;

  /** Which run of its label made it: 1 on every replay of the first. */
  @Field(() => Int)
  run!: number;

  @Field()
  placedAt!: Date;
}

@InputType()
export class PaymentInput {
  @Field({ nullable: true })
  requestId?: string;

  @Field(() => Int)
  amount!: number;

  @Field()
  label!: string;
}

@ObjectType()
export class Payment {
  @Field(() => ID)
  id!: string;

  @Field(() => Int)
  amount!: number;

  @Field(() => Int)
  run!: number;
}

/** Sets `req.user` from the `X-User` header, as an authentication guard would. */
@Injectable()
export class UserGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const req = GqlExecutionContext.create(context).getContext<{
      req?: { headers: Record<string, string | undefined>; user?: { id: string } };
    }>().req;
    const user = req?.headers['x-user'];
    if (req && user) {
      req.user = { id: user };
    }
    return true;
  }
}

/** A class-level `@Idempotent()`: it covers the mutations, never the query or the field. */
@Resolver(() => Order)
@UseGuards(UserGuard)
@Idempotent()
export class OrdersResolver {
  @Mutation(() => Order, { description: 'Places an order.' })
  placeOrder(
    @Args('sku') sku: string,
    @Args('quantity', { type: () => Int }) quantity: number,
    @Args('idempotencyKey', { type: () => String, nullable: true }) _key?: string,
  ): Order {
    return {
      id: randomUUID(),
      sku,
      quantity,
      run: count(`placeOrder:${sku}`),
      placedAt: new Date(),
    };
  }

  /** Waits for its gate to open: the race holds its winner until every other call came back. */
  @Mutation(() => Order)
  async slowOrder(@Args('gate') name: string, @Args('sku') sku: string): Promise<Order> {
    const run = count(`slowOrder:${sku}`);
    await gate(name).opened;
    return { id: randomUUID(), sku, quantity: 1, run, placedAt: new Date() };
  }

  @Mutation(() => Order)
  failOrder(@Args('mode') mode: string, @Args('sku') sku: string): Order {
    count(`failOrder:${sku}`);
    switch (mode) {
      case 'http':
        throw new BadRequestException(`${sku} is out of stock`);
      case 'graphql':
        throw new GraphQLError(`The card was declined for ${sku}`, {
          extensions: { code: 'CARD_DECLINED', declineCode: 'insufficient_funds' },
        });
      default:
        throw new Error(`The gateway timed out for ${sku}`);
    }
  }

  @Query(() => [Order])
  recentOrders(@Args('sku') sku: string): Order[] {
    return [
      { id: 'o-1', sku, quantity: 2, run: count(`recentOrders:${sku}`), placedAt: new Date(0) },
    ];
  }

  @ResolveField(() => String)
  summary(@Parent() order: Order): string {
    count(`summary:${order.sku}`);
    return `${order.quantity} x ${order.sku}`;
  }
}

/**
 * The key in a field of the input (`key: { path }`), not in the header. The interceptor is also
 * applied here by hand, beside the global one: a call must still be claimed once.
 */
@Resolver(() => Payment)
@UseInterceptors(IdempotencyInterceptor)
export class PaymentsResolver {
  @Mutation(() => Payment)
  @Idempotent({ key: { path: 'input.requestId' } })
  pay(@Args('input') input: PaymentInput): Payment {
    return { id: randomUUID(), amount: input.amount, run: count(`pay:${input.label}`) };
  }
}

/** Undecorated: the suite's own controls, and a mutation the library leaves alone. */
@Resolver()
export class ControlResolver {
  @Query(() => Int)
  runs(@Args('label') label: string): number {
    return runs.get(label) ?? 0;
  }

  @Mutation(() => Boolean)
  openGate(@Args('name') name: string): boolean {
    gate(name).open();
    return true;
  }

  @Mutation(() => Int)
  plainCounter(@Args('label') label: string): number {
    return count(`plainCounter:${label}`);
  }
}

/** A handler-level `@Idempotent()` on a query: the application must refuse to start. */
@Resolver(() => Order)
export class IdempotentQueryResolver {
  @Query(() => Order, { nullable: true })
  @Idempotent()
  latestOrder(): Order | null {
    return null;
  }
}

/** An invalid option on a mutation: the application must refuse to start. */
@Resolver(() => Payment)
export class InvalidOptionResolver {
  @Mutation(() => Payment)
  @Idempotent({ ttl: 0 })
  refund(): Payment {
    return { id: 'r-1', amount: 0, run: 0 };
  }
}

/** Which store the app uses: the memory store, Redis under a prefix, or a Redis that is not there. */
export type StoreSpec =
  { kind: 'memory' } | { kind: 'redis'; url: string; prefix: string } | { kind: 'broken' };

export function storeOf(spec: StoreSpec): IdempotencyStore {
  switch (spec.kind) {
    case 'memory':
      return new MemoryIdempotencyStore();
    case 'redis':
      return new RedisIdempotencyStore({ client: spec.url, keyPrefix: spec.prefix });
    case 'broken':
      // Nothing listens on port 1: every command fails once its single retry has failed.
      return new RedisIdempotencyStore({ client: 'redis://127.0.0.1:1', commandTimeoutMs: 300 });
  }
}

/** How the app is built. */
export interface GraphqlAppConfig {
  /** `ApolloDriver` or `MercuriusDriver`. */
  driver: Type;
  /** Options of that driver only. */
  driverOptions?: Record<string, unknown>;
  store: StoreSpec;
  /** Where the generated schema is written; in memory when unset. */
  schemaFile?: string;
  /** Add a resolver the start must refuse: {@link IdempotentQueryResolver}, {@link InvalidOptionResolver}. */
  refused?: 'query' | 'option';
}

@Module({})
export class GraphqlAppModule {
  static forRoot(config: GraphqlAppConfig): DynamicModule {
    return {
      module: GraphqlAppModule,
      imports: [
        IdempotencyModule.forRoot({ store: storeOf(config.store) }),
        GraphQLModule.forRoot({
          driver: config.driver,
          autoSchemaFile: config.schemaFile ?? true,
          // Guards and interceptors on field resolvers too: the library must pass them through.
          fieldResolverEnhancers: ['guards', 'interceptors'],
          graphiql: false,
          ...config.driverOptions,
        }),
      ],
      providers: [
        UserGuard,
        OrdersResolver,
        PaymentsResolver,
        ControlResolver,
        ...(config.refused === 'query' ? [IdempotentQueryResolver] : []),
        ...(config.refused === 'option' ? [InvalidOptionResolver] : []),
      ],
    };
  }
}
