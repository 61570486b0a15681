import {
  Body,
  Controller,
  Delete,
  Get,
  HttpCode,
  InternalServerErrorException,
  NotFoundException,
  Param,
  Patch,
  Post,
  Put,
  Query,
  Res,
  StreamableFile,
  UnprocessableEntityException,
} from '@nestjs/common';
import { Idempotent } from 'nestjs-idempotency';
import { delay } from './platforms';

/** How many times each handler ran, by name. Tests reset it. */
export const calls = new Map<string, number>();
export const count = (name: string): number => calls.get(name) ?? 0;
const ran = (name: string): number => {
  const next = count(name) + 1;
  calls.set(name, next);
  return next;
};

/** Gates that hold a handler until the test opens them. */
export const gates = new Map<string, () => void>();
const gate = (name: string) =>
  new Promise<void>((resolve) => {
    gates.set(name, resolve);
  });

/** What `storeIf` was called with on POST /responses/store-if-args. Tests reset it. */
export const storeIfCalls: { status: number; error: unknown }[] = [];

/** A failure after the effect happened: never run again (stored as a 500 by `storeIf`). */
export class NeverRetryError extends Error {}

interface OrderBody {
  sku?: string;
  quantity?: number;
  delayMs?: number;
  gate?: string;
}

@Controller('orders')
@Idempotent()
export class OrdersController {
  @Post()
  async create(@Body() body: OrderBody) {
    const n = ran('create');
    if (body.gate) {
      await gate(body.gate);
    }
    if (body.delayMs) {
      await delay(body.delayMs);
    }
    return { id: n, sku: body.sku, quantity: body.quantity };
  }

  @Patch(':id')
  patch(@Param('id') id: string, @Body() body: OrderBody) {
    return { id, run: ran('patch'), ...body };
  }

  @Put(':id')
  put(@Param('id') id: string) {
    return { id, run: ran('put') };
  }

  @Delete(':id')
  @Idempotent()
  remove(@Param('id') id: string) {
    return { id, run: ran('delete') };
  }

  @Get()
  list() {
    return { run: ran('list') };
  }
}

@Controller('other')
export class PlainController {
  @Post()
  create() {
    return { run: ran('plain') };
  }

  @Post('second')
  @Idempotent()
  second() {
    return { run: ran('second') };
  }
}

@Controller('responses')
export class ResponsesController {
  @Post('ok')
  @HttpCode(200)
  @Idempotent()
  ok() {
    return { run: ran('ok') };
  }

  @Post('headers')
  @Idempotent({ replayHeaders: ['X-Custom', 'Set-Cookie'] })
  headers(@Res({ passthrough: true }) res: { header(name: string, value: string): unknown }) {
    const run = ran('headers');
    res.header('Location', `/orders/${run}`);
    res.header('ETag', `"v${run}"`);
    res.header('Last-Modified', 'Wed, 21 Oct 2026 07:28:00 GMT');
    res.header('X-Custom', `listed-${run}`);
    res.header('X-Unlisted', `dropped-${run}`);
    res.header('Set-Cookie', `session=secret-${run}`);
    return { run };
  }

  @Post('types')
  @Idempotent()
  types() {
    ran('types');
    return {
      at: new Date('2026-01-02T03:04:05.000Z'),
      data: Buffer.from('hello'),
      nested: [{ when: new Date(0) }, null, 'text'],
    };
  }

  @Post('text')
  @Idempotent()
  text() {
    return `plain ${ran('text')}`;
  }

  @Post('empty')
  @HttpCode(204)
  @Idempotent()
  empty(): void {
    ran('empty');
  }

  @Post('not-found')
  @Idempotent()
  notFound() {
    throw new NotFoundException(`missing ${ran('not-found')}`);
  }

  @Post('unprocessable')
  @Idempotent()
  unprocessable() {
    throw new UnprocessableEntityException({ reason: 'rule', run: ran('unprocessable') });
  }

  @Post('server-error')
  @Idempotent()
  serverError() {
    throw new InternalServerErrorException(`failed ${ran('server-error')}`);
  }

  @Post('crash')
  @Idempotent()
  crash() {
    throw new Error(`crash ${ran('crash')}`);
  }

  @Post('stored-500')
  @Idempotent({ storeIf: (status) => status < 600 })
  stored500() {
    throw new InternalServerErrorException(`failed ${ran('stored-500')}`);
  }

  // Unreplayable results, with the release that lets a retry run again (unreplayable: 'release')
  // and with the default, which never runs the handler twice.
  @Post('stream')
  @Idempotent({ unreplayable: 'release' })
  stream() {
    return new StreamableFile(Buffer.from(`stream ${ran('stream')}`));
  }

  @Post('raw')
  @Idempotent({ unreplayable: 'release' })
  raw(@Res() res: { status(code: number): { send(body: string): void } }) {
    res.status(201).send(`raw ${ran('raw')}`);
  }

  @Post('big')
  @Idempotent({ maxResponseBytes: 100, unreplayable: 'release' })
  big() {
    return { run: ran('big'), padding: 'x'.repeat(200) };
  }

  @Post('stream-once')
  @Idempotent()
  streamOnce() {
    return new StreamableFile(Buffer.from(`stream ${ran('stream-once')}`));
  }

  @Post('raw-once')
  @Idempotent()
  rawOnce(@Res() res: { status(code: number): { send(body: string): void } }) {
    res.status(201).send(`raw ${ran('raw-once')}`);
  }

  @Post('big-once')
  @Idempotent({ maxResponseBytes: 100 })
  bigOnce() {
    return { run: ran('big-once'), padding: 'x'.repeat(200) };
  }

  @Post('language')
  @Idempotent()
  language(@Res({ passthrough: true }) res: { header(name: string, value: string): unknown }) {
    res.header('Content-Language', 'de-CH');
    return { run: ran('language'), text: 'Grüezi' };
  }

  @Post('never-twice')
  @Idempotent({ storeIf: (status, error) => status < 500 || error instanceof NeverRetryError })
  neverTwice() {
    throw new NeverRetryError(`failed after the charge ${ran('never-twice')}`);
  }

  @Post('store-if-args')
  @Idempotent({
    storeIf: (status, error) => {
      storeIfCalls.push({ status, error: error instanceof Error ? error.constructor.name : error });
      return status < 500;
    },
  })
  storeIfArgs(@Body() body: { fail?: boolean }) {
    ran('store-if-args');
    if (body.fail) {
      throw new UnprocessableEntityException('refused');
    }
    return { ok: true };
  }

  @Post('optional')
  @Idempotent({ required: false })
  optional() {
    return { run: ran('optional') };
  }

  @Post('search')
  @Idempotent()
  search(@Query('q') q: string) {
    return { q, run: ran('search') };
  }

  @Post('lenient')
  @Idempotent({ fingerprint: false })
  lenient(@Body() body: OrderBody) {
    return { run: ran('lenient'), body };
  }

  @Post('body-key')
  @Idempotent({ key: { path: 'meta.requestId' } })
  bodyKey(@Body() body: unknown) {
    return { run: ran('body-key'), body };
  }

  @Post('conflict-status')
  @Idempotent({ mismatchStatus: 409 })
  conflictStatus() {
    return { run: ran('conflict-status') };
  }
}

@Controller('payments')
export class PaymentsController {
  @Post(':id/capture')
  @Idempotent()
  capture(@Param('id') id: string, @Body() body: { amount?: number }) {
    return { id, captured: body.amount, run: ran(`capture-${id}`) };
  }
}
