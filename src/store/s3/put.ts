/**
 * Writes: PutObject from a file or from memory (optionally conditional), and multipart uploads.
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPart.html
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html
 *
 * Is: every body read from the file on disk for each attempt (a file slice handed to fetch; small
 * files read whole), with x-amz-checksum-crc64nvme on every PutObject and UploadPart so S3 verifies
 * what it received (a damaged body is answered BadDigest and sent again by the request path),
 * and a multipart upload of checksum type FULL_OBJECT whose Complete carries the whole file's
 * CRC64NVME (the parts' CRCs combined, no second read), so S3 checks the whole object too and
 * keeps that checksum for every later reader (as current AWS SDKs do); the CRC of a file
 * slice is computed on a hashing Worker (store/hashing.ts), off the FUSE thread;
 * ONE process-wide bound on upload bytes in flight (`UPLOAD_INFLIGHT_BYTES`); an idempotent
 * Complete (a retried Complete answered NoSuchUpload is accepted when HEAD shows the ETag
 * md5-of-part-md5s-N and the size the parts make); AbortMultipartUpload after a failure.
 * Is not: a retry loop (request.ts has the only one) or a sync (never deletes objects).
 */
import { readFileSync, statSync } from "node:fs";
import { createLimiter, linkSignals, runAll } from "../../util/async.ts";
import { fmtBytes, logger } from "../../util/log.ts";
import { StoreError, type UploadOptions } from "../types.ts";
import { crc32Base64, crc64nvmeJoin, multipartEtag, newHasher, toBase64 } from "../checksum.ts";
import { rangeHasher } from "../hashing.ts";
import { headObject } from "./head.ts";
import { send, unquote, type Body, xmlBlocks, xmlEscape, xmlValue, type S3Context } from "./request.ts";
import { s3Error } from "./errors.ts";

const log = logger("s3");

const MiB = 1024 * 1024;
/** S3 limits for multipart uploads. */
const MIN_PART_SIZE = 5 * MiB;
const MAX_PARTS = 10_000;
/** Files up to this size are read into memory for their PutObject (cheaper than two passes). */
const READ_WHOLE_MAX = 1 * MiB;
/**
 * Upload bytes in flight in the whole process (every bucket, every file, every part). With
 * 16 MiB parts that is 4 parts at once; small files fill it with many concurrent PUTs.
 */
export const UPLOAD_INFLIGHT_BYTES = 64 * MiB;
const inflight = createLimiter(UPLOAD_INFLIGHT_BYTES);

export interface PutContext extends S3Context {
  partSize: number;
  /** Parts of one file in flight at most. */
  partConcurrency: number;
}

function metaHeaders(meta: Record<string, string> | undefined): Record<string, string> {
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries(meta ?? {})) h[`x-amz-meta-${k.toLowerCase()}`] = v;
  return h;
}

/** The CRC64NVME of bytes [start, end) of a file (raw), hashed on a hashing Worker. */
async function crc64OfFile(path: string, start: number, end: number): Promise<Uint8Array | undefined> {
  const h = rangeHasher("crc64nvme");
  try {
    await h.update(path, start, end);
    return await h.digest();
  } catch {
    return undefined; // the file is shorter now (or unreadable): the caller says it changed
  } finally {
    h.close();
  }
}

/** What the last attempt of a body sent: its raw CRC64NVME (the combine of a multipart upload needs it). */
interface SentCrc {
  raw?: Uint8Array;
}

/**
 * A body for bytes [start, end) of `path` and its checksum header, made for each attempt.
 * `changed` is thrown when the file no longer has those bytes (it shrank).
 */
function fileBody(path: string, start: number, end: number, what: () => string, headers: Record<string, string>, sent: SentCrc = {}) {
  return async (): Promise<Body> => {
    if (start === 0 && end <= READ_WHOLE_MAX) {
      const bytes = readFileSync(path);
      if (bytes.byteLength !== end - start) throw changed(what(), path);
      const h = newHasher("crc64nvme");
      h.update(bytes);
      sent.raw = h.digest();
      headers["x-amz-checksum-crc64nvme"] = toBase64(sent.raw);
      return bytes;
    }
    const raw = await crc64OfFile(path, start, end);
    if (raw === undefined) throw changed(what(), path);
    sent.raw = raw;
    headers["x-amz-checksum-crc64nvme"] = toBase64(raw);
    return Bun.file(path).slice(start, end);
  };
}

function changed(what: string, path: string): StoreError {
  return new StoreError("other", `${what}: ${path} changed size while uploading`, { code: "SourceChanged" });
}

