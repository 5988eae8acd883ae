/**
 * The AWS SDK v3 implementation of the `ObjectStore` port (see `types.ts`).
 *
 * Is: one `S3Client` per bucket (keep-alive pool, timeouts, SDK retries), one small function per
 * S3 API, streaming download to a file, PutObject / lib-storage multipart upload from a file, and
 * the single place where SDK and socket errors become `StoreError`s (`toStoreError`).
 * Is not: a cache, a retry policy above the SDK's own (callers look at `StoreError.retryable`),
 * or anything that knows about the filesystem layout (temp names, renames, the index).
 *
 * Works on AWS and on S3-compatible servers (MinIO, Ceph, ...): with a custom endpoint the client
 * uses path-style addressing and only sends/validates checksums when an API requires them, because
 * the SDK's default `aws-chunked` trailing checksums are mis-stored or rejected by several
 * third-party servers (research notes, ts-deps.md section 4.1).
 */

import { createReadStream } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";
import { Agent as HttpAgent } from "node:http";
import { Agent as HttpsAgent } from "node:https";
import {
  HeadObjectCommand,
  PutObjectCommand,
  S3Client,
  type ListObjectsV2CommandOutput,
  type S3ClientConfig,
  type _Object,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import type { BucketConfig } from "../config/types.ts";
import { fmtBytes, logger, redact } from "../util/log.ts";
import {
  SMALL_OBJECT_MAX,
  StoreError,
  type DownloadOptions,
  type Listing,
  type ObjectInfo,
  type ObjectStore,
  type StoreErrorKind,
  type UploadOptions,
} from "./types.ts";

const log = logger("s3");

/** The part of a bucket's configuration the store needs. */
export type S3StoreConfig = Pick<
  BucketConfig,
  "bucket" | "accessKeyId" | "secretAccessKey" | "region" | "endpoint" | "partSize" | "transferConcurrency"
>;

/** Transport tuning; the defaults suit production, tests shorten them. */
export interface S3StoreTuning {
  /** TCP connect must finish within this (ms). Default 5000. */
  connectionTimeoutMs?: number;
  /** A socket with no traffic for this long (ms) fails the request. Default 20000. */
  socketTimeoutMs?: number;
  /** Total attempts per request, including the first (SDK standard retry mode). Default 4. */
  maxAttempts?: number;
}

const DEFAULT_TUNING: Required<S3StoreTuning> = { connectionTimeoutMs: 5_000, socketTimeoutMs: 20_000, maxAttempts: 4 };

/** lib-storage buffers queueSize × partSize bytes per upload; keep that bounded. */
const MAX_QUEUE_SIZE = 8;
/** S3 limits for multipart uploads. */
const MIN_PART_SIZE = 5 * 1024 * 1024;
const MAX_PARTS = 10_000;
/** Pages a listing may take before we assume the server is looping. */
const MAX_LIST_PAGES = 1_000_000;

export function createS3Store(cfg: S3StoreConfig, tuning: S3StoreTuning = {}): ObjectStore {
  const t = { ...DEFAULT_TUNING, ...tuning };
  const client = createClient(cfg, t);
  const bucket = cfg.bucket;
  const queueSize = Math.max(1, Math.min(cfg.transferConcurrency, MAX_QUEUE_SIZE));
  const ctx: Ctx = { client, bucket, partSize: cfg.partSize, queueSize, cfg, presigner: undefined };
  return {
    bucket,
    listDir: (prefix, signal) => listDir(ctx, prefix, signal),
    listAll: (prefix, signal) => listAll(ctx, prefix, signal),
    head: (key, signal) => headObject(ctx, key, signal),
    hasPrefix: (prefix, signal) => hasPrefix(ctx, prefix, signal),
    getRange: (key, start, end, signal, ifMatch) => getRange(ctx, key, start, end, signal, ifMatch),
    streamRange: (key, start, end, sink, signal, ifMatch) => streamRange(ctx, key, start, end, sink, signal, ifMatch),
    download: (key, destPath, opts) => download(ctx, key, destPath, opts),
    upload: (key, srcPath, opts) => upload(ctx, key, srcPath, opts),
    getSmall: (key, signal) => getSmall(ctx, key, signal),
    putSmall: (key, body, cond, signal) => putSmall(ctx, key, body, cond, signal),
  };
}

interface Ctx {
  client: S3Client;
  bucket: string;
  partSize: number;
  queueSize: number;
  cfg: S3StoreConfig;
  /** Bun's native signer for the ranged-read data plane, keyed by the credentials it holds. */
  presigner: { id: string; client: Bun.S3Client } | undefined;
}

/**
 * The client: region, optional custom endpoint (path style, checksums only when required), static
 * credentials or the SDK's default chain (env, shared config/SSO profile, container/instance role),
 * a keep-alive pool and timeouts.
 */
function createClient(cfg: S3StoreConfig, t: Required<S3StoreTuning>): S3Client {
  // Enough sockets for every transfer to run all its parts at once, plus headroom for metadata
  // calls. A request waiting for a free socket counts against connectionTimeout in the smithy
  // handler, so the pool must not be the bottleneck.
  const maxSockets = Math.max(1, cfg.transferConcurrency) * MAX_QUEUE_SIZE + 16;
  const agentOpts = { keepAlive: true, keepAliveMsecs: 10_000, maxSockets, maxFreeSockets: 32 };
  const conf: S3ClientConfig = {
    region: cfg.region,
    maxAttempts: t.maxAttempts,
    retryMode: "standard",
    // The options form makes the client build its own NodeHttpHandler (@smithy/node-http-handler,
    // resolved through client-s3's own dependency) around these agents.
    requestHandler: {
      httpAgent: new HttpAgent(agentOpts),
      httpsAgent: new HttpsAgent(agentOpts),
      connectionTimeout: t.connectionTimeoutMs,
      socketTimeout: t.socketTimeoutMs,
    },
  };
  if (cfg.endpoint !== undefined) {
    conf.endpoint = cfg.endpoint;
    conf.forcePathStyle = true;
    conf.requestChecksumCalculation = "WHEN_REQUIRED";
    conf.responseChecksumValidation = "WHEN_REQUIRED";
  }
  if (cfg.accessKeyId !== undefined && cfg.secretAccessKey !== undefined) {
    conf.credentials = { accessKeyId: cfg.accessKeyId, secretAccessKey: cfg.secretAccessKey };
  }
  log.debug(
    `client for ${cfg.bucket}: region ${cfg.region}, endpoint ${cfg.endpoint === undefined ? "AWS" : redact(cfg.endpoint)}, ` +
      `credentials ${conf.credentials ? "static" : "default chain"}, ${maxSockets} sockets`,
  );
  return new S3Client(conf);
}

// ---------------------------------------------------------------------------------------------
// Listing

/** A listing page that takes longer than this is treated as a network failure. */
const LIST_PAGE_TIMEOUT_MS = 30_000;

/**
 * One ListObjectsV2 page. https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
 * Sent by Bun's native S3 client (with the credentials the SDK resolved): a 10,000-key
 * listing took 0.16-0.47 s that way against 0.5-2.1 s through the SDK here, the first call
 * of a process (a fresh mount's first `ls`) paying most. The result keeps the SDK's shape.
 */
async function listPage(
  ctx: Ctx,
  prefix: string,
  delimiter: string | undefined,
  token: string | undefined,
  signal: AbortSignal | undefined,
  maxKeys?: number,
): Promise<ListObjectsV2CommandOutput> {
  try {
    signal?.throwIfAborted();
    const client = await presigner(ctx);
    const req = client.list({ prefix, delimiter, continuationToken: token, maxKeys });
    // Bun's list takes no AbortSignal: bound it here so a hung server cannot hang a listing.
    let timer: Timer | undefined;
    let onAbort: (() => void) | undefined;
    const stop = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error(`no answer in ${LIST_PAGE_TIMEOUT_MS} ms`), { name: "TimeoutError" })), LIST_PAGE_TIMEOUT_MS);
      onAbort = () => reject(Object.assign(new Error("aborted"), { name: "AbortError" }));
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      const r = await Promise.race([req, stop]);
      return {
        $metadata: {},
        Contents: (r.contents ?? []).map((o) => ({
          Key: o.key, Size: o.size, ETag: o.eTag, LastModified: o.lastModified ? new Date(o.lastModified) : undefined,
        })),
        CommonPrefixes: (r.commonPrefixes ?? []).map((p) => ({ Prefix: p.prefix })),
        IsTruncated: r.isTruncated,
        NextContinuationToken: r.nextContinuationToken,
        KeyCount: r.keyCount,
      };
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
  } catch (err) {
    throw toStoreError(bunS3Error(err), "LIST", prefix, { bucket: ctx.bucket, signal });
  }
}

