/**
 * Test helper: a fault-injecting HTTP proxy on loopback, in front of a real S3 server (MinIO).
 *
 * Is: a plain HTTP forwarder (headers kept verbatim, so SigV4 signatures made for the proxy's
 * host:port still verify at MinIO, which sees the same Host header) with rules that match a
 * request by S3 operation, method, path and query and then answer with a status and S3 error
 * code, reset the connection, stall, cut the answer's body short, flip one byte of the
 * answer's or the request's body, or leave a header out of the answer. Each rule fires `times` times (after skipping `after`
 * matches) and counts its hits; the proxy counts requests per S3 operation for every test that
 * wants to wait on or assert request counts, and logs every request with timestamps (arrival,
 * forwarding to the server, answer) for tests that order events across proxies. Link conditions for every request: a shared
 * rate limit on client-to-server bytes (`throttle`, a busy site uplink), the answers' Date
 * header shifted (`dateOffsetMs`, a skewed client clock as S3 would see it), and idle
 * keep-alive connections closed after `idleCloseMs` (servers and load balancers do). Further
 * actions: an answer that stalls in the middle of its body, a malformed status line or
 * chunk-size line. `startBlackhole` gives a port whose connects never complete (a full accept
 * queue). Is not: a mock of S3 (every request that no rule answers itself goes to the real
 * server), and it never listens beyond 127.0.0.1.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

export type S3Op =
  | "ListObjectsV2" | "ListMultipartUploads" | "HeadObject" | "GetObject" | "PutObject" | "UploadPart"
  | "CreateMultipartUpload" | "CompleteMultipartUpload" | "AbortMultipartUpload" | "DeleteObject" | "Other";

export type FaultAction =
  | { status: number; code?: string }
  | { reset: true }
  /**
   * Hold the request this long (ms) before forwarding it; `Infinity` never answers. A request
   * whose client gave up (closed its connection) while held is dropped, never forwarded: the
   * stall stands for a server that has not taken the request yet.
   */
  | { stall: number }
  /** Forward, then send the answer's headers and only this many body bytes, and close. */
  | { truncate: number }
  /** Forward, and XOR this byte of the answer's body with 0xff (and leave a header out, if named). */
  | { flipResponseByte: number; dropResponseHeader?: string }
  /** XOR this byte of the request's body with 0xff on the way to the server. */
  | { flipRequestByte: number }
  /** Forward, and leave this header (any case) out of the answer. */
  | { dropResponseHeader: string }
  /** Forward, send the answer's headers and this many body bytes, then nothing more (never closes). */
  | { stallBodyAfter: number }
  /** Answer with a malformed status line (`status`) or a chunked body with a bad size line (`chunk`). */
  | { malformed: "status" | "chunk" };

export interface LinkOptions {
  /** Client-to-server bytes per second over all connections (undefined: no limit). */
  upBytesPerSec?: number;
  /** Added to the Date header of every forwarded answer (ms). */
  dateOffsetMs?: number;
  /** Close a client connection that carried no request for this long (ms). */
  idleCloseMs?: number;
}

export interface FaultRule {
  op?: S3Op;
  method?: string;
  /** Matches the raw path (`/bucket/key`, %-encoded as sent). */
  path?: string | RegExp;
  /** Matches the raw query string (without "?"). */
  query?: string | RegExp;
  action: FaultAction;
  /** How many matches fire (default 1; Infinity for every one). */
  times?: number;
  /** Matches to let through before firing (default 0). */
  after?: number;
}

export interface ActiveRule extends FaultRule {
  /** Matching requests seen (fired or not). */
  readonly matched: number;
  /** Times the fault was applied. */
  readonly fired: number;
}

