/**
 * Hashing ranges of files (cache files, files being uploaded) off the FUSE thread.
 *
 * Is: `rangeHasher(alg)`, a hash state fed with byte ranges of files by path, whose work runs
 * on a pool of hashing Workers (hash-worker.ts; HASH_THREADS, one per core up to 4, each hash
 * state bound to the one holding fewest) so that MD5 (1.6 s/GiB) and CRC64NVME (0.65 s/GiB)
 * never delay a READ answer and several checks (objects, or the parts of one multipart ETag)
 * run at once; the same in this thread when no Worker can start or BUCKETFS_HASH_WORKER=0
 * (A/B benchmarks). Is not: what is hashed when
 * (cache/object-digest.ts, s3/put.ts) or the hash implementations (checksum.ts).
 */
import { newHasher, type HashAlgorithm, type Hasher } from "./checksum.ts";
import { hashFileRange, type HashReply, type HashRequest } from "./hash-worker.ts";
import { availableParallelism } from "node:os";
import { envSwitch } from "../util/env.ts";

export interface RangeHasher {
  /** Hash bytes [from, to) of `path` (ranges arrive in order). */
  update(path: string, from: number, to: number): Promise<void>;
  /** The raw digest of everything so far; the state starts again. */
  digest(): Promise<Uint8Array>;
  close(): void;
}

type Pending = { resolve: (r: HashReply) => void };

/** How long a Worker may take to answer its first message. */
const WORKER_START_MS = 10_000;

/**
 * Hashing threads: one per core, at most 4. One thread hashes MD5 at about 0.6 GiB/s, so with one
 * thread every object being checked at once shared those 0.6 GiB/s, and the MD5 of an object's
 * last part could start only when the parts before it were hashed.
 */
export const HASH_THREADS = Math.max(1, Math.min(4, availableParallelism()));

/** One hashing Worker: its pending requests and how many hash states it holds. */
class HashThread {
  pending = new Map<number, Pending>();
  /** Hashers bound to this thread and not closed: the next hasher goes to the thread with fewest. */
  hashers = 0;
  dead = false;
  constructor(readonly w: Worker) {}

  /** Its work fails (a check that fails is EIO, never wrong bytes); hashers made later go elsewhere. */
  fail(error: string): void {
    this.dead = true;
    for (const [s, p] of this.pending) p.resolve({ seq: s, ok: false, error });
    this.pending.clear();
  }
}

let threads: Promise<HashThread[]> | undefined;
let seq = 0;
let ids = 0;

/**
 * Where the worker's module is: beside this file when run from source; in a `bun build
 * --compile` binary (scripts/build-binary.sh adds it as a second entry point) under the
 * bundle's root, which is src/.
 */
function workerSpecifier(): string {
  return import.meta.url.includes("/$bunfs/") ? "./store/hash-worker.ts" : new URL("./hash-worker.ts", import.meta.url).href;
}

/** One hashing thread once it answered a first message, or null (it could not start). */
function startThread(): Promise<HashThread | null> {
  return new Promise<HashThread | null>((resolve) => {
    let t: HashThread;
    try {
      t = new HashThread(new Worker(workerSpecifier()));
    } catch {
      return resolve(null);
    }
    let up = false;
    t.w.onmessage = (e: MessageEvent<HashReply>) => {
      up = true;
      const p = t.pending.get(e.data.seq);
      t.pending.delete(e.data.seq);
      p?.resolve(e.data);
    };
    t.w.onerror = (e) => {
      t.fail(`hash worker failed: ${e.message}`);
      if (!up) resolve(null);
    };
    t.w.unref();
    // A Worker that never answers its first message is not used.
    const timer = setTimeout(() => {
      if (!up) {
        t.fail("hash worker did not start");
        t.w.terminate();
        resolve(null);
      }
    }, WORKER_START_MS);
    timer.unref();
    ask(t, { id: 0, op: "close" } as HashRequest).then((r) => {
      clearTimeout(timer);
      resolve(r.ok ? t : null);
    });
  });
}