export async function upload(ctx: PutContext, key: string, srcPath: string, opts: UploadOptions = {}): Promise<string> {
  let size: number;
  try {
    // Sync: one local syscall, cheaper than a threadpool round trip per small file.
    size = statSync(srcPath).size;
  } catch (err) {
    throw new StoreError("other", `[s3] PutObject ${ctx.bucket}/${key}: cannot read ${srcPath}: ${(err as Error).message}`, {
      cause: err, op: "PutObject", bucket: ctx.bucket, key,
    });
  }
  if (opts.signal?.aborted) {
    throw new StoreError("aborted", `[s3] PutObject ${ctx.bucket}/${key}: aborted`, { op: "PutObject", bucket: ctx.bucket, key });
  }
  const multipart = size >= ctx.partSize;
  const etag = multipart ? await multipartUpload(ctx, key, srcPath, size, opts) : await putFile(ctx, key, srcPath, size, opts);
  log.debug(`PUT ${ctx.bucket}/${key}: ${fmtBytes(size)}${multipart ? " (multipart)" : ""}`);
  return etag;
}

async function putFile(ctx: PutContext, key: string, path: string, size: number, opts: UploadOptions): Promise<string> {
  const release = await acquire(ctx, key, size, opts.signal);
  try {
    const headers = metaHeaders(opts.meta);
    const sent: SentCrc = {};
    const req = {
      op: "PutObject", method: "PUT" as const, key, headers: () => headers,
      body: fileBody(path, 0, size, () => `[s3] PutObject ${ctx.bucket}/${key}`, headers, sent),
    };
    const etag = await send(ctx, req, async (res) => unquote(res.headers.get("etag")), opts.signal);
    if (sent.raw) opts.onChecksum?.({ algorithm: "crc64nvme", value: toBase64(sent.raw) });
    opts.onProgress?.(size);
    return etag;
  } finally {
    release();
  }
}

async function acquire(ctx: S3Context, key: string, bytes: number, signal: AbortSignal | undefined): Promise<() => void> {
  try {
    return await inflight.acquire(Math.max(1, bytes), signal);
  } catch (err) {
    throw new StoreError("aborted", `[s3] PUT ${ctx.bucket}/${key}: aborted`, { cause: err, bucket: ctx.bucket, key });
  }
}

interface DonePart {
  n: number;
  etag: string;
  /** The part's CRC64NVME, base64 and raw, and its length (for the combine). */
  crc: string;
  raw: Uint8Array;
  bytes: number;
}

async function multipartUpload(ctx: PutContext, key: string, path: string, size: number, opts: UploadOptions): Promise<string> {
  const partSize = Math.max(ctx.partSize, MIN_PART_SIZE, Math.ceil(size / MAX_PARTS));
  const count = Math.max(1, Math.ceil(size / partSize));
  const uploadId = await send(ctx, {
    op: "CreateMultipartUpload", method: "POST", key, query: [["uploads", ""]],
    headers: { ...metaHeaders(opts.meta), "x-amz-checksum-algorithm": "CRC64NVME", "x-amz-checksum-type": "FULL_OBJECT" },
  }, async (res) => {
    const xml = await res.text();
    const id = xmlValue(xml, "UploadId");
    if (!id) throw new StoreError("network", `[s3] CreateMultipartUpload ${ctx.bucket}/${key}: no UploadId in the answer`, { op: "CreateMultipartUpload", bucket: ctx.bucket, key, code: "IncompleteBody" });
    return id;
  }, opts.signal);
  const parts: DonePart[] = new Array(count);
  const link = linkSignals(opts.signal);
  let doneBytes = 0;
  try {
    await runAll(Array.from({ length: count }, (_, i) => i), Math.max(1, ctx.partConcurrency), async (i) => {
      const start = i * partSize;
      const end = Math.min(size, start + partSize);
      try {
        const release = await acquire(ctx, key, end - start, link.signal);
        try {
          parts[i] = await uploadPart(ctx, key, uploadId, i + 1, path, start, end, link.signal);
        } finally {
          release();
        }
        doneBytes += end - start;
        opts.onProgress?.(doneBytes);
      } catch (err) {
        link.abort(err); // the first failure stops the other parts
        throw err;
      }
    });
    const whole = crc64nvmeJoin(parts.map((p) => ({ crc: p.raw, bytes: p.bytes })));
    const etag = await complete(ctx, key, uploadId, parts, size, toBase64(whole), opts.signal);
    opts.onChecksum?.({ algorithm: "crc64nvme", value: toBase64(whole) });
    return etag;
  } catch (err) {
    void abortUpload(ctx, key, uploadId);
    if (opts.signal?.aborted && !(err instanceof StoreError && err.kind === "aborted")) {
      throw new StoreError("aborted", `[s3] PUT ${ctx.bucket}/${key}: aborted`, { cause: err, bucket: ctx.bucket, key });
    }
    throw err;
  } finally {
    link.dispose();
  }
}

