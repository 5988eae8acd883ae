/**
 * Namespace (src/fs/namespace.ts) as pure logic: against an in-memory fake of the ObjectStore
 * port that counts requests, with a clock the test moves, so freshness is checked without
 * sleeping. Covers: classify, per-entry freshness (positive and negative) within
 * metadata_ttl, at most one HEAD for a lookup plus the open that follows, rows of an earlier
 * run revalidated before they are trusted (and served when S3 is down), and deletions.
 *
 * Is: unit tests with a fake store (the real store is tested against MinIO). Is not: FUSE.
 */
import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { MetaIndex, type IndexEntry } from "../../src/cache/meta-index.ts";
import { Namespace } from "../../src/fs/namespace.ts";
import { FsError } from "../../src/fs/errors.ts";
import { StoreError } from "../../src/store/types.ts";
import { MemStore } from "../helpers/mem-store.ts";
import { logger } from "../../src/util/log.ts";

/** The shared in-memory store; `put` here makes an object of `size` bytes with a fixed Last-Modified. */
class FakeStore extends MemStore {
  constructor() {
    super("fake");
  }
  add(key: string, size = 10, meta?: Record<string, string>): void {
    this.put(key, "x".repeat(size) + key, meta ?? {}, 1_000_000);
    // Size as asked: the key suffix only makes ETags differ per key.
    const o = this.objects.get(key)!;
    o.data = o.data.subarray(0, size);
  }
  /** Requests of the metadata half, as the namespace makes them. */
  get meta(): { listDir: number; head: number; hasPrefix: number } {
    return { listDir: this.counts.listDir ?? 0, head: this.counts.head ?? 0, hasPrefix: this.counts.hasPrefix ?? 0 };
  }
}

const TTL_S = 60;

function setup(opts: { workdir?: string; db?: Database; store?: FakeStore; clock?: { t: number } } = {}) {
  const store = opts.store ?? new FakeStore();
  const clock = opts.clock ?? { t: 10_000_000 };
  const index = new MetaIndex(opts.db ?? new Database(":memory:"));
  const ns = new Namespace({
    bucket: "fake", store, index, workdir: opts.workdir, metadataTtlS: TTL_S, uid: 0, gid: 0, log: logger("t"),
    now: () => clock.t,
  });
  return { store, clock, index, ns };
}

const noCopy = () => false;

describe("classify", () => {
  test("the four places of a path relative to the workdir", () => {
    const { ns } = setup({ workdir: "runs/a" });
    expect(ns.classify("")).toBe("workdir-ancestor");
    expect(ns.classify("runs")).toBe("workdir-ancestor");
    expect(ns.classify("runs/a")).toBe("workdir-root");
    expect(ns.classify("runs/a/x")).toBe("inside-workdir");
    expect(ns.classify("runs/a/x/y")).toBe("inside-workdir");
    expect(ns.classify("runs/ab")).toBe("remote");
    expect(ns.classify("run")).toBe("remote");
    expect(ns.classify("data/x")).toBe("remote");
  });

  test("without a workdir everything is remote", () => {
    const { ns } = setup();
    for (const p of ["", "a", "a/b"]) expect(ns.classify(p)).toBe("remote");
  });

  test("workdir, its ancestors and its inside are answered without S3", async () => {
    const { ns, store } = setup({ workdir: "runs/a" });
    expect((await ns.find("", "runs"))?.isDir).toBe(true);
    expect((await ns.find("runs", "a"))?.isDir).toBe(true);
    expect(await ns.find("runs/a", "x")).toBeUndefined();
    expect(await ns.listing("runs/a")).toEqual([]);
    await expect(ns.forOpen("runs/a/x", noCopy)).rejects.toThrow(FsError);
    expect(store.meta).toEqual({ listDir: 0, head: 0, hasPrefix: 0 });
  });
});

