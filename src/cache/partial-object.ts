/**
 * A large object being fetched into the cache while it is read: the streaming read path.
 *
 * Is: a sparse temp file of the object's size plus a map of which 1 MiB blocks are present.
 * A read waits only for the blocks it needs. Sequential readers get a read-ahead window
 * that doubles up to `maxWindowBlocks`, fetched as parallel ranged GETs of `chunkBlocks`;
 * random readers fetch single blocks, so `head -c 100` of a 10 GiB object costs one small
 * GET. Every GET carries If-Match with the ETag, so a file never mixes two versions. At
 * most `maxInflight` GETs run at once, and each streams its body into the file as it arrives;
 * a READ waits only until its own blocks are written, not for the rest of their GET
 * (no chunk-sized buffers: a 1 GiB cold read peaked at 177-195 MiB RSS against 284-300 MiB
 * with whole-chunk buffers, and was faster), so memory stays bounded whatever the object size.
 * When every block is present and the whole object matches its ETag (object-digest.ts, hashed
 * in order as blocks complete), the file is renamed to its final name and recorded as cached.
 * The READ covering the last block of a complete object waits for that check; on a mismatch it
 * and every later READ of this copy fail with EIO, the temp file is removed and never renamed,
 * and the next open fetches a fresh copy. Is not: the whole-object path for small files
 * (object-cache.ts fetchWhole()).
 */
import { closeSync, openSync, renameSync, rmSync, ftruncateSync, write as fsWrite } from "node:fs";
import { StoreError, type ObjectStore } from "../store/types.ts";
import { errMsg, type Logger } from "../util/log.ts";
import { StreamedDigest } from "./object-digest.ts";
import { createLimiter, deferred, type Deferred, type Limiter } from "../util/async.ts";

export const BLOCK_SIZE = 1024 * 1024;

export interface PartialOptions {
  /** Blocks per GET for sequential read-ahead. */
  chunkBlocks: number;
  /** Largest read-ahead window, in blocks. */
  maxWindowBlocks: number;
  /** GETs in flight for this object. */
  maxInflight: number;
}

/** The config defaults (read_chunk_size 16 MiB, read_ahead 64 MiB, read_concurrency 8), in blocks. */
export const DEFAULT_PARTIAL_OPTIONS: PartialOptions = { chunkBlocks: 16, maxWindowBlocks: 64, maxInflight: 8 };

function writeAt(fd: number, data: Uint8Array, pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let done = 0;
    const step = () =>
      fsWrite(fd, data, done, data.byteLength - done, pos + done, (err, n) => {
        if (err) return reject(err);
        done += n;
        if (done < data.byteLength) step();
        else resolve();
      });
    step();
  });
}

export class PartialObject {
  readonly blocks: number;
  private present: Uint8Array;
  private presentCount = 0;
  private inflight = new Map<number, Promise<void>>();
  /** At most `maxInflight` GETs of this object at once. */
  private gets: Limiter;
  private fd: number;
  private window: number;
  private lastEnd = -1;
  private abort = new AbortController();
  private finished: Promise<void> | undefined;
  private discarded = false;
  private fdOpen = true;
  /** Set once the temp file has been renamed to its final name (`complete` is true earlier). */
  private renamed = false;
  private digest: StreamedDigest;
  /** Set when the whole object did not match its ETag: every READ of this copy fails with it. */
  corrupt: StoreError | undefined;
  refs = 0;

  constructor(
    readonly key: string,
    readonly etag: string,
    readonly size: number,
    readonly tmpPath: string,
    private finalPath: string,
    private store: ObjectStore,
    private onComplete: (p: PartialObject) => void,
    private log: Logger,
    private o: PartialOptions = DEFAULT_PARTIAL_OPTIONS,
  ) {
    this.blocks = Math.ceil(size / BLOCK_SIZE);
    this.present = new Uint8Array(this.blocks);
    this.fd = openSync(tmpPath, "w+", 0o600);
    ftruncateSync(this.fd, size);
    this.window = o.chunkBlocks;
    this.gets = createLimiter(o.maxInflight);
    this.digest = new StreamedDigest(etag, size, tmpPath, BLOCK_SIZE, async () => (await store.head(key))?.etagNotMd5 === true);
  }

