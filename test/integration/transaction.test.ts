/**
 * The workdir transaction at daemon level: the real `bucketfs` process (test/helpers/daemon.ts),
 * real FUSE + bind mounts, a real S3 server (MinIO, test/helpers/s3server.ts), and every
 * claim about S3 checked with the independent boto3 client (test/helpers/s3tool.ts), never
 * with bucketfs' own S3 code.
 *
 * Shows (issue 3): a Nextflow-like task tree written THROUGH THE MOUNT is in S3 after SIGTERM
 * with the right bytes, mtime/mode metadata and markers last, non-regular entries skipped and
 * nothing deleted remotely; a restart prefetches it back and re-uploads nothing; a prefetch
 * failure aborts the start with nothing mounted; SIGKILL loses nothing (local changes survive
 * prefetch and reach S3 at the next start); a failed upload exits non-zero, holds the markers
 * back and the next start finishes it; a busy workdir does not hang the stop; `bucketfs sync`
 * and `bucketfs status` work while mounted. What bucketfs did is read from `bucketfs status
 * --json` (`workdir.lastUpload`, `lastPrefetch`, `pending`, `failures`, runs); only messages
 * that must name something (a key, a busy pid) are checked in the log.
 *
 * Engine-level cases (uploadWorkdir/prefetchWorkdir called directly) are in workdir.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, type BigIntStats } from "node:fs";
import { join } from "node:path";
import { bucketfsCommand, removeDir, sh, startDaemon, type BucketSpec, type DaemonHandle } from "../helpers/daemon.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type ListedObject, type S3Tool } from "../helpers/s3tool.ts";
import { regularFiles, sha256File } from "../helpers/files.ts";
import { statusJson, type BucketJson } from "../helpers/status.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const MiB = 1024 * 1024;
const SLOW = 300_000;
const WD = "work"; // workdir = /<bucket>/work, S3 prefix work/

let server: S3Server;
let s3: S3Tool;
let serverDir: string;
const handles: DaemonHandle[] = [];
const dirs: string[] = [];
const children: Array<ReturnType<typeof Bun.spawn>> = [];

beforeAll(async () => {
  mkdirSync(TEST_ROOT, { recursive: true });
  // A caller-supplied data dir, so server.stop() keeps the objects and restart() can bring them back.
  serverDir = mkdtempSync(join(TEST_ROOT, "tx-s3-"));
  server = await startS3Server({ dataDir: serverDir });
  s3 = s3tool(server);
}, 120_000);

afterAll(async () => {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch {
      /* gone */
    }
  }
  for (const h of handles) await h.cleanup();
  for (const d of dirs) removeDir(d);
  await server?.stop();
  if (serverDir && process.env.BUCKETFS_KEEP_TEST_DATA !== "1") rmSync(serverDir, { recursive: true, force: true });
}, 120_000);

// ---------------------------------------------------------------------------------------------
// helpers

function spec(bucket: string): BucketSpec {
  return { bucket, workdir: `/${bucket}/${WD}` };
}

async function start(buckets: BucketSpec[], dir?: string, opts: { expectFailure?: boolean; srv?: S3Server } = {}): Promise<DaemonHandle> {
  const d = await startDaemon(opts.srv ?? server, buckets, {
    ...(dir ? { dir } : {}),
    ...(opts.expectFailure ? { expectFailure: true } : {}),
  });
  handles.push(d);
  if (!dirs.includes(d.dir)) dirs.push(d.dir);
  return d;
}

/** Mount points at or below `dir` (from our own mount table). */
function mountsUnder(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => (l.split(" ")[4] ?? "").replace(/\\040/g, " "))
    .filter((p) => p === dir || p.startsWith(dir + "/"));
}

interface Stopped {
  code: number;
  ms: number;
  /** Mounts under the daemon dir right after the process exited (before the helper's cleanup). */
  mountsLeft: string[];
  log: string;
}

/** Signal the daemon, wait for it to exit by itself, record what it left, then let the helper tidy up. */
async function stopDaemon(d: DaemonHandle, signal: NodeJS.Signals = "SIGTERM", timeoutMs = 120_000): Promise<Stopped> {
  const t0 = performance.now();
  d.proc.kill(signal);
  const exited = await Promise.race([d.proc.exited.then(() => true), Bun.sleep(timeoutMs).then(() => false)]);
  const ms = performance.now() - t0;
  const mountsLeft = mountsUnder(d.dir);
  if (!exited) {
    await d.cleanup();
    throw new Error(`bucketfs did not exit within ${timeoutMs} ms after ${signal}\n${d.log()}`);
  }
  const code = await d.stop();
  return { code, ms, mountsLeft, log: d.log() };
}

/**
 * Objects under the workdir prefix, without bucketfs' own `.bucketfs/` folder (lease and commit
 * records, covered by many-nodes.test.ts): what the workdir's files became in S3.
 */
