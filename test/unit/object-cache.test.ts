/**
 * ObjectCache.acquire (src/cache/object-cache.ts) as pure logic: it hands back the object it
 * served (so BucketFs need not re-read the index), says whether this open fetched it, and
 * alone decides keep_cache (the previous open of the key was served the same ETag). Against
 * a small fake store whose whole-object download writes the bytes and counts calls.
 *
 * Is: unit tests with a fake store (MinIO covers the real path). Is not: streaming reads
 * (partial-object.test.ts).
 */
import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { dirname } from "node:path";
import { MetaIndex, readChecks } from "../../src/cache/meta-index.ts";
import { ObjectCache, PREFETCH_CONCURRENCY, STREAM_MIN_SIZE } from "../../src/cache/object-cache.ts";
import { MemStore } from "../helpers/mem-store.ts";
import { logger } from "../../src/util/log.ts";

const root = mkdtempSync("/tmp/bucketfs-objcache-");
afterAll(() => rmSync(root, { recursive: true, force: true }));

function setup() {
  const store = new MemStore("b");
  // Objects with the ETag a test names (the fake's own would be the MD5) and a fixed Last-Modified.
  const objects = {
    set: (key: string, o: { body: string; etag: string; meta: Record<string, string> }) =>
      void (store.put(key, o.body, o.meta, 1_700_000_000_000).etag = o.etag),
  };
  const downloads = () => store.downloads.length;
  const dir = mkdtempSync(`${root}/c-`);
  const cache = new ObjectCache(dir, store, new MetaIndex(new Database(":memory:")), logger("t"));
  return { objects, cache, downloads, store };
}

describe("acquire", () => {
  test("a key that changes kind: what stands in the way goes; cache directories removed under a running cache are made again", async () => {
    const { objects, cache } = setup();
    const read = async (key: string, body: string, etag: string) => {
      objects.set(key, { body, etag, meta: {} });
      const got = await cache.acquire(key, etag, body.length, 0);
      cache.release(key, got.partial);
      expect(readFileSync(got.path, "utf8")).toBe(body);
      return got.path;
    };
    await read("k/x", "under k", "e1");
    await read("k", "k is an object now", "e2"); // the cached directory k/ is stale: removed
    const y = await read("k/y", "k is a prefix again", "e3"); // the cached file k is stale: replaced
    rmSync(dirname(y), { recursive: true, force: true }); // someone cleans the cache meanwhile
    await read("k/z", "made again", "e4");
  });

  test("returns the object it fetched, with the GET's metadata, and whether this open fetched it", async () => {
    const { objects, cache, downloads } = setup();
    objects.set("a/f", { body: "hello", etag: "e1", meta: { mode: "33216", mtime: "1600000000" } });
    const first = await cache.acquire("a/f", "e1", 5, 0);
    expect(first.changed).toBe(true);
    // mtime: Last-Modified in whole seconds, not x-amz-meta-mtime (one mtime per object, store/meta.ts).
    expect(first.object).toEqual({ key: "a/f", etag: "e1", size: 5, mtimeMs: 1_700_000_000_000, mode: 0o700 });
    expect(readFileSync(first.path, "utf8")).toBe("hello");
    const again = await cache.acquire("a/f", "e1", 5, 0);
    expect(again.changed).toBe(false);
    expect(again.object).toEqual(first.object);
    expect(downloads()).toBe(1);
  });

  test("keep_cache: only when the previous open of the key was served the same ETag", async () => {
    const { objects, cache } = setup();
    objects.set("f", { body: "v1", etag: "e1", meta: {} });
    expect((await cache.acquire("f", "e1", 2, 0)).keepCache).toBe(false); // first open: nothing to keep
    expect((await cache.acquire("f", "e1", 2, 0)).keepCache).toBe(true);
    objects.set("f", { body: "v2!", etag: "e2", meta: {} });
    const changed = await cache.acquire("f", "e2", 3, 0);
    expect([changed.changed, changed.keepCache, changed.object.etag]).toEqual([true, false, "e2"]);
    expect((await cache.acquire("f", "e2", 3, 0)).keepCache).toBe(true);
  });

  test("concurrent opens of one object share one download", async () => {
    const { objects, cache, downloads } = setup();
    objects.set("f", { body: "x", etag: "e1", meta: {} });
    const got = await Promise.all(Array.from({ length: 10 }, () => cache.acquire("f", "e1", 1, 0)));
    expect(downloads()).toBe(1);
    expect(new Set(got.map((g) => g.object.etag))).toEqual(new Set(["e1"]));
  });
});

