/**
 * Small-object A/B profile: this checkout's bucketfs against another checkout (the "before"),
 * alternated rep by rep in one run on one MinIO. N × 64 KiB objects read cold (fresh mount,
 * page cache dropped) with one reader (`cat dir/*`) and with 8 (`find | xargs -P 8 cat`), as
 * bench/run.ts's test 3 does. Per rep, system and reader count: seconds, daemon CPU ms per
 * object (and the kernel's share of it), S3 requests per object by API (MinIO's counters), FUSE requests per object by op
 * (the daemon's counters file) and, with --strace, the daemon's syscalls per object (fsync,
 * rename, pwrite, ...; strace slows the daemon, so those reps are not timed).
 *
 * Run (root):  node_modules/.bin/bun bench/small-ab.ts --base /tmp/base-checkout [--reps 3] [--small 1000]
 *              [--strace] [--profile]
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { startBenchServer } from "./lib/server.ts";
import { s3Requests, requestDelta } from "./lib/minio-metrics.ts";
import { cleanupAllSync, mount, type Mounted, type SystemsContext } from "./lib/systems.ts";
import { abSamples, dropCaches, fmtNum, loadavg, sh, withUsage } from "./lib/util.ts";
import { fuseCountersPath, readFuseCounters } from "../src/service/fuse-counters.ts";

const REPO = resolve(import.meta.dir, "..");
const { values: argv } = parseArgs({
  options: {
    base: { type: "string" },
    reps: { type: "string", default: "3" },
    small: { type: "string", default: "1000" },
    strace: { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
  },
});
if (!argv.base) throw new Error("--base <checkout of the 'before' version> is required");
const BASE = resolve(argv.base);
const REPS = Number(argv.reps);
const SMALL = Number(argv.small);
const SIZE = 64 * 1024;
const BUCKET = "smallab";

mkdirSync(TEST_ROOT, { recursive: true });
const workRoot = mkdtempSync(join(TEST_ROOT, "small-ab-"));
process.on("exit", () => {
  cleanupAllSync();
  rmSync(workRoot, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));

type Variant = "new" | "base";
const READERS = {
  one: (d: string) => `cat '${d}'/* | wc -c`,
  eight: (d: string) => `find '${d}' -type f -print0 | xargs -0 -P 8 -n 25 cat | wc -c`,
};
const samples = abSamples();
const put = samples.put;
const perObj = (m: Map<string, number> | Record<string, number>): string =>
  Object.entries(m instanceof Map ? Object.fromEntries(m) : m)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${fmtNum(n / SMALL, 2)}`)
    .join(", ");

function script(name: string, checkout: string, prefix: string): string {
  const p = join(workRoot, name);
  writeFileSync(p, `#!/bin/sh\nexec ${prefix} '${process.execPath}' '${checkout}/src/cli/main.ts' "$@"\n`, { mode: 0o755 });
  return p;
}

/** stime of `pid` (all threads) in seconds: the kernel's share of its CPU. */
function sysSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[12]) / 100;
  } catch {
    return 0;
  }
}

async function withMount<T>(ctx: SystemsContext, bin: string, fn: (m: Mounted) => Promise<T>): Promise<T> {
  process.env.BUCKETFS_BIN = bin; // test/helpers/daemon.ts reads it at spawn time
  const m = await mount(ctx, "bucketfs", BUCKET);
  delete process.env.BUCKETFS_BIN;
  try {
    return await fn(m);
  } finally {
    await m.cleanup();
  }
}