async function userObjects(bucket: string): Promise<ListedObject[]> {
  return (await s3.list(bucket, { prefix: `${WD}/` })).objects.filter((o) => !o.key.startsWith(`${WD}/.bucketfs/`));
}

/** Run a shell script; throw with its output when it fails. */
function run(script: string, timeoutMs = 120_000): string {
  const r = sh(`set -euo pipefail\n${script}`, timeoutMs);
  if (r.code !== 0) throw new Error(`shell failed (${r.code}):\n${script}\n--- stdout\n${r.out}\n--- stderr\n${r.err}`);
  return r.out;
}

/** `bucketfs <args>` as a separate process; stdout+stderr and exit code. */
function cli(args: string[], timeoutMs = 120_000): { code: number; out: string } {
  const r = Bun.spawnSync([...bucketfsCommand(), ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: timeoutMs });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}


function sha256(s: string): string {
  return new Bun.CryptoHasher("sha256").update(s).digest("hex");
}

/** Run `fn` over `items` with at most `n` at a time (each s3tool call is a python process). */
async function pool<T, R>(items: T[], n: number, fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}


/** The local workdir cache dir of a daemon (the bind source). */
function localWd(d: DaemonHandle, bucket: string): string {
  return `${d.cachePath}/.${bucket}/${WD}`;
}

/** st_mtime as the `mtime` metadata is written: seconds with nine fractional digits. */
function mtimeText(st: BigIntStats): string {
  const ns = st.mtimeNs;
  return `${ns / 1_000_000_000n}.${(ns % 1_000_000_000n).toString().padStart(9, "0")}`;
}

/**
 * Every file in `rels` (relative to the workdir) is in S3 under work/ with the bytes,
 * size, `mtime` and `mode` of the local copy in `root`.
 */
async function expectInS3(bucket: string, root: string, rels: string[]): Promise<void> {
  const rows = await pool(rels, 6, async (rel) => {
    const abs = join(root, rel);
    const st = lstatSync(abs, { bigint: true });
    const [head, got, localSha] = await Promise.all([s3.head(bucket, `${WD}/${rel}`), s3.get(bucket, `${WD}/${rel}`), sha256File(abs)]);
    return { rel, st, head, got, localSha };
  });
  for (const { rel, st, head, got, localSha } of rows) {
    expect({ rel, exists: head !== null }).toEqual({ rel, exists: true });
    if (!head) continue;
    expect({ rel, size: head.size, sha: got.sha256 }).toEqual({ rel, size: Number(st.size), sha: localSha });
    // mtime: the exact local value (nanoseconds), so certainly "to the second".
    const meta = head.metadata.mtime ?? "";
    expect({ rel, sec: meta.split(".")[0] }).toEqual({ rel, sec: (st.mtimeNs / 1_000_000_000n).toString() });
    expect({ rel, mtime: meta }).toEqual({ rel, mtime: mtimeText(st) });
    expect({ rel, mode: head.metadata.mode }).toEqual({ rel, mode: "0" + Number(st.mode).toString(8) });
  }
}

/** One bucket's `bucketfs status --json` (the daemon may be running or stopped). */
async function statusOf(d: DaemonHandle, bucket: string): Promise<BucketJson> {
  const b = (await statusJson(d.configPath)).find((x) => x.bucket === bucket);
  if (!b) throw new Error(`no status for ${bucket}`);
  return b;
}

/** Keys (with the prefix) in the order the last upload run completed them (`workdir.lastUpload.order`). */
function uploadOrder(b: BucketJson): string[] {
  return (b.workdir?.lastUpload?.order ?? []).map((r) => `${WD}/${r}`);
}

const isMarker = (key: string): boolean => key.endsWith("/.exitcode");
const isMarkerRel = (rel: string): boolean => rel === ".exitcode" || rel.endsWith("/.exitcode");

/** In the upload order, every marker comes after every other file. */
function expectMarkersUploadedLast(order: string[]): void {
  const firstMarker = order.findIndex(isMarker);
  expect(firstMarker).toBeGreaterThan(0);
  const lastOther = order.reduce((last, k, i) => (isMarker(k) ? last : i), -1);
  expect(lastOther).toBeLessThan(firstMarker);
}

/** In S3, each marker's LastModified is >= that of every non-marker object among `objs`. */
function expectMarkersNewest(objs: ListedObject[]): void {
  const markers = objs.filter((o) => isMarker(o.key));
  const others = objs.filter((o) => !isMarker(o.key));
  expect(markers.length).toBeGreaterThan(0);
  expect(others.length).toBeGreaterThan(0);
  const newestOther = Math.max(...others.map((o) => o.lastModifiedMs));
  for (const m of markers) expect({ key: m.key, newerOrEqual: m.lastModifiedMs >= newestOther }).toEqual({ key: m.key, newerOrEqual: true });
}

