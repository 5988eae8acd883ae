/**
 * The HTTP/1.1 client of bodiless S3 requests (src/store/s3/http1.ts) against a scripted server
 * on loopback that answers each request with the bytes a case gives it: framing (length,
 * chunked, end of connection, HEAD, 100 Continue), keep-alive reuse counted by connections, a
 * pooled connection closed by the server while idle, `connection: close`, backpressure on a
 * body nobody reads yet, an abort in the middle of a body, and a body left unread. What the
 * client does with S3 itself is tested against MinIO and the fault proxy (store.test.ts,
 * faults.test.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { closeIdleConnections, http1Request } from "../../src/store/s3/http1.ts";
import { deferred } from "../../src/util/async.ts";

type Answer = (req: string, s: Socket<State>) => void;
interface State {
  buf: string;
}

let server: TCPSocketListener<State>;
let answer: Answer = () => {};
/** Called when a server socket can take more bytes again. */
let onDrain: (s: Socket<State>) => void = () => {};
let connections = 0;
let requests: string[] = [];

beforeAll(() => {
  server = Bun.listen<State>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      drain(s) {
        onDrain(s);
      },
      open(s) {
        connections++;
        s.data = { buf: "" };
      },
      data(s, d) {
        s.data.buf += d.toString("latin1");
        for (;;) {
          const i = s.data.buf.indexOf("\r\n\r\n");
          if (i < 0) return;
          const req = s.data.buf.slice(0, i);
          s.data.buf = s.data.buf.slice(i + 4);
          requests.push(req);
          answer(req, s);
        }
      },
    },
  });
});
afterAll(() => server.stop(true));

const url = (path = "/b/k") => new URL(`http://127.0.0.1:${server.port}${path}`);
const signal = () => new AbortController().signal;

async function body(res: { body: AsyncIterable<Uint8Array> | null }): Promise<string> {
  const parts: Buffer[] = [];
  if (res.body) for await (const c of res.body) parts.push(Buffer.from(c));
  return Buffer.concat(parts).toString("latin1");
}

/** A new case: no pooled connection from the last one, counters at 0. */
function reset(a: Answer): void {
  closeIdleConnections();
  answer = a;
  connections = 0;
  requests = [];
}