async function main(): Promise<void> {
  const profDir = join(TEST_ROOT, `small-ab-profiles-${Date.now()}`);
  const bins: Record<Variant, string> = { new: script("new.sh", REPO, ""), base: script("base.sh", BASE, "") };
  if (argv.profile) {
    mkdirSync(profDir, { recursive: true });
    bins.new = script("new-prof.sh", REPO, "");
    writeFileSync(bins.new, `#!/bin/sh\nexec '${process.execPath}' --cpu-prof --cpu-prof-md --cpu-prof-dir='${profDir}' '${REPO}/src/cli/main.ts' "$@"\n`, { mode: 0o755 });
  }
  console.log(`small A/B: new=${REPO} base=${BASE}, ${SMALL} × 64 KiB, ${REPS} reps; load ${loadavg()}`);
  const bench = await startBenchServer(undefined);
  const ctx: SystemsContext = { server: bench.server, workRoot, bucketfsExtra: {}, bucketfsEnv: {} };
  try {
    const s3 = s3tool(bench.server);
    await s3.mkbucket(BUCKET);
    await s3.putMany(BUCKET, { prefix: "small/obj-", count: SMALL, size: SIZE, workers: 32 });
    for (let rep = 1; rep <= REPS; rep++) {
      const order: Variant[] = rep % 2 ? ["new", "base"] : ["base", "new"];
      for (const [rname, cmd] of Object.entries(READERS)) {
        for (const v of order) {
          await withMount(ctx, bins[v], async (m) => {
            dropCaches();
            const q0 = await s3Requests(bench.server);
            const s0 = sysSeconds(m.pid);
            const r = await withUsage(m.pid, () => sh(cmd(`${m.root}/small`), { timeoutS: 1800 }));
            const sys = sysSeconds(m.pid) - s0;
            const q = requestDelta(q0, await s3Requests(bench.server));
            if (Number(r.r.out.trim()) !== SMALL * SIZE) throw new Error(`${v}: ${r.r.out.trim()} bytes`);
            put(v, `${rname} s`, r.r.ms / 1000);
            put(v, `${rname} CPU ms/object`, (r.cpu * 1000) / SMALL);
            put(v, `${rname} of it kernel ms`, (sys * 1000) / SMALL);
            const c = readFuseCounters(fuseCountersPath({ cachePath: join(m.dir, "cache"), bucket: BUCKET }));
            console.log(
              `rep ${rep} ${v} ${rname}: ${fmtNum(r.r.ms / 1000, 2)} s, ${fmtNum((r.cpu * 1000) / SMALL, 2)} ms CPU/object; ` +
                `S3/object: ${perObj(q)}; FUSE/object: ${c ? perObj(c.requests) : "n/a"}; load ${loadavg()}`,
            );
          });
        }
      }
    }
    if (argv.strace) {
      for (const v of ["new", "base"] as Variant[]) {
        const out = join(workRoot, `strace-${v}.txt`);
        const traced = "fsync,fdatasync,rename,renameat,renameat2,openat,close,pwrite64,write,writev,statx,newfstatat,fstat,lstat,utimensat,mkdirat,ioctl,unlinkat,statfs";
        const bin = script(`${v}-strace.sh`, v === "new" ? REPO : BASE, `strace -f -qq -e trace=${traced} -o '${out}'`);
        await withMount(ctx, bin, async (m) => {
          dropCaches();
          await sh(READERS.eight(`${m.root}/small`), { timeoutS: 1800 });
        });
        const calls: Record<string, number> = {};
        for (const line of (await sh(`cat '${out}'`)).out.split("\n")) {
          const name = /^\d+\s+([a-z_0-9]+)\(/.exec(line)?.[1];
          if (name) calls[name] = (calls[name] ?? 0) + 1;
        }
        const keep = Object.keys(calls).sort((a, b) => calls[b]! - calls[a]!);
        console.log(`strace ${v} (8 readers, whole mount, syscalls per object): ${keep.map((k) => `${k} ${fmtNum(calls[k]! / SMALL, 2)}`).join(", ")}`);
      }
    }
  } finally {
    await bench.stop();
  }
  samples.print(5, 22);
  if (argv.profile) console.log(`profiles: ${readdirSync(profDir).map((f) => join(profDir, f)).join(" ")}`);
}

await main();
