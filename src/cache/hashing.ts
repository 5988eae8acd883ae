/**
 * Hashing ranges of cache files off the FUSE thread.
 *
 * Is: `rangeHasher(alg)`, a hash state fed with byte ranges of files by path, whose work runs
 * in one shared Worker (cache/hash-worker.ts) so that MD5 (1.6 s/GiB) and CRC64NVME
 * (0.65 s/GiB) never delay a READ answer; the same in this thread when the Worker cannot start
 * or BUCKETFS_HASH_WORKER=0 (A/B benchmarks). Is not: what is hashed when
 * (cache/object-digest.ts) or the hash implementations (store/checksum.ts).
 */
import { newHasher, type HashAlgorithm, type Hasher } from "../store/checksum.ts";
import { hashFileRange, type HashReply, type HashRequest } from "./hash-worker.ts";

export interface RangeHasher {
  /** Hash bytes [from, to) of `path` (ranges arrive in order). */
  update(path: string, from: number, to: number): Promise<void>;
  /** The raw digest of everything so far; the state starts again. */
  digest(): Promise<Uint8Array>;
  close(): void;
}

type Pending = { resolve: (r: HashReply) => void };

let worker: Worker | null | undefined;
let seq = 0;
let ids = 0;
const pending = new Map<number, Pending>();

function failAll(error: string): void {
  for (const [s, p] of pending) p.resolve({ seq: s, ok: false, error });
  pending.clear();
}

function hashWorker(): Worker | null {
  if (worker !== undefined) return worker;
  if (process.env.BUCKETFS_HASH_WORKER === "0") return (worker = null);
  try {
    const w = new Worker(new URL("./hash-worker.ts", import.meta.url).href);
    w.onmessage = (e: MessageEvent<HashReply>) => {
      const p = pending.get(e.data.seq);
      pending.delete(e.data.seq);
      p?.resolve(e.data);
    };
    w.onerror = (e) => {
      // The thread is gone: what it was doing fails (a check that fails is EIO, never wrong
      // bytes), and new hashers run in this thread.
      worker = null;
      failAll(`hash worker failed: ${e.message}`);
    };
    w.unref();
    worker = w;
  } catch {
    worker = null;
  }
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

/** A hash state for `alg` fed from files; on the hashing Worker when it runs. */
export function rangeHasher(alg: HashAlgorithm): RangeHasher {
  const w = hashWorker();
  return w ? new WorkerHasher(w, alg) : new LocalHasher(alg);
}
