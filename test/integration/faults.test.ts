/**
 * Faults on the way to S3, injected by a proxy on loopback in front of a real MinIO
 * (test/helpers/fault-proxy.ts), against the S3 store and the real daemon. Every claim about
 * S3 is checked with boto3 (test/helpers/s3tool.ts) against MinIO directly; waits are on the
 * proxy's request counters, never on sleeps or log text. The proxy runs in this process, so
 * everything that reads the mount runs as a child process (test/helpers/run.ts): a synchronous read here
 * would stop the proxy that has to answer it.
 *
 * Shows (issue 8): LIST answered 503 SlowDown or reset is retried (store, daemon start with a
 * workdir prefetch, `ls` of a never-listed directory); a GET body with a flipped byte is
 * fetched again, and when it stays wrong the reader gets EIO and the cache never holds the bad
 * bytes (whole-object and streamed paths); a key with a control character is listed; a lost
 * CompleteMultipartUpload answer is accepted (exit 0); a damaged PUT body is sent again;
 * a conditional put whose answer was lost is accepted.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createS3Store } from "../../src/store/s3.ts";
import { StoreError, type ObjectStore } from "../../src/store/types.ts";
import { removeDir, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { run } from "../helpers/run.ts";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { writeRandom } from "../helpers/files.ts";

const MiB = 1024 * 1024;
const BUCKET = "faults";

let server: S3Server;
let proxy: FaultProxy;
let s3: S3Tool;
let store: ObjectStore;
let tmp: string;
const handles: DaemonHandle[] = [];

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

beforeAll(async () => {
  server = await startS3Server();
  proxy = await startFaultProxy(server);
  s3 = s3tool(server);
  await server.createBucket(BUCKET);
  tmp = mkdtempSync(join(TEST_ROOT, "faults-"));
  store = createS3Store(
    { bucket: BUCKET, accessKeyId: server.accessKey, secretAccessKey: server.secretKey, region: server.region, endpoint: proxy.endpoint, partSize: 8 * MiB, transferConcurrency: 4 },
    { retryBaseMs: 10 },
  );
}, 120_000);

afterAll(async () => {
  for (const h of handles) {
    await h.cleanup();
    removeDir(h.dir);
  }
  await proxy?.stop();
  await server?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 120_000);

async function errorOf(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw err;
  }
  throw new Error("expected a rejection");
}

/** The daemon, configured to reach S3 through the proxy. */
async function daemon(workdir?: string): Promise<DaemonHandle> {
  const d = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: BUCKET, ...(workdir ? { workdir } : {}) }]);
  handles.push(d);
  return d;
}

async function stopped(d: DaemonHandle): Promise<number> {
  const code = await d.stop();
  return code;
}