/** `N files pending upload` from `bucketfs status`. */
function pendingCount(statusOut: string): number {
  const m = /(\d+) files pending upload/.exec(statusOut);
  if (!m) throw new Error(`no pending count in status output:\n${statusOut}`);
  return Number(m[1]);
}

// ---------------------------------------------------------------------------------------------

describe("a Nextflow-like task tree through the mount, then SIGTERM; restart", () => {
  const B = "tx-tree";
  let dir = "";
  /** Regular files written by the tasks (relative to the workdir). */
  let written: string[] = [];
  let afterStop: ListedObject[] = [];
  const REMOTE_ONLY = "zz/old-task/only-in-s3.txt";
  const REMOTE_ONLY_TEXT = "written by an earlier run, deleted locally in this one\n";

  test("1. every regular file reaches S3 with bytes, mtime and mode; markers last; no remote deletes", async () => {
    await server.createBucket(B);
    await s3.put(B, `${WD}/${REMOTE_ONLY}`, { text: REMOTE_ONLY_TEXT }, { metadata: { mtime: "1600000000" } });
    const d = await start([spec(B)]);
    dir = d.dir;
    try {
      const w = `${d.mnt[B]}/${WD}`;
      // Prefetched: the remote-only object is in the workdir; delete it locally (through the mount).
      expect(readFileSync(join(w, REMOTE_ONLY), "utf8")).toBe(REMOTE_ONLY_TEXT);
      run(`rm -r ${w}/zz/old-task`);

      // Three tasks, the way Nextflow writes them: script, outputs, logs, and .exitcode last.
      run(`
        cd ${w}
        t=ab/cdef1234567890
        mkdir -p $t/results/sample1/qc $t/results/sample2
        printf '#!/bin/bash\\nfastqc sample1.fq\\n' > $t/.command.sh && chmod 755 $t/.command.sh
        printf 'nxf_main\\n' > $t/.command.run
        echo 'analysis ok' > $t/.command.out
        : > $t/.command.err
        seq 1 50000 > $t/results/sample1/counts.tsv
        head -c 300000 /dev/urandom > $t/results/sample1/qc/report.bin
        echo 'sample2 done' > $t/results/sample2/summary.txt
        chmod 600 $t/results/sample2/summary.txt
        ln -s results/sample1/counts.tsv $t/counts-link
        mkfifo $t/.command.fifo

        u=3f/9a8b7c6d5e4f
        mkdir -p $u/chunks/a/b
        printf '#!/bin/bash\\nsplit big.bin\\n' > $u/.command.sh
        head -c 200M /dev/urandom > $u/big.bin
        for i in 0 1 2 3 4 5; do head -c $((i * 4099 + 1)) /dev/urandom > $u/chunks/a/b/part-$i; done
        echo 'split ok' > $u/.command.out

        v=e1/55aa
        mkdir -p $v
        echo 'exit 1' > $v/.command.sh
        echo 'error: task failed' > $v/.command.err

        # .exitcode last, as Nextflow does
        echo 0 > $t/.exitcode
        echo 0 > $u/.exitcode
        echo 1 > $v/.exitcode
      `);
      written = regularFiles(localWd(d, B));
      expect(written).toContain("3f/9a8b7c6d5e4f/big.bin");
      expect(written.filter(isMarkerRel)).toHaveLength(3);
      expect(written).not.toContain(REMOTE_ONLY);
      expect(lstatSync(join(localWd(d, B), "3f/9a8b7c6d5e4f/big.bin")).size).toBe(200 * MiB);

      const s = await stopDaemon(d);
      expect(s.code).toBe(0);
      expect(s.mountsLeft).toEqual([]);
      expect(existsSync(`${d.cachePath}/.${B}.pid`)).toBe(false);
      const st = await statusOf(d, B);
      expect(st.workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: written.length, failed: [], markersHeldBack: [] });
      // Non-regular entries are named in the status.
      expect(st.workdir?.lastUpload?.skipped).toEqual([
        { path: "ab/cdef1234567890/.command.fifo", kind: "fifo" },
        { path: "ab/cdef1234567890/counts-link", kind: "symlink" },
      ]);
      expect(st.daemonRun).toMatchObject({ outcome: "ok", exitCode: 0 });

      // The markers were uploaded after all the others.
      const order = uploadOrder(st);
      expect([...order].sort()).toEqual(written.map((r) => `${WD}/${r}`).sort());
      expectMarkersUploadedLast(order);

      // S3, by the independent client: exactly the written files plus the remote-only object.
      const listed = (await userObjects(B));
      expect(listed.map((o) => o.key).sort()).toEqual([...written.map((r) => `${WD}/${r}`), `${WD}/${REMOTE_ONLY}`].sort());
      await expectInS3(B, localWd(d, B), written);
      expect((await s3.head(B, `${WD}/3f/9a8b7c6d5e4f/.command.sh`))?.metadata.mode).toBe("0100644");
      expect((await s3.head(B, `${WD}/ab/cdef1234567890/.command.sh`))?.metadata.mode).toBe("0100755");
      expect((await s3.head(B, `${WD}/ab/cdef1234567890/results/sample2/summary.txt`))?.metadata.mode).toBe("0100600");
      // Markers were uploaded after everything else (S3's own clock).
      expectMarkersNewest(listed.filter((o) => !o.key.endsWith(REMOTE_ONLY)));
      // Symlink and fifo are not in S3.
      expect(await s3.head(B, `${WD}/ab/cdef1234567890/counts-link`)).toBeNull();
      expect(await s3.head(B, `${WD}/ab/cdef1234567890/.command.fifo`)).toBeNull();
      // No remote deletes: the object deleted locally is still there, unchanged.
      expect((await s3.get(B, `${WD}/${REMOTE_ONLY}`)).sha256).toBe(sha256(REMOTE_ONLY_TEXT));
      afterStop = listed;
    } finally {
      await d.cleanup();
    }
  }, SLOW);

  test("2a. restart over the same cache: nothing downloaded again but the deleted object, nothing re-uploaded", async () => {
    expect(afterStop.length).toBeGreaterThan(0);
    const d = await start([spec(B)], dir);
    try {
      // Everything uploaded in (1) is known to equal S3; only the object deleted locally comes back.
      expect((await statusOf(d, B)).workdir?.lastPrefetch).toMatchObject({
        remoteFiles: afterStop.length, toDownload: 1, upToDate: written.length, keptLocal: [],
      });
      const w = `${d.mnt[B]}/${WD}`;
      expect(readFileSync(join(w, REMOTE_ONLY), "utf8")).toBe(REMOTE_ONLY_TEXT);
      expect(readFileSync(join(w, "ab/cdef1234567890/.exitcode"), "utf8")).toBe("0\n");
      const s = await stopDaemon(d);
      expect(s.code).toBe(0);
      expect(s.mountsLeft).toEqual([]);
      const st = await statusOf(d, B);
      expect(st.workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: 0, unchanged: afterStop.length, order: [] });
      // S3 did not see a single write.
      expect((await userObjects(B))).toEqual(afterStop);
    } finally {
      await d.cleanup();
    }
  }, SLOW);

  test("2b. a fresh cache prefetches every object with its bytes, mtime and mode; the next stop uploads nothing", async () => {
    expect(afterStop.length).toBeGreaterThan(0);
    const d = await start([spec(B)]);
    try {
      expect((await statusOf(d, B)).workdir?.lastPrefetch).toMatchObject({ remoteFiles: afterStop.length, toDownload: afterStop.length });
      const w = `${d.mnt[B]}/${WD}`;
      // Checked through the mount by a separate process: %.9Y mtime, %a mode, sha256.
      const rels = [...written, REMOTE_ONLY];
      const out = run(`cd ${w} && for f in ${rels.map((r) => `'${r}'`).join(" ")}; do printf '%s %s %s\\n' "$f" "$(stat -c '%.9Y %a' "$f")" "$(sha256sum < "$f" | cut -d' ' -f1)"; done`);
      const seen = new Map(out.trim().split("\n").map((l) => {
        const [rel, mtime, mode, sha] = l.split(" ");
        return [rel ?? "", { mtime: Number(mtime), mode: mode ?? "", sha: sha ?? "" }];
      }));
      const heads = await pool(rels, 6, async (rel) => ({ rel, head: await s3.head(B, `${WD}/${rel}`), sha: (await s3.get(B, `${WD}/${rel}`)).sha256 }));
      for (const { rel, head, sha } of heads) {
        const local = seen.get(rel);
        expect({ rel, sha: local?.sha }).toEqual({ rel, sha });
        const metaMtime = Number(head?.metadata.mtime);
        // Restored to the millisecond (utimes takes a double), so certainly to the second.
        expect({ rel, sec: Math.floor(local?.mtime ?? 0) }).toEqual({ rel, sec: Math.floor(metaMtime) });
        expect({ rel, close: Math.abs((local?.mtime ?? 0) - metaMtime) < 0.002 }).toEqual({ rel, close: true });
        const metaMode = head?.metadata.mode;
        const expectedMode = metaMode ? (parseInt(metaMode, 8) & 0o777).toString(8) : "644";
        expect({ rel, mode: local?.mode }).toEqual({ rel, mode: expectedMode });
      }
      expect(seen.get("ab/cdef1234567890/.command.sh")?.mode).toBe("755");
      expect(seen.get("ab/cdef1234567890/results/sample2/summary.txt")?.mode).toBe("600");
      expect(seen.get(REMOTE_ONLY)?.mtime).toBe(1600000000);

      const s = await stopDaemon(d);
      expect(s.code).toBe(0);
      expect(s.mountsLeft).toEqual([]);
      expect((await statusOf(d, B)).workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: 0, unchanged: afterStop.length });
      expect((await userObjects(B))).toEqual(afterStop);
    } finally {
      await d.cleanup();
    }
  }, SLOW);
});

