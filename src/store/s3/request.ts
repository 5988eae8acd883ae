/**
 * THE request path: every S3 request bucketfs makes goes through `send`.
 *
 * Is: URL building (path style on custom endpoints, virtual-hosted on AWS), SigV4 signing with
 * the store's credentials, the transport (http1.ts for bodiless requests, Bun's fetch for
 * uploads: measured 2x the SDK's transport here; fetch for everything behind an HTTPS_PROXY),
 * a per-attempt idle timer that measures progress (body pieces taken by fetch and answer bytes
 * received re-arm it, with an allowance for what sits in socket buffers on a slow uplink), a
 * stall budget for bodiless requests (no attempt after `stallBudgetMs` without progress), the
 * error answer parsed into a StoreError (a redirect names the region, a skewed clock says how
 * far off), and ONE retry policy: up to `maxAttempts` attempts with full-jitter exponential
 * backoff (a larger base and cap after throttling) for whatever errors.ts `isRetryable` says,
 * bounded by the request's `deadline` when it has one.
 * A response body is consumed inside the attempt (by the `read` callback), so a reset or a
 * digest mismatch while reading is retried like one before the headers. Also the one
 * process-wide bound on GETs and GET bytes in flight, and what `networkState` reports (clock
 * offset from Date headers, throttled retries, timeouts, proxy).
 * Is not: a place for operation logic (one file per S3 operation beside this one), or the
 * upload byte bound (put.ts).
 */
import { logger, redact } from "../../util/log.ts";
import { createLimiter, linkSignals, sleep } from "../../util/async.ts";
import { StoreError } from "../types.ts";
import type { CredentialSource } from "./credentials.ts";
import { isRetryable, REFRESH_CODES, s3Error, toStoreError, type Where } from "./errors.ts";
import { signRequest, uriEncode, uriEncodePath } from "./sign.ts";
import { http1Request, http1Serves, type S3Response } from "./http1.ts";
import { envSwitch } from "../../util/env.ts";
export type { S3Response } from "./http1.ts";
export { xmlBlocks, xmlEscape, xmlText, xmlValue } from "./xml.ts";

const log = logger("s3");

export interface RetryPolicy {
  /** Attempts per request, the first included. */
  maxAttempts: number;
  /** Backoff before attempt n+1 is uniform in [0, min(capMs, baseMs * 2^(n-1))] ("full jitter"). */
  baseMs: number;
  capMs: number;
  /** After a throttling answer (503 SlowDown, 429): the same full jitter from a larger base and cap. */
  throttleBaseMs: number;
  throttleCapMs: number;
}

/**
 * S3's guidance for 503 SlowDown is exponential backoff; the AWS SDKs start near 100 ms and cap
 * at 20 s. A throttled request starts from 500 ms so the whole prefix's request rate drops at once.
 */
export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 6, baseMs: 100, capMs: 5_000, throttleBaseMs: 500, throttleCapMs: 20_000 };

/** Default timeouts (ms); see S3Context. */
export const IDLE_TIMEOUT_MS = 30_000;
export const CONNECT_TIMEOUT_MS = 10_000;
export const STALL_BUDGET_MS = 45_000;

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
  /**
   * An attempt fails when no byte moved for this long: request body bytes handed to the socket
   * and answer bytes received both count as progress (a slow uplink is not a dead server).
   */
  idleTimeoutMs: number;
  /** TCP connect plus TLS handshake of one new connection (http1.ts). */
  connectTimeoutMs: number;
  /**
   * Requests without a body (reads, listings, HEADs): the time without progress summed over
   * all attempts and backoffs after which no further attempt is made, so a silent server gives
   * an error in this bounded time rather than maxAttempts × idleTimeoutMs.
   */
  stallBudgetMs: number;
  /** Requests without a body go over http1.ts (decided once, see `socketTransport`). */
  bodilessOverSocket: boolean;
  /** The proxy fetch is told to use for this origin (HTTPS_PROXY/HTTP_PROXY unless NO_PROXY). */
  proxy: string | undefined;
}