  get complete(): boolean {
    return this.presentCount === this.blocks;
  }

  /** True once the copy is verified and renamed into place: reads need no more waiting. */
  get done(): boolean {
    return this.renamed;
  }

  /** The path readers should open: the final one once verified and renamed into place. */
  get path(): string {
    return this.renamed ? this.finalPath : this.tmpPath;
  }

  /** Wait until bytes [off, off+len) are in the file; schedule read-ahead for sequential readers. */
  async ensure(off: number, len: number): Promise<void> {
    if (this.corrupt) throw this.corrupt;
    if (this.renamed || len <= 0 || off >= this.size) return;
    await this.ensureBlocks(off, len);
    // The READ that covers the last byte waits for the whole-object check once the object is
    // complete, so a reader that reads to the end learns of a bad copy before EOF.
    if (this.complete && off + len >= this.size) {
      this.finish();
      await this.finished;
      if (this.corrupt) throw this.corrupt;
    }
  }

  private async ensureBlocks(off: number, len: number): Promise<void> {
    if (this.complete) return;
    const first = Math.floor(off / BLOCK_SIZE);
    const last = Math.floor((Math.min(off + len, this.size) - 1) / BLOCK_SIZE);
    // The kernel issues a sequential reader's READs several at a time and they may arrive out of
    // order, so "sequential" means: inside the read-ahead window behind the furthest read so far,
    // or at most a chunk past it (or, for the first read, inside the first chunk). Anything else
    // is a random read, fetched a block at a time.
    const span = this.window * BLOCK_SIZE;
    const isFirst = this.lastEnd < 0;
    const firstChunk = this.o.chunkBlocks * BLOCK_SIZE;
    const sequential =
      this.lastEnd < 0
        ? off < firstChunk // the first READs of a scan may arrive in any order
        : off >= this.lastEnd - span && off <= this.lastEnd + firstChunk;
    if (sequential) {
      if (off + len > this.lastEnd) this.window = Math.min(this.window * 2, this.o.maxWindowBlocks);
      this.lastEnd = Math.max(this.lastEnd, off + len);
    } else {
      this.window = this.o.chunkBlocks;
      this.lastEnd = off + len;
    }
    // A random read, or the very first read of this object (which may be `head -c 100` of a
    // huge object): only the blocks asked for. Chunks and read-ahead start when a second
    // read shows the reader is sequential.
    if (!sequential || isFirst) {
      this.schedule(first, last, 1);
      return this.waitFor(first, last);
    }
    // Sequential: whole chunks on chunk boundaries, so the growing window never produces the
    // small tail GETs it would if its end moved by each read's size.
    const c = this.o.chunkBlocks;
    const chunkEnd = (blk: number) => Math.min(this.blocks - 1, Math.ceil((blk + 1) / c) * c - 1);
    const demandEnd = chunkEnd(last);
    this.schedule(Math.floor(first / c) * c, demandEnd, c);
    // Read-ahead: errors surface when a reader actually needs those blocks.
    this.schedule(demandEnd + 1, chunkEnd(last + this.window), c);
    return this.waitFor(first, last);
  }

  /** Until blocks [first, last] are written (each was just scheduled, so each is here or on its way). */
  private async waitFor(first: number, last: number): Promise<void> {
    const waits: Promise<void>[] = [];
    for (let k = first; k <= last; k++) {
      const w = this.inflight.get(k);
      if (w) waits.push(w);
    }
    await Promise.all(waits);
    for (let k = first; k <= last; k++) {
      if (!this.present[k]) throw new Error(`${this.key}: block ${k} is not in the cache file after its fetch`);
    }
  }

  /** Start GETs for the missing blocks in [a, b], in runs of at most `unit` blocks, aligned to `unit`. */
  private schedule(a: number, b: number, unit: number): void {
    let i = a;
    while (i <= b) {
      if (this.present[i] || this.inflight.has(i)) {
        i++;
        continue;
      }
      // A run ends at a multiple of `unit` (chunk-aligned GETs), at `b`, or at a block already here.
      let j = i;
      while (j + 1 <= b && (j + 1) % unit !== 0 && !this.present[j + 1] && !this.inflight.has(j + 1)) j++;
      // One GET for the run, one promise per block: a READ waits for its own blocks, not the run.
      const arrived: Deferred<void>[] = [];
      for (let k = i; k <= j; k++) {
        const d = deferred();
        d.promise.catch(() => {}); // read-ahead blocks nobody waits for
        arrived.push(d);
        this.inflight.set(k, d.promise);
      }
      void this.fetch(i, j, arrived);
      i = j + 1;
    }
  }

