/**
 * Many nodes, one bucket: two bucketfs daemons against ONE real MinIO, each with its own
 * config, cache path and mount point, act as two nodes sharing a workdir prefix.
 *
 * Covers the workdir lease (a second start refused while the first runs, accepted after it
 * stops; takeover after expiry and with --take-over; a killed holder restarting on its own
 * cache resumes), commit records (`bucketfs verify` passes after a clean stop, fails after
 * another writer changes an object), and prefetch following the latest record (a file deleted
 * after a sync is not restored on either node, while an object another writer replaced is;
 * symlinks and empty directories come back on the second node). S3 state is read with boto3.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, readFileSync, readlinkSync } from "node:fs";
import { bucketfsCommand, removeDir, sh, startDaemon, type BucketSpec, type DaemonHandle } from "../helpers/daemon.ts";
import { startS3Server, type S3Server } from "../helpers/s3server.ts";
import { statusJson, waitStatus } from "../helpers/status.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const SLOW = 240_000;

let server: S3Server;
let s3: S3Tool;
const handles: DaemonHandle[] = [];

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
}, 120_000);

afterAll(async () => {
  for (const h of handles) await h.cleanup();
  for (const h of handles) removeDir(h.dir);
  await server?.stop();
}, 120_000);

let n = 0;
/** A fresh bucket with a workdir `wd/`; `extra` config lines per bucket. */
async function freshBucket(extra: Record<string, string> = {}): Promise<BucketSpec> {
  const bucket = `nodes-${++n}`;
  await server.createBucket(bucket);
  return { bucket, workdir: `/${bucket}/wd`, extra };
}

async function node(spec: BucketSpec, opts: { dir?: string; args?: string[]; expectFailure?: boolean } = {}): Promise<DaemonHandle> {
  const d = await startDaemon(server, [spec], opts);
  if (!handles.includes(d)) handles.push(d);
  return d;
}

function wd(d: DaemonHandle, spec: BucketSpec): string {
  return `${d.mnt[spec.bucket]}/wd`;
}

function run(script: string): string {
  const r = sh(`set -euo pipefail\n${script}`);
  if (r.code !== 0) throw new Error(`shell failed (${r.code}):\n${script}\n${r.out}\n${r.err}`);
  return r.out;
}