describe("freshness within metadata_ttl", () => {
  test("a lookup in a never-listed directory is one HEAD, and the open after it none", async () => {
    const { ns, store } = setup();
    store.add("dir/f.txt");
    const e = await ns.find("dir", "f.txt");
    expect(e?.isDir).toBe(false);
    expect(store.meta.head).toBe(1);
    await ns.forOpen("dir/f.txt", noCopy);
    expect(store.meta.head).toBe(1);
  });

  test("1,000 lookups and opens of one object within the TTL make one HEAD; after the TTL one more", async () => {
    const { ns, store, clock } = setup();
    store.add("dir/f.txt");
    for (let i = 0; i < 1000; i++) {
      await ns.find("dir", "f.txt");
      await ns.forOpen("dir/f.txt", noCopy);
      clock.t += 50; // 50 s over the loop, within the 60 s TTL
    }
    expect(store.meta.head).toBe(1);
    clock.t += TTL_S * 1000;
    await ns.forOpen("dir/f.txt", noCopy);
    expect(store.meta.head).toBe(2);
  });

  test("an open with no lookup before it (e.g. an inode from readdirplus) is one HEAD", async () => {
    const { ns, store } = setup();
    store.add("f.txt");
    const e = await ns.forOpen("f.txt", noCopy);
    expect(e.etag).toBe(store.objects.get("f.txt")!.etag);
    expect(store.meta.head).toBe(1);
  });

  test("negative answers are kept within the TTL too", async () => {
    const { ns, store, clock } = setup();
    expect(await ns.find("dir", "nope")).toBeUndefined();
    expect(store.meta).toMatchObject({ head: 1, hasPrefix: 1 });
    for (let i = 0; i < 100; i++) expect(await ns.find("dir", "nope")).toBeUndefined();
    expect(store.meta).toMatchObject({ head: 1, hasPrefix: 1 });
    store.add("dir/nope");
    clock.t += TTL_S * 1000;
    expect((await ns.find("dir", "nope"))?.isDir).toBe(false);
    expect(store.meta).toMatchObject({ head: 2 });
  });

  test("a fresh listing answers lookups and opens without a request", async () => {
    const { ns, store } = setup();
    store.add("d/a");
    store.add("d/b");
    store.add("d/sub/c");
    expect((await ns.listing("d")).map((e) => [e.name, e.isDir])).toEqual([["a", false], ["b", false], ["sub", true]]);
    expect(await ns.find("d", "zzz")).toBeUndefined();
    await ns.forOpen("d/a", noCopy);
    expect((await ns.find("d", "sub"))?.isDir).toBe(true);
    expect(store.meta).toEqual({ listDir: 1, head: 0, hasPrefix: 0 });
  });

  test("a known file is revalidated by HEAD alone; a known directory by the prefix probe alone", async () => {
    const { ns, store, clock } = setup();
    store.add("d/f");
    store.add("d/sub/x");
    await ns.listing("d");
    clock.t += TTL_S * 1000;
    await ns.find("d", "f");
    expect(store.meta).toEqual({ listDir: 1, head: 1, hasPrefix: 0 });
    await ns.find("d", "sub");
    expect(store.meta).toEqual({ listDir: 1, head: 1, hasPrefix: 1 });
  });

  test("opendir of a directory known from a listing sends only its LIST after the TTL", async () => {
    const { ns, store, clock } = setup();
    store.add("d/sub/x");
    await ns.listing("d");
    const sub = ns.inodes.ensure("d/sub");
    clock.t += TTL_S * 1000;
    expect((await ns.openDir(sub)).map((e) => e.name)).toEqual(["x"]);
    expect(store.meta).toEqual({ listDir: 2, head: 0, hasPrefix: 0 });
  });

  test("concurrent lookups of one name share one HEAD", async () => {
    const { ns, store } = setup();
    store.add("f");
    await Promise.all(Array.from({ length: 20 }, () => ns.find("", "f")));
    expect(store.meta.head).toBe(1);
  });
});

