/**
 * The object-store port: the only view of S3 the rest of bucketfs has.
 *
 * Is: a small interface (list, head, ranged get, download to a file, upload from a file, a
 * small conditional put) plus the error type every implementation throws. Is not: an S3
 * client. The S3 implementation lives in `s3.ts` + `s3/` (one request path, one retry
 * policy); the in-memory fake for unit tests is test/helpers/mem-store.ts, and both pass the
 * contract suite in test/helpers/store-contract.ts.
 */

import type { ChecksumAlgorithm, ObjectIntegrity } from "./checksum.ts";

export type { ObjectIntegrity };

/** Where a part answer (GET partNumber=N) sits in its object, and what it says of itself. */
export interface PartAnswer {
  /** The part's bytes are [start, end) of the object (Content-Range). */
  start: number;
  end: number;
  /** The object's size and its parts count (x-amz-mp-parts-count; 1 for a single-part object). */
  size: number;
  count: number;
  /** The part's own checksum (base64 raw) when the answer carried one of `check`'s algorithm. */
  checksum?: string;
  etag: string;
}

/** What S3 says of one part without its bytes (HEAD partNumber=N). */
export interface PartHead {
  /** The part's size (Content-Length). */
  size: number;
  /** The object's parts count (x-amz-mp-parts-count; 1 for a single-part object). */
  count: number;
  /** The part's own checksum (base64 raw) of the algorithm asked for, when the answer carried one. */
  checksum?: string;
  etag: string;
}

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
  /**
   * From head/get only: true when the ETag is known NOT to be the MD5 of the bytes even though
   * it looks like one (SSE-KMS or SSE-C encrypted objects), so it must not be used to verify them.
   */
  etagNotMd5?: boolean;
  /**
   * From download only: what the bytes were checked against (`full-object crc64nvme`, `MD5
   * ETag`, ...), and `unverified: true` when nothing S3 holds could check them (length only).
   */
  checkedWith?: string;
  unverified?: boolean;
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
  /** Told the whole object's checksum as S3 accepted it (full-object CRC64NVME, base64), once uploaded. */
  onChecksum?: (c: { algorithm: "crc64nvme"; value: string }) => void;
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
   * Bytes [start, end) handed to `sink` as they arrive (each chunk with its object offset),
   * so no chunk-sized buffer is assembled. With `ifMatch`, only from that ETag's version: a
   * changed object fails with kind "precondition" instead of mixing two versions in one cache
   * file. Resolves with the number of bytes delivered (fewer than asked at the object's end).
   * A failure before the first byte reached `sink` is retried inside the store; the caller
   * verifies what a range cannot (see cache/object-digest.ts).
   */
  streamRange(
    key: string, start: number, end: number, sink: (chunk: Uint8Array, pos: number) => Promise<void>,
    signal?: AbortSignal, ifMatch?: string,
  ): Promise<number>;
  /**
   * What S3 holds to check the object's bytes: its ETag, size, checksum (HEAD with
   * x-amz-checksum-mode: ENABLED) and, for a multipart object without a full-object checksum,
   * its parts (HEAD partNumber=1: x-amz-mp-parts-count and the size of part 1; every part's size
   * when they cannot all be that size, or with `everyPart`). With `etag`, the ETag the caller
   * holds, a multipart object's two HEADs may go out at once. Null when absent.
   */
  integrity(key: string, signal?: AbortSignal, opts?: { everyPart?: boolean; etag?: string }): Promise<ObjectIntegrity | null>;
  /**
   * Part `n` (1-based) of a multipart object (GET partNumber=n, If-Match `ifMatch`), handed to
   * `sink` with object offsets as it arrives. With `check`, the part's bytes are verified against
   * the part checksum of that algorithm in the answer; a mismatch or a short body is fetched
   * again (the sink sees the part again from its start), and fails with kind "corrupt" when it
   * stays so. An answer without that checksum resolves with `checksum` undefined: its bytes were
   * not checked, and the caller must check them another way. Resolves with the part's place.
   */
  getPart(
    key: string, n: number, sink: (chunk: Uint8Array, pos: number) => Promise<void>,
    opts: { signal?: AbortSignal; ifMatch?: string; check?: ChecksumAlgorithm },
  ): Promise<PartAnswer>;
  /**
   * What S3 says of part `n` (1-based) of a multipart object, without its bytes (HEAD
   * partNumber=n with checksum mode, If-Match `ifMatch`): its size, the parts count and its own
   * checksum of `algorithm` when S3 gives one (so a part fetched as ranges can be checked).
   * Null when the object is absent.
   */
  headPart(key: string, n: number, opts: { signal?: AbortSignal; ifMatch?: string; algorithm: ChecksumAlgorithm }): Promise<PartHead | null>;
  /**
   * Stream the whole object into `destPath` (created/truncated). Returns the object's info
   * including user metadata, as of the GET. The body is verified against what S3 says of it
   * (MD5 ETag of a single-part object, or a full-object x-amz-checksum-*) and fetched again
   * when it does not match; when it stays wrong the call fails with kind "corrupt". The caller
   * handles temp names and renames (and must not keep `destPath` when this throws).
   */
  download(key: string, destPath: string, opts?: DownloadOptions): Promise<ObjectInfo>;
  /**
   * Upload a local file as `key` (multipart when large), read from disk part by part, every
   * request carrying a checksum S3 verifies, and the whole object a full-object CRC64NVME
   * (`onChecksum`). Returns the new ETag.
   */
  upload(key: string, srcPath: string, opts?: UploadOptions): Promise<string>;
  /**
   * A small object (at most SMALL_OBJECT_MAX bytes) read whole into memory with its ETag; null
   * when it does not exist. For bucketfs' own records (lease, commit records), not for data.
   */
  getSmall(key: string, signal?: AbortSignal): Promise<{ body: Uint8Array; etag: string } | null>;
  /**
   * PUT a small buffer. With `ifNoneMatch` it only succeeds when the key does not exist
   * (`If-None-Match: *`); with `ifMatch` only when the object's ETag is that one (`If-Match`).
   * A failed condition throws StoreError kind "precondition". Returns the new ETag. A write S3
   * applied whose answer was lost is answered 412 when sent again, and that 412 is reported as
   * is: the caller tells its own write from someone else's by reading the object back.
   * `deadline` (Date.now() ms): no retry after it, backoffs kept short enough to fit before it.
   */
  putSmall(key: string, body: Uint8Array, cond?: { ifNoneMatch?: boolean; ifMatch?: string }, signal?: AbortSignal, deadline?: number): Promise<string>;
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
  /** A body that stayed different from what S3 says of it (digest mismatch) after every attempt. */
  | "corrupt"
  | "other";

export interface StoreErrorFacts {
  cause?: unknown;
  /** HTTP status when there was one. */
  status?: number;
  /** S3 error code (`SlowDown`, `NoSuchKey`, ...) or socket code (`ECONNRESET`). */
  code?: string;
  /** The S3 operation (`ListObjectsV2`, `GetObject`, `UploadPart`, ...). */
  op?: string;
  bucket?: string;
  key?: string;
}

/** The one error type of the store: what went wrong, where, in terms fs/errors.ts maps to errno. */
export class StoreError extends Error {
  readonly kind: StoreErrorKind;
  readonly status: number | undefined;
  readonly code: string | undefined;
  readonly op: string | undefined;
  readonly bucket: string | undefined;
  readonly key: string | undefined;
  constructor(kind: StoreErrorKind, message: string, facts: StoreErrorFacts = {}) {
    super(message, { cause: facts.cause });
    this.name = "StoreError";
    this.kind = kind;
    this.status = facts.status;
    this.code = facts.code;
    this.op = facts.op;
    this.bucket = facts.bucket;
    this.key = facts.key;
  }
  /**
   * S3 may well answer differently next time: throttling, 5xx, connection problems, timeouts.
   * The store has already retried these; callers use it to tell "S3 is down" from "S3 said no".
   */
  get retryable(): boolean {
    return this.kind === "throttled" || this.kind === "network" || (this.status !== undefined && this.status >= 500);
  }
}
