import { Body, Controller, Get, HttpCode, HttpStatus, Post } from '@nestjs/common';
import { ApiAcceptedResponse, ApiOkResponse, ApiTags } from '@nestjs/swagger';
import { Idempotent } from 'nestjs-idempotency';
import { EmailQueuedResponse, OutboxMessageResponse, SendEmailDto } from './dto/email.dto';
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
    return { id: message.id, status: message.status };
  }

  @Get()
  @ApiOkResponse({ type: [OutboxMessageResponse] })
  async list(): Promise<OutboxMessageResponse[]> {
    return (await this.emails.list()).map((message) => OutboxMessageResponse.of(message));
  }
}
