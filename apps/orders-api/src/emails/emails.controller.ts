import { Body, Controller, Get, HttpCode, HttpStatus, Param, Post } from '@nestjs/common';
import { ApiAcceptedResponse, ApiNotFoundResponse, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { Idempotent } from 'nestjs-idempotency';
import {
  EmailQueuedResponse,
  OutboxMessageDetailResponse,
  OutboxMessageResponse,
  SendEmailDto,
} from './dto/email.dto';
import { EmailsService } from './emails.service';

@ApiTags('emails')
@Controller('emails')
export class EmailsController {
  constructor(private readonly emails: EmailsService) {}

  /** Queues an email once per key; retries within an hour replay the 202. */
  @Post()
  @HttpCode(HttpStatus.ACCEPTED)
  @Idempotent({ ttl: '1h' })
  @ApiAcceptedResponse({ type: EmailQueuedResponse, description: 'The message is in the outbox.' })
  async send(@Body() dto: SendEmailDto): Promise<EmailQueuedResponse> {
    const message = await this.emails.queue(dto);
    return { id: message.id, status: 'queued' };
  }

  @Get()
  @ApiOkResponse({ type: [OutboxMessageResponse] })
  async list(): Promise<OutboxMessageResponse[]> {
    return (await this.emails.list()).map((message) => OutboxMessageResponse.of(message));
  }

  /** One email with its delivery: status, sent time, Message-ID, the SMTP answer or the captured message. */
  @Get(':id')
  @ApiOkResponse({ type: OutboxMessageDetailResponse })
  @ApiNotFoundResponse({ description: 'No such email.' })
  async get(@Param('id') id: string): Promise<OutboxMessageDetailResponse> {
    return OutboxMessageDetailResponse.of(await this.emails.get(id));
  }
}
