/**
 * BucketFs namespace rules that need no S3 answer: the workdir and its ancestors are
 * directories, and the workdir's own FUSE view is empty (the bind mount covers it). The
 * store here throws on any call, proving none of these answers touch S3.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync } from "node:fs";
import { BucketFs } from "../../src/fs/bucket-fs.ts";
import { MetaIndex } from "../../src/cache/meta-index.ts";
import { ObjectCache } from "../../src/cache/object-cache.ts";
import { ROOT_INO } from "../../src/fs/inodes.ts";
import { MemStore } from "../helpers/mem-store.ts";
import { logger } from "../../src/util/log.ts";

const root = mkdtempSync("/tmp/bucketfs-bfs-");
afterAll(() => rmSync(root, { recursive: true, force: true }));

const noS3 = new MemStore("b");
noS3.forbidden = true;

function fs() {
  const index = new MetaIndex(new Database(":memory:"));
  const log = logger("t");
  const objects = new ObjectCache(root, noS3, index, log);
  return new BucketFs({ bucket: "b", store: noS3, index, objects, workdir: "runs/work", metadataTtlS: 60, uid: 0, gid: 0, log });
}

describe("workdir in the FUSE namespace", () => {
  test("the workdir and its ancestors are directories without asking S3", async () => {
    const f = fs();
    const runs = await f.lookup(ROOT_INO, "runs");
    expect(runs.attr?.mode! & 0o170000).toBe(0o040000);
    const work = await f.lookup(runs.attr!.ino, "work");
    expect(work.attr?.mode! & 0o170000).toBe(0o040000);
  });

  test("names inside the workdir's FUSE view do not exist (the bind mount shows the real files)", async () => {
    const f = fs();
    const runs = await f.lookup(ROOT_INO, "runs");
    const work = await f.lookup(runs.attr!.ino, "work");
    const inside = await f.lookup(work.attr!.ino, "anything");
    expect(inside.attr).toBeUndefined();
    const dh = await f.opendir(work.attr!.ino);
    expect(f.readdir(work.attr!.ino, dh.fh, 0, 100).map((e) => e.name)).toEqual([".", ".."]);
  });
});
