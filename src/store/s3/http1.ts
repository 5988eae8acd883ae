/**
 * HTTP/1.1 over Bun's TCP and TLS sockets for the requests that carry no body (GET and HEAD:
 * every GetObject, HeadObject and ListObjectsV2).
 *
 * Why not fetch for these: a 1 GiB ranged read through fetch cost 1.64-2.00 s of CPU per GiB in
 * this process, against 1.07-1.12 s over a socket whose `data` events go straight to the sink
 * (.scratch measurement, 8 × 8 MiB GETs in flight, into one file, 2026-11-30). Fetch's body
 * crosses a second thread and is copied three times before JS sees it.
 *
 * Is: a keep-alive connection pool per origin, the request head written, the response head
 * parsed (status, Headers), the body framed by Content-Length, chunked coding or the end of
 * the connection, and handed out as an async iterable with backpressure (the socket pauses
 * while more than HIGH_WATER bytes wait unread). A connection goes back to the pool only when
 * its response was read to the end and the server did not ask to close it. A reused
 * connection that fails before the first response byte (the server closed it while idle) is
 * replaced once, silently. Failures are Errors with a network `code` (ECONNRESET, ...), so the
 * one retry policy in request.ts treats them like fetch's. On https a connection is used only
 * after its TLS handshake succeeded with a certificate the system store (plus
 * NODE_EXTRA_CA_CERTS, as for fetch) vouches for, for the endpoint's name; a failed check is an
 * error naming it, never retried. Is not: signing, retries, the idle timer (request.ts arms it),
 * request bodies.
 * A new connection must connect (and finish its TLS handshake) within the caller's connect
 * timeout, and an abort cuts it; answer bytes are reported to the caller's idle timer.
 */
import type { Socket } from "bun";
import { deferred } from "../../util/async.ts";

/** A void deferred whose rejection is never unhandled (nobody may be waiting on it). */
function deferredVoid() {
  const d = deferred();
  d.promise.catch(() => {});
  return d;
}

/** What request.ts and the operations read of a response (a fetch Response has all of it). */
export interface S3Response {
  readonly status: number;
  readonly headers: Headers;
  readonly body: AsyncIterable<Uint8Array> | null;
  text(): Promise<string>;
  arrayBuffer(): Promise<ArrayBuffer>;
  /** Drop whatever of the body was not read (its connection is closed, not reused). */
  cancel?(): void;
}

/** Unread body bytes at which the socket stops reading. */
const HIGH_WATER = 1024 * 1024;
/** An idle pooled connection is closed after this long (servers close theirs after 5 s or more). */
const IDLE_CLOSE_MS = 4_000;
/** Idle connections kept per origin. */
const MAX_IDLE = 32;
/** A response head larger than this is refused. */
const MAX_HEAD = 64 * 1024;

const CRLF2 = Buffer.from("\r\n\r\n");

function netError(message: string, code = "ECONNRESET"): Error {
  return Object.assign(new Error(message), { code });
}

type PausableSocket = Socket<Conn> & { pause(): boolean; resume(): boolean };

/** One response being read off a connection. */
class Exchange implements S3Response {
  status = 0;
  headers = new Headers();
  body: AsyncIterable<Uint8Array> | null = null;
  /** Body bytes framed so far, and what frames the rest. */
  framing: "none" | "length" | "chunked" | "close" = "none";
  remaining = 0;
  /** Chunked coding: bytes left in the current chunk, or -1 while a size line is read. */
  chunkLeft = -1;
  chunkTail = Buffer.alloc(0);
  trailers = false;
  ended = false;
  keepAlive = true;
  failure: Error | undefined;
  private queue: Uint8Array[] = [];
  private queued = 0;
  private wake: (() => void) | undefined;
  /** Called once when the response ends, read to the end or failed. */
  onEnd: (() => void) | undefined;

  constructor(
    readonly method: string,
    private pause: () => void,
    private resume: () => void,
    private abandon: () => void,
  ) {}

  push(chunk: Uint8Array): void {
    if (chunk.byteLength === 0) return;
    this.queue.push(chunk);
    this.queued += chunk.byteLength;
    if (this.queued > HIGH_WATER) this.pause();
    this.notify();
  }