  private closeFd(): void {
    if (!this.fdOpen) return;
    this.fdOpen = false;
    closeSync(this.fd);
  }

  /**
   * GET blocks [a, b] in one ranged request. Each block counts as present (and its promise in
   * `arrived` resolves) as soon as its last byte is written, so readers follow the body as it
   * streams in; a failure rejects the blocks not yet written.
   */
  private async fetch(a: number, b: number, arrived: Deferred<void>[]): Promise<void> {
    let next = a; // the first block of the run not yet complete
    try {
      const done = await this.gets.acquire();
      try {
        const start = a * BLOCK_SIZE;
        const end = Math.min((b + 1) * BLOCK_SIZE, this.size);
        // The body goes to the file as it arrives: no chunk-sized buffer is ever assembled.
        const n = await this.store.streamRange(this.key, start, end, async (chunk, pos) => {
          // Never write after discard(): the fd may already be closed and its number reused.
          if (this.discarded) throw new Error(`fetch of ${this.key} cancelled`);
          if (pos + chunk.byteLength > end) throw new Error(`${this.key}: server sent more than bytes ${start}-${end}`);
          await writeAt(this.fd, chunk, pos);
          // A range arrives in order (a retry resumes at the first byte not delivered).
          const upTo = pos + chunk.byteLength;
          for (; next <= b && Math.min((next + 1) * BLOCK_SIZE, this.size) <= upTo; next++) this.arrive(next, arrived[next - a]!);
        }, this.abort.signal, this.etag);
        if (n !== end - start) throw new Error(`short read of ${this.key} bytes ${start}-${end}: got ${n}`);
        for (; next <= b; next++) this.arrive(next, arrived[next - a]!);
      } finally {
        done();
        if (this.discarded && this.gets.inUse === 0) this.closeFd();
      }
    } catch (err) {
      for (let k = next; k <= b; k++) {
        this.inflight.delete(k);
        arrived[k - a]!.reject(err);
      }
      return;
    }
    if (this.complete) this.finish();
  }

  private arrive(k: number, d: Deferred<void>): void {
    if (!this.present[k]) {
      this.present[k] = 1;
      this.presentCount++;
      this.digest.advance(this.present);
    }
    this.inflight.delete(k);
    d.resolve();
  }

  private finish(): void {
    this.finished ??= (async () => {
      try {
        if (!(await this.digest.result())) {
          this.corrupt = new StoreError("corrupt", `[cache] ${this.key}: the fetched object does not match its ETag ${this.etag}; not cached`, { key: this.key, code: "BodyDigestMismatch" });
          this.log.error(`${this.key}: the streamed copy does not match its ETag ${this.etag} (MD5); reads of it fail with EIO, it is not cached, the next open fetches it again`);
          rmSync(this.tmpPath, { force: true });
          return;
        }
        // No fsync, as for whole-object downloads (object-cache.ts): the next start forgets the
        // cached objects of a run that ended with the machine. An fsync here made the READ of
        // the last block wait for the whole object to reach the disk: 1 GiB read cold at 41 MiB/s
        // with the cache on a disk throttled to 50 MB/s, against 383 for s3fs (bench test 6).
        renameSync(this.tmpPath, this.finalPath);
        this.renamed = true;
        this.onComplete(this);
      } catch (err) {
        this.log.warn(`cannot finalize cached ${this.key}: ${errMsg(err)}`);
      } finally {
        this.closeFd();
      }
    })();
  }

  /** Drop an incomplete object: cancel GETs, remove the temp file. */
  discard(): void {
    if ((this.complete && !this.corrupt) || this.discarded) return;
    this.discarded = true;
    this.digest.stop();
    this.abort.abort();
    if (this.gets.inUse === 0) this.closeFd();
    rmSync(this.tmpPath, { force: true });
  }
}