describe("changes in S3", () => {
  test("an object deleted after the TTL is ENOENT at open and forgotten", async () => {
    const { ns, store, clock, index } = setup();
    store.add("f");
    await ns.find("", "f");
    store.objects.delete("f");
    clock.t += TTL_S * 1000;
    await expect(ns.forOpen("f", noCopy)).rejects.toThrow("deleted from the bucket");
    expect(index.entry("", "f")).toBeUndefined();
    expect(await ns.find("", "f")).toBeUndefined();
    expect(store.meta.head).toBe(2);
  });

  test("a changed object is seen with its new ETag after the TTL", async () => {
    const { ns, store, clock } = setup();
    store.add("f");
    const before = await ns.forOpen("f", noCopy);
    store.add("f", 20);
    expect((await ns.forOpen("f", noCopy)).etag).toBe(before.etag);
    clock.t += TTL_S * 1000;
    const after = await ns.forOpen("f", noCopy);
    expect(after.etag).not.toBe(before.etag);
    expect(after.size).toBe(20);
  });

  test("what a GET returned is recorded as confirmed, with its metadata", async () => {
    const { ns, store } = setup();
    store.add("f");
    const e = await ns.forOpen("f", noCopy);
    const got = ns.fetched(e, { key: "f", etag: e.etag, size: e.size, mtimeMs: 5_000, mode: 0o600 });
    expect(got).toMatchObject({ mtimeMs: 5_000, mode: 0o600 });
    expect(ns.attrOf(7, got).mode & 0o7777).toBe(0o400);
  });
});

describe("rows of an earlier run", () => {
  test("a listing from an earlier run is revalidated: objects added while stopped are seen", async () => {
    const db = new Database(":memory:");
    const store = new FakeStore();
    store.add("d/a");
    const clock = { t: 10_000_000 };
    const first = setup({ db, store, clock });
    expect((await first.ns.listing("d")).map((e) => e.name)).toEqual(["a"]);
    store.add("d/b"); // added while bucketfs was stopped
    clock.t += 1000; // restart 1 s after the listing: within the TTL the old rule trusted it for
    const second = setup({ db, store, clock });
    expect((await second.ns.listing("d")).map((e) => e.name)).toEqual(["a", "b"]);
    expect(store.meta.listDir).toBe(2);
    expect((await second.ns.find("d", "b"))?.isDir).toBe(false);
  });

  test("an attribute from an earlier run is revalidated before an open trusts it", async () => {
    const db = new Database(":memory:");
    const store = new FakeStore();
    store.add("f");
    const clock = { t: 10_000_000 };
    const first = setup({ db, store, clock });
    const old = await first.ns.forOpen("f", noCopy);
    store.add("f", 99);
    clock.t += 1000;
    const second = setup({ db, store, clock });
    const now = await second.ns.forOpen("f", noCopy);
    expect(now.etag).not.toBe(old.etag);
    expect(store.meta.head).toBe(2);
  });

  test("they are still served when S3 is unreachable", async () => {
    const db = new Database(":memory:");
    const store = new FakeStore();
    store.add("d/a");
    const clock = { t: 10_000_000 };
    const first = setup({ db, store, clock });
    await first.ns.listing("d");
    const known = (await first.ns.forOpen("d/a", noCopy)) as IndexEntry;
    store.down = new StoreError("network", "connect ECONNREFUSED");
    clock.t += 1000;
    const second = setup({ db, store, clock });
    expect((await second.ns.listing("d")).map((e) => e.name)).toEqual(["a"]);
    expect((await second.ns.find("d", "a"))?.etag).toBe(known.etag);
    // Open: the known version is used only when a local copy of it exists.
    expect((await second.ns.forOpen("d/a", (e) => e.etag === known.etag)).etag).toBe(known.etag);
    await expect(second.ns.forOpen("d/a", noCopy)).rejects.toThrow("ECONNREFUSED");
  });
});
