/**
 * Benchmark: read throughput and listing time through a real bucketfs mount.
 *
 * Puts a 1 GiB random object and 10,000 small objects into a throwaway MinIO on loopback
 * (test/helpers/s3server.ts, with the independent boto3 client), starts the real daemon
 * (test/helpers/daemon.ts), and measures with child processes (`dd`, `ls`):
 *   - cold read of the 1 GiB object through the mount (nothing cached, page cache dropped)
 *   - warm read through the mount: object in bucketfs' cache, page cache dropped (disk)
 *   - the same object's cache file read directly, page cache dropped (disk)
 *   - warm read through the mount and of the cache file with the page cache hot
 *   - `ls -l` of the 10,000-object directory: first (LIST from S3) and second (index)
 *
 * Is: a measurement script (loopback only; everything it creates is removed at the end).
 * Is not: a test (it asserts only that the bytes read are the bytes put).
 *
 * Run:  node_modules/.bin/bun bench/quick-read.ts        (as root: drops the page cache)
 * Env:  BENCH_BIG_MIB (default 1024), BENCH_COUNT (default 10000).
 */
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { startS3Server, TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { removeDir, startDaemon, type DaemonHandle } from "../test/helpers/daemon.ts";

const MiB = 1024 * 1024;
const BIG_MIB = Number(process.env.BENCH_BIG_MIB ?? 1024);
const COUNT = Number(process.env.BENCH_COUNT ?? 10_000);
const BUCKET = "bench-read";
const BIG_KEY = "big/object-1g.bin";

async function sh(cmd: string, timeoutS = 900): Promise<{ code: number; out: string; err: string; ms: number }> {
  const t0 = performance.now();
  const p = Bun.spawn(["timeout", "-k", "5", String(timeoutS), "bash", "-c", cmd], {
    stdout: "pipe",
    stderr: "pipe",
    stdin: "ignore",
    env: { ...process.env, LC_ALL: "C" },
  });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  const ms = performance.now() - t0;
  if (code !== 0) throw new Error(`failed (exit ${code}): ${cmd}\n${err}`);
  return { code, out, err, ms };
}

function dropCaches(): boolean {
  try {
    Bun.spawnSync(["sync"]);
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

/** Read `path` sequentially with dd (1 MiB blocks) and return MiB/s by wall time. */
async function readRate(path: string, mib: number): Promise<number> {
  const r = await sh(`dd if='${path}' of=/dev/null bs=1M status=none`);
  return mib / (r.ms / 1000);
}

const T0 = performance.now();
const phase = (s: string): void => void process.stderr.write(`[${((performance.now() - T0) / 1000).toFixed(1)} s] ${s}\n`);
const fmt = (n: number): string => n.toFixed(0).padStart(6);

mkdirSync(TEST_ROOT, { recursive: true });
const work = mkdtempSync(join(TEST_ROOT, "bench-read-"));
const server = await startS3Server();
let d: DaemonHandle | undefined;
try {
  const s3 = s3tool(server);
  await s3.mkbucket(BUCKET);

  // 1 GiB of random bytes (no repeated blocks), put as a multipart upload.
  const src = join(work, "big.bin");
  const hash = new Bun.CryptoHasher("sha256");
  const fd = openSync(src, "w");
  for (let left = BIG_MIB * MiB; left > 0; left -= 8 * MiB) {
    const chunk = randomBytes(Math.min(left, 8 * MiB));
    writeSync(fd, chunk);
    hash.update(chunk);
  }
  closeSync(fd);
  const sha = hash.digest("hex");
  let t = performance.now();
  await s3.put(BUCKET, BIG_KEY, { file: src }, { multipart: true, partSize: 64 * MiB });
  rmSync(src);
  console.log(`setup: put ${BIG_MIB} MiB in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  t = performance.now();
  await s3.putMany(BUCKET, { prefix: "many/obj-", count: COUNT, size: 100, workers: 32 });
  console.log(`setup: put ${COUNT} objects of 100 B in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  phase("starting daemon");
  d = await startDaemon(server, [{ bucket: BUCKET }], { env: { BUCKETFS_LOG_LEVEL: "info" } });
  const M = d.mnt[BUCKET] ?? "";
  const viaMount = `${M}/${BIG_KEY}`;
  const cacheFile = `${d.cachePath}/.${BUCKET}/${BIG_KEY}`;

  phase("daemon ready");
  const canDrop = dropCaches();
  if (!canDrop) console.log("note: cannot write /proc/sys/vm/drop_caches (not root?): 'dropped' figures are page-cache hot");

  // ls -l of 10,000 objects: first listing (LIST pages from S3), then again (index, kernel caches).
  const ls1 = await sh(`ls -l '${M}/many' | wc -l`);
  const ls2 = await sh(`ls -l '${M}/many' | wc -l`);
  const listed = Number(ls1.out.trim()) - 1; // minus the "total" line

  phase("listed");
  // Cold: nothing in bucketfs' cache.
  dropCaches();
  const cold = await readRate(viaMount, BIG_MIB);
  phase("cold read done");
  const got = (await sh(`sha256sum '${viaMount}'`)).out.split(" ")[0];
  if (got !== sha) throw new Error(`content mismatch: ${got} != ${sha}`);

  phase("sha256 checked");
  // Warm = in bucketfs' cache. From disk (page cache dropped), through the mount and directly.
  dropCaches();
  const warmMountDisk = await readRate(viaMount, BIG_MIB);
  dropCaches();
  const directDisk = await readRate(cacheFile, BIG_MIB);
  // And with the page cache hot (read each twice, keep the second).
  await readRate(viaMount, BIG_MIB);
  const warmMountHot = await readRate(viaMount, BIG_MIB);
  await readRate(cacheFile, BIG_MIB);
  const directHot = await readRate(cacheFile, BIG_MIB);

  phase("reads done");
  console.log("");
  console.log(`bucketfs read benchmark (${BIG_MIB} MiB object, MinIO on loopback, dd bs=1M, wall time)`);
  console.log(`  cold read through the mount (S3 -> cache -> reader)       ${fmt(cold)} MiB/s`);
  console.log(`  warm read through the mount, page cache dropped (disk)    ${fmt(warmMountDisk)} MiB/s`);
  console.log(`  cache file read directly, page cache dropped (disk)       ${fmt(directDisk)} MiB/s`);
  console.log(`  warm read through the mount, page cache hot               ${fmt(warmMountHot)} MiB/s`);
  console.log(`  cache file read directly, page cache hot                  ${fmt(directHot)} MiB/s`);
  console.log(`  ls -l of a ${listed}-object directory: first ${ls1.ms.toFixed(0)} ms (LIST from S3), again ${ls2.ms.toFixed(0)} ms`);
  if (listed !== COUNT) throw new Error(`ls -l listed ${listed} entries, expected ${COUNT}`);
  phase("stopping");
  const code = await d.stop("SIGTERM");
  if (code !== 0) throw new Error(`daemon exited ${code}\n${d.log()}`);
} finally {
  if (d) {
    await d.cleanup();
    removeDir(d.dir);
  }
  await server.stop();
  rmSync(work, { recursive: true, force: true });
}
// The daemon helper's stop() leaves a long timer pending; do not wait for it.
process.exit(0);
