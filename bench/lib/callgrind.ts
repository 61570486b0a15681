/**
 * Reading a callgrind profile of a Node process: instructions per request, charged to the
 * JavaScript package that caused them. Used by `bench:instructions`.
 *
 * Callgrind counts the instructions each function executed (user space only: the kernel's work
 * for a system call is not in it), and for each call site the instructions of the callee and
 * everything below it. Functions V8 compiled at run time have no symbols; Node's
 * `--perf-basic-prof` writes their addresses to `/tmp/perf-<pid>.map`, which names them here.
 * A native function's own instructions (a V8 builtin such as `StringAdd`, an IC miss in the V8
 * runtime, SHA-256 in OpenSSL, the garbage collector started by an allocation) are charged to its
 * callers in proportion to what each call site cost, up to the first JavaScript function: its
 * package pays. What no JavaScript function called (the event loop, libuv, Node's C++ on
 * `epoll` events, V8's compiler threads) is reported under its own category.
 */
import { readFileSync } from 'node:fs';
import { packageOf } from '../profile';

/** What kind of code a native function is, from its name and the object file it lives in. */
export function categoryOf(name: string, object: string): string {
  if (object === '???') {
    return 'JavaScript';
  }
  if (!object.endsWith('/node')) {
    return object
      .split('/')
      .pop()!
      .replace(/\.so.*/, '');
  }
  if (
    // Not JsonParser or DateParser: those parse data for the program.
    /compiler::|maglev::|baseline::|Maglev|Turbofan|Sparkplug|Deoptimizer|interpreter::|Compiler|CompileTask|v8::internal::(Parser|PreParser|Scanner|Ast|Zone|BytecodeGenerator)/.test(
      name,
    )
  ) {
    return 'V8 compilers';
  }
  if (name.startsWith('Builtins_')) {
    return 'V8 builtins';
  }
  if (
    /Scaveng|Heap|MarkCompact|Sweep|Marking|Evacuat|MemoryAllocator|MemoryChunk|PagedSpace|NewSpace|SemiSpace|Worklist|GlobalHandles|RememberedSet|SlotSet|LargeObjectSpace|FreeList|LocalHeap/.test(
      name,
    )
  ) {
    return 'V8 GC';
  }
  if (/^v8::|v8::internal/.test(name)) {
    return 'V8 runtime';
  }
  if (/sha256|SHA256|EVP_|OPENSSL|ossl_|CRYPTO_/.test(name)) {
    return 'OpenSSL';
  }
  if (/^uv_|^uv__/.test(name)) {
    return 'libuv';
  }
  if (/llhttp/.test(name)) {
    return 'llhttp';
  }
  return 'Node C++';
}

interface JitCode {
  start: number;
  end: number;
  name: string;
  package: string;
}

/** The JavaScript (and regular expression) code of a perf map, in the order V8 wrote it. */
function readPerfMap(file: string): JitCode[] {
  const code: JitCode[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    // `<start> <size> JS:<tier><name> <url>:<line>:<column>`; a later entry may reuse an address.
    const match = /^([0-9a-f]+) ([0-9a-f]+) (JS|RegExp):(\S*) ?(.*)$/.exec(line);
    if (!match) {
      continue;
    }
    const [, start, size, kind, rawName, location] = match;
    const name = rawName.replace(/^[~^*+]/, '') || '(anonymous)';
    const url = location.replace(/:\d+:\d+$/, '');
    code.push({
      start: parseInt(start, 16),
      end: parseInt(start, 16) + parseInt(size, 16),
      name: `${name} ${location.replace(/^.*node_modules\//, '').replace(/^.*\/(libs|bench)\//, '$1/')}`,
      package: kind === 'RegExp' ? '(regular expressions)' : packageOf(url, name),
    });
  }
  return code;
}

export interface InstructionProfile {
  /** Instructions per request, in thousands, V8's compilers and garbage collector left out. */
  total: number;
  /**
   * Per request, in thousands, and not in `total`: V8's compilers (tier-up still going on during
   * the counted requests), and its garbage collector (whether a full collection falls inside
   * a thousand requests is chance: it moves the figure by up to 250 on Express).
   */
  compilers: number;
  gc: number;
  /** Per package (with what it called), per request, in thousands. */
  byPackage: Map<string, number>;
  /** Per package, then per function (JavaScript or native) charged to it. */
  byFunction: Map<string, Map<string, number>>;
  /** Per kind of code that ran (JavaScript, builtins, runtime, GC, ...), compilers left out. */
  byCategory: Map<string, number>;
  /**
   * With `byCaller`: per JavaScript function (`<package> <function>`, with what it called), per
   * request, in thousands; what no JavaScript called is under its category, as in `byPackage`.
   */
  byCaller?: Map<string, number>;
}

/**
 * Reads a callgrind output file of a process started with `--perf-basic-prof`. `byCaller`: also
 * charge the instructions to each JavaScript function, not only to its package.
 */
