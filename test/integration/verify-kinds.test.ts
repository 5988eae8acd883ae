/**
 * Every kind of object users really have is checked on both read paths (issue 17): objects
 * made by boto3 (test/helpers/s3tool.py) as a multipart upload without checksums (multipart
 * ETag), with CRC32 and CRC32C (composite checksums, checked part by part through GET
 * partNumber=N), with CRC64NVME (full-object), and as a single PUT with CRC64NVME, read through
 * the mount while the fault proxy damages answers: a byte flipped in every GET (EIO, nothing
 * cached), a part cut short and a byte flipped once (the right bytes, or EIO on a whole-object
 * check), then a clean re-read (the right bytes) and the cache file (the right bytes); part
 * answers without their checksum header (checked by the multipart ETag instead: the right
 * bytes, or EIO when a byte is flipped too); parts of unequal sizes. What checked each object is read from
 * `status --json` (readCache.checks), never from the log. And uploads: a single PUT and a
 * multipart upload by bucketfs' store carry a full-object CRC64NVME that MinIO keeps, checked
 * with boto3 against the CRC64NVME s3tool.py computes of the file.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { removeDir, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { run } from "../helpers/run.ts";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { createS3Store } from "../../src/store/s3.ts";
import { s3tool, type PutOptions, type S3Tool } from "../helpers/s3tool.ts";
import { statusJson } from "../helpers/status.ts";

const MiB = 1024 * 1024;
const BUCKET = "kinds";

let server: S3Server;
let proxy: FaultProxy;
let s3: S3Tool;
let d: DaemonHandle;

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

interface Kind {
  name: string;
  opts: PutOptions;
  /** What checks it (store/checksum.ts Verification kind). */
  check: "composite" | "multipart-etag" | "full";
}

const PART = 5 * MiB;
const KINDS: Kind[] = [
  { name: "mp-none", opts: { multipart: true, partSize: PART }, check: "multipart-etag" },
  { name: "mp-crc32", opts: { multipart: true, partSize: PART, checksum: "crc32" }, check: "composite" },
  { name: "mp-crc32c", opts: { multipart: true, partSize: PART, checksum: "crc32c" }, check: "composite" },
  { name: "mp-crc64nvme", opts: { multipart: true, partSize: PART, checksum: "crc64nvme" }, check: "full" },
  { name: "put-crc64nvme", opts: { checksum: "crc64nvme" }, check: "full" },
];
/** Below the streaming threshold (8 MiB): the whole-object path; above it: the streamed path. */
const PATHS = [
  { path: "whole", size: 7 * MiB + 12_345 },
  { path: "streamed", size: 12 * MiB + 54_321 },
];

const bodies = new Map<string, Uint8Array>();

beforeAll(async () => {
  server = await startS3Server();
  proxy = await startFaultProxy(server);
  s3 = s3tool(server);
  await server.createBucket(BUCKET);
  await Promise.all(KINDS.flatMap((k) => PATHS.map(async (p, i) => {
    const body = new Uint8Array(p.size).map((_, j) => (j * (7 + i) + k.name.length + (j >> 12)) & 0xff);
    const key = `${p.path}/${k.name}`;
    bodies.set(key, body);
    await s3.put(BUCKET, key, { bytes: body }, k.opts);
  })));
  // What MinIO holds for each kind, as boto3 sees it: the premise of every test below.
  const w = await s3.checksums(BUCKET, "streamed/mp-crc32c");
  expect([w.checksumType, w.crc32c?.endsWith("-3")]).toEqual(["COMPOSITE", true]);
  const f = await s3.checksums(BUCKET, "streamed/mp-crc64nvme");
  expect([f.checksumType, f.crc64nvme]).toEqual(["FULL_OBJECT", await s3.crc("crc64nvme", { bytes: bodies.get("streamed/mp-crc64nvme")! })]);
  d = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: BUCKET }]);
}, 300_000);

afterAll(async () => {
  if (d) {
    await d.cleanup();
    removeDir(d.dir);
  }
  await proxy?.stop();
  await server?.stop();
}, 120_000);

const cached = (key: string) => join(d.cachePath, `.${BUCKET}`, key);