describe("store through the fault proxy", () => {
  test("LIST: 503 SlowDown, then a reset, then the answer", async () => {
    await s3.put(BUCKET, "l/a", { text: "a" });
    proxy.clear();
    const slow = proxy.add({ op: "ListObjectsV2", action: { status: 503, code: "SlowDown" } });
    const reset = proxy.add({ op: "ListObjectsV2", action: { reset: true } });
    const before = proxy.count("ListObjectsV2");
    const l = await store.listDir("l/");
    expect(l.objects.map((o) => o.key)).toEqual(["l/a"]);
    expect([slow.fired, reset.fired]).toEqual([1, 1]);
    expect(proxy.count("ListObjectsV2") - before).toBe(3);
  });

  test("integrity of a multipart object: with the listing's ETag, HEAD partNumber=1 goes out beside the object's HEAD; a stale ETag is asked again", async () => {
    const key = "heads/mp";
    const body = new Uint8Array(11 * MiB).map((_, i) => (i * 7 + (i >> 10)) & 0xff);
    const put = await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: 5 * MiB });
    expect(put.etag).toMatch(/-3$/);
    let from = proxy.log().length;
    const heads = () => proxy.log().slice(from).filter((e) => e.op === "HeadObject" && e.path === `/${BUCKET}/${key}`);
    proxy.clear();
    // The object's HEAD held 300 ms: the part's HEAD reaches the server before it is answered.
    const held = proxy.add({ op: "HeadObject", path: `/${BUCKET}/${key}`, query: /^(?!.*partNumber)/, action: { stall: 300 } });
    const i = await store.integrity(key, undefined, { etag: put.etag });
    expect(held.fired).toBe(1);
    expect(i).toMatchObject({ etag: put.etag, size: body.length, parts: { count: 3, size: 5 * MiB } });
    const [whole, part] = [heads().filter((e) => !/partNumber/.test(e.query)), heads().filter((e) => /partNumber=1/.test(e.query))];
    expect([whole.length, part.length]).toEqual([1, 1]);
    expect(part[0]!.arrivedMs).toBeLessThan(whole[0]!.answeredMs!);
    // A stale ETag (the object was replaced since the listing): its part HEAD fails If-Match, and
    // is asked again, after the object's HEAD, for the ETag S3 now has.
    proxy.clear();
    from = proxy.log().length;
    const stale = "0123456789abcdef0123456789abcdef-3";
    const again = await store.integrity(key, undefined, { etag: stale });
    expect(again).toMatchObject({ etag: put.etag, parts: { count: 3, size: 5 * MiB } });
    const partHeads = heads().filter((e) => /partNumber=1/.test(e.query));
    expect(partHeads.map((e) => [e.ifMatch, e.status])).toEqual([[`"${stale}"`, 412], [`"${put.etag}"`, 206]]);
  });

  test("a key with a control character (\\x01) is listed, and its directory with it", async () => {
    await s3.put(BUCKET, "ctl/a\x01b", { text: "ctl" });
    await s3.put(BUCKET, "ctl/ok", { text: "ok" });
    const l = await store.listDir("ctl/");
    expect(l.objects.map((o) => o.key).sort()).toEqual(["ctl/a\x01b", "ctl/ok"]);
    const dest = join(tmp, "ctl");
    await store.download("ctl/a\x01b", dest);
    expect(readFileSync(dest, "utf8")).toBe("ctl");
  });

  test("GET: a flipped byte is fetched again; when it stays wrong, kind corrupt", async () => {
    const body = new Uint8Array(300_000).map((_, i) => (i * 7) & 0xff);
    await s3.put(BUCKET, "g/obj", { bytes: body });
    proxy.clear();
    const once = proxy.add({ op: "GetObject", path: "/g/obj", action: { flipResponseByte: 12_345 } });
    const dest = join(tmp, "g");
    const info = await store.download("g/obj", dest);
    expect(once.fired).toBe(1);
    expect(sha256(readFileSync(dest))).toBe(sha256(body));
    expect(info.size).toBe(body.byteLength);
    proxy.clear();
    const always = proxy.add({ op: "GetObject", path: "/g/obj", action: { flipResponseByte: 99 }, times: Infinity });
    const e = await errorOf(store.download("g/obj", dest));
    expect(e.kind).toBe("corrupt");
    expect(e.key).toBe("g/obj");
    expect(always.fired).toBe(6);
    proxy.clear();
  });

  test("GET: a body cut short is fetched again (ranged reads resume)", async () => {
    const body = new Uint8Array(2 * MiB).map((_, i) => (i * 3) & 0xff);
    await s3.put(BUCKET, "g/cut", { bytes: body });
    proxy.clear();
    const cut = proxy.add({ op: "GetObject", path: "/g/cut", action: { truncate: 100_000 } });
    const out = new Uint8Array(body.byteLength);
    const n = await store.streamRange("g/cut", 0, body.byteLength, async (c, pos) => out.set(c, pos));
    expect(cut.fired).toBe(1);
    expect(n).toBe(body.byteLength);
    expect(sha256(out)).toBe(sha256(body));
    proxy.clear();
  });

  test("PUT: a damaged request body is answered BadDigest and sent again (single and multipart)", async () => {
    const src = join(tmp, "put-small");
    writeRandom(src, 200_000);
    proxy.clear();
    const flip = proxy.add({ op: "PutObject", action: { flipRequestByte: 777 } });
    const etag = await store.upload("p/small", src);
    expect(flip.fired).toBe(1);
    expect((await s3.get(BUCKET, "p/small")).sha256).toBe(sha256(readFileSync(src)));
    expect((await s3.head(BUCKET, "p/small"))?.etag).toBe(etag);

    const big = join(tmp, "put-big");
    writeRandom(big, 20 * MiB);
    const flipPart = proxy.add({ op: "UploadPart", query: "partNumber=2", action: { flipRequestByte: 5 * MiB } });
    const etag2 = await store.upload("p/big", big);
    expect(flipPart.fired).toBe(1);
    expect(etag2).toMatch(/-3$/);
    expect((await s3.get(BUCKET, "p/big")).sha256).toBe(sha256(readFileSync(big)));
    proxy.clear();
  }, 120_000);

  test("CompleteMultipartUpload: an answer cut off is retried, NoSuchUpload then accepted by ETag and size", async () => {
    const big = join(tmp, "complete");
    writeRandom(big, 17 * MiB);
    proxy.clear();
    const cut = proxy.add({ op: "CompleteMultipartUpload", action: { truncate: 20 } });
    const before = proxy.count("CompleteMultipartUpload");
    const etag = await store.upload("m/complete", big);
    expect(cut.fired).toBe(1);
    expect(proxy.count("CompleteMultipartUpload") - before).toBe(2);
    const head = await s3.head(BUCKET, "m/complete");
    expect(head).toMatchObject({ size: 17 * MiB, etag });
    expect((await s3.get(BUCKET, "m/complete")).sha256).toBe(sha256(readFileSync(big)));
    proxy.clear();
  }, 120_000);

  test("putSmall: a conditional write whose answer was lost is reported as precondition, never rewritten; the object holds it", async () => {
    proxy.clear();
    const lost = proxy.add({ op: "PutObject", path: "/lease/one", action: { truncate: 0 } });
    const body = new TextEncoder().encode("holder=a");
    const e = await errorOf(store.putSmall("lease/one", body, { ifNoneMatch: true }));
    expect(lost.fired).toBe(1);
    expect(e.kind).toBe("precondition");
    // The caller can tell it was its own write: the object holds exactly its bytes.
    const got = await store.getSmall("lease/one");
    expect(new TextDecoder().decode(got?.body)).toBe("holder=a");
    expect((await s3.head(BUCKET, "lease/one"))?.etag).toBe(got?.etag ?? "missing");
    proxy.clear();
  });
});

