/**
 * The hashing thread (a Bun Worker started by hashing.ts): hashes byte ranges of files (cache
 * files being checked, workdir files being uploaded), read here by path, so that MD5 and
 * CRC64NVME work never runs on the thread that answers FUSE requests.
 *
 * Is: a message loop over per-id hash states: `open` (an algorithm), `update` (bytes [from, to)
 * of a file, read in 1 MiB steps), `digest` (the raw digest; the state starts again), `close`.
 * Every message is answered once with its `seq`. Is not: the choice of what to hash or when
 * (cache/object-digest.ts, s3/put.ts), or a reader of anything outside the files it is named.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { newHasher, type HashAlgorithm, type Hasher } from "./checksum.ts";

export type HashRequest =
  | { seq: number; id: number; op: "open"; alg: HashAlgorithm }
  | { seq: number; id: number; op: "update"; path: string; from: number; to: number }
  | { seq: number; id: number; op: "digest" }
  | { seq: number; id: number; op: "close" };

export type HashReply = { seq: number; ok: true; digest?: Uint8Array } | { seq: number; ok: false; error: string };

const STEP = 1024 * 1024;

/** Bytes [from, to) of `path` into `h`, in steps through `buf`. Shared with the in-thread fallback. */
export function hashFileRange(h: Hasher, path: string, from: number, to: number, buf: Uint8Array): void {
  const fd = openSync(path, "r");
  try {
    let pos = from;
    while (pos < to) {
      const n = readSync(fd, buf, 0, Math.min(buf.byteLength, to - pos), pos);
      if (n <= 0) throw new Error(`${path} ended at ${pos} of ${to} bytes`);
      h.update(buf.subarray(0, n));
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
}

declare const self: Worker;

if (typeof self !== "undefined" && typeof (globalThis as { Bun?: unknown }).Bun !== "undefined" && !Bun.isMainThread) {
  const states = new Map<number, Hasher>();
  const buf = new Uint8Array(STEP);
  self.onmessage = (e: MessageEvent<HashRequest>) => {
    const m = e.data;
    let reply: HashReply;
    try {
      switch (m.op) {
        case "open":
          states.set(m.id, newHasher(m.alg));
          reply = { seq: m.seq, ok: true };
          break;
        case "update": {
          const h = states.get(m.id);
          if (!h) throw new Error(`no hash state ${m.id}`);
          hashFileRange(h, m.path, m.from, m.to, buf);
          reply = { seq: m.seq, ok: true };
          break;
        }
        case "digest": {
          const h = states.get(m.id);
          if (!h) throw new Error(`no hash state ${m.id}`);
          const digest = h.digest();
          states.set(m.id, newHasher(h.algorithm));
          reply = { seq: m.seq, ok: true, digest };
          break;
        }
        case "close":
          states.delete(m.id);
          reply = { seq: m.seq, ok: true };
          break;
      }
    } catch (err) {
      reply = { seq: m.seq, ok: false, error: (err as Error).message };
    }
    self.postMessage(reply);
  };
}
