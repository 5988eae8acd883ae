/**
 * A large object being fetched into the cache while it is read: the streaming read path.
 *
 * Is: a sparse temp file of the object's size plus a map of which 1 MiB blocks are present.
 * A read waits only for the blocks it needs. How far ahead to fetch is read-ahead.ts's policy,
 * judged per reader (`reader()`, one per open file handle): the first READ fetches its own
 * blocks, in-order READs that reach a new block double a window from 2 blocks up to `maxWindowBlocks` (stretched on a
 * far link, measured by the shortest time to first byte of this object's GETs, with twice
 * `maxInflight` GETs), fetched as parallel ranged GETs of up to `chunkBlocks`; random readers
 * fetch single blocks, so `head -c 100` of a 10 GiB object costs one small GET. Every GET carries If-Match with the ETag, so a file never mixes two versions. At
 * most `maxInflight` GETs run at once, and each streams its body into the file as it arrives;
 * a READ waits only until its own blocks are written, not for the rest of their GET
 * (no chunk-sized buffers: a 1 GiB cold read peaked at 177-195 MiB RSS against 284-300 MiB
 * with whole-chunk buffers, and was faster), so memory stays bounded whatever the object size.
 * What checks the bytes comes from S3 (ObjectStore.integrity, one HEAD, two for a multipart
 * object; store/checksum.ts chooses), or from what it said at an earlier open of the same
 * version (`known`, object-cache.ts remembers it). An object with a composite checksum is fetched by part
 * (GET partNumber=N; a part larger than `chunkBlocks` as ranged GETs in parallel, checked from the
 * file against the checksum HEAD partNumber=N says, `partByRanges`), and a part's blocks count as
 * present only once the part matched its own checksum: a reader never sees its unchecked bytes, a bad part is fetched again by the store,
 * and one that stays bad fails the READs that need it with EIO (a part answer without its
 * checksum turns the check of the copy into its multipart ETag's, `fallBackToEtag`). Every other object (full-object
 * checksum, MD5 ETag, multipart ETag) is checked whole (object-digest.ts, hashed in order on a
 * hashing Worker as blocks complete, a multipart ETag part by part); when every block is present and the check passes, the file
 * is renamed to its final name and recorded as cached. The READ covering the last block of a
 * complete object waits for that check; on a mismatch it and every later READ of this copy fail
 * with EIO, the temp file is removed and never renamed, and the next open fetches a fresh copy.
 * An object nothing can check is served on its length alone, with one log line. A composite
 * copy may be kept incomplete after its last close (`retainable`, `keptParts()`; object-cache.ts
 * decides) and resumed later from its file and the parts' recorded checksums (`resume`).
 * Is not: the
 * whole-object path for small files (object-cache.ts fetchWhole()).
 */
