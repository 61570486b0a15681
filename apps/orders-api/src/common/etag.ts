/** A strong entity tag for a resource version. */
export function entityTag(version: number): string {
  return `"${version}"`;
}

/**
 * Whether a conditional header (`If-Match` / `If-None-Match`, RFC 9110 13.1) lists `etag` or `*`.
 * `weak` compares as If-None-Match does (ignoring `W/`); If-Match needs a strong match.
 */
export function matchesEntityTag(header: string, etag: string, weak: boolean): boolean {
  const tags = header.split(',').map((tag) => tag.trim());
  return tags.some((tag) => {
    if (tag === '*') {
      return true;
    }
    if (tag.startsWith('W/')) {
      return weak && tag.slice(2) === etag;
    }
    return tag === etag;
  });
}
