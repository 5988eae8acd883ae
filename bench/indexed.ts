/**
 * Indexed access row (issue 21, item 3): what pipelines do to BAM/CRAM/VCF files through their
 * indexes, made synthetic. `--procs` processes (default 20), one after another in parallel
 * batches as a pipeline runs them, each read `--regions` 64 KiB regions (default 4) of one
 * `--mib` MiB object (default 1024) at offsets drawn from a fixed seed. Bytes fetched are the
 * GetObject answer bytes counted by a loopback proxy between the daemon and MinIO
 * (test/helpers/fault-proxy.ts), not timed; every region read is checked against the local copy.
 * The page cache is dropped before each round.
 *   - round 1, cold (fresh cache): bytes fetched against the 1 MiB blocks the regions touch;
 *     target ≤ 2×;
 *   - round 2, the same processes again on the same mount: target 0 bytes fetched;
 *   - round 3, the same again after a daemon restart over the same cache: target 0 bytes.
 *
 * Run (root):  node_modules/.bin/bun bench/indexed.ts [--mib 1024] [--procs 20] [--regions 4] [--seed 21]
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync } from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startS3Server, TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { startFaultProxy } from "../test/helpers/fault-proxy.ts";
import { daemonDir, removeDir, startDaemon, type DaemonHandle } from "../test/helpers/daemon.ts";
import { writeRandom } from "../test/helpers/files.ts";
import { dropCaches, fmtNum, loadavg, sh } from "./lib/util.ts";

const { values: argv } = parseArgs({
  options: {
    mib: { type: "string", default: "1024" },
    procs: { type: "string", default: "20" },
    regions: { type: "string", default: "4" },
    seed: { type: "string", default: "21" },
  },
});
const MiB = 1024 * 1024;
const SIZE = Number(argv.mib) * MiB;
const PROCS = Number(argv.procs);
const REGIONS = Number(argv.regions);
const REGION = 64 * 1024;
const BLOCK = MiB;
const BUCKET = "indexed";
const KEY = "aln/sample.bam";

/** mulberry32: the same offsets on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

mkdirSync(TEST_ROOT, { recursive: true });
const work = mkdtempSync(join(TEST_ROOT, "indexed-"));
const rand = rng(Number(argv.seed));
// Offsets aligned to 512 bytes (as BGZF block starts are arbitrary; an index points anywhere).
const plan = Array.from({ length: PROCS }, () =>
  Array.from({ length: REGIONS }, () => Math.floor((rand() * (SIZE - REGION)) / 512) * 512),
);
const touched = new Set<number>();
for (const p of plan) for (const off of p) for (let b = Math.floor(off / BLOCK); b <= Math.floor((off + REGION - 1) / BLOCK); b++) touched.add(b);

const server = await startS3Server();
const proxy = await startFaultProxy(server);
let d: DaemonHandle | undefined;
const dir = daemonDir("indexed");
try {
  const s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  const local = join(work, "sample.bam");
  writeRandom(local, SIZE);
  await s3.put(BUCKET, KEY, { file: local }, { multipart: true, partSize: 64 * MiB });
  const fd = openSync(local, "r");
  const want = plan.map((p) =>
    p.map((off) => {
      const b = Buffer.alloc(REGION);
      readSync(fd, b, 0, REGION, off);
      return createHash("sha256").update(b).digest("hex");
    }),
  );
  closeSync(fd);
  console.log(`indexed access: ${PROCS} processes × ${REGIONS} × 64 KiB of a ${SIZE / MiB} MiB object, seed ${argv.seed}: ` +
    `${touched.size} blocks of 1 MiB touched; load ${loadavg()}`);

  const round = async (name: string): Promise<number> => {
    dropCaches(); // the daemon's cache is measured, not the kernel's page cache
    const before = proxy.bodyBytes("GetObject");
    const path = `${d!.mnt[BUCKET]}/${KEY}`;
    const t0 = performance.now();
    const outs = await Promise.all(
      plan.map((p) =>
        sh(p.map((off) => `dd if='${path}' iflag=skip_bytes,count_bytes skip=${off} count=${REGION} bs=${REGION} status=none | sha256sum`).join("; "), { timeoutS: 600 }),
      ),
    );
    const s = (performance.now() - t0) / 1000;
    outs.forEach((o, i) => {
      const got = o.out.trim().split("\n").map((l) => l.split(" ")[0]);
      if (JSON.stringify(got) !== JSON.stringify(want[i])) throw new Error(`${name}: process ${i} read wrong bytes`);
    });
    const fetched = proxy.bodyBytes("GetObject") - before;
    console.log(`${name.padEnd(34)} fetched ${fmtNum(fetched / MiB, 1).padStart(7)} MiB = ${fmtNum(fetched / (touched.size * BLOCK), 2)}× the blocks touched (${touched.size} MiB); ${fmtNum(s, 2)} s`);
    return fetched;
  };
  const spec = [{ bucket: BUCKET }];
  const target = { ...server, endpoint: proxy.endpoint };
  d = await startDaemon(target, spec, { dir, env: { BUCKETFS_LOG_LEVEL: "info" } });
  const cold = await round("round 1, cold");
  const again = await round("round 2, same mount");
  if ((await d.stop()) !== 0) throw new Error(`daemon exit:\n${d.log()}`);
  d = await startDaemon(target, spec, { dir, env: { BUCKETFS_LOG_LEVEL: "info" } });
  const restarted = await round("round 3, after a restart");
  console.log(`\ntargets: round 1 ≤ 2× blocks touched: ${cold <= 2 * touched.size * BLOCK ? "met" : "NOT met"}; ` +
    `rounds 2 and 3 fetch 0 bytes: ${again === 0 && restarted === 0 ? "met" : "NOT met"}`);
  if ((await d.stop()) !== 0) throw new Error(`daemon exit:\n${d.log()}`);
  d = undefined;
} finally {
  await d?.cleanup();
  removeDir(dir);
  await proxy.stop();
  await server.stop();
  rmSync(work, { recursive: true, force: true });
}
process.exit(0);
