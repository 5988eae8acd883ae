/**
 * Read-path A/B: this checkout's bucketfs against another checkout (the "before"), with the
 * two daemons alternated rep by rep in one run on one MinIO, plus s3fs and the local disk as
 * references in the same reps. Per rep and system:
 *   - cold sequential read of one object (dd bs=1M; fresh mount, page cache dropped): MiB/s,
 *     daemon CPU per GiB, peak RSS, and the whole machine's CPU per GiB and busy share (every
 *     process: MinIO, the delay proxy, dd; a read at 100% busy is bound by this machine's CPU);
 *   - re-read with the page cache dropped (served from the daemon's cache file) and warm
 *     re-read (page cache warm): MiB/s and daemon CPU per GiB (bucketfs variants only);
 *   - N × 64 KiB objects read cold with `cat` (fresh mount): seconds, daemon CPU ms per object.
 * For this checkout it also prints the FUSE request counters (READ count and largest READ).
 *
 * Run (root):  node_modules/.bin/bun bench/read-ab.ts --base /tmp/readbase [--reps 2] [--mib 1024] [--small 1000]
 *              [--no-s3fs] [--profile] [--checksum crc32|crc32c|crc64nvme]   (the big object's; none: multipart ETag)
 *              [--checksum-type COMPOSITE|FULL_OBJECT] (default: COMPOSITE for crc32/crc32c, FULL_OBJECT for crc64nvme)
 *              [--latency 100] (ms of round-trip time added in front of MinIO, lib/server.ts) [--cold-only]
 *              (--cold-only: the cold read and its sha256 only, no re-reads and no small files)
 * Is: a measurement program (loopback only; everything it creates goes away). Is not: a test.
 */
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { TEST_ROOT } from "../test/helpers/s3server.ts";
import { s3tool } from "../test/helpers/s3tool.ts";
import { writeRandom } from "../test/helpers/files.ts";
import { startBenchServer } from "./lib/server.ts";
import { cleanupAllSync, mount, type Mounted, type SystemsContext } from "./lib/systems.ts";
import { abSamples, dropCaches, fmtNum, loadavg, MiB, sh, withUsage } from "./lib/util.ts";
import { fuseCountersPath, readFuseCounters } from "../src/service/fuse-counters.ts";

const REPO = resolve(import.meta.dir, "..");
const { values: argv } = parseArgs({
  options: {
    base: { type: "string" },
    reps: { type: "string", default: "2" },
    mib: { type: "string", default: "1024" },
    small: { type: "string", default: "1000" },
    "no-s3fs": { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    checksum: { type: "string" },
    "checksum-type": { type: "string" },
    latency: { type: "string" },
    "cold-only": { type: "boolean", default: false },
  },
});
if (!argv.base) throw new Error("--base <checkout of the 'before' version> is required");
const BASE = resolve(argv.base);
const REPS = Number(argv.reps);
const BIG = Number(argv.mib) * MiB;
const SMALL = Number(argv.small);
const BUCKET = "readab";
const BIG_KEY = "big.bin";
const LATENCY_MS = argv.latency === undefined ? undefined : Number(argv.latency.replace(/ms$/, ""));
if (LATENCY_MS !== undefined && !(LATENCY_MS >= 0)) throw new Error(`--latency: expected milliseconds, got ${argv.latency}`);
const COLD_ONLY = argv["cold-only"];

mkdirSync(TEST_ROOT, { recursive: true });
const workRoot = mkdtempSync(join(TEST_ROOT, "read-ab-"));
process.on("exit", () => {
  cleanupAllSync();
  rmSync(workRoot, { recursive: true, force: true });
});
for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => process.exit(130));

type Variant = "new" | "base" | "s3fs";
const samples = abSamples();
const put = samples.put;

