import { createHash } from 'node:crypto';

/**
 * The checkout page: one HTML document with its style and script inline, so the sample needs no
 * front-end build. It pays an order with a key the server issued (POST /idempotency-keys), kept in
 * localStorage per order, so that a double click, a reload, a lost response or a second tab all
 * send the same key to `POST /checkout/payments`, and the server answers them all with the one
 * payment.
 */
const STYLE = `
:root { color-scheme: light; --ink: #1d2433; --muted: #5d6679; --line: #d9dee8; --accent: #3257d6;
  --ok: #137a43; --ok-bg: #e8f6ee; --wait: #8a5a00; --wait-bg: #fff6e0; --bad: #b3261e; --bad-bg: #fdecea; }
* { box-sizing: border-box; }
body { margin: 0; min-height: 100vh; display: grid; justify-items: center; align-items: start;
  padding-top: 8vh; background: #f3f5f9;
  font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
main { width: min(28rem, calc(100vw - 2rem)); background: #fff; border: 1px solid var(--line);
  border-radius: 12px; padding: 1.75rem; box-shadow: 0 8px 24px rgba(29, 36, 51, .06); }
h1 { font-size: 1.4rem; margin: 0 0 1.25rem; }
label { display: block; font-weight: 600; margin-bottom: .35rem; }
select, button { font: inherit; width: 100%; border-radius: 8px; }
select { padding: .6rem .7rem; border: 1px solid var(--line); background: #fff; }
.summary { margin: 1rem 0; padding: .75rem 1rem; background: #f7f8fb; border-radius: 8px; }
.summary table { width: 100%; border-collapse: collapse; font-size: .95rem; }
.summary td { padding: .15rem 0; } .summary td:last-child { text-align: right; }
.summary tr.total td { border-top: 1px solid var(--line); padding-top: .4rem; font-weight: 700; }
button.pay { padding: .8rem; border: 0; background: var(--accent); color: #fff; font-weight: 600;
  cursor: pointer; } button.pay:disabled { background: #9aa6c4; cursor: default; }
button.link { margin-top: .75rem; padding: .3rem; border: 0; background: none; color: var(--accent);
  cursor: pointer; text-decoration: underline; }
.status { margin-top: 1.25rem; padding: .85rem 1rem; border-radius: 8px; display: none; }
.status[data-state] { display: block; }
.status[data-state="paid"] { background: var(--ok-bg); color: var(--ok); }
.status[data-state="pending"] { background: var(--wait-bg); color: var(--wait); }
.status[data-state="error"] { background: var(--bad-bg); color: var(--bad); }
.status strong { display: block; font-size: 1.05rem; }
.status code { font-size: .85rem; word-break: break-all; color: var(--ink); }
.hint { color: var(--muted); font-size: .85rem; margin: .75rem 0 0; }
`;