describe("3. a prefetch failure aborts the start", () => {
  test("an object that is listed but cannot be downloaded: exit non-zero, no bucket mounted, pid files removed", async () => {
    if (server.kind !== "minio") {
      console.warn(`skipped: needs MinIO's on-disk layout (server is ${server.kind})`);
      return;
    }
    const GOOD = "tx-pf-good";
    const BAD = "tx-pf-bad";
    await server.createBucket(GOOD);
    await server.createBucket(BAD);
    await s3.put(GOOD, `${WD}/fine.txt`, { text: "fine\n" });
    await s3.putMany(BAD, { prefix: `${WD}/t/ok-`, count: 20, size: 4096 });
    const BROKEN = `${WD}/t/broken.bin`;
    await s3.putMany(BAD, { keys: [BROKEN], size: 2 * MiB }); // not inlined in xl.meta: has a part file
    // Destroy the object's data on the server's disk: it is still listed, but every GET fails.
    run(`find '${server.dataDir}/storage/${BAD}/${BROKEN}' -name 'part.*' -delete`);
    expect((await s3.list(BAD, { prefix: `${WD}/` })).objects.map((o) => o.key)).toContain(BROKEN);

    const d = await start([spec(GOOD), spec(BAD)], undefined, { expectFailure: true });
    try {
      const code = await Promise.race([d.proc.exited, Bun.sleep(90_000).then(() => "timeout" as const)]);
      expect(code).not.toBe("timeout");
      expect(mountsUnder(d.dir)).toEqual([]);
      expect(code).not.toBe(0);
      const log = d.log();
      // One clear line naming the bucket and the key.
      expect(log).toMatch(new RegExp(`start failed: ${BAD}: prefetch of s3://${BAD}/${WD}/ failed: bucket ${BAD}, key ${BROKEN}`));
      const st = await statusJson(d.configPath);
      expect(st.find((b) => b.bucket === BAD)).toMatchObject({ phase: "failed", mount: "not mounted" });
      expect(st.find((b) => b.bucket === BAD)?.runs.find((r) => r.kind === "prefetch")?.outcome).toBe("failed");
      expect(st.find((b) => b.bucket === GOOD)?.phase).not.toBe("serving");
      for (const b of [GOOD, BAD]) expect(existsSync(`${d.cachePath}/.${b}.pid`)).toBe(false);
      // No half-written temp file and no broken file under its real name.
      expect(run(`find '${d.cachePath}' -name '*.bucketfs-tmp-*'`).trim()).toBe("");
      expect(existsSync(join(localWd(d, BAD), "t/broken.bin"))).toBe(false);
      await s3.deleteMany(BAD, { keys: [BROKEN] });
    } finally {
      await d.cleanup();
    }
  }, SLOW);

  test("a bucket that cannot be listed (wrong credentials): exit non-zero with the reason, nothing mounted", async () => {
    const B = "tx-pf-creds";
    await server.createBucket(B);
    await s3.put(B, `${WD}/a.txt`, { text: "a\n" });
    const wrong = { ...server, secretKey: "not-the-secret-key" } as S3Server;
    const d = await start([spec(B)], undefined, { expectFailure: true, srv: wrong });
    try {
      const code = await Promise.race([d.proc.exited, Bun.sleep(90_000).then(() => "timeout" as const)]);
      expect(code).not.toBe("timeout");
      expect(code).not.toBe(0);
      expect(mountsUnder(d.dir)).toEqual([]);
      const log = d.log();
      expect(log).toMatch(new RegExp(`start failed: ${B}: cannot take the workdir lease of s3://${B}/${WD}/: .*(signature|SignatureDoesNotMatch|denied)`, "i"));
      expect((await statusOf(d, B)).daemonRun).toMatchObject({ phase: "failed", exitCode: 1 });
      expect(existsSync(`${d.cachePath}/.${B}.pid`)).toBe(false);
    } finally {
      await d.cleanup();
    }
  }, SLOW);
});

