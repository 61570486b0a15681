import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type Browser,
  type BrowserContext,
  chromium,
  type Page,
  type Request,
} from 'playwright-core';
import { type AppProcess, REPO_ROOT, startOrdersApi } from './orders-api.process';

/**
 * The checkout page in a real browser (Debian's Chromium driven by playwright-core): whatever the
 * user does (a double click, a reload mid-payment, a connection lost after the request left, two
 * tabs), the order ends with exactly one payment row, and the page shows that payment's id.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Where the screenshots go; each test prints the path of its own. */
const SHOTS = join(REPO_ROOT, 'test-results/checkout');

const describeWithChromium = (() => {
  if (existsSync(CHROMIUM)) {
    return describe;
  }
  const message = `Chromium is not installed at ${CHROMIUM}; install it with: apt-get install -y chromium`;
  if (process.env.CI) {
    throw new Error(message);
  }
  console.warn(`skipping the browser suite: ${message}`);
  return describe.skip;
})();

describeWithChromium('Checkout page in Chromium', () => {
  let dir: string;
  let app: AppProcess;
  let browser: Browser;
  let context: BrowserContext;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'orders-api-checkout-'));
    mkdirSync(SHOTS, { recursive: true });
    // A slow gateway, so that a second click, a reload or a second tab lands mid-payment.
    app = await startOrdersApi({
      env: { DATABASE_URL: join(dir, 'orders.sqlite'), PAYMENT_GATEWAY_LATENCY_MS: '700' },
    });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await app?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    context = await browser.newContext({ viewport: { width: 720, height: 720 } });
  });
  afterEach(() => context.close());

  /** A new unpaid order, created through the API. */
  async function newOrder(): Promise<{ id: string; total: number }> {
    const res = await fetch(`${app.url}/orders`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': crypto.randomUUID() },
      body: JSON.stringify({
        customerId: `browser-${crypto.randomUUID().slice(0, 8)}`,
        items: [{ sku: 'MUG-01', quantity: 2, unitPrice: 9.99 }],
      }),
    });
    expect(res.status).toBe(201);
    return (await res.json()) as { id: string; total: number };
  }

  async function paymentsOf(orderId: string): Promise<{ id: string; status: string }[]> {
    const res = await fetch(`${app.url}/payments?orderId=${orderId}`);
    return (await res.json()) as { id: string; status: string }[];
  }

  async function open(orderId: string, page?: Page): Promise<Page> {
    const tab = page ?? (await context.newPage());
    await tab.goto(`${app.url}/checkout?order=${orderId}`);
    await tab.locator('#pay:not([disabled])').waitFor();
    return tab;
  }

  /** The payment id the page shows once it says the order is paid. */
  async function shownPaymentId(page: Page): Promise<string> {
    await page.locator('#status[data-state="paid"]').waitFor({ timeout: 20_000 });
    return (await page.locator('[data-payment-id]').getAttribute('data-payment-id')) ?? '';
  }

  async function screenshot(page: Page, name: string): Promise<void> {
    const path = join(SHOTS, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    console.log(`screenshot: ${path}`);
  }

  /** The POST /payments requests the page sent, with their key and how each was answered. */
  function watchPayments(page: Page) {
    type Sent = { key: string | null; status?: number; replayed?: string | null };
    const sent: Sent[] = [];
    const byRequest = new Map<Request, Sent>();
    page.on('request', (request) => {
      if (request.method() === 'POST' && request.url().endsWith('/checkout/payments')) {
        const entry: Sent = { key: request.headers()['idempotency-key'] ?? null };
        sent.push(entry);
        byRequest.set(request, entry);
      }
    });
    page.on('response', (response) => {
      const entry = byRequest.get(response.request());
      if (entry) {
        entry.status = response.status();
        entry.replayed = response.headers()['idempotent-replayed'] ?? null;
      }
    });
    return sent;
  }

  it('a newcomer creates a demo order on the page and double-clicks Pay: one payment', async () => {
    // Served from a plain http origin other than localhost, as when the sample runs on another
    // machine: not a secure context, so browser APIs such as crypto.randomUUID() are missing.
    const origin = 'http://shop.test';
    await context.route(`${origin}/**`, async (route) => {
      const response = await route.fetch({ url: route.request().url().replace(origin, app.url) });
      await route.fulfill({ response });
    });
    const page = await context.newPage();
    const sent = watchPayments(page);
    await page.goto(`${origin}/checkout`);
    await page.locator('#new-order').click();
    await page.locator('#pay:not([disabled])', { hasText: 'Pay' }).waitFor();
    const orderId = await page.locator('#order').inputValue();
    expect(await paymentsOf(orderId)).toEqual([]);
    await page.locator('#pay').dblclick();
    const shown = await shownPaymentId(page);
    await screenshot(page, 'newcomer');

    expect(await page.evaluate('isSecureContext')).toBe(false);
    const payments = await paymentsOf(orderId);
    expect(payments).toEqual([expect.objectContaining({ id: shown, status: 'succeeded' })]);
    expect(new Set(sent.map((s) => s.key)).size).toBe(1);
  }, 60_000);

  it('a double click on Pay charges once and shows that payment', async () => {
    const order = await newOrder();
    const page = await open(order.id);
    const sent = watchPayments(page);
    await page.locator('#pay').dblclick();
    const shown = await shownPaymentId(page);
    await screenshot(page, 'double-click');

    const payments = await paymentsOf(order.id);
    expect(payments).toEqual([expect.objectContaining({ id: shown, status: 'succeeded' })]);
    expect(new Set(sent.map((s) => s.key)).size).toBe(1);
    expect(await page.locator('#pay').isDisabled()).toBe(true);
  }, 60_000);

  it('a reload while the payment is under way resumes it with the same key: one payment', async () => {
    const order = await newOrder();
    const page = await open(order.id);
    const keys: string[] = [];
    page.on('request', (request) => {
      if (request.method() === 'POST' && request.url().endsWith('/checkout/payments')) {
        keys.push(request.headers()['idempotency-key'] ?? '');
      }
    });
    const firstSent = page.waitForRequest(
      (request) => request.method() === 'POST' && request.url().endsWith('/checkout/payments'),
    );
    await page.locator('#pay').click();
    await firstSent;
    // The user reloads (or the browser resubmits the form) before the answer came.
    await page.reload();
    const shown = await shownPaymentId(page);
    await screenshot(page, 'reload');

    const payments = await paymentsOf(order.id);
    expect(payments).toEqual([expect.objectContaining({ id: shown, status: 'succeeded' })]);
    expect(keys.length).toBeGreaterThanOrEqual(2);
    expect(new Set(keys).size).toBe(1);
  }, 60_000);

  it('the connection lost after the request left, then back: the retry replays the payment', async () => {
    const order = await newOrder();
    const page = await open(order.id);
    const sent = watchPayments(page);
    let dropped = false;
    await page.route('**/checkout/payments', async (route) => {
      if (route.request().method() !== 'POST' || dropped) {
        return route.continue();
      }
      dropped = true;
      // The server gets the request and charges; its answer never reaches the page.
      const answer = await route.fetch();
      expect(answer.status()).toBe(201);
      await context.setOffline(true);
      await route.abort('internetdisconnected');
      setTimeout(() => void context.setOffline(false), 1_000);
    });
    await page.locator('#pay').click();
    await page.locator('#status[data-state="pending"]', { hasText: 'Connection lost' }).waitFor();
    const shown = await shownPaymentId(page);
    await screenshot(page, 'network-drop');

    const payments = await paymentsOf(order.id);
    expect(payments).toEqual([expect.objectContaining({ id: shown, status: 'succeeded' })]);
    expect(new Set(sent.map((s) => s.key)).size).toBe(1);
    // The answer the page finally got is the stored one.
    expect(sent.at(-1)).toMatchObject({ status: 201, replayed: 'true' });
  }, 60_000);

  it('two tabs paying the same order: one payment, and both tabs show it', async () => {
    const order = await newOrder();
    const first = await open(order.id);
    const second = await open(order.id);
    const sent = [first, second].map(watchPayments);
    await Promise.all([first.locator('#pay').click(), second.locator('#pay').click()]);
    const [a, b] = await Promise.all([shownPaymentId(first), shownPaymentId(second)]);
    await screenshot(second, 'two-tabs');

    expect(b).toBe(a);
    // Both tabs paid with the order's one key; the later one was told to wait (409, Retry-After)
    // and retried by itself until it got the stored payment.
    const all = sent.flat();
    expect(new Set(all.map((s) => s.key)).size).toBe(1);
    expect(all.map((s) => s.status)).toContain(409);
    expect(all.filter((s) => s.status === 201)).toHaveLength(2);
    const payments = await paymentsOf(order.id);
    expect(payments).toEqual([expect.objectContaining({ id: a, status: 'succeeded' })]);
  }, 60_000);

  it('a saved key the server no longer takes (issued before a restart) is replaced: one payment', async () => {
    const order = await newOrder();
    const page = await open(order.id);
    const sent = watchPayments(page);
    const entry = `checkout:${order.id}`;
    await page.waitForFunction(`localStorage.getItem(${JSON.stringify(entry)}) !== null`);
    // `npm start` signs with a random secret per process: to the restarted server, the key the
    // page kept from the previous one is a key whose signature does not verify.
    await page.evaluate(`(() => {
      const saved = JSON.parse(localStorage.getItem(${JSON.stringify(entry)}));
      const parts = saved.key.split('.');
      parts[3] = (parts[3][0] === 'A' ? 'B' : 'A') + parts[3].slice(1);
      localStorage.setItem(${JSON.stringify(entry)}, JSON.stringify({ ...saved, key: parts.join('.') }));
    })()`);
    await page.locator('#pay').click();
    const shown = await shownPaymentId(page);
    await screenshot(page, 'key-replaced');

    const payments = await paymentsOf(order.id);
    expect(payments).toEqual([expect.objectContaining({ id: shown, status: 'succeeded' })]);
    // Refused 400 (nothing ran), then paid with a new key the page asked for by itself.
    expect(sent.map((s) => s.status)).toEqual([400, 201]);
    expect(new Set(sent.map((s) => s.key)).size).toBe(2);
  }, 60_000);

  it('after a refusal, the next Pay is a new attempt with a new key', async () => {
    const order = await newOrder();
    const page = await open(order.id);
    const sent = watchPayments(page);
    // The order changes after the page showed it: the amount the page sends is refused (422,
    // stored under the key, so that key would get the same refusal forever).
    const changed = await fetch(`${app.url}/orders/${order.id}`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        customerId: 'browser-changed',
        items: [{ sku: 'MUG-01', quantity: 3, unitPrice: 9.99 }],
      }),
    });
    expect(changed.status).toBe(200);
    await page.locator('#pay').click();
    await page.locator('#status[data-state="error"]', { hasText: 'Not paid' }).waitFor();
    expect(await paymentsOf(order.id)).toEqual([]);
    // The user reloads, sees the new total and pays: a new key, so a new attempt, which succeeds.
    await page.reload();
    await page.locator('#pay:not([disabled])').waitFor();
    await page.locator('#pay').click();
    const shown = await shownPaymentId(page);
    await screenshot(page, 'paid-after-refusal');

    const payments = await paymentsOf(order.id);
    expect(payments).toEqual([expect.objectContaining({ id: shown, status: 'succeeded' })]);
    expect(sent.map((s) => s.status)).toEqual([422, 201]);
    expect(new Set(sent.map((s) => s.key)).size).toBe(2);
  }, 60_000);
});
