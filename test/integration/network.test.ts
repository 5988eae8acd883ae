/**
 * Slow, far and flaky links (issue 20), against a real MinIO behind the loopback fault proxy
 * (test/helpers/fault-proxy.ts): a 1 MB/s uplink, a blackholed connect, a body that stalls
 * halfway, malformed answers, a server that closes idle keep-alive connections after 1 s, a
 * skewed clock. Every claim about S3 is checked with boto3 (test/helpers/s3tool.ts) against
 * MinIO directly; waits are on the proxy's counters or `status --json`, never on log text.
 * The proxy runs in this process, so whatever reads the mount runs as a child process.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createS3Store, type S3StoreTuning } from "../../src/store/s3.ts";
import { StoreError, type ObjectStore } from "../../src/store/types.ts";
import { removeDir, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { run } from "../helpers/run.ts";
import { startBlackhole, startFaultProxy, type FaultProxy } from "../helpers/fault-proxy.ts";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { writeRandom } from "../helpers/files.ts";
import { statusJson } from "../helpers/status.ts";

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

/** Resolves once `cond()` holds (polled every 50 ms), or fails after `ms`. */
async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(50);
  }
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