export function s3Context(opts: {
  bucket: string;
  region: string;
  endpoint: string | undefined;
  creds: CredentialSource;
  retry?: Partial<RetryPolicy>;
  idleTimeoutMs?: number;
  connectTimeoutMs?: number;
  stallBudgetMs?: number;
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
  const proxy = proxyFor(origin);
  if (proxy !== undefined) net.proxy = redact(proxy);
  return {
    bucket, region, origin, pathStyle, creds: opts.creds,
    host: new URL(origin).host,
    retry: { ...DEFAULT_RETRY, ...opts.retry },
    idleTimeoutMs: opts.idleTimeoutMs ?? IDLE_TIMEOUT_MS,
    connectTimeoutMs: opts.connectTimeoutMs ?? CONNECT_TIMEOUT_MS,
    stallBudgetMs: opts.stallBudgetMs ?? STALL_BUDGET_MS,
    // Through a proxy everything goes over fetch, which speaks CONNECT (http1.ts does not).
    bodilessOverSocket: proxy === undefined && socketTransport(origin),
    proxy,
  };
}

/**
 * The proxy for `origin` from the usual variables (HTTPS_PROXY for https, HTTP_PROXY for
 * http, lower-case forms too), unless NO_PROXY lists its host (a name, a `.suffix`, `*`, with or
 * without a port). Undefined: connect directly.
 */
export function proxyFor(origin: string, env: Record<string, string | undefined> = process.env): string | undefined {
  const u = new URL(origin);
  const pick = (name: string) => env[name] ?? env[name.toLowerCase()];
  const proxy = u.protocol === "https:" ? pick("HTTPS_PROXY") : pick("HTTP_PROXY");
  if (proxy === undefined || proxy.trim() === "") return undefined;
  const host = u.hostname.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  const port = u.port || (u.protocol === "https:" ? "443" : "80");
  for (const raw of (pick("NO_PROXY") ?? "").split(/[,\s]+/)) {
    const entry = raw.trim().toLowerCase();
    if (entry === "") continue;
    if (entry === "*") return undefined;
    const m = /^(.*?)(?::(\d+))?$/.exec(entry)!;
    const name = m[1]!.replace(/^\[(.*)\]$/, "$1").replace(/^\*?\./, ".");
    if (m[2] !== undefined && m[2] !== port) continue;
    if (name.startsWith(".") ? host.endsWith(name) || host === name.slice(1) : host === name || host.endsWith(`.${name}`)) return undefined;
  }
  return proxy.trim();
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
  /**
   * Date.now() time by which the request is worth nothing to its caller (a lease renewal after
   * the fence): the retry policy starts no attempt after it, shortens each attempt's idle time
   * to what is left, and keeps every backoff within a quarter of what is left, so several
   * attempts fit in the window instead of one long throttling backoff.
   */
  deadline?: number;
}

/** Per-attempt state handed to `read`. */
export interface Attempt {
  /** 1 for the first attempt. */
  n: number;
  /** Restart the idle timer: call on every body chunk. */
  arm(): void;
  signal: AbortSignal;
}

/** Process-wide bounds on GETs (every bucket: lazy reads, read-ahead, prefetch share them). */
export const GET_LIMIT = 32;
export const GET_BYTES_LIMIT = 256 * 1024 * 1024;
/** The weight of a GET without a range (a whole object of unknown size). */
const UNRANGED_GET_BYTES = 16 * 1024 * 1024;
const getSlots = createLimiter(GET_LIMIT);
const getBytes = createLimiter(GET_BYTES_LIMIT);

/** Clock offsets beyond this are reported (S3 refuses signatures more than 15 minutes off). */
const SKEW_WARN_MS = 5 * 60_000;

/** What the request path knows of the wire, for `status --json` (one process, every bucket). */
export interface NetworkState {
  gets: { inFlight: number; waiting: number; limit: number; bytesInFlight: number; bytesLimit: number };
  /** Server Date minus local time (ms) as last measured, or null before any answer. */
  clockSkewMs: number | null;
  /** Requests retried after a throttling answer, and the last backoff (ms). */
  throttled: number;
  /** Attempts that ended on the idle timer or the connect timer. */
  timeouts: number;
  proxy: string | null;
}

const net = { clockSkewMs: null as number | null, throttled: 0, timeouts: 0, proxy: null as string | null };

export function networkState(): NetworkState {
  return {
    gets: { inFlight: getSlots.inUse, waiting: getSlots.waiting, limit: GET_LIMIT, bytesInFlight: getBytes.inUse, bytesLimit: GET_BYTES_LIMIT },
    clockSkewMs: net.clockSkewMs, throttled: net.throttled, timeouts: net.timeouts, proxy: net.proxy,
  };
}

/** Upload progress anywhere in the process: a body handed over waits while the shared uplink moves. */
let uplinkTick = 0;
const uplinkWatchers = new Set<() => void>();
function uplinkMoved(): void {
  uplinkTick++;
  for (const w of uplinkWatchers) w();
}

/**
 * Per-request upload rate (bytes/ms), a moving average over recent file bodies. Watching a
 * body's progress costs CPU (about 0.7 s per GiB: the file goes through a JS stream); a body that
 * the recent rate moves in well under the idle time goes to fetch as a plain file slice. A
 * timeout on an upload forgets the rate, so the next attempt is watched.
 */
let uplinkRate: number | undefined;
function noteUplink(bytes: number, ms: number): void {
  const r = bytes / Math.max(1, ms);
  uplinkRate = uplinkRate === undefined ? r : 0.7 * uplinkRate + 0.3 * r;
}
function uplinkFast(bytes: number, idleMs: number): boolean {
  return uplinkRate !== undefined && bytes / uplinkRate < idleMs / 8;
}

/** The weight of a GET in the byte bound: its range's length. */
function getWeight(headers: Record<string, string>): number {
  const m = /^bytes=(\d+)-(\d+)$/.exec(headers["range"] ?? "");
  return m ? Number(m[2]) - Number(m[1]) + 1 : UNRANGED_GET_BYTES;
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
  let release: (() => void)[] = [];
  if (req.method === "GET") {
    try {
      const first = typeof req.headers === "function" ? req.headers() : (req.headers ?? {});
      release.push(await getSlots.acquire(1, signal));
      release.push(await getBytes.acquire(getWeight(first), signal));
    } catch (err) {
      for (const r of release) r();
      throw toStoreError(err, where, true);
    }
  }
  try {
    return await retrying(ctx, req, read, where, signal);
  } finally {
    for (const r of release) r();
    release = [];
  }
}

async function retrying<T>(
  ctx: S3Context,
  req: S3Request,
  read: (res: S3Response, a: Attempt) => Promise<T>,
  where: Where,
  signal: AbortSignal | undefined,
): Promise<T> {
  // Bodiless requests: a budget of time without progress over all attempts (see stallBudgetMs).
  const budgeted = req.body === undefined;
  const progress = { at: Date.now() };
  for (let n = 1; ; n++) {
    let e: StoreError;
    try {
      let idle = budgeted ? Math.max(1_000, Math.min(ctx.idleTimeoutMs, ctx.stallBudgetMs - (Date.now() - progress.at))) : ctx.idleTimeoutMs;
      if (req.deadline !== undefined) idle = Math.max(MIN_DEADLINE_IDLE_MS, Math.min(idle, req.deadline - Date.now()));
      return await attempt(ctx, req, read, n, where, signal, idle, progress);
    } catch (err) {
      e = toStoreError(err, where, signal?.aborted === true);
    }
    if (e.code !== undefined && REFRESH_CODES.has(e.code)) ctx.creds.invalidate();
    const stalled = Date.now() - progress.at;
    const outOfBudget = budgeted && stalled >= ctx.stallBudgetMs - 1_000;
    const pastDeadline = req.deadline !== undefined && Date.now() >= req.deadline;
    if (!isRetryable(e) || n >= ctx.retry.maxAttempts || signal?.aborted || outOfBudget || pastDeadline) {
      if (e.kind === "corrupt") log.error(`${req.op} s3://${ctx.bucket}/${where.key}: the body stayed different from what S3 says of it after ${n} attempts; not served`);
      else if (outOfBudget && isRetryable(e)) {
        log.warn(`${req.op} s3://${ctx.bucket}/${where.key}: no progress for ${Math.round(stalled / 1000)} s over ${n} attempts; giving up: ${e.message}`);
      } else if (pastDeadline && isRetryable(e)) {
        log.debug(`${req.op} ${ctx.bucket}/${where.key}: its deadline passed after ${n} attempts; giving up: ${e.message}`);
      } else if (n > 1) log.debug(`${req.op} ${ctx.bucket}/${where.key}: giving up after ${n} attempts: ${e.message}`);
      throw e;
    }
    const throttled = e.kind === "throttled";
    if (throttled) net.throttled++;
    const base = throttled ? ctx.retry.throttleBaseMs : ctx.retry.baseMs;
    const cap = throttled ? ctx.retry.throttleCapMs : ctx.retry.capMs;
    let delay = Math.random() * Math.min(cap, base * 2 ** (n - 1));
    if (budgeted) delay = Math.min(delay, Math.max(0, ctx.stallBudgetMs - stalled - 1_000));
    if (req.deadline !== undefined) delay = Math.min(delay, (req.deadline - Date.now()) / DEADLINE_BACKOFF_SHARE);
    log.debug(`${req.op} ${ctx.bucket}/${where.key}: attempt ${n} failed (${e.message}); retrying in ${Math.round(delay)} ms`);
    await sleep(delay, signal);
    if (signal?.aborted) throw toStoreError(signal.reason, where, true);
  }
}

/** With a deadline: an attempt gets at least this idle time, and a backoff at most 1/this of what is left. */
const MIN_DEADLINE_IDLE_MS = 1_000;
const DEADLINE_BACKOFF_SHARE = 4;

/** File bodies of this size or more are handed to fetch piece by piece, so their progress is seen. */
const WATCHED_BODY_MIN = 64 * 1024;
/**
 * After a body is handed over, the answer is awaited for the idle time plus the estimated drain
 * time of its buffered tail, longer while other uploads move; never more than this many idle periods.
 */
const HANDED_OVER_IDLE_PERIODS = 4;
/** Per connection: the slowest share of an uplink assumed before one was measured (16 KiB/s). */
const MIN_UPLINK_BYTES_PER_S = 16 * 1024;
/** Pieces taken this soon after the request started went into empty socket buffers. */
const BURST_MS = 250;

function bodySize(body: Body): number | undefined {
  if (body instanceof Blob) return body.size;
  if (body instanceof Uint8Array) return body.byteLength;
  if (body instanceof ArrayBuffer) return body.byteLength;
  return undefined;
}

/**
 * A file slice as a stream that reports every piece fetch takes: fetch pulls as the socket
 * drains, so pieces taken are bytes on their way (up to fetch's and the kernel's buffers).
 */
function watchedBody(body: Blob, onPiece: (bytes: number) => void, onDone: () => void): ReadableStream<Uint8Array> {
  const reader = body.stream().getReader();
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      const r = await reader.read();
      if (r.done) {
        onDone();
        ctl.close();
        return;
      }
      onPiece(r.value.byteLength);
      ctl.enqueue(r.value);
    },
    cancel: (why) => reader.cancel(why),
  }, { highWaterMark: 0 });
}

