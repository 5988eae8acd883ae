/**
 * The core of the product once per libfuse generation users run: the machine's own (3.14)
 * and each release built by scripts/build-libfuse.sh into .build/libfuse/<version>/ (3.3.0,
 * 3.10.5, 3.17.4, 3.18.1), loaded with BUCKETFS_LIBFUSE (3.18.1: found by its soname
 * libfuse3.so.4 on LD_LIBRARY_PATH, as on a system that ships it), default config. Per version:
 * start and mount, listing, a cold read (fetched whole at open), the re-read with passthrough where this library,
 * kernel and privileges allow it (the daemon sees 0 READs) or through the daemon with the
 * reason in `status --json`, a streamed cold read (24 MiB: READs reach the daemon while it is
 * fetched, answered with fd-backed buffers), a workdir write, SIGTERM (exit 0, the file in S3 per boto3),
 * nothing left mounted. Then, per passthrough route (custom I/O on 3.14, libfuse's API on
 * 3.17+), a kernel that refuses the backing file (the cache on overlayfs: ELOOP): passthrough
 * goes off with the reason in `status --json`, and reads are served by the daemon, same bytes.
 * A version whose build is absent is skipped, with the reason in the test's name. The full
 * suite runs on the machine's libfuse only.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { release } from "node:os";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { daemonDir, removeDir, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { writeRandom } from "../helpers/files.ts";
import { waitStatus, type BucketJson } from "../helpers/status.ts";
import { MAX_READ_BYTES, type FuseCounters } from "../../src/fuse/session.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const MiB = 1024 * 1024;
const TIMEOUT = 180_000;

interface Row {
  /** What the daemon must report as fuse_pkgversion(). */
  version: string;
  /** BUCKETFS_LIBFUSE, or undefined for the machine's libfuse3.so.3. */
  lib: string | undefined;
  /** Put the library's directory on LD_LIBRARY_PATH instead of naming it. */
  bySoname?: boolean;
  /** Why this row is skipped (its build is absent). */
  skip?: string;
}

function systemVersion(): string {
  const r = Bun.spawnSync(["pkg-config", "--modversion", "fuse3"]);
  return r.exitCode === 0 ? r.stdout.toString().trim() : "3.14.0";
}

const BUILT = ["3.3.0", "3.10.5", "3.17.4", "3.18.1"];
const ROWS: Row[] = [
  { version: systemVersion(), lib: undefined },
  ...BUILT.map((v): Row => {
    const lib = `${REPO}/.build/libfuse/${v}/lib/libfuse3.so`;
    return existsSync(lib) ? { version: v, lib, bySoname: v === "3.18.1" } : { version: v, lib, skip: `.build/libfuse/${v} not built (scripts/build-libfuse.sh)` };
  }),
];
for (const r of ROWS) if (r.skip) console.warn(`libfuse-matrix: skipping libfuse ${r.version}: ${r.skip}`);

/** Passthrough needs libfuse 3.14+ (3.13 has custom I/O but was never measured), FUSE 7.40 (Linux 6.9+) and root. */
function passthroughExpected(version: string): boolean {
  const [maj, min] = version.split(".").map(Number) as [number, number];
  const [kmaj, kmin] = release().split(".").map(Number) as [number, number];
  const kernelOk = kmaj > 6 || (kmaj === 6 && kmin >= 9);
  return maj === 3 && min >= 14 && kernelOk && process.getuid?.() === 0;
}

let server: S3Server;
let s3: S3Tool;
let scratch: string;
const FILES: Record<string, string> = {};
const handles = new Set<DaemonHandle>();

function sha256(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

async function run(cmd: string): Promise<string> {
  const p = Bun.spawn(["timeout", "-k", "5", "60", "bash", "-c", cmd], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0) throw new Error(`${cmd}: exit ${code}: ${err}`);
  return out;
}

type Fuse = FuseCounters & { pid: number };

/** The daemon's FUSE status once it has answered `releases` RELEASEs (read through `status --json`). */
async function fuseAfter(d: DaemonHandle, bucket: string, releases: number): Promise<Fuse> {
  const fuseOf = (b: BucketJson) => b.fuse as Fuse | null | undefined;
  const b = await waitStatus(d.configPath, bucket, (x) => (fuseOf(x)?.requests["RELEASE"] ?? 0) >= releases, `${releases} RELEASEs`, 30_000);
  return fuseOf(b)!;
}

function mountedUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4] ?? "")
    .filter((p) => p === dir || p.startsWith(dir + "/"));
}

