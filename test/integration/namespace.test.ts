/**
 * The namespace's promises on a real mount, counted by MinIO's own request counters
 * (bench/lib/minio-metrics.ts), never by our log: a cold `cat` sends at most one HEAD, 1,000
 * reads of a cached object in a never-listed directory send at most one HEAD per
 * metadata_ttl, objects added to S3 while bucketfs was stopped are visible right after a
 * restart (and what the earlier run knew is still served when S3 hangs at that restart;
 * MinIO is frozen with SIGSTOP), and extended attributes answer as on a read-only local
 * filesystem.
 *
 * Is: real daemon, real MinIO on loopback, objects put with boto3. Is not: a unit test of
 * freshness rules (test/unit/namespace.test.ts).
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { startS3Server, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { removeDir, sh, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";
import { s3Requests } from "../../bench/lib/minio-metrics.ts";
import { waitStatus } from "../helpers/status.ts";

setDefaultTimeout(240_000);

let server: S3Server;
let s3: S3Tool;
const daemons: DaemonHandle[] = [];

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
});

afterAll(async () => {
  for (const d of daemons) {
    await d.cleanup();
    removeDir(d.dir);
  }
  await server?.stop();
});

async function start(bucket: string, extra: Record<string, string> = {}, dir?: string): Promise<DaemonHandle> {
  const d = await startDaemon(server, [{ bucket, extra }], dir ? { dir } : {});
  daemons.push(d);
  return d;
}

/** Requests MinIO served by API since `before` (HeadObject, GetObject, ListObjectsV2...). */
async function counted<T>(fn: () => T | Promise<T>): Promise<{ result: T; d: (api: string) => number }> {
  const before = await s3Requests(server);
  const result = await fn();
  const after = await s3Requests(server);
  return { result, d: (api) => (after.get(api) ?? 0) - (before.get(api) ?? 0) };
}

function ok(cmd: string): string {
  const r = sh(cmd, 120_000);
  if (r.code !== 0) throw new Error(`command failed (exit ${r.code}): ${cmd}\n${r.err}`);
  return r.out;
}

describe("HEAD requests", () => {
  const B = "ns-heads";
  let d: DaemonHandle;

  beforeAll(async () => {
    expect(server.kind).toBe("minio"); // the counters come from MinIO's metrics endpoint
    await s3.mkbucket(B);
    await s3.put(B, "cold.txt", { text: "cold\n" });
    await s3.put(B, "deep/dir/hot.txt", { text: "hot\n" });
    // One TTL for the whole test: the 1,000 reads fit in it.
    d = await start(B, { metadata_ttl: "3600" });
  });

  afterAll(async () => {
    expect(await d.stop("SIGTERM")).toBe(0);
  });

  test("a cold cat of a never-listed path sends at most one HEAD", async () => {
    const m = d.mnt[B]!;
    const { result, d: delta } = await counted(() => ok(`cat ${m}/cold.txt`));
    expect(result).toBe("cold\n");
    expect(delta("GetObject")).toBeGreaterThanOrEqual(1); // the counters are live
    expect(delta("HeadObject")).toBeLessThanOrEqual(1);
  });

  test("1,000 reads of a cached object in a never-listed directory send at most one HEAD", async () => {
    const m = d.mnt[B]!;
    expect(ok(`cat ${m}/deep/dir/hot.txt`)).toBe("hot\n"); // cold: lookups and the download
    const { result, d: delta } = await counted(() => ok(`for i in $(seq 1000); do cat ${m}/deep/dir/hot.txt; done | sort | uniq -c`));
    expect(result.trim()).toBe("1000 hot");
    expect(delta("HeadObject")).toBeLessThanOrEqual(1);
    expect(delta("GetObject")).toBe(0);
  });
});

