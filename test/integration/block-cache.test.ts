/**
 * The block cache of streamed objects (issue 21, item 3), through a real mount and MinIO, with
 * objects made by boto3 (test/helpers/s3tool.py) as users' tools make them: bytes fetched are
 * the GetObject answer bytes the fault proxy counts (test/helpers/fault-proxy.ts).
 *   - A multipart object with composite checksums (CRC32C), read at scattered offsets by one
 *     process per region and closed, then read again by new processes: the second pass fetches
 *     0 bytes and gets the right bytes, and so does a third after a daemon restart over the
 *     same cache (the block map is in the index). A part whose answer is corrupted is never kept (its
 *     region fails, the others are kept; a clean read of it later fetches it again).
 *   - The object overwritten in S3 (new ETag): the kept parts are dropped, the new bytes read.
 *   - Under cache_size, kept parts are evicted like whole objects.
 *   - A whole-file read still ends as one complete cache file, served by passthrough.
 *   - A random reader of an ETag-only object fetches small blocks, not chunks; those blocks are
 *     not kept after the close (they can only be checked whole).
 *   - A later open of the same version sends no HEAD (what S3 said of it is remembered), and a
 *     whole read is still checked; a copy that failed its check is asked about again.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { removeDir, startDaemon, daemonDir, type DaemonHandle, type BucketSpec } from "../helpers/daemon.ts";
import { run } from "../helpers/run.ts";
import { startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.ts";
import { startS3Server, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { waitStatus } from "../helpers/status.ts";
import { until } from "../helpers/wait.ts";
import { fuseCountersPath, readFuseCounters } from "../../src/service/fuse-counters.ts";

const MiB = 1024 * 1024;
const BUCKET = "blocks";
const PART = 8 * MiB;
const SIZE = 9 * PART + 12_345; // 10 parts, the last one short
const REGION = 64 * 1024;
/** Regions in parts 1, 3, 5 and 8 (0-based 0, 2, 4, 7), none near a part's end. */
const OFFSETS = [100_000, 2 * PART + 3 * MiB + 512, 4 * PART + 7 * MiB, 7 * PART + 4_096];

let server: S3Server;
let proxy: FaultProxy;
let s3: S3Tool;
const daemons = new Set<DaemonHandle>();

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const bodyOf = (seed: number, size = SIZE) => new Uint8Array(size).map((_, j) => (j * (13 + seed) + (j >> 11) + seed) & 0xff);

beforeAll(async () => {
  server = await startS3Server();
  proxy = await startFaultProxy(server);
  s3 = s3tool(server);
  await server.createBucket(BUCKET);
}, 120_000);

afterAll(async () => {
  for (const d of daemons) {
    await d.cleanup();
    removeDir(d.dir);
  }
  await proxy?.stop();
  await server?.stop();
}, 120_000);

async function start(name: string, extra: Record<string, string> = {}): Promise<DaemonHandle> {
  const spec: BucketSpec[] = [{ bucket: BUCKET, extra: { metadata_ttl: "0", ...extra } }];
  const d = await startDaemon({ ...server, endpoint: proxy.endpoint }, spec, { dir: daemonDir(name) });
  daemons.add(d);
  return d;
}

async function stop(d: DaemonHandle): Promise<void> {
  expect(await d.stop()).toBe(0);
  await d.cleanup();
  removeDir(d.dir);
  daemons.delete(d);
}

/** Each region read by its own process (as index queries run), the page cache dropped first. */
async function readRegions(d: DaemonHandle, key: string, offsets: number[]): Promise<{ code: number; sums: string[] }[]> {
  await run("sync; echo 3 > /proc/sys/vm/drop_caches");
  const path = join(d.mnt[BUCKET]!, key);
  return Promise.all(
    offsets.map(async (off) => {
      const r = await run(`set -o pipefail; dd if='${path}' iflag=skip_bytes,count_bytes skip=${off} count=${REGION} bs=${REGION} status=none | sha256sum`);
      return { code: r.code, sums: [r.out.split(" ")[0] ?? ""] };
    }),
  );
}

/** GetObject body bytes fetched by `fn`, once no GET is left in flight (read-ahead included). */
async function fetchedBy(d: DaemonHandle, fn: () => Promise<unknown>): Promise<number> {
  const before = proxy.bodyBytes("GetObject");
  await fn();
  await waitStatus(d.configPath, BUCKET, (b) => b.network !== null && b.network.gets.inFlight === 0 && b.network.gets.waiting === 0, "no GET in flight");
  return proxy.bodyBytes("GetObject") - before;
}

