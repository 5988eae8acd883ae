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
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { bucketfsCommand, daemonDir, removeDir, sh, startDaemon, type BucketSpec, type DaemonHandle } from "../helpers/daemon.ts";
import { startS3Server, type S3Server } from "../helpers/s3server.ts";
import { startFaultProxy, type FaultProxy, type ProxyLogEntry } from "../helpers/fault-proxy.ts";
import { statusJson, waitStatus } from "../helpers/status.ts";
import { until } from "../helpers/wait.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { runArgv } from "../helpers/run.ts";

const REPO = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const SLOW = 240_000;

let server: S3Server;
let s3: S3Tool;
const handles: DaemonHandle[] = [];
const proxies: FaultProxy[] = [];

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
}, 120_000);

afterAll(async () => {
  for (const h of handles) await h.cleanup();
  for (const h of handles) removeDir(h.dir);
  for (const p of proxies) await p.stop();
  await server?.stop();
}, 120_000);

let n = 0;
/** A fresh bucket with a workdir `wd/`; `extra` config lines per bucket. */
async function freshBucket(extra: Record<string, string> = {}): Promise<BucketSpec> {
  const bucket = `nodes-${++n}`;
  await server.createBucket(bucket);
  return { bucket, workdir: `/${bucket}/wd`, extra };
}