/** One request as the proxy saw it (times are Date.now() of the test process). */
export interface ProxyLogEntry {
  op: S3Op;
  method: string;
  /** Raw path and query, as sent. */
  path: string;
  query: string;
  /** `If-Match` / `If-None-Match` request headers, when sent. */
  ifMatch?: string;
  /** `Range` request header, when sent (e.g. `bytes=0-1048575`). */
  range?: string;
  ifNoneMatch?: string;
  /** When the request reached the proxy (the client started it). */
  arrivedMs: number;
  /** When it was forwarded to the server (absent: answered by a fault, or dropped). */
  forwardedMs?: number;
  /** When its answer's headers went back, and their status (absent: no answer). */
  answeredMs?: number;
  status?: number;
  /** The fault applied, when one was. */
  fault?: string;
  /** The client closed its connection before the answer. */
  clientGone?: boolean;
}

export interface FaultProxy {
  /** `http://127.0.0.1:PORT` */
  endpoint: string;
  port: number;
  /** Add a rule; rules are tried in the order added, the first that fires wins. */
  add(rule: FaultRule): ActiveRule;
  clear(): void;
  /** Requests seen per S3 operation (all of them, faulted or not). */
  count(op: S3Op): number;
  /** Answer body bytes sent back to clients per S3 operation (e.g. what GETs fetched). */
  bodyBytes(op: S3Op): number;
  counts(): Record<string, number>;
  /** Every request seen so far, in arrival order (live entries: times fill in as they happen). */
  log(): readonly ProxyLogEntry[];
  /** Link conditions (merged into the current ones; undefined fields switch them off). */
  link(opts: LinkOptions): void;
  /** Client-to-server body bytes forwarded so far, and connections closed for idleness. */
  readonly upBytes: number;
  readonly idleClosed: number;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Resolves once `count(op)` reaches `n` (or rejects after `timeoutMs`). */
  waitFor(op: S3Op, n: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

function opOf(method: string, path: string, query: string): S3Op {
  const q = new URLSearchParams(query);
  const isBucket = path.replace(/^\/+/, "").split("/").filter((s) => s !== "").length <= 1;
  switch (method) {
    case "GET":
      if (q.get("list-type") === "2") return "ListObjectsV2";
      if (q.has("uploads")) return "ListMultipartUploads";
      return isBucket ? "Other" : "GetObject";
    case "HEAD":
      return isBucket ? "Other" : "HeadObject";
    case "PUT":
      if (q.has("partNumber") && q.has("uploadId")) return "UploadPart";
      return isBucket ? "Other" : "PutObject";
    case "POST":
      if (q.has("uploads")) return "CreateMultipartUpload";
      if (q.has("uploadId")) return "CompleteMultipartUpload";
      return "Other";
    case "DELETE":
      return q.has("uploadId") ? "AbortMultipartUpload" : "DeleteObject";
    default:
      return "Other";
  }
}

function matches(pattern: string | RegExp | undefined, value: string): boolean {
  if (pattern === undefined) return true;
  return typeof pattern === "string" ? value.includes(pattern) : pattern.test(value);
}

/** A shared token bucket: `take(n)` resolves when n more bytes may pass at `rate` bytes/s. */
function rateLimiter(getRate: () => number | undefined) {
  let nextFree = 0;
  return (n: number): Promise<void> => {
    const rate = getRate();
    if (rate === undefined) return Promise.resolve();
    const now = Date.now();
    const start = Math.max(now, nextFree);
    nextFree = start + (n / rate) * 1000;
    const wait = nextFree - now;
    return wait < 2 ? Promise.resolve() : new Promise((r) => setTimeout(r, wait));
  };
}

export async function startFaultProxy(target: { port: number }, initial: LinkOptions = {}): Promise<FaultProxy> {
  let link: LinkOptions = { ...initial };
  let upBytes = 0;
  let idleClosed = 0;
  let connections = 0;
  const takeUp = rateLimiter(() => link.upBytesPerSec);
  const rules: (FaultRule & { matched: number; fired: number })[] = [];
  const counts = new Map<S3Op, number>();
  const bodyBytes = new Map<S3Op, number>();
  const waiters: { op: S3Op; n: number; resolve: () => void }[] = [];
  const sockets = new Set<Socket>();
  const entries: ProxyLogEntry[] = [];

  const pick = (op: S3Op, method: string, path: string, query: string): FaultAction | undefined => {
    for (const r of rules) {
      if (r.op !== undefined && r.op !== op) continue;
      if (r.method !== undefined && r.method !== method) continue;
      if (!matches(r.path, path) || !matches(r.query, query)) continue;
      r.matched++;
      if (r.matched <= (r.after ?? 0)) continue;
      if (r.fired >= (r.times ?? 1)) continue;
      r.fired++;
      return r.action;
    }
    return undefined;
  };

  const forward = (req: IncomingMessage, res: ServerResponse, action: FaultAction | undefined, entry: ProxyLogEntry): void => {
    entry.forwardedMs = Date.now();
    const up = httpRequest(
      { host: "127.0.0.1", port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (upRes) => {
        const headers = { ...upRes.headers };
        // Hop-by-hop: the upstream leg is one connection per request (agent: false); the
        // client's connection to the proxy stays keep-alive, as with a real server.
        delete headers.connection;
        delete headers["keep-alive"];
        if (link.dateOffsetMs !== undefined && typeof headers.date === "string") {
          headers.date = new Date(Date.parse(headers.date) + link.dateOffsetMs).toUTCString();
        }
        entry.answeredMs = Date.now();
        entry.status = upRes.statusCode ?? 502;
        if (action !== undefined && "dropResponseHeader" in action && action.dropResponseHeader !== undefined) {
          delete headers[action.dropResponseHeader.toLowerCase()];
        }
        res.writeHead(upRes.statusCode ?? 502, headers);
        let pos = 0;
        upRes.on("data", (chunk: Buffer) => {
          if (action !== undefined && "stallBodyAfter" in action) {
            const room = action.stallBodyAfter - pos;
            if (room > 0) res.write(chunk.subarray(0, room));
            pos += chunk.length;
            return;
          }
          let out = chunk;
          if (action !== undefined && "flipResponseByte" in action) {
            const i = action.flipResponseByte - pos;
            if (i >= 0 && i < chunk.length) {
              out = Buffer.from(chunk);
              out[i] = out[i]! ^ 0xff;
            }
          }
          if (action !== undefined && "truncate" in action) {
            const room = action.truncate - pos;
            if (room <= 0) {
              upRes.destroy();
              res.socket?.destroy();
              return;
            }
            if (out.length > room) {
              res.write(out.subarray(0, room));
              pos += out.length;
              upRes.destroy();
              // Let the partial body reach the client before the connection drops.
              setTimeout(() => res.socket?.destroy(), 20);
              return;
            }
          }
          pos += chunk.length;
          bodyBytes.set(entry.op, (bodyBytes.get(entry.op) ?? 0) + out.length);
          res.write(out);
        });
        upRes.on("end", () => {
          if (action !== undefined && "stallBodyAfter" in action) return; // never ends
          if (action !== undefined && "truncate" in action) {
            // The answer was shorter than the cut: still drop the connection without a clean end.
            setTimeout(() => res.socket?.destroy(), 20);
            return;
          }
          res.end();
        });
        upRes.on("error", () => res.socket?.destroy());
      },
    );
    up.on("error", () => res.socket?.destroy());
    let pos = 0;
    // Request chunks pass in order, each after the shared uplink had room for it.
    let chain: Promise<void> = Promise.resolve();
    req.on("data", (chunk: Buffer) => {
      let out = chunk;
      if (action !== undefined && "flipRequestByte" in action) {
        const i = action.flipRequestByte - pos;
        if (i >= 0 && i < chunk.length) {
          out = Buffer.from(chunk);
          out[i] = out[i]! ^ 0xff;
        }
      }
      pos += chunk.length;
      if (link.upBytesPerSec === undefined) {
        upBytes += out.length;
        up.write(out);
        return;
      }
      req.pause();
      chain = chain.then(() => takeUp(out.length)).then(() => {
        upBytes += out.length;
        up.write(out);
        req.resume();
      });
    });
    req.on("end", () => void chain.then(() => up.end()));
    req.on("error", () => up.destroy());
  };

  const server: Server = createServer((req, res) => {
    const url = req.url ?? "/";
    const qi = url.indexOf("?");
    const path = qi < 0 ? url : url.slice(0, qi);
    const query = qi < 0 ? "" : url.slice(qi + 1);
    const method = req.method ?? "GET";
    const op = opOf(method, path, query);
    const header = (name: string): string | undefined => {
      const v = req.headers[name];
      return Array.isArray(v) ? v.join(",") : v;
    };
    const entry: ProxyLogEntry = { op, method, path, query, arrivedMs: Date.now() };
    if (header("if-match") !== undefined) entry.ifMatch = header("if-match");
    if (header("range") !== undefined) entry.range = header("range");
    if (header("if-none-match") !== undefined) entry.ifNoneMatch = header("if-none-match");
    entries.push(entry);
    res.on("close", () => {
      if (!res.writableFinished) entry.clientGone = true;
    });
    counts.set(op, (counts.get(op) ?? 0) + 1);
    for (const w of waiters.splice(0)) {
      if ((counts.get(w.op) ?? 0) >= w.n) w.resolve();
      else waiters.push(w);
    }
    const action = pick(op, method, path, query);
    if (action === undefined) return forward(req, res, undefined, entry);
    entry.fault = JSON.stringify(action);
    if ("status" in action) {
      req.resume();
      req.on("end", () => {
        const body = method === "HEAD" ? "" : `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${action.code ?? "InternalError"}</Code><Message>injected by the fault proxy</Message></Error>`;
        entry.answeredMs = Date.now();
        entry.status = action.status;
        const date = new Date(Date.now() + (link.dateOffsetMs ?? 0)).toUTCString();
        res.writeHead(action.status, { "content-type": "application/xml", "content-length": Buffer.byteLength(body), date });
        res.end(body);
      });
      return;
    }
    if ("reset" in action) {
      req.socket.destroy();
      return;
    }
    if ("malformed" in action) {
      req.resume();
      req.on("end", () => {
        const sock = req.socket;
        if (action.malformed === "status") sock.end("HTTP/1.1 2OO NOT OK\r\ncontent-length: 0\r\n\r\n");
        else sock.end("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz-not-a-size\r\nabc\r\n0\r\n\r\n");
      });
      return;
    }
    if ("stall" in action) {
      if (action.stall === Infinity) return;
      let gone = false;
      const onClose = (): void => {
        gone = true;
      };
      req.socket.once("close", onClose);
      setTimeout(() => {
        req.socket.off("close", onClose);
        if (gone || req.socket.destroyed) {
          entry.clientGone = true;
          return;
        }
        forward(req, res, undefined, entry);
      }, action.stall);
      return;
    }
    forward(req, res, action, entry);
  });
  server.on("connection", (s: Socket) => {
    connections++;
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
    armIdle(s);
  });
  // Idle keep-alive close: a connection with no request under way for idleCloseMs is closed.
  const idleTimers = new Map<Socket, Timer>();
  const busy = new Map<Socket, number>();
  function armIdle(s: Socket): void {
    clearTimeout(idleTimers.get(s));
    idleTimers.delete(s);
    if (link.idleCloseMs === undefined || (busy.get(s) ?? 0) > 0) return;
    idleTimers.set(s, setTimeout(() => {
      idleTimers.delete(s);
      if ((busy.get(s) ?? 0) === 0 && !s.destroyed) {
        idleClosed++;
        s.destroy();
      }
    }, link.idleCloseMs));
  }
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const s = req.socket;
    busy.set(s, (busy.get(s) ?? 0) + 1);
    clearTimeout(idleTimers.get(s));
    res.on("close", () => {
      busy.set(s, Math.max(0, (busy.get(s) ?? 1) - 1));
      armIdle(s);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    add(rule) {
      const r = { ...rule, matched: 0, fired: 0 };
      rules.push(r);
      return r;
    },
    clear() {
      rules.length = 0;
    },
    link(opts) {
      link = { ...link, ...opts };
    },
    get upBytes() {
      return upBytes;
    },
    get idleClosed() {
      return idleClosed;
    },
    get connections() {
      return connections;
    },
    count: (op) => counts.get(op) ?? 0,
    bodyBytes: (op) => bodyBytes.get(op) ?? 0,
    counts: () => Object.fromEntries(counts),
    log: () => entries,
    waitFor(op, n, timeoutMs = 60_000) {
      if ((counts.get(op) ?? 0) >= n) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`fault proxy: ${op} count stayed ${counts.get(op) ?? 0} < ${n} for ${timeoutMs} ms`)), timeoutMs);
        waiters.push({ op, n, resolve: () => (clearTimeout(t), resolve()) });
      });
    },
    async stop() {
      for (const t of idleTimers.values()) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A loopback port whose connects never complete: a listener with a full accept queue (held by
 * a python3 child, which never accepts), so the kernel drops further SYNs as a blackholed
 * route would. `port` takes over a given port (a proxy just stopped there: an endpoint that goes
 * dark under a running daemon). `stop` ends the child.
 */
export async function startBlackhole(port = 0): Promise<{ port: number; stop(): Promise<void> }> {
  const script = [
    "import socket, time, sys",
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)",
    `s.bind(('127.0.0.1', ${Math.floor(port)})); s.listen(0)`,
    "port = s.getsockname()[1]; held = []",
    "for i in range(4):",
    "    c = socket.socket(); c.setblocking(False)",
    "    try: c.connect(('127.0.0.1', port))",
    "    except BlockingIOError: pass",
    "    held.append(c)",
    "time.sleep(0.3); print(port, flush=True); sys.stdin.read()",
  ].join("\n");
  const child = Bun.spawn(["python3", "-c", script], { stdin: "pipe", stdout: "pipe", stderr: "inherit" });
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const r = await reader.read();
    if (r.done) throw new Error("blackhole helper ended before it gave a port");
    text += new TextDecoder().decode(r.value);
  }
  reader.releaseLock();
  return {
    port: Number(text.trim()),
    async stop() {
      child.stdin.end();
      child.kill();
      await child.exited;
    },
  };
}

