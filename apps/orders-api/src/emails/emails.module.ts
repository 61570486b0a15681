import { Module } from '@nestjs/common';
import { TypeOrmModule } from '@nestjs/typeorm';
import { EmailsController } from './emails.controller';
import { EmailsService } from './emails.service';
import { OutboxMessage } from './outbox-message.entity';

@Module({
  imports: [TypeOrmModule.forFeature([OutboxMessage])],
  controllers: [EmailsController],
  providers: [EmailsService],
})
export class EmailsModule {}
