/**
 * The whole-object check of a streamed object (cache/partial-object.ts): ranged GETs cannot be
 * checked one by one against an MD5 ETag, so the object's blocks are hashed in order, from the
 * cache file, as the run of present blocks from the start grows.
 *
 * Is: an MD5 over bytes [0, size) read back from the temp file through its own descriptor (so it
 * never races the writer's close), advanced whenever blocks complete, never ahead of the first
 * missing block, and a `result()` that says whether the bytes match the ETag. Objects whose ETag
 * is not an MD5 (multipart uploads) cannot be checked this way and pass at once (length only);
 * a mismatch on an object whose ETag turns out not to be its MD5 (SSE-KMS, SSE-C: `confirm`
 * asks S3) passes too. Is not: the policy of what a reader gets (partial-object.ts holds the
 * READ covering the last block until `result()`, never renames an unverified file, and answers
 * EIO on mismatch).
 */
import { closeSync, openSync, read as fsRead } from "node:fs";
import { etagDigest, type BodyCheck } from "../store/checksum.ts";

/** Bytes read back per step (one block). */
const STEP = 1024 * 1024;

export class StreamedDigest {
  private check: BodyCheck | undefined;
  private hashed = 0;
  private fd = -1;
  private running: Promise<void> | undefined;
  private stopped = false;
  private buf: Buffer | undefined;
  private failure: unknown;

  constructor(
    readonly etag: string,
    readonly size: number,
    private path: string,
    private blockSize: number,
    /** Asked only on a mismatch: true when S3 says the ETag is not the MD5 of the bytes. */
    private confirmNotMd5: () => Promise<boolean>,
  ) {
    this.check = etagDigest(etag);
  }

  /** True when the bytes will be checked (single-part MD5 ETag). */
  get verifiable(): boolean {
    return this.check !== undefined;
  }

  /** Blocks are present (`present[i] !== 0`): hash what now forms an unbroken run from the start. */
  advance(present: Uint8Array): void {
    if (this.check === undefined || this.stopped) return;
    let upTo = Math.floor(this.hashed / this.blockSize);
    while (upTo < present.length && present[upTo]) upTo++;
    const target = Math.min(this.size, upTo * this.blockSize);
    if (target <= this.hashed) return;
    const prev = this.running ?? Promise.resolve();
    this.running = prev.then(() => this.hashTo(target));
  }

  private async hashTo(target: number): Promise<void> {
    if (this.stopped || this.failure !== undefined || this.check === undefined) return;
    try {
      if (this.fd < 0) this.fd = openSync(this.path, "r");
      this.buf ??= Buffer.allocUnsafe(STEP);
      while (this.hashed < target && !this.stopped) {
        const want = Math.min(STEP, target - this.hashed);
        const n = await new Promise<number>((res, rej) =>
          fsRead(this.fd, this.buf!, 0, want, this.hashed, (e, got) => (e ? rej(e) : res(got))),
        );
        if (n <= 0) throw new Error(`cache file ended at ${this.hashed} of ${this.size} bytes`);
        this.check.update(this.buf.subarray(0, n));
        this.hashed += n;
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
    if (this.check === undefined) return true;
    await this.running;
    if (this.hashed < this.size) await this.hashTo(this.size);
    this.close();
    if (this.failure !== undefined || this.hashed !== this.size) return false;
    if (this.check.matches()) return true;
    return await this.confirmNotMd5().catch(() => false);
  }

  /** Stop hashing (the object was discarded). */
  stop(): void {
    this.stopped = true;
    void (this.running ?? Promise.resolve()).then(() => this.close());
  }

  private close(): void {
    if (this.fd >= 0) {
      closeSync(this.fd);
      this.fd = -1;
    }
  }
}
