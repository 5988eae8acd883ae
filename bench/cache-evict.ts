/**
 * Benchmark row: a cold read with eviction active (cache_size smaller than the data read)
 * against the same cold read with no cache limit. Target (issue 10): within 10 %.
 *
 * Puts COUNT objects of SIZE_MIB into a throwaway MinIO on loopback (boto3), then alternates
 * A (cache_size = LIMIT_MIB, so most of the read is evicted while it runs) and B (no byte
 * limit; the default free-space floor is far away) for ROUNDS rounds: AB, BA, AB, ...
 * Each run is a fresh daemon over an empty cache with the page cache dropped, and reads every
 * object once with `cat` (sequential, streamed path), then checks one object's sha256.
 * Reported: MiB/s by wall time (median), daemon CPU seconds per GiB read (median; it swings
 * less than throughput on a shared machine), evictions in A (from `status --json`).
 *
 * Is: a measurement script (loopback only; removes what it creates). Is not: a test.
 * Run:  node_modules/.bin/bun bench/cache-evict.ts    (as root: drops the page cache)
 * Env:  BENCH_EVICT_COUNT (default 24), BENCH_EVICT_SIZE_MIB (32), BENCH_EVICT_LIMIT_MIB (128),
 *       BENCH_EVICT_ROUNDS (3).
 */
import { mkdirSync } from "node:fs";
import { startS3Server, TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { bucketfsCommand, removeDir, startDaemon, type DaemonHandle } from "../test/helpers/daemon.ts";
import { cpuSeconds, dropCaches, median, sh } from "./lib/util.ts";

const COUNT = Number(process.env.BENCH_EVICT_COUNT ?? 24);
const SIZE_MIB = Number(process.env.BENCH_EVICT_SIZE_MIB ?? 32);
const LIMIT_MIB = Number(process.env.BENCH_EVICT_LIMIT_MIB ?? 128);
const ROUNDS = Number(process.env.BENCH_EVICT_ROUNDS ?? 3);
const BUCKET = "bench-evict";
const MiB = 1024 * 1024;
const TOTAL_MIB = COUNT * SIZE_MIB;

interface Sample {
  mibs: number;
  cpuPerGiB: number;
  evictions: number;
}

mkdirSync(TEST_ROOT, { recursive: true });
const server = await startS3Server();
let d: DaemonHandle | undefined;
try {
  const s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  const put = await s3.putMany(BUCKET, { prefix: "data/o", count: COUNT, size: SIZE_MIB * MiB, workers: 4 });
  const keys = put.map((p) => p.key).sort();
  const check = put.find((p) => p.key === keys[0])!;

  async function once(limit: boolean): Promise<Sample> {
    d = await startDaemon(server, [{ bucket: BUCKET, extra: limit ? { cache_size: `${LIMIT_MIB}M` } : {} }], {
      env: { BUCKETFS_LOG_LEVEL: "info" },
    });
    const M = d.mnt[BUCKET]!;
    dropCaches();
    const cpu0 = cpuSeconds(d.proc.pid);
    const r = await sh(keys.map((k) => `cat '${M}/${k}' > /dev/null`).join(" && "));
    const cpu = cpuSeconds(d.proc.pid) - cpu0;
    const sum = (await sh(`sha256sum '${M}/${check.key}'`)).out.split(" ")[0];
    if (sum !== check.sha256) throw new Error(`content mismatch for ${check.key}`);
    const st = await sh(`${bucketfsCommand().join(" ")} status --json --config '${d.configPath}'`);
    const evictions = (JSON.parse(st.out) as { buckets: { readCache: { evictions: number } }[] }).buckets[0]!.readCache.evictions;
    const code = await d.stop("SIGTERM");
    if (code !== 0) throw new Error(`daemon exited ${code}\n${d.log()}`);
    removeDir(d.dir);
    d = undefined;
    return { mibs: TOTAL_MIB / (r.ms / 1000), cpuPerGiB: cpu / (TOTAL_MIB / 1024), evictions };
  }

  const A: Sample[] = [];
  const B: Sample[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    // Alternate which goes first, so neither always follows the other's teardown.
    if (i % 2 === 0) {
      A.push(await once(true));
      B.push(await once(false));
    } else {
      B.push(await once(false));
      A.push(await once(true));
    }
    process.stderr.write(`round ${i + 1}: A ${A.at(-1)!.mibs.toFixed(0)} MiB/s, B ${B.at(-1)!.mibs.toFixed(0)} MiB/s\n`);
  }
  const a = median(A.map((s) => s.mibs));
  const b = median(B.map((s) => s.mibs));
  const ca = median(A.map((s) => s.cpuPerGiB));
  const cb = median(B.map((s) => s.cpuPerGiB));
  console.log(`cold read of ${COUNT} x ${SIZE_MIB} MiB (${TOTAL_MIB} MiB), ${ROUNDS} rounds A/B alternated, medians:`);
  console.log(`| row | MiB/s | daemon CPU s/GiB | evictions |`);
  console.log(`|---|---|---|---|`);
  console.log(`| A: cache_size = ${LIMIT_MIB}M (evicting) | ${a.toFixed(0)} | ${ca.toFixed(2)} | ${median(A.map((s) => s.evictions))} |`);
  console.log(`| B: no byte limit | ${b.toFixed(0)} | ${cb.toFixed(2)} | ${median(B.map((s) => s.evictions))} |`);
  console.log(`| A / B | ${(a / b).toFixed(2)} (target >= 0.90) | ${(ca / cb).toFixed(2)} | |`);
  console.log(`samples A: ${A.map((s) => `${s.mibs.toFixed(0)} MiB/s ${s.cpuPerGiB.toFixed(2)} s/GiB`).join("; ")}`);
  console.log(`samples B: ${B.map((s) => `${s.mibs.toFixed(0)} MiB/s ${s.cpuPerGiB.toFixed(2)} s/GiB`).join("; ")}`);
} finally {
  if (d) {
    await d.cleanup();
    removeDir(d.dir);
  }
  await server.stop();
}
process.exit(0);
