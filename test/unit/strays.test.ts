import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { adoptStrays, listHidden } from "../../src/service/strays.ts";

let root = "";
afterEach(() => {
  if (root) rmSync(root, { recursive: true, force: true });
});

function dirs() {
  root = mkdtempSync(join(tmpdir(), "strays-"));
  const mnt = join(root, "mnt");
  const cache = join(root, "cache");
  mkdirSync(join(mnt, "wd"), { recursive: true });
  mkdirSync(cache);
  return { mnt, from: join(mnt, "wd"), to: cache };
}

describe("adoptStrays", () => {
  test("moves files and directories into the workdir cache and leaves the path empty", () => {
    const { mnt, from, to } = dirs();
    mkdirSync(join(from, ".snakemake/metadata"), { recursive: true });
    writeFileSync(join(from, ".snakemake/metadata/j1"), "m");
    writeFileSync(join(from, "late.txt"), "late");
    mkdirSync(join(to, ".snakemake")); // an existing directory is merged into, not a conflict
    const r = adoptStrays(from, to, mnt);
    expect(r.conflicts).toEqual([]);
    expect(r.moved.sort()).toEqual([".snakemake/metadata", ".snakemake/metadata/j1", "late.txt"]);
    expect(readFileSync(join(to, ".snakemake/metadata/j1"), "utf8")).toBe("m");
    expect(listHidden(from)).toEqual([]);
  });

  test("a conflict moves nothing", () => {
    const { mnt, from, to } = dirs();
    writeFileSync(join(from, "a.txt"), "stray");
    writeFileSync(join(from, "b.txt"), "stray");
    writeFileSync(join(to, "a.txt"), "cache");
    const r = adoptStrays(from, to, mnt);
    expect(r.conflicts).toEqual(["a.txt"]);
    expect(r.moved).toEqual([]);
    expect(existsSync(join(from, "b.txt"))).toBe(true);
    expect(readFileSync(join(to, "a.txt"), "utf8")).toBe("cache");
  });

  test("a symlink at the workdir's path is never followed", () => {
    const { mnt, to } = dirs();
    const elsewhere = join(root, "someone-elses");
    mkdirSync(elsewhere);
    writeFileSync(join(elsewhere, "private.txt"), "x");
    rmSync(join(mnt, "wd"), { recursive: true });
    symlinkSync(elsewhere, join(mnt, "wd"));
    const r = adoptStrays(join(mnt, "wd"), to, mnt);
    expect(r.conflicts[0]).toContain("is a symlink");
    expect(r.moved).toEqual([]);
    expect(existsSync(join(elsewhere, "private.txt"))).toBe(true);
  });

  test("nothing there: nothing to do", () => {
    const { mnt, to } = dirs();
    rmSync(join(mnt, "wd"), { recursive: true });
    expect(adoptStrays(join(mnt, "wd"), to, mnt)).toEqual({ moved: [], conflicts: [] });
  });
});
