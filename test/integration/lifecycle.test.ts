/**
 * Each bucket's run as a state machine, seen from outside: the real daemon, real mounts, a
 * real MinIO, S3 checked with boto3, and the daemon's state read from `bucketfs status
 * --json` (never from log lines). Uploads are held in flight by SIGSTOPping the S3 server
 * (a real fault, as in outage.test.ts), so the signals land in a known phase.
 *
 * Shows: a sync during the stop is refused and the stop uploads once; a second SIGINT during
 * a sync aborts it (exit 2, files stay pending, the next start uploads them); a stop during
 * the prefetch is a clean stop; a cache root another user controls is refused and symlinks
 * planted in the cache root are never followed; a stop on a full cache disk still uploads
 * everything (exit 2), and the next start records it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { bucketfsCommand, daemonDir, removeDir, sh, startDaemon, type BucketSpec, type DaemonHandle } from "../helpers/daemon.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { runsOf, statusJson, waitStatus } from "../helpers/status.ts";
import { mountAt } from "../../src/util/mountinfo.ts";
import { regularFiles, sha256File, writeRandom } from "../helpers/files.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const WD = "work";
const SLOW = 240_000;

let server: S3Server;
let s3: S3Tool;
let serverDir: string;
const handles: DaemonHandle[] = [];
const dirs: string[] = [];
let serverStopped = false;

beforeAll(async () => {
  mkdirSync(TEST_ROOT, { recursive: true });
  serverDir = mkdtempSync(join(TEST_ROOT, "life-s3-"));
  server = await startS3Server({ dataDir: serverDir });
  s3 = s3tool(server);
}, 120_000);

afterAll(async () => {
  if (serverStopped) resumeS3();
  for (const h of handles) await h.cleanup();
  for (const d of dirs) removeDir(d);
  await server?.stop();
  if (serverDir && process.env.BUCKETFS_KEEP_TEST_DATA !== "1") rmSync(serverDir, { recursive: true, force: true });
}, 120_000);

function pauseS3(): void {
  process.kill(server.pid!, "SIGSTOP");
  serverStopped = true;
}

function resumeS3(): void {
  process.kill(server.pid!, "SIGCONT");
  serverStopped = false;
}

const spec = (bucket: string): BucketSpec => ({ bucket, workdir: `/${bucket}/${WD}` });

async function start(buckets: BucketSpec[], opts: { dir?: string; noWait?: boolean; expectFailure?: boolean } = {}): Promise<DaemonHandle> {
  const d = await startDaemon(server, buckets, opts);
  handles.push(d);
  if (!dirs.includes(d.dir)) dirs.push(d.dir);
  return d;
}

async function exitCode(d: DaemonHandle, timeoutMs = 120_000): Promise<number> {
  const r = await Promise.race([d.proc.exited, Bun.sleep(timeoutMs).then(() => "timeout" as const)]);
  if (r === "timeout") {
    await d.cleanup();
    throw new Error(`bucketfs did not exit within ${timeoutMs} ms\n${d.log()}`);
  }
  return d.stop();
}



async function md5File(path: string): Promise<string> {
  const h = new Bun.CryptoHasher("md5");
  for await (const chunk of Bun.file(path).stream()) h.update(chunk);
  return h.digest("hex");
}

/**
 * Every regular file of the local workdir is in S3 under work/ with the same bytes, and
 * nothing else is (boto3). One listing: a single-part object's ETag is the MD5 of its bytes;
 * a multipart one is downloaded and hashed.
 */