  finish(err?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = err;
    this.notify();
    const cb = this.onEnd;
    this.onEnd = undefined;
    cb?.();
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  makeBody(): void {
    const self = this;
    this.body = {
      [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
        return {
          async next(): Promise<IteratorResult<Uint8Array>> {
            for (;;) {
              const c = self.queue.shift();
              if (c !== undefined) {
                const before = self.queued;
                self.queued -= c.byteLength;
                if (before > HIGH_WATER && self.queued <= HIGH_WATER) self.resume();
                return { value: c, done: false };
              }
              if (self.ended) {
                if (self.failure) throw self.failure;
                return { value: undefined, done: true };
              }
              await new Promise<void>((r) => (self.wake = r));
            }
          },
          async return(): Promise<IteratorResult<Uint8Array>> {
            self.cancel();
            return { value: undefined, done: true };
          },
        };
      },
    };
  }

  cancel(): void {
    this.queue = [];
    if (this.ended) return;
    this.abandon();
    this.finish(netError("response body not read", "ABORT_ERR"));
  }

  private async all(): Promise<Buffer> {
    const parts: Uint8Array[] = [];
    if (this.body) for await (const c of this.body) parts.push(c);
    return Buffer.concat(parts);
  }

  async text(): Promise<string> {
    return (await this.all()).toString("utf8");
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    const b = await this.all();
    return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
  }
}

/** One keep-alive TCP connection and the parser of the response it is reading. */
class Conn {
  socket: PausableSocket | undefined;
  private head = Buffer.alloc(0);
  ex: Exchange | undefined;
  onHead: ((ex: Exchange) => void) | undefined;
  onFail: ((err: Error) => void) | undefined;
  /** Request bytes the socket has not taken yet (written on drain). */
  unsent: Buffer | undefined;
  /** Bytes of the current response seen (0: the server may have closed an idle connection). */
  seen = 0;
  closed = false;
  destroyed = false;
  idleTimer: Timer | undefined;
  /** The current request's progress callback (cleared when the connection goes back to the pool). */
  onBytes: (() => void) | undefined;

  constructor(readonly pool: Pool) {}

  data(chunk: Buffer): void {
    this.seen += chunk.byteLength;
    this.onBytes?.();
    let buf: Buffer = chunk;
    while (buf.byteLength > 0) {
      const ex = this.ex;
      if (!ex) {
        // Bytes with no request outstanding: the connection is out of step; never reuse it.
        this.destroy();
        return;
      }
      if (ex.status === 0) {
        buf = this.readHead(buf);
        continue;
      }
      buf = this.readBody(ex, buf);
    }
  }

  /** Accumulate the head; parse it once complete. Returns the bytes after it. */
  private readHead(buf: Buffer): Buffer {
    const joined = this.head.byteLength ? Buffer.concat([this.head, buf]) : buf;
    const end = joined.indexOf(CRLF2);
    if (end < 0) {
      if (joined.byteLength > MAX_HEAD) this.fail(netError(`response head over ${MAX_HEAD} bytes`, "EPROTO"));
      else this.head = Buffer.from(joined);
      return Buffer.alloc(0);
    }
    this.head = Buffer.alloc(0);
    const lines = joined.toString("latin1", 0, end).split("\r\n");
    const m = /^HTTP\/1\.([01]) (\d{3})/.exec(lines[0] ?? "");
    if (!m) {
      this.fail(netError(`bad status line ${JSON.stringify((lines[0] ?? "").slice(0, 80))}`, "EPROTO"));
      return Buffer.alloc(0);
    }
    const status = Number(m[2]);
    const rest = joined.subarray(end + 4);
    if (status >= 100 && status < 200) return rest; // 100 Continue and friends: the real head follows
    const ex = this.ex!;
    ex.status = status;
    for (let i = 1; i < lines.length; i++) {
      const line = lines[i]!;
      const c = line.indexOf(":");
      if (c <= 0) continue;
      try {
        ex.headers.append(line.slice(0, c).trim(), line.slice(c + 1).trim());
      } catch {
        /* a header Headers refuses (bad name): not one S3 sends that bucketfs reads */
      }
    }
    const conn = (ex.headers.get("connection") ?? "").toLowerCase();
    ex.keepAlive = m[1] === "1" ? !conn.includes("close") : conn.includes("keep-alive");
    const te = (ex.headers.get("transfer-encoding") ?? "").toLowerCase();
    const cl = ex.headers.get("content-length");
    if (ex.method === "HEAD" || status === 204 || status === 304) ex.framing = "none";
    else if (te.includes("chunked")) ex.framing = "chunked";
    else if (cl !== null && /^\d+$/.test(cl)) {
      ex.framing = "length";
      ex.remaining = Number(cl);
    } else {
      ex.framing = "close";
      ex.keepAlive = false;
    }
    if (ex.framing !== "none") ex.makeBody();
    const cb = this.onHead;
    this.onHead = undefined;
    if (ex.framing === "none" || (ex.framing === "length" && ex.remaining === 0)) this.complete(ex);
    cb?.(ex);
    return rest;
  }