describe("a restart", () => {
  test("objects added while bucketfs was stopped are visible right after the restart", async () => {
    const B = "ns-restart";
    await s3.mkbucket(B);
    await s3.put(B, "in/a.txt", { text: "a\n" });
    const first = await start(B); // default metadata_ttl: 300 s
    const m = first.mnt[B]!;
    expect(ok(`ls ${m}/in`)).toBe("a.txt\n");
    expect(ok(`cat ${m}/in/a.txt`)).toBe("a\n");
    expect(await first.stop("SIGTERM")).toBe(0);

    await s3.put(B, "in/b.txt", { text: "b\n" });
    await s3.put(B, "in/a.txt", { text: "a, changed\n" });
    const second = await start(B, {}, first.dir);
    expect(ok(`ls ${m}/in`)).toBe("a.txt\nb.txt\n");
    expect(ok(`cat ${m}/in/b.txt`)).toBe("b\n");
    expect(ok(`cat ${m}/in/a.txt`)).toBe("a, changed\n");
    expect(await second.stop("SIGTERM")).toBe(0);
  });
});

describe("a restart while S3 hangs", () => {
  test("what the earlier run listed and cached is still served (after the grace period)", async () => {
    const B = "ns-restart-outage";
    await s3.mkbucket(B);
    await s3.put(B, "in/a.txt", { text: "alpha\n" });
    const first = await start(B);
    const m = first.mnt[B]!;
    expect(ok(`ls ${m}/in`)).toBe("a.txt\n");
    expect(ok(`cat ${m}/in/a.txt`)).toBe("alpha\n");
    expect(await first.stop("SIGTERM")).toBe(0);
    expect(server.pid).toBeDefined();
    process.kill(server.pid!, "SIGSTOP");
    try {
      const second = await start(B, {}, first.dir); // a read-only bucket starts without S3
      expect(ok(`ls ${m}/in`)).toBe("a.txt\n");
      expect(ok(`cat ${m}/in/a.txt`)).toBe("alpha\n");
      process.kill(server.pid!, "SIGCONT");
      expect(await second.stop("SIGTERM")).toBe(0);
    } finally {
      process.kill(server.pid!, "SIGCONT");
    }
  });
});

describe("extended attributes outside the workdir", () => {
  test("listxattr is empty as on a read-only ext4; getxattr is ENOTSUP (ENODATA for ACLs), answered by the kernel after one request", async () => {
    const B = "ns-xattr";
    await s3.mkbucket(B);
    await s3.put(B, "f.txt", { text: "x\n" });
    const d = await start(B);
    const m = d.mnt[B]!;
    const py = [
      "import os, errno, sys",
      "out = []",
      `for p in (${JSON.stringify(`${m}/f.txt`)}, ${JSON.stringify(m)}):`,
      "    out.append(repr(os.listxattr(p)))",
      "    for n in ('user.foo', 'security.selinux', 'system.posix_acl_access'):",
      "        try:",
      "            os.getxattr(p, n); out.append('value')",
      "        except OSError as e:",
      "            out.append(errno.errorcode[e.errno])",
      "print(' '.join(out))",
    ].join("\n");
    const r = Bun.spawnSync(["timeout", "60", "python3", "-c", py]);
    expect(r.stderr.toString()).toBe("");
    // ENOTSUP is errno 95 (EOPNOTSUPP); POSIX ACLs are answered by the kernel's own ACL code.
    expect(r.stdout.toString().trim()).toBe("[] ENOTSUP ENOTSUP ENODATA [] ENOTSUP ENOTSUP ENODATA");
    // `ls -l` asks two names per file; none of that reaches the daemon after the first ENOSYS.
    expect(sh(`ls -l ${m} | wc -l`).out.trim()).toBe("2");
    const counted = await waitStatus(d.configPath, B, (b) => (b.fuse?.requests?.["LISTXATTR"] ?? 0) >= 2, "the xattr requests to be counted");
    expect(counted.fuse?.requests?.["GETXATTR"]).toBe(1);
    expect(await d.stop("SIGTERM")).toBe(0);
  });
});
