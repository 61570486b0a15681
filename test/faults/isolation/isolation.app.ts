import {
  type ArgumentsHost,
  Body,
  type CanActivate,
  Catch,
  Controller,
  type ExceptionFilter,
  type ExecutionContext,
  HttpStatus,
  Injectable,
  Post,
  Req,
  Res,
  UnauthorizedException,
  UseGuards,
} from '@nestjs/common';
import { HttpAdapterHost } from '@nestjs/core';
import { Idempotent } from 'nestjs-idempotency';

/**
 * A small authenticated API for the isolation fault test: `Authorization: Bearer <user>` names the
 * user (no other check: the test is about what the idempotency layer does with principals), and
 * each `@Idempotent()` route answers with that user's own data, a session cookie, an
 * `Authorization` response header and a custom header listed in `replayHeaders`.
 */

/** The profile each user's requests answer with; the test registers its users here. */
export const profiles = new Map<string, { name: string; email: string }>();
/** Executions of the handlers, by user. */
export const executions = new Map<string, number>();
/** Holds a user's handler until the test opens it (one gate per user). */
export const gates = new Map<string, Promise<void>>();
/** Users whose handler is being held at a gate right now. */
export const waiting = new Set<string>();

interface AuthenticatedRequest {
  headers: Record<string, string | string[] | undefined>;
  user?: { id: string };
}

interface HeaderWriter {
  header(name: string, value: string): unknown;
}

/** `Authorization: Bearer <user>` sets `request.user = { id: <user> }`; anything else is a 401. */
@Injectable()
export class BearerAuthGuard implements CanActivate {
  canActivate(context: ExecutionContext): boolean {
    const request = context.switchToHttp().getRequest<AuthenticatedRequest>();
    const match = /^Bearer ([A-Za-z0-9._~-]+)$/.exec(String(request.headers.authorization ?? ''));
    if (!match) {
      throw new UnauthorizedException({
        type: 'urn:isolation-test:problem:unauthorized',
        title: 'Unauthorized',
        status: HttpStatus.UNAUTHORIZED,
        detail: 'Send Authorization: Bearer <user>.',
        code: 'UNAUTHORIZED',
      });
    }
    request.user = { id: match[1] };
    return true;
  }
}

/** Every HTTP error as `application/problem+json`, on Express and Fastify alike. */
@Catch(UnauthorizedException)
export class UnauthorizedProblemFilter implements ExceptionFilter {
  constructor(private readonly adapterHost: HttpAdapterHost) {}

  catch(exception: UnauthorizedException, host: ArgumentsHost): void {
    const { httpAdapter } = this.adapterHost;
    const response = host.switchToHttp().getResponse();
    httpAdapter.setHeader(response, 'Content-Type', 'application/problem+json');
    httpAdapter.reply(response, exception.getResponse(), exception.getStatus());
  }
}

/** Headers the handlers set; the first two must never be stored, whatever `replayHeaders` says. */
const REPLAY_HEADERS = ['X-Account-Region', 'Set-Cookie', 'Authorization'];

/** The scope of `/statements/custom`: a tenant of the user's, from the principal. */
const tenantScope = (context: ExecutionContext): string[] => [
  'tenant',
  context.switchToHttp().getRequest<AuthenticatedRequest>().user?.id ?? 'none',
];

@Controller('statements')
@UseGuards(BearerAuthGuard)
export class StatementsController {
  /** Default scope: the endpoint and the principal. */
  @Post()
  @Idempotent({ replayHeaders: REPLAY_HEADERS })
  endpointScope(
    @Req() request: AuthenticatedRequest,
    @Body() body: { note?: string; hold?: boolean },
    @Res({ passthrough: true }) res: HeaderWriter,
  ) {
    return respond('endpoint', request, body, res);
  }

  /** One key space per user, across routes. */
  @Post('user')
  @Idempotent({ scope: 'user', replayHeaders: REPLAY_HEADERS })
  userScope(
    @Req() request: AuthenticatedRequest,
    @Body() body: { note?: string; hold?: boolean },
    @Res({ passthrough: true }) res: HeaderWriter,
  ) {
    return respond('user', request, body, res);
  }

  /** A custom scope function. */
  @Post('custom')
  @Idempotent({ scope: tenantScope, replayHeaders: REPLAY_HEADERS })
  customScope(
    @Req() request: AuthenticatedRequest,
    @Body() body: { note?: string; hold?: boolean },
    @Res({ passthrough: true }) res: HeaderWriter,
  ) {
    return respond('custom', request, body, res);
  }
}

/** Secrets the handlers put in `Set-Cookie` and in the `Authorization` response header. */
export const secrets = { cookie: '', token: '' };

async function respond(
  route: string,
  request: AuthenticatedRequest,
  body: { note?: string; hold?: boolean },
  res: HeaderWriter,
) {
  const user = request.user!.id;
  const run = (executions.get(user) ?? 0) + 1;
  executions.set(user, run);
  if (body.hold) {
    waiting.add(user);
    await gates.get(user);
    waiting.delete(user);
  }
  const profile = profiles.get(user)!;
  res.header('Location', `/statements/${profile.name.toLowerCase()}-${run}`);
  res.header('Set-Cookie', `session=${secrets.cookie}-${run}; HttpOnly; Path=/`);
  res.header('Authorization', `Bearer ${secrets.token}-${run}`);
  res.header('X-Account-Region', `region-of-${profile.name.toLowerCase()}`);
  res.header('X-Unlisted', `not-replayed-${run}`);
  return { route, run, name: profile.name, email: profile.email, note: body.note ?? null };
}
