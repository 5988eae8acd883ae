/**
 * The whole-object check of a streamed object (cache/partial-object.ts), by what S3 holds for
 * it (store/checksum.ts `Verification`).
 *
 * Is: for a full-object checksum, a single-part MD5 ETag and a multipart ETag, a hash over
 * bytes [0, size) read back from the temp file in order, advanced whenever blocks complete,
 * never ahead of the first missing block, on the hashing Worker (store/hashing.ts), so no
 * MD5 or CRC64NVME work runs on the FUSE thread; a multipart ETag cuts an MD5 at every part
 * boundary and compares the MD5 of those MD5s. For a composite checksum, the part checksums
 * the part GETs were checked against (`partChecked`), compared at the end with the object's
 * composite checksum. `result()` says whether the bytes match. A mismatch on an object whose
 * MD5 ETag turns out not to be its MD5 (SSE-KMS, SSE-C: `confirm` asks S3) passes; an object
 * with nothing to check (`none`) passes at once (length only; the caller counts it). Is not:
 * the policy of what a reader gets (partial-object.ts holds the READ covering the last block
 * until `result()`, never renames an unverified file, and answers EIO on mismatch).
 */
import {
  compositeChecksum, describeVerification, multipartEtagOfDigests, toBase64, toHex, type Verification,
} from "../store/checksum.ts";
import { rangeHasher, type RangeHasher } from "../store/hashing.ts";

export class StreamedDigest {
  private hasher: RangeHasher | undefined;
  private hashed = 0;
  private running: Promise<void> | undefined;
  private stopped = false;
  private failure: unknown;
  /** multipart-etag: the MD5 of each part hashed so far. */
  private partMd5s: Uint8Array[] = [];
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
    const alg = v.kind === "full" ? v.algorithm : v.kind === "md5" || v.kind === "multipart-etag" ? "md5" : undefined;
    if (alg !== undefined) this.hasher = rangeHasher(alg);
  }

  /** True when the bytes will be checked. */
  get verifiable(): boolean {
    return this.v.kind !== "none";
  }

  /** What the bytes are checked against, for messages. */
  get what(): string {
    return describeVerification(this.v);
  }

  /** Blocks are present (`present[i] !== 0`): hash what now forms an unbroken run from the start. */
  advance(present: Uint8Array): void {
    if (this.hasher === undefined || this.stopped) return;
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

  private async hashTo(target: number): Promise<void> {
    const h = this.hasher;
    if (this.stopped || this.failure !== undefined || h === undefined || target <= this.hashed) return;
    try {
      if (this.v.kind === "multipart-etag") {
        // One MD5 per part: ranges never cross a part boundary, and each boundary cuts a digest.
        const b = this.v.bounds;
        while (this.hashed < target && !this.stopped) {
          const end = b[this.partMd5s.length + 1]!;
          const to = Math.min(target, end);
          await h.update(this.path, this.hashed, to);
          this.hashed = to;
          if (to === end) this.partMd5s.push(await h.digest());
        }
      } else {
        await h.update(this.path, this.hashed, target);
        this.hashed = target;
      }
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
    await this.running;
    if (this.hashed < this.size) await this.hashTo(this.size);
    const h = this.hasher!;
    try {
      if (this.failure !== undefined || this.hashed !== this.size) return false;
      if (v.kind === "multipart-etag") {
        if (this.partMd5s.length === v.count && multipartEtagOfDigests(this.partMd5s) === v.etag) return true;
        return await this.rehashParts(v.etag, v.bounds);
      }
      const d = await h.digest();
      if (v.kind === "full") return toBase64(d) === v.value;
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
  }
}
