import type { Type } from '@nestjs/common';

// The metadata keys @nestjs/graphql writes on resolver methods (stable since its version 7), read
// here without loading the package, which is an optional peer.
const RESOLVER_TYPE_METADATA = 'graphql:resolver_type';
const RESOLVER_NAME_METADATA = 'graphql:resolver_name';
const RESOLVER_PROPERTY_METADATA = 'graphql:resolve_property';
const RESOLVER_REFERENCE_METADATA = 'graphql:resolve_reference';
/** Parameters of a resolver method, `{ '<paramtype>:<index>': { data } }`; `@Args()` is type 3. */
const PARAM_ARGS_METADATA = '__routeArguments__';
const ARGS_PARAMTYPE = '3:';

/** What a resolver method serves, as its @nestjs/graphql decorator says. */
export type ResolverMethodKind = 'mutation' | 'query' | 'subscription' | 'field' | 'reference';

const ROOT_KINDS: Readonly<Record<string, ResolverMethodKind>> = {
  Mutation: 'mutation',
  Query: 'query',
  Subscription: 'subscription',
};

/**
 * `mutation`, `query` or `subscription` for a root field (`@Mutation()`, `@Query()`,
 * `@Subscription()`), `field` for `@ResolveField()`, `reference` for `@ResolveReference()`;
 * `undefined` for a method that serves no GraphQL field.
 */
export function resolverMethodKind(method: object): ResolverMethodKind | undefined {
  if (Reflect.getMetadata(RESOLVER_REFERENCE_METADATA, method) === true) {
    return 'reference';
  }
  if (Reflect.getMetadata(RESOLVER_PROPERTY_METADATA, method) === true) {
    return 'field';
  }
  const type: unknown = Reflect.getMetadata(RESOLVER_TYPE_METADATA, method);
  return typeof type === 'string' ? ROOT_KINDS[type] : undefined;
}

/**
 * The schema coordinate a resolver method serves, for messages: `Mutation.placeOrder` for a root
 * field (its name as given to the decorator, or the method's), `Order.total` for a field resolver
 * of `@Resolver(() => Order)`.
 */
export function resolverFieldName(resolver: Type, method: object, methodName: string): string {
  const kind = resolverMethodKind(method);
  const name: unknown = Reflect.getMetadata(RESOLVER_NAME_METADATA, method);
  const field = typeof name === 'string' && name !== '' ? name : methodName;
  if (kind === 'field' || kind === 'reference') {
    const parent: unknown = Reflect.getMetadata(RESOLVER_TYPE_METADATA, resolver);
    return `${typeof parent === 'string' ? parent : resolver.name}.${field}`;
  }
  const type: unknown = Reflect.getMetadata(RESOLVER_TYPE_METADATA, method);
  return `${String(type)}.${field}`;
}

/** Whether the resolver method takes the GraphQL argument `name` (`@Args('name')`). */
export function takesArgument(resolver: Type, methodName: string, name: string): boolean {
  const params: Record<string, { data?: unknown } | undefined> =
    Reflect.getMetadata(PARAM_ARGS_METADATA, resolver, methodName) ?? {};
  return Object.entries(params).some(
    ([key, param]) => key.startsWith(ARGS_PARAMTYPE) && param?.data === name,
  );
}
