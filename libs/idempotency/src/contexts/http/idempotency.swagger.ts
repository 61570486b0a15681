import { type Type, HttpStatus, RequestMethod } from '@nestjs/common';
import { HTTP_CODE_METADATA, METHOD_METADATA } from '@nestjs/common/constants';
import { ModulesContainer, Reflector } from '@nestjs/core';
import { DEFAULT_METHODS, mergedOptions } from '../idempotent-handlers';
import { DEFAULT_IDEMPOTENCY_HEADER, PROBLEM_CONTENT_TYPE } from '../../idempotency.constants';
import { IdempotencyErrorCode } from '../../idempotency.errors';
import type { IdempotencyModuleOptions, IdempotentOptions } from '../../idempotency.options';

/** What is used here of @nestjs/swagger (typed locally: the package is optional). */
interface SwaggerDecorators {
  DECORATORS: { API_RESPONSE: string };
  ApiHeader(options: {
    name: string;
    required: boolean;
    description: string;
    schema: Record<string, unknown>;
  }): MethodDecorator;
  ApiResponse(options: ResponseOptions): MethodDecorator;
}

/** The options of `@ApiResponse()` used here, and those the CLI plugin's metadata may add. */
interface ResponseOptions {
  status: number;
  description?: string;
  content?: Record<string, { schema: Record<string, unknown> }>;
  [option: string]: unknown;
}