const regionSum = (body: Uint8Array, off: number) => sha256(body.subarray(off, off + REGION));

describe("block cache of objects with part checksums", () => {
  test("scattered regions read, closed, read again by new processes: the second pass fetches 0 bytes, right bytes", async () => {
    const key = "idx/a.bam";
    const body = bodyOf(1);
    await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: PART, checksum: "crc32c" });
    const d = await start("blocks-reopen");
    try {
      const want = OFFSETS.map((off) => regionSum(body, off));
      let got: { code: number; sums: string[] }[] = [];
      const first = await fetchedBy(d, async () => (got = await readRegions(d, key, OFFSETS)));
      expect(got.map((g) => g.code)).toEqual(OFFSETS.map(() => 0));
      expect(got.map((g) => g.sums[0])).toEqual(want);
      // Parts are the blocks of such an object: the four touched, at most one more each.
      expect(first).toBeGreaterThanOrEqual(4 * PART);
      expect(first).toBeLessThanOrEqual(2 * 4 * PART);
      const second = await fetchedBy(d, async () => (got = await readRegions(d, key, OFFSETS)));
      expect(got.map((g) => g.sums[0])).toEqual(want);
      expect(second).toBe(0);
      // Nothing was renamed into place: the object is incomplete, and status says what it keeps.
      expect(existsSync(join(d.cachePath, `.${BUCKET}`, key))).toBe(false);
      const kept = await waitStatus(d.configPath, BUCKET, (b) => (b.readCache?.keptObjects ?? 0) > 0, "the kept parts recorded");
      expect([kept.readCache!.keptObjects, kept.readCache!.keptBytes]).toEqual([1, first]);
      // The block map is in the index: a restart over the same cache serves the parts again.
      expect(await d.stop()).toBe(0);
      await d.cleanup();
      daemons.delete(d);
      const again = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: BUCKET, extra: { metadata_ttl: "0" } }], { dir: d.dir });
      daemons.add(again);
      const third = await fetchedBy(again, async () => (got = await readRegions(again, key, OFFSETS)));
      expect(got.map((g) => g.sums[0])).toEqual(want);
      expect(third).toBe(0);
      const after = await waitStatus(again.configPath, BUCKET, (b) => b.readCache !== null, "status");
      expect([after.readCache!.keptObjects, after.readCache!.keptBytes]).toEqual([1, first]);
      await stop(again);
    } finally {
      proxy.clear();
    }
  }, 240_000);

  test("a part whose answer is corrupted is never kept; a clean read fetches it again", async () => {
    const key = "idx/b.bam";
    const body = bodyOf(2);
    await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: PART, checksum: "crc32c" });
    const d = await start("blocks-corrupt");
    try {
      // Part 3 (bytes of OFFSETS[1]) is flipped in every answer; the other parts are clean.
      const bad = proxy.add({ op: "GetObject", path: `/${BUCKET}/${key}`, query: /partNumber=3(&|$)/, action: { flipResponseByte: 1234 }, times: Infinity });
      const got = await readRegions(d, key, OFFSETS);
      expect(bad.fired).toBeGreaterThan(0);
      expect(got[1]!.code).not.toBe(0);
      for (const i of [0, 2, 3]) expect(got[i]!).toEqual({ code: 0, sums: [regionSum(body, OFFSETS[i]!)] });
      proxy.clear();
      let again: { code: number; sums: string[] }[] = [];
      const fetched = await fetchedBy(d, async () => (again = await readRegions(d, key, OFFSETS)));
      expect(again.map((g) => g.code)).toEqual(OFFSETS.map(() => 0));
      expect(again.map((g) => g.sums[0])).toEqual(OFFSETS.map((off) => regionSum(body, off)));
      // Only the bad part (and at most one neighbour) came again; the clean ones were kept.
      expect(fetched).toBeGreaterThanOrEqual(PART);
      expect(fetched).toBeLessThanOrEqual(2 * PART);
      await stop(d);
    } finally {
      proxy.clear();
    }
  }, 240_000);

  test("the object overwritten in S3 (new ETag): the kept parts are dropped and the new bytes read", async () => {
    const key = "idx/c.bam";
    const body = bodyOf(3);
    await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: PART, checksum: "crc32c" });
    const d = await start("blocks-etag");
    try {
      const one = await readRegions(d, key, OFFSETS.slice(0, 2));
      expect(one.map((g) => g.sums[0])).toEqual(OFFSETS.slice(0, 2).map((off) => regionSum(body, off)));
      const next = bodyOf(4);
      await s3.put(BUCKET, key, { bytes: next }, { multipart: true, partSize: PART, checksum: "crc32c" });
      let got: { code: number; sums: string[] }[] = [];
      const fetched = await fetchedBy(d, async () => (got = await readRegions(d, key, OFFSETS.slice(0, 2))));
      expect(got.map((g) => g.sums[0])).toEqual(OFFSETS.slice(0, 2).map((off) => regionSum(next, off)));
      expect(fetched).toBeGreaterThanOrEqual(2 * PART);
      // Every GET of the new version carried its ETag (If-Match), never the old one's.
      const ifMatch = proxy.log().filter((e) => e.op === "GetObject" && e.path.includes(key)).map((e) => e.ifMatch);
      expect(ifMatch.every((m) => m !== undefined)).toBe(true);
      await stop(d);
    } finally {
      proxy.clear();
    }
  }, 240_000);

  test("under cache_size, kept parts are evicted like whole objects", async () => {
    const keys = ["ev/x.bam", "ev/y.bam", "ev/z.bam"];
    const bodies = keys.map((_, i) => bodyOf(10 + i));
    await Promise.all(keys.map((k, i) => s3.put(BUCKET, k, { bytes: bodies[i]! }, { multipart: true, partSize: PART, checksum: "crc32c" })));
    // 4 parts of 8 MiB kept per object: three objects (96 MiB) do not fit in 60 MiB.
    const d = await start("blocks-evict", { cache_size: "60M" });
    try {
      for (let i = 0; i < keys.length; i++) {
        const got = await readRegions(d, keys[i]!, OFFSETS);
        expect(got.map((g) => g.sums[0])).toEqual(OFFSETS.map((off) => regionSum(bodies[i]!, off)));
      }
      // The most recently closed object kept its parts...
      let got: { code: number; sums: string[] }[] = [];
      const z = await fetchedBy(d, async () => (got = await readRegions(d, keys[2]!, OFFSETS)));
      expect(got.map((g) => g.sums[0])).toEqual(OFFSETS.map((off) => regionSum(bodies[2]!, off)));
      expect(z).toBe(0);
      // ...while the first object's (least recently closed) went to make room for the third's.
      const x = await fetchedBy(d, async () => (got = await readRegions(d, keys[0]!, OFFSETS)));
      expect(got.map((g) => g.sums[0])).toEqual(OFFSETS.map((off) => regionSum(bodies[0]!, off)));
      expect(x).toBeGreaterThanOrEqual(4 * PART);
      // The cache directory holds no more than the bound (plus the one copy being read).
      const du = await run(`du -sb --apparent-size '${d.cachePath}/.${BUCKET}' | cut -f1`);
      expect(Number(du.out.trim())).toBeLessThanOrEqual(60 * MiB + SIZE);
      await stop(d);
    } finally {
      proxy.clear();
    }
  }, 300_000);

  test("a whole-file read after scattered ones ends as one complete cache file, served by passthrough", async () => {
    const key = "idx/d.bam";
    const body = bodyOf(5);
    await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: PART, checksum: "crc32c" });
    const d = await start("blocks-whole");
    try {
      await readRegions(d, key, OFFSETS);
      const mnt = join(d.mnt[BUCKET]!, key);
      let sum = "";
      const fetched = await fetchedBy(d, async () => (sum = (await run(`sha256sum '${mnt}'`)).out.split(" ")[0] ?? ""));
      expect(sum).toBe(sha256(body));
      // The kept parts were not fetched again.
      expect(fetched).toBeLessThanOrEqual(SIZE - 4 * PART);
      const cached = join(d.cachePath, `.${BUCKET}`, key);
      expect(existsSync(cached)).toBe(true);
      expect(sha256(readFileSync(cached))).toBe(sha256(body));
      const countersPath = fuseCountersPath({ cachePath: d.cachePath, bucket: BUCKET });
      const before = readFuseCounters(countersPath)?.passthrough.opens ?? 0;
      expect((await run(`sha256sum '${mnt}'`)).out.split(" ")[0]).toBe(sha256(body));
      await until(() => (readFuseCounters(countersPath)?.passthrough.opens ?? 0) > before, 30_000, "a passthrough open in the published counters");
      expect(readFuseCounters(countersPath)?.passthrough.opens ?? 0).toBeGreaterThan(before);
      await stop(d);
    } finally {
      proxy.clear();
    }
  }, 240_000);
});

