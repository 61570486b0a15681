import { Logger } from '@nestjs/common';
import { jest } from '@jest/globals';
import { channels } from '../engine/idempotency.events';
import { subscribeToIdempotencyEvents } from './idempotency-events.subscriber';

const event = { key: null, context: 'http', target: 'POST /x', store: 'S', code: 'C', claimMs: 0 };

describe('subscribeToIdempotencyEvents', () => {
  afterEach(() => jest.restoreAllMocks());

  it('delivers each channel to its handler until unsubscribed', () => {
    const seen: string[] = [];
    const stop = subscribeToIdempotencyEvents('Test', {
      rejected: (e) => seen.push(`rejected ${e.code}`),
      leaseLost: (e) => seen.push(`lease-lost ${e.during}`),
    });
    channels.rejected.publish(event);
    channels.leaseLost.publish({ ...event, during: 'renewal', heldMs: 1 });
    channels.replayed.publish({ ...event, status: 200 });
    stop();
    stop();
    channels.rejected.publish(event);
    expect(seen).toEqual(['rejected C', 'lease-lost renewal']);
  });

  it('never lets a failing handler reach the publisher, and logs the first failure only', () => {
    const warn = jest.spyOn(Logger.prototype, 'warn').mockImplementation(() => undefined);
    const stop = subscribeToIdempotencyEvents('Test', {
      rejected: () => {
        throw new Error('broken metric');
      },
    });
    try {
      expect(() => channels.rejected.publish(event)).not.toThrow();
      expect(() => channels.rejected.publish(event)).not.toThrow();
    } finally {
      stop();
    }
    expect(warn).toHaveBeenCalledTimes(1);
    expect(String(warn.mock.calls[0][0])).toContain('broken metric');
  });
});
