/**
 * Slow, far and flaky links (issue 20), against a real MinIO behind the loopback fault proxy
 * (test/helpers/fault-proxy.ts): a 1 MB/s uplink, a blackholed connect, a body that stalls
 * halfway, a server silent for a path, malformed answers, throttling answers, a server that
 * closes idle keep-alive connections after 1 s, a skewed clock, short-lived and hanging
 * credential_process credentials, and the process-wide GET bound. Every claim about S3 is checked with boto3 (test/helpers/s3tool.ts) against
 * MinIO directly; waits are on the proxy's counters or `status --json`, never on log text.
 * The proxy runs in this process, so whatever reads the mount runs as a child process.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createS3Store, type S3StoreTuning } from "../../src/store/s3.ts";
import { GET_LIMIT, networkState } from "../../src/store/s3/request.ts";
import { StoreError, type ObjectStore } from "../../src/store/types.ts";
import { removeDir, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { run } from "../helpers/run.ts";
import { startBlackhole, startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { writeRandom } from "../helpers/files.ts";
import { statusJson, waitStatus } from "../helpers/status.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const BUCKET = "network";

let server: S3Server;
let proxy: FaultProxy;
let s3: S3Tool;
let tmp: string;
const handles: DaemonHandle[] = [];

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

beforeAll(async () => {
  server = await startS3Server();
  proxy = await startFaultProxy(server);
  s3 = s3tool(server);
  await server.createBucket(BUCKET);
  tmp = mkdtempSync(join(TEST_ROOT, "network-"));
}, 120_000);

afterAll(async () => {
  for (const h of handles) {
    await h.cleanup();
    removeDir(h.dir);
  }
  await proxy?.stop();
  await server?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
}, 120_000);

function storeVia(endpoint: string, tuning: S3StoreTuning = {}): ObjectStore {
  return createS3Store(
    { bucket: BUCKET, accessKeyId: server.accessKey, secretAccessKey: server.secretKey, region: server.region, endpoint, partSize: 8 * MiB, transferConcurrency: 4 },
    { retryBaseMs: 10, ...tuning },
  );
}

async function errorOf(p: Promise<unknown>): Promise<StoreError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof StoreError) return err;
    throw err;
  }
  throw new Error("expected a rejection");
}

describe("store: timeouts measure progress", () => {
  test("an upload over a 1 MB/s uplink outlasts the idle timeout many times and completes", async () => {
    const src = join(tmp, "slow-up");
    writeRandom(src, 12 * MiB);
    proxy.clear();
    proxy.link({ upBytesPerSec: 1_000_000 });
    try {
      // Idle 3 s; each part takes several seconds to cross: only progress keeps it alive.
      const st = storeVia(proxy.endpoint, { idleTimeoutMs: 3_000, maxAttempts: 1 });
      const before = proxy.upBytes;
      const t0 = Date.now();
      const etag = await st.upload("slow/up", src);
      const secs = (Date.now() - t0) / 1000;
      expect(etag).toMatch(/-2$/);
      expect(proxy.upBytes - before).toBeGreaterThanOrEqual(12 * MiB);
      expect(secs).toBeGreaterThan(10); // it really crossed the 1 MB/s link
      expect(await s3.get(BUCKET, "slow/up")).toMatchObject({ size: 12 * MiB, sha256: sha256(readFileSync(src)) });
    } finally {
      proxy.link({ upBytesPerSec: undefined });
    }
  }, 90_000);

  test("a body that stalls halfway: retried after the idle time; stalling always: an error within the stall budget", async () => {
    const body = new Uint8Array(3 * MiB).map((_, i) => (i * 13) & 0xff);
    await s3.put(BUCKET, "stall/obj", { bytes: body });
    proxy.clear();
    const st = storeVia(proxy.endpoint, { idleTimeoutMs: 1_500, stallBudgetMs: 5_000 });
    const once = proxy.add({ op: "GetObject", path: "/stall/obj", action: { stallBodyAfter: 1 * MiB } });
    const out = new Uint8Array(body.byteLength);
    const n = await st.streamRange("stall/obj", 0, body.byteLength, async (c, pos) => out.set(c, pos));
    expect(once.fired).toBe(1);
    expect(n).toBe(body.byteLength);
    expect(sha256(out)).toBe(sha256(body));

    proxy.clear();
    const always = proxy.add({ op: "GetObject", path: "/stall/obj", action: { stallBodyAfter: 100_000 }, times: Infinity });
    const t0 = Date.now();
    const e = await errorOf(st.streamRange("stall/obj", 0, body.byteLength, async () => {}));
    const secs = (Date.now() - t0) / 1000;
    expect(e.kind).toBe("network");
    // Each attempt delivered 100 KB (progress), then stalled 1.5 s; the budget counts the stall
    // since the last byte, so several attempts ran, and the whole read stayed bounded.
    expect(always.fired).toBeGreaterThanOrEqual(2);
    expect(secs).toBeLessThan(6 * 1.5 + 3);
    proxy.clear();

    // A server that goes silent before any byte: the budget, not attempts x idle.
    const silent = proxy.add({ op: "HeadObject", path: "/stall/obj", action: { stall: Infinity }, times: Infinity });
    const t1 = Date.now();
    const e2 = await errorOf(storeVia(proxy.endpoint, { idleTimeoutMs: 3_000, stallBudgetMs: 5_000, maxAttempts: 6 }).head("stall/obj"));
    const secs2 = (Date.now() - t1) / 1000;
    expect(e2.kind).toBe("network");
    expect(silent.fired).toBe(2); // 3 s, then the 2 s left of the budget
    expect(secs2).toBeGreaterThanOrEqual(4.5);
    expect(secs2).toBeLessThan(8);
    proxy.clear();
  }, 60_000);

  test("a malformed status line or chunk-size line is retried like a reset", async () => {
    await s3.put(BUCKET, "bad/obj", { text: "good bytes" });
    proxy.clear();
    const st = storeVia(proxy.endpoint);
    const status = proxy.add({ op: "GetObject", path: "/bad/obj", action: { malformed: "status" } });
    const chunk = proxy.add({ op: "GetObject", path: "/bad/obj", action: { malformed: "chunk" } });
    const got = await st.getSmall("bad/obj");
    expect(new TextDecoder().decode(got?.body)).toBe("good bytes");
    expect([status.fired, chunk.fired]).toEqual([1, 1]);
    proxy.clear();
  });

  test("a blackholed connect is cut by the connect timeout, and at once by an abort", async () => {
    const hole = await startBlackhole();
    try {
      const st = storeVia(`http://127.0.0.1:${hole.port}`, { connectTimeoutMs: 1_000, stallBudgetMs: 4_000 });
      const t0 = Date.now();
      const e = await errorOf(st.head("any"));
      const secs = (Date.now() - t0) / 1000;
      expect(e.kind).toBe("network");
      expect(e.message).toContain(`127.0.0.1:${hole.port}`);
      expect(e.message).toContain("no connection in 1000 ms");
      expect(secs).toBeLessThan(6);

      const slow = storeVia(`http://127.0.0.1:${hole.port}`, { connectTimeoutMs: 60_000 });
      const ac = new AbortController();
      const t1 = Date.now();
      const p = errorOf(slow.head("any", ac.signal));
      setTimeout(() => ac.abort(), 300);
      const e2 = await p;
      expect(e2.kind).toBe("aborted");
      expect(Date.now() - t1).toBeLessThan(2_000);
    } finally {
      await hole.stop();
    }
  }, 30_000);
});

describe("store: aborts cut uploads", () => {
  test("an upload whose connect never completes is cut at once by an abort", async () => {
    const hole = await startBlackhole();
    try {
      const src = join(tmp, "to-hole");
      writeRandom(src, 2 * MiB);
      const st = storeVia(`http://127.0.0.1:${hole.port}`, { maxAttempts: 1 });
      const ac = new AbortController();
      const t0 = Date.now();
      const p = errorOf(st.upload("hole/x", src, { signal: ac.signal }));
      setTimeout(() => ac.abort(), 300);
      expect((await p).kind).toBe("aborted");
      expect(Date.now() - t0).toBeLessThan(2_000);
    } finally {
      await hole.stop();
    }
  }, 30_000);
});

/** The daemon, reaching S3 through the proxy. */
async function daemon(spec: { workdir?: string; extra?: Record<string, string>; defaultChain?: boolean } = {}, env?: Record<string, string>, expectFailure = false): Promise<DaemonHandle> {
  const d = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: BUCKET, ...spec }], { ...(env ? { env } : {}), expectFailure });
  handles.push(d);
  return d;
}

