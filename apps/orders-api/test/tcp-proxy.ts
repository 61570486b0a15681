import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

/**
 * A TCP proxy on a free loopback port to one target, that can stop forwarding either direction:
 * what a client sends after {@link holdUpstream} never reaches the target (an AMQP ack stays in
 * the proxy), what the target sends after {@link holdDownstream} never reaches the client (a
 * publisher confirm stays in the proxy). Held bytes are dropped with the connections.
 */
export class TcpProxy {
  private readonly pairs = new Set<{ client: Socket; upstream: Socket }>();
  private upstreamHeld = false;
  private downstreamHeld = false;
  /** Bytes clients sent that went through to the target since the last hold or release. */
  forwardedUpstream = 0;

  private readonly server: Server;
  /** The port clients connect to. */
  port = 0;

  private constructor(target: { host: string; port: number }) {
    this.server = createServer((client) => this.accept(client, target));
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const proxy = new TcpProxy(target);
    proxy.port = await new Promise<number>((resolve, reject) => {
      proxy.server.once('error', reject);
      proxy.server.listen(0, '127.0.0.1', () =>
        resolve((proxy.server.address() as AddressInfo).port),
      );
    });
    return proxy;
  }

  /** Stops forwarding what clients send, on every connection, current and new. */
  holdUpstream(): void {
    this.upstreamHeld = true;
    this.forwardedUpstream = 0;
  }

  /** Stops forwarding what the target sends, on every connection, current and new. */
  holdDownstream(): void {
    this.downstreamHeld = true;
    this.forwardedUpstream = 0;
  }

  /** Forwards both ways again (held bytes are gone). */
  release(): void {
    this.upstreamHeld = false;
    this.downstreamHeld = false;
  }

  /** Cuts every connection, as a dead peer would; new ones are accepted. */
  dropAll(): void {
    for (const { client, upstream } of this.pairs) {
      client.destroy();
      upstream.destroy();
    }
    this.pairs.clear();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: Socket, target: { host: string; port: number }): void {
    const upstream = connect(target);
    const pair = { client, upstream };
    this.pairs.add(pair);
    client.on('data', (chunk: Buffer) => {
      if (!this.upstreamHeld) {
        this.forwardedUpstream += chunk.length;
        upstream.write(chunk);
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!this.downstreamHeld) {
        client.write(chunk);
      }
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  }
}
