/**
 * An https endpoint: MinIO serving TLS with a certificate made for this run, the daemon trusting
 * it through NODE_EXTRA_CA_CERTS (as an operator with a private CA would), boto3 through
 * AWS_CA_BUNDLE. Reads (a small object downloaded whole, a large one streamed, listings) go over
 * src/store/s3/http1.ts's TLS sockets, the workdir upload over fetch; S3 is checked with boto3.
 * Without the certificate the daemon refuses to start and says why, without retrying.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startS3Server, TEST_ROOT, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { daemonDir, removeDir, sh, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { sha256File, writeRandom } from "../helpers/files.ts";

const MiB = 1024 * 1024;
const BUCKET = "tls-data";
const TIMEOUT = 240_000;

let server: S3Server;
let s3: S3Tool;
let scratch: string;
const sums: Record<string, string> = {};
const handles = new Set<DaemonHandle>();

beforeAll(async () => {
  server = await startS3Server({ tls: true });
  s3 = s3tool(server);
  await s3.mkbucket(BUCKET);
  scratch = mkdtempSync(join(TEST_ROOT, "tls-"));
  for (const [key, size] of [["in/small.bin", 300_000], ["in/big.bin", 20 * MiB + 3]] as const) {
    const f = join(scratch, key.replace("/", "-"));
    writeRandom(f, size);
    sums[key] = await sha256File(f);
    await s3.put(BUCKET, key, { file: f });
  }
}, TIMEOUT);

afterAll(async () => {
  for (const h of handles) await h.cleanup();
  await server?.stop();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
}, TIMEOUT);

describe("https endpoint", () => {
  test("reads over TLS sockets and an upload over fetch, with the certificate from NODE_EXTRA_CA_CERTS", async () => {
    expect(server.endpoint).toStartWith("https://");
    const dir = daemonDir("tls");
    const d = await startDaemon(server, [{ bucket: BUCKET, workdir: `/${BUCKET}/work` }], {
      dir, env: { NODE_EXTRA_CA_CERTS: server.caFile! },
    });
    handles.add(d);
    try {
      const mnt = d.mnt[BUCKET]!;
      const ls = sh(`ls ${mnt}/in`);
      expect(ls.out.trim().split("\n")).toEqual(["big.bin", "small.bin"]);
      const got = sh(`sha256sum ${mnt}/in/small.bin ${mnt}/in/big.bin`);
      expect(got.code).toBe(0);
      expect(got.out.trim().split("\n").map((l) => l.split(" ")[0])).toEqual([sums["in/small.bin"], sums["in/big.bin"]]);
      writeFileSync(join(mnt, "work", "out.txt"), "written over https\n");
      expect(await d.stop()).toBe(0);
      handles.delete(d);
      const back = await s3.getBytes(BUCKET, "work/out.txt");
      expect(Buffer.from(back).toString()).toBe("written over https\n");
    } finally {
      await d.cleanup();
      removeDir(dir);
    }
  }, TIMEOUT);

  test("without the certificate: the start fails at once, and a read-only mount answers EIO, each naming the TLS problem", async () => {
    const env: Record<string, string> = { NODE_EXTRA_CA_CERTS: "" };
    // With a workdir the start writes the lease first (fetch): refused, not retried.
    const dir = daemonDir("tls-untrusted");
    const d = await startDaemon(server, [{ bucket: BUCKET, workdir: `/${BUCKET}/work` }], { dir, env, expectFailure: true, timeoutMs: 60_000 });
    handles.add(d);
    try {
      expect(await d.proc.exited).toBe(1);
      expect(d.log()).toMatch(/self[- ]signed certificate/i);
      expect(d.log()).not.toMatch(/attempt 2 failed/);
    } finally {
      await d.cleanup();
      removeDir(dir);
    }
    // Without one the mount starts; the first listing (http1's TLS socket) fails with EIO.
    const dir2 = daemonDir("tls-untrusted-ro");
    const r = await startDaemon(server, [{ bucket: BUCKET }], { dir: dir2, env });
    handles.add(r);
    try {
      const ls = sh(`ls ${r.mnt[BUCKET]}/in`);
      expect(ls.code).not.toBe(0);
      expect(ls.err).toMatch(/Input\/output error/);
      expect(r.log()).toMatch(/TLS: self[- ]signed certificate \(127\.0\.0\.1:\d+\)/);
      expect(r.log()).not.toMatch(/attempt 2 failed/);
      expect(await r.stop()).toBe(0);
      handles.delete(r);
    } finally {
      await r.cleanup();
      removeDir(dir2);
    }
  }, TIMEOUT);
});