describe("prefetch", () => {
  test("an open joins the prefetch's download; cached, streamed-size or running objects are not fetched again", async () => {
    const { objects, cache, downloads, store } = setup();
    store.delayMs = 20;
    objects.set("p/a", { body: "aaa", etag: "ea", meta: {} });
    expect(cache.prefetch("p/a", "ea", 3)).toBe(true);
    expect(cache.prefetch("p/a", "ea", 3)).toBe(false); // on its way
    const got = await cache.acquire("p/a", "ea", 3, 0);
    expect(readFileSync(got.path, "utf8")).toBe("aaa");
    expect(downloads()).toBe(1);
    expect(cache.prefetch("p/a", "ea", 3)).toBe(false); // cached at that ETag
    expect(cache.prefetch("p/big", "eb", STREAM_MIN_SIZE)).toBe(false); // streamed on open instead
    expect(downloads()).toBe(1);
  });

  test("at most PREFETCH_CONCURRENCY downloads at once; a failed prefetch leaves the open to fetch", async () => {
    const { objects, cache, downloads, store } = setup();
    store.delayMs = 10;
    for (let i = 0; i < 20; i++) objects.set(`q/${i}`, { body: `v${i}`, etag: `e${i}`, meta: {} });
    for (let i = 0; i < 20; i++) cache.prefetch(`q/${i}`, `e${i}`, 2 + String(i).length - 1);
    expect(cache.prefetch("q/missing", "ex", 1)).toBe(true); // 404: logged, nothing thrown
    const last = await cache.acquire("q/19", "e19", 3, 0);
    expect(readFileSync(last.path, "utf8")).toBe("v19");
    expect(store.maxInflight).toBeLessThanOrEqual(PREFETCH_CONCURRENCY);
    expect(downloads()).toBe(20);
  });
});

describe("what checked each fetched object", () => {
  test("objects nothing can check (ETag not an MD5, no checksum) are counted as `none`, whole and streamed", async () => {
    const store = new MemStore("b");
    const db = new Database(":memory:");
    const index = new MetaIndex(db);
    const cache = new ObjectCache(mkdtempSync(`${root}/u-`), store, index, logger("t"));
    store.put("small", "hello", {}, 1_700_000_000_000).etag = "not-an-md5";
    const big = new Uint8Array(STREAM_MIN_SIZE + 5).fill(7);
    store.put("big", big, {}, 1_700_000_000_000).etag = "also-not-an-md5";
    const a = await cache.acquire("small", "not-an-md5", 5, 0);
    cache.release("small", a.partial);
    const b = await cache.acquire("big", "also-not-an-md5", big.length, 0);
    await b.partial!.ensure(0, big.length);
    expect(b.partial!.verification).toEqual({ kind: "none", reason: expect.stringContaining("neither an MD5") });
    cache.release("big", b.partial);
    index.flush(); // the counts are written in batches
    expect(readChecks(db)).toEqual({ none: 2 });
  });

  test("a streamed object with an MD5 ETag is counted as `md5`", async () => {
    const store = new MemStore("b");
    const db = new Database(":memory:");
    const index = new MetaIndex(db);
    const cache = new ObjectCache(mkdtempSync(`${root}/m-`), store, index, logger("t"));
    const big = new Uint8Array(STREAM_MIN_SIZE + 5).fill(9);
    const etag = store.put("big", big, {}, 1_700_000_000_000).etag;
    const b = await cache.acquire("big", etag, big.length, 0);
    await b.partial!.ensure(0, big.length);
    cache.release("big", b.partial);
    index.flush(); // the counts are written in batches
    expect(readChecks(db)).toEqual({ md5: 1 });
  });
});