import { closeSync, fstatSync, openSync, renameSync, rmSync, ftruncateSync, write as fsWrite } from "node:fs";
import { StoreError, type ObjectStore } from "../store/types.ts";
import { errMsg, type Logger } from "../util/log.ts";
import { StreamedDigest } from "./object-digest.ts";
import { chooseVerification, multipartEtagParts, partBounds, toBase64, type ObjectIntegrity, type Verification } from "../store/checksum.ts";
import { rangeHasher } from "../store/hashing.ts";
import { createLimiter, deferred, type Deferred, type Limiter } from "../util/async.ts";
import { ReadAhead, stretchFor } from "./read-ahead.ts";

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
  /**
   * GETs of this object in flight: `maxInflight`, twice that for a reader whose window is
   * stretched for a far link (capacity 2 × maxInflight; a GET weighs 2, or 1 when stretched).
   */
  private gets: Limiter;
  private fd: number;
  /** The read-ahead policy (read-ahead.ts) of READs that come without their reader's own. */
  private ra: ReadAhead;
  /** How far a sequential reader's window may stretch on this object's link (stretchFor). */
  private stretch = 1;
  /** The shortest time to first byte of this object's GETs (ms): the link's round trip, about. */
  private minTtfbMs: number | undefined;
  private abort = new AbortController();
  private finished: Promise<void> | undefined;
  private discarded = false;
  private fdOpen = true;
  /** Set once the temp file has been renamed to its final name (`complete` is true earlier). */
  private renamed = false;
  /** The whole-object check, once S3 said what it holds for the object (`ready()`). */
  private digest: StreamedDigest | undefined;
  private plan: Promise<StreamedDigest> | undefined;
  /** A multipart ETag: the check may be a composite checksum, which decides how blocks are fetched. */
  private multipart: boolean;
  /**
   * composite: fetched by part (GET partNumber=N); stays so for this copy even when a part
   * without its checksum turns the check into the multipart ETag's (`fallBackToEtag`).
   */
  private partMode: (Verification & { kind: "composite" }) | undefined;
  /** composite: big parts may come as ranges (partByRanges) until a HEAD answer lacks the part's checksum. */
  private rangedParts = true;
  /** composite: part 1's own checksum as the integrity answer gave it (its HEAD partNumber=1), so partByRanges need not ask again. */
  private part1Checksum: string | undefined;
  /** What `integrity` said of the ETag: not an MD5 (SSE-KMS/SSE-C), so it cannot check parts. */
  private etagNotMd5 = false;
  /** composite: parts in the file (1 per part), and the fetch of each part under way. */
  private partDone: Uint8Array | undefined;
  private partFetches = new Map<number, Promise<void>>();
  /** composite: the checksum (base64) each part in the file matched when it was fetched. */
  private partSums = new Map<number, string>();
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
    /**
     * Parts kept from an earlier open (the file at `tmpPath` holds them; part number -> the
     * checksum each matched): counted as present once S3 confirms the same part layout.
     */
    private resume?: Record<number, string>,
    /**
     * What S3 said of this object's bytes at an earlier open (same key): used instead of asking
     * again when its ETag is this copy's; `learned` hears each answer worth remembering.
     */
    private known?: { integrity?: ObjectIntegrity; learned(i: ObjectIntegrity): void },
  ) {
    this.blocks = Math.ceil(size / BLOCK_SIZE);
    this.present = new Uint8Array(this.blocks);
    this.fd = openSync(tmpPath, resume ? "r+" : "w+", 0o600);
    if (!resume || fstatSync(this.fd).size !== size) ftruncateSync(this.fd, size);
    this.ra = this.reader();
    this.gets = createLimiter(2 * o.maxInflight);
    this.multipart = multipartEtagParts(etag) !== undefined;
    // Learned now, beside the first GET: single-part objects never wait for it before the end.
    void this.ready().catch(() => {});
  }

  /** What checks this object, learned from S3 once (a failure is asked again by the next caller). */
  private ready(): Promise<StreamedDigest> {
    this.plan ??= this.learnPlan().catch((err: unknown) => {
      this.plan = undefined;
      throw err;
    });
    return this.plan;
  }

  private async learnPlan(): Promise<StreamedDigest> {
    // The same version was opened before: what S3 said of it then still holds (the bytes of an
    // ETag do not change, and every GET carries If-Match, so a newer version fails them).
    const remembered = this.known?.integrity;
    // Else with this copy's ETag: a multipart object's two HEADs go out at once (one round trip).
    const i = remembered?.etag === this.etag ? remembered : await this.store.integrity(this.key, this.abort.signal, { etag: this.etag });
    if (i === null) {
      throw new StoreError("not-found", `[cache] ${this.key}: gone from the bucket while being read`, { key: this.key, code: "NoSuchKey" });
    }
    if (i !== remembered && i.etag === this.etag) this.known?.learned(i);
    if (i.etag === this.etag) this.part1Checksum = i.parts?.checksum1;
    // Another version now: what S3 holds is not this copy's (its GETs fail on If-Match anyway).
    const v: Verification = i.etag === this.etag ? chooseVerification(i) : chooseVerification({ etag: this.etag, size: this.size });
    const d = new StreamedDigest(
      this.etag, this.size, this.tmpPath, BLOCK_SIZE, v,
      async () => (await this.store.head(this.key))?.etagNotMd5 === true,
      async () => {
        const again = await this.store.integrity(this.key, this.abort.signal, { everyPart: true });
        return again?.etag === this.etag && again.parts ? partBounds(again.parts, this.size) : undefined;
      },
    );
    if (this.digest) return this.digest;
    this.digest = d;
    this.etagNotMd5 = i.etagNotMd5 === true;
    if (this.discarded) d.stop();
    else d.advance(this.present);
    if (v.kind === "composite") {
      this.partMode = v;
      this.partDone = new Uint8Array(v.count);
      this.resumeParts(v, d);
    }
    return d;
  }

  /** composite: the kept parts of an earlier open count as present (they matched their checksums then). */
  private resumeParts(v: Verification & { kind: "composite" }, d: StreamedDigest): void {
    const kept = this.resume;
    this.resume = undefined;
    if (!kept) return;
    for (const [n, sum] of Object.entries(kept)) {
      const k = Number(n);
      if (!Number.isInteger(k) || k < 1 || k > v.count || this.partDone![k - 1]) continue;
      this.partDone![k - 1] = 1;
      this.partSums.set(k, sum);
      d.partChecked(k, sum);
      this.markPart(v, k);
    }
    if (this.complete) this.finish();
  }

  /** composite: the blocks of part k whose every part is now in count as present. */
  private markPart(v: Verification & { kind: "composite" }, k: number): void {
    const last = Math.floor((v.bounds[k]! - 1) / BLOCK_SIZE);
    for (let blk = Math.floor(v.bounds[k - 1]! / BLOCK_SIZE); blk <= last; blk++) {
      if (this.present[blk] || !this.blockChecked(v, blk)) continue;
      this.present[blk] = 1;
      this.presentCount++;
    }
  }

  /** composite: the parts in the file, each with the checksum it matched (what is kept after a close). */
  keptParts(): Record<number, string> {
    const out: Record<number, string> = {};
    for (const [k, sum] of this.partSums) if (this.partDone?.[k - 1]) out[k] = sum;
    return out;
  }

  /**
   * A part answer came without its own checksum: check this copy by its multipart ETag instead
   * (MD5 of each part, hashed in order like any ETag-checked copy). False when the ETag cannot
   * check it (not a multipart ETag, or SSE-KMS/SSE-C).
   */
  private fallBackToEtag(v: Verification & { kind: "composite" }): boolean {
    if (this.digest?.v.kind === "multipart-etag") return true;
    if (this.etagNotMd5 || multipartEtagParts(this.etag) !== v.count) return false;
    const etagCheck: Verification = { kind: "multipart-etag", etag: this.etag.toLowerCase(), count: v.count, bounds: v.bounds };
    const d = new StreamedDigest(this.etag, this.size, this.tmpPath, BLOCK_SIZE, etagCheck, async () => false);
    this.digest?.stop();
    this.digest = d;
    this.plan = Promise.resolve(d);
    this.log.warn(`${this.key}: S3 sent a part without its x-amz-checksum-${v.algorithm}; this copy is checked by its multipart ETag instead`);
    return true;
  }

  /** What the bytes are checked against, once known. */
  get verification(): Verification | undefined {
    return this.digest?.v;
  }

  get complete(): boolean {
    return this.presentCount === this.blocks;
  }

  /** True once the copy is verified and renamed into place: reads need no more waiting. */
  get done(): boolean {
    return this.renamed;
  }

  /**
   * Worth keeping after its last reader closed: every block it counts as present came in a part
   * that matched its own checksum (composite, not fallen back to the ETag), and at least one did.
   * Copies checked only whole (ETag, full-object checksum) are never kept incomplete.
   */
  get retainable(): boolean {
    return !this.corrupt && !this.discarded && !this.renamed && this.digest?.v.kind === "composite" && this.presentCount > 0;
  }

  /** Bytes of checked parts in the file (what an idle copy holds on disk). */
  get checkedBytes(): number {
    const v = this.partMode;
    if (!v || !this.partDone) return 0;
    let n = 0;
    for (let k = 1; k <= v.count; k++) if (this.partDone[k - 1] && this.partSums.has(k)) n += v.bounds[k]! - v.bounds[k - 1]!;
    return n;
  }

  /** The path readers should open: the final one once verified and renamed into place. */
  get path(): string {
    return this.renamed ? this.finalPath : this.tmpPath;
  }

  /**
   * A read-ahead state for one reader (an open file handle), so that readers of the same object
   * (20 index queries at once) are each judged sequential or random by their own READs.
   */
  reader(): ReadAhead {
    return new ReadAhead({ chunkBlocks: this.o.chunkBlocks, maxWindowBlocks: this.o.maxWindowBlocks }, BLOCK_SIZE);
  }

  /**
   * Wait until bytes [off, off+len) are in the file; schedule read-ahead for sequential readers,
   * as `ra` (the reader's own, from `reader()`; by default one shared by every reader) judges.
   */
  async ensure(off: number, len: number, ra: ReadAhead = this.ra): Promise<void> {
    if (this.corrupt) throw this.corrupt;
    if (this.renamed || len <= 0 || off >= this.size) return;
    if (this.multipart) await this.ready();
    ra.stretch = this.stretch;
    if (this.partMode) await this.ensureParts(this.partMode, off, len, ra);
    else await this.ensureBlocks(off, len, ra);
    // The READ that covers the last byte waits for the whole-object check once the object is
    // complete, so a reader that reads to the end learns of a bad copy before EOF.
    if (this.complete && off + len >= this.size) {
      this.finish();
      await this.finished;
      if (this.corrupt) throw this.corrupt;
    }
  }

  private async ensureBlocks(off: number, len: number, ra: ReadAhead): Promise<void> {
    if (this.complete) return;
    const first = Math.floor(off / BLOCK_SIZE);
    const last = Math.floor((Math.min(off + len, this.size) - 1) / BLOCK_SIZE);
    const step = ra.observe(off, len);
    // A random read, or the very first read of this object (which may be `head -c 100` of a
    // huge object): only the blocks asked for. Read-ahead starts, small, when the next read
    // shows the reader is sequential, and grows with each read that continues the scan.
    if (!step.sequential) {
      this.schedule(first, last, 1);
      return this.waitFor(first, last);
    }
    // Sequential: GETs of the policy's unit on unit boundaries, the window's end rounded up to
    // one, so the growing window never produces the small tail GETs it would if its end moved
    // by each read's size.
    const u = step.unitBlocks;
    const end = Math.min(this.blocks - 1, Math.ceil((last + step.aheadBlocks + 1) / u) * u - 1);
    // Read-ahead: errors surface when a reader actually needs those blocks.
    this.schedule(first, end, u);
    return this.waitFor(first, last);
  }

  /** A GET of this object answered after `ms`: the far-link stretch of the window follows the shortest. */
  private firstByte(ms: number): void {
    if (this.minTtfbMs !== undefined && ms >= this.minTtfbMs) return;
    this.minTtfbMs = ms;
    this.stretch = stretchFor(ms);
  }

  /** What a GET weighs in `gets`: 2, or 1 while the window is stretched (twice the GETs in flight). */
  private get getWeight(): number {
    return this.stretch > 1 ? 1 : 2;
  }

  /**
   * composite: the parts covering [off, off+len) (and, for a sequential reader, the parts of its
   * read-ahead window), each fetched whole and checked; resolves once the asked parts are in.
   */
  private async ensureParts(v: Verification & { kind: "composite" }, off: number, len: number, ra: ReadAhead): Promise<void> {
    if (this.complete) return;
    const end = Math.min(off + len, this.size);
    const step = ra.observe(off, len);
    const first = partIndex(v.bounds, off);
    const last = partIndex(v.bounds, end - 1);
    const asked: Promise<void>[] = [];
    for (let k = first; k <= last; k++) asked.push(this.partOnce(v, k));
    if (step.sequential && step.aheadBlocks > 0) {
      const ahead = partIndex(v.bounds, Math.min(this.size - 1, end + step.aheadBlocks * BLOCK_SIZE));
      for (let k = last + 1; k <= ahead; k++) void this.partOnce(v, k).catch(() => {});
    }
    await Promise.all(asked);
  }

  private partOnce(v: Verification & { kind: "composite" }, k: number): Promise<void> {
    if (this.partDone![k - 1]) return Promise.resolve();
    let p = this.partFetches.get(k);
    if (!p) {
      p = this.fetchPart(v, k).finally(() => this.partFetches.delete(k));
      this.partFetches.set(k, p);
    }
    return p;
  }

  /**
   * Part k, checked against its own checksum; its blocks then count. A part larger than a chunk
   * comes as ranged GETs of a chunk each, in parallel (`partByRanges`); any other part, or one
   * the ranges could not check, by GET partNumber=k, checked by the store as it streams.
   */
  private async fetchPart(v: Verification & { kind: "composite" }, k: number): Promise<void> {
    const start = v.bounds[k - 1]!;
    const end = v.bounds[k]!;
    let checksum: string | undefined | null = null;
    if (this.rangedParts && end - start > this.o.chunkBlocks * BLOCK_SIZE) checksum = await this.partByRanges(v, k, start, end);
    if (checksum === null) checksum = await this.partByNumber(v, k, start, end);
    if (this.discarded) return;
    if (checksum !== undefined) {
      this.digest!.partChecked(k, checksum);
      this.partSums.set(k, checksum);
    }
    this.partDone![k - 1] = 1;
    this.markPart(v, k);
    this.digest!.advance(this.present);
    if (this.complete) this.finish();
  }

  /**
   * Part k by GET partNumber=k, checked against its own checksum by the store. Resolves with
   * that checksum, or undefined when the answer carried none and the copy is now checked by its
   * multipart ETag (`fallBackToEtag`).
   */
  private async partByNumber(v: Verification & { kind: "composite" }, k: number, start: number, end: number): Promise<string | undefined> {
    const done = await this.gets.acquire(this.getWeight);
    const t0 = performance.now();
    let answered = false;
    try {
      const ans = await this.store.getPart(this.key, k, async (chunk, pos) => {
        if (this.discarded) throw new Error(`fetch of ${this.key} cancelled`);
        if (!answered) {
          answered = true;
          this.firstByte(performance.now() - t0);
        }
        if (pos < start || pos + chunk.byteLength > end) throw new Error(`${this.key}: part ${k} is not bytes ${start}-${end} as its HEAD said`);
        await writeAt(this.fd, chunk, pos);
      }, { signal: this.abort.signal, ifMatch: this.etag, check: v.algorithm });
      if (ans.start !== start || ans.end !== end) {
        throw new StoreError("corrupt", `[cache] ${this.key}: part ${k} came as bytes ${ans.start}-${ans.end}, not ${start}-${end}`, { key: this.key, code: "PartLayout" });
      }
      if (ans.checksum === undefined && !this.fallBackToEtag(v)) {
        throw new StoreError("corrupt", `[cache] ${this.key}: part ${k} came without its x-amz-checksum-${v.algorithm}, and the ETag cannot check it`, { key: this.key, code: "PartChecksumMissing" });
      }
      return ans.checksum;
    } finally {
      done();
      if (this.discarded && this.gets.inUse === 0) this.closeFd();
    }
  }

  /**
   * Part k (larger than a chunk) as ranged GETs of a chunk each, in parallel, like any
   * sequential read-ahead, so one big part is not one connection's worth of bandwidth (64 MiB
   * parts at 100 ms RTT: the first READ waited 0.57 s for its part on one connection). Beside
   * them a HEAD partNumber=k says the part's own checksum (for part 1, the integrity answer's HEAD
   * partNumber=1 already said it); once every range is in the file, the
   * part's bytes are hashed from the file on a hashing Worker and compared with it. Resolves
   * with the checksum the part matched, or null when the ranges could not check it (no part
   * checksum in the HEAD answer: no more parts of this copy by ranges; a mismatch: logged),
   * and the caller fetches the part by number.
   */
  private async partByRanges(v: Verification & { kind: "composite" }, k: number, start: number, end: number): Promise<string | null> {
    // Part 1's checksum came with the integrity answer (the same HEAD partNumber=1, same ETag).
    const head = k === 1 && this.part1Checksum !== undefined
      ? Promise.resolve({ size: end - start, count: v.count, etag: this.etag, checksum: this.part1Checksum })
      : this.store.headPart(this.key, k, { signal: this.abort.signal, ifMatch: this.etag, algorithm: v.algorithm });
    head.catch(() => {});
    const chunk = this.o.chunkBlocks * BLOCK_SIZE;
    const ranges: Promise<void>[] = [];
    for (let a = start; a < end; a += chunk) ranges.push(this.getRange(a, Math.min(end, a + chunk)));
    // Every range settles before the part is judged: none may still write into it after.
    const failed = (await Promise.allSettled(ranges)).find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
    const h = await head;
    if (h === null) throw new StoreError("not-found", `[cache] ${this.key}: gone from the bucket while being read`, { key: this.key, code: "NoSuchKey" });
    if (h.checksum === undefined || h.size !== end - start) {
      this.rangedParts = false;
      return null;
    }
    let got: string | undefined;
    const hasher = rangeHasher(v.algorithm);
    try {
      await hasher.update(this.tmpPath, start, end);
      got = toBase64(await hasher.digest());
    } catch (err) {
      if (this.discarded) throw new Error(`fetch of ${this.key} cancelled`);
      this.log.warn(`${this.key}: cannot hash part ${k} from the cache file (${errMsg(err)}); fetching it again whole`);
      return null;
    } finally {
      hasher.close();
    }
    if (got === h.checksum) return got;
    this.log.warn(`${this.key}: part ${k}, fetched as ${ranges.length} ranges, does not match its x-amz-checksum-${v.algorithm}; fetching it again whole`);
    return null;
  }

  /** composite: every part that holds bytes of block `blk` is checked and in the file. */
  private blockChecked(v: Verification & { kind: "composite" }, blk: number): boolean {
    const a = partIndex(v.bounds, blk * BLOCK_SIZE);
    const b = partIndex(v.bounds, Math.min(this.size, (blk + 1) * BLOCK_SIZE) - 1);
    for (let k = a; k <= b; k++) if (!this.partDone![k - 1]) return false;
    return true;
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
      await this.getRange(a * BLOCK_SIZE, Math.min((b + 1) * BLOCK_SIZE, this.size), (upTo) => {
        for (; next <= b && Math.min((next + 1) * BLOCK_SIZE, this.size) <= upTo; next++) this.arrive(next, arrived[next - a]!);
      });
      for (; next <= b; next++) this.arrive(next, arrived[next - a]!);
    } catch (err) {
      for (let k = next; k <= b; k++) {
        this.inflight.delete(k);
        arrived[k - a]!.reject(err);
      }
      return;
    }
    if (this.complete) this.finish();
  }

  /**
   * Bytes [start, end) in one ranged GET, under `gets`, written to the file as they arrive (no
   * chunk-sized buffer is ever assembled); `written(upTo)` after each write (a range arrives in
   * order: a retry resumes at the first byte not delivered).
   */
  private async getRange(start: number, end: number, written?: (upTo: number) => void): Promise<void> {
    const done = await this.gets.acquire(this.getWeight);
    const t0 = performance.now();
    let answered = false;
    try {
      const n = await this.store.streamRange(this.key, start, end, async (chunk, pos) => {
        // Never write after discard(): the fd may already be closed and its number reused.
        if (this.discarded) throw new Error(`fetch of ${this.key} cancelled`);
        if (!answered) {
          answered = true;
          this.firstByte(performance.now() - t0);
        }
        if (pos < start || pos + chunk.byteLength > end) throw new Error(`${this.key}: server sent more than bytes ${start}-${end}`);
        await writeAt(this.fd, chunk, pos);
        written?.(pos + chunk.byteLength);
      }, this.abort.signal, this.etag);
      if (n !== end - start) throw new Error(`short read of ${this.key} bytes ${start}-${end}: got ${n}`);
    } finally {
      done();
      if (this.discarded && this.gets.inUse === 0) this.closeFd();
    }
  }

  private arrive(k: number, d: Deferred<void>): void {
    if (!this.present[k]) {
      this.present[k] = 1;
      this.presentCount++;
      this.digest?.advance(this.present);
    }
    this.inflight.delete(k);
    d.resolve();
  }

  private finish(): void {
    this.finished ??= (async () => {
      try {
        let d: StreamedDigest;
        try {
          d = await this.ready();
        } catch (err) {
          // Nothing said what checks this copy: it is not served as checked, nor cached.
          this.corrupt = new StoreError("corrupt", `[cache] ${this.key}: cannot learn what checks it (${errMsg(err)}); not cached`, { key: this.key, code: "CheckUnknown" });
          this.log.error(`${this.key}: cannot learn what S3 holds to check the streamed copy (${errMsg(err)}); reads of it fail with EIO, the next open fetches it again`);
          rmSync(this.tmpPath, { force: true });
          return;
        }
        if (!(await d.result())) {
          this.corrupt = new StoreError("corrupt", `[cache] ${this.key}: the fetched object does not match its ${d.what}; not cached`, { key: this.key, code: "BodyDigestMismatch" });
          this.log.error(`${this.key}: the streamed copy does not match its ${d.what} (ETag ${this.etag}); reads of it fail with EIO, it is not cached, the next open fetches it again`);
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
    this.digest?.stop();
    this.abort.abort();
    if (this.gets.inUse === 0) this.closeFd();
    rmSync(this.tmpPath, { force: true });
  }
}

/** The part (1-based) holding byte `pos`, where part k is [bounds[k-1], bounds[k]). */
function partIndex(bounds: number[], pos: number): number {
  let lo = 1;
  let hi = bounds.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (pos < bounds[mid]!) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