async function dd(path: string): Promise<number> {
  const r = await sh(`dd if='${path}' of=/dev/null bs=1M 2>&1 >/dev/null | tail -1`, { timeoutS: 1800 });
  const got = Number(/^(\d+) bytes/.exec(r.out.trim())?.[1] ?? -1);
  if (got !== BIG) throw new Error(`dd read ${got} bytes of ${path}, expected ${BIG}`);
  return BIG / MiB / (r.ms / 1000);
}

async function withMount<T>(ctx: SystemsContext, v: Variant, fn: (m: Mounted) => Promise<T>): Promise<T> {
  // test/helpers/daemon.ts takes the daemon command from BUCKETFS_BIN at spawn time.
  if (v === "base") process.env.BUCKETFS_BIN = join(workRoot, "base.sh");
  else if (argv.profile) process.env.BUCKETFS_BIN = join(workRoot, "prof.sh");
  else delete process.env.BUCKETFS_BIN;
  const m = await mount(ctx, v === "s3fs" ? "s3fs" : "bucketfs", BUCKET);
  delete process.env.BUCKETFS_BIN;
  try {
    return await fn(m);
  } finally {
    await m.cleanup();
  }
}

async function main(): Promise<void> {
  writeFileSync(join(workRoot, "base.sh"), `#!/bin/sh\nexec '${process.execPath}' '${BASE}/src/cli/main.ts' "$@"\n`, { mode: 0o755 });
  const profDir = join(workRoot, "..", `read-ab-profiles-${Date.now()}`);
  if (argv.profile) {
    mkdirSync(profDir, { recursive: true });
    writeFileSync(join(workRoot, "prof.sh"), `#!/bin/sh\nexec '${process.execPath}' --cpu-prof --cpu-prof-md --cpu-prof-dir='${profDir}' '${REPO}/src/cli/main.ts' "$@"\n`, { mode: 0o755 });
  }
  console.log(`read A/B: new=${REPO} base=${BASE}, ${BIG / MiB} MiB object, ${SMALL} × 64 KiB, ${REPS} reps; load ${loadavg()}`);
  const bench = await startBenchServer(LATENCY_MS);
  console.log(bench.note);
  const ctx: SystemsContext = { server: bench.server, workRoot, bucketfsExtra: {}, bucketfsEnv: {} };
  try {
    const s3 = s3tool(bench.server);
    await s3.mkbucket(BUCKET);
    const local = join(workRoot, "local.bin");
    writeRandom(local, BIG);
    const localSha = (await sh(`sha256sum '${local}'`)).out.split(" ")[0];
    // Without --checksum the object is checked by its multipart ETag (MD5 of each part).
    const ck = argv.checksum as "crc32" | "crc32c" | "crc64nvme" | undefined;
    const ckType = argv["checksum-type"] as "COMPOSITE" | "FULL_OBJECT" | undefined;
    if (ckType !== undefined && (ck === undefined || !["COMPOSITE", "FULL_OBJECT"].includes(ckType))) throw new Error("--checksum-type: COMPOSITE or FULL_OBJECT, with --checksum");
    await s3.put(BUCKET, BIG_KEY, { file: local }, { multipart: true, partSize: 64 * MiB, ...(ck ? { checksum: ck } : {}), ...(ckType ? { checksumType: ckType } : {}) });
    if (!COLD_ONLY) await s3.putMany(BUCKET, { prefix: "small/obj-", count: SMALL, size: 64 * 1024, workers: 32 });
    // The added latency (when asked) is on from here: the data went in over the unshaped link.
    await bench.shape();
    const variants: Variant[] = argv["no-s3fs"] ? ["new", "base"] : ["new", "base", "s3fs"];
    for (let rep = 1; rep <= REPS; rep++) {
      const order = rep % 2 ? variants : [...variants.slice(0, 2).reverse(), ...variants.slice(2)];
      for (const v of order) {
        await withMount(ctx, v, async (m) => {
          dropCaches();
          const cold = await withUsage(m.pid, () => dd(`${m.root}/${BIG_KEY}`));
          put(v, "cold MiB/s", cold.r);
          put(v, "cold CPU s/GiB", cold.cpu / (BIG / 1024 / MiB));
          put(v, "cold peak RSS MiB", cold.rssMiB);
          put(v, "cold machine CPU s/GiB", cold.machineCpu / (BIG / 1024 / MiB));
          put(v, "cold machine busy %", cold.machineBusy * 100);
          let line = `rep ${rep} ${v}: cold ${fmtNum(cold.r)} MiB/s, ${fmtNum(cold.cpu / (BIG / 1024 / MiB), 2)} s/GiB, RSS ${fmtNum(cold.rssMiB)} MiB; machine ${fmtNum(cold.machineCpu / (BIG / 1024 / MiB), 2)} s/GiB, ${fmtNum(cold.machineBusy * 100)}% busy`;
          if (v !== "s3fs") {
            // The cache file must be complete before the re-reads (bucketfs finishes it in the background).
            const sum = await sh(`sha256sum '${m.root}/${BIG_KEY}'`, { timeoutS: 1800 });
            if (sum.out.split(" ")[0] !== localSha) throw new Error(`${v}: content differs`);
            if (COLD_ONLY) return void console.log(line);
            dropCaches();
            const dropped = await withUsage(m.pid, () => dd(`${m.root}/${BIG_KEY}`));
            const warm = await withUsage(m.pid, () => dd(`${m.root}/${BIG_KEY}`));
            put(v, "dropped re-read MiB/s", dropped.r);
            put(v, "dropped re-read CPU s/GiB", dropped.cpu / (BIG / 1024 / MiB));
            put(v, "warm re-read MiB/s", warm.r);
            put(v, "warm re-read CPU s/GiB", warm.cpu / (BIG / 1024 / MiB));
            line += `; dropped ${fmtNum(dropped.r)} MiB/s (${fmtNum(dropped.cpu, 2)} s); warm ${fmtNum(warm.r)} MiB/s (${fmtNum(warm.cpu, 2)} s)`;
            if (v === "new") {
              const c = readFuseCounters(fuseCountersPath({ cachePath: join(m.dir, "cache"), bucket: BUCKET }));
              if (c) line += `; READs ${c.requests["READ"] ?? 0}, largest ${c.maxReadSize}, passthrough ${c.passthrough.state} (${c.passthrough.opens} opens)`;
            }
          }
          console.log(line);
        });
        if (!COLD_ONLY) await withMount(ctx, v, async (m) => {
          dropCaches();
          const r = await withUsage(m.pid, () => sh(`cat '${m.root}'/small/* | wc -c`, { timeoutS: 1800 }));
          if (Number(r.r.out.trim()) !== SMALL * 64 * 1024) throw new Error(`${v}: small files: ${r.r.out.trim()} bytes`);
          put(v, "small s", r.r.ms / 1000);
          put(v, "small CPU ms/object", (r.cpu * 1000) / SMALL);
          put(v, "small peak RSS MiB", r.rssMiB);
          console.log(`rep ${rep} ${v}: ${SMALL} × 64 KiB cold ${fmtNum(r.r.ms / 1000, 2)} s, ${fmtNum((r.cpu * 1000) / SMALL, 2)} ms CPU/object`);
        });
      }
      dropCaches();
      const l = await dd(local);
      const lw = await dd(local);
      put("local", "dropped re-read MiB/s", l);
      put("local", "warm re-read MiB/s", lw);
      console.log(`rep ${rep} local: dropped ${fmtNum(l)} MiB/s, warm ${fmtNum(lw)} MiB/s; load ${loadavg()}`);
    }
  } finally {
    await bench.stop();
  }
  samples.print(5, 26);
  if (argv.profile) console.log(`profiles: ${readdirSync(profDir).map((f) => join(profDir, f)).join(" ")}`);
}

await main();
