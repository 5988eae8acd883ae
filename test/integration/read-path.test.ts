/**
 * Which path served a read, seen through the daemon's request counters
 * (`<cachepath>/.<bucket>.fuse.json`, written by src/service/fuse-counters.ts): READs of
 * MAX_READ_BYTES for a streamed cold read, FUSE passthrough for complete cached files (the daemon sees no
 * READ at all, and the bytes are identical), and READs through the daemon again when the
 * `passthrough = no` switch turns it off. Real daemon, real MinIO, objects put with boto3.
 * The unit-level INIT decision (kernel without passthrough) is in test/unit/passthrough.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { daemonDir, removeDir, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { writeRandom } from "../helpers/files.ts";
import { fuseCountersPath, readFuseCounters, type PublishedCounters } from "../../src/service/fuse-counters.ts";
import { MAX_READ_BYTES } from "../../src/fuse/session.ts";
import { s3Requests } from "../../bench/lib/minio-metrics.ts";

const MiB = 1024 * 1024;
const HOOK = { timeout: 240_000 };
const BUCKET = "read-path";

let server: S3Server;
let s3: S3Tool;
let scratch: string;
const sums: Record<string, string> = {};
const handles = new Set<DaemonHandle>();

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  mkdirSync(TEST_ROOT, { recursive: true });
  scratch = mkdtempSync(join(TEST_ROOT, "read-path-"));
  // small: fetched whole at open (complete before the open is answered); big: streamed.
  for (const [key, size] of [["small.bin", 3 * MiB + 17], ["big.bin", 24 * MiB + 5]] as const) {
    const f = join(scratch, key);
    writeRandom(f, size);
    sums[key] = sha256(f);
    await s3.put(BUCKET, key, { file: f });
  }
}, HOOK);

afterAll(async () => {
  for (const h of handles) await h.cleanup();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, HOOK);

/** Run a command line in a child process (never touch the mount from the test's own thread). */
async function run(cmd: string): Promise<string> {
  const p = Bun.spawn(["timeout", "-k", "5", "120", "bash", "-c", cmd], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd}: exit ${code}: ${err}`);
  return out;
}

/** Counters once the daemon has answered `releases` RELEASE requests (every READ of those opens precedes them). */
async function countersAfter(d: DaemonHandle, releases: number): Promise<PublishedCounters> {
  const path = fuseCountersPath({ cachePath: d.cachePath, bucket: BUCKET });
  const deadline = Date.now() + 30_000;
  for (;;) {
    const c = readFuseCounters(path);
    if (c && (c.requests["RELEASE"] ?? 0) >= releases) return c;
    if (Date.now() > deadline) throw new Error(`no counters with ${releases} RELEASEs: ${JSON.stringify(c)}\n${d.log()}`);
    await Bun.sleep(50);
  }
}

const reads = (c: PublishedCounters) => c.requests["READ"] ?? 0;

describe("read path", () => {
  let dir: string;

  test("passthrough on: cached files are read by the kernel (0 READs, same bytes); a cold streamed read uses the largest READs libfuse can splice", async () => {
    dir = daemonDir("read-path");
    const d = await startDaemon(server, [{ bucket: BUCKET }], { dir });
    handles.add(d);
    try {
      const mnt = d.mnt[BUCKET]!;
      // small.bin is downloaded whole during its open, so even the first open is passed through.
      expect((await run(`sha256sum ${mnt}/small.bin`)).split(" ")[0]).toBe(sums["small.bin"]!);
      let c = await countersAfter(d, 1);
      expect(c.passthrough.state).toBe("on");
      expect(c.passthrough.opens).toBe(1);
      expect(reads(c)).toBe(0);

      // big.bin is streamed: READs reach the daemon while it is fetched, MAX_READ_BYTES (1008 KiB)
      // each, which with its header fits libfuse's splice pipe (session.ts).
      expect((await run(`dd if=${mnt}/big.bin bs=1M status=none | sha256sum`)).split(" ")[0]).toBe(sums["big.bin"]!);
      c = await countersAfter(d, 2);
      expect(c.readAheadKb).toBe(MAX_READ_BYTES / 1024);
      expect(c.maxReadSize).toBe(MAX_READ_BYTES);
      expect(c.readSizes[String(MAX_READ_BYTES)]).toBeGreaterThanOrEqual(16);
      // libfuse's pipe-size rule for a spliced reply: three pages of slack, within a 1 MiB pipe.
      expect(3 * 4096 + 16 + MAX_READ_BYTES).toBeLessThanOrEqual(MiB);
      const readsCold = reads(c);
      expect(readsCold).toBeGreaterThan(0);

      // Once its cache file is complete, it is passed through too: no new READ.
      const cached = `${d.cachePath}/.${BUCKET}/big.bin`;
      const deadline = Date.now() + 30_000;
      while (!existsSync(cached) && Date.now() < deadline) await Bun.sleep(20);
      expect(existsSync(cached)).toBe(true);
      expect((await run(`sha256sum ${mnt}/big.bin`)).split(" ")[0]).toBe(sums["big.bin"]!);
      // mmap readers too (python maps the file and hashes the mapping).
      const mm = await run(`python3 -c "import mmap,hashlib,sys; f=open(sys.argv[1],'rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); print(hashlib.sha256(m).hexdigest())" ${mnt}/small.bin`);
      expect(mm.trim()).toBe(sums["small.bin"]!);
      c = await countersAfter(d, 4);
      expect(reads(c)).toBe(readsCold);
      expect(c.passthrough.opens).toBe(3);
      expect(await d.stop()).toBe(0);
      handles.delete(d);
      // Every backing id was released by the time the last RELEASE was answered.
      const last = readFuseCounters(fuseCountersPath({ cachePath: d.cachePath, bucket: BUCKET }))!;
      expect(last.passthrough.backingIdsOpen).toBe(0);
    } finally {
      await d.cleanup();
    }
  }, HOOK.timeout);

  test("passthrough = no: the same cached files are read through the daemon (READs counted, same bytes)", async () => {
    const d = await startDaemon(server, [{ bucket: BUCKET, extra: { passthrough: "no" } }], { dir });
    handles.add(d);
    try {
      const mnt = d.mnt[BUCKET]!;
      expect((await run(`sha256sum ${mnt}/small.bin ${mnt}/big.bin`)).split("\n").map((l) => l.split(" ")[0])).toEqual([
        sums["small.bin"]!, sums["big.bin"]!, "",
      ]);
      const c = await countersAfter(d, 2);
      expect(c.passthrough).toMatchObject({ state: "off", opens: 0 });
      expect(c.passthrough.reason).toMatch(/switched off/);
      expect(reads(c)).toBeGreaterThan(0);
      expect(await d.stop()).toBe(0);
      handles.delete(d);
    } finally {
      await d.cleanup();
      removeDir(dir);
    }
  }, HOOK.timeout);

  test("a reader opening a directory's files in order gets the next ones fetched ahead (right bytes, each fetched once)", async () => {
    const put = await s3.putMany(BUCKET, { prefix: "shards/s-", count: 40, size: 20_000, workers: 8 });
    const want = new Map(put.map((p) => [p.key, p.sha256]));
    const raDir = daemonDir("read-ahead");
    const d = await startDaemon(server, [{ bucket: BUCKET }], { dir: raDir });
    handles.add(d);
    try {
      const mnt = d.mnt[BUCKET]!;
      const before = await s3Requests(server);
      const keys = [...want.keys()].sort();
      const cacheFile = (k: string) => join(d.cachePath, `.${BUCKET}`, k);
      // The listing (what a glob does), then two opens in its order: the next 16 files are
      // fetched without being opened.
      await run(`ls ${mnt}/shards > /dev/null && cat ${mnt}/${keys[0]} ${mnt}/${keys[1]} > /dev/null`);
      const ahead = keys.slice(2, 18);
      const deadline = Date.now() + 30_000;
      while (!ahead.every((k) => existsSync(cacheFile(k))) && Date.now() < deadline) await Bun.sleep(20);
      expect(ahead.filter((k) => !existsSync(cacheFile(k)))).toEqual([]);
      expect(existsSync(cacheFile(keys[20]!))).toBe(false); // beyond the window
      // The whole directory in order, through the mount: every byte right.
      const sums = (await run(`cd ${mnt}/shards && sha256sum *`)).trim().split("\n").map((l) => l.split(/\s+/));
      expect(sums.map(([h, n]) => [`shards/${n}`, h])).toEqual(keys.map((k) => [k, want.get(k)]));
      // Each object was fetched once: by the read-ahead or by its own open, never both.
      const gets = ((await s3Requests(server)).get("GetObject") ?? 0) - (before.get("GetObject") ?? 0);
      expect(gets).toBe(40);
      expect(await d.stop()).toBe(0);
      handles.delete(d);
    } finally {
      await d.cleanup();
      removeDir(raDir);
    }
  }, HOOK.timeout);
});
