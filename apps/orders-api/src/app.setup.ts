import type { NestExpressApplication } from '@nestjs/platform-express';
import { DocumentBuilder, SwaggerModule } from '@nestjs/swagger';
import { bodyParserErrors, limitBodyDepth, requireJsonBody } from './common/request-guards';
import { createValidationPipe } from './common/validation';
import type { OrdersApiConfig } from './config/orders-api.config';

/**
 * Everything the app needs besides its modules: JSON bodies only (415 otherwise), the body size
 * limit (413) and nesting limit, body parser errors as problems, validation, and the OpenAPI
 * document at `/docs-json` with Swagger UI at `/docs`. Create the app with `bodyParser: false`.
 */
export function configureApp(app: NestExpressApplication, config: OrdersApiConfig): void {
  // ETags are the orders' versions, set by the controllers; Express would add its own elsewhere.
  app.set('etag', false);
  app.disable('x-powered-by');
  app.use(requireJsonBody);
  app.useBodyParser('json', {
    limit: config.bodyLimit,
    type: ['application/json', 'application/*+json'],
  });
  app.use(bodyParserErrors);
  app.use(limitBodyDepth);
  app.useGlobalPipes(createValidationPipe());
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
  SwaggerModule.setup('docs', app, document, { jsonDocumentUrl: 'docs-json' });
}
