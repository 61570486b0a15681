import { connect } from 'node:net';

/** How to start each service of the machine when it is down. */
const START: Record<string, string> = {
  Redis:
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log',
  PostgreSQL: 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
  MariaDB: 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd',
  RabbitMQ: 'rabbitmq-server -detached',
  NATS: 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log',
  Mosquitto: 'mosquitto -d -c /etc/mosquitto/mosquitto.conf',
};

/** Whether something accepts TCP connections on host:port. */
export function reachable(host: string, port: number, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * `describe` when the server behind `url` is reachable. Otherwise, under CI a thrown error (a
 * missing server is a failure there), elsewhere `describe.skip` and one line saying how to start it.
 */
export async function describeWithServer(
  name: keyof typeof START,
  url: string,
): Promise<jest.Describe> {
  const { hostname, port } = new URL(url);
  if (await reachable(hostname, Number(port))) {
    return describe;
  }
  const message = `${name} is not reachable at ${hostname}:${port}; start it with: ${START[name]}`;
  if (process.env.CI) {
    throw new Error(message);
  }
  console.warn(`skipping the ${name} suites: ${message}`);
  return describe.skip;
}

/** `describe` when every server is reachable (see {@link describeWithServer}). */
export async function describeWithServers(
  ...servers: [Parameters<typeof describeWithServer>[0], string][]
): Promise<jest.Describe> {
  const gates = await Promise.all(servers.map(([name, url]) => describeWithServer(name, url)));
  return gates.every((gate) => gate === describe) ? describe : describe.skip;
}
