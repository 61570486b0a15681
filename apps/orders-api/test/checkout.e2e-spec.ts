import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { parsePrometheusText } from '../../../test/utils/prometheus-text';
import { DEPLOYMENTS, PLATFORMS, type RunningApp, startOrdersApi } from './orders-api.harness';

/**
 * The checkout's server side: `POST /idempotency-keys` issues keys, `POST /checkout/payments`
 * takes only those, `GET /checkout` serves the page, and `GET /metrics` counts what happened.
 * The page itself runs in a browser in checkout.browser.e2e-spec.ts.
 */

const PROBLEM = /^application\/problem\+json/;
const ORDER = { customerId: 'checkout-1', items: [{ sku: 'SKU-1', quantity: 2, unitPrice: 9.99 }] };

// The default deployment (SQLite, TypeORM store) and the production one (PostgreSQL, Redis).
for (const deployment of [DEPLOYMENTS[0], DEPLOYMENTS[2]]) {
  (await deployment.describe).each(PLATFORMS)(`checkout on ${deployment.name}, %s`, (platform) => {
    let running: RunningApp;
    let cleanup: () => Promise<void>;
    const http = () => request(running.url);
    const newOrder = async () =>
      (await http().post('/orders').set('Idempotency-Key', randomUUID()).send(ORDER).expect(201))
        .body as { id: string; total: number };
    const issue = async () => {
      const res = await http().post('/idempotency-keys').expect(201);
      return res.body as { key: string; expiresAt: string };
    };
    const payments = async (orderId: string) =>
      (await http().get(`/payments?orderId=${orderId}`).expect(200)).body as { id: string }[];

    beforeAll(async () => {
      const provisioned = await deployment.provision();
      cleanup = provisioned.cleanup;
      running = await startOrdersApi({ ...provisioned.env, HTTP_PLATFORM: platform });
    });
    afterAll(async () => {
      await running?.close();
      await cleanup?.();
    });

    it('serves the page with a policy that allows its own script and style only', async () => {
      const res = await http().get('/checkout').expect(200);
      expect(res.headers['content-type']).toMatch(/^text\/html; charset=utf-8/);
      expect(res.headers['content-security-policy']).toMatch(
        /default-src 'none'; script-src 'sha256-[^']+'; style-src 'sha256-[^']+'/,
      );
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.text).toContain('<form id="checkout">');
    });

    it('issues a new key on every call, expiring in an hour, never cached', async () => {
      const before = Date.now();
      const res = await http().post('/idempotency-keys').expect(201);
      const other = await issue();
      expect(res.headers['cache-control']).toBe('no-store');
      expect(res.body.key).toMatch(/^ik1\.[\w-]+\.[\w-]+\.[\w-]+$/);
      expect(other.key).not.toBe(res.body.key);
      const expiresIn = Date.parse(res.body.expiresAt) - before;
      expect(expiresIn).toBeGreaterThan(59 * 60_000);
      expect(expiresIn).toBeLessThanOrEqual(60 * 60_000 + 5_000);
    });

    it('pays once per issued key, replays it, refuses any other key, and counts it all in /metrics', async () => {
      const order = await newOrder();
      const { key } = await issue();
      const pay = (k: string) =>
        http()
          .post('/checkout/payments')
          .set('Idempotency-Key', k)
          .send({ orderId: order.id, amount: order.total });

      const first = await pay(key).expect(201);
      const again = await pay(key).expect(201);
      expect(again.headers['idempotent-replayed']).toBe('true');
      expect(again.body.id).toBe(first.body.id);

      const clientKey = randomUUID();
      const tampered = `${key.slice(0, -2)}${key.endsWith('A') ? 'B' : 'A'}${key.at(-1)}`;
      for (const refused of [clientKey, tampered, key.slice(0, 40)]) {
        const res = await pay(refused).expect(400);
        expect(res.headers['content-type']).toMatch(PROBLEM);
        expect(res.body.code).toBe('IDEMPOTENCY_KEY_NOT_ISSUED');
      }
      expect(await payments(order.id)).toEqual([expect.objectContaining({ id: first.body.id })]);

      const metrics = await http().get('/metrics').expect(200);
      expect(metrics.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
      const requests = parsePrometheusText(metrics.text).filter(
        (s) =>
          s.name === 'idempotency_requests_total' && s.labels.target === 'POST /checkout/payments',
      );
      const count = (outcome: string, code?: string) =>
        requests.find((s) => s.labels.outcome === outcome && s.labels.code === code)?.value;
      expect(count('executed')).toBe(1);
      expect(count('replayed')).toBe(1);
      expect(count('rejected', 'IDEMPOTENCY_KEY_NOT_ISSUED')).toBe(3);
      expect(new Set(requests.map((s) => s.labels.store))).toEqual(
        new Set([
          deployment === DEPLOYMENTS[0] ? 'TypeOrmIdempotencyStore' : 'RedisIdempotencyStore',
        ]),
      );
      // Labels are routes and stores, never keys.
      expect(metrics.text).not.toContain(key);
      expect(metrics.text).not.toContain(clientKey);
    });
  });
}
