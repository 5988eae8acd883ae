/**
 * The small async mechanisms bucketfs uses in many places, each written once.
 *
 * Is: `singleFlight` (one running promise per key, shared by every caller that asks while it
 * runs), `createLimiter` (a bounded pool: at most N tasks, or N units of weight such as bytes,
 * at once, FIFO), `runAll` (a bounded map over a list), `linkSignals` (one AbortSignal that
 * fires when any input fires, with a `dispose` to unhook), `sleep` (a timer that ends early
 * on abort) and `deferred` (a promise with its resolve and reject).
 * Is not: a retry policy (that is the store's request path), a scheduler with priorities, or
 * anything that knows about S3 or FUSE.
 */

/** One promise per key while it runs; callers that ask meanwhile share it. */
export interface SingleFlight<K, V> {
  /** Runs `fn` unless a run for `key` is under way, in which case that run's promise is returned. */
  run(key: K, fn: () => Promise<V>): Promise<V>;
  /** The running promise for `key`, if any. */
  running(key: K): Promise<V> | undefined;
  /** Number of keys running now. */
  readonly size: number;
}

export function singleFlight<K, V>(): SingleFlight<K, V> {
  const inflight = new Map<K, Promise<V>>();
  return {
    run(key, fn) {
      const cur = inflight.get(key);
      if (cur !== undefined) return cur;
      const p = (async () => fn())().finally(() => {
        if (inflight.get(key) === p) inflight.delete(key);
      });
      inflight.set(key, p);
      return p;
    },
    running: (key) => inflight.get(key),
    get size() {
      return inflight.size;
    },
  };
}

/** A bounded pool. Capacity is in units: 1 per task by default, or e.g. bytes. */
export interface Limiter {
  /** Waits until `weight` units are free (FIFO), takes them, and returns the function that gives them back. */
  acquire(weight?: number, signal?: AbortSignal): Promise<() => void>;
  /** `fn` run while holding `weight` units. */
  run<T>(fn: () => Promise<T>, weight?: number, signal?: AbortSignal): Promise<T>;
  /** Units held now. */
  readonly inUse: number;
  /** Callers waiting now. */
  readonly waiting: number;
  readonly capacity: number;
}

/**
 * A FIFO limiter of `capacity` units. A request larger than the capacity is granted alone (when
 * nothing else holds units), so an oversized item can never wait forever.
 */
export function createLimiter(capacity: number): Limiter {
  if (!(capacity > 0)) throw new RangeError(`limiter capacity must be > 0, got ${capacity}`);
  let inUse = 0;
  const queue: { weight: number; grant: () => void }[] = [];
  const fits = (w: number) => inUse === 0 || inUse + w <= capacity;
  const pump = () => {
    while (queue.length > 0 && fits(queue[0]!.weight)) {
      const head = queue.shift()!;
      inUse += head.weight;
      head.grant();
    }
  };
  const releaser = (weight: number) => {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      inUse -= weight;
      pump();
    };
  };
  const acquire = (weight = 1, signal?: AbortSignal): Promise<() => void> => {
    signal?.throwIfAborted();
    if (queue.length === 0 && fits(weight)) {
      inUse += weight;
      return Promise.resolve(releaser(weight));
    }
    return new Promise((resolve, reject) => {
      const entry = {
        weight,
        grant: () => {
          signal?.removeEventListener("abort", onAbort);
          resolve(releaser(weight));
        },
      };
      const onAbort = () => {
        const i = queue.indexOf(entry);
        if (i >= 0) queue.splice(i, 1);
        reject(signal?.reason);
        pump();
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      queue.push(entry);
    });
  };
  return {
    acquire,
    async run(fn, weight = 1, signal) {
      const release = await acquire(weight, signal);
      try {
        return await fn();
      } finally {
        release();
      }
    },
    get inUse() {
      return inUse;
    },
    get waiting() {
      return queue.length;
    },
    capacity,
  };
}

/**
 * `fn` over every item with at most `concurrency` running at once; rejects with the first error
 * (in time) after all settle. Items are pulled from the iterable only as a slot frees, so a
 * generator over 100,000 files costs `concurrency` promises, not one per item.
 */
export async function runAll<T>(items: Iterable<T>, concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  const it = items[Symbol.iterator]();
  let failed: { reason: unknown } | undefined;
  const worker = async (): Promise<void> => {
    for (let next = it.next(); !next.done; next = it.next()) {
      try {
        await fn(next.value);
      } catch (err) {
        failed ??= { reason: err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.floor(concurrency)) }, worker));
  if (failed !== undefined) throw failed.reason;
}

/** A signal that aborts when any of `signals` does (with that signal's reason), plus its own `abort`. */
export interface LinkedSignal {
  readonly signal: AbortSignal;
  abort(reason?: unknown): void;
  /** Unhooks from the inputs; call when the work is done so long-lived inputs do not keep listeners. */
  dispose(): void;
}

export function linkSignals(...signals: (AbortSignal | undefined)[]): LinkedSignal {
  const ctl = new AbortController();
  const hooks: [AbortSignal, () => void][] = [];
  for (const s of signals) {
    if (s === undefined) continue;
    if (s.aborted) {
      ctl.abort(s.reason);
      break;
    }
    const onAbort = () => ctl.abort(s.reason);
    s.addEventListener("abort", onAbort, { once: true });
    hooks.push([s, onAbort]);
  }
  const dispose = () => {
    for (const [s, h] of hooks.splice(0)) s.removeEventListener("abort", h);
  };
  ctl.signal.addEventListener("abort", dispose, { once: true });
  return { signal: ctl.signal, abort: (reason) => ctl.abort(reason), dispose };
}

/** Resolves after `ms`, or early (resolving, not rejecting) when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}

/** A promise with its resolve and reject (Promise.withResolvers, for the ES level tsc targets here). */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(reason: unknown): void;
}

export function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