/**
 * An HTTP CONNECT proxy on loopback (what HTTPS_PROXY names at HPC sites): each CONNECT opens
 * a tunnel to the asked host:port on 127.0.0.1 only; `tunnels` counts them. Plain requests
 * (HTTP_PROXY style, absolute URLs) are refused with 405 so a test sees which path was used.
 */
export async function startConnectProxy(): Promise<{ url: string; readonly tunnels: number; stop(): Promise<void> }> {
  const { createServer: createNetServer, connect } = await import("node:net");
  let tunnels = 0;
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => client.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      client.off("data", onData);
      const line = head.toString("latin1", 0, head.indexOf("\r\n"));
      const m = /^CONNECT (127\.0\.0\.1|localhost):(\d+) HTTP\/1\.[01]$/.exec(line);
      if (!m) {
        client.end("HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
      }
      const up = connect(Number(m[2]), "127.0.0.1", () => {
        tunnels++;
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        const rest = head.subarray(end + 4);
        if (rest.length) up.write(rest);
        client.pipe(up);
        up.pipe(client);
      });
      sockets.add(up);
      up.on("close", () => {
        sockets.delete(up);
        client.destroy();
      });
      up.on("error", () => client.destroy());
      client.on("close", () => up.destroy());
    };
    client.on("data", onData);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    get tunnels() {
      return tunnels;
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
