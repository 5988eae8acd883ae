/**
 * The whole-object check of a streamed object (cache/partial-object.ts), by what S3 holds for
 * it (store/checksum.ts `Verification`).
 *
 * Is: for a full-object checksum and a single-part MD5 ETag, a hash over bytes [0, size) read
 * back from the temp file in order, advanced whenever blocks complete, never ahead of the first
 * missing block, on a hashing Worker (store/hashing.ts), so no MD5 or CRC64NVME work runs on
 * the FUSE thread. A multipart ETag is the MD5 of its parts' MD5s, and a CRC64NVME over more
 * than CRC_SEGMENT joins from its segments' CRCs (crc64nvmeJoin), so those are hashed in
 * segments (the parts; 8 MiB pieces), each in order and never ahead of its first missing
 * block, several at once on the hashing Workers (a segment need not wait for the ones before
 * it, and the check of a 1 GiB object ends about when its last segment arrives, not one hash
 * pass later); then the MD5 of the MD5s, or the joined CRC, is compared. For a composite checksum, the part checksums
 * the part GETs were checked against (`partChecked`), compared at the end with the object's
 * composite checksum. `result()` says whether the bytes match. A mismatch on an object whose
 * MD5 ETag turns out not to be its MD5 (SSE-KMS, SSE-C: `confirm` asks S3) passes; an object
 * with nothing to check (`none`) passes at once (length only; the caller counts it). Is not:
 * the policy of what a reader gets (partial-object.ts holds the READ covering the last block
 * until `result()`, never renames an unverified file, and answers EIO on mismatch).
 */
import {
  compositeChecksum, crc64nvmeJoin, describeVerification, multipartEtagOfDigests, toBase64, toHex, type Verification,
} from "../store/checksum.ts";
import { rangeHasher, type RangeHasher } from "../store/hashing.ts";

/** A multipart ETag's part, or a CRC_SEGMENT piece of a CRC64NVME object: its own hash, fed from `from` to `to` as its blocks arrive. */
interface Segment {
  from: number;
  to: number;
  /** Bytes [from, queued) are asked of the hasher (in order, one `running` chain per segment). */
  queued: number;
  hasher: RangeHasher | undefined;
  running: Promise<void>;
  digest: Uint8Array | undefined;
}

/** How many segments past the first unhashed one `advance` looks at. */
const SEGMENT_LOOKAHEAD = 256;

/**
 * A full-object CRC64NVME is hashed in segments of this size, joined with crc64nvmeJoin, so
 * several hashing Workers share one object (0.65 s/GiB each) and the last segment's hash is all
 * that is left when the last block arrives. A join takes about 28 µs here: 128 per GiB.
 */
export const CRC_SEGMENT = 8 * 1024 * 1024;

export class StreamedDigest {
  private hasher: RangeHasher | undefined;
  private hashed = 0;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failure: unknown;
  /**
   * Hashed in segments, each on its own (multipart ETag: its parts, MD5; full-object CRC64NVME:
   * CRC_SEGMENT pieces); segments before `firstOpen` are queued to their end.
   */
  private segments: Segment[] | undefined;
  private segmentAlg: "md5" | "crc64nvme" = "md5";
  private firstOpen = 0;
  /** composite: each part's checksum as its GET was checked against it. */
  private partSums: (Uint8Array | undefined)[] = [];

  constructor(
    readonly etag: string,
    readonly size: number,
    private path: string,
    private blockSize: number,
    readonly v: Verification,
    /** Asked only on a mismatch of an MD5 ETag: true when S3 says the ETag is not the MD5 of the bytes. */
    private confirmNotMd5: () => Promise<boolean>,
    /**
     * Asked only on a mismatch of a multipart ETag: every part's bounds as S3 gives them one HEAD
     * per part (part sizes were assumed equal from part 1's), or undefined.
     */
    private partBoundsFromS3: () => Promise<number[] | undefined> = async () => undefined,
  ) {
    let bounds: number[] | undefined;
    if (v.kind === "multipart-etag") bounds = v.bounds;
    else if (v.kind === "full" && v.algorithm === "crc64nvme" && size > CRC_SEGMENT) {
      this.segmentAlg = "crc64nvme";
      bounds = [0];
      while (bounds.at(-1)! < size) bounds.push(Math.min(size, bounds.at(-1)! + CRC_SEGMENT));
    }
    if (bounds !== undefined) {
      this.segments = [];
      for (let k = 1; k < bounds.length; k++) {
        const from = bounds[k - 1]!;
        this.segments.push({ from, to: bounds[k]!, queued: from, hasher: undefined, running: Promise.resolve(), digest: undefined });
      }
      return;
    }
    const alg = v.kind === "full" ? v.algorithm : v.kind === "md5" ? "md5" : undefined;
    if (alg !== undefined) this.hasher = rangeHasher(alg);
  }

  /** True when the bytes will be checked. */
  get verifiable(): boolean {
    return this.v.kind !== "none";
  }

  /** Resolves once the hashing asked for so far is done (in segments: every segment's). */
  async idle(): Promise<void> {
    await this.running;
    await Promise.all((this.segments ?? []).map((p) => p.running));
  }

  /** In segments: how many are hashed to their end (in any order). */
  get segmentsHashed(): number {
    return this.segments?.filter((p) => p.digest !== undefined).length ?? 0;
  }

  /** What the bytes are checked against, for messages. */
  get what(): string {
    return describeVerification(this.v);
  }

