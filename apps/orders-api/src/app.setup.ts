import type { INestApplication } from '@nestjs/common';
import type { Express } from 'express';
import { ExpressAdapter, type NestExpressApplication } from '@nestjs/platform-express';
import { FastifyAdapter, type NestFastifyApplication } from '@nestjs/platform-fastify';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { FastifySwaggerUi } from './common/fastify-swagger-ui';
import { frameworkErrors, installFastifyBodyParsing } from './common/fastify-platform';
import { bodyParserErrors, limitBodyDepth, requireJsonBody } from './common/request-guards';
import { createValidationPipe } from './common/validation';
import { bodyLimitBytes, type OrdersApiConfig } from './config/orders-api.config';
import { connectEmailConsumer } from './emails/emails.module';

/**
 * The HTTP adapter `HTTP_PLATFORM` names; create the app with it and `bodyParser: false`. Fastify
 * routes as Express does: a trailing slash and the letter case of a path do not matter, a path
 * parameter has no length limit of its own (Node's header limit bounds the URL), and a URL that
 * does not decode is a 400 problem.
 */
export function createHttpAdapter(config: OrdersApiConfig): ExpressAdapter | FastifyAdapter {
  if (config.httpPlatform === 'express') {
    return new ExpressAdapter();
  }
  return new FastifyAdapter({
    bodyLimit: bodyLimitBytes(config.bodyLimit),
    routerOptions: { ignoreTrailingSlash: true, caseSensitive: false, maxParamLength: 16_384 },
    frameworkErrors,
  });
}

/**
 * Everything the app needs besides its modules, the same on Express and Fastify: JSON bodies only
 * (415 otherwise), the body size limit (413) and nesting limit, body parser errors as problems,
 * validation, the OpenAPI document at `/docs-json` with Swagger UI at `/docs`, and the mailer's
 * transport (RabbitMQ or in process; start it with `app.startAllMicroservices()`). Create the app
 * with {@link createHttpAdapter} and `bodyParser: false`.
 */
export function configureApp(app: INestApplication, config: OrdersApiConfig): void {
  const platform = app.getHttpAdapter().getType();
  if (platform !== config.httpPlatform) {
    throw new Error(
      `orders-api: the app runs on ${platform} but HTTP_PLATFORM is ${config.httpPlatform}; create it with createHttpAdapter(config).`,
    );
  }
  if (config.httpPlatform === 'fastify') {
    configureFastify(app as NestFastifyApplication, config);
  } else {
    configureExpress(app as NestExpressApplication, config);
  }
  app.useGlobalPipes(createValidationPipe());
  connectEmailConsumer(app, config);
  const document = () =>
    SwaggerModule.createDocument(
      app,
      new DocumentBuilder()
        .setTitle('Orders API')
        .setDescription(
          'A sample of nestjs-idempotency: POST /orders, /payments and /emails are safe to retry with an Idempotency-Key; GET, PUT and DELETE are idempotent by design. Every error is application/problem+json.',
        )
        .setVersion('1.0')
        .build(),
    );
  const fastify = config.httpPlatform === 'fastify';
  SwaggerModule.setup('docs', app, document, { jsonDocumentUrl: 'docs-json', ui: !fastify });
  if (fastify) {
    FastifySwaggerUi.serveUi('docs', app, document);
  }
}

function configureExpress(app: NestExpressApplication, config: OrdersApiConfig): void {
  // ETags are the orders' versions, set by the controllers; Express would add its own elsewhere.
  app.set('etag', false);
  app.disable('x-powered-by');
  // Conditional requests are the controllers' (RFC 9110 13.2.2 precedence, strict HTTP-dates).
  // Express's own check in res.send() would answer 304 where they answer 200, e.g. to an
  // If-Modified-Since in another date format, and Fastify has no such check.
  const express: Express = app.getHttpAdapter().getInstance();
  Object.defineProperty(express.request, 'fresh', {
    configurable: true,
    get: () => false,
  });
  app.use(requireJsonBody);
  app.useBodyParser('json', {
    limit: config.bodyLimit,
    type: ['application/json', 'application/*+json'],
  });
  app.use(bodyParserErrors);
  app.use(limitBodyDepth);
}

function configureFastify(app: NestFastifyApplication, config: OrdersApiConfig): void {
  installFastifyBodyParsing(app, bodyLimitBytes(config.bodyLimit));
}
