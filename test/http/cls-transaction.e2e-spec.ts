import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { DataSource, type DataSourceOptions } from 'typeorm';
import { MYSQL_URL, POSTGRES_URL } from '../utils/databases';
import { type Child, freePort, killAllChildren, spawnChild } from '../utils/processes';
import { describeWithServer } from '../utils/services';
import { describeWithSqlite } from '../utils/sqlite';
import { delay, PLATFORMS } from './platforms';

/**
 * Transactional mode joined through `TransactionHost` of @nestjs-cls/transactional (TypeORM
 * adapter): the app's services write through `txHost.tx`, unchanged, and their writes commit
 * with the idempotency record. The app (test/http/cls/cls-app.ts) runs as a child process, as
 * `npm start` runs the sample.
 */

afterAll(() => killAllChildren());
const sqliteDir = mkdtempSync(join(tmpdir(), 'idempotency-cls-'));
afterAll(() => rmSync(sqliteDir, { recursive: true, force: true }));

const SQLITE_FILE = join(sqliteDir, 'cls.sqlite');
const DATABASES: [string, Promise<jest.Describe>, string, string][] = [
  ['PostgreSQL', describeWithServer('PostgreSQL', POSTGRES_URL), 'postgres', POSTGRES_URL],
  ['MariaDB', describeWithServer('MariaDB', MYSQL_URL), 'mariadb', MYSQL_URL],
  ['SQLite', Promise.resolve(describeWithSqlite()), 'better-sqlite3', SQLITE_FILE],
];

const EFFECTS = `cls_effects_${randomBytes(3).toString('hex')}`;

for (const [name, gate, type, target] of DATABASES) {
  (await gate)(`Transactional mode through @nestjs-cls/transactional on ${name}`, () => {
    let dataSource: DataSource;
    const count = async (key: string): Promise<number> => {
      const rows: { n: string | number }[] = await dataSource.query(
        `SELECT COUNT(*) AS n FROM ${EFFECTS} WHERE effect_key = ${type === 'postgres' ? '$1' : '?'}`,
        [key],
      );
      return Number(rows[0].n);
    };

    beforeAll(async () => {
      dataSource = await new DataSource(
        (type === 'better-sqlite3'
          ? { type, database: target, enableWAL: true, timeout: 10_000 }
          : { type, url: target }) as DataSourceOptions,
      ).initialize();
      await dataSource.query(
        `CREATE TABLE IF NOT EXISTS ${EFFECTS} (id varchar(36) NOT NULL PRIMARY KEY, effect_key varchar(64) NOT NULL)`,
      );
    });
    afterAll(async () => {
      await dataSource.query(`DROP TABLE ${EFFECTS}`);
      await dataSource.destroy();
    });

    describe.each(PLATFORMS)('%s', (platform) => {
      let app: Child;
      let url: string;
      const post = (path: string, key: string, body: object) =>
        request(url).post(path).set('Idempotency-Key', key).send(body);

      beforeAll(async () => {
        const port = await freePort();
        url = `http://127.0.0.1:${port}`;
        app = spawnChild(
          `cls-app:${platform}:${name}`,
          process.execPath,
          [
            '-r',
            'ts-node/register/transpile-only',
            '-r',
            'tsconfig-paths/register',
            'test/http/cls/cls-app.ts',
          ],
          {
            env: {
              ...process.env,
              CLS_APP_PORT: String(port),
              CLS_APP_PLATFORM: platform,
              CLS_APP_DB_TYPE: type,
              CLS_APP_DB: target,
              CLS_APP_EFFECTS: EFFECTS,
            },
          },
        );
        await app.waitForOutput(/cls-app listening/);
      }, 60_000);
      afterAll(() => app?.stop());

      it("writes through txHost.tx in the record's transaction: one row, replayed", async () => {
        const key = `cls-${randomUUID()}`;
        const first = await post('/cls-effects', key, { key }).expect(201);
        expect(first.body).toEqual({ id: expect.any(String), run: 1, inTransaction: true });
        const again = await post('/cls-effects', key, { key }).expect(201);
        expect(again.headers['idempotent-replayed']).toBe('true');
        expect(again.body).toEqual(first.body);
        expect(await count(key)).toBe(1);
      });

      it('rolls the txHost.tx write back when the handler throws, and the retry writes once', async () => {
        const key = `cls-${randomUUID()}`;
        await post('/cls-effects', key, { key, fail: true }).expect(500);
        expect(await count(key)).toBe(0);
        await post('/cls-effects', key, { key }).expect(201);
        expect(await count(key)).toBe(1);
      });

      it('rolls back a holder whose lease lapsed before COMMIT: one effect, one id for both clients', async () => {
        const key = `cls-${randomUUID()}`;
        const stalled = post('/cls-effects/stalling', key, { key, holdMs: 1_200 }).then((r) => r);
        await delay(700);
        const winner = await post('/cls-effects/stalling', key, { key, holdMs: 1_200 });
        const loser = await stalled;
        expect([winner.status, loser.status]).toEqual([201, 201]);
        expect(loser.body.id).toBe(winner.body.id);
        expect(await count(key)).toBe(1);
      });
    });
  });
}
