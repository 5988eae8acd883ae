/**
 * THE request path: every S3 request bucketfs makes goes through `send`.
 *
 * Is: URL building (path style on custom endpoints, virtual-hosted on AWS), SigV4 signing with
 * the store's credentials, the transport (http1.ts for bodiless requests, Bun's fetch for
 * uploads: measured 2x the SDK's transport here), a per-attempt
 * idle timer (no response headers or no body bytes for `idleTimeoutMs` = network failure), the
 * error answer parsed into a StoreError, and ONE retry policy: up to `maxAttempts` attempts with
 * full-jitter exponential backoff for whatever errors.ts `isRetryable` says. A response body is
 * consumed inside the attempt (by the `read` callback), so a reset or a digest mismatch while
 * reading is retried like one before the headers.
 * Is not: a place for operation logic (one file per S3 operation beside this one).
 */
import { logger } from "../../util/log.ts";
import { linkSignals, sleep } from "../../util/async.ts";
import { StoreError } from "../types.ts";
import type { CredentialSource } from "./credentials.ts";
import { isRetryable, REFRESH_CODES, s3Error, toStoreError, type Where } from "./errors.ts";
import { signRequest, uriEncode, uriEncodePath } from "./sign.ts";
import { http1Request, http1Serves, type S3Response } from "./http1.ts";
export type { S3Response } from "./http1.ts";
export { xmlBlocks, xmlEscape, xmlText, xmlValue } from "./xml.ts";

const log = logger("s3");

export interface RetryPolicy {
  /** Attempts per request, the first included. */
  maxAttempts: number;
  /** Backoff before attempt n+1 is uniform in [0, min(capMs, baseMs * 2^(n-1))] ("full jitter"). */
  baseMs: number;
  capMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 6, baseMs: 100, capMs: 5_000 };

export interface S3Context {
  bucket: string;
  region: string;
  /** `https://s3.us-east-1.amazonaws.com`-like origin, no trailing slash. */
  origin: string;
  host: string;
  /** Bucket in the path (custom endpoints, dotted names) or in the host name. */
  pathStyle: boolean;
  creds: CredentialSource;
  retry: RetryPolicy;
  /** No response headers, or no body bytes, for this long fails the attempt. */
  idleTimeoutMs: number;
  /** Requests without a body go over http1.ts (decided once, see `socketTransport`). */
  bodilessOverSocket: boolean;
}

export function s3Context(opts: {
  bucket: string;
  region: string;
  endpoint: string | undefined;
  creds: CredentialSource;
  retry?: Partial<RetryPolicy>;
  idleTimeoutMs?: number;
}): S3Context {
  const { bucket, region, endpoint } = opts;
  let origin: string;
  let pathStyle: boolean;
  if (endpoint !== undefined) {
    origin = endpoint.replace(/\/+$/, "");
    pathStyle = true;
  } else if (bucket.includes(".")) {
    origin = `https://s3.${region}.amazonaws.com`;
    pathStyle = true;
  } else {
    origin = `https://${bucket}.s3.${region}.amazonaws.com`;
    pathStyle = false;
  }
  return {
    bucket, region, origin, pathStyle, creds: opts.creds,
    host: new URL(origin).host,
    retry: { ...DEFAULT_RETRY, ...opts.retry },
    idleTimeoutMs: opts.idleTimeoutMs ?? 30_000,
    bodilessOverSocket: socketTransport(origin),
  };
}

/** What fetch accepts as a request body. */
export type Body = NonNullable<RequestInit["body"]>;

export interface S3Request {
  /** S3 API name, for messages and errors: `GetObject`, `ListObjectsV2`, ... */
  op: string;
  method: "GET" | "HEAD" | "PUT" | "POST" | "DELETE";
  /** Object key in the URL; undefined for bucket-level requests (LIST). */
  key?: string;
  /** What messages name after the bucket (the key, or the listed prefix). */
  about?: string;
  query?: [string, string][];
  /** Headers, or a function giving them per attempt (a resumed range). */
  headers?: Record<string, string> | (() => Record<string, string>);
  /** The body, made again for every attempt (a file slice, bytes, a string), before the headers. */
  body?: () => Body | Promise<Body>;
  /** Statuses that are answers rather than errors (default: 2xx). */
  ok?: (status: number) => boolean;
}

/** Per-attempt state handed to `read`. */
export interface Attempt {
  /** 1 for the first attempt. */
  n: number;
  /** Restart the idle timer: call on every body chunk. */
  arm(): void;
  signal: AbortSignal;
}

/**
 * One S3 request with the retry policy. `read` consumes the response (inside the attempt);
 * what it returns is the result. What it throws is mapped and retried by the same rule.
 */