beforeAll(async () => {
  if (ROWS.every((r) => r.skip)) return;
  server = await startS3Server();
  s3 = s3tool(server);
  mkdirSync(TEST_ROOT, { recursive: true });
  scratch = mkdtempSync(join(TEST_ROOT, "libfuse-matrix-"));
  // stream/ is apart from data/ so that no read-ahead of data/ fetches it before it is read.
  for (const [key, size] of [["data/a.bin", 3 * MiB + 17], ["data/b.txt", 1000], ["data/sub/c.bin", 70_000], ["stream/big.bin", 24 * MiB + 5]] as const) {
    const f = join(scratch, key.replaceAll("/", "_"));
    writeRandom(f, size);
    FILES[key] = sha256(f);
  }
}, TIMEOUT);

afterAll(async () => {
  for (const h of handles) await h.cleanup();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, TIMEOUT);

describe("libfuse matrix: the core per libfuse version", () => {
  for (const row of ROWS) {
    const name = `libfuse ${row.version}${row.lib ? "" : " (this machine's)"}`;
    const title = row.skip ? `${name}: SKIPPED, ${row.skip}` : `${name}: mount, listing, cold read, re-read, workdir write, stop upload, unmount`;
    test.skipIf(row.skip !== undefined)(title, async () => {
      const bucket = `lf-${row.version.replaceAll(".", "-")}`;
      await s3.mkbucket(bucket);
      // The large ones as boto3 makes large files (multipart), the others plain.
      for (const key of Object.keys(FILES)) {
        await s3.put(bucket, key, { file: join(scratch, key.replaceAll("/", "_")) }, { multipart: key.endsWith("a.bin") || key.endsWith("big.bin") });
      }
      const dir = daemonDir(bucket);
      const t0 = Date.now();
      const env: Record<string, string> = !row.lib ? {} : row.bySoname ? { LD_LIBRARY_PATH: dirname(row.lib) } : { BUCKETFS_LIBFUSE: row.lib };
      const d = await startDaemon(server, [{ bucket, workdir: `/${bucket}/work` }], { dir, env });
      handles.add(d);
      const ms: Record<string, number> = { start: Date.now() - t0 };
      let t = Date.now();
      const lap = (what: string) => {
        ms[what] = Date.now() - t;
        t = Date.now();
      };
      try {
        const mnt = d.mnt[bucket]!;
        // Listing.
        expect((await run(`ls ${mnt}/data`)).split("\n").filter(Boolean)).toEqual(["a.bin", "b.txt", "sub"]);
        expect((await run(`ls ${mnt}/data/sub`)).trim()).toBe("c.bin");
        lap("listing");
        // Cold read (fetched during the open), then the re-read from the cache.
        expect((await run(`sha256sum ${mnt}/data/a.bin`)).split(" ")[0]).toBe(FILES["data/a.bin"]!);
        lap("coldRead");
        const cold = await fuseAfter(d, bucket, 1);
        expect(cold.libfuse.version).toBe(row.version);
        if (row.bySoname) expect(cold.libfuse.path).toBe("libfuse3.so.4");
        t = Date.now();
        expect((await run(`sha256sum ${mnt}/data/a.bin ${mnt}/data/sub/c.bin`)).split("\n").map((l) => l.split(" ")[0])).toEqual([
          FILES["data/a.bin"]!, FILES["data/sub/c.bin"]!, "",
        ]);
        lap("reRead");
        const warm = await fuseAfter(d, bucket, 3);
        const reads = warm.requests["READ"] ?? 0;
        if (passthroughExpected(row.version)) {
          expect({ state: warm.passthrough.state, reason: warm.passthrough.reason }).toEqual({ state: "on", reason: undefined as unknown as string });
          expect(warm.passthrough.opens).toBe(3);
          expect(reads).toBe(0);
          expect(warm.libfuse.passthroughRoute).toBe(Number(row.version.split(".")[1]) >= 17 ? "api" : "custom-io");
        } else {
          expect(warm.passthrough.state).toBe("off");
          expect(warm.passthrough.reason ?? "").not.toBe("");
          expect(reads).toBeGreaterThan(0);
        }
        // Streamed cold read: READs reach the daemon while the object is fetched.
        t = Date.now();
        expect((await run(`dd if=${mnt}/stream/big.bin bs=1M status=none | sha256sum`)).split(" ")[0]).toBe(FILES["stream/big.bin"]!);
        lap("streamedRead");
        const streamed = await fuseAfter(d, bucket, 4);
        const streamReads = (streamed.requests["READ"] ?? 0) - reads;
        expect(streamReads).toBeGreaterThan(0);
        expect(streamed.maxReadSize).toBeLessThanOrEqual(MAX_READ_BYTES);
        // No flush op: libfuse answers the first FLUSH ENOSYS and the kernel sends no more (the
        // four closes above returned 0: sha256sum and dd fail on a close error).
        expect(streamed.requests["FLUSH"] ?? 0).toBeLessThanOrEqual(1);
        // Workdir write through the bind mount.
        await run(`mkdir -p ${mnt}/work/t && head -c 200000 /dev/urandom > ${mnt}/work/t/out.bin && echo done > ${mnt}/work/t/.exitcode`);
        const outSha = (await run(`sha256sum ${mnt}/work/t/out.bin`)).split(" ")[0];
        // SIGTERM: uploaded, exit 0, nothing left mounted.
        t = Date.now();
        expect(await d.stop()).toBe(0);
        lap("stopUpload");
        handles.delete(d);
        expect((await s3.get(bucket, "work/t/out.bin")).sha256).toBe(outSha ?? "x");
        expect(new TextDecoder().decode(await s3.getBytes(bucket, "work/t/.exitcode"))).toBe("done\n");
        expect(mountedUnder(dir)).toEqual([]);
        console.log(`libfuse-matrix: ${row.version}: ms ${JSON.stringify(ms)}, passthrough ${warm.passthrough.state}` +
          `${warm.passthrough.reason ? ` (${warm.passthrough.reason})` : ""}, READs ${reads}, route ${warm.libfuse.passthroughRoute}, ` +
          `streamed read: ${streamReads} READs, largest ${streamed.maxReadSize / 1024} KiB`);
      } finally {
        await d.cleanup();
        removeDir(dir);
      }
    }, TIMEOUT);
  }
});

describe("libfuse matrix: a refused backing file turns passthrough off, reads go on", () => {
  // One row per passthrough route: the machine's 3.14 (custom I/O) and 3.17.4 (libfuse's API).
  for (const row of ROWS.filter((r) => r.version === ROWS[0]!.version || r.version === "3.17.4")) {
    const name = `libfuse ${row.version}`;
    const skip = row.skip ?? (passthroughExpected(row.version) ? undefined : "passthrough not available here (kernel < 6.9 or not root)");
    const title = skip ? `${name}: SKIPPED, ${skip}` : `${name}: cache on overlayfs -> ELOOP, passthrough off with the reason, bytes served by the daemon`;
    test.skipIf(skip !== undefined)(title, async () => {
      const bucket = `lf-eloop-${row.version.replaceAll(".", "-")}`;
      await s3.mkbucket(bucket);
      await s3.put(bucket, "data/a.bin", { file: join(scratch, "data_a.bin") });
      const dir = daemonDir(bucket);
      // The cache directory on overlayfs: the kernel refuses it as a backing file (stack depth).
      for (const sub of ["ovl-lower", "ovl-upper", "ovl-work", "cache"]) mkdirSync(join(dir, sub), { recursive: true });
      await run(`mount -t overlay overlay -o lowerdir=${dir}/ovl-lower,upperdir=${dir}/ovl-upper,workdir=${dir}/ovl-work ${dir}/cache`);
      let d: DaemonHandle | undefined;
      try {
        d = await startDaemon(server, [{ bucket }], { dir, env: row.lib ? { BUCKETFS_LIBFUSE: row.lib } : {} });
        handles.add(d);
        const mnt = d.mnt[bucket]!;
        expect((await run(`sha256sum ${mnt}/data/a.bin`)).split(" ")[0]).toBe(FILES["data/a.bin"]!);
        expect((await run(`sha256sum ${mnt}/data/a.bin`)).split(" ")[0]).toBe(FILES["data/a.bin"]!);
        const f = await fuseAfter(d, bucket, 2);
        expect(f.libfuse.version).toBe(row.version);
        expect(f.passthrough.state).toBe("off");
        expect(f.passthrough.reason ?? "").toMatch(/backing file refused \(ELOOP/);
        expect(f.passthrough.opens).toBe(0);
        expect(f.passthrough.backingFailures).toBe(1); // the first refusal switches it off for the mount
        expect(f.requests["READ"] ?? 0).toBeGreaterThan(0);
        expect(await d.stop()).toBe(0);
        handles.delete(d);
      } finally {
        await d?.cleanup();
        removeDir(dir);
      }
      expect(mountedUnder(dir)).toEqual([]);
    }, TIMEOUT);
  }
});
