import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { Logger } from '@nestjs/common';
import {
  IdempotencyChannel,
  type IdempotencyExecutedEvent,
  type IdempotencyLeaseLostEvent,
  type IdempotencyRejectedEvent,
  type IdempotencyReplayedEvent,
  type IdempotencyStoreErrorEvent,
} from '../engine/idempotency.events';

/** One listener per channel of the engine; each is optional. */
export interface IdempotencyEventHandlers {
  executed?(event: IdempotencyExecutedEvent): void;
  replayed?(event: IdempotencyReplayedEvent): void;
  rejected?(event: IdempotencyRejectedEvent): void;
  leaseLost?(event: IdempotencyLeaseLostEvent): void;
  storeError?(event: IdempotencyStoreErrorEvent): void;
}

const NAMES = {
  executed: IdempotencyChannel.Executed,
  replayed: IdempotencyChannel.Replayed,
  rejected: IdempotencyChannel.Rejected,
  leaseLost: IdempotencyChannel.LeaseLost,
  storeError: IdempotencyChannel.StoreError,
} as const satisfies Record<keyof IdempotencyEventHandlers, string>;

/**
 * Subscribes `handlers` to the engine's diagnostics channels; the returned function unsubscribes
 * them (calling it again does nothing). A listener runs synchronously in the publisher's call, so
 * one that throws would fail nothing but would surface as an uncaught exception: its errors are
 * caught here and logged once, as `name`.
 */
export function subscribeToIdempotencyEvents(
  name: string,
  handlers: IdempotencyEventHandlers,
): () => void {
  const logger = new Logger(name);
  let warned = false;
  const listeners: [string, (message: unknown) => void][] = [];
  for (const [handler, channel] of Object.entries(NAMES) as [
    keyof IdempotencyEventHandlers,
    string,
  ][]) {
    const handle = handlers[handler] as ((event: unknown) => void) | undefined;
    if (!handle) {
      continue;
    }
    const listener = (message: unknown) => {
      try {
        handle.call(handlers, message);
      } catch (error) {
        if (!warned) {
          warned = true;
          logger.warn(
            `An event of ${channel} could not be recorded (later failures are not logged): ${String(error)}`,
          );
        }
      }
    };
    subscribe(channel, listener);
    listeners.push([channel, listener]);
  }
  return () => {
    for (const [channel, listener] of listeners.splice(0)) {
      unsubscribe(channel, listener);
    }
  };
}
