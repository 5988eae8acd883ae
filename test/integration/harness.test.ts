/**
 * Integration test of the test harness itself: a real S3 server from
 * test/helpers/s3server.ts, driven only through the independent boto3 client
 * (test/helpers/s3tool.ts). Checks that objects (incl. user metadata and a
 * 12 MiB multipart upload) round-trip byte for byte, survive restart(), and
 * that stop() really ends the server (port closed, no process left).
 *
 * It does not exercise bucketfs code; other integration tests build on this.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";

// Real server + Python processes on a 2-core machine that other suites load
// too; bun's 5 s default is too tight (bunfig's [test] timeout is not read).
setDefaultTimeout(120_000);

const BUCKET = "harness";
const BIG = 12 * 1024 * 1024;

function sha256(data: Uint8Array | string): string {
  return new Bun.CryptoHasher("sha256").update(data).digest("hex");
}

/** Resolves true if something accepts TCP connections on 127.0.0.1:port. */
function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port });
    sock.setTimeout(2000);
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
    sock.once("timeout", () => {
      sock.destroy();
      resolve(false);
    });
  });
}

/** State letter of a process (R, S, D, ...), or null if it is gone or a zombie. */
function processState(pid: number): string | null {
  try {
    const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? null;
    return state === "Z" || state === "X" ? null : state;
  } catch {
    return null;
  }
}

