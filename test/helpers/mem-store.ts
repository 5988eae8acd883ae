/**
 * The one in-memory `ObjectStore` for unit tests of pure logic (planning, ordering, hold-back).
 *
 * Is: a map of key -> bytes with S3's listing rules (delimiter levels, markers, lexicographic
 * order), ETags = MD5 of the bytes, If-Match / If-None-Match, and knobs tests use: a log of GETs,
 * downloads and uploads, injected failures, a delay per call, in-flight counting. It passes the
 * same contract suite as the real S3 store (test/helpers/store-contract.ts).
 * Is not: a stand-in for S3 in integration tests (those use MinIO, faults come from
 * test/helpers/fault-proxy.ts).
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { StoreError, type DownloadOptions, type Listing, type ObjectInfo, type ObjectIntegrity, type ObjectStore, type PartAnswer, type PartHead, type UploadOptions } from "../../src/store/types.ts";

export interface MemObject {
  data: Uint8Array;
  meta: Record<string, string>;
  etag: string;
  lastModifiedMs: number;
}

export class MemStore implements ObjectStore {
  readonly objects = new Map<string, MemObject>();
  /** Every ranged GET, in order. */
  gets: { key: string; start: number; end: number; ifMatch?: string }[] = [];
  downloads: string[] = [];
  uploads: string[] = [];
  uploadAttempts = 0;
  /** key -> error thrown by download (after half the bytes were written, like a cut connection). */
  failDownload = new Map<string, Error>();
  /** key -> error thrown by the next `times` uploads. */
  failUpload = new Map<string, { err: Error; times: number }>();
  failAllUploads: Error | null = null;
  /** Every call fails: proves a code path never touches the store. */
  forbidden = false;
  /** When set, every call fails with this error (S3 unreachable). */
  down: Error | undefined;
  /** Calls per method (listDir, listAll, head, hasPrefix, streamRange, download, upload, getSmall, putSmall). */
  readonly counts: Record<string, number> = {};
  delayMs = 0;
  /** key -> object offset whose byte streamRange delivers flipped (a corrupted body on the wire). */
  flipByte = new Map<string, number>();
  /** streamRange hands bytes to the sink in pieces of this size. */
  pieceBytes = 256 * 1024;
  private inflight = 0;
  maxInflight = 0;

  constructor(readonly bucket = "mem-bucket") {}

  put(key: string, data: string | Uint8Array, meta: Record<string, string> = {}, lastModifiedMs = Date.now()): MemObject {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : new Uint8Array(data);
    const o = { data: bytes, meta, etag: createHash("md5").update(bytes).digest("hex"), lastModifiedMs };
    this.objects.set(key, o);
    return o;
  }

  private async enter(what: string): Promise<void> {
    if (this.forbidden) throw new Error(`S3 called: ${what}`);
    this.counts[what] = (this.counts[what] ?? 0) + 1;
    if (this.down) throw this.down;
    this.inflight++;
    this.maxInflight = Math.max(this.maxInflight, this.inflight);
    try {
      if (this.delayMs) await Bun.sleep(this.delayMs);
    } finally {
      this.inflight--;
    }
  }

  private info(key: string, o: MemObject, withMeta: boolean): ObjectInfo {
    return { key, size: o.data.length, lastModifiedMs: o.lastModifiedMs, etag: o.etag, ...(withMeta ? { meta: { ...o.meta } } : {}) };
  }

  private sortedKeys(prefix: string): string[] {
    return [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  }

  async listDir(prefix: string, signal?: AbortSignal): Promise<Listing> {
    aborted(signal, "ListObjectsV2", prefix);
    await this.enter("listDir");
    const objects: ObjectInfo[] = [];
    const prefixes = new Set<string>();
    for (const k of this.sortedKeys(prefix)) {
      const rest = k.slice(prefix.length);
      const slash = rest.indexOf("/");
      if (slash >= 0) prefixes.add(prefix + rest.slice(0, slash + 1));
      else if (k !== prefix) objects.push(this.info(k, this.objects.get(k)!, false));
    }
    return { objects, prefixes: [...prefixes] };
  }

  async *listAll(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo> {
    aborted(signal, "ListObjectsV2", prefix);
    await this.enter("listAll");
    for (const k of this.sortedKeys(prefix)) {
      const o = this.objects.get(k);
      if (o) yield this.info(k, o, false);
    }
  }

  async head(key: string, signal?: AbortSignal): Promise<ObjectInfo | null> {
    aborted(signal, "HeadObject", key);
    await this.enter("head");
    const o = this.objects.get(key);
    return o ? this.info(key, o, true) : null;
  }

  async hasPrefix(prefix: string, signal?: AbortSignal): Promise<boolean> {
    aborted(signal, "ListObjectsV2", prefix);
    await this.enter("hasPrefix");
    return this.sortedKeys(prefix).length > 0;
  }

  async streamRange(
    key: string, start: number, end: number, sink: (chunk: Uint8Array, pos: number) => Promise<void>, signal?: AbortSignal, ifMatch?: string,
  ): Promise<number> {
    aborted(signal, "GetObject", key);
    if (start >= end) return 0;
    this.gets.push({ key, start, end, ...(ifMatch !== undefined ? { ifMatch } : {}) });
    await this.enter("streamRange");
    const o = this.objects.get(key);
    if (!o) throw new StoreError("not-found", `[mem] GetObject ${this.bucket}/${key}: 404 NoSuchKey`, { status: 404, code: "NoSuchKey", op: "GetObject", bucket: this.bucket, key });
    if (ifMatch !== undefined && ifMatch !== o.etag) {
      throw new StoreError("precondition", `[mem] GetObject ${this.bucket}/${key}: 412 PreconditionFailed`, { status: 412, code: "PreconditionFailed", op: "GetObject", bucket: this.bucket, key });
    }
    let bytes = o.data.subarray(Math.min(start, o.data.length), Math.min(end, o.data.length));
    const flip = this.flipByte.get(key);
    if (flip !== undefined && flip >= start && flip < start + bytes.byteLength) {
      bytes = bytes.slice();
      bytes[flip - start]! ^= 0xff;
    }
    for (let off = 0; off < bytes.byteLength; off += this.pieceBytes) {
      aborted(signal, "GetObject", key);
      await sink(bytes.slice(off, off + this.pieceBytes), start + off);
    }
    return bytes.byteLength;
  }

  /** Every object here is a single PUT: its MD5 ETag is what checks it. */
  async integrity(key: string, signal?: AbortSignal, _opts?: { everyPart?: boolean }): Promise<ObjectIntegrity | null> {
    aborted(signal, "HeadObject", key);
    await this.enter("integrity");
    const o = this.objects.get(key);
    return o ? { etag: o.etag, size: o.data.length } : null;
  }

  /** Part 1 is the whole (single-part) object, as S3 answers it; there is no other part. */
  async getPart(
    key: string, n: number, sink: (chunk: Uint8Array, pos: number) => Promise<void>, opts: { signal?: AbortSignal; ifMatch?: string } = {},
  ): Promise<PartAnswer> {
    const o = this.objects.get(key);
    if (!o || n !== 1) throw new StoreError("not-found", `[mem] GetObject ${this.bucket}/${key} part ${n}: 404`, { status: 404, op: "GetObject", bucket: this.bucket, key });
    const got = await this.streamRange(key, 0, o.data.length, sink, opts.signal, opts.ifMatch);
    return { start: 0, end: got, size: o.data.length, count: 1, etag: o.etag };
  }

  /** Part 1 is the whole (single-part) object, with no checksum of its own; there is no other part. */
  async headPart(key: string, n: number, opts: { signal?: AbortSignal; ifMatch?: string }): Promise<PartHead | null> {
    aborted(opts.signal, "HeadObject", key);
    await this.enter("headPart");
    const o = this.objects.get(key);
    if (!o) return null;
    if (opts.ifMatch !== undefined && opts.ifMatch !== o.etag) {
      throw new StoreError("precondition", `[mem] HeadObject ${this.bucket}/${key}: 412 PreconditionFailed`, { status: 412, op: "HeadObject", bucket: this.bucket, key });
    }
    if (n !== 1) throw new StoreError("other", `[mem] HeadObject ${this.bucket}/${key} part ${n}: 416 InvalidPartNumber`, { status: 416, op: "HeadObject", bucket: this.bucket, key });
    return { size: o.data.length, count: 1, etag: o.etag };
  }

  async download(key: string, destPath: string, opts?: DownloadOptions): Promise<ObjectInfo> {
    aborted(opts?.signal, "GetObject", key);
    const o = this.objects.get(key);
    if (!o) throw new StoreError("not-found", `[mem] GetObject ${this.bucket}/${key}: 404 NoSuchKey`, { status: 404, code: "NoSuchKey", op: "GetObject", bucket: this.bucket, key });
    writeFileSync(destPath, o.data.slice(0, Math.floor(o.data.length / 2)));
    await this.enter("download");
    aborted(opts?.signal, "GetObject", key);
    const err = this.failDownload.get(key);
    if (err) throw err;
    writeFileSync(destPath, o.data);
    opts?.onProgress?.(o.data.length);
    this.downloads.push(key);
    return this.info(key, o, true);
  }

  async upload(key: string, srcPath: string, opts?: UploadOptions): Promise<string> {
    this.uploadAttempts++;
    await this.enter("upload");
    aborted(opts?.signal, "PutObject", key);
    if (this.failAllUploads) throw this.failAllUploads;
    const f = this.failUpload.get(key);
    if (f && f.times > 0) {
      f.times--;
      throw f.err;
    }
    let data: Uint8Array;
    try {
      data = new Uint8Array(readFileSync(srcPath));
    } catch (err) {
      throw new StoreError("other", `[mem] PutObject ${this.bucket}/${key}: cannot read ${srcPath}`, { cause: err, op: "PutObject", bucket: this.bucket, key });
    }
    const o = this.put(key, data, opts?.meta ?? {});
    opts?.onProgress?.(data.length);
    this.uploads.push(key);
    return o.etag;
  }

  async getSmall(key: string, signal?: AbortSignal): Promise<{ body: Uint8Array; etag: string } | null> {
    aborted(signal, "GetObject", key);
    await this.enter("getSmall");
    const o = this.objects.get(key);
    return o ? { body: o.data.slice(), etag: o.etag } : null;
  }

  async putSmall(key: string, body: Uint8Array, cond: { ifNoneMatch?: boolean; ifMatch?: string } = {}, signal?: AbortSignal): Promise<string> {
    aborted(signal, "PutObject", key);
    await this.enter("putSmall");
    const cur = this.objects.get(key);
    if ((cond.ifNoneMatch && cur !== undefined) || (cond.ifMatch !== undefined && cur?.etag !== cond.ifMatch)) {
      throw new StoreError("precondition", `[mem] PutObject ${this.bucket}/${key}: 412 PreconditionFailed`, { status: 412, code: "PreconditionFailed", op: "PutObject", bucket: this.bucket, key });
    }
    return this.put(key, body).etag;
  }
}

function aborted(signal: AbortSignal | undefined, op: string, key: string): void {
  if (signal?.aborted) throw new StoreError("aborted", `[mem] ${op} ${key}: aborted`, { op, key });
}
