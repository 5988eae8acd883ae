/**
 * Scale rows: how each metadata-heavy cost of bucketfs grows with the number of objects.
 * For each count N (default 1,000 / 10,000 / 100,000), on one MinIO on loopback, with the real
 * daemon (test/helpers/daemon.ts):
 *   - `ls -l` of a directory of N objects: cold (fresh mount: LIST pages from S3) and warm;
 *   - the stop upload of a workdir of N × 4 KiB files written through the mount (SIGTERM → exit,
 *     every object then checked in S3 with boto3);
 *   - the workdir prefetch of those N files at the next start (spawn → ready, files counted);
 *   - the stop after that prefetch (nothing changed: the walk, the record compared with the last);
 *   - the start-up sweep of a read cache holding N files (cache files and index rows laid
 *     down as a run leaves them, then spawn → ready).
 * Each: wall time, daemon CPU, daemon peak RSS (VmRSS sampled every 20 ms), and the per-object
 * cost against the smallest N (a curve is linear or better when that ratio stays ≤ ~1).
 * Targets: every curve linear or better; RSS ≤ 300 MiB during the 100k prefetch and upload.
 *
 * Run (root):  node_modules/.bin/bun bench/scale.ts [--counts 1000,10000,100000] [--rows ls,workdir,sweep] [--out FILE.md]
 *              (--rows picks groups: `--rows workdir` runs only the stop upload and prefetch rows)
 *              (bench/run.ts --scale runs it after its tests; the default run skips it: the
 *              100k rows put 200,000 objects and take minutes)
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { Database } from "bun:sqlite";
import { TEST_ROOT, startS3Server, type S3Server } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { daemonDir, removeDir, startDaemon, type BucketSpec, type DaemonHandle } from "../test/helpers/daemon.ts";
import { cpuSeconds, fmtNum, loadavg, rssKiB, sh } from "./lib/util.ts";

const { values: argv } = parseArgs({
  options: { counts: { type: "string", default: "1000,10000,100000" }, rows: { type: "string", default: "ls,workdir,sweep" }, out: { type: "string" } },
});
/** Which groups of rows run: `ls` (ls -l cold/warm), `workdir` (stop upload, then prefetch), `sweep` (start with N cached files). */
const ROWS = new Set(argv.rows!.split(",").map((s) => s.trim()));
for (const r of ROWS) if (!["ls", "workdir", "sweep"].includes(r)) throw new Error(`--rows: unknown group ${JSON.stringify(r)} (ls, workdir, sweep)`);
const COUNTS = argv.counts!.split(",").map((s) => Number(s.trim())).filter((n) => n > 0).sort((a, b) => a - b);
const FILE_BYTES = 4096;
const PER_DIR = 100;
const ENV = { BUCKETFS_LOG_LEVEL: "info" };

mkdirSync(TEST_ROOT, { recursive: true });
type Sample = { s: number; cpu: number; rssMiB: number };
const rows: Record<string, Record<number, Sample>> = {};
const record = (row: string, n: number, x: Sample): void => {
  (rows[row] ??= {})[n] = x;
  console.log(`${row.padEnd(30)} N=${String(n).padStart(6)}: ${fmtNum(x.s, 2)} s, CPU ${fmtNum(x.cpu, 2)} s, peak RSS ${fmtNum(x.rssMiB)} MiB; load ${loadavg()}`);
};

/** Peak VmRSS of `pid` while `fn` runs, and the daemon CPU it took. */
async function usage<T>(pid: number, fn: () => Promise<T>): Promise<{ r: T } & Sample> {
  const c0 = cpuSeconds(pid);
  let peak = rssKiB(pid) ?? 0;
  const timer = setInterval(() => (peak = Math.max(peak, rssKiB(pid) ?? 0)), 20);
  const t0 = performance.now();
  try {
    const r = await fn();
    return { r, s: (performance.now() - t0) / 1000, cpu: cpuSeconds(pid) - c0, rssMiB: Math.max(peak, rssKiB(pid) ?? 0) / 1024 };
  } finally {
    clearInterval(timer);
  }
}

