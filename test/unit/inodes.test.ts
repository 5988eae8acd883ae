import { describe, expect, test } from "bun:test";
import { InodeTable, ROOT_INO } from "../../src/fs/inodes.ts";

describe("inode table", () => {
  test("root is 1 and never forgotten", () => {
    const t = new InodeTable();
    expect(t.get(ROOT_INO)?.path).toBe("");
    t.forget(ROOT_INO, 100);
    expect(t.get(ROOT_INO)).toBeDefined();
  });

  test("a node lives while the kernel holds references, numbers are never reused", () => {
    const t = new InodeTable();
    const a = t.ensure("a/b");
    expect(t.ensure("a/b").ino).toBe(a.ino);
    t.ref(a.ino);
    t.ref(a.ino);
    t.forget(a.ino, 1);
    expect(t.get(a.ino)?.nlookup).toBe(1);
    t.forget(a.ino, 1);
    expect(t.get(a.ino)).toBeUndefined();
    const again = t.ensure("a/b");
    expect(again.ino).toBeGreaterThan(a.ino);
  });
});
