/**
 * The object-store port: the only view of S3 the rest of bucketfs has.
 *
 * Is: a small interface (list, head, ranged get, download to a file, upload from a file)
 * plus the error type every implementation throws. Is not: an S3 client. The AWS SDK
 * implementation lives in `s3.ts`; nothing outside `store/` imports the SDK.
 */

/** One object as the store reports it. */
export interface ObjectInfo {
  /** Full key, e.g. `data/sample1.fastq.gz`. */
  key: string;
  size: number;
  /** Last-Modified of the object, ms since epoch. */
  lastModifiedMs: number;
  /** ETag without surrounding quotes. */
  etag: string;
  /** User metadata (`x-amz-meta-*`, lower-case names without the prefix). Only from head/get, not from list. */
  meta?: Record<string, string>;
}

/** One directory level of a delimiter listing. */
export interface Listing {
  objects: ObjectInfo[];
  /** Common prefixes, each ending in the delimiter, e.g. `data/run1/`. */
  prefixes: string[];
}

export interface DownloadOptions {
  signal?: AbortSignal;
  /** fsync the file before returning (default true). */
  durable?: boolean;
  /** Called as bytes arrive (cumulative count). */
  onProgress?: (bytes: number) => void;
}

export interface UploadOptions {
  /** Stored as `x-amz-meta-<name>`. */
  meta?: Record<string, string>;
  signal?: AbortSignal;
  onProgress?: (bytes: number) => void;
}

export interface ObjectStore {
  /** Bucket name, for messages. */
  readonly bucket: string;
  /** One level under `prefix` (which is "" or ends with "/"), every page, delimiter "/". */
  listDir(prefix: string, signal?: AbortSignal): Promise<Listing>;
  /** Every object under `prefix`, recursively (no delimiter), every page. */
  listAll(prefix: string, signal?: AbortSignal): AsyncIterable<ObjectInfo>;
  /** HEAD; `null` when the object does not exist. */
  head(key: string, signal?: AbortSignal): Promise<ObjectInfo | null>;
  /** True when at least one key starts with `prefix` (which ends in "/"). */
  hasPrefix(prefix: string, signal?: AbortSignal): Promise<boolean>;
  /**
   * Bytes [start, end) of an object. With `ifMatch`, only from that ETag's version: a changed
   * object fails with kind "precondition" instead of mixing two versions in one cache file.
   */
  getRange(key: string, start: number, end: number, signal?: AbortSignal, ifMatch?: string): Promise<Uint8Array>;
  /**
   * Bytes [start, end) handed to `sink` as they arrive (each chunk with its object offset),
   * so no chunk-sized buffer is assembled. Same errors and If-Match rule as getRange.
   * Resolves with the number of bytes delivered.
   */
  streamRange(
    key: string, start: number, end: number, sink: (chunk: Uint8Array, pos: number) => Promise<void>,
    signal?: AbortSignal, ifMatch?: string,
  ): Promise<number>;
  /**
   * Stream the whole object into `destPath` (created/truncated). Returns the object's info
   * including user metadata, as of the GET. The caller handles temp names and renames.
   */
  download(key: string, destPath: string, opts?: DownloadOptions): Promise<ObjectInfo>;
  /** Upload a local file as `key` (multipart when large). Returns the new ETag. */
  upload(key: string, srcPath: string, opts?: UploadOptions): Promise<string>;
  /**
   * A small object (at most SMALL_OBJECT_MAX bytes) read whole into memory with its ETag; null
   * when it does not exist. For bucketfs' own records (lease, commit records), not for data.
   */
  getSmall(key: string, signal?: AbortSignal): Promise<{ body: Uint8Array; etag: string } | null>;
  /**
   * PUT a small buffer. With `ifNoneMatch` it only succeeds when the key does not exist
   * (`If-None-Match: *`); with `ifMatch` only when the object's ETag is that one (`If-Match`).
   * A failed condition throws StoreError kind "precondition". Returns the new ETag.
   */
  putSmall(key: string, body: Uint8Array, cond?: { ifNoneMatch?: boolean; ifMatch?: string }, signal?: AbortSignal): Promise<string>;
}

/** Largest body getSmall reads (bucketfs' own records are far smaller). */
export const SMALL_OBJECT_MAX = 64 * 1024 * 1024;

/** What went wrong, in terms the filesystem layer maps to errno. */
export type StoreErrorKind =
  | "not-found"
  | "access-denied"
  | "no-such-bucket"
  | "throttled"
  | "network"
  | "aborted"
  | "precondition"
  | "other";

export class StoreError extends Error {
  readonly kind: StoreErrorKind;
  /** HTTP status when there was one. */
  readonly status: number | undefined;
  constructor(kind: StoreErrorKind, message: string, opts?: { cause?: unknown; status?: number }) {
    super(message, { cause: opts?.cause });
    this.name = "StoreError";
    this.kind = kind;
    this.status = opts?.status;
  }
  /** Worth retrying: throttling, 5xx, connection problems. */
  get retryable(): boolean {
    return this.kind === "throttled" || this.kind === "network" || (this.status !== undefined && this.status >= 500);
  }
}