/** The hashing threads that started (empty: hash in this thread), started on first use. */
function hashThreads(): Promise<HashThread[]> {
  if (threads !== undefined) return threads;
  if (envSwitch("BUCKETFS_HASH_WORKER") === "0") return (threads = Promise.resolve([]));
  threads = Promise.all(Array.from({ length: HASH_THREADS }, startThread)).then((ts) => ts.filter((t): t is HashThread => t !== null));
  return threads;
}

/** The live thread holding the fewest hash states, or null when none is left. */
async function pickThread(): Promise<HashThread | null> {
  let best: HashThread | null = null;
  for (const t of await hashThreads()) if (!t.dead && (best === null || t.hashers < best.hashers)) best = t;
  return best;
}

function ask(t: HashThread, m: Omit<HashRequest, "seq"> & { op: HashRequest["op"] }): Promise<HashReply> {
  const s = ++seq;
  if (t.dead) return Promise.resolve({ seq: s, ok: false, error: "hash worker failed" });
  return new Promise((resolve) => {
    t.pending.set(s, { resolve });
    t.w.postMessage({ ...m, seq: s });
  });
}

async function must(p: Promise<HashReply>): Promise<HashReply & { ok: true }> {
  const r = await p;
  if (!r.ok) throw new Error(r.error);
  return r;
}

class WorkerHasher implements RangeHasher {
  private id = ++ids;
  private opened: Promise<unknown>;
  private closed = false;
  constructor(private t: HashThread, alg: HashAlgorithm) {
    t.hashers++;
    this.opened = must(ask(t, { id: this.id, op: "open", alg } as HashRequest));
  }
  async update(path: string, from: number, to: number): Promise<void> {
    await this.opened;
    await must(ask(this.t, { id: this.id, op: "update", path, from, to } as HashRequest));
  }
  async digest(): Promise<Uint8Array> {
    await this.opened;
    const r = await must(ask(this.t, { id: this.id, op: "digest" } as HashRequest));
    if (!r.digest) throw new Error("hash worker: no digest");
    return new Uint8Array(r.digest);
  }
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.t.hashers--;
    void ask(this.t, { id: this.id, op: "close" } as HashRequest);
  }
}

class LocalHasher implements RangeHasher {
  private h: Hasher;
  private buf = new Uint8Array(1024 * 1024);
  constructor(private alg: HashAlgorithm) {
    this.h = newHasher(alg);
  }
  async update(path: string, from: number, to: number): Promise<void> {
    // In steps of at most 8 MiB, yielding between them: READs still get answered meanwhile.
    for (let pos = from; pos < to; pos += 8 * this.buf.byteLength) {
      hashFileRange(this.h, path, pos, Math.min(to, pos + 8 * this.buf.byteLength), this.buf);
      await new Promise((r) => setImmediate(r));
    }
  }
  async digest(): Promise<Uint8Array> {
    const d = this.h.digest();
    this.h = newHasher(this.alg);
    return d;
  }
  close(): void {}
}

/** Delegates to a hashing thread's hasher once the threads answered, else to one in this thread. */
class LazyHasher implements RangeHasher {
  private h: Promise<RangeHasher>;
  constructor(alg: HashAlgorithm) {
    this.h = pickThread().then((t) => (t ? new WorkerHasher(t, alg) : new LocalHasher(alg)));
  }
  async update(path: string, from: number, to: number): Promise<void> {
    return (await this.h).update(path, from, to);
  }
  async digest(): Promise<Uint8Array> {
    return (await this.h).digest();
  }
  close(): void {
    void this.h.then((h) => h.close());
  }
}

/** A hash state for `alg` fed from files; on a hashing thread (the one holding fewest states) when they run. */
export function rangeHasher(alg: HashAlgorithm): RangeHasher {
  return new LazyHasher(alg);
}
