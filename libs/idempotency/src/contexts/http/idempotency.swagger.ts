import { type Type, RequestMethod } from '@nestjs/common';
import { METHOD_METADATA } from '@nestjs/common/constants';
import { ModulesContainer, Reflector } from '@nestjs/core';
import { DEFAULT_METHODS, mergedOptions } from '../idempotent-handlers';
import { DEFAULT_IDEMPOTENCY_HEADER, PROBLEM_CONTENT_TYPE } from '../../idempotency.constants';
import { IdempotencyErrorCode } from '../../idempotency.errors';
import type { IdempotencyModuleOptions, IdempotentOptions } from '../../idempotency.options';

/** The two decorators of @nestjs/swagger used here (typed locally: the package is optional). */
interface SwaggerDecorators {
  ApiHeader(options: {
    name: string;
    required: boolean;
    description: string;
    schema: Record<string, unknown>;
  }): MethodDecorator;
  ApiResponse(options: {
    status: number;
    description: string;
    content: Record<string, { schema: Record<string, unknown> }>;
  }): MethodDecorator;
}

const NEVER_PROTECTED = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Handlers documented already; a decorator applied twice would list the header twice. */
const documented = new WeakSet<object>();

const problemSchema = (codes: readonly string[]) => ({
  type: 'object',
  required: ['type', 'title', 'status', 'detail', 'code'],
  properties: {
    type: { type: 'string', format: 'uri' },
    title: { type: 'string' },
    status: { type: 'integer' },
    detail: { type: 'string' },
    code: { type: 'string', enum: codes },
  },
});

/**
 * Adds the `Idempotency-Key` header and the library's problem responses (400, 409, 422 by
 * default, 503) to the OpenAPI operations of every route `@Idempotent()` covers, when
 * `@nestjs/swagger` is installed. It runs while the application is created, before
 * `SwaggerModule.createDocument()`. Without `@nestjs/swagger` it does nothing.
 *
 * @returns how many operations it documented.
 */
export async function documentIdempotentRoutes(
  modules: ModulesContainer,
  options: IdempotencyModuleOptions,
): Promise<number> {
  const swagger = await loadSwagger();
  if (!swagger) {
    return 0;
  }
  const reflector = new Reflector();
  let count = 0;
  for (const moduleRef of modules.values()) {
    for (const wrapper of moduleRef.controllers.values()) {
      const controller = wrapper.metatype as Type | null;
      if (!controller?.prototype) {
        continue;
      }
      for (const name of Object.getOwnPropertyNames(controller.prototype)) {
        const descriptor = Object.getOwnPropertyDescriptor(controller.prototype, name);
        const handler = descriptor?.value as object | undefined;
        if (name === 'constructor' || typeof handler !== 'function' || documented.has(handler)) {
          continue;
        }
        const merged = coveredOptions(reflector, controller, handler, options);
        if (!merged) {
          continue;
        }
        documented.add(handler);
        for (const decorator of decoratorsFor(swagger, merged)) {
          decorator(controller.prototype, name, descriptor!);
        }
        count++;
      }
    }
  }
  return count;
}

/** The merged options when `@Idempotent()` covers this handler's verb, as the interceptor decides. */
function coveredOptions(
  reflector: Reflector,
  controller: Type,
  handler: object,
  moduleOptions: IdempotencyModuleOptions,
): IdempotentOptions | undefined {
  const verb = Reflect.getMetadata(METHOD_METADATA, handler) as RequestMethod | undefined;
  const merged = mergedOptions(reflector, controller, handler, moduleOptions);
  if (verb === undefined || !merged) {
    return undefined;
  }
  const method = RequestMethod[verb];
  const covered = merged.onHandler
    ? !NEVER_PROTECTED.has(method)
    : (merged.options.methods ?? DEFAULT_METHODS).some((m) => m.toUpperCase() === method);
  return covered ? merged.options : undefined;
}

function decoratorsFor(swagger: SwaggerDecorators, options: IdempotentOptions): MethodDecorator[] {
  const headerName = options.headerName ?? DEFAULT_IDEMPOTENCY_HEADER;
  const required = options.required ?? true;
  const fromHeader = options.key === undefined || options.key === 'header';
  const problem = (status: number, description: string, codes: string[]) =>
    swagger.ApiResponse({
      status,
      description,
      content: { [PROBLEM_CONTENT_TYPE]: { schema: problemSchema(codes) } },
    });
  return [
    ...(fromHeader
      ? [
          swagger.ApiHeader({
            name: headerName,
            required,
            description:
              'A unique key for this operation (e.g. a UUID), as a bare token or a quoted string. A retry with the same key and payload replays the first response with `Idempotent-Replayed: true`; the operation runs once.',
            schema: { type: 'string', minLength: 1, maxLength: 255 },
          }),
          problem(400, `The ${headerName} header is ${required ? 'missing or ' : ''}invalid.`, [
            ...(required ? [IdempotencyErrorCode.KeyMissing] : []),
            IdempotencyErrorCode.KeyInvalid,
            ...(options.fingerprint === undefined ? [IdempotencyErrorCode.FingerprintFailed] : []),
          ]),
        ]
      : []),
    problem(
      409,
      'A request with this idempotency key is still being processed (retry after `Retry-After` seconds), or it was processed but its response cannot be replayed.',
      [IdempotencyErrorCode.RequestInProgress, IdempotencyErrorCode.ResponseNotReplayable],
    ),
    problem(
      options.mismatchStatus ?? 422,
      'This idempotency key was already used for a different payload.',
      [IdempotencyErrorCode.KeyReused],
    ),
    problem(503, 'The idempotency store is unavailable; the request was not processed.', [
      IdempotencyErrorCode.StoreUnavailable,
    ]),
  ];
}

async function loadSwagger(): Promise<SwaggerDecorators | undefined> {
  try {
    const swagger = (await import('@nestjs/swagger')) as unknown as Partial<SwaggerDecorators>;
    return typeof swagger.ApiHeader === 'function' && typeof swagger.ApiResponse === 'function'
      ? (swagger as SwaggerDecorators)
      : undefined;
  } catch {
    return undefined;
  }
}
