/**
 * End-to-end tests of the bounded read cache (issue 10): the real daemon (test/helpers/daemon.ts)
 * mounts a bucket of a real MinIO on loopback; objects are put and checked with boto3
 * (test/helpers/s3tool.ts), and every read through the mount is checked by sha256 against what
 * boto3 put. Cache bytes are measured from the filesystem (allocated blocks of the files under
 * `<cachepath>/.<bucket>/`, the workdir excluded), never taken from the daemon's own figures;
 * the daemon's counters are read only through `bucketfs status --json`.
 *
 * Covers: cache_size = 100M while 600 MiB of 20 MiB objects are read (every read right, the
 * cache never above the limit plus one object, evicted objects read right again); a file held
 * open across eviction pressure; a 50 MiB workdir file never evicted and uploaded at stop; the
 * default free-space floor (10 %) on a small tmpfs; ENOSPC: evict and retry, else EIO; a
 * restart after kill -9 during eviction leaves files and index rows in agreement.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, rmSync, statfsSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { TEMP_FILE_RE, tempNameFor } from "../../src/cache/cache-root.ts";
import { startS3Server, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { bucketfsCommand, daemonDir, removeDir, sh, startDaemon, type BucketSpec, type DaemonHandle } from "../helpers/daemon.ts";

const MiB = 1024 * 1024;
const HOOK = { timeout: 300_000 };
const OBJ = 20 * MiB;
const COUNT = 30; // 600 MiB
const BUCKET = "evict";

let server: S3Server;
let s3: S3Tool;
/** sha256 of each object, by key, as boto3 put it. */
const sums = new Map<string, string>();
const keys: string[] = [];
const handles = new Set<DaemonHandle>();

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  const put = await s3.putMany(BUCKET, { prefix: "ref/o", count: COUNT, size: OBJ, workers: 4 });
  for (const p of put) {
    sums.set(p.key, p.sha256);
    keys.push(p.key);
  }
  keys.sort();
}, HOOK);

afterAll(async () => {
  for (const h of [...handles]) await shutdown(h);
  await server?.stop();
}, HOOK);

// ---- helpers ------------------------------------------------------------------------------

async function start(buckets: BucketSpec[], opts: Parameters<typeof startDaemon>[2] = {}): Promise<DaemonHandle> {
  const h = await startDaemon(server, buckets, opts);
  handles.add(h);
  return h;
}

/** SIGTERM, detach leftovers, remove the daemon's dir (tmpfs included). Returns the exit code. */
async function shutdown(h: DaemonHandle | undefined, keepDir = false): Promise<number | undefined> {
  if (!h) return undefined;
  let code: number | undefined;
  try {
    code = await h.stop("SIGTERM", 120_000);
  } catch {
    /* stop() cleaned up */
  }
  await h.cleanup();
  if (process.env.BUCKETFS_TEST_VERBOSE === "1") process.stderr.write(`--- daemon log ${h.logFile} ---\n${h.log()}\n`);
  if (!keepDir) removeDir(h.dir);
  handles.delete(h);
  return code;
}

/** Run argv in a child process (never touch the mount from the test's own thread). */
async function run(argv: string[], timeoutS = 120): Promise<{ code: number; out: string; err: string }> {
  const p = Bun.spawn(["timeout", "-k", "5", String(timeoutS), ...argv], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  return { code, out, err };
}

async function sha256(path: string): Promise<string> {
  const r = await run(["sha256sum", path]);
  if (r.code !== 0) throw new Error(`sha256sum ${path} failed (exit ${r.code}): ${r.err}`);
  return r.out.split(" ")[0] ?? "";
}

/** Allocated bytes of the files under `root`, not entering `skip` (the workdir). */
function cacheBytes(root: string, skip?: string): number {
  let bytes = 0;
  const walk = (d: string) => {
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      return;
    }
    for (const n of names) {
      const p = `${d}/${n}`;
      if (p === skip) continue;
      try {
        const st = lstatSync(p);
        if (st.isDirectory()) walk(p);
        else bytes += st.blocks * 512;
      } catch {
        /* evicted meanwhile */
      }
    }
  };
  walk(root);
  return bytes;
}