describe("4. SIGKILL loses nothing", () => {
  test("local changes survive the next prefetch (S3 has an older copy) and reach S3 at that start", async () => {
    const B = "tx-crash";
    await server.createBucket(B);
    const OLD = "old version, from S3\n";
    const NEW = "new version, written through the mount before the crash\n";
    await s3.put(B, `${WD}/t1/result.txt`, { text: OLD }, { metadata: { mtime: "1600000000" } });
    await s3.put(B, `${WD}/t1/untouched.txt`, { text: "untouched\n" });
    const d1 = await start([spec(B)]);
    const dir = d1.dir;
    let d2: DaemonHandle | undefined;
    try {
      const w1 = `${d1.mnt[B]}/${WD}`;
      expect(readFileSync(join(w1, "t1/result.txt"), "utf8")).toBe(OLD);
      run(`
        cd ${w1}
        printf '%s' '${NEW}' > t1/result.txt
        mkdir -p t1/out
        head -c 3M /dev/urandom > t1/out/new.bin
        echo 0 > t1/.exitcode
      `);
      const newSha = run(`sha256sum < ${w1}/t1/out/new.bin | cut -d' ' -f1`).trim();

      // Crash: SIGKILL, no chance to unmount or upload.
      d1.proc.kill("SIGKILL");
      await d1.proc.exited;
      expect(d1.proc.signalCode).toBe("SIGKILL");
      const stale = mountsUnder(dir);
      expect(stale).toContain(d1.mnt[B] ?? "?"); // the dead FUSE mount stays behind
      // Nothing of it reached S3.
      expect((await s3.get(B, `${WD}/t1/result.txt`)).sha256).toBe(sha256(OLD));
      expect(await s3.head(B, `${WD}/t1/out/new.bin`)).toBeNull();
      expect(await s3.head(B, `${WD}/t1/.exitcode`)).toBeNull();

      // Restart over the same cache, WITHOUT cleaning the dead mount first: the daemon does it.
      d2 = await start([spec(B)], dir);
      expect(d2.log()).toContain("cleaning stale mount"); // the message names what it did
      const st2 = await statusOf(d2, B);
      expect(st2.workdir?.lastPrefetch?.keptLocal).toEqual(["t1/result.txt"]);
      // The change left by the crash is uploaded before the mount is ready (the recovery run), markers last.
      expect(st2.workdir?.lastUpload).toMatchObject({ kind: "recovery", ok: true, uploaded: 3 });
      const startUploads = uploadOrder(st2);
      expect([...startUploads].sort()).toEqual([`${WD}/t1/.exitcode`, `${WD}/t1/out/new.bin`, `${WD}/t1/result.txt`]);
      expectMarkersUploadedLast(startUploads);
      // Local content kept (not overwritten by the older S3 copy) ...
      const w2 = `${d2.mnt[B]}/${WD}`;
      expect(readFileSync(join(w2, "t1/result.txt"), "utf8")).toBe(NEW);
      // ... and in S3 right after ready, checked by the independent client.
      expect((await s3.get(B, `${WD}/t1/result.txt`)).sha256).toBe(sha256(NEW));
      expect((await s3.get(B, `${WD}/t1/out/new.bin`)).sha256).toBe(newSha);
      expect(new TextDecoder().decode(await s3.getBytes(B, `${WD}/t1/.exitcode`))).toBe("0\n");
      const listed = (await userObjects(B));
      expectMarkersNewest(listed.filter((o) => !o.key.endsWith("untouched.txt")));
      await expectInS3(B, localWd(d2, B), ["t1/result.txt", "t1/out/new.bin", "t1/.exitcode"]);

      const s = await stopDaemon(d2);
      expect(s.code).toBe(0);
      expect(s.mountsLeft).toEqual([]);
      expect((await statusOf(d2, B)).workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: 0 });
      expect((await userObjects(B))).toEqual(listed);
    } finally {
      await d1.cleanup();
      await d2?.cleanup();
    }
  }, SLOW);
});

