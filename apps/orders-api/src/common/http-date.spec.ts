import { httpDate, modifiedSince, parseHttpDate } from './http-date';

describe('HTTP-dates (RFC 9110 5.6.7)', () => {
  const time = Date.UTC(1994, 10, 6, 8, 49, 37);

  it('formats a date as IMF-fixdate, without its milliseconds', () => {
    expect(httpDate(new Date(time + 999))).toBe('Sun, 06 Nov 1994 08:49:37 GMT');
  });

  it.each([
    ['IMF-fixdate', 'Sun, 06 Nov 1994 08:49:37 GMT'],
    ['RFC 850', 'Sunday, 06-Nov-94 08:49:37 GMT'],
    ['asctime', 'Sun Nov  6 08:49:37 1994'],
  ])('reads the %s format', (_format, value) => {
    expect(parseHttpDate(value)).toBe(time);
  });

  it.each([
    ['nothing', undefined],
    ['an ISO date', '1994-11-06T08:49:37Z'],
    ['a list of dates', 'Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT'],
    ['another zone', 'Sun, 06 Nov 1994 08:49:37 +0100'],
    ['an impossible day', 'Tue, 31 Feb 1994 08:49:37 GMT'],
    ['an impossible time', 'Sun, 06 Nov 1994 24:00:00 GMT'],
    ['lower case', 'sun, 06 nov 1994 08:49:37 gmt'],
    ['a word', 'yesterday'],
  ])('refuses %s', (_case, value) => {
    expect(parseHttpDate(value)).toBeUndefined();
  });

  it('reads a two-digit year more than 50 years ahead as the previous century', () => {
    const year = new Date().getUTCFullYear();
    const ahead = String((year + 60) % 100).padStart(2, '0');
    const parsed = new Date(parseHttpDate(`Monday, 01-Jan-${ahead} 00:00:00 GMT`)!);
    expect(parsed.getUTCFullYear()).toBe(year + 60 - 100);
  });

  it('compares in whole seconds: a change within the second of the date is not after it', () => {
    expect(modifiedSince(new Date(time + 999), time)).toBe(false);
    expect(modifiedSince(new Date(time + 1000), time)).toBe(true);
    expect(modifiedSince(new Date(time - 1), time)).toBe(false);
  });
});