  /**
   * Blocks are present (`present[i] !== 0`): hash what now forms an unbroken run from the start
   * (in segments: from each segment's start).
   */
  advance(present: Uint8Array): void {
    if (this.stopped) return;
    if (this.segments !== undefined) return this.advanceSegments(present);
    if (this.hasher === undefined) return;
    let upTo = Math.floor(this.hashed / this.blockSize);
    while (upTo < present.length && present[upTo]) upTo++;
    const target = Math.min(this.size, upTo * this.blockSize);
    if (target <= this.hashed) return;
    const prev = this.running ?? Promise.resolve();
    this.running = prev.then(() => this.hashTo(target));
  }

  /** composite: part `n` (1-based) matched this checksum (base64) when it was fetched. */
  partChecked(n: number, checksum: string): void {
    this.partSums[n - 1] = Buffer.from(checksum, "base64");
  }

  private advanceSegments(present: Uint8Array): void {
    const segs = this.segments!;
    const bs = this.blockSize;
    const last = Math.min(segs.length, this.firstOpen + SEGMENT_LOOKAHEAD);
    for (let i = this.firstOpen; i < last; i++) {
      const p = segs[i]!;
      if (p.queued >= p.to) continue;
      // The run of present blocks from the segment's next byte; a block shared with the next segment counts once present.
      let b = Math.floor(p.queued / bs);
      while (b * bs < p.to && present[b]) b++;
      const target = Math.min(p.to, b * bs);
      if (target <= p.queued) continue;
      const from = p.queued;
      p.queued = target;
      p.running = p.running.then(() => this.hashSegment(p, from, target));
    }
    while (this.firstOpen < segs.length && segs[this.firstOpen]!.queued >= segs[this.firstOpen]!.to) this.firstOpen++;
  }

  /** Bytes [from, to) of segment `p` into its own hash; its digest once they reach its end. */
  private async hashSegment(p: Segment, from: number, to: number): Promise<void> {
    if (this.stopped || this.failure !== undefined) return;
    try {
      p.hasher ??= rangeHasher(this.segmentAlg);
      await p.hasher.update(this.path, from, to);
      if (to === p.to) {
        p.digest = await p.hasher.digest();
        p.hasher.close();
        p.hasher = undefined;
      }
    } catch (err) {
      this.failure = err;
    }
  }

  private async hashTo(target: number): Promise<void> {
    const h = this.hasher;
    if (this.stopped || this.failure !== undefined || h === undefined || target <= this.hashed) return;
    try {
      await h.update(this.path, this.hashed, target);
      this.hashed = target;
    } catch (err) {
      this.failure = err;
    }
  }

  /**
   * Once every block is present: true when the bytes match (or cannot be checked), false when
   * they do not. A read-back failure counts as a mismatch (the file cannot be trusted).
   */
  async result(): Promise<boolean> {
    const v = this.v;
    if (v.kind === "none") return true;
    if (v.kind === "composite") {
      const sums = this.partSums;
      if (sums.length !== v.count || sums.some((s) => s === undefined)) return false;
      return compositeChecksum(v.algorithm, sums as Uint8Array[]) === `${v.value}-${v.count}`;
    }
    const segs = this.segments;
    if (segs !== undefined) {
      // Every block is present by now: whatever was not queued yet is.
      this.advanceSegments(new Uint8Array(Math.ceil(this.size / this.blockSize)).fill(1));
      await this.idle();
      if (this.failure !== undefined || segs.some((p) => p.digest === undefined)) return false;
      if (v.kind === "full") {
        return toBase64(crc64nvmeJoin(segs.map((p) => ({ crc: p.digest!, bytes: p.to - p.from })))) === v.value;
      }
      if (v.kind !== "multipart-etag") return false;
      if (segs.length === v.count && multipartEtagOfDigests(segs.map((p) => p.digest!)) === v.etag) return true;
      return await this.rehashParts(v.etag, v.bounds);
    }
    await this.running;
    if (this.hashed < this.size) await this.hashTo(this.size);
    const h = this.hasher!;
    try {
      if (this.failure !== undefined || this.hashed !== this.size) return false;
      const d = await h.digest();
      if (v.kind === "full") return toBase64(d) === v.value;
      if (v.kind !== "md5") return false;
      if (toHex(d) === v.md5) return true;
      return await this.confirmNotMd5().catch(() => false);
    } catch {
      return false;
    } finally {
      h.close();
    }
  }

  /**
   * A multipart ETag that did not match with part sizes taken from part 1 (parts of unequal
   * sizes can look like that): ask S3 for every part's size and, when they differ, hash the
   * file again with them.
   */
  private async rehashParts(etag: string, assumed: number[]): Promise<boolean> {
    const bounds = await this.partBoundsFromS3().catch(() => undefined);
    if (bounds === undefined || bounds.length !== assumed.length || bounds.every((b, i) => b === assumed[i])) return false;
    const h = rangeHasher("md5");
    try {
      const md5s: Uint8Array[] = [];
      for (let k = 1; k < bounds.length; k++) {
        await h.update(this.path, bounds[k - 1]!, bounds[k]!);
        md5s.push(await h.digest());
      }
      return multipartEtagOfDigests(md5s) === etag;
    } finally {
      h.close();
    }
  }

  /** Stop hashing (the object was discarded). */
  stop(): void {
    this.stopped = true;
    void (this.running ?? Promise.resolve()).then(() => this.hasher?.close());
    for (const p of this.segments ?? []) void p.running.then(() => p.hasher?.close());
  }
}
