import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { FLUSH_MS, MetaIndex, readChecks, type IndexEntry } from "../../src/cache/meta-index.ts";

const obj = (key: string) => ({ key, etag: "e", size: 1, mtimeMs: 1000, mode: null });
const file = (dir: string, name: string, size: number): IndexEntry => ({ dir, name, isDir: false, size, mtimeMs: 5, etag: "x", mode: null });

describe("MetaIndex", () => {
  test("a listing replaces the previous one and records when", () => {
    const ix = new MetaIndex(new Database(":memory:"));
    ix.replaceDir("d", [file("d", "a", 1), file("d", "b", 2)], 100);
    ix.replaceDir("d", [file("d", "b", 3)], 200);
    expect(ix.list("d").map((e) => [e.name, e.size])).toEqual([["b", 3]]);
    expect(ix.listedAt("d")).toBe(200);
    expect(ix.entry("d", "a")).toBeUndefined();
  });

  test("forgetCached drops every cached-object row and says how many", () => {
    const ix = new MetaIndex(new Database(":memory:"));
    ix.putCached(obj("k"));
    ix.putCached(obj("j"));
    expect(ix.cached("k")).toEqual(obj("k"));
    expect(ix.forgetCached()).toBe(2);
    expect(ix.cached("k")).toBeUndefined();
    expect(ix.cached("j")).toBeUndefined();
  });

  test("kept parts (block map of a streamed object): batched, read back, listed least recently closed first, dropped, forgotten with the cache", () => {
    const db = new Database(":memory:");
    const ix = new MetaIndex(db);
    const kept = (key: string, closedMs: number) => ({
      key, etag: "e-3", size: 20, mtimeMs: 1000, file: `d/.${key}.bucketfs-tmp-000000000000`, parts: { 1: "AAAA", 3: "BBBB" }, bytes: 16, closedMs,
    });
    ix.putKeptParts(kept("b", 200));
    ix.putKeptParts(kept("a", 100));
    expect(db.query<{ n: number }, []>("SELECT COUNT(*) AS n FROM cache_parts").get()!.n).toBe(0);
    expect(ix.keptParts("b")).toEqual(kept("b", 200));
    expect(ix.allKeptParts().map((k) => k.key)).toEqual(["a", "b"]);
    expect(ix.keptParts("a")).toEqual(kept("a", 100));
    ix.dropKeptParts("a");
    expect(ix.keptParts("a")).toBeUndefined();
    ix.putCached(obj("k"));
    ix.forgetCached();
    expect(ix.allKeptParts()).toEqual([]);
  });

  test("single rows are batched: every query sees them at once, the database after one flush", async () => {
    const db = new Database(":memory:");
    const ix = new MetaIndex(db);
    const rows = (t: string) => db.query<{ n: number }, []>(`SELECT COUNT(*) AS n FROM ${t}`).get()!.n;
    ix.replaceDir("d", [file("d", "a", 1)], 100);
    for (let i = 0; i < 50; i++) {
      ix.putEntry(file("d", `n${i}`, i), 200);
      ix.putCached(obj(`d/n${i}`));
      ix.countCheck(i % 2 ? "full" : "none");
    }
    expect([rows("meta_entries"), rows("meta_cached"), rows("cache_checks"), ix.pending]).toEqual([1, 0, 0, 102]);
    expect(ix.entry("d", "n7")).toEqual({ ...file("d", "n7", 7), seenMs: 200 });
    expect(ix.cached("d/n7")).toEqual(obj("d/n7"));
    ix.dropCached("d/n7");
    ix.deleteEntry("d", "n8");
    expect([ix.cached("d/n7"), ix.entry("d", "n8")]).toEqual([undefined, undefined]);
    // A query over many rows writes them first; so does the timer, in one transaction.
    expect(ix.after("d", "n0", 2).map((e) => e.name)).toEqual(["n1", "n10"]);
    expect([rows("meta_entries"), rows("meta_cached"), ix.pending, ix.flushes]).toEqual([50, 49, 0, 1]);
    expect(readChecks(db)).toEqual({ full: 25, none: 25 });
    ix.putCached(obj("late"));
    await Bun.sleep(FLUSH_MS * 3);
    expect([rows("meta_cached"), ix.pending, ix.flushes]).toEqual([50, 0, 2]);
    expect(ix.allCached().length).toBe(50);
  });
});
