/**
 * Integration tests of the S3 object store (`src/store/s3.ts` + `src/store/s3/`) against a REAL S3 server
 * (MinIO or versitygw from test/helpers/s3server.ts). Objects are put and checked with the
 * independent boto3 client (test/helpers/s3tool.ts), never with the code under test.
 *
 * Covers listing (paging past 1000 keys, nested prefixes, dir markers), HEAD with user metadata,
 * ranged GETs, streamed downloads (0 B to 64 MiB), single and multipart uploads, and the error
 * kinds callers map to errno. It does not test the cache or the filesystem layer.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { createS3Store, type S3StoreConfig, type S3StoreTuning } from "../../src/store/s3.ts";
import { StoreError, type ObjectInfo, type ObjectStore } from "../../src/store/types.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type PutResult, type S3Tool } from "../helpers/s3tool.ts";
import { sha256File } from "../helpers/files.ts";

const BUCKET = "store-test";
const MiB = 1024 * 1024;
const PART = 8 * MiB;

function sha256(data: Uint8Array): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}


function storeConfig(server: S3Server, over: Partial<S3StoreConfig> = {}): S3StoreConfig {
  return {
    bucket: BUCKET,
    accessKeyId: server.accessKey,
    secretAccessKey: server.secretKey,
    region: server.region,
    endpoint: server.endpoint,
    partSize: PART,
    transferConcurrency: 4,
    ...over,
  };
}

/** The StoreError a promise rejects with (fails the test if it resolves or throws something else). */
async function storeErrorOf(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw new Error(`expected a StoreError, got ${String(err)}`, { cause: err });
  }
  throw new Error("expected a rejection, but the promise resolved");
}

/** Bytes [start, end) of an object in one buffer: streamRange collected. */
async function getRange(store: ObjectStore, key: string, start: number, end: number, signal?: AbortSignal): Promise<Uint8Array> {
  const out = new Uint8Array(Math.max(0, end - start));
  const n = await store.streamRange(key, start, end, async (chunk, pos) => out.set(chunk, pos - start), signal);
  return out.subarray(0, n);
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

const byKey = (a: { key: string }, b: { key: string }): number => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);