async function attempt<T>(
  ctx: S3Context,
  req: S3Request,
  read: (res: S3Response, a: Attempt) => Promise<T>,
  n: number,
  where: Where,
  signal: AbortSignal | undefined,
  idleMs: number,
  progress: { at: number },
): Promise<T> {
  signal?.throwIfAborted();
  const link = linkSignals(signal);
  let timedOut = false;
  let timer: Timer | undefined;
  let res: S3Response | undefined;
  let handedOverAt: number | undefined;
  const fire = (what: string) => {
    timedOut = true;
    net.timeouts++;
    if (req.body !== undefined) uplinkRate = undefined;
    link.abort(Object.assign(new Error(what), { name: "TimeoutError" }));
  };
  const arm = (extraMs = 0, moved = true) => {
    if (moved) progress.at = Date.now();
    clearTimeout(timer);
    timer = setTimeout(() => fire(`no byte moved for ${idleMs} ms`), idleMs + extraMs);
  };
  /**
   * Pieces taken by fetch sit in its buffers and the socket's before they cross the link, and
   * fetch takes more only once they drained. That drain time is estimated from this body: what
   * was taken in the first burst (into empty buffers) over the rate at which the rest was taken.
   */
  let sentAt = 0;
  let burst = 0;
  let taken = 0;
  const drainMs = (): number => {
    const steady = Date.now() - sentAt - BURST_MS;
    // Until a steady rate was seen, assume the slowest link bucketfs means to work over.
    const measured = steady > 500 && taken > burst ? (taken - burst) / steady : 0; // bytes per ms
    const rate = Math.max(measured, MIN_UPLINK_BYTES_PER_S / 1000);
    return Math.min(HANDED_OVER_IDLE_PERIODS * idleMs, burst / rate);
  };
  // The body is all handed over: its tail may still sit in socket buffers behind a shared,
  // slow uplink. Wait for the answer while any upload in the process moves, up to a cap.
  let tailMs = 0;
  const onUplink = () => {
    if (handedOverAt === undefined || res !== undefined) return;
    if (Date.now() - handedOverAt < HANDED_OVER_IDLE_PERIODS * idleMs) arm(tailMs);
  };
  try {
    arm(0, false);
    // The body first: making it may compute the checksum header it is sent with.
    const made = req.body ? await req.body() : undefined;
    const creds = await ctx.creds.get(link.signal);
    const objectPath = req.key === undefined ? "" : `/${uriEncodePath(req.key)}`;
    const path = ctx.pathStyle ? `/${uriEncode(ctx.bucket)}${objectPath}` : objectPath || "/";
    const query = req.query ?? [];
    const headers: Record<string, string> = { ...(typeof req.headers === "function" ? req.headers() : req.headers) };
    signRequest(req.method, ctx.host, path, query, headers, creds, ctx.region);
    const qs = query.map(([k, v]) => (v === "" ? uriEncode(k) : `${uriEncode(k)}=${uriEncode(v)}`)).join("&");
    const url = `${ctx.origin}${path}${qs ? `?${qs}` : ""}`;
    sentAt = Date.now();
    if (made === undefined && (req.method === "GET" || req.method === "HEAD") && ctx.bodilessOverSocket) {
      res = await http1Request(new URL(url), req.method, headers, link.signal, { connectTimeoutMs: ctx.connectTimeoutMs, onBytes: () => arm() });
    } else {
      let body: Body | undefined = made;
      const size = made === undefined ? undefined : bodySize(made);
      if (made !== undefined && size !== undefined && !(made instanceof Blob)) {
        // Bytes in memory (files up to 1 MiB, XML): the socket buffers take them at once, so a
        // stream would show no progress, only cost CPU. Counted as handed over now: the answer
        // is awaited for the time they need at the slowest assumed share of the uplink.
        uplinkWatchers.add(onUplink);
        handedOverAt = sentAt;
        taken = burst = size;
        tailMs = drainMs();
        arm(tailMs, false);
      } else if (made instanceof Blob && size !== undefined && size >= WATCHED_BODY_MIN && !uplinkFast(size, idleMs)) {
        headers["content-length"] = String(size);
        uplinkWatchers.add(onUplink);
        body = watchedBody(made, (n) => {
          taken += n;
          if (Date.now() - sentAt <= BURST_MS) burst = taken;
          // fetch takes pieces in bursts, each once its buffers drained: allow for that drain.
          arm(drainMs());
          uplinkMoved();
        }, () => {
          handedOverAt = Date.now();
          tailMs = drainMs();
          arm(tailMs);
        });
      }
      const init = {
        method: req.method, headers, body, signal: link.signal, redirect: "manual", decompress: false,
        ...(body instanceof ReadableStream ? { duplex: "half" } : {}),
        ...(ctx.proxy !== undefined ? { proxy: ctx.proxy } : {}),
      } as RequestInit;
      res = await fetch(url, init);
      if (made !== undefined) {
        uplinkMoved();
        if (size !== undefined && size >= WATCHED_BODY_MIN) noteUplink(size, Date.now() - sentAt);
      }
    }
    arm();
    noteDate(res.headers.get("date"), sentAt);
    const ok = req.ok ?? ((s: number) => s >= 200 && s < 300);
    if (!ok(res.status)) {
      const text = req.method === "HEAD" ? "" : await res.text().catch(() => "");
      throw explain(s3Error(where, res.status, text, res.headers), ctx);
    }
    return await read(res, { n, arm: () => arm(), signal: link.signal });
  } catch (err) {
    // http1.ts's connect timer (ETIMEDOUT) is a timeout too, though not this idle timer's.
    if (!timedOut && (err as { code?: unknown } | undefined)?.code === "ETIMEDOUT") net.timeouts++;
    if (timedOut && !(err instanceof StoreError && err.kind !== "aborted")) {
      throw toStoreError(link.signal.reason, where, false);
    }
    throw err;
  } finally {
    uplinkWatchers.delete(onUplink);
    clearTimeout(timer);
    link.dispose();
    res?.cancel?.();
  }
}