describe("http1", () => {
  test("Content-Length bodies; the connection is reused for the next request; the request head is what was asked", async () => {
    // A fresh pool per case: another port.
    reset((_r, s) => s.write("HTTP/1.1 206 Partial Content\r\nContent-Length: 5\r\nETag: \"e1\"\r\n\r\nhello"));
    for (let i = 0; i < 3; i++) {
      const res = await http1Request(url(`/b/k?i=${i}`), "GET", { range: "bytes=0-4", "x-amz-date": "d" }, signal());
      expect(res.status).toBe(206);
      expect(res.headers.get("etag")).toBe('"e1"');
      expect(await body(res)).toBe("hello");
    }
    expect(connections).toBe(1);
    expect(requests[2]!.split("\r\n")).toEqual(["GET /b/k?i=2 HTTP/1.1", `host: 127.0.0.1:${server.port}`, "range: bytes=0-4", "x-amz-date: d"]);
  });

  test("chunked bodies (sizes with extensions, split anywhere, trailers), HEAD without a body, 100 Continue skipped", async () => {
    reset((req, s) => {
      if (req.startsWith("HEAD")) return void s.write("HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n");
      const raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-t: 1\r\n\r\n";
      // One byte at a time: every parser state sees a split.
      for (let i = 0; i < raw.length; i++) s.write(raw[i]!);
    });
    const h = await http1Request(url(), "HEAD", {}, signal());
    expect([h.status, h.headers.get("content-length"), h.body]).toEqual([200, "999", null]);
    const g = await http1Request(url(), "GET", {}, signal());
    expect(await g.text()).toBe("hello world");
    const again = await http1Request(url(), "GET", {}, signal());
    expect(await again.text()).toBe("hello world");
    expect(connections).toBe(1);
  });

  test("a body framed by the end of the connection; `connection: close` is never reused", async () => {
    reset((req, s) => {
      if (req.includes("/close-delimited")) {
        s.write("HTTP/1.1 200 OK\r\n\r\nall of it");
        s.end();
      } else {
        s.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
      }
    });
    expect(await (await http1Request(url("/close-delimited"), "GET", {}, signal())).text()).toBe("all of it");
    expect(await (await http1Request(url("/x"), "GET", {}, signal())).text()).toBe("ok");
    expect(await (await http1Request(url("/x"), "GET", {}, signal())).text()).toBe("ok");
    expect(connections).toBe(3);
  });

  test("a pooled connection the server closes before answering (its idle timeout) is replaced without an error", async () => {
    let n = 0;
    reset((_r, s) => {
      n++;
      if (n === 2) return void s.end();
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n${n}`);
    });
    expect(await (await http1Request(url(), "GET", {}, signal())).text()).toBe("1");
    expect(await (await http1Request(url(), "GET", {}, signal())).text()).toBe("3");
    expect([connections, n]).toEqual([2, 3]);
  });

  test("a connection that breaks in the middle of a body fails with a network error", async () => {
    reset((_r, s) => {
      s.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part");
      s.end();
    });
    const res = await http1Request(url(), "GET", {}, signal());
    const err = await body(res).catch((e: unknown) => e as { code?: string });
    expect((err as { code?: string }).code).toBe("ECONNRESET");
  });

  test("backpressure: an unread 32 MiB body stops being read at the high-water mark, then arrives whole", async () => {
    const size = 32 * 1024 * 1024;
    const block = Buffer.alloc(1024 * 1024, 7);
    let sent = 0;
    // Events: the server's socket refused bytes (a short write), and it can take more (drain).
    let full = deferred();
    let drained = deferred();
    const pump = (s: Socket<State>) => {
      while (sent < size) {
        const n = s.write(block.subarray(0, Math.min(block.length, size - sent)));
        sent += n;
        if (n < block.length) return full.resolve();
      }
      full.resolve(); // everything sent: the client never pushed back (the check below fails)
    };
    reset((_r, s) => {
      s.write(`HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\n\r\n`);
      pump(s);
    });
    onDrain = (s) => {
      drained.resolve();
      pump(s);
    };
    try {
      const res = await http1Request(url(), "GET", {}, signal());
      // The client reads nothing yet. Until its socket pauses, every short write is followed by a
      // drain; once it has paused, the next short write is the last: no drain follows it.
      let stalled = false;
      for (let i = 0; i < 200 && !stalled; i++) {
        await full.promise;
        full = deferred();
        stalled = !(await Promise.race([drained.promise.then(() => true), Bun.sleep(300).then(() => false)]));
        drained = deferred();
      }
      expect(stalled).toBe(true);
      expect(sent).toBeLessThan(size);
      let got = 0;
      for await (const c of res.body!) got += c.byteLength;
      expect(got).toBe(size);
    } finally {
      onDrain = () => {};
    }
  });

  test("an abort in the middle of a body ends it with the abort's reason; an unread body is dropped with its connection", async () => {
    reset((_r, s) => s.write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"));
    const ac = new AbortController();
    const res = await http1Request(url(), "GET", {}, ac.signal);
    const it = res.body![Symbol.asyncIterator]();
    expect(Buffer.from((await it.next()).value).toString()).toBe("abc");
    ac.abort(Object.assign(new Error("no answer for 5 ms"), { name: "TimeoutError" }));
    const err = (await it.next().catch((e: unknown) => e)) as Error;
    expect(err.name).toBe("TimeoutError");
    // Unread: cancel() closes the connection; the next request opens another.
    let n = 0;
    reset((_r, s) => void s.write(++n === 1 ? "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc" : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"));
    const unread = await http1Request(url(), "GET", {}, signal());
    unread.cancel?.();
    expect(await (await http1Request(url(), "GET", {}, signal())).text()).toBe("ok");
    expect(connections).toBe(2);
  });

  test("a request already aborted never connects; line breaks in a header are refused", async () => {
    reset((_r, s) => s.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
    const ac = new AbortController();
    ac.abort();
    await expect(http1Request(url(), "GET", {}, ac.signal)).rejects.toThrow();
    await expect(http1Request(url(), "GET", { "x-a": "1\r\nx-b: 2" }, signal())).rejects.toThrow(/line break/);
    expect(connections).toBe(0);
  });
});