/** HTTP status of S3 error codes (fixed by the S3 API reference, "List of error codes"). */
const S3_CODE_STATUS: Record<string, number> = {
  NoSuchBucket: 404, NoSuchKey: 404, AccessDenied: 403, InvalidAccessKeyId: 403, SignatureDoesNotMatch: 403,
  ExpiredToken: 400, InvalidToken: 400, SlowDown: 503, ServiceUnavailable: 503, InternalError: 500,
  PreconditionFailed: 412, InvalidRange: 416,
};

/**
 * Bun's S3Error carries the S3 code in `code` but no HTTP status; give it the SDK's shape
 * (code as name, status from the code) so toStoreError treats both clients alike.
 */
function bunS3Error(err: unknown): unknown {
  const rec = asRecord(err);
  if (rec?.name === "S3Error" && typeof rec.code === "string") {
    const status = S3_CODE_STATUS[rec.code];
    return Object.assign(new Error(typeof rec.message === "string" ? rec.message : rec.code), {
      name: rec.code, cause: err, ...(status !== undefined ? { $metadata: { httpStatusCode: status } } : {}),
    });
  }
  return err;
}

/**
 * Every page of one listing. Stops with an error (never silently) when the server claims more
 * pages but repeats or omits the continuation token.
 */
async function* listPages(
  ctx: Ctx,
  prefix: string,
  delimiter: string | undefined,
  signal: AbortSignal | undefined,
): AsyncGenerator<ListObjectsV2CommandOutput> {
  const seen = new Set<string>();
  let token: string | undefined;
  for (let page = 0; page < MAX_LIST_PAGES; page++) {
    const out = await listPage(ctx, prefix, delimiter, token, signal);
    yield out;
    if (out.IsTruncated !== true) return;
    const next = out.NextContinuationToken;
    if (next === undefined || next === "" || seen.has(next)) {
      throw new StoreError(
        "other",
        `[s3] LIST ${ctx.bucket}/${prefix}: truncated page ${page + 1} without a new continuation token`,
      );
    }
    seen.add(next);
    token = next;
  }
  throw new StoreError("other", `[s3] LIST ${ctx.bucket}/${prefix}: more than ${MAX_LIST_PAGES} pages`);
}

