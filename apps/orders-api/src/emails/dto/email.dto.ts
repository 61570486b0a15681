import { ApiProperty } from '@nestjs/swagger';
import { IsEmail, IsNotEmpty, IsString, MaxLength } from 'class-validator';
import type { OutboxMessage } from '../outbox-message.entity';

/** Body of `POST /emails`. */
export class SendEmailDto {
  @ApiProperty({ example: 'ada@example.com', maxLength: 320 })
  @IsEmail()
  @MaxLength(320)
  to!: string;

  @ApiProperty({ example: 'Your order', maxLength: 200 })
  @IsString()
  @IsNotEmpty()
  @MaxLength(200)
  subject!: string;

  @ApiProperty({ example: 'It has shipped.', maxLength: 10_000 })
  @IsString()
  @MaxLength(10_000)
  body!: string;
}

/** What `POST /emails` answers: the message is in the outbox. */
export class EmailQueuedResponse {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty({ enum: ['queued'] })
  status!: 'queued';
}

/** A message of the outbox, as `GET /emails` lists it. */
export class OutboxMessageResponse {
  @ApiProperty({ format: 'uuid' })
  id!: string;

  @ApiProperty()
  to!: string;

  @ApiProperty()
  subject!: string;

  @ApiProperty()
  body!: string;

  @ApiProperty({ enum: ['queued'] })
  status!: 'queued';

  @ApiProperty({ format: 'date-time' })
  createdAt!: Date;

  static of(message: OutboxMessage): OutboxMessageResponse {
    const { id, to, subject, body, status, createdAt } = message;
    return { id, to, subject, body, status, createdAt };
  }
}
