/**
 * S3 unreachable while mounted: what was listed or cached before stays readable (stale
 * answers after a short grace period, with a warning), instead of every `ls` hanging on
 * SDK retries. The MinIO process is frozen with SIGSTOP to make S3 hang, not refuse.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { startS3Server, type S3Server } from "../helpers/s3server.ts";
import { s3tool } from "../helpers/s3tool.ts";
import { removeDir, sh, startDaemon, type DaemonHandle } from "../helpers/daemon.ts";

setDefaultTimeout(180_000);

let server: S3Server;
let d: DaemonHandle | undefined;

beforeAll(async () => {
  server = await startS3Server();
  const s3 = s3tool(server);
  await s3.mkbucket("outage");
  await s3.put("outage", "in/a.txt", { text: "alpha\n" });
  await s3.put("outage", "in/b.txt", { text: "beta\n" });
});

afterAll(async () => {
  if (server?.pid) process.kill(server.pid, "SIGCONT");
  if (d) {
    await d.cleanup();
    removeDir(d.dir);
  }
  await server?.stop();
});

describe("S3 hangs while mounted", () => {
  test("listed directories and cached files stay readable, with a warning", async () => {
    d = await startDaemon(server, [{ bucket: "outage", extra: { metadata_ttl: "1" } }]);
    const m = d.mnt.outage!;
    expect(sh(`ls ${m}/in`).out.split("\n").filter(Boolean)).toEqual(["a.txt", "b.txt"]);
    expect(sh(`cat ${m}/in/a.txt`).out).toBe("alpha\n");
    expect(server.pid).toBeDefined();
    process.kill(server.pid!, "SIGSTOP");
    try {
      await Bun.sleep(1500); // past metadata_ttl: everything needs revalidation now
      const t0 = Date.now();
      // A fresh process: the kernel's own caches expired with the 1 s TTL too.
      const ls = sh(`ls ${m}/in`, 60_000);
      const cat = sh(`cat ${m}/in/a.txt`, 60_000);
      const secs = (Date.now() - t0) / 1000;
      expect(ls.out.split("\n").filter(Boolean)).toEqual(["a.txt", "b.txt"]);
      expect(cat.out).toBe("alpha\n");
      // Each stale answer costs one grace period (3 s), never the SDK's full retry budget.
      expect(secs).toBeLessThan(30);
      expect(d.log()).toContain("serving what the index knows");
    } finally {
      process.kill(server.pid!, "SIGCONT");
    }
    expect(await d.stop("SIGTERM")).toBe(0);
  });
});