async function listDir(ctx: Ctx, prefix: string, signal?: AbortSignal): Promise<Listing> {
  const objects: ObjectInfo[] = [];
  const prefixes: string[] = [];
  for await (const page of listPages(ctx, prefix, "/", signal)) {
    for (const o of page.Contents ?? []) {
      // The directory's own marker object (`prefix` itself) is not an entry of the directory.
      if (o.Key === undefined || o.Key === prefix) continue;
      objects.push(fromListed(o));
    }
    for (const p of page.CommonPrefixes ?? []) {
      if (p.Prefix !== undefined) prefixes.push(p.Prefix);
    }
  }
  return { objects, prefixes };
}

/** Every key under `prefix`, marker objects included, in the server's (lexicographic) order. */
async function* listAll(ctx: Ctx, prefix: string, signal?: AbortSignal): AsyncGenerator<ObjectInfo> {
  for await (const page of listPages(ctx, prefix, undefined, signal)) {
    for (const o of page.Contents ?? []) {
      if (o.Key !== undefined) yield fromListed(o);
    }
  }
}

async function hasPrefix(ctx: Ctx, prefix: string, signal?: AbortSignal): Promise<boolean> {
  const out = await listPage(ctx, prefix, undefined, undefined, signal, 1);
  return (out.KeyCount ?? 0) > 0 || (out.Contents?.length ?? 0) > 0;
}

// ---------------------------------------------------------------------------------------------
// Reading

/** HeadObject. https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadObject.html
 *  A HEAD error has no body, so a missing bucket also looks like a missing key here (null). */
