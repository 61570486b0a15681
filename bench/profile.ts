/**
 * `npm run bench:profile -- <file.cpuprofile> [requests]`: a V8 CPU profile (from `BENCH_PROFILE`
 * or `node --cpu-prof`) summed by package, then its hottest functions. Self time is charged to
 * the package whose file the function is in: `node_modules/<package>` (scoped names kept whole),
 * `nestjs-idempotency` for `libs/idempotency`, `bench` for the benchmark's own apps, `node:` for
 * Node's internals (JavaScript), and V8's pseudo-nodes as they are named: `(program)` is native
 * work outside JavaScript (syscalls, libuv, the TCP stack on loopback), `(garbage collector)`,
 * `(idle)` the time spent waiting. With `requests`, each figure is also given per request.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** The package a script belongs to, from its URL. */
export function packageOf(url: string, functionName: string): string {
  if (!url) {
    return functionName.startsWith('(') ? functionName : '(native)';
  }
  if (url.startsWith('node:')) {
    return 'node:';
  }
  const inModules = url.lastIndexOf('node_modules/');
  if (inModules >= 0) {
    const rest = url.slice(inModules + 'node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.includes('/libs/idempotency/')) {
    return 'nestjs-idempotency';
  }
  if (url.includes('/bench/')) {
    return 'bench';
  }
  return url;
}

export interface ProfileSummary {
  /** Profiled time, in milliseconds, idle included. */
  totalMs: number;
  /** Self time by package, in milliseconds, largest first. */
  byPackage: [string, number][];
  /** Self time by function (`name package:line`), in milliseconds, largest first. */
  byFunction: [string, number][];
}

/** Sums a profile's self time by package and by function. */
export function summarizeProfile(profile: CpuProfile): ProfileSummary {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < profile.samples.length; i++) {
    // A sample's delta is the time until the next one: charge it to the next sample's node, as
    // Chrome DevTools does.
    const delta = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + delta);
  }
  const byPackage = new Map<string, number>();
  const byFunction = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const { callFrame } = nodes.get(id)!;
    const pkg = packageOf(callFrame.url, callFrame.functionName);
    byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + us / 1000);
    const name = `${callFrame.functionName || '(anonymous)'} ${pkg}${callFrame.url ? `:${callFrame.lineNumber + 1}` : ''}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + us / 1000);
  }
  const sorted = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]);
  return {
    totalMs: (profile.endTime - profile.startTime) / 1000,
    byPackage: sorted(byPackage),
    byFunction: sorted(byFunction),
  };
}

function main(): void {
  const [file, requestsArg] = process.argv.slice(2);
  if (!file) {
    console.error('usage: npm run bench:profile -- <file.cpuprofile> [requests] [top]');
    process.exit(2);
  }
  const requests = Number(requestsArg ?? 0);
  const top = Number(process.argv[4] ?? 25);
  const summary = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
  const busyMs = summary.byPackage
    .filter(([pkg]) => pkg !== '(idle)')
    .reduce((sum, [, ms]) => sum + ms, 0);
  const row = (name: string, ms: number) =>
    `${ms.toFixed(0).padStart(8)} ms ${((100 * ms) / busyMs).toFixed(1).padStart(5)}%` +
    (requests > 0 ? `${((ms * 1000) / requests).toFixed(1).padStart(8)} µs/req` : '') +
    `  ${name}`;
  console.log(
    `${file}: ${summary.totalMs.toFixed(0)} ms profiled, ${busyMs.toFixed(0)} ms busy` +
      (requests > 0 ? ` (${((busyMs * 1000) / requests).toFixed(1)} µs per request)` : ''),
  );
  console.log('\nby package (self time; % of busy time):');
  for (const [name, ms] of summary.byPackage) {
    console.log(row(name, ms));
  }
  console.log(`\ntop ${top} functions:`);
  for (const [name, ms] of summary.byFunction
    .filter(([n]) => !n.startsWith('(idle)'))
    .slice(0, top)) {
    console.log(row(name, ms));
  }
}

if (require.main === module) {
  main();
}