async function node(
  spec: BucketSpec, opts: { dir?: string; args?: string[]; expectFailure?: boolean; via?: FaultProxy; noWait?: boolean } = {},
): Promise<DaemonHandle> {
  const d = await startDaemon(opts.via ? { ...server, endpoint: opts.via.endpoint } : server, [spec], opts);
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

/** A fault proxy in front of the shared MinIO, stopped after the file. */
async function proxy(): Promise<FaultProxy> {
  const p = await startFaultProxy(server);
  proxies.push(p);
  return p;
}

/** Requests that write workdir data or records (everything but the lease) to the prefix. */
function isDataWrite(e: ProxyLogEntry, bucket: string): boolean {
  const writes = ["PutObject", "UploadPart", "CreateMultipartUpload", "CompleteMultipartUpload"];
  return writes.includes(e.op) && e.path.startsWith(`/${bucket}/wd/`) && !e.path.endsWith("/.bucketfs/lease");
}

describe("fencing", () => {
  test("the renewal runs through an upload longer than lease_time: no fence, exit 0", async () => {
    const spec = await freshBucket({ lease_time: "3", transfer_concurrency: "1" });
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    for (let i = 0; i < 5; i++) writeFileSync(`${wd(a, spec)}/slow${i}.txt`, `slow ${i}\n`);
    pa.add({ op: "PutObject", path: new RegExp(`^/${spec.bucket}/wd/slow`), action: { stall: 1500 }, times: Infinity });
    const t0 = Date.now();
    expect(await a.stop()).toBe(0);
    expect(Date.now() - t0).toBeGreaterThan(3 * 1000 * 2); // the upload took twice the lease time
    const path = `/${spec.bucket}/wd/.bucketfs/lease`;
    expect(pa.log().filter((e) => e.path === path && e.method === "PUT" && e.arrivedMs > t0 && e.status === 200).length).toBeGreaterThan(2);
    expect((await statusJson(a.configPath))[0]?.workdir?.lastUpload).toMatchObject({ ok: true, fenced: null, uploaded: 5 });
  }, SLOW);

  test("renewals failing for less than lease_time - margin do not fence: the stop uploads everything and writes its record (exit 0)", async () => {
    const spec = await freshBucket({ lease_time: "20" }); // fence 15 s after the last renewal sent
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    for (let i = 0; i < 3; i++) writeFileSync(`${wd(a, spec)}/ok${i}.txt`, `ok ${i}\n`);
    writeFileSync(`${wd(a, spec)}/.exitcode`, "0");
    // 500 (a server error): throttled renewals (503 SlowDown) are the next test's case.
    const failing = pa.add({ op: "PutObject", path: `/${spec.bucket}/wd/.bucketfs/lease`, action: { status: 500, code: "InternalError" }, times: Infinity });
    expect(await a.stop()).toBe(0);
    expect(failing.fired).toBeGreaterThan(0); // the stop's renewal (and the release) did fail
    for (let i = 0; i < 3; i++) expect((await s3.head(spec.bucket, `wd/ok${i}.txt`))?.size).toBe(5);
    expect((await s3.head(spec.bucket, "wd/.exitcode"))?.size).toBe(1);
    expect(await s3.head(spec.bucket, "wd/.bucketfs/commits/000000000001.json")).not.toBeNull();
    const st = (await statusJson(a.configPath))[0];
    expect(st?.workdir?.lastUpload).toMatchObject({ ok: true, fenced: null, uploaded: 4 });
  }, SLOW);

  test("S3 throttling the lease (503 SlowDown) under a short lease_time: the renewal retries inside the fence window, the stop uploads (exit 0)", async () => {
    // lease_time 4 s: the fence is 3 s after the last renewal sent. The throttle backoff alone
    // (0.5, 1, 2, 4 s caps for four 503s) can outlast that; bounded by the fence it must not.
    const spec = await freshBucket({ lease_time: "4" });
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    for (let i = 0; i < 3; i++) writeFileSync(`${wd(a, spec)}/thr${i}.txt`, `throttled ${i}\n`);
    writeFileSync(`${wd(a, spec)}/.exitcode`, "0");
    const leasePath = `/${spec.bucket}/wd/.bucketfs/lease`;
    // Wait for a renewal answered 200 (the window is full), then throttle the next four lease PUTs.
    const renewedBefore = pa.log().filter((e) => e.path === leasePath && e.method === "PUT" && e.status === 200).length;
    await until(() => pa.log().filter((e) => e.path === leasePath && e.method === "PUT" && e.status === 200).length > renewedBefore, 10_000, "a renewal");
    const slow = pa.add({ op: "PutObject", path: leasePath, action: { status: 503, code: "SlowDown" }, times: 4 });
    await pa.waitFor("PutObject", pa.count("PutObject") + 1, 10_000); // the first throttled renewal is under way
    expect(await a.stop()).toBe(0);
    expect(slow.fired).toBe(4);
    for (let i = 0; i < 3; i++) expect((await s3.get(spec.bucket, `wd/thr${i}.txt`))?.size).toBe(12);
    expect((await s3.head(spec.bucket, "wd/.exitcode"))?.size).toBe(1);
    const st = (await statusJson(a.configPath))[0];
    expect(st?.workdir?.lastUpload).toMatchObject({ ok: true, fenced: null, uploaded: 4 });
    expect(st?.network?.throttled).toBeGreaterThanOrEqual(4);
  }, SLOW);

  test("a stale writer (renewals failing, uploads stalled) starts no PUT after another node took over, and exits 2 with its files pending", async () => {
    const LEASE_S = 10;
    const spec = await freshBucket({ lease_time: String(LEASE_S), transfer_concurrency: "1" });
    const pa = await proxy();
    const pb = await proxy();
    const a = await node(spec, { via: pa });
    const FILES = 12;
    for (let i = 0; i < FILES; i++) writeFileSync(`${wd(a, spec)}/f${String(i).padStart(2, "0")}.txt`, `file ${i} from a\n`);
    writeFileSync(`${wd(a, spec)}/.exitcode`, "0");
    // A's renewals fail from now on; its data PUTs are each held 1.5 s by the "server".
    const leasePath = `/${spec.bucket}/wd/.bucketfs/lease`;
    // 500 (a server error; throttled renewals are the test above): the renewals fail while the
    // upload runs, and this test is about a fence that cuts a running upload.
    pa.add({ op: "PutObject", path: leasePath, action: { status: 500, code: "InternalError" }, times: Infinity });
    pa.add({ op: "PutObject", path: new RegExp(`^/${spec.bucket}/wd/`), action: { stall: 1500 }, times: Infinity });
    const aExit = a.stop("SIGTERM", 180_000);
    // B waits out the expiry A wrote, then starts (through its own proxy, which logs the takeover).
    const expires = (await lease(spec.bucket)).expiresMs;
    await Bun.sleep(Math.max(0, expires - Date.now() + 300));
    const b = await node(spec, { via: pb });
    const takeover = pb.log().find((e) => e.op === "PutObject" && e.path === leasePath && e.ifMatch !== undefined && e.status === 200);
    expect(takeover).toBeDefined();
    expect(b.log()).toContain("taking over from node");
    const codeA = await aExit;
    const aWrites = pa.log().filter((e) => isDataWrite(e, spec.bucket));
    const lastStarted = Math.max(...aWrites.map((e) => e.arrivedMs));
    const lastForwarded = Math.max(0, ...aWrites.filter((e) => e.forwardedMs !== undefined).map((e) => e.forwardedMs!));
    const t0 = takeover!.arrivedMs;
    const timeline = {
      leaseExpiresMs: expires, takeoverArrivedMs: t0, takeoverAnsweredMs: takeover!.answeredMs,
      aDataWrites: aWrites.length, aStartedAfterTakeover: aWrites.filter((e) => e.arrivedMs >= t0).length,
      aForwardedAfterTakeover: aWrites.filter((e) => (e.forwardedMs ?? 0) >= t0).length,
      aLastStartedMinusTakeoverMs: lastStarted - t0, aLastForwardedMinusTakeoverMs: lastForwarded - t0,
      aExit: codeA,
    };
    console.log(`stale-writer timeline: ${JSON.stringify(timeline)}`);
    console.log(aWrites.map((e) => `  A ${e.op} ${e.path} arrived ${e.arrivedMs - t0} ms, forwarded ${e.forwardedMs === undefined ? "never" : `${e.forwardedMs - t0} ms`}${e.clientGone ? " (client gave up)" : ""} vs takeover`).join("\n"));
    // The fence: nothing of A started, or reached the server, after B's takeover.
    expect(timeline.aStartedAfterTakeover).toBe(0);
    expect(timeline.aForwardedAfterTakeover).toBe(0);
    expect(codeA).toBe(2);
    const st = (await statusJson(a.configPath))[0];
    expect(st?.workdir?.pending.length).toBeGreaterThan(0);
    expect(st?.workdir?.pending.map((p) => p.path)).toContain(".exitcode");
    expect(st?.runs.find((r) => r.kind === "upload")?.message).toStartWith("stopped by the lease's fence");
    expect(await s3.head(spec.bucket, "wd/.bucketfs/commits/000000000001.json")).toBeNull(); // A wrote no record
    expect(await b.stop()).toBe(0);
  }, SLOW);
});

/** `bucketfs sync` as a child process (never blocking the proxies in this process), timed. */
async function timedSync(d: DaemonHandle): Promise<{ code: number; out: string; ms: number }> {
  const t0 = performance.now();
  const r = await runArgv([...bucketfsCommand(), "sync", "--config", d.configPath], { cwd: REPO, timeoutMs: 60_000 });
  return { code: r.code, out: r.out + r.err, ms: performance.now() - t0 };
}

function leaseOf(b: Awaited<ReturnType<typeof statusJson>>[number] | undefined) {
  return b?.workdir?.lease?.lease;
}

describe("own renewals", () => {
  const FILES = 5;
  function writeFiles(d: DaemonHandle, spec: BucketSpec): void {
    for (let i = 0; i < FILES; i++) writeFileSync(`${wd(d, spec)}/r${i}.txt`, `renewal test ${i}\n`);
  }
  async function allInS3(spec: BucketSpec): Promise<number> {
    let n = 0;
    for (let i = 0; i < FILES; i++) if ((await s3.head(spec.bucket, `wd/r${i}.txt`)) !== null) n++;
    return n;
  }

  test("a renewal whose answer is lost (at the timer) is recognised as ours: the lease stays held and the stop uploads everything", async () => {
    const spec = await freshBucket({ lease_time: "3" });
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    writeFiles(a, spec);
    const lost = pa.add({ op: "PutObject", path: `/${spec.bucket}/wd/.bucketfs/lease`, action: { truncate: 0 } });
    const st = await waitStatus(a.configPath, spec.bucket, (b) => (leaseOf(b)?.adopted ?? 0) >= 1, "a renewal adopted after its lost answer");
    expect(lost.fired).toBe(1);
    expect(leaseOf(st)?.state).toBe("held");
    expect(await a.stop()).toBe(0);
    expect(await allInS3(spec)).toBe(FILES);
    expect((await lease(spec.bucket)).state).toBe("released");
  }, SLOW);

  test("a lost answer at the stop's renewal is recognised as ours: exit 0, every file in S3", async () => {
    const spec = await freshBucket(); // lease_time 120: no timer renewal during the test
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    writeFiles(a, spec);
    const lost = pa.add({ op: "PutObject", path: `/${spec.bucket}/wd/.bucketfs/lease`, action: { truncate: 0 } });
    expect(await a.stop()).toBe(0);
    expect(lost.fired).toBe(1);
    expect(await allInS3(spec)).toBe(FILES);
    const st = (await statusJson(a.configPath))[0];
    expect(leaseOf(st)).toMatchObject({ state: "released", adopted: 1 });
  }, SLOW);

  test("the renew timer racing the sync's renewal, lease PUTs held 300 ms: 20 syncs, never a false 'lost'", async () => {
    const spec = await freshBucket({ lease_time: "3" }); // the timer renews every second
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    const path = `/${spec.bucket}/wd/.bucketfs/lease`;
    pa.add({ op: "PutObject", path, action: { stall: 300 }, times: Infinity });
    const before = pa.log().filter((e) => e.path === path && e.method === "PUT").length;
    for (let i = 0; i < 20; i++) {
      writeFileSync(`${wd(a, spec)}/s${i}.txt`, `sync ${i}\n`);
      const r = await timedSync(a);
      expect(r.out).not.toContain("refused");
      expect(r.code).toBe(0);
    }
    const st = (await statusJson(a.configPath))[0];
    expect(leaseOf(st)).toMatchObject({ state: "held", renewFailures: 0 });
    // Renewals went on the whole time (timer and syncs), each one alone.
    const puts = pa.log().filter((e) => e.path === path && e.method === "PUT").slice(before);
    expect(puts.length).toBeGreaterThanOrEqual(20);
    expect(puts.filter((e) => e.status === 412).length).toBe(0);
    pa.clear();
    expect(await a.stop()).toBe(0);
    expect((await s3.head(spec.bucket, "wd/s19.txt"))?.size).toBe(8);
  }, SLOW);
});

describe("refused syncs", () => {
  test("a sync is refused at once (exit 1, under 2 s, a run row with the reason) when the lease cannot be relied on, and when it is lost", async () => {
    const spec = await freshBucket({ lease_time: "3" });
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    writeFileSync(`${wd(a, spec)}/x.txt`, "x\n");
    const path = `/${spec.bucket}/wd/.bucketfs/lease`;
    pa.add({ op: "PutObject", path, action: { status: 503, code: "SlowDown" }, times: Infinity });
    // Expired by A's own clock: renewals keep failing.
    await waitStatus(a.configPath, spec.bucket, (b) => (leaseOf(b)?.fenceLeftMs ?? 1) <= 0, "the fence to close");
    const expired = await timedSync(a);
    expect(expired.code).toBe(1);
    expect(expired.out).toContain("can no longer be relied on");
    expect(expired.ms).toBeLessThan(2_000);
    // Lost: B takes over after the expiry, and A's next renewal (answered again) finds B.
    const expires = (await lease(spec.bucket)).expiresMs;
    await Bun.sleep(Math.max(0, expires - Date.now() + 300));
    const b = await node(spec);
    pa.clear();
    await waitStatus(a.configPath, spec.bucket, (s) => leaseOf(s)?.state === "lost", "A to find its lease lost");
    const lost = await timedSync(a);
    expect(lost.code).toBe(1);
    expect(lost.out).toContain("lost");
    expect(lost.ms).toBeLessThan(2_000);
    const runs = (await statusJson(a.configPath))[0]?.runs.filter((r) => r.kind === "sync" && r.outcome === "refused") ?? [];
    expect(runs.length).toBe(2);
    expect(await a.stop()).toBe(2);
    expect(await b.stop()).toBe(0);
  }, SLOW);

  test("a sync while the stop's upload runs is refused at once (wrong phase)", async () => {
    const spec = await freshBucket();
    const pa = await proxy();
    const a = await node(spec, { via: pa });
    writeFileSync(`${wd(a, spec)}/slow.txt`, "slow\n");
    const held = pa.add({ op: "PutObject", path: `/${spec.bucket}/wd/slow.txt`, action: { stall: 5_000 } });
    const exit = a.stop();
    await waitStatus(a.configPath, spec.bucket, (b) => b.phase === "uploading" && held.fired === 1, "the stop's upload to run");
    const r = await timedSync(a);
    expect(r.code).toBe(1);
    expect(r.out).toContain("bucketfs is stopping");
    expect(r.ms).toBeLessThan(2_000);
    expect(await exit).toBe(0);
  }, SLOW);
});

describe("prefetch", () => {
  test("a listed key the server answers 404 for is tried twice, skipped, and reported; the start succeeds", async () => {
    const spec = await freshBucket();
    await s3.put(spec.bucket, "wd/ok.txt", { text: "ok" });
    await s3.put(spec.bucket, "wd/ghost.txt", { text: "listed but never served" });
    const pa = await proxy();
    const ghost = pa.add({ op: "GetObject", path: `/${spec.bucket}/wd/ghost.txt`, action: { status: 404, code: "NoSuchKey" }, times: Infinity });
    const a = await node(spec, { via: pa });
    expect(ghost.fired).toBe(2);
    expect(readFileSync(`${wd(a, spec)}/ok.txt`, "utf8")).toBe("ok");
    expect(existsSync(`${wd(a, spec)}/ghost.txt`)).toBe(false);
    const st = (await statusJson(a.configPath))[0];
    expect(st?.workdir?.unreadable.map((u) => u.key)).toEqual(["wd/ghost.txt"]);
    expect(st?.runs.find((r) => r.kind === "prefetch")).toMatchObject({ outcome: "ok" });
    expect(await a.stop()).toBe(0);
    // The record names it as unreadable, not as a deletion.
    const rec = JSON.parse(new TextDecoder().decode(await s3.getBytes(spec.bucket, "wd/.bucketfs/commits/000000000001.json")));
    expect(rec.unreadable.map((u: { key: string }) => u.key)).toEqual(["wd/ghost.txt"]);
    expect(rec.deleted).toEqual([]);
  }, SLOW);
});

describe("names", () => {
  const Q = "\u201b"; // the mapping's quote character (src/service/workdir/names.ts)
  const raw = (dir: string, ...parts: (string | number[])[]) =>
    Buffer.concat([Buffer.from(`${dir}/`), ...parts.map((p) => (typeof p === "string" ? Buffer.from(p) : Buffer.from(p)))]);

  test("a name that is not UTF-8 and a name with a newline round-trip through stop, an empty-cache start and verify", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    const w = wd(a, spec);
    writeFileSync(raw(w, "a", [0xff], ".txt"), "ff");
    mkdirSync(raw(w, "d", [0xfe]));
    writeFileSync(raw(w, "d", [0xfe], "/inner.txt"), "in");
    writeFileSync(`${w}/new\nline.txt`, "nl");
    expect(await a.stop()).toBe(0);
    expect((await s3.head(spec.bucket, `wd/a${Q}FF.txt`))?.size).toBe(2);
    expect((await s3.head(spec.bucket, `wd/d${Q}FE/inner.txt`))?.size).toBe(2);
    expect((await s3.head(spec.bucket, "wd/new\nline.txt"))?.size).toBe(2);
    const rec = JSON.parse(new TextDecoder().decode(await s3.getBytes(spec.bucket, "wd/.bucketfs/commits/000000000001.json")));
    expect(rec.names.map((n: { path: string }) => n.path)).toEqual([`a${Q}FF.txt`, `d${Q}FE/inner.txt`]);

    const b = await node(spec); // another node, empty cache: the original bytes come back
    const wb = wd(b, spec);
    expect(readFileSync(raw(wb, "a", [0xff], ".txt"), "utf8")).toBe("ff");
    expect(readFileSync(raw(wb, "d", [0xfe], "/inner.txt"), "utf8")).toBe("in");
    expect(readFileSync(`${wb}/new\nline.txt`, "utf8")).toBe("nl");
    expect(existsSync(`${wb}/a${Q}FF.txt`)).toBe(false);
    expect((await statusJson(b.configPath))[0]?.workdir?.pending).toEqual([]); // restored files are clean
    expect(await b.stop()).toBe(0);
    const upload = (await statusJson(b.configPath))[0]?.runs.find((r) => r.kind === "upload");
    expect(upload).toMatchObject({ outcome: "ok", files: 0 }); // nothing uploaded again
    const v = cli(["verify", "--config", b.configPath]);
    expect(v.code).toBe(0);
  }, SLOW);

  test("a 1,100-byte path is reported (status --json) and holds back the markers; unuploadable_holds_markers = no is the way out", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    const w = wd(a, spec);
    const dirs = Array.from({ length: 5 }, (_, i) => `${i}`.repeat(200));
    mkdirSync(`${w}/${dirs.join("/")}`, { recursive: true });
    const long = `${dirs.join("/")}/${"f".repeat(92)}`;
    expect(Buffer.byteLength(`wd/${long}`)).toBe(1100);
    writeFileSync(`${w}/${long}`, "long");
    writeFileSync(`${w}/ok.txt`, "ok");
    writeFileSync(`${w}/.exitcode`, "0");
    expect(await a.stop()).toBe(2);
    let st = (await statusJson(a.configPath))[0];
    expect(st?.workdir?.unuploadable.map((u) => u.path)).toEqual([long]);
    expect(st?.workdir?.unuploadable[0]?.reason).toContain("1100 bytes");
    expect(await s3.head(spec.bucket, "wd/.exitcode")).toBeNull(); // held back
    expect((await s3.head(spec.bucket, "wd/ok.txt"))?.size).toBe(2);
    expect((await lease(spec.bucket)).state).toBe("held"); // kept: not everything is in S3

    // The way out: let the markers go without it (the file stays listed).
    const spec2 = { ...spec, extra: { unuploadable_holds_markers: "no" } };
    const a2 = await node(spec2, { dir: a.dir });
    expect(await a2.stop()).toBe(0);
    st = (await statusJson(a2.configPath))[0];
    expect(st?.workdir?.unuploadable.map((u) => u.path)).toEqual([long]);
    expect((await s3.head(spec.bucket, "wd/.exitcode"))?.size).toBe(1);
    expect((await lease(spec.bucket)).state).toBe("released");
    expect(cli(["verify", "--config", a2.configPath]).code).toBe(0);
  }, SLOW);
});