export async function send<T>(
  ctx: S3Context,
  req: S3Request,
  read: (res: S3Response, a: Attempt) => Promise<T>,
  signal?: AbortSignal,
): Promise<T> {
  const where: Where = { op: req.op, bucket: ctx.bucket, key: req.about ?? req.key ?? "" };
  for (let n = 1; ; n++) {
    let e: StoreError;
    try {
      return await attempt(ctx, req, read, n, where, signal);
    } catch (err) {
      e = toStoreError(err, where, signal?.aborted === true);
    }
    if (e.code !== undefined && REFRESH_CODES.has(e.code)) ctx.creds.invalidate();
    if (!isRetryable(e) || n >= ctx.retry.maxAttempts || signal?.aborted) {
      if (e.kind === "corrupt") log.error(`${req.op} s3://${ctx.bucket}/${where.key}: the body stayed different from what S3 says of it after ${n} attempts; not served`);
      else if (n > 1) log.debug(`${req.op} ${ctx.bucket}/${where.key}: giving up after ${n} attempts: ${e.message}`);
      throw e;
    }
    const delay = Math.random() * Math.min(ctx.retry.capMs, ctx.retry.baseMs * 2 ** (n - 1));
    log.debug(`${req.op} ${ctx.bucket}/${where.key}: attempt ${n} failed (${e.message}); retrying in ${Math.round(delay)} ms`);
    await sleep(delay, signal);
    if (signal?.aborted) throw toStoreError(signal.reason, where, true);
  }
}

async function attempt<T>(
  ctx: S3Context,
  req: S3Request,
  read: (res: S3Response, a: Attempt) => Promise<T>,
  n: number,
  where: Where,
  signal: AbortSignal | undefined,
): Promise<T> {
  signal?.throwIfAborted();
  const link = linkSignals(signal);
  let timedOut = false;
  let timer: Timer | undefined;
  let res: S3Response | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timedOut = true;
      link.abort(Object.assign(new Error(`no answer for ${ctx.idleTimeoutMs} ms`), { name: "TimeoutError" }));
    }, ctx.idleTimeoutMs);
  };
  try {
    arm();
    // The body first: making it may compute the checksum header it is sent with.
    const body = req.body ? await req.body() : undefined;
    const creds = await ctx.creds.get();
    const objectPath = req.key === undefined ? "" : `/${uriEncodePath(req.key)}`;
    const path = ctx.pathStyle ? `/${uriEncode(ctx.bucket)}${objectPath}` : objectPath || "/";
    const query = req.query ?? [];
    const headers: Record<string, string> = { ...(typeof req.headers === "function" ? req.headers() : req.headers) };
    signRequest(req.method, ctx.host, path, query, headers, creds, ctx.region);
    const qs = query.map(([k, v]) => (v === "" ? uriEncode(k) : `${uriEncode(k)}=${uriEncode(v)}`)).join("&");
    const url = `${ctx.origin}${path}${qs ? `?${qs}` : ""}`;
    if (body === undefined && (req.method === "GET" || req.method === "HEAD") && ctx.bodilessOverSocket) {
      res = await http1Request(new URL(url), req.method, headers, link.signal);
    } else {
      const init = { method: req.method, headers, body, signal: link.signal, redirect: "manual", decompress: false } as RequestInit;
      res = await fetch(url, init);
    }
    arm();
    const ok = req.ok ?? ((s: number) => s >= 200 && s < 300);
    if (!ok(res.status)) {
      const text = req.method === "HEAD" ? "" : await res.text().catch(() => "");
      throw s3Error(where, res.status, text);
    }
    return await read(res, { n, arm, signal: link.signal });
  } catch (err) {
    if (timedOut && !(err instanceof StoreError && err.kind !== "aborted")) {
      throw toStoreError(link.signal.reason, where, false);
    }
    throw err;
  } finally {
    clearTimeout(timer);
    link.dispose();
    res?.cancel?.();
  }
}

/**
 * Requests without a body go over http1.ts on plain-HTTP endpoints (measured: about 0.6 s less
 * CPU per GiB read than fetch); uploads and https endpoints use fetch. BUCKETFS_HTTP=fetch
 * sends everything through fetch (A/B benchmarks, diagnosis).
 */
function socketTransport(origin: string): boolean {
  return http1Serves(origin) && process.env.BUCKETFS_HTTP !== "fetch";
}

export function unquote(etag: string | null | undefined): string {
  if (etag === undefined || etag === null) return "";
  return etag.replace(/^(?:W\/)?"(.*)"$/, "$1");
}

/** `x-amz-meta-*` headers as a record (names lower-case, without the prefix). */
export function userMeta(h: Headers): Record<string, string> {
  const meta: Record<string, string> = {};
  h.forEach((v, k) => {
    if (k.startsWith("x-amz-meta-")) meta[k.slice("x-amz-meta-".length)] = v;
  });
  return meta;
}

/** SSE-KMS (incl. DSSE) and SSE-C objects have ETags that are not the MD5 of their bytes. */
export function etagNotMd5(h: Headers): boolean {
  const sse = h.get("x-amz-server-side-encryption");
  return (sse !== null && sse !== "AES256") || h.get("x-amz-server-side-encryption-customer-algorithm") !== null;
}