describe("5. a failed upload at stop", () => {
  test("exit non-zero naming the files, markers held back, files kept; the next start uploads them", async () => {
    const B = "tx-fail";
    await server.createBucket(B);
    const d1 = await start([spec(B)]);
    const dir = d1.dir;
    let d2: DaemonHandle | undefined;
    let serverDown = false;
    try {
      const w = `${d1.mnt[B]}/${WD}`;
      run(`
        cd ${w}
        mkdir -p t5/out/deep
        echo 'run it' > t5/.command.sh
        echo 'a' > t5/out/a.txt
        head -c 7M /dev/urandom > t5/out/deep/b.bin
        echo 0 > t5/.exitcode
      `);
      const files = ["t5/.command.sh", "t5/out/a.txt", "t5/out/deep/b.bin"];
      const shas = new Map<string, string>();
      for (const f of [...files, "t5/.exitcode"]) shas.set(f, run(`sha256sum < ${w}/${f} | cut -d' ' -f1`).trim());

      await server.stop(); // S3 refuses everything from here on
      serverDown = true;
      const s = await stopDaemon(d1);
      expect(s.code).not.toBe(0);
      expect(s.mountsLeft).toEqual([]);
      expect(existsSync(`${d1.cachePath}/.${B}.pid`)).toBe(false);
      const st1 = await statusOf(d1, B);
      expect(st1.workdir?.lastUpload).toMatchObject({ kind: "upload", ok: false, uploaded: 0, order: [], markersHeldBack: ["t5/.exitcode"] });
      expect(st1.workdir?.lastUpload?.failed.map((f) => f.path).sort()).toEqual([...files].sort());
      expect(st1.daemonRun).toMatchObject({ exitCode: 2 });
      // Files stay in the cache, unchanged.
      for (const [f, sha] of shas) expect({ f, sha: await sha256File(join(localWd(d1, B), f)) }).toEqual({ f, sha });
      // `bucketfs status --json` with the daemon stopped: 4 files pending and the last error.
      expect(st1.pid).toBeNull();
      expect(st1.workdir?.pending.map((p) => p.path).sort()).toEqual([...files, "t5/.exitcode"].sort());
      expect(st1.workdir?.failures.find((f) => f.path === "t5/.exitcode")?.lastError).toStartWith("held back");

      await server.restart();
      serverDown = false;
      expect((await userObjects(B))).toEqual([]); // nothing, marker included

      d2 = await start([spec(B)], dir);
      const st2 = await statusOf(d2, B);
      expect(st2.workdir?.lastUpload).toMatchObject({ kind: "recovery", ok: true, uploaded: 4 });
      const order = uploadOrder(st2);
      expect([...order].sort()).toEqual([...files, "t5/.exitcode"].map((f) => `${WD}/${f}`).sort());
      expectMarkersUploadedLast(order);
      const listed = (await userObjects(B));
      expect(listed.map((o) => o.key).sort()).toEqual(order.slice().sort());
      expectMarkersNewest(listed);
      await expectInS3(B, localWd(d2, B), [...shas.keys()]);
      for (const [f, sha] of shas) expect({ f, sha: (await s3.get(B, `${WD}/${f}`)).sha256 }).toEqual({ f, sha });

      expect((await statusOf(d2, B)).workdir?.pending).toEqual([]);
      const s2 = await stopDaemon(d2);
      expect(s2.code).toBe(0);
      expect((await statusOf(d2, B)).workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: 0 });
    } finally {
      if (serverDown) await server.restart();
      await d1.cleanup();
      await d2?.cleanup();
    }
  }, SLOW);
});

