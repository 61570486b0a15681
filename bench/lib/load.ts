import autocannon from 'autocannon';

/** The request body every scenario sends: small, and the same for every key (replays match it). */
export const BODY = JSON.stringify({ customerId: 'c-1042', amount: 1999, currency: 'EUR' });

export interface LoadResult {
  requests: number;
  durationS: number;
  p50Ms: number;
  p99Ms: number;
  non2xx: number;
  errors: number;
  /** CPU time the server used during the load, in milliseconds (when /proc tells). */
  serverCpuMs?: number;
}

/**
 * Drives `POST /orders` with autocannon for `durationS` seconds (or `amount` requests), each
 * request carrying the key `nextKey()` gives.
 */
export async function load(
  url: string,
  options: { connections: number; durationS?: number; amount?: number; nextKey: () => string },
): Promise<LoadResult> {
  const result = await autocannon({
    url,
    connections: options.connections,
    ...(options.amount ? { amount: options.amount } : { duration: options.durationS ?? 1 }),
    requests: [
      {
        method: 'POST',
        path: '/orders',
        headers: { 'content-type': 'application/json' },
        body: BODY,
        setupRequest: (request) => ({
          ...request,
          headers: { ...request.headers, 'idempotency-key': options.nextKey() },
        }),
      },
    ],
  });
  return {
    requests: result.requests.total,
    durationS: result.duration,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
  };
}

export interface SentSummary {
  sent: number;
  /** 2xx answers without `Idempotent-Replayed`: the handler ran (and wrote its row). */
  executed: number;
  /** 2xx answers with `Idempotent-Replayed: true`. */
  replayed: number;
  failed: number;
}

/** Sends `count` requests, `concurrency` at a time, and says how each was answered. */
export async function send(
  url: string,
  count: number,
  nextKey: () => string,
  concurrency = 4,
): Promise<SentSummary> {
  const summary: SentSummary = { sent: 0, executed: 0, replayed: 0, failed: 0 };
  const worker = async () => {
    while (summary.sent < count) {
      summary.sent++;
      const response = await fetch(`${url}/orders`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': nextKey() },
        body: BODY,
      });
      await response.arrayBuffer();
      if (!response.ok) {
        summary.failed++;
      } else if (response.headers.get('idempotent-replayed') === 'true') {
        summary.replayed++;
      } else {
        summary.executed++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return summary;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