async function read(key: string): Promise<{ code: number; sum: string; err: string }> {
  const r = await run(`sha256sum ${join(d.mnt[BUCKET]!, key)}`);
  return { code: r.code, sum: r.out.split(" ")[0] ?? "", err: r.err };
}

describe("every kind of object, on both read paths", () => {
  for (const k of KINDS) {
    for (const p of PATHS) {
      const key = `${p.path}/${k.name}`;
      const usesParts = k.check === "composite" || (k.check === "multipart-etag" && p.path === "whole");
      test(`${key} (${k.check}): bad bytes give EIO and are never cached; a clean read gives the right bytes`, async () => {
        const body = bodies.get(key)!;
        proxy.clear();
        // A byte flipped in every answer: EIO, nothing cached.
        const always = proxy.add({ op: "GetObject", path: `/${key}`, action: { flipResponseByte: 100 }, times: Infinity });
        const bad = await read(key);
        expect(bad.code).not.toBe(0);
        expect(bad.err).toContain("Input/output error");
        expect(always.fired).toBeGreaterThan(1);
        expect(existsSync(cached(key))).toBe(false);
        proxy.clear();

        if (usesParts) {
          // Part 2 cut short once and part 1 flipped once: fetched again, the right bytes at once.
          const cut = proxy.add({ op: "GetObject", path: `/${key}`, query: /partNumber=2/, action: { truncate: 1000 } });
          const flip = proxy.add({ op: "GetObject", path: `/${key}`, query: /partNumber=1/, action: { flipResponseByte: 4321 } });
          const r = await read(key);
          expect(r).toMatchObject({ code: 0, sum: sha256(body) });
          expect([cut.fired, flip.fired]).toEqual([1, 1]);
        } else {
          // One answer flipped: the whole path fetches it again; a streamed copy is checked whole
          // at its end, so the reader may get EIO there, never wrong bytes.
          const once = proxy.add({ op: "GetObject", path: `/${key}`, action: { flipResponseByte: 2000 } });
          const r = await read(key);
          expect(once.fired).toBe(1);
          if (p.path === "whole" || r.code === 0) expect(r).toMatchObject({ code: 0, sum: sha256(body) });
          else expect(r.err).toContain("Input/output error");
        }
        proxy.clear();
        expect(await read(key)).toMatchObject({ code: 0, sum: sha256(body) });
        expect(sha256(readFileSync(cached(key)))).toBe(sha256(body));
        expect(await read(key)).toMatchObject({ code: 0, sum: sha256(body) });
      }, 180_000);
    }
  }

  for (const p of PATHS) {
    test(`${p.path}: part answers without their checksum are checked by the multipart ETag instead; a flipped byte then gives EIO`, async () => {
      const key = `${p.path}/nosum-crc32`;
      const body = new Uint8Array(p.size).map((_, j) => (j * 11 + (j >> 9)) & 0xff);
      await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: PART, checksum: "crc32" });
      proxy.clear();
      // No part checksum and a flipped byte in every part answer: the ETag check fails, EIO.
      const both = proxy.add({
        op: "GetObject", path: `/${key}`, query: /partNumber=/, action: { flipResponseByte: 100, dropResponseHeader: "x-amz-checksum-crc32" }, times: Infinity,
      });
      const bad = await read(key);
      expect(bad.code).not.toBe(0);
      expect(bad.err).toContain("Input/output error");
      expect(both.fired).toBeGreaterThan(0);
      expect(existsSync(cached(key))).toBe(false);
      proxy.clear();
      // No part checksum, bytes intact: the right bytes, checked by the ETag, and cached.
      const noSum = proxy.add({ op: "GetObject", path: `/${key}`, query: /partNumber=/, action: { dropResponseHeader: "x-amz-checksum-crc32" }, times: Infinity });
      expect(await read(key)).toMatchObject({ code: 0, sum: sha256(body) });
      expect(noSum.fired).toBeGreaterThan(0);
      expect(sha256(readFileSync(cached(key)))).toBe(sha256(body));
      proxy.clear();
    }, 180_000);
  }

  test("multipart parts of unequal sizes that look equal from part 1 (6, 5, 7 MiB): learnt per part, right bytes; a flipped byte gives EIO", async () => {
    const key = "streamed/mp-uneven";
    const body = new Uint8Array(18 * MiB).map((_, j) => (j * 3 + (j >> 11)) & 0xff);
    await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSizes: [6 * MiB, 5 * MiB, 7 * MiB] });
    expect((await s3.checksums(BUCKET, key, 2)).size).toBe(5 * MiB);
    proxy.clear();
    const always = proxy.add({ op: "GetObject", path: `/${key}`, action: { flipResponseByte: 100 }, times: Infinity });
    const bad = await read(key);
    expect(bad.code).not.toBe(0);
    expect(bad.err).toContain("Input/output error");
    expect(always.fired).toBeGreaterThan(0);
    expect(existsSync(cached(key))).toBe(false);
    proxy.clear();
    expect(await read(key)).toMatchObject({ code: 0, sum: sha256(body) });
    expect(sha256(readFileSync(cached(key)))).toBe(sha256(body));
  }, 180_000);

  test("status --json counts what checked each object; none went unverified", async () => {
    const b = (await statusJson(d.configPath)).find((x) => x.bucket === BUCKET)!;
    expect(b.readCache!.unverified).toBe(0);
    expect(b.readCache!.checks).toMatchObject({ composite: 4, "multipart-etag": 5, full: 4 });
  }, 60_000);
});

