/**
 * Benchmark: the stop of the REAL daemon (`bun src/cli/main.ts`, via test/helpers/daemon.ts)
 * after a workdir of 1,000 × 64 KiB files plus 2 × 256 MiB files was written THROUGH THE
 * MOUNT, against a throwaway local MinIO (test/helpers/s3server.ts). Measures the wall time
 * from SIGTERM to process exit (unbind + FUSE unmount + upload with markers last) and the
 * resulting MiB/s, plus the upload phase alone as the daemon logs it, the daemon's peak RSS
 * during the stop (VmRSS sampled every 20 ms; and its lifetime peak, getrusage maxRSS) and its
 * CPU time during the stop (utime+stime at exit minus at SIGTERM; also per uploaded file). The
 * result is checked with the independent boto3 client (object count and bytes).
 *
 * Is: a measurement script (loopback only; everything it creates is removed at the end).
 * Is not: a test.
 *
 * Run:  node_modules/.bin/bun bench/stop-upload.ts
 * Env:  BENCH_SMALL (1000), BENCH_BIG (2), BENCH_BIG_MIB (256), BENCH_CONCURRENCY (config default 16),
 *       BENCH_RUNS (1; each run uses a fresh bucket and cache; the best is reported),
 *       BUCKETFS_BIN (another bucketfs command, e.g. a wrapper running an older checkout: A/B runs).
 * Rows of the issue-8 bench: `bun bench/stop-upload.ts` (2 × 256 MiB + 1,000 × 64 KiB) and
 * `BENCH_SMALL=10000 BENCH_BIG=0 bun bench/stop-upload.ts` (10,000 × 64 KiB).
 */
import { mkdirSync } from "node:fs";
import { removeDir, startDaemon, type BucketSpec } from "../test/helpers/daemon.ts";
import { startS3Server } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { writeRandom } from "../test/helpers/files.ts";
import { cpuSeconds, rssKiB } from "./lib/util.ts";

const MiB = 1024 * 1024;
const SMALL_COUNT = Number(process.env.BENCH_SMALL ?? 1000);
const SMALL_BYTES = 64 * 1024;
const BIG_COUNT = Number(process.env.BENCH_BIG ?? 2);
const BIG_BYTES = Number(process.env.BENCH_BIG_MIB ?? 256) * MiB;
const RUNS = Number(process.env.BENCH_RUNS ?? 1);
const CONCURRENCY = process.env.BENCH_CONCURRENCY;

const T0 = performance.now();
/** Phase timestamps on stderr (the figures go to stdout). */
const lap = (what: string): void => void process.stderr.write(`[${((performance.now() - T0) / 1000).toFixed(1)} s] ${what}\n`);