/**
 * Connects of process `pid` to 127.0.0.1:`port` that wait for the SYN's answer (SYN_SENT), from
 * /proc: the daemon's socket inodes matched against /proc/net/tcp.
 */
function pendingConnects(pid: number, port: number): number {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch {
      /* closed meanwhile */
    }
  }
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  return readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1).filter((line) => {
    const f = line.trim().split(/\s+/);
    return f[2] === `0100007F:${hexPort}` && f[3] === "02" && inodes.has(f[9] ?? "");
  }).length;
}

describe("daemon: an endpoint whose connects are blackholed", () => {
  test("the stop's connects hang: a second SIGINT ends the daemon at once (exit 2), nothing is lost, a later start uploads", async () => {
    // A proxy of its own, so its port can go dark under the daemon: stopped, then taken over
    // by a listener whose accept queue is full (SYNs dropped, as on a blackholed route).
    const own = await startFaultProxy(server);
    const port = Number(new URL(own.endpoint).port);
    let hole: Awaited<ReturnType<typeof startBlackhole>> | undefined;
    try {
      const d = await startDaemon({ ...server, endpoint: own.endpoint }, [{ bucket: BUCKET, workdir: `/${BUCKET}/hole1` }]);
      handles.push(d);
      const wd = join(d.mnt[BUCKET]!, "hole1");
      writeRandom(join(wd, "a.bin"), 1 * MiB);
      writeRandom(join(wd, "b.bin"), 100_000);
      writeFileSync(join(wd, ".exitcode"), "0");
      const shas = { a: sha256(readFileSync(join(wd, "a.bin"))), b: sha256(readFileSync(join(wd, "b.bin"))) };
      await own.stop();
      hole = await startBlackhole(port);
      d.proc.kill("SIGINT");
      // The stop's requests are stuck in the connect (the lease renewal and the uploads).
      await until(() => pendingConnects(d.proc.pid, port) >= 1, 30_000, "a connect of the daemon to the blackholed port");
      const st = await waitStatus(d.configPath, BUCKET, (b) => b.phase === "uploading", "the uploading phase", 30_000);
      expect(st.phase).toBe("uploading");
      const t0 = Date.now();
      const code = await d.stop("SIGINT", 20_000);
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(code).toBe(2);
      const after = (await statusJson(d.configPath)).find((b) => b.bucket === BUCKET)!;
      expect(after.workdir?.pending.map((p) => p.path).sort()).toEqual([".exitcode", "a.bin", "b.bin"]);
      expect(await s3.head(BUCKET, "hole1/a.bin")).toBeNull();
      await hole.stop();
      hole = undefined;

      // The same cache, a working endpoint: the start uploads what the cut stop left.
      proxy.clear();
      const again = await startDaemon({ ...server, endpoint: proxy.endpoint }, [{ bucket: BUCKET, workdir: `/${BUCKET}/hole1` }], { dir: d.dir });
      handles.push(again);
      expect(await again.stop()).toBe(0);
      expect(await s3.get(BUCKET, "hole1/a.bin")).toMatchObject({ size: 1 * MiB, sha256: shas.a });
      expect(await s3.get(BUCKET, "hole1/b.bin")).toMatchObject({ size: 100_000, sha256: shas.b });
      expect(await s3.head(BUCKET, "hole1/.exitcode")).not.toBeNull();
    } finally {
      await hole?.stop();
      await own.stop().catch(() => undefined);
    }
  }, 150_000);

  test("the connect timeout alone ends each attempt: a listing of a blackholed endpoint fails after the attempts' connect timeouts, not the kernel's", async () => {
    const hole = await startBlackhole();
    try {
      // 1 s instead of 10 s (the diagnostics switch), so six attempts take seconds, not a minute.
      const d = await startDaemon({ ...server, endpoint: `http://127.0.0.1:${hole.port}` }, [{ bucket: BUCKET }], { env: { BUCKETFS_CONNECT_TIMEOUT_MS: "1000" } });
      handles.push(d);
      const t0 = Date.now();
      const r = await run(`ls ${join(d.mnt[BUCKET]!, "dark")}`);
      const secs = (Date.now() - t0) / 1000;
      expect(r.code).not.toBe(0);
      expect(r.err).toContain("Input/output error");
      // Six attempts of 1 s each plus their backoffs (at most 0.1+0.2+0.4+0.8+1.6 s), then EIO:
      // each attempt ended on its own connect timer (the kernel gives a SYN about 127 s).
      expect(secs).toBeGreaterThanOrEqual(5.5);
      expect(secs).toBeLessThan(6 * 1 + 3.1 + 5);
      // Each of them is counted as a timeout in status --json (rewritten within 500 ms).
      const st = await waitStatus(d.configPath, BUCKET, (b) => (b.network?.timeouts ?? 0) >= 6, "six connect timeouts counted", 5_000);
      expect(st.network?.timeouts).toBeGreaterThanOrEqual(6);
      expect(await d.stop()).toBe(0);
    } finally {
      await hole.stop();
    }
  }, 90_000);
});