  private readBody(ex: Exchange, buf: Buffer): Buffer {
    switch (ex.framing) {
      case "length": {
        const n = Math.min(ex.remaining, buf.byteLength);
        ex.push(buf.subarray(0, n));
        ex.remaining -= n;
        if (ex.remaining === 0) this.complete(ex);
        return buf.subarray(n);
      }
      case "close":
        ex.push(buf);
        return Buffer.alloc(0);
      case "chunked":
        return this.readChunked(ex, buf);
      default:
        this.destroy();
        return Buffer.alloc(0);
    }
  }

  private readChunked(ex: Exchange, input: Buffer): Buffer {
    let buf = input;
    while (buf.byteLength > 0 && !ex.ended) {
      if (ex.chunkLeft > 0) {
        const n = Math.min(ex.chunkLeft, buf.byteLength);
        ex.push(buf.subarray(0, n));
        ex.chunkLeft -= n;
        buf = buf.subarray(n);
        if (ex.chunkLeft === 0) ex.chunkLeft = -2; // the CRLF after the data
        continue;
      }
      // A line: the CRLF after data (-2), a size line (-1), or a trailer line.
      const joined = ex.chunkTail.byteLength ? Buffer.concat([ex.chunkTail, buf]) : buf;
      const eol = joined.indexOf("\r\n");
      if (eol < 0) {
        if (joined.byteLength > 4096) this.fail(netError("bad chunked coding", "EPROTO"));
        else ex.chunkTail = Buffer.from(joined);
        return Buffer.alloc(0);
      }
      ex.chunkTail = Buffer.alloc(0);
      const line = joined.toString("latin1", 0, eol);
      buf = joined.subarray(eol + 2);
      if (ex.chunkLeft === -2) {
        ex.chunkLeft = -1;
        continue;
      }
      if (ex.trailers) {
        if (line === "") {
          this.complete(ex);
          return buf;
        }
        continue;
      }
      const size = parseInt(line.split(";")[0]!.trim(), 16);
      if (!Number.isFinite(size) || size < 0) {
        this.fail(netError(`bad chunk size line ${JSON.stringify(line.slice(0, 40))}`, "EPROTO"));
        return Buffer.alloc(0);
      }
      if (size === 0) ex.trailers = true;
      else ex.chunkLeft = size;
    }
    return buf;
  }

  /** The response was read to its end: the consumer gets the end, the connection is free. */
  private complete(ex: Exchange): void {
    ex.finish();
    this.ex = undefined;
    this.onBytes = undefined;
    if (ex.keepAlive && !this.closed) this.pool.release(this);
    else this.destroy();
  }

  /** The connection ended or failed under the current response. */
  fail(err: Error): void {
    const ex = this.ex;
    this.ex = undefined;
    this.destroy();
    if (this.onFail) {
      const f = this.onFail;
      this.onFail = undefined;
      this.onHead = undefined;
      f(err);
    }
    ex?.finish(err);
  }

  /** Settled by the TLS handshake (resolved at once for plain TCP). */
  private secured = deferredVoid();

  handshake(ok: boolean, error: Error | null): void {
    // Accepted only when it succeeded AND no verification error was reported with it.
    if (ok && !error) return this.secured.resolve();
    const why = error?.message ?? "the certificate was not accepted";
    // Not a network code: the one retry rule does not retry it (the next request tries afresh).
    this.secured.reject(Object.assign(new Error(`TLS: ${why} (${this.pool.hostname}:${this.pool.port})`), { code: "ERR_TLS_CERT" }));
    this.destroy();
  }