const totalBytes = SMALL_COUNT * SMALL_BYTES + BIG_COUNT * BIG_BYTES;
const totalFiles = SMALL_COUNT + BIG_COUNT + SMALL_COUNT / 10; // + one .exitcode per task dir
const server = await startS3Server();
lap(`${server.kind} ready at ${server.endpoint}`);
const s3 = s3tool(server);
const results: Array<{ stopS: number; mibps: number; uploadS: number; uploadRate: string; rssMiB: number; hwmMiB: number; cpuS: number }> = [];
try {
  for (let r = 0; r < RUNS; r++) {
    const bucket = `bench-stop-${r}`;
    await server.createBucket(bucket);
    const spec: BucketSpec = {
      bucket,
      workdir: `/${bucket}/work`,
      ...(CONCURRENCY ? { extra: { transfer_concurrency: CONCURRENCY } } : {}),
    };
    const d = await startDaemon(server, [spec], { env: { BUCKETFS_LOG_LEVEL: "info" } });
    lap("daemon ready");
    try {
      const wd = `${d.mnt[bucket]}/work`;
      const tw = performance.now();
      // Nextflow-like: 100 task dirs of 10 files each, an .exitcode per task, two big outputs.
      const taskDir = (t: number): string => `${wd}/${(t % 100).toString(16).padStart(2, "0")}/task${t}`;
      for (let i = 0; i < SMALL_COUNT; i++) {
        if (i % 10 === 0) mkdirSync(taskDir(i / 10), { recursive: true });
        writeRandom(`${taskDir(Math.floor(i / 10))}/out${i}.bin`, SMALL_BYTES);
      }
      for (let i = 0; i < BIG_COUNT; i++) writeRandom(`${wd}/big${i}.bin`, BIG_BYTES);
      for (let t = 0; t < SMALL_COUNT / 10; t++) writeRandom(`${taskDir(t)}/.exitcode`, 2);
      Bun.spawnSync(["sync"]);
      const writeS = (performance.now() - tw) / 1000;
      lap("workdir written; SIGTERM");

      const pid = d.proc.pid;
      const cpu0 = cpuSeconds(pid);
      let peakKiB = rssKiB(pid) ?? 0;
      const sampler = setInterval(() => {
        peakKiB = Math.max(peakKiB, rssKiB(pid) ?? 0);
      }, 20);
      const t0 = performance.now();
      d.proc.kill("SIGTERM");
      const code = await d.proc.exited;
      const stopS = (performance.now() - t0) / 1000;
      clearInterval(sampler);
      const usage = d.proc.resourceUsage();
      const cpuS = usage ? Number(usage.cpuTime.user + usage.cpuTime.system) / 1e6 - cpu0 : NaN;
      // Bun reports maxRSS in bytes (getrusage's KiB, converted; checked against VmRSS samples).
      const hwmMiB = usage ? usage.maxRSS / MiB : NaN;
      lap(`daemon exited ${code}`);
      const log = d.log();
      if (code !== 0) throw new Error(`daemon exited ${code}:\n${log}`);
      const m = /upload at stop: (\d+) uploaded \(([\d.]+ \w+) in ([\d.]+) s, ([\d.]+ \w+\/s)\)/.exec(log);
      if (!m) throw new Error(`no upload summary in the log:\n${log}`);

      const listed = (await s3.list(bucket, { prefix: "work/" })).objects;
      lap("listed with boto3");
      const bytes = listed.reduce((n, o) => n + o.size, 0);
      if (listed.length !== totalFiles || bytes !== totalBytes + 2 * (SMALL_COUNT / 10)) {
        throw new Error(`S3 has ${listed.length} objects / ${bytes} bytes, expected ${totalFiles} / ${totalBytes + 2 * (SMALL_COUNT / 10)}`);
      }
      const mibps = totalBytes / MiB / stopS;
      const rssMiB = peakKiB / 1024;
      results.push({ stopS, mibps, uploadS: Number(m[3]), uploadRate: m[4] ?? "?", rssMiB, hwmMiB, cpuS });
      console.log(
        `run ${r + 1}: wrote ${totalFiles} files (${(totalBytes / MiB).toFixed(0)} MiB) through the mount in ${writeS.toFixed(1)} s; ` +
          `stop (SIGTERM -> exit 0) ${stopS.toFixed(2)} s = ${mibps.toFixed(0)} MiB/s; ` +
          `upload phase per daemon log: ${m[1]} files, ${m[2]} in ${m[3]} s, ${m[4]}; ` +
          `daemon during the stop: peak RSS ${rssMiB.toFixed(0)} MiB (lifetime peak ${hwmMiB.toFixed(0)} MiB), CPU ${cpuS.toFixed(2)} s ` +
          `= ${((cpuS * 1000) / totalFiles).toFixed(2)} ms per file; verified in S3 with boto3`,
      );
    } finally {
      await d.cleanup();
      removeDir(d.dir);
      lap("cleaned up");
    }
  }
  const best = results.reduce((a, b) => (b.stopS < a.stopS ? b : a));
  const maxRss = Math.max(...results.map((x) => x.rssMiB));
  console.log(
    `\nstop-upload: ${SMALL_COUNT} x 64 KiB + ${BIG_COUNT} x ${BIG_BYTES / MiB} MiB (+${SMALL_COUNT / 10} markers), ` +
      `concurrency ${CONCURRENCY ?? "16 (default)"}, ${server.kind}, ${navigator.hardwareConcurrency} CPUs: ` +
      `stop ${best.stopS.toFixed(2)} s, ${best.mibps.toFixed(0)} MiB/s end to end (best of ${results.length}); ` +
      `daemon peak RSS during the stop ${maxRss.toFixed(0)} MiB (max of runs), CPU ${best.cpuS.toFixed(2)} s = ` +
      `${((best.cpuS * 1000) / totalFiles).toFixed(2)} ms per file (best run)`,
  );
  console.log(`(phase times on stderr; single runs vary with machine load: BENCH_RUNS=3 for best of 3)`);
} finally {
  await server.stop();
  lap("server stopped");
}
