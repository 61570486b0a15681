import { toMs } from './duration';

describe('toMs', () => {
  it.each([
    [1500, 1500],
    ['30s', 30_000],
    ['24h', 86_400_000],
    ['1h', 3_600_000],
    ['250ms', 250],
    ['2 days', 172_800_000],
  ])('reads %j as %d ms', (value, ms) => {
    expect(toMs(value, 'ttl')).toBe(ms);
  });

  it.each([0, -1, NaN, Infinity, 'soon', '', '-5s'])('refuses %j, naming the option', (value) => {
    expect(() => toMs(value, 'lockTtl')).toThrow('"lockTtl"');
  });
});