/** Run `work` while sampling `probe` (until `work` settles); returns work's result and the largest sample. */
async function sampling<T>(work: Promise<T>, probe: () => number): Promise<{ result: T; max: number; min: number }> {
  let settled = false;
  let max = probe();
  let min = max;
  const w = work.finally(() => (settled = true));
  while (!settled) {
    const v = probe();
    max = Math.max(max, v);
    min = Math.min(min, v);
    await Promise.race([w.catch(() => {}), Bun.sleep(10)]);
  }
  const v = probe();
  return { result: await w, max: Math.max(max, v), min: Math.min(min, v) };
}

interface CacheJson {
  bytes: number;
  objects: number;
  evictions: number;
  limitBytes: number | null;
  minFreeBytes: number | null;
  freeBytes: number | null;
}

async function cacheStatus(h: DaemonHandle, bucket = BUCKET): Promise<CacheJson> {
  const r = await run([...bucketfsCommand(), "status", "--json", "--config", h.configPath]);
  if (r.code !== 0) throw new Error(`status --json failed: ${r.err}`);
  const b = (JSON.parse(r.out) as { buckets: { bucket: string; readCache: CacheJson | null }[] }).buckets.find((x) => x.bucket === bucket);
  if (!b?.readCache) throw new Error(`no read cache for ${bucket} in status --json: ${r.out}`);
  return b.readCache;
}

const rootOf = (h: DaemonHandle, bucket = BUCKET) => `${h.cachePath}/.${bucket}`;

// ---- tests --------------------------------------------------------------------------------

describe("cache_size = 100M", () => {
  let d: DaemonHandle | undefined;
  let M = "";
  beforeAll(async () => {
    d = await start([{ bucket: BUCKET, extra: { cache_size: "100M" } }]);
    M = d.mnt[BUCKET]!;
  }, HOOK);
  afterAll(() => shutdown(d), HOOK);

  test("a file held open across eviction pressure keeps reading correctly and is not evicted", async () => {
    // First in this daemon's life: nothing was read yet, so the kernel has none of these pages
    // (a re-read of an evicted object at the same ETag may be served from its page cache).
    const held = keys[5]!;
    const others = keys.filter((k) => k !== held).slice(10, 20); // 200 MiB: twice the limit
    const before = (await cacheStatus(d!)).evictions;
    const script = [
      "import hashlib, os, subprocess, sys",
      "path, cached, others = sys.argv[1], sys.argv[2], sys.argv[3:]",
      // Read it whole once (so it is a complete cached object), keep it open, rewind.
      "f = open(path, 'rb'); first = hashlib.sha256(f.read()).hexdigest(); f.seek(0)",
      "for p in others: subprocess.run(['cat', p], stdout=subprocess.DEVNULL, check=True)",
      "still = os.path.exists(cached)",
      "h = hashlib.sha256(); h.update(f.read(4 << 20)); h.update(f.read()); f.close()",
      "print(first, h.hexdigest(), 'cached' if still else 'gone')",
    ].join("\n");
    const r = await run(["python3", "-c", script, `${M}/${held}`, `${rootOf(d!)}/${held}`, ...others.map((k) => `${M}/${k}`)]);
    expect(r.err).toBe("");
    const [first, sum, state] = r.out.trim().split(" ");
    expect(first).toBe(sums.get(held)!);
    expect(sum).toBe(sums.get(held)!);
    // The held file was read first, so it was the least recently read: only its pin kept it.
    expect(state).toBe("cached");
    expect((await cacheStatus(d!)).evictions).toBeGreaterThan(before);
  }, 300_000);

  test("600 MiB of 20 MiB objects: every read right, the cache never above the limit plus one object", async () => {
    const root = rootOf(d!);
    let peak = 0;
    for (const k of keys) {
      const { result, max } = await sampling(sha256(`${M}/${k}`), () => cacheBytes(root));
      expect(result).toBe(sums.get(k)!);
      peak = Math.max(peak, max);
      expect(cacheBytes(root)).toBeLessThanOrEqual(100 * MiB + OBJ);
    }
    expect(peak).toBeLessThanOrEqual(100 * MiB + OBJ);
    expect(peak).toBeGreaterThan(60 * MiB); // the cache was used, not bypassed
    const st = await cacheStatus(d!);
    expect(st.limitBytes).toBe(100 * MiB);
    expect(st.bytes).toBeLessThanOrEqual(100 * MiB);
    expect(st.evictions).toBeGreaterThanOrEqual(COUNT - 100 / 20);
    // Evicted objects read right again (fetched again, or from the kernel page cache at the same ETag).
    for (const k of keys.slice(0, 3)) expect(await sha256(`${M}/${k}`)).toBe(sums.get(k)!);
  }, 300_000);
});