describe("parts larger than read_chunk_size come as ranged GETs, checked against the part's checksum from a HEAD", () => {
  // read_chunk_size 2M: each 5 MiB part of a composite object is fetched as 2 + 2 + 1 MiB ranges.
  const RBUCKET = "kinds-ranged";
  let dr: DaemonHandle;
  const rbodies = new Map<string, Uint8Array>();
  const rread = async (key: string) => {
    const r = await run(`sha256sum ${join(dr.mnt[RBUCKET]!, key)}`);
    return { code: r.code, sum: r.out.split(" ")[0] ?? "", err: r.err };
  };
  const rcached = (key: string) => join(dr.cachePath, `.${RBUCKET}`, key);
  /** The proxy's record of this key's requests: ranged GETs, GETs by part number, HEADs by part number. */
  const requests = (key: string) => {
    const mine = proxy.log().filter((e) => e.path === `/${RBUCKET}/${key}`);
    return {
      ranged: mine.filter((e) => e.op === "GetObject" && e.range !== undefined && !/partNumber=/.test(e.query)).length,
      byNumber: mine.filter((e) => e.op === "GetObject" && /partNumber=/.test(e.query)).length,
      partHeads: new Set(mine.filter((e) => e.op === "HeadObject" && /partNumber=/.test(e.query)).map((e) => /partNumber=(\d+)/.exec(e.query)![1])),
      part1Heads: mine.filter((e) => e.op === "HeadObject" && /(^|&)partNumber=1(&|$)/.test(e.query)).length,
    };
  };

  beforeAll(async () => {
    await server.createBucket(RBUCKET);
    await Promise.all(["clean", "flip-once", "flip-always", "no-head-sum"].map(async (name, i) => {
      const body = new Uint8Array(15 * MiB + 4321).map((_, j) => (j * (5 + i) + (j >> 10)) & 0xff);
      rbodies.set(name, body);
      await s3.put(RBUCKET, name, { bytes: body }, { multipart: true, partSize: PART, checksum: "crc32c" });
    }));
    dr = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: RBUCKET, extra: { read_chunk_size: "2M" } }]);
  }, 300_000);

  afterAll(async () => {
    if (dr) {
      await dr.cleanup();
      removeDir(dr.dir);
    }
  }, 120_000);

  test("the right bytes, from ranged GETs and one HEAD per part: no part is fetched by number", async () => {
    proxy.clear();
    expect(await rread("clean")).toMatchObject({ code: 0, sum: sha256(rbodies.get("clean")!) });
    const r = requests("clean");
    // 4 parts (5, 5, 5 MiB and 4321 bytes): three split into 3 ranges, the last one small.
    expect(r.byNumber).toBe(1);
    expect(r.ranged).toBeGreaterThanOrEqual(9);
    expect([...r.partHeads].sort()).toEqual(["1", "2", "3"]);
    // Part 1's checksum comes with the open's own HEAD partNumber=1: it is not asked again.
    expect(r.part1Heads).toBe(1);
    expect(sha256(readFileSync(rcached("clean")))).toBe(sha256(rbodies.get("clean")!));
  }, 120_000);

  test("a byte flipped once in a range: the part does not match, is fetched again by number, and the reader gets the right bytes", async () => {
    proxy.clear();
    const flip = proxy.add({ op: "GetObject", path: `/${RBUCKET}/flip-once`, query: /^(?!.*partNumber)/, action: { flipResponseByte: 1000 } });
    expect(await rread("flip-once")).toMatchObject({ code: 0, sum: sha256(rbodies.get("flip-once")!) });
    expect(flip.fired).toBe(1);
    expect(requests("flip-once").byNumber).toBe(2);
    expect(sha256(readFileSync(rcached("flip-once")))).toBe(sha256(rbodies.get("flip-once")!));
  }, 120_000);

  test("a byte flipped in every answer: EIO, nothing cached; then a clean read", async () => {
    proxy.clear();
    const always = proxy.add({ op: "GetObject", path: `/${RBUCKET}/flip-always`, action: { flipResponseByte: 1000 }, times: Infinity });
    const bad = await rread("flip-always");
    expect(bad.code).not.toBe(0);
    expect(bad.err).toContain("Input/output error");
    expect(always.fired).toBeGreaterThan(3);
    expect(existsSync(rcached("flip-always"))).toBe(false);
    proxy.clear();
    expect(await rread("flip-always")).toMatchObject({ code: 0, sum: sha256(rbodies.get("flip-always")!) });
  }, 180_000);

  test("HEAD answers without the part's checksum: the parts come by number, checked by the store; the right bytes", async () => {
    proxy.clear();
    const drop = proxy.add({ op: "HeadObject", path: `/${RBUCKET}/no-head-sum`, query: /partNumber=/, action: { dropResponseHeader: "x-amz-checksum-crc32c" }, times: Infinity });
    expect(await rread("no-head-sum")).toMatchObject({ code: 0, sum: sha256(rbodies.get("no-head-sum")!) });
    expect(drop.fired).toBeGreaterThan(0);
    // Part 1 came as ranges that nothing could check, so by number again; every later part by number only.
    expect(requests("no-head-sum").byNumber).toBe(4);
    expect(sha256(readFileSync(rcached("no-head-sum")))).toBe(sha256(rbodies.get("no-head-sum")!));
  }, 120_000);

  test("status --json: every copy was checked by its composite checksum", async () => {
    const b = (await statusJson(dr.configPath)).find((x) => x.bucket === RBUCKET)!;
    expect(b.readCache!.unverified).toBe(0);
    expect(b.readCache!.checks).toMatchObject({ composite: 4 });
  }, 60_000);
});