const SCRIPT = `
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $('checkout'), select = $('order'), pay = $('pay'), status = $('status');
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const money = (n) => new Intl.NumberFormat('en', { style: 'currency', currency: 'EUR' }).format(n);
  let orders = [];
  let paying = false;

  // One entry per order: { key, expiresAt, paymentId? }. localStorage is shared by the tabs.
  const load = (orderId) => { try { return JSON.parse(localStorage.getItem('checkout:' + orderId)); } catch { return null; } };
  const save = (orderId, entry) => localStorage.setItem('checkout:' + orderId, JSON.stringify(entry));
  const forget = (orderId) => localStorage.removeItem('checkout:' + orderId);

  function show(state, title, detail, paymentId) {
    status.dataset.state = state;
    status.replaceChildren();
    const strong = document.createElement('strong');
    strong.textContent = title;
    status.append(strong);
    if (detail) status.append(document.createTextNode(detail));
    if (paymentId) {
      const line = document.createElement('div');
      line.append('Payment ');
      const code = document.createElement('code');
      code.dataset.paymentId = paymentId;
      code.textContent = paymentId;
      line.append(code);
      status.append(line);
    }
  }

  async function keyFor(orderId) {
    const saved = load(orderId);
    if (saved && Date.parse(saved.expiresAt) > Date.now() + 60000) return saved;
    const res = await fetch('/idempotency-keys', { method: 'POST' });
    if (!res.ok) throw new Error('the server issued no key (' + res.status + ')');
    const { key, expiresAt } = await res.json();
    const entry = { key, expiresAt };
    save(orderId, entry);
    return entry;
  }

  function paid(order, payment, already) {
    const entry = load(order.id) || {};
    save(order.id, { ...entry, paymentId: payment.id });
    order.status = 'paid';
    pay.disabled = true;
    pay.textContent = 'Paid';
    show('paid', already ? 'This order is already paid' : 'Payment received',
      ' ' + money(payment.amount) + ' for order ' + order.id.slice(0, 8) + '. You will not be charged again, even if you reload or press Pay again.',
      payment.id);
  }

  async function existingPayment(order) {
    const res = await fetch('/payments?orderId=' + encodeURIComponent(order.id));
    const payments = res.ok ? await res.json() : [];
    return payments.find((p) => p.status === 'succeeded') || payments[0];
  }

  function render() {
    const order = orders.find((o) => o.id === select.value);
    const summary = $('summary');
    summary.replaceChildren();
    if (!order) { pay.disabled = true; return; }
    const table = document.createElement('table');
    for (const item of order.items) {
      const row = table.insertRow();
      row.insertCell().textContent = item.quantity + ' × ' + item.sku;
      row.insertCell().textContent = money(item.quantity * item.unitPrice);
    }
    const total = table.insertRow();
    total.className = 'total';
    total.insertCell().textContent = 'Total';
    total.insertCell().textContent = money(order.total);
    summary.append(table);
    status.removeAttribute('data-state');
    pay.textContent = 'Pay ' + money(order.total);
    pay.disabled = order.status === 'paid';
    if (order.status === 'paid') {
      existingPayment(order).then((p) => p && paid(order, p, true));
      return;
    }
    keyFor(order.id).then((entry) => {
      // Submitted before a reload and never answered: finish it with the same key.
      if (entry.submitted && !entry.paymentId) submit(order);
    }, (error) => show('error', 'Cannot pay right now', ' ' + error.message + '. Reload the page to try again.'));
  }

  async function submit(order) {
    if (paying) return;
    paying = true;
    pay.disabled = true;
    try {
      let entry = await keyFor(order.id);
      let renewed = false;
      save(order.id, { ...entry, submitted: true });
      show('pending', 'Paying…', ' Please keep this page open.');
      for (let attempt = 1; ; attempt++) {
        let res;
        try {
          res = await fetch('/checkout/payments', {
            method: 'POST',
            headers: { 'Content-Type': 'application/json', 'Idempotency-Key': entry.key },
            body: JSON.stringify({ orderId: order.id, amount: order.total }),
          });
        } catch {
          // The request may have reached the server: resend the same key, which cannot charge twice.
          show('pending', 'Connection lost', ' Retrying with the same payment key; you will be charged once.');
          if (!navigator.onLine) await new Promise((resolve) => addEventListener('online', resolve, { once: true }));
          await sleep(Math.min(500 * attempt, 3000));
          continue;
        }
        const body = await res.json().catch(() => ({}));
        if (res.ok) return paid(order, body, false);
        const retryable = res.status === 409 && (body.code === 'IDEMPOTENCY_REQUEST_IN_PROGRESS' || body.code === 'PAYMENT_IN_PROGRESS');
        if (retryable || (res.status >= 502 && res.status <= 504 && attempt < 5)) {
          const seconds = Number(res.headers.get('Retry-After'));
          show('pending', 'Paying…', ' Your payment is being processed.');
          await sleep(Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 1000);
          continue;
        }
        // A key the server no longer takes (issued before it restarted with another secret, or
        // expired) was refused before anything ran: pay with a new one, once.
        if (!renewed && (body.code === 'IDEMPOTENCY_KEY_NOT_ISSUED' || body.code === 'IDEMPOTENCY_KEY_EXPIRED')) {
          renewed = true;
          forget(order.id);
          entry = await keyFor(order.id);
          save(order.id, { ...entry, submitted: true });
          continue;
        }
        // Paid already (under another key, another tab), or this key expired after its payment
        // went through: the order's payment is the answer.
        const payment = await existingPayment(order);
        if (payment && payment.status === 'succeeded') return paid(order, payment, true);
        // Refused, nothing charged: the stored refusal would be replayed to this key, so the next
        // attempt is a new operation with a new key.
        forget(order.id);
        pay.disabled = false;
        return show('error', 'Not paid', ' ' + (body.detail || body.title || 'The payment failed (' + res.status + ').') + ' Nothing was charged.');
      }
    } catch (error) {
      pay.disabled = false;
      show('error', 'Not paid', ' ' + error.message + '. Nothing was charged.');
    } finally {
      paying = false;
    }
  }

  async function loadOrders(selectId) {
    const res = await fetch('/orders');
    orders = res.ok ? await res.json() : [];
    select.replaceChildren();
    for (const order of orders) {
      const option = document.createElement('option');
      option.value = order.id;
      option.textContent = order.customerId + ' — ' + money(order.total) + (order.status === 'paid' ? ' (paid)' : '');
      select.append(option);
    }
    const wanted = selectId || new URLSearchParams(location.search).get('order');
    if (wanted && orders.some((o) => o.id === wanted)) select.value = wanted;
    else { const open = orders.find((o) => o.status !== 'paid'); if (open) select.value = open.id; }
    if (!orders.length) show('pending', 'No orders yet', ' Create a demo order to try the checkout.');
    render();
  }

  select.addEventListener('change', render);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const order = orders.find((o) => o.id === select.value);
    if (order) submit(order);
  });
  $('new-order').addEventListener('click', async () => {
    // Not crypto.randomUUID(): it exists only in secure contexts (https, localhost), and the
    // sample may be opened over plain http from another machine.
    const key = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
    const res = await fetch('/orders', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', 'Idempotency-Key': key },
      body: JSON.stringify({ customerId: 'demo-customer', items: [{ sku: 'MUG-01', quantity: 2, unitPrice: 9.99 }, { sku: 'TEA-25', quantity: 1, unitPrice: 4.5 }] }),
    }).catch(() => null);
    if (!res || !res.ok) return show('error', 'No order created', ' Creating the demo order failed; try again.');
    const order = await res.json();
    await loadOrders(order.id);
  });
  loadOrders();
})();
`;

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text).digest('base64')}'`;

/** The page's Content-Security-Policy: its own inline style and script, and nothing else. */
export const CHECKOUT_CSP = [
  "default-src 'none'",
  `script-src ${sha256(SCRIPT)}`,
  `style-src ${sha256(STYLE)}`,
  "connect-src 'self'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

export const CHECKOUT_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Checkout · orders-api</title>
<style>${STYLE}</style>
</head>
<body>
<main>
  <h1>Checkout</h1>
  <form id="checkout">
    <label for="order">Order</label>
    <select id="order" name="order"></select>
    <div id="summary" class="summary"></div>
    <button id="pay" class="pay" type="submit" disabled>Pay</button>
    <button id="new-order" class="link" type="button">Create a demo order</button>
  </form>
  <section id="status" class="status" role="status" aria-live="polite"></section>
  <p class="hint">Each order is paid with a key the server issued. Pressing Pay twice, reloading, or
  paying from a second tab sends the same key, so the order is charged once.</p>
</main>
<script>${SCRIPT}</script>
</body>
</html>
`;