describe("messages that name the real cause", () => {
  test("a holder whose clock is behind is not taken over: the start is refused naming the clocks", async () => {
    const spec = await freshBucket();
    const now = Date.now();
    // A live holder whose clock is a minute behind: its expiry is past by ours, but S3 wrote it just now.
    const rec = { v: 1, state: "held", holder: "slow-node:/cache", node: "slow-node", pid: 4242, bootId: "b", runId: "r", startedMs: now - 90_000, renewedMs: now - 60_000, expiresMs: now - 30_000 };
    await s3.put(spec.bucket, "wd/.bucketfs/lease", { text: JSON.stringify(rec) });
    const b = await node(spec, { expectFailure: true });
    expect(await exitCode(b)).toBe(1);
    expect(b.log()).toContain("node slow-node (pid 4242");
    // 60 s, give or take a second: S3's Last-Modified has whole seconds (a run here read 59).
    expect(b.log()).toMatch(/its clock is about (59|6[01]) s behind/);
    expect(b.log()).not.toContain("stopped renewing");
    expect((await lease(spec.bucket)).node).toBe("slow-node"); // not taken
  }, SLOW);

  test("two daemons started at once on one cache: one serves, the other is refused naming it", async () => {
    const spec = await freshBucket();
    const dir = daemonDir(spec.bucket);
    const x = await node(spec, { dir, noWait: true });
    await Bun.sleep(5); // distinct log file names; still within each other's start-up
    const y = await node(spec, { dir, noWait: true });
    const first = await Promise.race([x.proc.exited.then(() => x), y.proc.exited.then(() => y)]);
    const winner = first === x ? y : x;
    expect(await first.proc.exited).toBe(1);
    const log = first.log();
    expect(log).toMatch(new RegExp(`already served by (bucketfs pid ${winner.proc.pid}|another bucketfs)`));
    expect(log).not.toContain("database is locked");
    await waitStatus(winner.configPath, spec.bucket, (b) => b.phase === "serving", "the winner to serve");
    expect(await winner.stop()).toBe(0);
  }, SLOW);
});

