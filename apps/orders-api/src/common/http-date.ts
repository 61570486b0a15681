const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = MONTHS.join('|');
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';

/** `Sun, 06 Nov 1994 08:49:37 GMT`, the preferred format (RFC 9110 5.6.7). */
const IMF_FIXDATE = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\\d{2}) (${MONTH}) (\\d{4}) ${TIME} GMT$`,
);
/** `Sunday, 06-Nov-94 08:49:37 GMT`, obsolete but still to be accepted. */
const RFC_850 = new RegExp(
  `^(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\\d{2})-(${MONTH})-(\\d{2}) ${TIME} GMT$`,
);
/** `Sun Nov  6 08:49:37 1994` (C's asctime), obsolete but still to be accepted. */
const ASCTIME = new RegExp(
  `^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (${MONTH}) ( \\d|\\d{2}) ${TIME} (\\d{4})$`,
);

/** `date` as an HTTP-date (IMF-fixdate); its milliseconds are dropped, as the format has none. */
export function httpDate(date: Date): string {
  return date.toUTCString();
}

/**
 * The time of an HTTP-date in milliseconds, or `undefined` when `value` is not one (RFC 9110
 * 5.6.7: IMF-fixdate, RFC 850 or asctime). A list of dates, another format, or an impossible date
 * such as 31 Feb is not one: a conditional header holding it is ignored.
 */
export function parseHttpDate(value: string | undefined): number | undefined {
  if (value === undefined) {
    return undefined;
  }
  let day: string, month: string, year: number, hour: string, minute: string, second: string;
  let match: RegExpExecArray | null;
  if ((match = IMF_FIXDATE.exec(value))) {
    [, day, month, , hour, minute, second] = match;
    year = Number(match[3]);
  } else if ((match = RFC_850.exec(value))) {
    [, day, month, , hour, minute, second] = match;
    year = twoDigitYear(Number(match[3]));
  } else if ((match = ASCTIME.exec(value))) {
    [, month, day, hour, minute, second] = match;
    year = Number(match[6]);
  } else {
    return undefined;
  }
  const fields = [year, MONTHS.indexOf(month), Number(day), Number(hour), Number(minute)] as const;
  const time = Date.UTC(...fields, Number(second));
  const date = new Date(time);
  const valid =
    date.getUTCFullYear() === fields[0] &&
    date.getUTCMonth() === fields[1] &&
    date.getUTCDate() === fields[2] &&
    date.getUTCHours() === fields[3] &&
    date.getUTCMinutes() === fields[4] &&
    date.getUTCSeconds() === Number(second);
  return valid ? time : undefined;
}

/**
 * Whether a resource last modified at `lastModified` changed after the HTTP-date `since`. Compared
 * in whole seconds, the precision of the `Last-Modified` the client got (RFC 9110 13.1.3, 13.1.4):
 * a resource changed at 10:00:00.700 has not changed since "10:00:00".
 */
export function modifiedSince(lastModified: Date, since: number): boolean {
  return Math.floor(lastModified.getTime() / 1000) * 1000 > since;
}

/** RFC 9110 5.6.7: a two-digit year more than 50 years ahead is in the previous century. */
function twoDigitYear(yy: number): number {
  const now = new Date().getUTCFullYear();
  let year = Math.floor(now / 100) * 100 + yy;
  if (year > now + 50) {
    year -= 100;
  }
  return year;
}