  /** Resolves once the connection may carry a request. */
  ready(tls: boolean): Promise<void> {
    if (!tls) this.secured.resolve();
    return this.secured.promise;
  }

  /** Write what the socket takes now; the rest on drain. */
  write(bytes: Buffer): void {
    const n = this.socket!.write(bytes);
    this.unsent = n < bytes.byteLength ? bytes.subarray(Math.max(0, n)) : undefined;
  }

  drain(): void {
    if (this.unsent) this.write(this.unsent);
  }

  closedByPeer(error?: Error): void {
    this.secured.reject(netError(`connection closed during the TLS handshake${error ? `: ${error.message}` : ""}`));
    if (this.destroyed) return; // our own terminate(): whoever called destroy() handles the rest
    this.closed = true;
    this.pool.forget(this);
    const ex = this.ex;
    if (ex && ex.status > 0 && ex.framing === "close" && !error) {
      // A body framed by the end of the connection is complete now.
      this.ex = undefined;
      ex.finish();
    } else if (ex || this.onFail) {
      this.fail(netError(error ? `connection closed: ${error.message}` : "connection closed"));
    }
  }

  destroy(): void {
    this.destroyed = true;
    this.closed = true;
    clearTimeout(this.idleTimer);
    this.pool.forget(this);
    try {
      this.socket?.terminate();
    } catch {
      /* already gone */
    }
  }
}

const handlers = {
  handshake(s: Socket<Conn>, ok: boolean, error: Error | null) {
    s.data?.handshake(ok, error);
  },
  data(s: Socket<Conn>, chunk: Buffer) {
    s.data.data(chunk);
  },
  drain(s: Socket<Conn>) {
    s.data?.drain();
  },
  close(s: Socket<Conn>, error?: Error) {
    s.data?.closedByPeer(error);
  },
  end(s: Socket<Conn>) {
    s.data?.closedByPeer();
  },
  error(s: Socket<Conn>, error: Error) {
    s.data?.closedByPeer(error);
  },
};

/** Idle connections to one origin. */
class Pool {
  private idle: Conn[] = [];

  constructor(readonly hostname: string, readonly port: number, readonly tls: boolean) {}

  take(): Conn | undefined {
    for (;;) {
      const c = this.idle.pop();
      if (!c) return undefined;
      clearTimeout(c.idleTimer);
      if (!c.closed && c.socket && c.socket.readyState === 1) return c;
    }
  }

  release(c: Conn): void {
    if (this.idle.length >= MAX_IDLE) return c.destroy();
    c.socket?.unref();
    c.idleTimer = setTimeout(() => c.destroy(), IDLE_CLOSE_MS);
    c.idleTimer.unref?.();
    this.idle.push(c);
  }

  closeIdle(): void {
    for (const c of this.idle.splice(0)) c.destroy();
  }

  forget(c: Conn): void {
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /**
   * A new connection, TLS handshake included, within `timeoutMs` and cut by `signal` (the
   * kernel alone would wait about 2 minutes for a blackholed SYN). A socket that connects after
   * we gave up is closed at once.
   */
  async connect(signal: AbortSignal, timeoutMs: number): Promise<Conn> {
    signal.throwIfAborted();
    const c = new Conn(this);
    let gaveUp = false;
    let timer: Timer | undefined;
    let onAbort: (() => void) | undefined;
    const cut = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(netError(`connect to ${this.hostname}:${this.port}${this.tls ? " (TCP and TLS handshake)" : ""}: no connection in ${timeoutMs} ms`, "ETIMEDOUT"));
      }, timeoutMs);
      onAbort = () => reject(signal.reason instanceof Error ? signal.reason : Object.assign(new Error("aborted"), { name: "AbortError" }));
      signal.addEventListener("abort", onAbort, { once: true });
    });
    const open = (async () => {
      const socket = (await Bun.connect<Conn>({
        hostname: this.hostname, port: this.port, data: c, socket: handlers,
        ...(this.tls ? { tls: { serverName: this.hostname } } : {}),
      })) as PausableSocket;
      c.socket = socket;
      if (gaveUp) {
        c.destroy();
        throw netError("connect abandoned");
      }
      socket.setNoDelay(true);
      await c.ready(this.tls);
      return c;
    })();
    try {
      return await Promise.race([open, cut]);
    } catch (err) {
      gaveUp = true;
      open.catch(() => {});
      c.destroy();
      throw err;
    } finally {
      clearTimeout(timer);
      if (onAbort) signal.removeEventListener("abort", onAbort);
    }
  }
}

