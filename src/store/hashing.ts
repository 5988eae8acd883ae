/**
 * Hashing ranges of files (cache files, files being uploaded) off the FUSE thread.
 *
 * Is: `rangeHasher(alg)`, a hash state fed with byte ranges of files by path, whose work runs
 * in one shared Worker (hash-worker.ts) so that MD5 (1.6 s/GiB) and CRC64NVME
 * (0.65 s/GiB) never delay a READ answer; the same in this thread when the Worker cannot start
 * or BUCKETFS_HASH_WORKER=0 (A/B benchmarks). Is not: what is hashed when
 * (cache/object-digest.ts, s3/put.ts) or the hash implementations (checksum.ts).
 */
import { newHasher, type HashAlgorithm, type Hasher } from "./checksum.ts";
import { hashFileRange, type HashReply, type HashRequest } from "./hash-worker.ts";

export interface RangeHasher {
  /** Hash bytes [from, to) of `path` (ranges arrive in order). */
  update(path: string, from: number, to: number): Promise<void>;
  /** The raw digest of everything so far; the state starts again. */
  digest(): Promise<Uint8Array>;
  close(): void;
}

type Pending = { resolve: (r: HashReply) => void };

let worker: Promise<Worker | null> | undefined;
/** How long the Worker may take to answer its first message. */
const WORKER_START_MS = 10_000;
let seq = 0;
let ids = 0;
const pending = new Map<number, Pending>();

function failAll(error: string): void {
  for (const [s, p] of pending) p.resolve({ seq: s, ok: false, error });
  pending.clear();
}

/**
 * Where the worker's module is: beside this file when run from source; in a `bun build
 * --compile` binary (scripts/build-binary.sh adds it as a second entry point) under the
 * bundle's root, which is src/.
 */
function workerSpecifier(): string {
  return import.meta.url.includes("/$bunfs/") ? "./store/hash-worker.ts" : new URL("./hash-worker.ts", import.meta.url).href;
}

/** The shared hashing Worker once it answered a first message, or null (hash in this thread). */
function hashWorker(): Promise<Worker | null> {
  if (worker !== undefined) return worker;
  if (process.env.BUCKETFS_HASH_WORKER === "0") return (worker = Promise.resolve(null));
  worker = new Promise<Worker | null>((resolve) => {
    let w: Worker;
    try {
      w = new Worker(workerSpecifier());
    } catch {
      return resolve(null);
    }
    let up = false;
    w.onmessage = (e: MessageEvent<HashReply>) => {
      up = true;
      const p = pending.get(e.data.seq);
      pending.delete(e.data.seq);
      p?.resolve(e.data);
    };
    w.onerror = (e) => {
      // The thread is gone: what it was doing fails (a check that fails is EIO, never wrong
      // bytes), and hashers made from now on run in this thread.
      worker = Promise.resolve(null);
      failAll(`hash worker failed: ${e.message}`);
      if (!up) resolve(null);
    };
    w.unref();
    // A Worker that never answers its first message is not used (hashing stays in this thread).
    const t = setTimeout(() => {
      if (!up) {
        worker = Promise.resolve(null);
        w.terminate();
        resolve(null);
      }
    }, WORKER_START_MS);
    t.unref();
    ask(w, { id: 0, op: "close" } as HashRequest).then((r) => {
      clearTimeout(t);
      resolve(r.ok ? w : null);
    });
  });
  return worker;
}

function ask(w: Worker, m: Omit<HashRequest, "seq"> & { op: HashRequest["op"] }): Promise<HashReply> {
  const s = ++seq;
  return new Promise((resolve) => {
    pending.set(s, { resolve });
    w.postMessage({ ...m, seq: s });
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
  constructor(private w: Worker, alg: HashAlgorithm) {
    this.opened = must(ask(w, { id: this.id, op: "open", alg } as HashRequest));
  }
  async update(path: string, from: number, to: number): Promise<void> {
    await this.opened;
    await must(ask(this.w, { id: this.id, op: "update", path, from, to } as HashRequest));
  }
  async digest(): Promise<Uint8Array> {
    await this.opened;
    const r = await must(ask(this.w, { id: this.id, op: "digest" } as HashRequest));
    if (!r.digest) throw new Error("hash worker: no digest");
    return new Uint8Array(r.digest);
  }
  close(): void {
    void ask(this.w, { id: this.id, op: "close" } as HashRequest);
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

/** Delegates to the Worker's hasher once the Worker answered, else to one in this thread. */
class LazyHasher implements RangeHasher {
  private h: Promise<RangeHasher>;
  constructor(alg: HashAlgorithm) {
    this.h = hashWorker().then((w) => (w ? new WorkerHasher(w, alg) : new LocalHasher(alg)));
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

/** A hash state for `alg` fed from files; on the hashing Worker when it runs. */
export function rangeHasher(alg: HashAlgorithm): RangeHasher {
  return new LazyHasher(alg);
}