function cli(args: string[]): { code: number; out: string } {
  const r = Bun.spawnSync([...bucketfsCommand(), ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe", timeout: 120_000 });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

interface LeaseJson {
  state: string;
  holder: string;
  node: string;
  pid: number;
  expiresMs: number;
}

async function lease(bucket: string): Promise<LeaseJson> {
  return JSON.parse(new TextDecoder().decode(await s3.getBytes(bucket, "wd/.bucketfs/lease"))) as LeaseJson;
}

/** Exit code of a daemon that should have refused to start (it exits on its own). */
async function exitCode(d: DaemonHandle): Promise<number> {
  return await d.proc.exited;
}

describe("workdir lease", () => {
  test("a second node is refused while the first runs, naming the holder, and starts after the first stops", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    const held = await lease(spec.bucket);
    expect(held.state).toBe("held");
    expect(held.pid).toBe(a.proc.pid);
    expect(held.holder.endsWith(`${a.cachePath}/.${spec.bucket}/wd`)).toBe(true);
    const st = (await statusJson(a.configPath))[0]?.workdir?.lease;
    expect(st?.lease).toMatchObject({ state: "held", how: "created", conditionalWrites: true, renewFailures: 0 });

    const b = await node(spec, { expectFailure: true });
    expect(await exitCode(b)).toBe(1);
    expect(b.log()).toContain(`is in use by node ${held.node} (pid ${held.pid}`);
    expect(b.log()).toContain("--take-over");
    expect(existsSync(`${b.cachePath}/.${spec.bucket}/wd`)).toBe(true); // its cache dir exists...
    expect(run(`ls -A ${b.cachePath}/.${spec.bucket}/wd`).trim()).toBe(""); // ...but nothing was prefetched
    await b.cleanup();

    run(`echo a > ${wd(a, spec)}/from-a.txt`);
    expect(await a.stop()).toBe(0);
    expect((await lease(spec.bucket)).state).toBe("released");

    const b2 = await node(spec, { dir: b.dir });
    expect(readFileSync(`${wd(b2, spec)}/from-a.txt`, "utf8")).toBe("a\n");
    expect((await lease(spec.bucket)).pid).toBe(b2.proc.pid);
    expect(await b2.stop()).toBe(0);
  }, SLOW);

  test("a read-only mount (no workdir) takes no lease: it starts beside a holder and leaves the lease alone", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    const ro = await node({ bucket: spec.bucket });
    expect((await statusJson(ro.configPath))[0]?.workdir).toBeNull();
    expect(await ro.stop()).toBe(0);
    expect(await lease(spec.bucket)).toMatchObject({ state: "held", pid: a.proc.pid }); // still A's, never touched by the read-only node
    expect(await a.stop()).toBe(0);
  }, SLOW);

  test("an expired lease is taken over; a killed holder restarting on its own cache resumes its lease", async () => {
    const spec = await freshBucket({ lease_time: "3" });
    const a = await node(spec);
    a.proc.kill("SIGKILL");
    await a.proc.exited;
    await a.cleanup();
    // The same holder (same cache dir) comes back at once, before expiry: it resumes.
    const a2 = await node(spec, { dir: a.dir });
    expect(a2.log()).toContain(": resumed (run");
    expect((await lease(spec.bucket)).pid).toBe(a2.proc.pid);
    a2.proc.kill("SIGKILL");
    await a2.proc.exited;
    await a2.cleanup();
    // Another node waits out the expiry written in the lease itself, then takes over.
    const expires = (await lease(spec.bucket)).expiresMs;
    await Bun.sleep(Math.max(0, expires - Date.now() + 200));
    const b = await node(spec);
    const now = await lease(spec.bucket);
    expect(now.pid).toBe(b.proc.pid);
    expect(now.holder.endsWith(`${b.cachePath}/.${spec.bucket}/wd`)).toBe(true);
    expect(b.log()).toContain("taking over from node");
    expect(await b.stop()).toBe(0);
  }, SLOW);

  test("a holder that lost its lease (frozen past expiry, taken over) uploads nothing and exits 2", async () => {
    const spec = await freshBucket({ lease_time: "3" });
    const a = await node(spec);
    run(`printf 'from a' > ${wd(a, spec)}/shared.txt`);
    a.proc.kill("SIGSTOP"); // renewals stop; the workdir (a bind mount of local disk) still works
    try {
      const expires = (await lease(spec.bucket)).expiresMs;
      await Bun.sleep(Math.max(0, expires - Date.now() + 200));
      const b = await node(spec);
      run(`printf 'from b' > ${wd(b, spec)}/shared.txt`);
      expect(await b.stop()).toBe(0);
    } finally {
      a.proc.kill("SIGCONT");
    }
    // Its next renewal finds another holder: status says so, naming it.
    const lost = await waitStatus(a.configPath, spec.bucket, (b) => b.workdir?.lease?.lease.state === "lost", "the lease to be lost");
    expect(lost.workdir?.lease?.lease.takenBy).toContain("node ");
    expect(await a.stop()).toBe(2);
    expect(a.log()).toContain("not uploading, the files stay in the cache");
    expect(new TextDecoder().decode(await s3.getBytes(spec.bucket, "wd/shared.txt"))).toBe("from b");
    expect(readFileSync(`${a.cachePath}/.${spec.bucket}/wd/shared.txt`, "utf8")).toBe("from a"); // kept, not lost
  }, SLOW);

  test("--take-over takes a live lease at once", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    a.proc.kill("SIGKILL");
    await a.proc.exited;
    await a.cleanup();
    const refused = await node(spec, { expectFailure: true });
    expect(await exitCode(refused)).toBe(1);
    await refused.cleanup();
    const b = await node(spec, { dir: refused.dir, args: ["--take-over"] });
    expect((await lease(spec.bucket)).pid).toBe(b.proc.pid);
    expect(b.log()).toContain("TAKEN OVER (--take-over)");
    expect(await b.stop()).toBe(0);
  }, SLOW);
});

