import { Controller, Module, Post } from '@nestjs/common';
import { getDataSourceToken, TypeOrmModule } from '@nestjs/typeorm';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { IdempotencyModule, IdempotencyStore, Idempotent } from 'nestjs-idempotency';
import { RedisIdempotencyStore } from 'nestjs-idempotency/redis';
import {
  CreateIdempotencyRecordsTable1763800000000,
  TypeOrmIdempotencyStore,
} from 'nestjs-idempotency/typeorm';
import request from 'supertest';
import type { DataSource } from 'typeorm';
import { createApp, PLATFORMS } from '../http/platforms';

let runs = 0;

@Controller('charges')
class ChargesController {
  @Post()
  @Idempotent()
  charge() {
    return { run: ++runs };
  }
}

const dir = mkdtempSync(join(tmpdir(), 'idempotency-module-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.each(PLATFORMS)('stores wired through Nest modules (%s)', (platform) => {
  beforeEach(() => {
    runs = 0;
  });

  it('uses a named @nestjs/typeorm connection through forRootAsync', async () => {
    @Module({
      imports: [
        TypeOrmModule.forRoot({
          name: 'records',
          type: 'better-sqlite3',
          database: join(dir, `${platform}.sqlite`),
          migrations: [CreateIdempotencyRecordsTable1763800000000],
          migrationsRun: true,
        }),
        IdempotencyModule.forRootAsync({
          inject: [getDataSourceToken('records')],
          useFactory: (dataSource: DataSource) => ({
            store: new TypeOrmIdempotencyStore({ dataSource }),
          }),
        }),
      ],
      controllers: [ChargesController],
    })
    class AppModule {}

    const t = await createApp(platform, { imports: [AppModule] });
    try {
      expect(t.app.get(IdempotencyStore)).toBeInstanceOf(TypeOrmIdempotencyStore);
      const first = await request(t.url).post('/charges').set('Idempotency-Key', 'c1').expect(201);
      const again = await request(t.url).post('/charges').set('Idempotency-Key', 'c1').expect(201);
      expect(again.body).toEqual(first.body);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(runs).toBe(1);
      const dataSource = t.app.get<DataSource>(getDataSourceToken('records'));
      const [{ n }] = await dataSource.query('SELECT count(*) AS n FROM idempotency_records');
      expect(Number(n)).toBe(1);
    } finally {
      await t.app.close();
    }
  });

  it('answers 503 and runs nothing when Redis cannot be reached', async () => {
    const store = new RedisIdempotencyStore({
      client: { host: '127.0.0.1', port: 1, retryStrategy: () => null },
    });
    const t = await createApp(platform, {
      imports: [IdempotencyModule.forRoot({ store })],
      controllers: [ChargesController],
    });
    try {
      const res = await request(t.url).post('/charges').set('Idempotency-Key', 'r1').expect(503);
      expect(res.body.code).toBe('IDEMPOTENCY_STORE_UNAVAILABLE');
      expect(runs).toBe(0);
    } finally {
      await t.app.close();
    }
  });
});