/** PIDs of live (non-zombie) processes whose command line contains `needle`. */
function processesMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replaceAll("\0", " ");
      const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${entry}/status`, "utf8"))?.[1];
      if (cmdline.includes(needle) && state !== "Z") found.push(Number(entry));
    } catch {
      // process went away while we looked
    }
  }
  return found;
}

describe("S3 test harness (real server + independent boto3 client)", () => {
  let server: S3Server;
  let s3: S3Tool;
  let workDir: string;
  let bigFile: string;
  let bigSha: string;

  beforeAll(async () => {
    server = await startS3Server();
    s3 = s3tool(server);
    mkdirSync(TEST_ROOT, { recursive: true });
    workDir = mkdtempSync(join(TEST_ROOT, "harness-"));
    bigFile = join(workDir, "big.bin");
    const big = randomBytes(BIG);
    writeFileSync(bigFile, big);
    bigSha = sha256(big);
  }, 120_000);

  afterAll(async () => {
    await server?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  }, 60_000);

  test("server listens on loopback and reports its kind", async () => {
    expect(server.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.endpoint).toBe(`http://127.0.0.1:${server.port}`);
    expect(["minio", "versitygw"]).toContain(server.kind);
    expect(server.region).toBe("us-east-1");
    expect(server.dataDir.startsWith(`${TEST_ROOT}/`)).toBe(true);
    expect(existsSync(server.logFile)).toBe(true);
    expect(server.pid).toBeGreaterThan(0);
    expect(await portOpen(server.port)).toBe(true);
  });

  test("createBucket creates the bucket, and is idempotent", async () => {
    await server.createBucket(BUCKET);
    await server.createBucket(BUCKET);
    expect(await s3.mkbucket(BUCKET)).toEqual({ created: false });
    const listed = await s3.list(BUCKET);
    expect(listed.objects).toEqual([]);
  });

  test("put / head / get round-trip, with metadata and a 12 MiB multipart object", async () => {
    const text = "hello from the bucketfs harness\n";
    const small = await s3.put(BUCKET, "docs/hello.txt", { text });
    expect(small.size).toBe(Buffer.byteLength(text));
    expect(small.sha256).toBe(sha256(text));

    const bytes = new Uint8Array([0, 1, 2, 253, 254, 255]);
    const meta = await s3.put(
      BUCKET,
      "docs/with-meta.bin",
      { bytes },
      { metadata: { owner: "harness", "run-id": "42" }, contentType: "application/x-test" },
    );
    expect(meta.sha256).toBe(sha256(bytes));

    const big = await s3.put(BUCKET, "data/big.bin", { file: bigFile }, { multipart: true, partSize: 5 * 1024 * 1024 });
    expect(big.size).toBe(BIG);
    expect(big.sha256).toBe(bigSha);
    expect(big.etag).toMatch(/-3$/); // 5 + 5 + 2 MiB parts

    const h = await s3.head(BUCKET, "docs/with-meta.bin");
    expect(h).not.toBeNull();
    expect(h?.size).toBe(bytes.length);
    expect(h?.metadata).toEqual({ owner: "harness", "run-id": "42" });
    expect(h?.contentType).toBe("application/x-test");
    expect(h?.etag).toBe(meta.etag);
    expect(Math.abs((h?.lastModifiedMs ?? 0) - Date.now())).toBeLessThan(5 * 60_000);

    const hb = await s3.head(BUCKET, "data/big.bin");
    expect(hb?.size).toBe(BIG);
    expect(hb?.etag).toBe(big.etag);

    expect(await s3.head(BUCKET, "docs/missing.txt")).toBeNull();

    const out = join(workDir, "big.copy");
    const got = await s3.get(BUCKET, "data/big.bin", { path: out });
    expect(got.size).toBe(BIG);
    expect(got.sha256).toBe(bigSha);
    expect(sha256(readFileSync(out))).toBe(bigSha);

    expect(new TextDecoder().decode(await s3.getBytes(BUCKET, "docs/hello.txt"))).toBe(text);
    expect(Array.from(await s3.getBytes(BUCKET, "docs/with-meta.bin"))).toEqual(Array.from(bytes));
    const ranged = await s3.getBytes(BUCKET, "data/big.bin", "bytes=1048576-1048591");
    expect(Array.from(ranged)).toEqual(Array.from(readFileSync(bigFile).subarray(1048576, 1048592)));
  });

  test("putMany uploads generated content that gen() reproduces locally", async () => {
    const objs = await s3.putMany(BUCKET, { prefix: "many/obj-", count: 120, size: 3000, workers: 8 });
    expect(objs).toHaveLength(120);
    expect(objs[0]?.key).toBe("many/obj-000");
    expect(objs[119]?.key).toBe("many/obj-119");
    expect(new Set(objs.map((o) => o.sha256)).size).toBe(120); // content differs per key

    const local = join(workDir, "gen.bin");
    const g = await s3.gen("many/obj-007", 3000, local);
    expect(g.sha256).toBe(objs[7]?.sha256 ?? "");
    expect(sha256(readFileSync(local))).toBe(g.sha256);
    expect((await s3.get(BUCKET, "many/obj-007")).sha256).toBe(g.sha256);
  });

  test("list returns every key (all pages) with sizes, and prefixes when not recursive", async () => {
    const all = await s3.list(BUCKET);
    expect(all.objects).toHaveLength(123);
    const byKey = new Map(all.objects.map((o) => [o.key, o]));
    expect(byKey.get("docs/hello.txt")?.size).toBe(32);
    expect(byKey.get("data/big.bin")?.size).toBe(BIG);
    expect(byKey.get("many/obj-042")?.size).toBe(3000);
    const keys = all.objects.map((o) => o.key);
    expect(keys).toEqual([...keys].sort());
    for (const o of all.objects) expect(o.lastModifiedMs).toBeGreaterThan(Date.parse("2020-01-01"));

    const top = await s3.list(BUCKET, { recursive: false });
    expect(top.objects).toEqual([]);
    expect(top.prefixes.sort()).toEqual(["data/", "docs/", "many/"]);

    const paged = await s3.list(BUCKET, { pageSize: 50 });
    expect(paged.pages).toBe(3);
    expect(paged.objects.map((o) => o.key)).toEqual(keys);

    const docs = await s3.list(BUCKET, { prefix: "docs/" });
    expect(docs.objects.map((o) => o.key)).toEqual(["docs/hello.txt", "docs/with-meta.bin"]);
  });

  test("deleteMany removes exactly the selected keys", async () => {
    const r = await s3.deleteMany(BUCKET, { keys: ["many/obj-000", "many/obj-001"] });
    expect(r.deleted).toBe(2);
    expect(await s3.head(BUCKET, "many/obj-000")).toBeNull();
    expect((await s3.list(BUCKET, { prefix: "many/" })).objects).toHaveLength(118);
  });

  test("data survives restart() on the same endpoint", async () => {
    const endpoint = server.endpoint;
    const oldPid = server.pid;
    await server.restart();
    expect(server.endpoint).toBe(endpoint);
    expect(server.pid).not.toBe(oldPid);
    expect(oldPid !== undefined && processState(oldPid)).toBeNull();

    const all = await s3.list(BUCKET);
    expect(all.objects).toHaveLength(121);
    expect((await s3.get(BUCKET, "data/big.bin")).sha256).toBe(bigSha);
    expect((await s3.head(BUCKET, "docs/with-meta.bin"))?.metadata).toEqual({ owner: "harness", "run-id": "42" });
    // and it still accepts writes
    await s3.put(BUCKET, "after-restart.txt", { text: "still here" });
    expect((await s3.head(BUCKET, "after-restart.txt"))?.size).toBe(10);
  });

  test("stop() kills the server: port closed, no process left, data dir removed", async () => {
    const { port, dataDir } = server;
    const pid = server.pid;
    expect(processesMentioning(dataDir).length).toBeGreaterThan(0);
    await server.stop();
    expect(server.pid).toBeUndefined();
    expect(await portOpen(port)).toBe(false);
    expect(pid !== undefined && processState(pid)).toBeNull();
    expect(processesMentioning(dataDir)).toEqual([]);
    expect(existsSync(dataDir)).toBe(false);
    // stop() twice is harmless
    await server.stop();
  });
});