describe("6. busy mounts at stop", () => {
  test("a process with its cwd in the workdir: the stop completes, names it, uploads; a later write there is not lost", async () => {
    const B = "tx-busy";
    await server.createBucket(B);
    const d = await start([spec(B)]);
    const dir = d.dir;
    let d2: DaemonHandle | undefined;
    let sleeper: ReturnType<typeof Bun.spawn> | undefined;
    let writer: ReturnType<typeof Bun.spawn> | undefined;
    const go = join(dir, "go-late-writer");
    try {
      const w = `${d.mnt[B]}/${WD}`;
      run(`mkdir -p ${w}/busy/task && cd ${w}/busy/task && seq 1 1000 > out.txt && echo 0 > .exitcode`);
      sleeper = Bun.spawn(["sleep", "1000"], { cwd: `${w}/busy/task`, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
      children.push(sleeper);
      // A second process in there writes one more file, but only after the daemon has stopped.
      writer = Bun.spawn(["bash", "-c", `while [ ! -e '${go}' ]; do sleep 0.05; done; echo late > late.txt`], {
        cwd: `${w}/busy/task`, stdin: "ignore", stdout: "ignore", stderr: "ignore",
      });
      children.push(writer);
      await Bun.sleep(200);
      expect(readFileSync(`/proc/${sleeper.pid}/comm`, "utf8").trim()).toBe("sleep");

      const s = await stopDaemon(d, "SIGTERM", 60_000);
      expect(s.ms).toBeLessThan(30_000);
      expect(s.code).toBe(0);
      expect(s.mountsLeft).toEqual([]);
      expect(s.log).toMatch(new RegExp(`workdir in use by .*${sleeper.pid} \\(sleep\\)`));
      expect(s.log).toContain(`${writer.pid} (bash)`);
      expect((await statusOf(d, B)).workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: 2 });
      await expectInS3(B, localWd(d, B), ["busy/task/out.txt", "busy/task/.exitcode"]);
      expect((await s3.get(B, `${WD}/busy/task/out.txt`)).sha256).toBe(sha256(Array.from({ length: 1000 }, (_, i) => `${i + 1}\n`).join("")));

      // The busy process keeps working in the (now detached) workdir; what it writes is in the cache ...
      run(`touch '${go}'`);
      expect(await Promise.race([writer.exited, Bun.sleep(10_000).then(() => "timeout" as const)])).toBe(0);
      expect(readFileSync(join(localWd(d, B), "busy/task/late.txt"), "utf8")).toBe("late\n");
      expect(await s3.head(B, `${WD}/busy/task/late.txt`)).toBeNull();
      // ... and the next start uploads it.
      d2 = await start([spec(B)], dir);
      expect((await statusOf(d2, B)).workdir?.lastUpload).toMatchObject({ kind: "recovery", ok: true, uploaded: 1 });
      expect(new TextDecoder().decode(await s3.getBytes(B, `${WD}/busy/task/late.txt`))).toBe("late\n");
      const s2 = await stopDaemon(d2);
      expect(s2.code).toBe(0);
      expect(s2.mountsLeft).toEqual([]);
    } finally {
      sleeper?.kill("SIGKILL");
      writer?.kill("SIGKILL");
      await sleeper?.exited;
      await writer?.exited;
      await d.cleanup();
      await d2?.cleanup();
    }
  }, SLOW);

  test("a process with its cwd in the read-only part of the mount: bounded stop, named, nothing left mounted", async () => {
    const B = "tx-busy-root";
    await server.createBucket(B);
    await s3.put(B, "data/input.txt", { text: "input\n" });
    const d = await start([spec(B)]);
    let sleeper: ReturnType<typeof Bun.spawn> | undefined;
    try {
      const w = `${d.mnt[B]}/${WD}`;
      run(`mkdir -p ${w}/t && echo out > ${w}/t/out.txt && echo 0 > ${w}/t/.exitcode`);
      sleeper = Bun.spawn(["sleep", "1000"], { cwd: `${d.mnt[B]}/data`, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
      children.push(sleeper);
      await Bun.sleep(200);
      const s = await stopDaemon(d, "SIGTERM", 60_000);
      expect(s.ms).toBeLessThan(30_000);
      expect(s.code).toBe(0);
      expect(s.mountsLeft).toEqual([]);
      expect(s.log).toContain(`in use by ${sleeper.pid} (sleep)`);
      expect((await statusOf(d, B)).workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: 2 });
      await expectInS3(B, localWd(d, B), ["t/out.txt", "t/.exitcode"]);
    } finally {
      sleeper?.kill("SIGKILL");
      await sleeper?.exited;
      await d.cleanup();
    }
  }, SLOW);
});

describe("7. bucketfs sync and status while mounted", () => {
  test("sync uploads a new file now, the mount stays usable; status lists it pending before and not after", async () => {
    const B = "tx-sync";
    await server.createBucket(B);
    const d = await start([spec(B)]);
    try {
      const w = `${d.mnt[B]}/${WD}`;
      run(`mkdir -p ${w}/ckpt && printf 'checkpoint 1\\n' > ${w}/ckpt/state.txt`);

      const before = await statusOf(d, B);
      expect(before).toMatchObject({ pid: d.proc.pid, mount: "mounted", phase: "serving" });
      expect(before.workdir?.pending.map((p) => p.path)).toEqual(["ckpt/state.txt"]);

      const sync = cli(["sync", "--config", d.configPath]);
      expect(sync.code).toBe(0);
      expect((await statusOf(d, B)).runs.find((r) => r.kind === "sync")).toMatchObject({ outcome: "ok", files: 1 });
      // In S3 now, long before any stop.
      expect((await s3.get(B, `${WD}/ckpt/state.txt`)).sha256).toBe(sha256("checkpoint 1\n"));
      await expectInS3(B, localWd(d, B), ["ckpt/state.txt"]);

      expect((await statusOf(d, B)).workdir?.pending).toEqual([]);

      // Mounts stay and keep working.
      const mounts = mountsUnder(d.dir);
      expect(mounts).toContain(d.mnt[B] ?? "?");
      expect(mounts).toContain(w);
      expect(d.proc.exitCode).toBeNull();
      run(`printf 'checkpoint 2\\n' > ${w}/ckpt/state2.txt && mkdir ${w}/ckpt/more && mv ${w}/ckpt/state2.txt ${w}/ckpt/more/`);
      expect(readFileSync(`${w}/ckpt/more/state2.txt`, "utf8")).toBe("checkpoint 2\n");
      expect(await s3.head(B, `${WD}/ckpt/more/state2.txt`)).toBeNull();

      const s = await stopDaemon(d);
      expect(s.code).toBe(0);
      expect(s.mountsLeft).toEqual([]);
      const st = await statusOf(d, B);
      expect(st.runs.filter((r) => r.kind === "sync").map((r) => `${r.outcome}:${r.files}`)).toEqual(["ok:1"]);
      expect(st.workdir?.lastUpload).toMatchObject({ kind: "upload", ok: true, uploaded: 1, unchanged: 1 });
      await expectInS3(B, localWd(d, B), ["ckpt/state.txt", "ckpt/more/state2.txt"]);
    } finally {
      await d.cleanup();
    }
  }, SLOW);
});
