import { describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { MetaIndex, type IndexEntry } from "../../src/cache/meta-index.ts";

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

  describe("cached objects across runs (no fsync per object)", () => {
    test("same boot after a crash: cached rows are kept", () => {
      const ix = new MetaIndex(new Database(":memory:"));
      expect(ix.beginRun("boot-1")).toBe(0);
      ix.putCached(obj("k"));
      expect(ix.beginRun("boot-1")).toBe(0); // crashed run (no endRun), same boot
      expect(ix.cached("k")).toBeDefined();
    });

    test("new boot after a clean stop: kept", () => {
      const ix = new MetaIndex(new Database(":memory:"));
      ix.beginRun("boot-1");
      ix.putCached(obj("k"));
      ix.endRun();
      expect(ix.beginRun("boot-2")).toBe(0);
      expect(ix.cached("k")).toBeDefined();
    });

    test("new boot without a clean stop (power loss): forgotten, fetched again", () => {
      const ix = new MetaIndex(new Database(":memory:"));
      ix.beginRun("boot-1");
      ix.putCached(obj("k"));
      ix.putCached(obj("j"));
      expect(ix.beginRun("boot-2")).toBe(2);
      expect(ix.cached("k")).toBeUndefined();
    });
  });
});