export function readInstructionProfile(
  callgrindFile: string,
  perfMapFile: string,
  requests: number,
  options: { byCaller?: boolean } = {},
): InstructionProfile {
  const jit = readPerfMap(perfMapFile);
  const findJit = (address: number): JitCode | undefined => {
    for (let i = jit.length - 1; i >= 0; i--) {
      if (address >= jit[i].start && address < jit[i].end) {
        return jit[i];
      }
    }
    return undefined;
  };
  const fnNames = new Map<string, string>();
  const objectNames = new Map<string, string>();
  const objectOf = new Map<string, string>();
  const self = new Map<string, number>();
  /** callee -> caller -> instructions of the callee and below, from that caller. */
  const callers = new Map<string, Map<string, number>>();
  // Names are compressed: `(id) name` the first time, `(id)` after.
  const id = (names: Map<string, string>, text: string): string => {
    const match = /^\((\d+)\)(?: (.*))?$/.exec(text.trim());
    if (!match) {
      return text.trim();
    }
    if (match[2] !== undefined) {
      names.set(match[1], match[2]);
    }
    return match[1];
  };
  let fn = '';
  let object = '';
  let calleeObject = '';
  let callee = '';
  let callLine = false;
  for (const line of readFileSync(callgrindFile, 'utf8').split('\n')) {
    if (line.startsWith('ob=')) {
      object = id(objectNames, line.slice(3));
    } else if (line.startsWith('fn=')) {
      fn = id(fnNames, line.slice(3));
      objectOf.set(fn, object);
    } else if (line.startsWith('cob=')) {
      calleeObject = id(objectNames, line.slice(4));
    } else if (line.startsWith('cfn=')) {
      callee = id(fnNames, line.slice(4));
      if (!objectOf.has(callee)) {
        objectOf.set(callee, calleeObject || object);
      }
      calleeObject = '';
    } else if (line.startsWith('calls=')) {
      callLine = true;
    } else if (/^[+\-*\d]/.test(line)) {
      const fields = line.trim().split(/\s+/);
      const cost = Number(fields[fields.length - 1]);
      if (callLine) {
        let from = callers.get(callee);
        if (!from) {
          callers.set(callee, (from = new Map()));
        }
        from.set(fn, (from.get(fn) ?? 0) + cost);
        callLine = false;
      } else {
        self.set(fn, (self.get(fn) ?? 0) + cost);
      }
    }
  }
  const labels = new Map<
    string,
    { name: string; category: string; package?: string; caller?: string }
  >();
  const labelOf = (fnId: string) => {
    let label = labels.get(fnId);
    if (!label) {
      const name = (fnNames.get(fnId) ?? fnId).replace(/'\d+$/, '');
      const objectName = objectNames.get(objectOf.get(fnId) ?? '') ?? '???';
      const category = categoryOf(name, objectName);
      const code = category === 'JavaScript' ? findJit(parseInt(name, 16)) : undefined;
      const pkg = code?.package ?? '(unnamed JIT code)';
      label =
        category === 'JavaScript'
          ? {
              name: code?.name ?? name,
              category,
              package: pkg,
              caller: `${pkg} ${code?.name ?? name}`,
            }
          : { name, category };
      labels.set(fnId, label);
    }
    return label;
  };
  /**
   * Shares of a function's cost per package (or per JavaScript function), through its callers
   * (memoized; a cycle stops).
   */
  const sharesBy = (key: 'package' | 'caller') => {
    const shares = new Map<string, Map<string, number>>();
    const visiting = new Set<string>();
    const shareOf = (fnId: string): Map<string, number> => {
      const known = shares.get(fnId);
      if (known) {
        return known;
      }
      const label = labelOf(fnId);
      const own = label[key];
      if (own) {
        const mine = new Map([[own, 1]]);
        shares.set(fnId, mine);
        return mine;
      }
      const alone = new Map([[`(${label.category}, not called from JavaScript)`, 1]]);
      if (visiting.has(fnId)) {
        return new Map();
      }
      visiting.add(fnId);
      // A caller already being resolved (a recursion: a getter's IC miss calling JavaScript that
      // misses again) is left out, and the others share its part.
      let weight = 0;
      const share = new Map<string, number>();
      for (const [caller, cost] of callers.get(fnId) ?? []) {
        const callerShare = caller === fnId ? new Map<string, number>() : shareOf(caller);
        if (callerShare.size === 0) {
          continue;
        }
        weight += cost;
        for (const [pkg, part] of callerShare) {
          share.set(pkg, (share.get(pkg) ?? 0) + part * cost);
        }
      }
      visiting.delete(fnId);
      if (weight === 0) {
        shares.set(fnId, alone);
        return alone;
      }
      for (const [pkg, part] of share) {
        share.set(pkg, part / weight);
      }
      shares.set(fnId, share);
      return share;
    };
    return shareOf;
  };
  const packageShareOf = sharesBy('package');
  const callerShareOf = options.byCaller ? sharesBy('caller') : undefined;
  const perRequest = (count: number) => count / requests / 1000;
  const byPackage = new Map<string, number>();
  const byFunction = new Map<string, Map<string, number>>();
  const byCategory = new Map<string, number>();
  const byCaller = callerShareOf ? new Map<string, number>() : undefined;
  let total = 0;
  let compilers = 0;
  let gc = 0;
  for (const [fnId, count] of self) {
    const label = labelOf(fnId);
    if (label.category === 'V8 compilers') {
      compilers += perRequest(count);
      continue;
    }
    byCategory.set(label.category, (byCategory.get(label.category) ?? 0) + perRequest(count));
    if (label.category === 'V8 GC') {
      gc += perRequest(count);
      continue;
    }
    total += perRequest(count);
    for (const [caller, part] of callerShareOf?.(fnId) ?? []) {
      byCaller!.set(caller, (byCaller!.get(caller) ?? 0) + perRequest(count) * part);
    }
    for (const [pkg, part] of packageShareOf(fnId)) {
      byPackage.set(pkg, (byPackage.get(pkg) ?? 0) + perRequest(count) * part);
      let functions = byFunction.get(pkg);
      if (!functions) {
        byFunction.set(pkg, (functions = new Map()));
      }
      functions.set(label.name, (functions.get(label.name) ?? 0) + perRequest(count) * part);
    }
  }
  return { total, compilers, gc, byPackage, byFunction, byCategory, byCaller };
}