/** Spawn the daemon and wait for "ready", sampling its RSS from the start: the start-up's cost. */
async function timedStart(server: S3Server, spec: BucketSpec, dir?: string): Promise<{ d: DaemonHandle } & Sample> {
  const t0 = performance.now();
  const d = await startDaemon(server, [spec], { env: ENV, noWait: true, ...(dir ? { dir } : {}) });
  const pid = d.proc.pid;
  let peak = 0;
  const deadline = Date.now() + 1800_000;
  let cpu = 0;
  for (;;) {
    peak = Math.max(peak, rssKiB(pid) ?? 0);
    cpu = cpuSeconds(pid) || cpu;
    if (/\bready: /.test(d.log())) break;
    if (d.proc.exitCode !== null || Date.now() > deadline) {
      await d.cleanup();
      throw new Error(`bucketfs did not start:\n${d.log()}`);
    }
    await Bun.sleep(20);
  }
  return { d, s: (performance.now() - t0) / 1000, cpu: cpuSeconds(pid) || cpu, rssMiB: peak / 1024 };
}

/** SIGTERM and wait: the stop's time, CPU (from the exit's rusage) and peak RSS. */
async function timedStop(d: DaemonHandle): Promise<Sample> {
  const pid = d.proc.pid;
  const c0 = cpuSeconds(pid);
  let peak = rssKiB(pid) ?? 0;
  const timer = setInterval(() => (peak = Math.max(peak, rssKiB(pid) ?? 0)), 20);
  const t0 = performance.now();
  d.proc.kill("SIGTERM");
  const code = await d.proc.exited;
  const s = (performance.now() - t0) / 1000;
  clearInterval(timer);
  if (code !== 0) throw new Error(`daemon exited ${code}:\n${d.log().slice(-4000)}`);
  const u = d.proc.resourceUsage();
  const cpu = u ? Number(u.cpuTime.user + u.cpuTime.system) / 1e6 - c0 : NaN;
  await d.cleanup();
  return { s, cpu, rssMiB: peak / 1024 };
}

const dirOf = (i: number): string => `d${String(Math.floor(i / PER_DIR)).padStart(4, "0")}`;