describe("the workdir", () => {
  test("a 50 MiB workdir file is never evicted and is uploaded at stop", async () => {
    const d = await start([{ bucket: BUCKET, workdir: `/${BUCKET}/work`, extra: { cache_size: "100M" } }]);
    const M = d.mnt[BUCKET]!;
    const local = `${d.dir}/big.bin`;
    const fd = openSync(local, "w");
    for (let i = 0; i < 50; i++) writeSync(fd, randomBytes(MiB));
    closeSync(fd);
    const want = await sha256(local);
    expect((await run(["cp", local, `${M}/work/big.bin`])).code).toBe(0);
    const root = rootOf(d);
    const wd = `${root}/work`;
    for (const k of keys.slice(0, 12)) {
      const { result, max } = await sampling(sha256(`${M}/${k}`), () => cacheBytes(root, wd));
      expect(result).toBe(sums.get(k)!);
      expect(max).toBeLessThanOrEqual(100 * MiB + OBJ);
    }
    expect((await cacheStatus(d)).evictions).toBeGreaterThan(0);
    expect(await sha256(`${wd}/big.bin`)).toBe(want);
    expect(await sha256(`${M}/work/big.bin`)).toBe(want);
    expect(await shutdown(d)).toBe(0);
    expect((await s3.get(BUCKET, "work/big.bin")).sha256).toBe(want);
  }, 300_000);
});

/** A fresh daemon dir whose cachepath is a tmpfs of `mib` MiB (removed with the dir). */
function tmpfsDir(name: string, mib: number): string {
  const dir = daemonDir(name);
  mkdirSync(`${dir}/cache`, { recursive: true });
  const r = sh(`mount -t tmpfs -o size=${mib}M,mode=0700 tmpfs '${dir}/cache'`);
  if (r.code !== 0) throw new Error(`cannot mount a tmpfs: ${r.err}`);
  return dir;
}

const freeOf = (path: string) => {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
};

describe("the free-space floor", () => {
  test("with neither key set, 10 % of a small tmpfs stays free while more than it holds is read", async () => {
    const dir = tmpfsDir("floor", 160);
    let d: DaemonHandle | undefined;
    try {
      d = await start([{ bucket: BUCKET }], { dir });
      const M = d.mnt[BUCKET]!;
      const cache = `${dir}/cache`;
      const floor = Math.ceil(0.1 * statfsSync(cache).blocks * statfsSync(cache).bsize);
      for (const k of keys.slice(0, 12)) { // 240 MiB through a 160 MiB filesystem
        const { result, min } = await sampling(sha256(`${M}/${k}`), () => freeOf(cache));
        expect(result).toBe(sums.get(k)!);
        expect(min).toBeGreaterThanOrEqual(floor);
      }
      const st = await cacheStatus(d);
      expect(st.limitBytes).toBeNull();
      expect(st.minFreeBytes).toBe(floor);
      expect(st.evictions).toBeGreaterThan(0);
    } finally {
      await shutdown(d);
      removeDir(dir);
    }
  }, 300_000);

  test("ENOSPC: the fetch evicts and retries once; with nothing left to evict it fails with EIO and says the cache is full", async () => {
    const dir = tmpfsDir("enospc", 64);
    let d: DaemonHandle | undefined;
    try {
      d = await start([{ bucket: BUCKET, extra: { cache_min_free: "0" } }], { dir });
      const M = d.mnt[BUCKET]!;
      const cache = `${dir}/cache`;
      expect(await sha256(`${M}/${keys[0]}`)).toBe(sums.get(keys[0]!)!);
      // Another writer fills the filesystem: 4 MiB left, less than the next object.
      const filler = `${cache}/filler`;
      expect(sh(`head -c ${freeOf(cache) - 4 * MiB} /dev/zero > '${filler}'`).code).toBe(0);
      const before = (await cacheStatus(d)).evictions;
      expect(await sha256(`${M}/${keys[1]}`)).toBe(sums.get(keys[1]!)!); // evicted keys[0], retried
      // On a full disk the eviction's index write may wait for the next tick (about 1 s).
      const until = Date.now() + 30_000;
      let evictions = (await cacheStatus(d)).evictions;
      while (evictions < before + 1 && Date.now() < until) {
        await Bun.sleep(100);
        evictions = (await cacheStatus(d)).evictions;
      }
      expect(evictions).toBe(before + 1);
      // Evicted files are removed in the background: wait until they are, then fill again
      // while keys[1] is held open, so nothing can be evicted now.
      const deadline = Date.now() + 30_000;
      while (readdirSync(`${cache}/.${BUCKET}/ref`).some((n) => TEMP_FILE_RE.test(n))) {
        if (Date.now() > deadline) throw new Error("evicted files never removed");
        await Bun.sleep(20);
      }
      expect(sh(`head -c ${Math.max(0, freeOf(cache) - 2 * MiB)} /dev/zero > '${filler}2'`).code).toBe(0);
      const r = await run(["bash", "-c", `exec 3<'${M}/${keys[1]}'; cat '${M}/${keys[2]}' > /dev/null`]);
      expect(r.code).not.toBe(0);
      expect(r.err).toContain("Input/output error");
      expect(d.log()).toContain("cache full");
      // Space comes back: the same object reads right.
      unlinkSync(filler);
      unlinkSync(`${filler}2`);
      expect(await sha256(`${M}/${keys[2]}`)).toBe(sums.get(keys[2]!)!);
    } finally {
      await shutdown(d);
      removeDir(dir);
    }
  }, 300_000);
});