describe("S3 object store against a real server", () => {
  let server: S3Server;
  let tool: S3Tool;
  let store: ObjectStore;
  let tmp: string;
  const put: Record<string, PutResult> = {};

  beforeAll(async () => {
    server = await startS3Server();
    tool = s3tool(server);
    await server.createBucket(BUCKET);
    store = createS3Store(storeConfig(server));
    tmp = mkdtempSync(join(TEST_ROOT, "store-"));
    // A directory tree with markers ("tree/", "tree/b/") and nested levels.
    for (const [key, body] of [
      ["tree/", ""],
      ["tree/a.txt", "alpha"],
      ["tree/b/", ""],
      ["tree/b/c.txt", "charlie!"],
      ["tree/d/e/f.txt", "foxtrot"],
      ["tree/z", "zulu zulu"],
      ["top.txt", "top"],
    ] as const) {
      put[key] = await tool.put(BUCKET, key, { text: body });
    }
  }, 180_000);

  afterAll(async () => {
    await server?.stop();
    if (tmp !== undefined) rmSync(tmp, { recursive: true, force: true });
  });

  describe("listing", () => {
    test("listDir pages through more than 1000 keys", async () => {
      const made = await tool.putMany(BUCKET, { prefix: "many/k", count: 1234, size: 3, workers: 32 });
      const listing = await store.listDir("many/");
      expect(listing.prefixes).toEqual([]);
      expect(listing.objects.length).toBe(1234);
      const expected = [...made].sort(byKey);
      expect(listing.objects.map((o) => o.key)).toEqual(expected.map((o) => o.key));
      expect(listing.objects.every((o) => o.size === 3)).toBe(true);
      const first = listing.objects[0];
      expect(first?.etag).toBe(expected[0]?.etag ?? "missing");
      // The reference client needed more than one page for the same listing.
      const ref = await tool.list(BUCKET, { prefix: "many/", recursive: false });
      expect(ref.pages).toBeGreaterThan(1);
      expect(ref.objects.length).toBe(1234);
    }, 120_000);

    test("listDir returns one level: objects without the dir marker, prefixes as given", async () => {
      const l = await store.listDir("tree/");
      expect(l.objects.map((o) => o.key)).toEqual(["tree/a.txt", "tree/z"]);
      expect(l.prefixes).toEqual(["tree/b/", "tree/d/"]);
      const a = l.objects[0] as ObjectInfo;
      expect(a.size).toBe(5);
      expect(a.etag).toBe(put["tree/a.txt"]?.etag ?? "missing");
      expect(a.etag).not.toContain('"');
      expect(a.lastModifiedMs).toBeGreaterThan(Date.now() - 3_600_000);
      expect(a.meta).toBeUndefined();

      const b = await store.listDir("tree/b/");
      expect(b.objects.map((o) => o.key)).toEqual(["tree/b/c.txt"]);
      expect(b.prefixes).toEqual([]);

      // A level that exists only through deeper keys (no marker).
      const d = await store.listDir("tree/d/");
      expect(d.objects).toEqual([]);
      expect(d.prefixes).toEqual(["tree/d/e/"]);

      const root = await store.listDir("");
      expect(root.objects.map((o) => o.key)).toContain("top.txt");
      expect(root.prefixes).toEqual(expect.arrayContaining(["many/", "tree/"]));

      expect(await store.listDir("absent/")).toEqual({ objects: [], prefixes: [] });
    });

    test("listAll is recursive (markers included) and pages", async () => {
      const keys = (await collect(store.listAll("tree/"))).map((o) => o.key);
      expect(keys).toEqual(["tree/", "tree/a.txt", "tree/b/", "tree/b/c.txt", "tree/d/e/f.txt", "tree/z"]);
      let n = 0;
      for await (const o of store.listAll("many/")) {
        expect(o.key.startsWith("many/k")).toBe(true);
        n++;
      }
      expect(n).toBe(1234);
      expect(await collect(store.listAll("absent/"))).toEqual([]);
    }, 60_000);

    test("hasPrefix", async () => {
      expect(await store.hasPrefix("tree/")).toBe(true);
      expect(await store.hasPrefix("tree/d/")).toBe(true);
      expect(await store.hasPrefix("tree/d/e/")).toBe(true);
      expect(await store.hasPrefix("tree/b/")).toBe(true);
      expect(await store.hasPrefix("absent/")).toBe(false);
      expect(await store.hasPrefix("tree/a.txt/")).toBe(false);
    });
  });

  describe("head", () => {
    test("present key with user metadata, absent key", async () => {
      const meta = { sample: "s1", "run-id": "42", note: "hello world" };
      const p = await tool.put(BUCKET, "meta/obj.bin", { bytes: randomBytes(4321) }, { metadata: meta });
      const info = await store.head("meta/obj.bin");
      expect(info).not.toBeNull();
      expect(info?.key).toBe("meta/obj.bin");
      expect(info?.size).toBe(4321);
      expect(info?.etag).toBe(p.etag);
      expect(info?.meta).toEqual(meta);
      const ref = await tool.head(BUCKET, "meta/obj.bin");
      expect(info?.lastModifiedMs).toBe(ref?.lastModifiedMs ?? -1);

      expect(await store.head("meta/absent.bin")).toBeNull();
      // A prefix is not an object.
      expect(await store.head("tree/d/")).toBeNull();
      // A marker is.
      expect((await store.head("tree/"))?.size).toBe(0);
    });
  });

  describe("getRange", () => {
    const content = new Uint8Array(1000).map((_, i) => (i * 7 + 3) & 0xff);

    beforeAll(async () => {
      await tool.put(BUCKET, "range/obj", { bytes: content });
      await tool.put(BUCKET, "range/empty", { bytes: new Uint8Array(0) });
    });

    test("first bytes, middle, last byte, clamped end", async () => {
      expect(await getRange(store, "range/obj", 0, 10)).toEqual(content.slice(0, 10));
      expect(await getRange(store, "range/obj", 400, 600)).toEqual(content.slice(400, 600));
      expect(await getRange(store, "range/obj", 999, 1000)).toEqual(content.slice(999, 1000));
      expect(await getRange(store, "range/obj", 0, 1000)).toEqual(content);
      // Past the end: S3 clamps the range.
      expect(await getRange(store, "range/obj", 990, 5000)).toEqual(content.slice(990));
      // Same bytes as the reference client sees.
      expect(await getRange(store, "range/obj", 123, 457)).toEqual(await tool.getBytes(BUCKET, "range/obj", "bytes=123-456"));
    });

    test("empty ranges: start >= end, start at/after EOF, empty object", async () => {
      expect((await getRange(store, "range/obj", 500, 500)).byteLength).toBe(0);
      expect((await getRange(store, "range/obj", 600, 500)).byteLength).toBe(0);
      expect((await getRange(store, "range/obj", 1000, 1100)).byteLength).toBe(0);
      expect((await getRange(store, "range/empty", 0, 100)).byteLength).toBe(0);
      // start >= end needs no request: works even for an absent key.
      expect((await getRange(store, "range/absent", 5, 5)).byteLength).toBe(0);
    });
  });

  describe("download", () => {
    test("0-byte object", async () => {
      await tool.put(BUCKET, "dl/empty", { bytes: new Uint8Array(0) }, { metadata: { kind: "empty" } });
      const dest = join(tmp, "empty");
      writeFileSync(dest, "stale content that must be truncated");
      const info = await store.download("dl/empty", dest);
      expect(statSync(dest).size).toBe(0);
      expect(info.size).toBe(0);
      expect(info.meta).toEqual({ kind: "empty" });
    });

    test("small object with metadata and progress", async () => {
      const body = randomBytes(10_000);
      const p = await tool.put(BUCKET, "dl/small.txt", { bytes: body }, { metadata: { origin: "s3tool" } });
      const dest = join(tmp, "small");
      const progress: number[] = [];
      const info = await store.download("dl/small.txt", dest, { onProgress: (n) => progress.push(n) });
      expect(sha256(readFileSync(dest))).toBe(p.sha256);
      expect(info).toMatchObject({ key: "dl/small.txt", size: 10_000, etag: p.etag, meta: { origin: "s3tool" } });
      expect(progress.at(-1)).toBe(10_000);
      expect(progress).toEqual([...progress].sort((a, b) => a - b));
    });

    test("64 MiB object, streamed", async () => {
      const size = 64 * MiB;
      const [p] = await tool.putMany(BUCKET, { keys: ["dl/big.bin"], size });
      const dest = join(tmp, "big");
      let last = 0;
      let calls = 0;
      const info = await store.download("dl/big.bin", dest, {
        onProgress: (n) => {
          expect(n).toBeGreaterThanOrEqual(last);
          last = n;
          calls++;
        },
      });
      expect(info.size).toBe(size);
      expect(info.etag).toBe(p?.etag ?? "missing");
      expect(statSync(dest).size).toBe(size);
      expect(await sha256File(dest)).toBe(p?.sha256 ?? "missing");
      expect(last).toBe(size);
      expect(calls).toBeGreaterThan(1);
      rmSync(dest);
    }, 120_000);
  });

  describe("upload", () => {
    test("small file: one PutObject with metadata", async () => {
      const body = randomBytes(100 * 1024);
      const src = join(tmp, "up-small");
      writeFileSync(src, body);
      const progress: number[] = [];
      const etag = await store.upload("up/small.bin", src, {
        meta: { sample: "s2", "workflow-id": "wf-7" },
        onProgress: (n) => progress.push(n),
      });
      expect(etag).not.toContain('"');
      expect(etag).not.toContain("-");
      const h = await tool.head(BUCKET, "up/small.bin");
      expect(h).toMatchObject({ size: body.byteLength, etag, metadata: { sample: "s2", "workflow-id": "wf-7" } });
      const g = await tool.get(BUCKET, "up/small.bin");
      expect(g.sha256).toBe(sha256(body));
      expect(progress.at(-1)).toBe(body.byteLength);
    });

    test("0-byte file", async () => {
      const src = join(tmp, "up-empty");
      writeFileSync(src, "");
      const etag = await store.upload("up/empty", src);
      expect(await tool.head(BUCKET, "up/empty")).toMatchObject({ size: 0, etag });
    });

    test("40 MiB file: multipart", async () => {
      const size = 40 * MiB;
      const src = join(tmp, "up-big");
      const gen = await tool.gen("up/big.bin", size, src);
      const progress: number[] = [];
      const etag = await store.upload("up/big.bin", src, {
        meta: { sample: "big" },
        onProgress: (n) => progress.push(n),
      });
      expect(etag).toMatch(/-5$/); // 40 MiB in 8 MiB parts
      const h = await tool.head(BUCKET, "up/big.bin");
      expect(h).toMatchObject({ size, etag, metadata: { sample: "big" } });
      const g = await tool.get(BUCKET, "up/big.bin");
      expect(g.sha256).toBe(gen.sha256);
      expect(progress.at(-1)).toBe(size);
      rmSync(src);
    }, 120_000);

    test("missing source file", async () => {
      const e = await storeErrorOf(store.upload("up/none", join(tmp, "does-not-exist")));
      expect(e.kind).toBe("other");
      expect(await tool.head(BUCKET, "up/none")).toBeNull();
    });
  });

  describe("small objects with conditional writes", () => {
    test("the server enforces If-None-Match and If-Match (the workdir lease relies on it)", async () => {
      const key = "cond/lease";
      const enc = (t: string) => new TextEncoder().encode(t);
      const e1 = await store.putSmall(key, enc("one"), { ifNoneMatch: true });
      expect((await tool.head(BUCKET, key))?.etag).toBe(e1);
      expect((await storeErrorOf(store.putSmall(key, enc("two"), { ifNoneMatch: true }))).kind).toBe("precondition");
      expect((await storeErrorOf(store.putSmall(key, enc("two"), { ifMatch: "0123456789abcdef0123456789abcdef" }))).kind).toBe("precondition");
      expect(new TextDecoder().decode(await tool.getBytes(BUCKET, key))).toBe("one");
      const e2 = await store.putSmall(key, enc("two"), { ifMatch: e1 });
      expect(e2).not.toBe(e1);
      expect(new TextDecoder().decode(await tool.getBytes(BUCKET, key))).toBe("two");
      const got = await store.getSmall(key);
      expect(new TextDecoder().decode(got?.body)).toBe("two");
      expect(got?.etag).toBe(e2);
      expect(await store.getSmall("cond/absent")).toBeNull();
    });
  });

  describe("errors", () => {
    test("absent key: not-found, with a readable message", async () => {
      const e = await storeErrorOf(getRange(store, "err/absent", 0, 10));
      expect(e.kind).toBe("not-found");
      expect(e.status).toBe(404);
      expect(e.message).toStartWith(`[s3] GetObject ${BUCKET}/err/absent: 404 NoSuchKey`);
      expect(e.retryable).toBe(false);
      const d = await storeErrorOf(store.download("err/absent", join(tmp, "absent")));
      expect(d.kind).toBe("not-found");
      rmSync(join(tmp, "absent"), { force: true });
    });

    test("absent bucket: no-such-bucket", async () => {
      const other = createS3Store(storeConfig(server, { bucket: "no-such-bucket-here" }));
      const e = await storeErrorOf(other.listDir(""));
      expect(e.kind).toBe("no-such-bucket");
      expect(e.message).toStartWith("[s3] ListObjectsV2 no-such-bucket-here/: 404 NoSuchBucket");
      expect((await storeErrorOf(getRange(other, "x", 0, 1))).kind).toBe("no-such-bucket");
      expect((await storeErrorOf(other.hasPrefix("x/"))).kind).toBe("no-such-bucket");
    });

    test("wrong secret: access-denied, secret never in the message", async () => {
      const bad = createS3Store(storeConfig(server, { secretAccessKey: "definitely-not-the-secret" }));
      const e = await storeErrorOf(bad.listDir("tree/"));
      expect(e.kind).toBe("access-denied");
      expect(e.status).toBe(403);
      expect(e.message).toStartWith(`[s3] ListObjectsV2 ${BUCKET}/tree/: 403 `);
      expect(e.message).not.toContain("definitely-not-the-secret");
      expect(e.message).not.toContain(server.secretKey);
      // HEAD errors have no body; still access-denied, not "absent".
      expect((await storeErrorOf(bad.head("tree/a.txt"))).kind).toBe("access-denied");
      expect((await storeErrorOf(getRange(bad, "tree/a.txt", 0, 1))).kind).toBe("access-denied");
      const src = join(tmp, "denied");
      writeFileSync(src, "x");
      expect((await storeErrorOf(bad.upload("up/denied", src))).kind).toBe("access-denied");
      expect(await tool.head(BUCKET, "up/denied")).toBeNull();
    });

    test("aborted signal: aborted", async () => {
      const ac = new AbortController();
      ac.abort();
      expect((await storeErrorOf(store.listDir("tree/", ac.signal))).kind).toBe("aborted");
      expect((await storeErrorOf(store.head("tree/a.txt", ac.signal))).kind).toBe("aborted");
      expect((await storeErrorOf(getRange(store, "tree/a.txt", 0, 2, ac.signal))).kind).toBe("aborted");
      expect((await storeErrorOf(collect(store.listAll("tree/", ac.signal)))).kind).toBe("aborted");
    });

    test("abort during a download", async () => {
      await tool.putMany(BUCKET, { keys: ["err/abort-dl"], size: 32 * MiB });
      const ac = new AbortController();
      const dest = join(tmp, "abort-dl");
      const started = Date.now();
      const e = await storeErrorOf(
        store.download("err/abort-dl", dest, {
          signal: ac.signal,
          onProgress: (n) => {
            if (n > MiB) ac.abort();
          },
        }),
      );
      expect(e.kind).toBe("aborted");
      expect(Date.now() - started).toBeLessThan(10_000);
      expect(statSync(dest).size).toBeLessThan(32 * MiB);
      rmSync(dest);
    }, 60_000);

    test("abort during a multipart upload: aborted, no object, no multipart upload left", async () => {
      const src = join(tmp, "abort-up");
      await tool.gen("abort-up", 40 * MiB, src);
      const ac = new AbortController();
      // Abort once the first part is stored, so there is a multipart upload to clean up.
      const e = await storeErrorOf(
        store.upload("err/abort-up", src, {
          signal: ac.signal,
          onProgress: (n) => {
            if (n >= PART) ac.abort();
          },
        }),
      );
      expect({ kind: e.kind, message: e.message }).toMatchObject({ kind: "aborted" });
      expect(await tool.head(BUCKET, "err/abort-up")).toBeNull();
      // AbortMultipartUpload is sent in the background once the parts in flight finish.
      let pending = -1;
      for (let i = 0; i < 100 && pending !== 0; i++) {
        pending = (await tool.uploads(BUCKET, "err/abort-up")).length;
        if (pending !== 0) await Bun.sleep(100);
      }
      expect(pending).toBe(0);
      rmSync(src);
    }, 60_000);
  });
});