/** Measure the clock offset from an answer's Date header (1 s resolution; half the round trip as slack). */
function noteDate(date: string | null, sentAt: number): void {
  if (date === null) return;
  const server = Date.parse(date);
  if (!Number.isFinite(server)) return;
  const now = Date.now();
  const local = (sentAt + now) / 2;
  const skew = server - local;
  // Within the header's resolution plus the round trip: no measurable offset.
  const was = net.clockSkewMs;
  net.clockSkewMs = Math.abs(skew) <= 1_000 + (now - sentAt) / 2 ? 0 : Math.round(skew);
  if (Math.abs(net.clockSkewMs) > SKEW_WARN_MS && (was === null || Math.abs(was) <= SKEW_WARN_MS)) {
    log.warn(`this host's clock is ${skewWords(net.clockSkewMs)} the S3 server's (its Date header): S3 refuses requests signed more than 15 min off; set the clock (NTP)`);
  }
}

/** How far this host's clock is off, in words ("12 min behind"). */
function skewWords(ms: number): string {
  const min = Math.abs(ms) / 60_000;
  const amount = min >= 1 ? `${min.toFixed(min >= 10 ? 0 : 1)} min` : `${Math.round(Math.abs(ms) / 1000)} s`;
  return `${amount} ${ms > 0 ? "behind" : "ahead of"}`;
}

/** An error answer with what bucketfs knows of its cause: a skewed clock, a redirect to a region. */
function explain(e: StoreError, ctx: S3Context): StoreError {
  const skew = net.clockSkewMs;
  if (e.code === "RequestTimeTooSkewed" || (e.kind === "access-denied" && skew !== null && Math.abs(skew) > SKEW_WARN_MS)) {
    const how = skew !== null && skew !== 0 ? `this host's clock is ${skewWords(skew)} the server's (its Date header)` : "this host's clock is too far from the server's";
    return new StoreError(e.kind, `${e.message} -- ${how}; S3 refuses requests signed more than 15 min off: set the clock (NTP)`, {
      status: e.status, code: e.code ?? "RequestTimeTooSkewed", op: e.op, bucket: e.bucket, key: e.key,
    });
  }
  void ctx;
  return e;
}
/**
 * Requests without a body go over http1.ts, http and https (measured: about 0.6 s less CPU per
 * GiB read than fetch); uploads, and every request behind a proxy, use fetch. BUCKETFS_HTTP=fetch
 * sends everything through fetch (A/B benchmarks, diagnosis).
 */
function socketTransport(origin: string): boolean {
  return http1Serves(origin) && envSwitch("BUCKETFS_HTTP") !== "fetch";
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