describe("servers of a test process that dies without stop()", () => {
  test("are killed with it (even by SIGKILL), and their data dir is swept by the next start", async () => {
    mkdirSync(TEST_ROOT, { recursive: true });
    const dir = mkdtempSync(join(TEST_ROOT, "harness-orphan-"));
    try {
      const script = join(dir, "orphan.ts");
      const helper = join(import.meta.dir, "..", "helpers", "s3server.ts");
      writeFileSync(
        script,
        `import { startS3Server } from ${JSON.stringify(helper)};\n` +
          `const s = await startS3Server();\n` +
          `console.log(JSON.stringify({ pid: s.pid, dataDir: s.dataDir, port: s.port }));\n` +
          // No stop(), no exit hooks: die the hard way.
          `process.kill(process.pid, "SIGKILL");\n`,
      );
      const child = Bun.spawn({ cmd: [process.execPath, script], stdout: "pipe", stderr: "pipe" });
      const [out, err] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text()]);
      await child.exited;
      expect(child.signalCode).toBe("SIGKILL");
      const line = out.trim().split("\n").pop() ?? "";
      if (!line.startsWith("{")) throw new Error(`orphan script printed no result:\n${out}\n${err}`);
      const orphan = JSON.parse(line) as { pid: number; dataDir: string; port: number };
      expect(orphan.pid).toBeGreaterThan(0);

      // The kernel SIGKILLs the server when its parent dies (pdeathsig);
      // tearing down a big Go process takes a moment.
      const deadline = Date.now() + 10_000;
      const gone = async (): Promise<boolean> =>
        processState(orphan.pid) === null && !(await portOpen(orphan.port));
      while (!(await gone()) && Date.now() < deadline) await Bun.sleep(100);
      expect(processState(orphan.pid)).toBeNull();
      expect(processesMentioning(orphan.dataDir)).toEqual([]);
      expect(await portOpen(orphan.port)).toBe(false);
      expect(existsSync(orphan.dataDir)).toBe(true);

      const next = await startS3Server();
      try {
        expect(existsSync(orphan.dataDir)).toBe(false);
      } finally {
        await next.stop();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("startS3Server with a caller-supplied dataDir", () => {
  test("a caller-supplied dataDir is kept after stop()", async () => {
    mkdirSync(TEST_ROOT, { recursive: true });
    const dir = mkdtempSync(join(TEST_ROOT, "harness-keep-"));
    try {
      const srv = await startS3Server({ dataDir: dir });
      expect(srv.dataDir).toBe(dir);
      await srv.createBucket("kept");
      await s3tool(srv).put("kept", "k", { text: "v" });
      await srv.stop();
      expect(existsSync(join(dir, "server.log"))).toBe(true);
      expect(readFileSync(join(dir, "server.log"), "utf8")).toContain("bucketfs test: starting");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