async function headObject(ctx: Ctx, key: string, signal?: AbortSignal): Promise<ObjectInfo | null> {
  try {
    const out = await ctx.client.send(new HeadObjectCommand({ Bucket: ctx.bucket, Key: key }), { abortSignal: signal });
    return {
      key,
      size: out.ContentLength ?? 0,
      lastModifiedMs: out.LastModified?.getTime() ?? 0,
      etag: unquote(out.ETag),
      meta: { ...out.Metadata },
    };
  } catch (err) {
    const e = toStoreError(err, "HEAD", key, { bucket: ctx.bucket, signal });
    if (e.kind === "not-found") return null;
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading: the hot data path (presigned URLs + Bun's fetch; measured about 2x the SDK here)

/** Attempts of one GET (retryable errors only: network, throttling, 5xx). */
const RANGE_ATTEMPTS = 4;

/**
 * A Bun.S3Client holding the current credentials, used only to presign. The SDK still
 * resolves credentials (static, or the default chain with its refresh), so instance roles and
 * profiles work here too; a new signer is made whenever they change.
 */
async function presigner(ctx: Ctx): Promise<Bun.S3Client> {
  const c = await ctx.client.config.credentials();
  const id = `${c.accessKeyId}\0${c.secretAccessKey}\0${c.sessionToken ?? ""}`;
  if (ctx.presigner?.id !== id) {
    const client = new Bun.S3Client({
      accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey, sessionToken: c.sessionToken,
      region: ctx.cfg.region, bucket: ctx.bucket, ...(ctx.cfg.endpoint !== undefined ? { endpoint: ctx.cfg.endpoint } : {}),
    });
    ctx.presigner = { id, client };
  }
  return ctx.presigner.client;
}

/**
 * One signal for a GET: the caller's abort, or a body that delivers nothing for
 * BODY_STALL_MS (`arm()` restarts that clock on every chunk). Call `done()` when finished.
 */
function stallGuard(outer: AbortSignal | undefined) {
  const ctl = new AbortController();
  const onAbort = () => ctl.abort(outer?.reason);
  outer?.addEventListener("abort", onAbort, { once: true });
  let timer: Timer | undefined;
  return {
    signal: ctl.signal,
    arm() {
      clearTimeout(timer);
      timer = setTimeout(() => ctl.abort(Object.assign(new Error(`no data for ${BODY_STALL_MS} ms`), { name: "TimeoutError" })), BODY_STALL_MS);
    },
    /** Aborted by the stall clock, not by the caller. */
    stalled: () => ctl.signal.aborted && !outer?.aborted,
    done() {
      clearTimeout(timer);
      outer?.removeEventListener("abort", onAbort);
    },
  };
}

/**
 * Bytes [start, end) delivered to `sink` chunk by chunk as the body arrives. Retried (from
 * `start`, the sink simply rewrites the same offsets) on retryable errors. A body that stalls
 * for BODY_STALL_MS fails as a network error.
 */
async function streamRange(
  ctx: Ctx, key: string, start: number, end: number, sink: (chunk: Uint8Array, pos: number) => Promise<void>,
  signal?: AbortSignal, ifMatch?: string,
): Promise<number> {
  if (start >= end) return 0;
  for (let attempt = 1; ; attempt++) {
    const guard = stallGuard(signal);
    const { arm } = guard;
    try {
      signal?.throwIfAborted();
      arm();
      const headers: Record<string, string> = { Range: `bytes=${start}-${end - 1}` };
      if (ifMatch) headers["If-Match"] = `"${ifMatch}"`;
      const res = await presignedGet(ctx, key, headers, guard.signal);
      if (res.status === 416 || !res.body) return 0;
      // 206 starts at `start`; a server that ignores Range sends the whole object (200) from 0.
      let bodyPos = res.status === 200 ? 0 : start;
      let delivered = 0;
      for await (const chunk of res.body) {
        arm();
        const from = Math.max(start, bodyPos);
        const to = Math.min(end, bodyPos + chunk.byteLength);
        if (to > from) {
          await sink(chunk.subarray(from - bodyPos, to - bodyPos), from);
          delivered += to - from;
        }
        bodyPos += chunk.byteLength;
        if (bodyPos >= end) break;
      }
      return delivered;
    } catch (err) {
      const e = toStoreError(guard.stalled() ? guard.signal.reason : err, "GET", key, { bucket: ctx.bucket, signal });
      if (!e.retryable || attempt >= RANGE_ATTEMPTS || signal?.aborted) throw e;
      await Bun.sleep(100 * 2 ** attempt);
    } finally {
      guard.done();
    }
  }
}

/** Bytes [start, end) in one buffer (fewer when the object is shorter): streamRange collected. */
async function getRange(
  ctx: Ctx, key: string, start: number, end: number, signal?: AbortSignal, ifMatch?: string,
): Promise<Uint8Array> {
  if (!(Number.isSafeInteger(start) && Number.isSafeInteger(end) && start >= 0)) {
    throw new StoreError("other", `[s3] GET ${ctx.bucket}/${key}: bad range ${start}-${end}`);
  }
  const out = new Uint8Array(Math.max(0, end - start));
  const n = await streamRange(ctx, key, start, end, async (chunk, pos) => out.set(chunk, pos - start), signal, ifMatch);
  return out.subarray(0, n);
}

/**
 * One presigned GET through Bun's fetch. Non-success statuses become errors shaped like the
 * SDK's service errors (name = S3 code, $metadata.httpStatusCode), so toStoreError treats
 * both paths alike. 416 is returned to the caller (end of object for ranges).
 */
async function presignedGet(ctx: Ctx, key: string, headers: Record<string, string>, signal: AbortSignal): Promise<Response> {
  const url = (await presigner(ctx)).presign(key, { expiresIn: 900, method: "GET" });
  const res = await fetch(url, { headers, signal });
  if (res.status === 200 || res.status === 206 || res.status === 416) return res;
  const body = await res.text().catch(() => "");
  const code = /<Code>([^<]*)<\/Code>/.exec(body)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(body)?.[1] ?? res.statusText;
  throw Object.assign(new Error(message), { name: code ?? statusName(res.status), $metadata: { httpStatusCode: res.status } });
}

/** A download whose body stalls this long (no bytes) fails as a network error. */
const BODY_STALL_MS = 30_000;

/**
 * The whole object streamed into `destPath` (one chunk in memory at a time), fsynced before
 * returning unless `durable: false`. Through a presigned URL and Bun's fetch like the ranged
 * reads (the SDK's per-request cost dominated small objects and prefetch). Retried while no
 * byte has been written; on failure `destPath` may hold a partial file, which the caller owns.
 */
async function download(ctx: Ctx, key: string, destPath: string, opts: DownloadOptions = {}): Promise<ObjectInfo> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await downloadOnce(ctx, key, destPath, opts);
    } catch (err) {
      const e = toStoreError(err, "GET", key, { bucket: ctx.bucket, signal: opts.signal });
      if (!e.retryable || attempt >= RANGE_ATTEMPTS || opts.signal?.aborted) throw e;
      await Bun.sleep(100 * 2 ** attempt);
    }
  }
}

