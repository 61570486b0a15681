import { type INestApplication, NotFoundException } from '@nestjs/common';
import { type OpenAPIObject, SwaggerModule } from '@nestjs/swagger';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { withProblemReplies } from './fastify-platform';

/** The files Swagger UI's page loads besides `swagger-ui-init.js`, with their media types. */
const ASSETS: Partial<Record<string, string>> = {
  'swagger-ui.css': 'text/css; charset=utf-8',
  'swagger-ui-bundle.js': 'application/javascript; charset=utf-8',
  'swagger-ui-standalone-preset.js': 'application/javascript; charset=utf-8',
  'favicon-16x16.png': 'image/png',
  'favicon-32x32.png': 'image/png',
};

let assetsDir: Promise<string> | undefined;

/**
 * Swagger UI on Fastify. `SwaggerModule.setup()` serves its assets there through
 * `@fastify/static`, which the sample does not depend on (Nest exits the process when it is
 * missing); this serves the same page, from Nest's own code, and the few files it loads, with
 * errors as problems.
 */
export class FastifySwaggerUi extends SwaggerModule {
  /** Serves the UI of `document` at `/${path}`; the document itself is served by `setup()`. */
  static serveUi(path: string, app: INestApplication, document: () => OpenAPIObject): void {
    const adapter = withProblemReplies(app.getHttpAdapter());
    this.serveSwaggerUi(`/${path}`, path, adapter, document, {});
    adapter.get(
      `/${path}/:asset`,
      async (
        request: { params: { asset: string } },
        reply: { type(contentType: string): unknown; send(body: Buffer): unknown },
      ) => {
        const type = Object.hasOwn(ASSETS, request.params.asset)
          ? ASSETS[request.params.asset]
          : undefined;
        if (type === undefined) {
          throw new NotFoundException(`Cannot GET /${path}/${request.params.asset}`);
        }
        assetsDir ??= import('swagger-ui-dist/absolute-path.js').then((module) => module.default());
        const body = await readFile(join(await assetsDir, request.params.asset));
        reply.type(type);
        return reply.send(body);
      },
    );
  }
}