async function main(): Promise<void> {
  console.log(`scale rows: N = ${COUNTS.join(", ")}; load ${loadavg()}`);
  const server = await startS3Server();
  const s3 = s3tool(server);
  try {
    for (const n of COUNTS) {
      // --- ls -l of N objects (the sweep rows use this bucket too) ---
      const lsBucket = `scale-ls-${n}`;
      if (ROWS.has("ls") || ROWS.has("sweep")) {
        await s3.mkbucket(lsBucket);
        await s3.putMany(lsBucket, { prefix: "many/o-", count: n, size: 100, workers: 32 });
      }
      if (ROWS.has("ls")) {
        const { d } = await timedStart(server, { bucket: lsBucket });
        try {
          const m = d.mnt[lsBucket];
          for (const [row, expectCold] of [["ls -l, cold", true], ["ls -l, warm", false]] as const) {
            const x = await usage(d.proc.pid, () => sh(`ls -l '${m}/many' | wc -l`, { timeoutS: 1800 }));
            if (Number(x.r.out.trim()) !== n + 1) throw new Error(`ls -l listed ${x.r.out.trim()} lines, expected ${n + 1} (${expectCold ? "cold" : "warm"})`);
            record(row, n, x);
          }
          await timedStop(d);
        } finally {
          await d.cleanup();
          removeDir(d.dir);
        }
      }

      // --- stop upload of N files, then their prefetch at the next start ---
      const wdBucket = `scale-wd-${n}`;
      const spec: BucketSpec = { bucket: wdBucket, workdir: `/${wdBucket}/work` };
      if (ROWS.has("workdir")) await s3.mkbucket(wdBucket);
      if (ROWS.has("workdir")) {
        const { d } = await timedStart(server, spec);
        try {
          const wd = `${d.mnt[wdBucket]}/work`;
          const body = Buffer.alloc(FILE_BYTES, 7);
          for (let i = 0; i < n; i++) {
            if (i % PER_DIR === 0) mkdirSync(`${wd}/${dirOf(i)}`, { recursive: true });
            writeFileSync(`${wd}/${dirOf(i)}/f${i}`, body);
          }
          Bun.spawnSync(["sync"]);
          record("workdir stop upload", n, await timedStop(d));
        } finally {
          await d.cleanup();
          removeDir(d.dir);
        }
        const listed = (await s3.list(wdBucket, { prefix: "work/" })).objects.filter((o) => !o.key.endsWith("/"));
        const files = listed.filter((o) => /\/f\d+$/.test(o.key));
        if (files.length !== n) throw new Error(`S3 has ${files.length} workdir files, expected ${n}`);
      }
      if (ROWS.has("workdir")) {
        const start = await timedStart(server, spec);
        try {
          const got = await sh(`find '${start.d.mnt[wdBucket]}/work' -type f -name 'f*' | wc -l`, { timeoutS: 1800 });
          if (Number(got.out.trim()) !== n) throw new Error(`prefetched ${got.out.trim()} files, expected ${n}`);
          record("workdir prefetch (start)", n, start);
          // The stop after the prefetch uploads nothing, but walks N files and writes (or skips) the record.
          record("workdir stop, nothing changed", n, await timedStop(start.d));
        } finally {
          await start.d.cleanup();
          removeDir(start.d.dir);
        }
      }

      // --- start-up sweep of a read cache with N files ---
      if (ROWS.has("sweep")) {
        const dir = daemonDir("sweep");
        try {
          const first = await timedStart(server, { bucket: lsBucket }, dir);
          await timedStop(first.d);
          const base = `${dir}/cache/.${lsBucket}`;
          const db = new Database(`${dir}/cache/.${lsBucket}.index`);
          const body = Buffer.alloc(1024, 3);
          const now = Date.now();
          const putCached = db.query("INSERT OR REPLACE INTO meta_cached (key, etag, size, mtime_ms, mode, fetched_ms) VALUES (?1, 'e', ?2, ?3, NULL, ?3)");
          const putLru = db.query("INSERT OR REPLACE INTO cache_lru (key, size, read_ms) VALUES (?1, ?2, ?3)");
          db.transaction(() => {
            for (let i = 0; i < n; i++) {
              const key = `sweep/${dirOf(i)}/f${i}`;
              if (i % PER_DIR === 0) mkdirSync(`${base}/sweep/${dirOf(i)}`, { recursive: true });
              writeFileSync(`${base}/${key}`, body);
              putCached.run(key, body.length, now);
              putLru.run(key, body.length, now);
            }
          })();
          db.close();
          Bun.spawnSync(["sync"]);
          const start = await timedStart(server, { bucket: lsBucket }, dir);
          const kept = Number((await sh(`find '${base}/sweep' -type f | wc -l`)).out.trim());
          if (kept !== n) throw new Error(`the sweep left ${kept} of ${n} valid cache files`);
          record("start with N cached files", n, start);
          await timedStop(start.d);
        } finally {
          removeDir(dir);
        }
      }
    }
  } finally {
    await server.stop();
  }

  const n0 = COUNTS[0]!;
  const lines = [
    `| row | ${COUNTS.map((n) => `N = ${n.toLocaleString("en")}`).join(" | ")} | per object at the largest N / at N = ${n0.toLocaleString("en")} (time, CPU) |`,
    `|---|${COUNTS.map(() => "---:").join("|")}|---:|`,
  ];
  for (const [row, byN] of Object.entries(rows)) {
    const cells = COUNTS.map((n) => (byN[n] ? `${fmtNum(byN[n]!.s, 2)} s, CPU ${fmtNum(byN[n]!.cpu, 2)} s, ${fmtNum(byN[n]!.rssMiB)} MiB` : "–"));
    const big = COUNTS[COUNTS.length - 1]!;
    const a = byN[n0];
    const b = byN[big];
    const ratio = a && b && big !== n0 && a.s > 0 && a.cpu > 0 ? `${fmtNum(b.s / big / (a.s / n0), 2)}×, ${fmtNum(b.cpu / big / (a.cpu / n0), 2)}×` : "–";
    lines.push(`| ${row} | ${cells.join(" | ")} | ${ratio} |`);
  }
  const table = lines.join("\n");
  console.log(`\n${table}\n(time, daemon CPU, daemon peak RSS; start rows include the daemon's own start-up, ~0.3 s of CPU)`);
  if (argv.out) writeFileSync(argv.out, `${table}\n`);
}

await main();
process.exit(0);
