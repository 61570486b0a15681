import { Logger, type Type } from '@nestjs/common';
import { MetadataScanner, ModulesContainer, Reflector } from '@nestjs/core';
import { resolveOptions, type ResolvedIdempotencyOptions } from '../../engine/resolved-options';
import type { IdempotencyModuleOptions } from '../../idempotency.options';
import { mergedOptions } from '../idempotent-handlers';
import { IDEMPOTENCY_KEY_ARGUMENT } from './graphql-context.adapter';
import { resolverMethodKind, takesArgument } from './graphql-resolvers';

/** What is used here of @nestjs/graphql's metadata storages (typed locally: an optional peer). */
interface SchemaStorages {
  /** Runs `load` when the schema is built, after the decorators' own loaders of `target`. */
  lazy: { store(target: Type, load: () => void): void };
  types: { getMutationsMetadata(): MutationMetadata[] };
}

interface MutationMetadata {
  target: unknown;
  methodName: string;
  description?: string;
}

/** Mutations noted already: an application built twice in one process notes them once. */
const documented = new WeakSet<object>();
const noted = new WeakSet<MutationMetadata>();

/**
 * Adds a note to the description of every root mutation `@Idempotent()` covers, in the schema
 * @nestjs/graphql builds code first: clients see it in introspection (GraphiQL, Apollo Sandbox)
 * and in the generated schema file. It runs while the application is created, before
 * `GraphQLModule` builds the schema; without @nestjs/graphql, or without such a mutation, it does
 * nothing.
 *
 * @returns how many mutations it documented.
 */
export async function documentIdempotentMutations(
  modules: ModulesContainer,
  options: IdempotencyModuleOptions,
): Promise<number> {
  const { store: _store, encryption: _encryption, issuedKeys: _issued, ...defaults } = options;
  const reflector = new Reflector();
  const scanner = new MetadataScanner();
  const found: { resolver: Type; methodName: string; note: string }[] = [];
  for (const moduleRef of modules.values()) {
    for (const wrapper of moduleRef.providers.values()) {
      const resolver = wrapper.metatype as Type | null;
      if (!resolver?.prototype) {
        continue;
      }
      for (const methodName of scanner.getAllMethodNames(resolver.prototype)) {
        const method = resolver.prototype[methodName] as object;
        if (documented.has(method) || resolverMethodKind(method) !== 'mutation') {
          continue;
        }
        const merged = mergedOptions(reflector, resolver, method, defaults);
        const note =
          merged &&
          noteFor(merged.options, takesArgument(resolver, methodName, IDEMPOTENCY_KEY_ARGUMENT));
        if (note) {
          documented.add(method);
          found.push({ resolver, methodName, note });
        }
      }
    }
  }
  if (found.length === 0) {
    return 0;
  }
  const storages = await loadStorages();
  if (!storages) {
    return 0;
  }
  for (const { resolver, methodName, note } of found) {
    storages.lazy.store(resolver, () => {
      for (const mutation of storages.types.getMutationsMetadata()) {
        if (
          mutation.methodName === methodName &&
          (mutation.target === resolver ||
            (typeof mutation.target === 'function' &&
              resolver.prototype instanceof mutation.target)) &&
          !noted.has(mutation)
        ) {
          noted.add(mutation);
          mutation.description = mutation.description ? `${mutation.description}\n\n${note}` : note;
        }
      }
    });
  }
  return found.length;
}

/**
 * The note of a mutation, from its merged options and whether it takes an `idempotencyKey`
 * argument; `undefined` when the options are invalid (the start then fails on them, with a message
 * naming the option).
 */
function noteFor(
  merged: Parameters<typeof resolveOptions>[0],
  keyArgument: boolean,
): string | undefined {
  let options: ResolvedIdempotencyOptions;
  try {
    options = resolveOptions(merged);
  } catch {
    return undefined;
  }
  const replay =
    'A retry with the same key and arguments returns the first result without running the mutation again.';
  if (options.key === 'fingerprint') {
    return 'Idempotent: a call with the same arguments as an earlier one returns its result without running the mutation again.';
  }
  if (typeof options.key === 'function') {
    return `Idempotent: ${replay}`;
  }
  const where =
    typeof options.key === 'object'
      ? `the argument \`${options.key.path.join('.')}\``
      : keyArgument
        ? `the \`${options.headerName}\` header or the \`${IDEMPOTENCY_KEY_ARGUMENT}\` argument`
        : `the \`${options.headerName}\` header`;
  const what = options.issued === undefined ? 'a unique key' : 'a key this server issued';
  return `Idempotent: send ${what} (1 to 255 printable ASCII characters) in ${where}${options.required ? '' : ' (optional)'}. ${replay}`;
}

async function loadStorages(): Promise<SchemaStorages | undefined> {
  let graphql: unknown;
  try {
    graphql = await import('@nestjs/graphql');
  } catch {
    return undefined;
  }
  let lazy: unknown;
  try {
    lazy = await import('@nestjs/graphql/dist/schema-builder/storages/lazy-metadata.storage.js');
  } catch {
    lazy = undefined;
  }
  const types = (graphql as { TypeMetadataStorage?: SchemaStorages['types'] }).TypeMetadataStorage;
  const storage = (lazy as { LazyMetadataStorage?: SchemaStorages['lazy'] } | undefined)
    ?.LazyMetadataStorage;
  if (typeof types?.getMutationsMetadata !== 'function' || typeof storage?.store !== 'function') {
    new Logger('Idempotency').warn(
      'This version of @nestjs/graphql does not expose the metadata storages the schema notes need; the idempotent mutations are covered, but their descriptions do not say so.',
    );
    return undefined;
  }
  return { lazy: storage, types };
}