describe("objects checked only whole (multipart ETag)", () => {
  test("a random reader's first fetches are small blocks, not chunks; they are not kept after the close", async () => {
    const key = "etag/e.bam";
    const body = bodyOf(6);
    await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: PART });
    const d = await start("blocks-etag-only");
    try {
      let got: { code: number; sums: string[] }[] = [];
      const first = await fetchedBy(d, async () => (got = await readRegions(d, key, OFFSETS)));
      expect(got.map((g) => g.sums[0])).toEqual(OFFSETS.map((off) => regionSum(body, off)));
      // A few 1 MiB blocks per region, where a 16 MiB chunk each was fetched before.
      expect(first).toBeLessThanOrEqual(OFFSETS.length * 4 * MiB);
      const second = await fetchedBy(d, async () => (got = await readRegions(d, key, OFFSETS)));
      expect(got.map((g) => g.sums[0])).toEqual(OFFSETS.map((off) => regionSum(body, off)));
      // Not kept: such blocks can only be checked with the whole object.
      expect(second).toBeGreaterThan(0);
      await stop(d);
    } finally {
      proxy.clear();
    }
  }, 240_000);

  test("a later open of the same version asks S3 nothing about it; the whole read is still checked, and a copy that failed its check is asked about again", async () => {
    const key = "etag/memo.bam";
    const body = bodyOf(7);
    await s3.put(BUCKET, key, { bytes: body }, { multipart: true, partSize: PART });
    // What an open asks S3 of a multipart object's bytes: HEAD partNumber=1 (beside the object's
    // HEAD; lookups with metadata_ttl 0 send HEADs of their own, without a part number).
    const partHeads = () => proxy.log().filter((e) => e.op === "HeadObject" && e.path.includes(key) && /(^|&)partNumber=1(&|$)/.test(e.query)).length;
    const d = await start("blocks-etag-memo");
    try {
      // One process at a time, as a pipeline runs its index queries: each opens the object after the last one closed it.
      for (const off of OFFSETS) expect(await readRegions(d, key, [off])).toEqual([{ code: 0, sums: [regionSum(body, off)] }]);
      // The first open asked; the three after it did not.
      expect(partHeads()).toBe(1);
      // A whole read of the same version, also without asking, ends checked against the multipart ETag.
      const whole = await run(`set -o pipefail; cat '${join(d.mnt[BUCKET]!, key)}' | sha256sum`);
      expect(whole.code).toBe(0);
      expect(whole.out.split(" ")[0]).toBe(sha256(body));
      expect(partHeads()).toBe(1);
      await stop(d);

      // A fresh mount: every GET answer of this object has one byte flipped, so the whole read fails its check.
      const d2 = await start("blocks-etag-memo-bad");
      const bad = proxy.add({ op: "GetObject", path: `/${BUCKET}/${key}`, action: { flipResponseByte: 4321 }, times: Infinity });
      const failed = await run(`cat '${join(d2.mnt[BUCKET]!, key)}' > /dev/null`);
      expect(bad.fired).toBeGreaterThan(0);
      expect(failed.code).not.toBe(0);
      // (The failed check asks again itself, for every part's size, to tell a bad body from another layout.)
      const afterBad = partHeads();
      expect(afterBad).toBeGreaterThan(1);
      proxy.clear();
      // What S3 said of the bad copy is not trusted again: the next open asks, and reads right.
      const again = await run(`set -o pipefail; cat '${join(d2.mnt[BUCKET]!, key)}' | sha256sum`);
      expect(again.code).toBe(0);
      expect(again.out.split(" ")[0]).toBe(sha256(body));
      expect(partHeads()).toBeGreaterThan(afterBad);
      await stop(d2);
    } finally {
      proxy.clear();
    }
  }, 240_000);
});
