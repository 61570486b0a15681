import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib';
import request from 'supertest';
import { PaymentGateway } from '../src/payments/payment-gateway';
import { DEPLOYMENTS, PLATFORMS, type RunningApp, startOrdersApi } from './orders-api.harness';

const PROBLEM = /^application\/problem\+json/;
const ORDER = { customerId: 'customer-1', items: [{ sku: 'SKU-1', quantity: 2, unitPrice: 9.99 }] };
const HTTP_DATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/;

/** `time` shifted by `seconds`, as an HTTP-date. */
const shifted = (time: string, seconds: number) =>
  new Date(Date.parse(time) + seconds * 1000).toUTCString();

/** A request sent byte for byte (supertest would serialize a Buffer body as JSON). */
function rawRequest(
  url: string,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
): Promise<{ status: number; headers: Record<string, unknown>; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${url}${path}`, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        resolve({
          status: res.statusCode!,
          headers: res.headers,
          body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
        });
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

for (const deployment of DEPLOYMENTS) {
  (await deployment.describe).each(PLATFORMS)(
    `orders API on ${deployment.name}, %s`,
    (platform) => {
      let running: RunningApp;
      let cleanup: () => Promise<void>;
      let gateway: PaymentGateway;
      const http = () => request(running.url);
      const key = () => `key-${randomUUID()}`;
      const createOrder = async (body: object = ORDER, k = key()) =>
        (await http().post('/orders').set('Idempotency-Key', k).send(body).expect(201)).body;

      beforeAll(async () => {
        const provisioned = await deployment.provision();
        cleanup = provisioned.cleanup;
        running = await startOrdersApi({ ...provisioned.env, HTTP_PLATFORM: platform });
        gateway = running.app.get(PaymentGateway);
      });

      afterAll(async () => {
        await running?.close();
        await cleanup?.();
      });

      afterEach(() => {
        gateway.latencyMs = 0;
        gateway.failureRate = 0;
      });

      describe('POST /orders', () => {
        it('creates the order with 201, its Location and ETag, and replays all of it to a retry', async () => {
          const k = key();
          const customerId = `c-${randomUUID()}`;
          const body = { customerId, items: [{ sku: 'A', quantity: 3, unitPrice: 0.1 }] };
          const first = await http()
            .post('/orders')
            .set('Idempotency-Key', k)
            .send(body)
            .expect(201);
          expect(first.body).toEqual({
            id: expect.any(String),
            customerId,
            items: [{ sku: 'A', quantity: 3, unitPrice: 0.1 }],
            total: 0.3,
            status: 'pending',
            createdAt: expect.any(String),
            updatedAt: expect.any(String),
          });
          expect(first.headers.location).toBe(`/orders/${first.body.id}`);
          expect(first.headers.etag).toBe('"1"');
          expect(first.headers['idempotent-replayed']).toBeUndefined();

          const retry = await http()
            .post('/orders')
            .set('Idempotency-Key', k)
            .send(body)
            .expect(201);
          expect(retry.body).toEqual(first.body);
          expect(retry.headers.location).toBe(first.headers.location);
          expect(retry.headers['idempotent-replayed']).toBe('true');

          const list = await http().get('/orders').query({ customerId }).expect(200);
          expect(list.body).toHaveLength(1);
        });

        it('refuses a key reused for another body with 422, and creates nothing', async () => {
          const k = key();
          const customerId = `c-${randomUUID()}`;
          await http()
            .post('/orders')
            .set('Idempotency-Key', k)
            .send({ ...ORDER, customerId });
          const res = await http()
            .post('/orders')
            .set('Idempotency-Key', k)
            .send({ ...ORDER, customerId, items: [{ sku: 'B', quantity: 1, unitPrice: 1 }] })
            .expect(422);
          expect(res.headers['content-type']).toMatch(PROBLEM);
          expect(res.body.code).toBe('IDEMPOTENCY_KEY_REUSED');
          expect((await http().get('/orders').query({ customerId })).body).toHaveLength(1);
        });

        it('requires an Idempotency-Key', async () => {
          const res = await http().post('/orders').send(ORDER).expect(400);
          expect(res.headers['content-type']).toMatch(PROBLEM);
          expect(res.body).toMatchObject({ status: 400, code: 'IDEMPOTENCY_KEY_MISSING' });
        });

        it.each([
          ['no items', { customerId: 'c', items: [] }, 'items'],
          [
            'a zero quantity',
            { customerId: 'c', items: [{ sku: 'A', quantity: 0, unitPrice: 1 }] },
            'items[0].quantity',
          ],
          [
            'a fractional quantity',
            { customerId: 'c', items: [{ sku: 'A', quantity: 1.5, unitPrice: 1 }] },
            'items[0].quantity',
          ],
          [
            'a negative price',
            { customerId: 'c', items: [{ sku: 'A', quantity: 1, unitPrice: -1 }] },
            'items[0].unitPrice',
          ],
          [
            'a price as a string',
            { customerId: 'c', items: [{ sku: 'A', quantity: 1, unitPrice: '1' }] },
            'items[0].unitPrice',
          ],
          ['no customer', { items: [{ sku: 'A', quantity: 1, unitPrice: 1 }] }, 'customerId'],
          ['an unknown property', { ...ORDER, discount: 5 }, 'discount'],
          ['items that are not a list', { customerId: 'c', items: 'A' }, 'items'],
        ])('answers 400 naming the field for %s', async (_case, body, field) => {
          const res = await http()
            .post('/orders')
            .set('Idempotency-Key', key())
            .send(body)
            .expect(400);
          expect(res.headers['content-type']).toMatch(PROBLEM);
          expect(res.body.code).toBe('VALIDATION_FAILED');
          expect(res.body.errors.map((e: { field: string }) => e.field)).toContain(field);
        });
      });

      describe('GET /orders', () => {
        it('lists orders, filtered by customer', async () => {
          const customerId = `c-${randomUUID()}`;
          const a = await createOrder({ ...ORDER, customerId });
          const b = await createOrder({ ...ORDER, customerId });
          await createOrder();
          const res = await http().get('/orders').query({ customerId }).expect(200);
          expect(res.body.map((o: { id: string }) => o.id).sort()).toEqual([a.id, b.id].sort());
          const all = await http().get('/orders').expect(200);
          expect(all.body.length).toBeGreaterThanOrEqual(3);
        });

        it('answers 400 for a repeated or unknown query parameter', async () => {
          const repeated = await http().get('/orders?customerId=a&customerId=b').expect(400);
          expect(repeated.headers['content-type']).toMatch(PROBLEM);
          expect(repeated.body.errors.map((e: { field: string }) => e.field)).toEqual([
            'customerId',
          ]);
          await http().get('/orders?sort=desc').expect(400);
          await http().get('/payments?orderId=a&orderId=b').expect(400);
        });

        it('answers one order with its ETag, 304 for a current If-None-Match, 404 for an unknown id', async () => {
          const order = await createOrder();
          const res = await http().get(`/orders/${order.id}`).expect(200);
          expect(res.body).toEqual(order);
          expect(res.headers.etag).toBe('"1"');
          const cached = await http()
            .get(`/orders/${order.id}`)
            .set('If-None-Match', '"1"')
            .expect(304);
          expect(cached.text).toBe('');
          await http().get(`/orders/${order.id}`).set('If-None-Match', '"0"').expect(200);
          for (const id of [randomUUID(), 'not-a-uuid']) {
            const missing = await http().get(`/orders/${id}`).expect(404);
            expect(missing.headers['content-type']).toMatch(PROBLEM);
            expect(missing.body.code).toBe('ORDER_NOT_FOUND');
          }
        });
      });

      describe('GET /orders/:id with Last-Modified', () => {
        it('answers Last-Modified, the updated time to the second, on GET, HEAD and PUT', async () => {
          const order = await createOrder();
          const res = await http().get(`/orders/${order.id}`).expect(200);
          expect(res.headers['last-modified']).toMatch(HTTP_DATE);
          expect(res.headers['last-modified']).toBe(new Date(order.updatedAt).toUTCString());
          const head = await http().head(`/orders/${order.id}`).expect(200);
          expect(head.headers['last-modified']).toBe(res.headers['last-modified']);
          expect(head.headers.etag).toBe('"1"');
          const put = await http()
            .put(`/orders/${order.id}`)
            .send({ ...ORDER, customerId: 'changed' })
            .expect(200);
          expect(put.headers['last-modified']).toBe(new Date(put.body.updatedAt).toUTCString());
          expect(put.headers.etag).toBe('"2"');
        });

        it('answers 304 to If-Modified-Since at or after the last change, compared in whole seconds', async () => {
          const order = await createOrder();
          const lastModified = (await http().get(`/orders/${order.id}`)).headers['last-modified'];
          // The stored time has milliseconds the header has not: the same second is not modified.
          for (const since of [
            lastModified,
            shifted(lastModified, 1),
            shifted(lastModified, 3600),
          ]) {
            const cached = await http()
              .get(`/orders/${order.id}`)
              .set('If-Modified-Since', since)
              .expect(304);
            expect(cached.text).toBe('');
            expect(cached.headers.etag).toBe('"1"');
            expect(cached.headers['last-modified']).toBe(lastModified);
          }
          const stale = await http()
            .get(`/orders/${order.id}`)
            .set('If-Modified-Since', shifted(lastModified, -1))
            .expect(200);
          expect(stale.body).toEqual(order);
        });

        it('reads the obsolete HTTP-date formats, and ignores a value that is not an HTTP-date', async () => {
          const order = await createOrder();
          const lastModified = (await http().get(`/orders/${order.id}`)).headers['last-modified'];
          const date = new Date(lastModified);
          const [weekday, day, month, year, time] = lastModified.replace(',', '').split(' ');
          const days = [
            'Sunday',
            'Monday',
            'Tuesday',
            'Wednesday',
            'Thursday',
            'Friday',
            'Saturday',
          ];
          const rfc850 = `${days[date.getUTCDay()]}, ${day}-${month}-${year.slice(2)} ${time} GMT`;
          const asctime = `${weekday} ${month} ${String(date.getUTCDate()).padStart(2, ' ')} ${time} ${year}`;
          for (const since of [rfc850, asctime]) {
            await http().get(`/orders/${order.id}`).set('If-Modified-Since', since).expect(304);
          }
          for (const since of [
            'yesterday',
            date.toISOString(),
            `${lastModified}, ${lastModified}`,
            lastModified.replace(/^\w{3}, \d{2} \w{3}/, 'Mon, 31 Feb'),
          ]) {
            const res = await http().get(`/orders/${order.id}`).set('If-Modified-Since', since);
            expect(res.status).toBe(200);
            expect(res.body.id).toBe(order.id);
          }
        });

        it('lets If-None-Match decide when both are sent (RFC 9110 13.2.2)', async () => {
          const order = await createOrder();
          const lastModified = (await http().get(`/orders/${order.id}`)).headers['last-modified'];
          await http()
            .get(`/orders/${order.id}`)
            .set('If-None-Match', '"0"')
            .set('If-Modified-Since', lastModified)
            .expect(200);
          await http()
            .get(`/orders/${order.id}`)
            .set('If-None-Match', '"1"')
            .set('If-Modified-Since', shifted(lastModified, -3600))
            .expect(304);
        });
      });

      describe('If-Unmodified-Since on PUT and DELETE', () => {
        const change = { ...ORDER, customerId: 'customer-unmodified' };

        it('replaces when the order has not changed since the date, in whole seconds; 412 when it has', async () => {
          const order = await createOrder();
          const lastModified = (await http().get(`/orders/${order.id}`)).headers['last-modified'];
          const stale = await http()
            .put(`/orders/${order.id}`)
            .set('If-Unmodified-Since', shifted(lastModified, -1))
            .send(change)
            .expect(412);
          expect(stale.headers['content-type']).toMatch(PROBLEM);
          expect(stale.body).toMatchObject({ status: 412, code: 'PRECONDITION_FAILED' });
          expect(stale.body.detail).toContain('If-Unmodified-Since');
          expect((await http().get(`/orders/${order.id}`)).body).toEqual(order);

          const current = await http()
            .put(`/orders/${order.id}`)
            .set('If-Unmodified-Since', lastModified)
            .send(change)
            .expect(200);
          expect(current.body.customerId).toBe(change.customerId);
          expect(current.headers.etag).toBe('"2"');
        });

        it('is ignored when If-Match is sent, and when it is not an HTTP-date', async () => {
          const order = await createOrder();
          const lastModified = (await http().get(`/orders/${order.id}`)).headers['last-modified'];
          const before = shifted(lastModified, -3600);
          await http()
            .put(`/orders/${order.id}`)
            .set('If-Match', '"1"')
            .set('If-Unmodified-Since', before)
            .send(change)
            .expect(200);
          const staleTag = await http()
            .put(`/orders/${order.id}`)
            .set('If-Match', '"1"')
            .set('If-Unmodified-Since', shifted(lastModified, 3600))
            .send(ORDER)
            .expect(412);
          expect(staleTag.body.detail).toContain('If-Match');
          await http()
            .put(`/orders/${order.id}`)
            .set('If-Unmodified-Since', 'not a date')
            .send(ORDER)
            .expect(200);
        });

        it('deletes only when the order has not changed since the date', async () => {
          const order = await createOrder();
          const lastModified = (await http().get(`/orders/${order.id}`)).headers['last-modified'];
          const stale = await http()
            .delete(`/orders/${order.id}`)
            .set('If-Unmodified-Since', shifted(lastModified, -1))
            .expect(412);
          expect(stale.headers['content-type']).toMatch(PROBLEM);
          expect(stale.body.code).toBe('PRECONDITION_FAILED');
          await http().get(`/orders/${order.id}`).expect(200);
          await http()
            .delete(`/orders/${order.id}`)
            .set('If-Unmodified-Since', lastModified)
            .expect(204);
          await http().get(`/orders/${order.id}`).expect(404);
        });
      });

      describe('PUT /orders/:id', () => {
        const replacement = {
          customerId: 'customer-2',
          items: [
            { sku: 'X', quantity: 1, unitPrice: 5 },
            { sku: 'Y', quantity: 4, unitPrice: 0.25 },
          ],
        };

        it('replaces customer and items and recomputes the total; sent twice, the state is the same', async () => {
          const order = await createOrder();
          const first = await http().put(`/orders/${order.id}`).send(replacement).expect(200);
          expect(first.body).toMatchObject({
            ...replacement,
            id: order.id,
            total: 6,
            status: 'pending',
          });
          expect(first.headers.etag).toBe('"2"');
          const second = await http().put(`/orders/${order.id}`).send(replacement).expect(200);
          expect(second.body).toEqual(first.body);
          expect(second.headers.etag).toBe('"2"');
          expect((await http().get(`/orders/${order.id}`)).body).toEqual(first.body);
        });

        it('honours If-Match: 412 for a stale ETag, 200 for the current one', async () => {
          const order = await createOrder();
          await http()
            .put(`/orders/${order.id}`)
            .set('If-Match', '"1"')
            .send(replacement)
            .expect(200);
          const stale = await http()
            .put(`/orders/${order.id}`)
            .set('If-Match', '"1"')
            .send({ ...replacement, customerId: 'someone-else' })
            .expect(412);
          expect(stale.headers['content-type']).toMatch(PROBLEM);
          expect(stale.body.code).toBe('PRECONDITION_FAILED');
          expect((await http().get(`/orders/${order.id}`)).body.customerId).toBe('customer-2');
        });

        it('answers 404 for an unknown order and 400 for an invalid body', async () => {
          await http().put(`/orders/${randomUUID()}`).send(replacement).expect(404);
          const order = await createOrder();
          const res = await http()
            .put(`/orders/${order.id}`)
            .send({ customerId: 'c', items: [] })
            .expect(400);
          expect(res.body.code).toBe('VALIDATION_FAILED');
        });
      });

      describe('DELETE /orders/:id', () => {
        it('deletes the order (204); a second DELETE answers 404', async () => {
          const order = await createOrder();
          const res = await http().delete(`/orders/${order.id}`).expect(204);
          expect(res.text).toBe('');
          await http().get(`/orders/${order.id}`).expect(404);
          const again = await http().delete(`/orders/${order.id}`).expect(404);
          expect(again.body.code).toBe('ORDER_NOT_FOUND');
        });

        it('answers 412 for a stale If-Match and keeps the order', async () => {
          const order = await createOrder();
          await http()
            .put(`/orders/${order.id}`)
            .send({ ...ORDER, customerId: 'changed' })
            .expect(200);
          await http().delete(`/orders/${order.id}`).set('If-Match', '"1"').expect(412);
          await http().get(`/orders/${order.id}`).expect(200);
        });
      });

      describe('POST /payments', () => {
        const pay = (orderId: string, amount: number, k = key()) =>
          http().post('/payments').set('Idempotency-Key', k).send({ orderId, amount });

        it('charges once, answers 201 with the payment, marks the order paid, and replays to a retry', async () => {
          const order = await createOrder();
          const charges = gateway.chargeCount;
          const k = key();
          const first = await pay(order.id, 19.98, k).expect(201);
          expect(first.body).toEqual({
            id: expect.any(String),
            orderId: order.id,
            amount: 19.98,
            status: 'succeeded',
            createdAt: expect.any(String),
          });
          expect(first.headers.location).toBe(`/payments/${first.body.id}`);
          const retry = await pay(order.id, 19.98, k).expect(201);
          expect(retry.body).toEqual(first.body);
          expect(retry.headers['idempotent-replayed']).toBe('true');
          expect(gateway.chargeCount - charges).toBe(1);
          expect((await http().get(`/payments/${first.body.id}`).expect(200)).body).toEqual(
            first.body,
          );
          const paid = await http().get(`/orders/${order.id}`).expect(200);
          expect(paid.body.status).toBe('paid');
        });

        it('refuses a second payment of a paid order under another key (409), and PUT and DELETE of it', async () => {
          const order = await createOrder();
          await pay(order.id, 19.98).expect(201);
          const second = await pay(order.id, 19.98).expect(409);
          expect(second.headers['content-type']).toMatch(PROBLEM);
          expect(second.body.code).toBe('ORDER_ALREADY_PAID');
          expect((await http().put(`/orders/${order.id}`).send(ORDER).expect(409)).body.code).toBe(
            'ORDER_ALREADY_PAID',
          );
          expect((await http().delete(`/orders/${order.id}`).expect(409)).body.code).toBe(
            'ORDER_ALREADY_PAID',
          );
          expect((await http().get('/payments').query({ orderId: order.id })).body).toHaveLength(1);
        });

        it('answers 422 for an amount that is not the total, and replays that 422 to a retry', async () => {
          const order = await createOrder();
          const k = key();
          const first = await pay(order.id, 20, k).expect(422);
          expect(first.headers['content-type']).toMatch(PROBLEM);
          expect(first.body).toMatchObject({ code: 'AMOUNT_MISMATCH', expectedAmount: 19.98 });
          const retry = await pay(order.id, 20, k).expect(422);
          expect(retry.body).toEqual(first.body);
          expect(retry.headers['idempotent-replayed']).toBe('true');
          expect((await http().get(`/orders/${order.id}`)).body.status).toBe('pending');
        });

        it('answers 404 for an unknown order and 400 for a malformed one', async () => {
          const missing = await pay(randomUUID(), 1).expect(404);
          expect(missing.body.code).toBe('ORDER_NOT_FOUND');
          const invalid = await pay('order-1', 1).expect(400);
          expect(invalid.body.errors.map((e: { field: string }) => e.field)).toEqual(['orderId']);
          await http().get(`/payments/${randomUUID()}`).expect(404);
        });

        it('charges one order once when ten payments with different keys race', async () => {
          const order = await createOrder();
          const charges = gateway.chargeCount;
          gateway.latencyMs = 100;
          const results = await Promise.all(Array.from({ length: 10 }, () => pay(order.id, 19.98)));
          // A loser answers 409 whether it lost while the winner ran or after it finished.
          const outcomes = results
            .map((r) =>
              r.status === 409 &&
              ['PAYMENT_IN_PROGRESS', 'ORDER_ALREADY_PAID'].includes(r.body.code)
                ? '409'
                : `${r.status} ${r.body.code ?? ''}`.trim(),
            )
            .sort();
          expect(outcomes).toEqual(['201', ...Array(9).fill('409')]);
          expect(gateway.chargeCount - charges).toBe(1);
          expect((await http().get('/payments').query({ orderId: order.id })).body).toHaveLength(1);
        });

        it('answers 409 to a duplicate of a payment still running, and runs it once', async () => {
          const order = await createOrder();
          gateway.latencyMs = 300;
          const k = key();
          const first = pay(order.id, 19.98, k).then((r) => r);
          await new Promise((resolve) => setTimeout(resolve, 100));
          const duplicate = await pay(order.id, 19.98, k).expect(409);
          expect(duplicate.body.code).toBe('IDEMPOTENCY_REQUEST_IN_PROGRESS');
          expect(Number(duplicate.headers['retry-after'])).toBeGreaterThanOrEqual(1);
          expect((await first).status).toBe(201);
          expect((await pay(order.id, 19.98, k).expect(201)).headers['idempotent-replayed']).toBe(
            'true',
          );
        });

        it('answers 502 when the gateway fails, charges nothing, and lets the same key retry', async () => {
          const order = await createOrder();
          const charges = gateway.chargeCount;
          gateway.failureRate = 1;
          const k = key();
          const failed = await pay(order.id, 19.98, k).expect(502);
          expect(failed.headers['content-type']).toMatch(PROBLEM);
          expect(failed.body.code).toBe('PAYMENT_GATEWAY_FAILED');
          await pay(order.id, 19.98, k).expect(502);
          expect((await http().get('/payments').query({ orderId: order.id })).body).toHaveLength(0);
          expect((await http().get(`/orders/${order.id}`)).body.status).toBe('pending');
          gateway.failureRate = 0;
          const retry = await pay(order.id, 19.98, k).expect(201);
          expect(retry.headers['idempotent-replayed']).toBeUndefined();
          expect(gateway.chargeCount - charges).toBe(1);
        });

        it('refuses to replace or delete an order while its payment runs', async () => {
          const order = await createOrder();
          gateway.latencyMs = 400;
          const payment = pay(order.id, 19.98).then((r) => r);
          await new Promise((resolve) => setTimeout(resolve, 150));
          const put = await http()
            .put(`/orders/${order.id}`)
            .send({ ...ORDER, customerId: 'x' });
          expect(put.status).toBe(409);
          expect(put.body.code).toBe('PAYMENT_IN_PROGRESS');
          const del = await http().delete(`/orders/${order.id}`);
          expect(del.status).toBe(409);
          expect((await payment).status).toBe(201);
          expect((await http().get(`/orders/${order.id}`)).body).toMatchObject({
            customerId: ORDER.customerId,
            status: 'paid',
          });
        });
      });

      describe('POST /emails', () => {
        it('queues the message once (202) and replays the 202 to a retry', async () => {
          const k = key();
          const to = `${randomUUID()}@example.com`;
          const body = { to, subject: 'Your order', body: 'It has shipped.' };
          const first = await http()
            .post('/emails')
            .set('Idempotency-Key', k)
            .send(body)
            .expect(202);
          expect(first.body).toEqual({ id: expect.any(String), status: 'queued' });
          const retry = await http()
            .post('/emails')
            .set('Idempotency-Key', k)
            .send(body)
            .expect(202);
          expect(retry.body).toEqual(first.body);
          expect(retry.headers['idempotent-replayed']).toBe('true');
          const outbox = await http().get('/emails').expect(200);
          const mine = outbox.body.filter((m: { to: string }) => m.to === to);
          // One message, whatever the relay and the mailer have done with it by now.
          expect(mine).toEqual([
            expect.objectContaining({ id: first.body.id, ...body, createdAt: expect.any(String) }),
          ]);
        });

        it('answers 400 for an invalid address', async () => {
          const res = await http()
            .post('/emails')
            .set('Idempotency-Key', key())
            .send({ to: 'nobody', subject: 's', body: 'b' })
            .expect(400);
          expect(res.body.errors.map((e: { field: string }) => e.field)).toEqual(['to']);
        });
      });

      describe('bad input is a problem, never a 5xx', () => {
        it.each([
          ['malformed JSON', 'application/json', '{"customerId": ', 400, 'MALFORMED_BODY'],
          ['a JSON string', 'application/json', '"order"', 400, 'MALFORMED_BODY'],
          [
            'a form',
            'application/x-www-form-urlencoded',
            'customerId=c',
            415,
            'UNSUPPORTED_MEDIA_TYPE',
          ],
          ['plain text', 'text/plain', 'hello', 415, 'UNSUPPORTED_MEDIA_TYPE'],
          [
            'deep nesting',
            'application/json',
            `${'{"a":'.repeat(100)}1${'}'.repeat(100)}`,
            400,
            'MALFORMED_BODY',
          ],
          [
            'a body over the limit',
            'application/json',
            JSON.stringify({ ...ORDER, customerId: 'x'.repeat(200_000) }),
            413,
            'BODY_TOO_LARGE',
          ],
        ])('%s', async (_case, type, body, status, code) => {
          const res = await http()
            .post('/orders')
            .set('Idempotency-Key', key())
            .set('Content-Type', type)
            .send(body);
          expect(res.status).toBe(status);
          expect(res.headers['content-type']).toMatch(PROBLEM);
          expect(res.body).toMatchObject({
            status,
            code,
            type: expect.any(String),
            title: expect.any(String),
          });
        });

        it.each([
          [
            'a body without Content-Type',
            {},
            Buffer.from(JSON.stringify(ORDER)),
            415,
            'UNSUPPORTED_MEDIA_TYPE',
          ],
          [
            'a charset other than UTF',
            { 'Content-Type': 'application/json; charset=latin1' },
            Buffer.from(JSON.stringify(ORDER)),
            415,
            'UNSUPPORTED_MEDIA_TYPE',
          ],
          [
            'an unknown Content-Encoding',
            { 'Content-Type': 'application/json', 'Content-Encoding': 'zstd-x' },
            Buffer.from(JSON.stringify(ORDER)),
            415,
            'UNSUPPORTED_MEDIA_TYPE',
          ],
          [
            'a gzip body that is not gzip',
            { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' },
            Buffer.from(JSON.stringify(ORDER)),
            400,
            'MALFORMED_BODY',
          ],
          [
            'a gzip body over the limit once inflated',
            { 'Content-Type': 'application/json', 'Content-Encoding': 'gzip' },
            gzipSync(JSON.stringify({ ...ORDER, customerId: 'x'.repeat(300_000) })),
            413,
            'BODY_TOO_LARGE',
          ],
          [
            'a chunked body over the limit',
            { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' },
            Buffer.from(JSON.stringify({ ...ORDER, customerId: 'x'.repeat(200_000) })),
            413,
            'BODY_TOO_LARGE',
          ],
          [
            'an empty JSON body',
            { 'Content-Type': 'application/json' },
            Buffer.alloc(0),
            400,
            'VALIDATION_FAILED',
          ],
        ])('%s', async (_case, headers: Record<string, string>, body, status, code) => {
          const res = await rawRequest(
            running.url,
            '/orders',
            {
              'Idempotency-Key': key(),
              ...(headers['Transfer-Encoding'] ? {} : { 'Content-Length': String(body.length) }),
              ...headers,
            },
            body,
          );
          expect(res.status).toBe(status);
          expect(res.headers['content-type']).toMatch(PROBLEM);
          expect(res.body).toMatchObject({ status, code, type: expect.any(String) });
        });

        it('accepts gzip, deflate and br bodies, and application/*+json, as JSON', async () => {
          const json = JSON.stringify(ORDER);
          for (const [encoding, body] of [
            ['gzip', gzipSync(json)],
            ['deflate', deflateSync(json)],
            ['br', brotliCompressSync(json)],
          ] as const) {
            const res = await rawRequest(
              running.url,
              '/orders',
              {
                'Idempotency-Key': key(),
                'Content-Type': 'application/json',
                'Content-Encoding': encoding,
                'Content-Length': String(body.length),
              },
              body,
            );
            expect(res.status).toBe(201);
            expect(res.body).toMatchObject({ customerId: ORDER.customerId, total: 19.98 });
          }
          const merge = await http()
            .post('/orders')
            .set('Idempotency-Key', key())
            .set('Content-Type', 'application/merge-patch+json; charset=utf-8')
            .send(JSON.stringify(ORDER))
            .expect(201);
          expect(merge.body.total).toBe(19.98);
        });

        it('refuses a body that is not JSON on PUT and on GET too', async () => {
          const order = await createOrder();
          const put = await http()
            .put(`/orders/${order.id}`)
            .set('Content-Type', 'application/json')
            .send('{"customerId": ');
          expect(put.status).toBe(400);
          expect(put.headers['content-type']).toMatch(PROBLEM);
          expect(put.body.code).toBe('MALFORMED_BODY');
          const get = await http().get('/orders').set('Content-Type', 'text/plain').send('hello');
          expect(get.status).toBe(415);
          expect(get.headers['content-type']).toMatch(PROBLEM);
          expect(get.body.code).toBe('UNSUPPORTED_MEDIA_TYPE');
        });

        it('answers a path that does not decode with 400, and a long id with 404, as problems', async () => {
          const bad = await http().get('/orders/%E0%A4%A');
          expect(bad.status).toBe(400);
          expect(bad.headers['content-type']).toMatch(PROBLEM);
          expect(bad.body).toMatchObject({ status: 400, code: 'VALIDATION_FAILED' });
          const long = await http().get(`/orders/${'x'.repeat(500)}`);
          expect(long.status).toBe(404);
          expect(long.headers['content-type']).toMatch(PROBLEM);
          expect(long.body.code).toBe('ORDER_NOT_FOUND');
        });

        it('routes regardless of a trailing slash and of letter case', async () => {
          const order = await createOrder();
          expect((await http().get(`/orders/${order.id}/`).expect(200)).body).toEqual(order);
          expect((await http().get('/ORDERS').expect(200)).body).toEqual(
            expect.arrayContaining([order]),
          );
        });

        it('answers 404 as a problem for an unknown route', async () => {
          const res = await http().get('/nowhere').expect(404);
          expect(res.headers['content-type']).toMatch(PROBLEM);
          expect(res.body.code).toBe('NOT_FOUND');
        });

        it('answers 400 for an invalid Idempotency-Key', async () => {
          const res = await http()
            .post('/orders')
            .set('Idempotency-Key', 'x'.repeat(256))
            .send(ORDER)
            .expect(400);
          expect(res.body.code).toBe('IDEMPOTENCY_KEY_INVALID');
        });
      });

      describe('operations', () => {
        it(`runs on ${platform}, and adds no X-Powered-By or ETag of its own`, async () => {
          expect(running.app.getHttpAdapter().getType()).toBe(platform);
          const res = await http().get('/orders').expect(200);
          expect(res.headers['x-powered-by']).toBeUndefined();
          expect(res.headers.etag).toBeUndefined();
        });

        it('reports the database and the idempotency store as up on GET /health', async () => {
          const res = await http().get('/health').expect(200);
          expect(res.body.status).toBe('ok');
          expect(res.body.details.database.status).toBe('up');
          expect(res.body.details.idempotencyStore.status).toBe('up');
        });

        it('serves Swagger UI at /docs and the OpenAPI document at /docs-json', async () => {
          const ui = await http().get('/docs').expect(200);
          expect(ui.headers['content-type']).toMatch(/text\/html/);
          // The page's own files load: the UI works, not just its HTML.
          const files = [...ui.text.matchAll(/(?:src|href)=["']\.\/docs\/([\w.-]+)["']/g)].map(
            (match) => match[1],
          );
          expect(files).toEqual(
            expect.arrayContaining([
              'swagger-ui.css',
              'swagger-ui-bundle.js',
              'swagger-ui-standalone-preset.js',
              'swagger-ui-init.js',
            ]),
          );
          for (const file of files) {
            const asset = await http().get(`/docs/${file}`).expect(200);
            expect(asset.headers['content-type']).toMatch(/css|javascript|png/);
            expect(Number(asset.headers['content-length'])).toBeGreaterThan(0);
          }
          const init = await http().get('/docs/swagger-ui-init.js').expect(200);
          expect(init.text).toContain('"/orders/{id}"');
          for (const path of ['/docs/nope.js', '/docs/LICENSE']) {
            const missing = await http().get(path).expect(404);
            expect(missing.headers['content-type']).toMatch(PROBLEM);
            expect(missing.body.code).toBe('NOT_FOUND');
          }
          const doc = await http().get('/docs-json').expect(200);
          expect(Object.keys(doc.body.paths)).toEqual(
            expect.arrayContaining([
              '/orders',
              '/orders/{id}',
              '/payments',
              '/payments/{id}',
              '/emails',
              '/health',
            ]),
          );
          type Operation = { parameters?: { name: string; in: string }[]; responses: object };
          const operation = (path: string, verb: string): Operation => doc.body.paths[path][verb];
          const documentsKey = (op: Operation) =>
            op.parameters?.some((p) => p.in === 'header' && p.name === 'Idempotency-Key') ?? false;
          for (const path of ['/orders', '/payments', '/emails']) {
            expect(documentsKey(operation(path, 'post'))).toBe(true);
            expect(Object.keys(operation(path, 'post').responses)).toEqual(
              expect.arrayContaining(['400', '409', '422']),
            );
          }
          expect(documentsKey(operation('/orders', 'get'))).toBe(false);
          expect(documentsKey(operation('/orders/{id}', 'put'))).toBe(false);
        });
      });
    },
  );
}