describe("crash consistency", () => {
  test("a restart after kill -9 during eviction leaves every cache file with its row and every row with its file", async () => {
    const dir = daemonDir("crash");
    const spec: BucketSpec[] = [{ bucket: BUCKET, extra: { cache_size: "60M" } }];
    let d: DaemonHandle | undefined = await start(spec, { dir });
    try {
      const M = d.mnt[BUCKET]!;
      // A reader keeps the evictor busy; the daemon is killed once evictions are under way.
      const reader = Bun.spawn(["bash", "-c", keys.map((k) => `cat '${M}/${k}' > /dev/null`).join("; ")], {
        stdin: "ignore", stdout: "ignore", stderr: "ignore",
      });
      const deadline = Date.now() + 120_000;
      while ((await cacheStatus(d)).evictions < 3) {
        if (Date.now() > deadline) throw new Error("no evictions seen");
        await Bun.sleep(100);
      }
      d.proc.kill("SIGKILL");
      await d.proc.exited;
      reader.kill("SIGKILL");
      await reader.exited;
      await shutdown(d, true);
      d = undefined;
      const root = `${dir}/cache/.${BUCKET}`;
      // The states a kill between an eviction's two steps can leave, made certain:
      // a file whose row is gone, and a row whose file is gone; plus an unfinished download.
      const killed = new Database(`${dir}/cache/.${BUCKET}.index`, { readonly: true });
      const cachedKeys = killed.query<{ key: string }, []>("SELECT key FROM meta_cached ORDER BY key").all().map((r) => r.key);
      killed.close();
      expect(cachedKeys.length).toBeGreaterThan(0);
      rmSync(`${root}/${cachedKeys[0]}`);
      writeFileSync(`${root}/ref/orphan`, randomBytes(MiB));
      writeFileSync(`${root}/ref/${tempNameFor("dead")}`, randomBytes(MiB));

      d = await start(spec, { dir });
      const db = new Database(`${dir}/cache/.${BUCKET}.index`, { readonly: true });
      try {
        const rows = new Map(db.query<{ key: string; size: number }, []>("SELECT key, size FROM meta_cached").all().map((r) => [r.key, r.size]));
        const lru = db.query<{ key: string }, []>("SELECT key FROM cache_lru ORDER BY key").all().map((r) => r.key);
        // The sweep removes directories it emptied: no ref/ at all means no file is left.
        const names = existsSync(`${root}/ref`) ? readdirSync(`${root}/ref`) : [];
        const onDisk = new Map(names.map((n) => [`ref/${n}`, lstatSync(`${root}/ref/${n}`).size]));
        expect([...onDisk.keys()].sort()).toEqual([...rows.keys()].sort());
        for (const [k, size] of rows) expect(onDisk.get(k)).toBe(size);
        expect(lru).toEqual([...rows.keys()].sort());
        expect(onDisk.has("ref/orphan")).toBe(false);
        expect(rows.has(cachedKeys[0]!)).toBe(false);
        expect([...onDisk.keys()].some((k) => TEMP_FILE_RE.test(k.slice("ref/".length)))).toBe(false);
      } finally {
        db.close();
      }
      for (const k of keys.slice(0, 6)) expect(await sha256(`${d.mnt[BUCKET]}/${k}`)).toBe(sums.get(k)!);
    } finally {
      await shutdown(d);
      removeDir(dir);
    }
  }, 300_000);
});