/** The static method where `SwaggerModule.loadPluginMetadata()` puts the CLI plugin's metadata. */
const PLUGIN_METADATA_FACTORY = '_OPENAPI_METADATA_FACTORY';

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
 * default, 503; with issued keys, their 400 codes too) to the OpenAPI operations of every route
 * `@Idempotent()` covers, when `@nestjs/swagger` is installed. It runs while the application is
 * created, before `SwaggerModule.createDocument()`. Without `@nestjs/swagger` it does nothing.
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
        // Before any decorator: swagger documents its default success response only when the
        // handler declares no response at all.
        const success = successResponse(swagger, controller, name, handler);
        for (const decorator of [
          ...(success ? [swagger.ApiResponse(success)] : []),
          ...decoratorsFor(swagger, merged),
        ]) {
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

/**
 * The success response @nestjs/swagger would document for this handler by itself, which any
 * `@ApiResponse()` hides (`exploreApiResponseMetadata` in its `explorers/api-response.explorer.js`
 * falls back to it only when the handler has no response metadata): none when the handler declares
 * a response of its own, else the CLI plugin's response when its metadata is loaded (with the
 * schema of the return type), else `{ description: '' }` under the `@HttpCode()` status, or 201
 * for POST and 200 for the other methods.
 */
function successResponse(
  swagger: SwaggerDecorators,
  controller: Type,
  name: string,
  handler: object,
): ResponseOptions | undefined {
  if (Reflect.getMetadata(swagger.DECORATORS.API_RESPONSE, handler) !== undefined) {
    return undefined;
  }
  const httpCode = Reflect.getMetadata(HTTP_CODE_METADATA, handler) as number | undefined;
  const verb = Reflect.getMetadata(METHOD_METADATA, handler) as RequestMethod | undefined;
  const status = httpCode || (verb === RequestMethod.POST ? HttpStatus.CREATED : HttpStatus.OK);
  const plugin = pluginResponse(controller, name);
  return plugin
    ? { ...plugin, status: (plugin.status as number | undefined) ?? status }
    : { status, description: '' };
}

/**
 * The response the CLI plugin's metadata (`SwaggerModule.loadPluginMetadata()`) gives this handler,
 * read as swagger's `applyMetadataFactory` reads it: from the class nearest in the chain that has
 * any, without the operation's own keys. Metadata loaded after the application is created comes
 * too late for this, and swagger then keeps the responses documented here.
 */
function pluginResponse(controller: Type, name: string): Record<string, unknown> | undefined {
  type Factory = () => Record<string, Record<string, unknown> | undefined>;
  let prototype = controller.prototype as object | null;
  while (prototype && prototype !== Object.prototype) {
    const factory = (prototype.constructor as unknown as Record<string, unknown> | undefined)?.[
      PLUGIN_METADATA_FACTORY
    ];
    if (typeof factory === 'function') {
      const entry = (factory as Factory)()[name] ?? {};
      const { summary: _summary, deprecated: _deprecated, tags: _tags, ...response } = entry;
      if (Object.keys(response).length > 0) {
        return response;
      }
    }
    prototype = Reflect.getPrototypeOf(prototype);
  }
  return undefined;
}

function decoratorsFor(swagger: SwaggerDecorators, options: IdempotentOptions): MethodDecorator[] {
  const headerName = options.headerName ?? DEFAULT_IDEMPOTENCY_HEADER;
  const required = options.required ?? true;
  const { key } = options;
  const issued = key === 'issued' || (typeof key === 'object' && key !== null && 'issued' in key);
  const bodyField = typeof key === 'object' && key !== null && 'path' in key ? key.path : undefined;
  const fromHeader =
    key === undefined ||
    key === 'header' ||
    key === 'issued' ||
    bodyField !== undefined ||
    (typeof key === 'object' &&
      key !== null &&
      'issued' in key &&
      (key.from ?? 'header') === 'header');
  const problems: { status: number; description: string; codes: string[] }[] = [
    ...(fromHeader
      ? [
          {
            status: 400,
            description: `The ${bodyField === undefined ? `${headerName} header` : `idempotency key in the body field ${bodyField}`} is ${required ? 'missing or ' : ''}invalid.`,
            codes: [
              ...(required ? [IdempotencyErrorCode.KeyMissing] : []),
              IdempotencyErrorCode.KeyInvalid,
              ...(options.fingerprint === undefined
                ? [IdempotencyErrorCode.FingerprintFailed]
                : []),
            ],
          },
        ]
      : []),
    ...(issued
      ? [
          {
            status: 400,
            description:
              'The idempotency key was not issued by this server for this operation (forged, altered, retired or for another scope), or it expired; request a new one.',
            codes: [IdempotencyErrorCode.KeyNotIssued, IdempotencyErrorCode.KeyExpired],
          },
        ]
      : []),
    {
      status: 409,
      description:
        'A request with this idempotency key is still being processed (retry after `Retry-After` seconds), or it was processed but its response cannot be replayed.',
      codes: [IdempotencyErrorCode.RequestInProgress, IdempotencyErrorCode.ResponseNotReplayable],
    },
    {
      status: options.mismatchStatus ?? 422,
      description: 'This idempotency key was already used for a different payload.',
      codes: [IdempotencyErrorCode.KeyReused],
    },
    {
      status: 503,
      description: 'The idempotency store is unavailable; the request was not processed.',
      codes: [IdempotencyErrorCode.StoreUnavailable],
    },
  ];
  // One response per status: two `@ApiResponse()` of one status merge their descriptions, but the
  // second one's content replaces the first's (`mismatchStatus: 409` would lose the 409's codes).
  const byStatus = new Map<number, { descriptions: string[]; codes: string[] }>();
  for (const { status, description, codes } of problems) {
    const entry = byStatus.get(status) ?? { descriptions: [], codes: [] };
    entry.descriptions.push(description);
    entry.codes.push(...codes.filter((code) => !entry.codes.includes(code)));
    byStatus.set(status, entry);
  }
  return [
    ...(fromHeader && bodyField === undefined
      ? [
          swagger.ApiHeader({
            name: headerName,
            required,
            description: issued
              ? 'A key this server issued for this operation (from its key-issuing endpoint), as a bare token or a quoted string; any other key is refused with 400. A retry with the same key and payload replays the first response with `Idempotent-Replayed: true`; the operation runs once.'
              : 'A unique key for this operation (e.g. a UUID), as a bare token or a quoted string. A retry with the same key and payload replays the first response with `Idempotent-Replayed: true`; the operation runs once.',
            schema: { type: 'string', minLength: 1, maxLength: 255 },
          }),
        ]
      : []),
    ...[...byStatus].map(([status, { descriptions, codes }]) =>
      swagger.ApiResponse({
        status,
        description: descriptions.join('\n\n'),
        content: { [PROBLEM_CONTENT_TYPE]: { schema: problemSchema(codes) } },
      }),
    ),
  ];
}

async function loadSwagger(): Promise<SwaggerDecorators | undefined> {
  try {
    const swagger = (await import('@nestjs/swagger')) as unknown as Partial<SwaggerDecorators>;
    return typeof swagger.ApiHeader === 'function' &&
      typeof swagger.ApiResponse === 'function' &&
      typeof swagger.DECORATORS?.API_RESPONSE === 'string'
      ? (swagger as SwaggerDecorators)
      : undefined;
  } catch {
    return undefined;
  }
}