describe("daemon over a slow, flaky link", () => {
  test("stop upload over a 1 MB/s uplink: exit 0, every file in S3", async () => {
    proxy.clear();
    const d = await daemon({ workdir: `/${BUCKET}/up1` });
    const wd = join(d.mnt[BUCKET]!, "up1");
    // 36 MiB: parts of 16, 16 and 4 MiB share the uplink; a 16 MiB part needs more than the
    // 30 s idle timeout to cross, which failed every attempt when only answers counted.
    writeRandom(join(wd, "big.bin"), 36 * MiB);
    writeRandom(join(wd, "small.bin"), 300_000);
    writeFileSync(join(wd, ".exitcode"), "0");
    const shas = { big: sha256(readFileSync(join(wd, "big.bin"))), small: sha256(readFileSync(join(wd, "small.bin"))) };
    proxy.link({ upBytesPerSec: 1_000_000 });
    try {
      const t0 = Date.now();
      expect(await d.stop("SIGTERM", 150_000)).toBe(0);
      const secs = (Date.now() - t0) / 1000;
      expect(secs).toBeGreaterThan(30); // the bytes really crossed the 1 MB/s link
    } finally {
      proxy.link({ upBytesPerSec: undefined });
    }
    expect(await s3.get(BUCKET, "up1/big.bin")).toMatchObject({ size: 36 * MiB, sha256: shas.big });
    expect(await s3.get(BUCKET, "up1/small.bin")).toMatchObject({ size: 300_000, sha256: shas.small });
    expect(await s3.head(BUCKET, "up1/.exitcode")).not.toBeNull();
  }, 200_000);

  test("a stop whose upload hangs on a silent server exits at once on a second SIGINT", async () => {
    proxy.clear();
    const d = await daemon({ workdir: `/${BUCKET}/up2` });
    const wd = join(d.mnt[BUCKET]!, "up2");
    writeRandom(join(wd, "f.bin"), 1 * MiB);
    writeFileSync(join(wd, ".exitcode"), "0");
    const stall = proxy.add({ op: "PutObject", action: { stall: Infinity }, times: Infinity });
    const before = proxy.count("PutObject");
    d.proc.kill("SIGINT");
    await proxy.waitFor("PutObject", before + 1, 30_000);
    const t0 = Date.now();
    const code = await d.stop("SIGINT", 20_000);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(code).toBe(2); // the upload did not complete: the files stay in the cache
    expect(stall.fired).toBeGreaterThanOrEqual(1);
    expect(await s3.head(BUCKET, "up2/f.bin")).toBeNull();
    proxy.clear();
  }, 90_000);

  test("S3 silent for a path never seen: the reader gets EIO within the stall budget, not 6 x 30 s; a body that stalls once is read right", async () => {
    const body = new Uint8Array(3 * MiB).map((_, i) => (i * 29 + 7) & 0xff);
    await s3.put(BUCKET, "midstall/obj", { bytes: body });
    proxy.clear();
    const d = await daemon();
    const mnt = d.mnt[BUCKET]!;
    // Every request about "silent" hangs without a byte.
    const hang = proxy.add({ path: /silent/, action: { stall: Infinity }, times: Infinity });
    const q = proxy.add({ query: /silent/, action: { stall: Infinity }, times: Infinity });
    const t0 = Date.now();
    const r = await run(`ls ${join(mnt, "silent")}`);
    const secs = (Date.now() - t0) / 1000;
    expect(r.code).not.toBe(0);
    expect(r.err).toContain("Input/output error");
    expect(hang.fired + q.fired).toBeGreaterThanOrEqual(1);
    expect(secs).toBeGreaterThan(40); // the 45 s budget, with its 30 s idle attempts
    expect(secs).toBeLessThan(75); // not 6 attempts x 30 s
    proxy.clear();
    // The body of one GET stops after 1 MiB: after the 30 s idle time the read resumes.
    const once = proxy.add({ op: "GetObject", path: "/midstall/obj", action: { stallBodyAfter: 1 * MiB } });
    const t1 = Date.now();
    const got = await run(`sha256sum ${join(mnt, "midstall/obj")}`);
    const secs1 = (Date.now() - t1) / 1000;
    expect(got.out.split(" ")[0]).toBe(sha256(body));
    expect(once.fired).toBe(1);
    expect(secs1).toBeLessThan(45);
    proxy.clear();
    expect(await d.stop()).toBe(0);
  }, 180_000);

  test("a server that closes idle keep-alive connections after 1 s: reads spaced across it never fail", async () => {
    for (let i = 0; i < 6; i++) await s3.put(BUCKET, `ka/f${i}`, { text: `file ${i}\n` });
    proxy.clear();
    proxy.link({ idleCloseMs: 1_000 });
    try {
      const d = await daemon();
      const mnt = d.mnt[BUCKET]!;
      expect((await run(`cat ${join(mnt, "ka/f0")}`)).out).toBe("file 0\n");
      for (let i = 1; i < 6; i++) {
        // Wait until the server closed an idle connection, then read again right on its heels,
        // and once just before the close (900 ms): both sides of the race.
        const closed = proxy.idleClosed;
        if (i % 2 === 1) await until(() => proxy.idleClosed > closed, 10_000, "an idle close");
        else await Bun.sleep(900);
        const r = await run(`cat ${join(mnt, `ka/f${i}`)}`);
        expect(r).toMatchObject({ code: 0, out: `file ${i}\n` });
      }
      expect(proxy.idleClosed).toBeGreaterThanOrEqual(3);
      expect(await d.stop()).toBe(0);
    } finally {
      proxy.link({ idleCloseMs: undefined });
    }
  }, 90_000);

  test("a skewed clock: a clear start error naming the offset, and the offset in status --json", async () => {
    await s3.put(BUCKET, "skew/in.txt", { text: "x" });
    proxy.clear();
    // S3 as it answers a host whose clock is 20 minutes fast: Date 20 min behind ours, and 403.
    proxy.link({ dateOffsetMs: -20 * 60_000 });
    const refuse = proxy.add({ op: "ListObjectsV2", action: { status: 403, code: "RequestTimeTooSkewed" }, times: Infinity });
    try {
      const d = await daemon({ workdir: `/${BUCKET}/skew` }, undefined, true);
      const code = await d.proc.exited;
      expect(code).toBe(1);
      expect(refuse.fired).toBeGreaterThanOrEqual(1);
      const st = (await statusJson(d.configPath)).find((b) => b.bucket === BUCKET)!;
      expect(st.daemonRun?.outcome).toBe("failed");
      expect(st.network).not.toBeNull();
      expect(Math.round((st.network?.clockSkewMs ?? 0) / 60_000)).toBe(-20);
      const msg = JSON.stringify(st.runs);
      expect(msg).toContain("RequestTimeTooSkewed");
      expect(msg).toContain("20 min ahead of the server's");
    } finally {
      proxy.link({ dateOffsetMs: undefined });
      proxy.clear();
    }
  }, 90_000);
});