async function expectAllInS3(bucket: string, localDir: string): Promise<string[]> {
  const rels = regularFiles(localDir);
  const listed = new Map(
    (await s3.list(bucket, { prefix: `${WD}/` })).objects
      .map((o) => [o.key.slice(WD.length + 1), o] as const)
      .filter(([rel]) => !rel.startsWith(".bucketfs/")), // the lease and commit records
  );
  expect([...listed.keys()].sort()).toEqual(rels);
  for (const rel of rels) {
    const o = listed.get(rel)!;
    const etag = o.etag.replace(/"/g, "");
    const abs = join(localDir, rel);
    if (etag.includes("-")) expect({ rel, sha: (await s3.get(bucket, `${WD}/${rel}`)).sha256 }).toEqual({ rel, sha: await sha256File(abs) });
    else expect({ rel, md5: etag, size: o.size }).toEqual({ rel, md5: await md5File(abs), size: statSync(abs).size });
  }
  return rels;
}

/** Write a small task tree through the mount (the bind-mounted workdir). */
function writeTask(mnt: string, files: number): void {
  const dir = `${mnt}/${WD}/t1`;
  const r = sh(`set -e; mkdir -p ${dir}; for i in $(seq 1 ${files}); do head -c $((1000 + i * 37)) /dev/urandom > ${dir}/out$i.txt; done; echo 0 > ${dir}/.exitcode`);
  if (r.code !== 0) throw new Error(r.err);
}

function cli(args: string[]): { code: number; out: string } {
  const r = Bun.spawnSync([...bucketfsCommand(), ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

describe("lifecycle events", () => {
  test("a sync during the stop is refused; the stop uploads once (one upload run, every file in S3)", async () => {
    const bucket = "life-sync-stop";
    await server.createBucket(bucket);
    const d = await start([spec(bucket)]);
    // A cache root bucketfs creates is private; its index and pid file are 0600.
    expect(statSync(d.cachePath).mode & 0o777).toBe(0o700);
    expect(statSync(`${d.cachePath}/.${bucket}.index`).mode & 0o777).toBe(0o600);
    expect(statSync(`${d.cachePath}/.${bucket}.pid`).mode & 0o777).toBe(0o600);
    const serving = await waitStatus(d.configPath, bucket, (b) => b.phase === "serving", "serving");
    const runId = serving.daemonRun!.id;
    writeTask(d.mnt[bucket]!, 5);

    pauseS3();
    try {
      d.proc.kill("SIGTERM");
      await waitStatus(d.configPath, bucket, (b) => b.phase === "uploading", "the stop's upload");
      const sync = cli(["sync", "--config", d.configPath, "--timeout", "60"]);
      expect(sync.code).toBe(1);
      expect(sync.out).toContain("sync refused");
    } finally {
      resumeS3();
    }
    expect(await exitCode(d)).toBe(0);

    const [b] = await statusJson(d.configPath);
    expect(b!.phase).toBe("closed");
    expect(b!.daemonRun).toMatchObject({ id: runId, outcome: "ok", exitCode: 0 });
    const kinds = runsOf(b!, runId).map((r) => `${r.kind}:${r.outcome}`);
    expect(kinds.filter((k) => k.startsWith("upload:"))).toEqual(["upload:ok"]);
    expect(kinds.filter((k) => k.startsWith("sync:"))).toEqual(["sync:refused"]);
    expect(b!.workdir!.pending).toEqual([]);
    const rels = await expectAllInS3(bucket, `${d.cachePath}/.${bucket}/${WD}`);
    expect(rels).toContain("t1/.exitcode");
  }, SLOW);

  test("a second SIGINT during a sync aborts it: exit 2, files pending, marker not in S3; the next start uploads them", async () => {
    const bucket = "life-abort-sync";
    await server.createBucket(bucket);
    const d = await start([spec(bucket)]);
    const serving = await waitStatus(d.configPath, bucket, (b) => b.phase === "serving", "serving");
    const runId = serving.daemonRun!.id;
    writeTask(d.mnt[bucket]!, 4);

    let syncCli: ReturnType<typeof Bun.spawn> | undefined;
    pauseS3();
    let code: number;
    try {
      syncCli = Bun.spawn([...bucketfsCommand(), "sync", "--config", d.configPath, "--timeout", "60"], {
        cwd: REPO, stdout: "ignore", stderr: "ignore", stdin: "ignore",
      });
      await waitStatus(d.configPath, bucket, (b) => b.phase === "syncing", "the sync");
      d.proc.kill("SIGINT");
      await waitStatus(d.configPath, bucket, (b) => b.phase === "stopping", "stopping (sync still running)");
      d.proc.kill("SIGINT");
      code = await exitCode(d, 60_000);
    } finally {
      resumeS3();
      syncCli?.kill("SIGKILL");
    }
    expect(code).toBe(2);

    const [b] = await statusJson(d.configPath);
    expect(b!.daemonRun).toMatchObject({ id: runId, outcome: "aborted", exitCode: 2 });
    const kinds = runsOf(b!, runId).map((r) => `${r.kind}:${r.outcome}`);
    expect(kinds).toContain("sync:aborted");
    expect(kinds.filter((k) => k.startsWith("upload:"))).toEqual([]); // aborted before the stop's upload
    const pending = b!.workdir!.pending.map((p) => p.path);
    expect(pending).toContain("t1/.exitcode");
    expect(await s3.head(bucket, `${WD}/t1/.exitcode`)).toBeNull();

    // Temp files of interrupted downloads (object cache or prefetch) are swept at the next start.
    const root = `${d.cachePath}/.${bucket}`;
    mkdirSync(`${root}/ref/genome`, { recursive: true });
    const temps = [`ref/genome/.chr1.fa.bucketfs-tmp-0123456789ab`, `${WD}/t1/.out1.txt.bucketfs-tmp-ba9876543210`];
    for (const t of temps) writeFileSync(`${root}/${t}`, "partial");

    // Nothing was lost: the next start uploads the pending files (markers last) before it is ready.
    const again = await start([spec(bucket)], { dir: d.dir });
    const after = await waitStatus(again.configPath, bucket, (x) => x.phase === "serving", "serving again");
    expect(after.workdir!.pending).toEqual([]);
    expect(runsOf(after, after.daemonRun!.id).map((r) => `${r.kind}:${r.outcome}`)).toContain("recovery:ok");
    for (const t of temps) expect({ t, exists: existsSync(`${root}/${t}`) }).toEqual({ t, exists: false });
    again.proc.kill("SIGTERM");
    expect(await exitCode(again)).toBe(0);
    const rels = await expectAllInS3(bucket, `${d.cachePath}/.${bucket}/${WD}`);
    expect(rels.length).toBe(5);
  }, SLOW);

  test("a stop during the prefetch phase is a clean stop (exit 0, nothing mounted, no prefetch run completed)", async () => {
    const bucket = "life-stop-prefetch";
    await server.createBucket(bucket);
    await s3.put(bucket, `${WD}/in/a.txt`, { text: "a" });
    pauseS3();
    let d: DaemonHandle;
    let code: number;
    try {
      d = await start([spec(bucket)], { noWait: true });
      await waitStatus(d.configPath, bucket, (b) => b.phase === "prefetching", "the prefetch");
      d.proc.kill("SIGTERM");
      code = await exitCode(d, 60_000);
    } finally {
      resumeS3();
    }
    expect(code).toBe(0);
    const [b] = await statusJson(d.configPath);
    expect(b!.mount).toBe("not mounted");
    expect(b!.daemonRun).toMatchObject({ outcome: "ok", exitCode: 0, phase: "closed" });
    // Stopped while taking the lease or listing (S3 does not answer): no prefetch ran to an end.
    const prefetches = runsOf(b!, b!.daemonRun!.id).filter((r) => r.kind === "prefetch");
    for (const r of prefetches) expect(r.outcome).toBe("aborted");
    expect(b!.workdir!.pending).toEqual([]);
  }, SLOW);
});

describe("a cache root no one else controls", () => {
  /** A daemon dir whose cache root is prepared by `plant` before the start. */
  async function refusedStart(bucket: string, plant: (cache: string, dir: string) => void): Promise<{ code: number; log: string; dir: string }> {
    const dir = daemonDir(bucket);
    dirs.push(dir);
    plant(`${dir}/cache`, dir);
    const d = await start([spec(bucket)], { dir, expectFailure: true });
    const code = await exitCode(d);
    expect(mountAt(d.mnt[bucket]!)).toBeUndefined();
    return { code, log: d.log(), dir };
  }

  /** Victims outside the cache: a file for the pid file, one for the index, a directory for the bucket dir. */
  function victims(dir: string) {
    mkdirSync(`${dir}/victim-dir`);
    writeFileSync(`${dir}/victim-pid`, "untouched\n");
    writeFileSync(`${dir}/victim-index`, "untouched\n");
    return () => {
      expect(readFileSync(`${dir}/victim-pid`, "utf8")).toBe("untouched\n");
      expect(readFileSync(`${dir}/victim-index`, "utf8")).toBe("untouched\n");
      expect(readdirSync(`${dir}/victim-dir`)).toEqual([]);
    };
  }

  test("a 0777 cachepath owned by another user, with symlinks planted at the pid file, index and bucket dir: refused, targets untouched", async () => {
    const bucket = "life-hostile-root";
    let check = () => {};
    const r = await refusedStart(bucket, (cache, dir) => {
      check = victims(dir);
      mkdirSync(cache);
      symlinkSync(`${dir}/victim-pid`, `${cache}/.${bucket}.pid`);
      symlinkSync(`${dir}/victim-index`, `${cache}/.${bucket}.index`);
      symlinkSync(`${dir}/victim-dir`, `${cache}/.${bucket}`);
      sh(`chmod 0777 ${cache}`);
      chownSync(cache, 65534, 65534); // nobody
    });
    expect(r.code).toBe(1);
    expect(r.log).toContain(`cachepath ${r.dir}/cache is owned by uid 65534`);
    expect(r.log).toContain(`chown 0 ${r.dir}/cache && chmod 700 ${r.dir}/cache`);
    check();
  }, SLOW);

  test("a cachepath of ours that group or others can write is refused, saying how to fix it", async () => {
    const r = await refusedStart("life-open-root", (cache) => {
      mkdirSync(cache);
      sh(`chmod 0775 ${cache}`);
    });
    expect(r.code).toBe(1);
    expect(r.log).toContain(`Fix: chmod 700 ${r.dir}/cache`);
  }, SLOW);

  for (const where of ["bucket dir", "workdir dir", "pid file", "index"] as const) {
    test(`a properly owned cachepath with a symlink planted at the ${where}: never followed`, async () => {
      const bucket = `life-link-${where.split(" ")[0]}`;
      let check = () => {};
      const r = await refusedStart(bucket, (cache, dir) => {
        check = victims(dir);
        mkdirSync(cache, { mode: 0o700 });
        const [link, target] = ({
          "bucket dir": [`${cache}/.${bucket}`, `${dir}/victim-dir`],
          // The directory that would be bind-mounted onto <mountpoint>/work.
          "workdir dir": [`${cache}/.${bucket}/${WD}`, `${dir}/victim-dir`],
          "pid file": [`${cache}/.${bucket}.pid`, `${dir}/victim-pid`],
          index: [`${cache}/.${bucket}.index`, `${dir}/victim-index`],
        } satisfies Record<typeof where, [string, string]>)[where];
        if (where === "workdir dir") mkdirSync(`${cache}/.${bucket}`);
        symlinkSync(target, link);
      });
      expect(r.code).toBe(1);
      expect(r.log).toContain("is a symlink; bucketfs never follows symlinks in its cache");
      check();
    }, SLOW);
  }
});

describe("no symlink in the cache followed while serving", () => {
  test("a symlink planted where the object cache needs a directory is replaced, never written through", async () => {
    const bucket = "life-link-objects";
    await server.createBucket(bucket);
    await s3.put(bucket, "ref/a.txt", { text: "object a" });
    const d = await start([spec(bucket)]);
    const victim = `${d.dir}/victim-dir`;
    mkdirSync(victim);
    symlinkSync(victim, `${d.cachePath}/.${bucket}/ref`);
    expect(readFileSync(`${d.mnt[bucket]!}/ref/a.txt`, "utf8")).toBe("object a");
    expect(readdirSync(victim)).toEqual([]);
    expect(lstatSync(`${d.cachePath}/.${bucket}/ref`).isDirectory()).toBe(true);
    d.proc.kill("SIGTERM");
    expect(await exitCode(d)).toBe(0);
  }, SLOW);
});

describe("a full cache disk", () => {
  test("ENOSPC at the stop: every file is still uploaded, exit 2 saying the disk was full; a restart with space records it", async () => {
    const bucket = "life-enospc";
    await server.createBucket(bucket);
    const dir = daemonDir(bucket);
    dirs.push(dir);
    // The tmpfs lives outside the daemon dir (the helper unmounts everything under that dir
    // at each stop); the cachepath is a root-owned symlink to it.
    const cache = mkdtempSync(join(TEST_ROOT, "life-tmpfs-"));
    const m = sh(`mount -t tmpfs -o size=6m,mode=0700 bucketfs-test-enospc ${cache}`);
    expect(m.code).toBe(0);
    symlinkSync(cache, `${dir}/cache`);
    try {
      const d = await start([spec(bucket)], { dir });
      await waitStatus(d.configPath, bucket, (b) => b.phase === "serving", "serving");
      const wd = `${d.mnt[bucket]!}/${WD}`;
      writeTask(d.mnt[bucket]!, 6);
      for (let i = 0; i < 3; i++) writeRandom(`${wd}/t1/big${i}.bin`, 512 * 1024);
      // Fill the cache filesystem to the last block through the workdir.
      const fill = sh(`head -c 64M /dev/zero > ${wd}/fill.bin`);
      expect(fill.err).toContain("No space left on device");
      expect(sh(`df --output=avail -B1 ${cache} | tail -1`).out.trim()).toBe("0");

      d.proc.kill("SIGTERM");
      const code = await exitCode(d);
      expect(code).toBe(2); // never 1: the start did not fail, the stop uploaded
      expect(d.log()).toContain("the cache disk is full");
      // What reached S3 is complete even though the index could not record it.
      const local = `${cache}/.${bucket}/${WD}`;
      const rels = await expectAllInS3(bucket, local);
      expect(rels).toContain("fill.bin");
      expect(rels).toContain("t1/.exitcode");

      // Restart with space: what could not be recorded is re-derived (uploaded again, same bytes).
      expect(sh(`mount -o remount,size=64m ${cache}`).code).toBe(0);
      const again = await start([spec(bucket)], { dir });
      const after = await waitStatus(again.configPath, bucket, (b) => b.phase === "serving", "serving after the restart");
      expect(after.workdir!.pending).toEqual([]);
      const recovery = runsOf(after, after.daemonRun!.id).find((r) => r.kind === "recovery");
      expect(recovery).toMatchObject({ outcome: "ok", files: rels.length });
      again.proc.kill("SIGTERM");
      expect(await exitCode(again)).toBe(0);
      const [b] = await statusJson(again.configPath);
      expect(b!.workdir!.pending).toEqual([]);
      expect(await expectAllInS3(bucket, local)).toEqual(rels);
    } finally {
      for (const h of handles) await h.cleanup();
      sh(`umount -l ${cache}`);
      rmSync(cache, { recursive: true, force: true });
    }
  }, SLOW);
});