describe("daemon through the fault proxy", () => {
  test("start: LIST answered 503 SlowDown and reset, the workdir prefetch still succeeds", async () => {
    await s3.put(BUCKET, "wd/in.txt", { text: "prefetched" });
    proxy.clear();
    const slow = proxy.add({ op: "ListObjectsV2", query: "prefix=wd%2F", action: { status: 503, code: "SlowDown" } });
    const reset = proxy.add({ op: "ListObjectsV2", query: "prefix=wd%2F", action: { reset: true } });
    const d = await daemon(`/${BUCKET}/wd`);
    expect([slow.fired, reset.fired]).toEqual([1, 1]);
    expect(readFileSync(join(d.mnt[BUCKET]!, "wd/in.txt"), "utf8")).toBe("prefetched");
    proxy.clear();

    // `ls` of a directory never listed: a 503 and a reset, then it lists.
    await s3.put(BUCKET, "fresh/x", { text: "x" });
    await s3.put(BUCKET, "ctl2/a\x01b", { text: "c" });
    await s3.put(BUCKET, "ctl2/plain", { text: "p" });
    const slow2 = proxy.add({ op: "ListObjectsV2", query: "prefix=fresh%2F", action: { status: 503, code: "SlowDown" } });
    const reset2 = proxy.add({ op: "ListObjectsV2", query: "prefix=fresh%2F", action: { reset: true } });
    const ls = await run(`ls ${join(d.mnt[BUCKET]!, "fresh")}`);
    expect(ls).toMatchObject({ code: 0, out: "x\n" });
    expect([slow2.fired, reset2.fired]).toEqual([1, 1]);

    // A directory holding a key with a control character lists, with that name.
    const names = await run(`ls -1 ${join(d.mnt[BUCKET]!, "ctl2")}`);
    expect(names).toMatchObject({ code: 0, out: "a\x01b\nplain\n" });
    expect((await run(`cat ${join(d.mnt[BUCKET]!, "ctl2")}/a?b`)).out).toBe("c");
    proxy.clear();
    expect(await stopped(d)).toBe(0);
  }, 120_000);

  test("GET with a flipped byte, small and streamed objects: right bytes after a refetch, or EIO; the cache never holds bad bytes", async () => {
    const small = new Uint8Array(500_000).map((_, i) => (i * 11) & 0xff);
    const large = new Uint8Array(12 * MiB).map((_, i) => (i * 5 + 1) & 0xff);
    await s3.put(BUCKET, "r/small-once", { bytes: small });
    await s3.put(BUCKET, "r/small-bad", { bytes: small });
    await s3.put(BUCKET, "r/large-bad", { bytes: large });
    proxy.clear();
    const d = await daemon();
    const mnt = d.mnt[BUCKET]!;
    const cached = (key: string) => join(d.cachePath, `.${BUCKET}`, key);
    proxy.clear();
    const once = proxy.add({ op: "GetObject", path: "/r/small-once", action: { flipResponseByte: 1000 } });
    const ok = await run(`sha256sum ${join(mnt, "r/small-once")}`);
    expect(ok.code).toBe(0);
    expect(ok.out.split(" ")[0]).toBe(sha256(small));
    expect(once.fired).toBe(1);
    expect(sha256(readFileSync(cached("r/small-once")))).toBe(sha256(small));

    const bad = proxy.add({ op: "GetObject", path: "/r/small-bad", action: { flipResponseByte: 1000 }, times: Infinity });
    const r1 = await run(`cat ${join(mnt, "r/small-bad")} > /dev/null`);
    expect(r1.code).not.toBe(0);
    expect(r1.err).toContain("Input/output error");
    expect(bad.fired).toBeGreaterThan(1);
    expect(existsSync(cached("r/small-bad"))).toBe(false);

    // Streamed: every ranged GET of this object arrives with a flipped byte. The reader gets an
    // error before EOF (the READ of the last bytes waits for the whole-object check).
    const badLarge = proxy.add({ op: "GetObject", path: "/r/large-bad", action: { flipResponseByte: 100 }, times: Infinity });
    const r2 = await run(`cat ${join(mnt, "r/large-bad")} > /dev/null`);
    expect(r2.code).not.toBe(0);
    expect(r2.err).toContain("Input/output error");
    expect(badLarge.fired).toBeGreaterThan(0);
    expect(existsSync(cached("r/large-bad"))).toBe(false);
    // Fixed on the wire: the next open fetches a good copy, which is cached.
    proxy.clear();
    const r3 = await run(`sha256sum ${join(mnt, "r/large-bad")}`);
    expect(r3.out.split(" ")[0]).toBe(sha256(large));
    for (let i = 0; i < 100 && !existsSync(cached("r/large-bad")); i++) await Bun.sleep(50);
    expect(sha256(readFileSync(cached("r/large-bad")))).toBe(sha256(large));
    expect(await stopped(d)).toBe(0);
  }, 180_000);

  test("stop: a cut CompleteMultipartUpload answer and a damaged PUT body, upload accepted, exit 0", async () => {
    proxy.clear();
    const d = await daemon(`/${BUCKET}/up`);
    const wd = join(d.mnt[BUCKET]!, "up");
    // The workdir is a bind mount of a local directory: no S3 on this path, sync calls are fine.
    writeRandom(join(wd, "big.bin"), 40 * MiB);
    writeRandom(join(wd, "small.bin"), 100_000);
    writeFileSync(join(wd, ".exitcode"), "0");
    const bigSha = sha256(readFileSync(join(wd, "big.bin")));
    const smallSha = sha256(readFileSync(join(wd, "small.bin")));
    proxy.clear();
    const cut = proxy.add({ op: "CompleteMultipartUpload", action: { truncate: 10 } });
    const flip = proxy.add({ op: "PutObject", path: "/up/small.bin", action: { flipRequestByte: 50_000 } });
    expect(await stopped(d)).toBe(0);
    expect([cut.fired, flip.fired]).toEqual([1, 1]);
    expect(await s3.get(BUCKET, "up/big.bin")).toMatchObject({ size: 40 * MiB, sha256: bigSha });
    expect(await s3.get(BUCKET, "up/small.bin")).toMatchObject({ size: 100_000, sha256: smallSha });
    expect(await s3.head(BUCKET, "up/.exitcode")).not.toBeNull();
    proxy.clear();
  }, 180_000);
});