/**
 * A `credential_process` profile handing out the MinIO keys with an expiry `lifetimeS` ahead.
 * Each run appends a line to `runs`; while `hang` exists a run never answers (its pid is kept
 * in `hung` so the test can end it).
 */
function credentialProfile(dir: string, lifetimeS: number): { env: Record<string, string>; runs(): number; hang(): void; cleanup(): void } {
  const script = join(dir, "cred.sh");
  writeFileSync(script, [
    "#!/bin/bash",
    `echo run >> ${dir}/runs`,
    `if [ -e ${dir}/hang ]; then echo $$ >> ${dir}/hung; exec sleep 300; fi`,
    `exp=$(date -u -d "+${lifetimeS} seconds" +%Y-%m-%dT%H:%M:%SZ)`,
    `printf '{"Version":1,"AccessKeyId":"%s","SecretAccessKey":"%s","Expiration":"%s"}\\n' '${server.accessKey}' '${server.secretKey}' "$exp"`,
  ].join("\n") + "\n", { mode: 0o755 });
  writeFileSync(join(dir, "aws-config"), `[profile bft]\ncredential_process = ${script}\n`);
  const runsOf = () => {
    try {
      return readFileSync(join(dir, "runs"), "utf8").split("\n").filter(Boolean).length;
    } catch {
      return 0;
    }
  };
  return {
    env: {
      AWS_CONFIG_FILE: join(dir, "aws-config"), AWS_SHARED_CREDENTIALS_FILE: join(dir, "none"), AWS_PROFILE: "bft",
      AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "", AWS_SESSION_TOKEN: "", AWS_EC2_METADATA_DISABLED: "true",
    },
    runs: runsOf,
    hang: () => writeFileSync(join(dir, "hang"), ""),
    cleanup: () => {
      try {
        for (const pid of readFileSync(join(dir, "hung"), "utf8").split("\n").filter(Boolean)) {
          try {
            process.kill(Number(pid), "SIGKILL");
          } catch {
            /* gone */
          }
        }
      } catch {
        /* none hung */
      }
    },
  };
}

