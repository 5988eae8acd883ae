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

  test("forgetCached drops every cached-object row and says how many", () => {
    const ix = new MetaIndex(new Database(":memory:"));
    ix.putCached(obj("k"));
    ix.putCached(obj("j"));
    expect(ix.cached("k")).toEqual(obj("k"));
    expect(ix.forgetCached()).toBe(2);
    expect(ix.cached("k")).toBeUndefined();
    expect(ix.cached("j")).toBeUndefined();
  });
});