describe("uploads carry a full-object CRC64NVME", () => {
  test("single PUT (small, and read as a file slice) and multipart: boto3 sees FULL_OBJECT crc64nvme of the file", async () => {
    const tmp = mkdtempSync(join(TEST_ROOT, "up-crc-"));
    try {
      const store = createS3Store(
        { bucket: BUCKET, accessKeyId: server.accessKey, secretAccessKey: server.secretKey, region: server.region, endpoint: server.endpoint, partSize: 5 * MiB, transferConcurrency: 4 },
        { retryBaseMs: 10 },
      );
      for (const [name, size] of [["small", 100_000], ["slice", 3 * MiB + 5], ["multi", 12 * MiB + 777]] as const) {
        const file = join(tmp, name);
        const bytes = new Uint8Array(size).map((_, i) => (i * 13 + (i >> 9) + name.length) & 0xff);
        writeFileSync(file, bytes);
        let told: string | undefined;
        const etag = await store.upload(`up/${name}`, file, { onChecksum: (c) => (told = c.value) });
        const want = await s3.crc("crc64nvme", { file });
        const got = await s3.checksums(BUCKET, `up/${name}`);
        expect({ etag: got.etag, type: got.checksumType, crc64nvme: got.crc64nvme, size: got.size }).toEqual({
          etag, type: "FULL_OBJECT", crc64nvme: want, size,
        });
        expect(told).toBe(want);
        if (name === "multi") expect(etag).toMatch(/-3$/);
        expect((await s3.get(BUCKET, `up/${name}`)).sha256).toBe(sha256(bytes));
      }
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }, 120_000);
});