describe("commit records", () => {
  test("verify passes after a clean stop and fails after another writer changes an object", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    run(`cd ${wd(a, spec)}; mkdir -p t1; printf 'out' > t1/out.txt; printf 0 > t1/.exitcode; head -c 100000 /dev/urandom > big.bin`);
    expect(await a.stop()).toBe(0);
    const ok = cli(["verify", "--config", a.configPath]);
    expect(ok.out).toContain(": OK");
    expect(ok.out).toContain("2 CRC64NVME checksums compared");
    expect(ok.code).toBe(0);
    // Each uploaded file's record entry carries the full-object CRC64NVME S3 holds (boto3).
    const recBody = JSON.parse(new TextDecoder().decode(await s3.getBytes(spec.bucket, "wd/.bucketfs/commits/000000000001.json"))) as {
      files: { path: string; crc64nvme?: string }[];
    };
    for (const path of ["t1/out.txt", "big.bin"]) {
      const held = await s3.checksums(spec.bucket, `wd/${path}`);
      expect(held.checksumType).toBe("FULL_OBJECT");
      expect(recBody.files.find((f) => f.path === path)?.crc64nvme).toBe(held.crc64nvme!);
    }
    // The record came before the marker.
    const listed = (await s3.list(spec.bucket, { prefix: "wd/" })).objects;
    const rec = listed.find((o) => o.key === "wd/.bucketfs/commits/000000000001.json");
    const marker = listed.find((o) => o.key === "wd/t1/.exitcode");
    expect(rec).toBeDefined();
    expect(marker).toBeDefined();
    expect(rec!.lastModifiedMs).toBeLessThanOrEqual(marker!.lastModifiedMs);

    await s3.put(spec.bucket, "wd/t1/out.txt", { text: "changed by someone else" });
    const bad = cli(["verify", "--config", a.configPath]);
    expect(bad.code).toBe(1);
    expect(bad.out).toContain("SIZE wd/t1/out.txt");
  }, SLOW);

  test("a file deleted after a sync stays deleted on both nodes; symlinks and empty directories come back on another node", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    const w = wd(a, spec);
    run(`cd ${w}; printf keep > keep.txt; printf gone > gone.txt; printf other > replaced.txt; ln -s keep.txt link; mkdir -p empty/inner`);
    const synced = cli(["sync", "--config", a.configPath]);
    expect(synced.code).toBe(0);
    expect((await s3.head(spec.bucket, "wd/gone.txt"))?.size).toBe(4);
    run(`cd ${w}; rm gone.txt replaced.txt`);
    expect(await a.stop()).toBe(0);
    // S3 never deletes: both objects are still there. Another writer replaces one of them.
    expect((await s3.head(spec.bucket, "wd/gone.txt"))?.size).toBe(4);
    await s3.put(spec.bucket, "wd/replaced.txt", { text: "new from elsewhere" });

    // Same node, same cache.
    const a2 = await node(spec, { dir: a.dir });
    expect(existsSync(`${wd(a2, spec)}/gone.txt`)).toBe(false);
    expect(readFileSync(`${wd(a2, spec)}/replaced.txt`, "utf8")).toBe("new from elsewhere");
    expect(await a2.stop()).toBe(0);

    // Another node, empty cache.
    const b = await node(spec);
    const wb = wd(b, spec);
    expect(existsSync(`${wb}/gone.txt`)).toBe(false);
    expect(readFileSync(`${wb}/keep.txt`, "utf8")).toBe("keep");
    expect(readFileSync(`${wb}/replaced.txt`, "utf8")).toBe("new from elsewhere");
    expect(lstatSync(`${wb}/link`).isSymbolicLink()).toBe(true);
    expect(readlinkSync(`${wb}/link`)).toBe("keep.txt");
    expect(lstatSync(`${wb}/empty/inner`).isDirectory()).toBe(true);
    expect(await b.stop()).toBe(0);
    expect(cli(["verify", "--config", b.configPath]).code).toBe(0);
  }, SLOW);
});