describe("daemon with short-lived credentials from a credential_process", () => {
  test("credentials that expire in 2 minutes are fetched once, not per request", async () => {
    for (let i = 0; i < 10; i++) await s3.put(BUCKET, `cred/f${i}`, { text: `c${i}` });
    const dir = mkdtempSync(join(tmp, "cred-"));
    const prof = credentialProfile(dir, 120);
    try {
      proxy.clear();
      const d = await daemon({ defaultChain: true }, prof.env);
      const mnt = d.mnt[BUCKET]!;
      const before = proxy.count("GetObject") + proxy.count("HeadObject") + proxy.count("ListObjectsV2");
      for (let i = 0; i < 10; i++) expect((await run(`cat ${join(mnt, `cred/f${i}`)}`)).out).toBe(`c${i}`);
      const requests = proxy.count("GetObject") + proxy.count("HeadObject") + proxy.count("ListObjectsV2") - before;
      expect(requests).toBeGreaterThanOrEqual(10);
      expect(prof.runs()).toBe(1);
      // The status file is rewritten within 500 ms of a change.
      const st = await waitStatus(d.configPath, BUCKET, (b) => b.network?.credentials.expiresAtMs != null, "the credentials in status --json", 10_000);
      const creds = st.network!.credentials;
      expect(creds.kind).toBe("default chain");
      expect(creds.fetches).toBe(1);
      expect(creds.expiresAtMs! - Date.now()).toBeGreaterThan(60_000);
      expect(await d.stop()).toBe(0);
    } finally {
      prof.cleanup();
    }
  }, 90_000);

  test("a credential_process that hangs on refresh: reads go on with the cached identity, the stop exits in normal time", async () => {
    for (let i = 0; i < 4; i++) await s3.put(BUCKET, `hang/in${i}`, { text: `h${i}` });
    const dir = mkdtempSync(join(tmp, "credhang-"));
    // 40 s: the refresh starts 20 s after the first fetch; the identity is good until ~35 s.
    const prof = credentialProfile(dir, 40);
    try {
      proxy.clear();
      const d = await daemon({ defaultChain: true, workdir: `/${BUCKET}/hang` }, prof.env);
      const wd = join(d.mnt[BUCKET]!, "hang");
      expect(prof.runs()).toBe(1);
      prof.hang();
      // Keep asking S3 until a refresh has started (and hangs).
      let i = 0;
      const deadline = Date.now() + 30_000;
      while (prof.runs() < 2) {
        if (Date.now() > deadline) throw new Error("no refresh started");
        // Outside the workdir (a local directory): every new name is a LIST to S3.
        const r = await run(`ls ${join(d.mnt[BUCKET]!, "nonexistent-dir-" + i++)} 2>&1; true`);
        expect(r.code).toBe(0);
        await Bun.sleep(200);
      }
      // Reads of objects not cached yet go on with the old identity while the refresh hangs.
      const fresh = `hang-late-${Date.now()}`;
      await s3.put(BUCKET, `${fresh}/x`, { text: "late" });
      const r = await run(`cat ${join(d.mnt[BUCKET]!, fresh, "x")}`);
      expect(r).toMatchObject({ code: 0, out: "late" });
      writeRandom(join(wd, "out.bin"), 200_000);
      writeFileSync(join(wd, ".exitcode"), "0");
      const t0 = Date.now();
      expect(await d.stop("SIGTERM", 30_000)).toBe(0);
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(prof.runs()).toBe(2);
      expect(await s3.head(BUCKET, "hang/out.bin")).not.toBeNull();
    } finally {
      prof.cleanup();
    }
  }, 120_000);
});