describe("nothing hidden under the mount", () => {
  test("files written at the workdir's path while bucketfs was stopped become local changes and are uploaded; a conflict refuses the start", async () => {
    const spec = await freshBucket();
    const a = await node(spec);
    writeFileSync(`${wd(a, spec)}/kept.txt`, "from the mount\n");
    expect(await a.stop()).toBe(0);
    // An engine still running writes into the plain directories where the mount was.
    const under = wd(a, spec);
    mkdirSync(`${under}/.snakemake/metadata`, { recursive: true });
    writeFileSync(`${under}/.snakemake/metadata/job1`, "meta\n");
    writeFileSync(`${under}/late.txt`, "late\n");
    writeFileSync(`${a.mnt[spec.bucket]}/outside.txt`, "outside\n");
    const a2 = await node(spec, { dir: a.dir });
    expect(readFileSync(`${wd(a2, spec)}/.snakemake/metadata/job1`, "utf8")).toBe("meta\n");
    expect(readFileSync(`${wd(a2, spec)}/late.txt`, "utf8")).toBe("late\n");
    expect(a2.log()).toContain("outside.txt"); // reported: the mount hides it
    expect(await a2.stop()).toBe(0);
    expect((await s3.head(spec.bucket, "wd/.snakemake/metadata/job1"))?.size).toBe(5);
    expect((await s3.head(spec.bucket, "wd/late.txt"))?.size).toBe(5);
    expect(existsSync(`${under}/late.txt`)).toBe(false); // moved, not copied

    // A stray file where the workdir already has one: the start is refused, nothing moved or hidden.
    writeFileSync(`${under}/kept.txt`, "a different kept.txt\n");
    const a3 = await node(spec, { dir: a.dir, expectFailure: true });
    expect(await exitCode(a3)).toBe(1);
    expect(a3.log()).toContain("conflict with the workdir: kept.txt");
    expect(readFileSync(`${under}/kept.txt`, "utf8")).toBe("a different kept.txt\n");
    await a3.cleanup();
  }, SLOW);
});
