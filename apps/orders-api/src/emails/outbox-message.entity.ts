import { Column, Entity, PrimaryColumn } from 'typeorm';

/** An email waiting in the outbox (`outbox_messages`) for a sender process to deliver it. */
@Entity('outbox_messages')
export class OutboxMessage {
  @PrimaryColumn({ type: 'varchar', length: 36 })
  id!: string;

  @Column({ name: 'recipient', type: 'varchar', length: 320 })
  to!: string;

  @Column({ type: 'varchar', length: 200 })
  subject!: string;

  @Column({ type: 'text' })
  body!: string;

  @Column({ type: 'varchar', length: 16 })
  status!: 'queued';

  @Column({ name: 'created_at', type: Date })
  createdAt!: Date;
}
