/**
 * One mtime per unchanged object (issue 13): `stat` of an object in the read-only namespace
 * shows the same st_mtime whichever request described it to bucketfs, on every node, across
 * TTL expiry and restarts. The rule (docs/SEMANTICS.md): Last-Modified in whole seconds, also
 * for objects that carry `x-amz-meta-mtime` (no listing carries user metadata).
 *
 * Why it matters: Nextflow's -resume hashes each input's path, size and mtime in ms. A listing
 * gives Last-Modified with milliseconds, HEAD and GET only whole seconds; showing whichever
 * came last made -resume re-run tasks after a restart.
 *
 * Each case starts a mount whose FIRST description of the object is the request under test,
 * so the kernel's attribute cache cannot hide the value bucketfs holds. S3 is read with boto3.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { rmSync } from "node:fs";
import { startS3Server, type S3Server } from "../helpers/s3server.ts";
import { s3tool, type S3Tool } from "../helpers/s3tool.ts";
import { daemonDir, removeDir, startDaemon, type BucketSpec, type DaemonHandle } from "../helpers/daemon.ts";
import { ok, q } from "../helpers/run.ts";

const HOOK = { timeout: 240_000 };
const B = "mtimes";
const PLAIN = "data/plain.txt";
const WITH_META = "data/with-meta.txt";
const KEYS = [PLAIN, WITH_META];
const TTL_S = 2;

let server: S3Server;
let s3: S3Tool;
/** Expected st_mtime (ns as text, "S.000000000") per key: Last-Modified of a boto3 listing, whole seconds. */
const want: Record<string, string> = {};
const dirs: string[] = [];
const daemons = new Set<DaemonHandle>();

beforeAll(async () => {
  server = await startS3Server();
  s3 = s3tool(server);
  await server.createBucket(B);
  await s3.put(B, PLAIN, { text: "plain object\n" });
  await s3.put(B, WITH_META, { text: "object with x-amz-meta-mtime\n" }, { metadata: { mtime: "1600000000.5" } });
  const listed = await s3.list(B, { prefix: "data/" });
  for (const o of listed.objects) want[o.key] = `${Math.floor(o.lastModifiedMs / 1000)}.000000000`;
  expect(Object.keys(want).sort()).toEqual([...KEYS].sort());
}, HOOK);

afterAll(async () => {
  for (const d of [...daemons]) await stop(d);
  for (const dir of dirs) removeDir(dir);
  await server?.stop();
}, HOOK);

async function start(dir: string, ttlS = 3600): Promise<{ d: DaemonHandle; M: string }> {
  const spec: BucketSpec = { bucket: B, extra: { metadata_ttl: String(ttlS) } };
  const d = await startDaemon(server, [spec], { dir });
  daemons.add(d);
  return { d, M: d.mnt[B] ?? "" };
}

async function stop(d: DaemonHandle): Promise<void> {
  try {
    expect(await d.stop("SIGTERM", 60_000)).toBe(0);
  } finally {
    await d.cleanup();
    daemons.delete(d);
  }
}

/** st_mtime with nanoseconds, as `stat` in a separate process sees it, per key. */
async function mtimes(M: string): Promise<Record<string, string>> {
  const out = await ok(`cd ${q(M)} && stat -c '%n %.9Y' ${KEYS.map(q).join(" ")}`);
  return Object.fromEntries(out.trim().split("\n").map((l) => l.split(" ") as [string, string]));
}

const newDir = (name: string): string => {
  const dir = daemonDir(name);
  dirs.push(dir);
  return dir;
};

describe("one mtime per unchanged object", () => {
  test("listing, cold whole download, HEAD-only lookup, TTL expiry, restart and an empty-cache node agree", async () => {
    const seen: Record<string, Record<string, string>> = {};
    const node = newDir("mt-node");

    // 1. A listing describes the objects first.
    let { d, M } = await start(node);
    await ok(`ls -l ${q(`${M}/data`)} >/dev/null`);
    seen["after a listing"] = await mtimes(M);
    // 2. Cold whole downloads (GET: whole-second Last-Modified, metadata) replace what the
    //    index holds; a restart shows it, answered from the index (the listing is still fresh).
    await ok(`cd ${q(M)} && cat ${KEYS.map(q).join(" ")} >/dev/null`);
    await stop(d);
    ({ d, M } = await start(node));
    seen["after a cold whole download and a restart"] = await mtimes(M);
    await stop(d);

    // 3. Another node with an empty cache at the same path: HEAD-only lookups, never listed.
    rmSync(`${node}/cache`, { recursive: true, force: true });
    ({ d, M } = await start(node));
    seen["after a HEAD-only lookup on an empty-cache node"] = await mtimes(M);
    // ... then a listing, and cold whole downloads on that node.
    await ok(`ls -l ${q(`${M}/data`)} >/dev/null && cd ${q(M)} && cat ${KEYS.map(q).join(" ")} >/dev/null`);
    await stop(d);
    ({ d, M } = await start(node));
    seen["after HEAD, listing, download and a restart"] = await mtimes(M);
    await stop(d);

    // 4. TTL expiry: a listing, then (after the TTL: the kernel's entry cache and the index's
    //    listing both expire; waiting for time to pass is what is under test) a HEAD and a relist.
    const ttlNode = newDir("mt-ttl");
    ({ d, M } = await start(ttlNode, TTL_S));
    await ok(`ls -l ${q(`${M}/data`)} >/dev/null`);
    seen["after a listing (short TTL)"] = await mtimes(M);
    await ok(`cd ${q(M)} && cat ${KEYS.map(q).join(" ")} >/dev/null`);
    await Bun.sleep(TTL_S * 1000 + 500);
    seen["after TTL expiry (HEAD)"] = await mtimes(M);
    await Bun.sleep(TTL_S * 1000 + 500);
    await ok(`ls -l ${q(`${M}/data`)} >/dev/null`);
    seen["after TTL expiry (relisted)"] = await mtimes(M);
    await stop(d);

    const expected = Object.fromEntries(Object.keys(seen).map((k) => [k, want]));
    expect(seen).toEqual(expected);
  }, 240_000);
});