describe("dead servers fail within seconds", () => {
  const fast: S3StoreTuning = { idleTimeoutMs: 1_000, maxAttempts: 2, retryBaseMs: 10 };

  test("stopped server: network", async () => {
    const s = await startS3Server();
    try {
      await s.createBucket(BUCKET);
      const st = createS3Store(storeConfig(s), fast);
      expect(await st.listDir("")).toEqual({ objects: [], prefixes: [] });
      await s.stop();
      const started = Date.now();
      const e = await storeErrorOf(st.listDir(""));
      expect(e.kind).toBe("network");
      expect(e.retryable).toBe(true);
      expect(e.message).toStartWith(`[s3] ListObjectsV2 ${BUCKET}/: network`);
      expect((await storeErrorOf(st.head("x"))).kind).toBe("network");
      expect((await storeErrorOf(st.download("x", join(TEST_ROOT, "never-written")))).kind).toBe("network");
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await s.stop();
    }
  }, 120_000);

  test("server that accepts but never answers: network after the socket timeout", async () => {
    const sockets: Socket[] = [];
    const hung: Server = createServer((sock) => {
      sockets.push(sock);
    });
    await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
    const addr = hung.address();
    const port = typeof addr === "object" && addr !== null ? addr.port : 0;
    try {
      const st = createS3Store(
        {
          bucket: BUCKET,
          accessKeyId: "ak",
          secretAccessKey: "sk",
          region: "us-east-1",
          endpoint: `http://127.0.0.1:${port}`,
          partSize: PART,
          transferConcurrency: 2,
        },
        fast,
      );
      const started = Date.now();
      const e = await storeErrorOf(st.head("x"));
      expect(e.kind).toBe("network");
      expect(e.message).toContain("TimeoutError");
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => hung.close(() => resolve()));
    }
  }, 30_000);
});