const pools = new Map<string, Pool>();

/** Close every pooled idle connection (tests; a daemon's idle sockets never hold it up). */
export function closeIdleConnections(): void {
  for (const p of pools.values()) p.closeIdle();
}

/** True when `origin` can be served by this client (http or https). */
export function http1Serves(origin: string): boolean {
  return origin.startsWith("http://") || origin.startsWith("https://");
}

export interface Http1Options {
  /** TCP connect plus TLS handshake of a new connection (default 10 s). */
  connectTimeoutMs?: number;
  /** Called whenever bytes of the answer arrive (the caller's idle timer counts them as progress). */
  onBytes?: () => void;
}

/**
 * One request without a body. Resolves with the response once its head is read; the body
 * (when any) is read by iterating `body`. The signal aborts the request and the body.
 */
export async function http1Request(
  url: URL,
  method: "GET" | "HEAD",
  headers: Record<string, string>,
  signal: AbortSignal,
  opts: Http1Options = {},
): Promise<S3Response> {
  signal.throwIfAborted();
  const tls = url.protocol === "https:";
  const port = Number(url.port || (tls ? 443 : 80));
  // URL keeps the brackets of an IPv6 literal; the socket wants the bare address.
  const hostname = url.hostname.replace(/^\[(.*)\]$/, "$1");
  const key = `${url.protocol}//${hostname}:${port}`;
  let pool = pools.get(key);
  if (!pool) {
    pool = new Pool(hostname, port, tls);
    pools.set(key, pool);
  }
  let head = `${method} ${url.pathname}${url.search} HTTP/1.1\r\nhost: ${url.host}\r\n`;
  for (const [k, v] of Object.entries(headers)) {
    if (/[\r\n]/.test(k) || /[\r\n]/.test(v)) throw new Error(`header ${k} holds a line break`);
    head += `${k}: ${v}\r\n`;
  }
  head += "\r\n";
  // A pooled connection the server closed while it was idle fails before any byte: once more on a new one.
  for (let tries = 0; ; tries++) {
    const reused = pool.take();
    const conn = reused ?? (await pool.connect(signal, opts.connectTimeoutMs ?? 10_000));
    conn.onBytes = opts.onBytes;
    try {
      return await exchange(conn, method, head, signal);
    } catch (err) {
      if (reused && conn.seen === 0 && tries === 0 && !signal.aborted) continue;
      throw err;
    }
  }
}

function exchange(conn: Conn, method: string, head: string, signal: AbortSignal): Promise<S3Response> {
  signal.throwIfAborted();
  const socket = conn.socket!;
  socket.ref();
  conn.seen = 0;
  return new Promise<S3Response>((resolve, reject) => {
    const ex = new Exchange(method, () => socket.pause(), () => socket.resume(), () => conn.destroy());
    conn.ex = ex;
    const onAbort = () => {
      const reason = signal.reason instanceof Error ? signal.reason : Object.assign(new Error("aborted"), { name: "AbortError" });
      conn.destroy();
      ex.finish(reason);
      if (conn.onFail) {
        conn.onFail = undefined;
        conn.onHead = undefined;
        reject(reason);
      }
    };
    signal.addEventListener("abort", onAbort, { once: true });
    const detach = () => signal.removeEventListener("abort", onAbort);
    // The listener stays while the body is read, so an abort (the idle timer) ends the body too.
    ex.onEnd = detach;
    conn.onHead = (e) => {
      conn.onFail = undefined;
      resolve(e);
    };
    conn.onFail = (err) => {
      detach();
      reject(err);
    };
    conn.write(Buffer.from(head, "latin1"));
  });
}