describe("store: throttling and bounded GETs", () => {
  test("503 SlowDown and 429 are retried with the throttling backoff, and counted", async () => {
    await s3.put(BUCKET, "thr/obj", { text: "t" });
    proxy.clear();
    const st = storeVia(proxy.endpoint);
    const before = networkState().throttled;
    proxy.add({ op: "HeadObject", path: "/thr/obj", action: { status: 503, code: "SlowDown" } });
    proxy.add({ op: "HeadObject", path: "/thr/obj", action: { status: 429, code: "TooManyRequests" } });
    expect((await st.head("thr/obj"))?.size).toBe(1);
    expect(networkState().throttled - before).toBe(2);
    proxy.clear();
  });

  test("a request with a deadline (a lease renewal) keeps its throttling backoffs inside it, and makes no attempt after it", async () => {
    proxy.clear();
    const st = storeVia(proxy.endpoint, { retryBaseMs: 100 });
    const rule = proxy.add({ op: "PutObject", path: "/deadline/lease", action: { status: 503, code: "SlowDown" }, times: Infinity });
    const t0 = Date.now();
    const e = await errorOf(st.putSmall("deadline/lease", new TextEncoder().encode("{}"), {}, undefined, Date.now() + 2_000));
    const ms = Date.now() - t0;
    expect(e.kind).toBe("throttled");
    expect(ms).toBeLessThan(2_600); // the deadline, plus one attempt's round trip
    expect(rule.fired).toBeGreaterThanOrEqual(3); // several tries fit, not one long sleep
    proxy.clear();
    // Throttled a few times, then answered: the deadline does not cut a request that succeeds in time.
    const few = proxy.add({ op: "PutObject", path: "/deadline/lease", action: { status: 503, code: "SlowDown" }, times: 3 });
    expect(await st.putSmall("deadline/lease", new TextEncoder().encode("{}"), {}, undefined, Date.now() + 3_000)).toMatch(/^[0-9a-f]{32}$/);
    expect(few.fired).toBe(3);
    expect((await s3.head(BUCKET, "deadline/lease"))?.size).toBe(2);
    proxy.clear();
  }, 30_000);

  test("GETs in flight never exceed the process-wide bound; the rest wait their turn", async () => {
    const keys = Array.from({ length: 40 }, (_, i) => `many/o${i}`);
    const put = await s3.putMany(BUCKET, { keys, size: 1000 });
    proxy.clear();
    const st = storeVia(proxy.endpoint);
    // Every GET is held 1.5 s at the proxy: the bound fills, the rest queue.
    proxy.add({ op: "GetObject", path: "/many/", action: { stall: 1_500 }, times: Infinity });
    const reads = keys.map((k) => st.getSmall(k));
    await until(() => networkState().gets.inFlight === GET_LIMIT, 10_000, "the GET bound to fill");
    expect(networkState().gets.waiting).toBe(40 - GET_LIMIT);
    const got = await Promise.all(reads);
    expect(got.map((g) => g?.etag)).toEqual(put.map((p) => p.etag));
    expect(got.every((g) => g?.body.byteLength === 1000)).toBe(true);
    expect(networkState().gets).toMatchObject({ inFlight: 0, waiting: 0, bytesInFlight: 0 });
    proxy.clear();
  }, 60_000);
});
