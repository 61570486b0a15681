import { connect } from 'node:net';

/**
 * HTTP/1.x spoken over a bare TCP socket, for requests an HTTP client refuses to send: control
 * bytes in header values, a header twice, a wrong Content-Length, pipelining, odd versions.
 */

/** One request to write as raw bytes. Header values are byte strings (latin1), sent as they are. */
export interface RawRequest {
  method?: string;
  path?: string;
  /** The request line's version, default `HTTP/1.1`. */
  version?: string;
  /** In order, duplicates kept; `Host` is not added (HTTP/1.1 requires it: add it yourself). */
  headers: [name: string, value: string][];
  body?: Buffer | string;
  /** `auto` (default) adds the body's length; `none` sends no Content-Length header. */
  contentLength?: 'auto' | 'none';
}

/** Encodes `request` byte for byte. */
export function encodeRequest(request: RawRequest): Buffer {
  const body =
    request.body === undefined
      ? Buffer.alloc(0)
      : Buffer.isBuffer(request.body)
        ? request.body
        : Buffer.from(request.body);
  const lines = [
    `${request.method ?? 'POST'} ${request.path ?? '/'} ${request.version ?? 'HTTP/1.1'}`,
    ...request.headers.map(([name, value]) => `${name}: ${value}`),
  ];
  if ((request.contentLength ?? 'auto') === 'auto') {
    lines.push(`Content-Length: ${body.length}`);
  }
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), body]);
}

/** One response read off the socket. */
export interface RawResponse {
  status: number;
  /** Lower-case names; the last value wins. */
  headers: Record<string, string>;
  body: Buffer;
}

/** What one connection saw. */
export interface Exchange {
  /** Final responses in order (interim 1xx answers left out). */
  responses: RawResponse[];
  /** The socket error, if any (`ECONNRESET`, `EPIPE`), or `timeout`. */
  error?: string;
}

/** Options of {@link exchange}. */
export interface ExchangeOptions {
  /** Half-close the socket once everything is written, as a client that sends no more would. */
  halfClose?: boolean;
  /** Gives up (error `timeout`) after this long without the server closing the connection. */
  timeoutMs?: number;
}

/**
 * Writes `bytes` on a new connection to 127.0.0.1:`port` and reads until the server closes it,
 * then parses every response. The last request should carry `Connection: close` (or be one the
 * server refuses), so that the server ends the connection.
 */
export function exchange(
  port: number,
  bytes: Buffer,
  { halfClose = false, timeoutMs = 20_000 }: ExchangeOptions = {},
): Promise<Exchange> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let error: string | undefined;
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    // A server answering 413 or 400 before reading the whole body may reset the connection while
    // the body is still being written: the answer read before that is kept.
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error ??= e.code ?? e.message;
    });
    socket.setTimeout(timeoutMs, () => {
      error = 'timeout';
      socket.destroy();
    });
    socket.on('close', () =>
      resolve({ responses: parseResponses(Buffer.concat(chunks)), ...(error ? { error } : {}) }),
    );
    socket.write(bytes, () => {
      if (halfClose) {
        socket.end();
      }
    });
  });
}

/** Parses consecutive HTTP/1.x responses; a truncated last one is dropped. */
export function parseResponses(data: Buffer): RawResponse[] {
  const responses: RawResponse[] = [];
  let offset = 0;
  while (offset < data.length) {
    const headEnd = data.indexOf('\r\n\r\n', offset);
    if (headEnd < 0) {
      break;
    }
    const [statusLine, ...lines] = data.subarray(offset, headEnd).toString('latin1').split('\r\n');
    const status = Number(/^HTTP\/\d\.\d (\d{3})/.exec(statusLine)?.[1]);
    if (!Number.isInteger(status)) {
      throw new Error(`Not an HTTP response: ${JSON.stringify(statusLine.slice(0, 100))}`);
    }
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    let start = headEnd + 4;
    if (status >= 100 && status < 200) {
      offset = start;
      continue;
    }
    let body: Buffer;
    if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
      const parts: Buffer[] = [];
      for (;;) {
        const sizeEnd = data.indexOf('\r\n', start);
        if (sizeEnd < 0) {
          return responses;
        }
        const size = parseInt(data.subarray(start, sizeEnd).toString('latin1'), 16);
        start = sizeEnd + 2;
        if (size === 0) {
          const trailerEnd = data.indexOf('\r\n', start);
          start = trailerEnd < 0 ? data.length : trailerEnd + 2;
          break;
        }
        parts.push(data.subarray(start, start + size));
        start += size + 2;
      }
      body = Buffer.concat(parts);
      offset = start;
    } else if (headers['content-length'] !== undefined) {
      const length = Number(headers['content-length']);
      if (start + length > data.length) {
        break;
      }
      body = data.subarray(start, start + length);
      offset = start + length;
    } else {
      body = data.subarray(start);
      offset = data.length;
    }
    responses.push({ status, headers, body });
  }
  return responses;
}