async function downloadOnce(ctx: Ctx, key: string, destPath: string, opts: DownloadOptions): Promise<ObjectInfo> {
  const { signal, onProgress } = opts;
  const guard = stallGuard(signal);
  const { arm } = guard;
  let file: FileHandle | undefined;
  try {
    signal?.throwIfAborted();
    arm();
    const res = await presignedGet(ctx, key, {}, guard.signal);
    const expected = Number(res.headers.get("content-length") ?? NaN);
    try {
      file = await open(destPath, "w", 0o600);
    } catch (err) {
      throw new StoreError("other", `[s3] GET ${ctx.bucket}/${key}: cannot write ${destPath}: ${errText(err)}`, { cause: err });
    }
    let written = 0;
    if (res.status !== 416 && res.body) {
      for await (const chunk of res.body) {
        arm();
        let off = 0;
        while (off < chunk.byteLength) {
          const { bytesWritten } = await file.write(chunk, off, chunk.byteLength - off);
          off += bytesWritten;
        }
        written += chunk.byteLength;
        onProgress?.(written);
      }
    }
    if (Number.isFinite(expected) && res.status !== 416 && written !== expected) {
      throw new StoreError("network", `[s3] GET ${ctx.bucket}/${key}: body ended after ${written} of ${expected} bytes`);
    }
    if (opts.durable !== false) await file.sync();
    log.debug(`GET ${ctx.bucket}/${key}: ${fmtBytes(written)}`);
    const meta: Record<string, string> = {};
    res.headers.forEach((v, k) => {
      if (k.startsWith("x-amz-meta-")) meta[k.slice("x-amz-meta-".length)] = v;
    });
    const lm = res.headers.get("last-modified");
    return { key, size: written, lastModifiedMs: lm ? Date.parse(lm) : 0, etag: unquote(res.headers.get("etag") ?? undefined), meta };
  } catch (err) {
    // Whatever a stall or the caller's abort ended with, say which it was.
    if (guard.stalled()) throw toStoreError(guard.signal.reason, "GET", key, { bucket: ctx.bucket });
    throw err;
  } finally {
    guard.done();
    await file?.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

async function upload(ctx: Ctx, key: string, srcPath: string, opts: UploadOptions = {}): Promise<string> {
  let size: number;
  try {
    size = (await stat(srcPath)).size;
  } catch (err) {
    throw new StoreError("other", `[s3] PUT ${ctx.bucket}/${key}: cannot read ${srcPath}: ${errText(err)}`, { cause: err });
  }
  if (opts.signal?.aborted === true) throw toStoreError(opts.signal.reason, "PUT", key, { bucket: ctx.bucket, signal: opts.signal });
  const etag = size < ctx.partSize ? await putObject(ctx, key, srcPath, size, opts) : await multipartUpload(ctx, key, srcPath, size, opts);
  log.debug(`PUT ${ctx.bucket}/${key}: ${fmtBytes(size)}${size < ctx.partSize ? "" : " (multipart)"}`);
  return etag;
}

/**
 * PutObject: one request. https://docs.aws.amazon.com/AmazonS3/latest/API/API_PutObject.html
 * The body (< partSize, the same bound lib-storage buffers per part) is read into memory: the SDK
 * never retries a stream body, and on AWS a stream body would be sent `aws-chunked`.
 */
async function putObject(ctx: Ctx, key: string, srcPath: string, size: number, opts: UploadOptions): Promise<string> {
  try {
    const body = await Bun.file(srcPath).bytes();
    if (body.byteLength !== size) {
      throw new StoreError("other", `[s3] PUT ${ctx.bucket}/${key}: ${srcPath} changed size while uploading`);
    }
    const out = await ctx.client.send(
      new PutObjectCommand({ Bucket: ctx.bucket, Key: key, Body: body, ContentLength: size, Metadata: opts.meta }),
      { abortSignal: opts.signal },
    );
    opts.onProgress?.(size);
    return unquote(out.ETag);
  } catch (err) {
    throw toStoreError(err, "PUT", key, { bucket: ctx.bucket, signal: opts.signal });
  }
}

/**
 * Multipart upload via lib-storage `Upload` (CreateMultipartUpload, UploadPart ×N,
 * CompleteMultipartUpload; AbortMultipartUpload on failure).
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateMultipartUpload.html
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_UploadPart.html
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_CompleteMultipartUpload.html
 * https://docs.aws.amazon.com/AmazonS3/latest/API/API_AbortMultipartUpload.html
 *
 * On a part failure `done()` aborts the multipart upload before it rejects. On an abort signal it
 * rejects at once; the parts already in flight finish and lib-storage then sends the
 * AbortMultipartUpload in the background.
 */
async function multipartUpload(ctx: Ctx, key: string, srcPath: string, size: number, opts: UploadOptions): Promise<string> {
  const partSize = Math.max(ctx.partSize, MIN_PART_SIZE, Math.ceil(size / MAX_PARTS));
  const stream = createReadStream(srcPath, { highWaterMark: 1024 * 1024 });
  const abortController = new AbortController();
  const onAbort = () => abortController.abort();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const up = new Upload({
      client: ctx.client,
      params: { Bucket: ctx.bucket, Key: key, Body: stream, ContentLength: size, Metadata: opts.meta },
      partSize,
      queueSize: ctx.queueSize,
      leavePartsOnError: false,
      abortController,
    });
    const onProgress = opts.onProgress;
    if (onProgress !== undefined) {
      up.on("httpUploadProgress", (p) => {
        if (p.loaded !== undefined) onProgress(p.loaded);
      });
    }
    const out = await up.done();
    if (out.ETag === undefined) throw new StoreError("other", `[s3] PUT ${ctx.bucket}/${key}: no ETag in the response`);
    return unquote(out.ETag);
  } catch (err) {
    throw toStoreError(err, "PUT", key, { bucket: ctx.bucket, signal: opts.signal });
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    stream.destroy();
  }
}

// ---------------------------------------------------------------------------------------------
// Small objects (bucketfs' own records: lease, commit records), with conditional writes

/** Whole small object in memory; null when absent. Retried like the other GETs. */
async function getSmall(ctx: Ctx, key: string, signal?: AbortSignal): Promise<{ body: Uint8Array; etag: string } | null> {
  for (let attempt = 1; ; attempt++) {
    try {
      signal?.throwIfAborted();
      const res = await presignedGet(ctx, key, {}, signal ?? new AbortController().signal);
      const declared = Number(res.headers.get("content-length") ?? NaN);
      if (declared > SMALL_OBJECT_MAX) throw new StoreError("other", `[s3] GET ${ctx.bucket}/${key}: ${declared} bytes is too large for a record`);
      const body = new Uint8Array(await res.arrayBuffer());
      if (Number.isFinite(declared) && body.byteLength !== declared) {
        throw new StoreError("network", `[s3] GET ${ctx.bucket}/${key}: body ended after ${body.byteLength} of ${declared} bytes`);
      }
      return { body, etag: unquote(res.headers.get("etag") ?? undefined) };
    } catch (err) {
      const e = toStoreError(err, "GET", key, { bucket: ctx.bucket, signal });
      if (e.kind === "not-found") return null;
      if (!e.retryable || attempt >= RANGE_ATTEMPTS || signal?.aborted) throw e;
      await Bun.sleep(100 * 2 ** attempt);
    }
  }
}

/**
 * PUT of a small buffer through a presigned URL, with `If-None-Match: *` or `If-Match`.
 * https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
 * 412 PreconditionFailed (and 409 ConditionalRequestConflict, a concurrent conditional write)
 * become kind "precondition"; those are never retried. Content-MD5 lets S3 reject a corrupted body.
 */
async function putSmall(
  ctx: Ctx, key: string, body: Uint8Array, cond: { ifNoneMatch?: boolean; ifMatch?: string } = {}, signal?: AbortSignal,
): Promise<string> {
  const headers: Record<string, string> = {
    "Content-MD5": new Bun.CryptoHasher("md5").update(body).digest("base64"),
    "Content-Type": "application/json",
  };
  if (cond.ifNoneMatch) headers["If-None-Match"] = "*";
  if (cond.ifMatch !== undefined) headers["If-Match"] = `"${cond.ifMatch}"`;
  for (let attempt = 1; ; attempt++) {
    try {
      signal?.throwIfAborted();
      const url = (await presigner(ctx)).presign(key, { expiresIn: 900, method: "PUT" });
      const res = await fetch(url, { method: "PUT", headers, body, signal });
      if (res.status === 200) {
        await res.arrayBuffer();
        return unquote(res.headers.get("etag") ?? undefined);
      }
      const text = await res.text().catch(() => "");
      const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
      const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1] ?? res.statusText;
      if (res.status === 412 || res.status === 409) {
        throw new StoreError("precondition", `[s3] PUT ${ctx.bucket}/${key}: ${res.status} ${code ?? "PreconditionFailed"}: ${message}`, { status: res.status });
      }
      throw Object.assign(new Error(message), { name: code ?? statusName(res.status), $metadata: { httpStatusCode: res.status } });
    } catch (err) {
      const e = toStoreError(err, "PUT", key, { bucket: ctx.bucket, signal });
      if (!e.retryable || attempt >= RANGE_ATTEMPTS || signal?.aborted) throw e;
      await Bun.sleep(100 * 2 ** attempt);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Errors

const NOT_FOUND = new Set(["NoSuchKey", "NotFound", "NoSuchUpload"]);
const ACCESS_DENIED = new Set([
  "AccessDenied",
  "Forbidden",
  "InvalidAccessKeyId",
  "SignatureDoesNotMatch",
  "InvalidToken",
  "ExpiredToken",
  "TokenRefreshRequired",
  "AllAccessDisabled",
  "AccountProblem",
  "CredentialsProviderError",
]);
const THROTTLED = new Set(["SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded", "ServiceUnavailable"]);
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNABORTED",
  "ConnectionRefused",
  "ConnectionClosed",
  "FailedToOpenSocket",
]);

/**
 * The one mapping from whatever the SDK, the HTTP handler or a stream threw to a `StoreError`.
 * Message: `[s3] GET bucket/key: 403 AccessDenied: <server message>`. Never contains credentials
 * or signed URLs (the SDK never puts them in messages; `redact` strips any URL query anyway).
 */
export function toStoreError(
  err: unknown,
  op: string,
  key: string,
  ctx: { bucket?: string; signal?: AbortSignal } = {},
): StoreError {
  if (err instanceof StoreError) return err;
  const where = `[s3] ${op} ${ctx.bucket === undefined ? key : `${ctx.bucket}/${key}`}`;
  const f = errorFacts(err);
  // Whatever an aborted operation ends with (AbortError, a custom abort reason, a destroyed
  // stream), it was the abort.
  const kind = ctx.signal?.aborted === true && f.status === undefined ? "aborted" : classify(f);
  const word = kind === "other" ? "error" : kind;
  const head =
    f.status !== undefined ? `${f.status} ${f.name}` : `${word} ${f.code ?? f.name}`;
  const text = f.message !== "" && f.message !== "UnknownError" ? `: ${f.message}` : "";
  return new StoreError(kind, redact(`${where}: ${head}${text}`), { cause: err, status: f.status });
}

interface ErrorFacts {
  name: string;
  message: string;
  status: number | undefined;
  code: string | undefined;
}

/** The interesting fields of an SDK/Node/Bun error, looking one level into `cause`. */
function errorFacts(err: unknown): ErrorFacts {
  const rec = asRecord(err);
  if (rec === undefined) return { name: "Error", message: String(err), status: undefined, code: undefined };
  const meta = asRecord(rec.$metadata);
  let status = typeof meta?.httpStatusCode === "number" ? meta.httpStatusCode : undefined;
  if (status === undefined) {
    const resp = asRecord(rec.$response);
    status = typeof resp?.statusCode === "number" ? resp.statusCode : undefined;
  }
  let name = typeof rec.name === "string" ? rec.name : "Error";
  // Unmodelled S3 errors are S3ServiceException with the XML <Code> in `Code` (name "Unknown" for bodiless ones).
  if (typeof rec.Code === "string" && rec.Code !== "" && (name === "Error" || name === "Unknown" || name === "S3ServiceException")) {
    name = rec.Code;
  }
  if (name === "Unknown" && status !== undefined) name = statusName(status);
  let code = typeof rec.code === "string" ? rec.code : undefined;
  const message = typeof rec.message === "string" ? rec.message.replace(/\s+/g, " ").trim() : "";
  if (code === undefined && status === undefined) {
    const cause = asRecord(rec.cause);
    if (cause !== undefined && typeof cause.code === "string") code = cause.code;
  }
  return { name, message, status, code };
}

function classify(f: ErrorFacts): StoreErrorKind {
  if (f.name === "AbortError" || f.code === "ABORT_ERR") return "aborted";
  if (f.name === "NoSuchBucket") return "no-such-bucket";
  if (NOT_FOUND.has(f.name)) return "not-found";
  if (ACCESS_DENIED.has(f.name)) return "access-denied";
  if (THROTTLED.has(f.name)) return "throttled";
  if (f.name === "PreconditionFailed") return "precondition";
  if (f.status !== undefined) {
    if (f.status === 404) return "not-found";
    if (f.status === 403 || f.status === 401) return "access-denied";
    if (f.status === 503 || f.status === 429) return "throttled";
    if (f.status === 412) return "precondition";
    return "other";
  }
  if (f.name === "TimeoutError") return "network";
  if (f.code !== undefined && NETWORK_CODES.has(f.code)) return "network";
  if (/socket hang up|ECONNREFUSED|ECONNRESET|ETIMEDOUT|EPIPE|connection (?:refused|reset|closed)|socket (?:closed|timed out)/i.test(f.message)) return "network";
  return "other";
}

function statusName(status: number): string {
  switch (status) {
    case 403:
      return "Forbidden";
    case 404:
      return "NotFound";
    case 412:
      return "PreconditionFailed";
    case 429:
      return "TooManyRequests";
    case 503:
      return "ServiceUnavailable";
    default:
      return `HTTP${status}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function fromListed(o: _Object): ObjectInfo {
  return {
    key: o.Key ?? "",
    size: o.Size ?? 0,
    lastModifiedMs: o.LastModified?.getTime() ?? 0,
    etag: unquote(o.ETag),
  };
}

function unquote(etag: string | undefined): string {
  if (etag === undefined) return "";
  return etag.replace(/^(?:W\/)?"(.*)"$/, "$1");
}

function asRecord(v: unknown): Record<string, unknown> | undefined {
  return typeof v === "object" && v !== null ? (v as Record<string, unknown>) : undefined;
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