async function uploadPart(
  ctx: S3Context, key: string, uploadId: string, n: number, path: string, start: number, end: number, signal: AbortSignal,
): Promise<DonePart> {
  const headers: Record<string, string> = {};
  const sent: SentCrc = {};
  const req = {
    op: "UploadPart", method: "PUT" as const, key, headers: () => headers,
    query: [["partNumber", String(n)], ["uploadId", uploadId]] as [string, string][],
    body: fileBody(path, start, end, () => `[s3] UploadPart ${ctx.bucket}/${key}`, headers, sent),
  };
  return send(ctx, req, async (res) => ({
    n, etag: unquote(res.headers.get("etag")), crc: headers["x-amz-checksum-crc64nvme"] ?? "", raw: sent.raw!, bytes: end - start,
  }), signal);
}

/**
 * CompleteMultipartUpload, idempotent: S3 may complete the upload and lose the answer, and then
 * the retry is answered NoSuchUpload. That is accepted when the object now has the ETag and size
 * these parts make. A 200 answer carrying an <Error> is an error (S3 does that for Complete).
 */
async function complete(
  ctx: S3Context, key: string, uploadId: string, parts: DonePart[], size: number, wholeCrc: string, signal?: AbortSignal,
): Promise<string> {
  const xml =
    `<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
    parts.map((p) => `<Part><PartNumber>${p.n}</PartNumber><ETag>"${xmlEscape(p.etag)}"</ETag>${p.crc ? `<ChecksumCRC64NVME>${p.crc}</ChecksumCRC64NVME>` : ""}</Part>`).join("") +
    `</CompleteMultipartUpload>`;
  const where = { op: "CompleteMultipartUpload", bucket: ctx.bucket, key };
  try {
    return await send(ctx, {
      op: "CompleteMultipartUpload", method: "POST", key, query: [["uploadId", uploadId]],
      headers: { "content-type": "application/xml", "x-amz-checksum-crc64nvme": wholeCrc, "x-amz-checksum-type": "FULL_OBJECT" },
      body: () => xml,
    }, async (res) => {
      const text = await res.text();
      if (xmlBlocks(text, "Error").length > 0 || text.includes("<Error>")) throw s3Error(where, 500, text);
      const etag = xmlValue(text, "ETag");
      if (!text.includes("</CompleteMultipartUploadResult>") || etag === undefined) {
        throw new StoreError("network", `[s3] CompleteMultipartUpload ${ctx.bucket}/${key}: answer cut off`, { ...where, code: "IncompleteBody" });
      }
      return unquote(etag);
    }, signal);
  } catch (err) {
    // Not only after our own retry: Bun's fetch itself resends a request whose pooled connection
    // closed before the answer, so a first-attempt NoSuchUpload can be the same lost answer.
    if (!(err instanceof StoreError && err.code === "NoSuchUpload")) throw err;
    const expected = multipartEtag(parts.map((p) => p.etag));
    const now = await headObject(ctx, key, signal);
    if (now !== null && now.size === size && expected !== undefined && now.etag === expected) {
      log.info(`CompleteMultipartUpload ${ctx.bucket}/${key}: the answer was lost and the retry found the upload gone; the object has the parts' ETag ${expected} and size, accepted`);
      return now.etag;
    }
    throw new StoreError("other", `[s3] CompleteMultipartUpload ${ctx.bucket}/${key}: upload gone after a retried Complete, and the object does not match the parts (ETag ${now?.etag ?? "none"}, expected ${expected ?? "unknown"})`, {
      ...where, cause: err, code: "NoSuchUpload",
    });
  }
}

async function abortUpload(ctx: S3Context, key: string, uploadId: string): Promise<void> {
  try {
    await send(ctx, { op: "AbortMultipartUpload", method: "DELETE", key, query: [["uploadId", uploadId]], ok: (s) => (s >= 200 && s < 300) || s === 404 }, async () => undefined);
  } catch (err) {
    log.warn(`could not abort multipart upload of ${ctx.bucket}/${key} (S3 lifecycle rules remove it): ${(err as Error).message}`);
  }
}

/**
 * A small object from memory, optionally conditional (If-None-Match: * / If-Match). A 412 (or
 * 409 ConditionalRequestConflict) is kind "precondition" and is never reinterpreted here: when
 * a conditional write S3 applied loses its answer, the retry (ours, or Bun's fetch resending on
 * a fresh connection) is answered 412 too, and only the caller can tell its own write from
 * someone else's (the lease compares the holder it reads back). Reinterpreting it here would
 * also defeat the lease's probe, which rewrites identical bytes and expects 412.
 */
export async function putSmall(
  ctx: S3Context, key: string, body: Uint8Array, cond: { ifNoneMatch?: boolean; ifMatch?: string } = {}, signal?: AbortSignal, deadline?: number,
): Promise<string> {
  const headers: Record<string, string> = { "content-type": "application/json", "x-amz-checksum-crc32": crc32Base64(body) };
  if (cond.ifNoneMatch) headers["if-none-match"] = "*";
  if (cond.ifMatch !== undefined) headers["if-match"] = `"${cond.ifMatch}"`;
  return send(ctx, { op: "PutObject", method: "PUT", key, headers, body: () => body, ...(deadline !== undefined ? { deadline } : {}) }, async (res) => unquote(res.headers.get("etag")), signal);
}
