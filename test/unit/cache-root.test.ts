import { afterAll, describe, expect, test } from "bun:test";
import {
  chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync,
  symlinkSync, writeFileSync,
} from "node:fs";
import { join } from "node:path";
import {
  CacheRootError, ensureCacheRoot, mkdirsUnder, readFileNoFollow, sweepTempFiles, TEMP_FILE_RE, tempNameFor, writeFileNoFollow,
} from "../../src/cache/cache-root.ts";

const base = mkdtempSync("/tmp/bucketfs-root-");
afterAll(() => rmSync(base, { recursive: true, force: true }));
let n = 0;
const fresh = () => {
  const d = join(base, `t${n++}`);
  mkdirSync(d, { mode: 0o755 });
  chmodSync(d, 0o755);
  return d;
};
const asRoot = (process.geteuid?.() ?? 0) === 0;

describe("ensureCacheRoot", () => {
  test("creates a missing cachepath (and parents) with mode 0700, whatever the umask", () => {
    const d = fresh();
    const old = process.umask(0);
    try {
      ensureCacheRoot(`${d}/a/cache`);
    } finally {
      process.umask(old);
    }
    expect(statSync(`${d}/a/cache`).mode & 0o7777).toBe(0o700);
  });

  test("accepts its own 0700 or 0755 directory", () => {
    const d = fresh();
    mkdirSync(`${d}/c`, { mode: 0o700 });
    ensureCacheRoot(`${d}/c`);
    chmodSync(`${d}/c`, 0o755);
    ensureCacheRoot(`${d}/c`);
  });

  test("refuses a directory group or others can write, naming the fix", () => {
    const d = fresh();
    mkdirSync(`${d}/c`);
    chmodSync(`${d}/c`, 0o777);
    expect(() => ensureCacheRoot(`${d}/c`)).toThrow(`Fix: chmod 700 ${d}/c`);
    chmodSync(`${d}/c`, 0o770);
    expect(() => ensureCacheRoot(`${d}/c`)).toThrow(CacheRootError);
  });

  test.if(asRoot)("refuses a directory owned by another user, naming the fix", () => {
    const d = fresh();
    mkdirSync(`${d}/c`, { mode: 0o700 });
    chownSync(`${d}/c`, 65534, 65534);
    expect(() => ensureCacheRoot(`${d}/c`)).toThrow(`is owned by uid 65534, but bucketfs runs as uid 0`);
  });

  test("refuses a cachepath under a directory anyone can write that is not sticky; a sticky one (like /tmp) is fine", () => {
    const d = fresh();
    mkdirSync(`${d}/open`);
    chmodSync(`${d}/open`, 0o777);
    expect(() => ensureCacheRoot(`${d}/open/cache`)).toThrow(/writable by others and not sticky/);
    expect(existsSync(`${d}/open/cache`)).toBe(false);
    chmodSync(`${d}/open`, 0o1777);
    ensureCacheRoot(`${d}/open/cache`);
  });

  test.if(asRoot)("refuses a symlinked cachepath owned by another user; nothing is created at its target", () => {
    const d = fresh();
    mkdirSync(`${d}/theirs`, { mode: 0o700 });
    symlinkSync(`${d}/theirs`, `${d}/cache`);
    const { lchownSync } = require("node:fs") as typeof import("node:fs");
    lchownSync(`${d}/cache`, 65534, 65534);
    expect(() => ensureCacheRoot(`${d}/cache`)).toThrow(/is a symlink owned by uid 65534/);
    expect(readdirSync(`${d}/theirs`)).toEqual([]);
  });
});

describe("no symlink followed under the root", () => {
  test("mkdirsUnder refuses a symlinked component and creates nothing through it", () => {
    const d = fresh();
    mkdirSync(`${d}/outside`);
    mkdirSync(`${d}/root`);
    symlinkSync(`${d}/outside`, `${d}/root/a`);
    expect(() => mkdirsUnder(`${d}/root`, "a/b/c")).toThrow(`${d}/root/a is a symlink; bucketfs never follows symlinks`);
    expect(readdirSync(`${d}/outside`)).toEqual([]);
  });

  test("mkdirsUnder with replace removes the link (a stale cache entry) and makes real directories", () => {
    const d = fresh();
    mkdirSync(`${d}/outside`);
    mkdirSync(`${d}/root`);
    symlinkSync(`${d}/outside`, `${d}/root/a`);
    writeFileSync(`${d}/root/f`, "stale object");
    expect(mkdirsUnder(`${d}/root`, "a/b", { replace: true })).toBe(`${d}/root/a/b`);
    mkdirsUnder(`${d}/root`, "f/g", { replace: true });
    expect(lstatSync(`${d}/root/a`).isDirectory()).toBe(true);
    expect(lstatSync(`${d}/root/f/g`).isDirectory()).toBe(true);
    expect(readdirSync(`${d}/outside`)).toEqual([]);
  });

  test("writeFileNoFollow never writes through a symlink; a file it writes is 0600", () => {
    const d = fresh();
    writeFileSync(`${d}/victim`, "untouched");
    symlinkSync(`${d}/victim`, `${d}/x.pid`);
    expect(() => writeFileNoFollow(`${d}/x.pid`, "123\n")).toThrow(/is a symlink; bucketfs never follows symlinks/);
    expect(readFileSync(`${d}/victim`, "utf8")).toBe("untouched");
    expect(readFileNoFollow(`${d}/x.pid`)).toBeUndefined();
    writeFileSync(`${d}/y.pid`, "old", { mode: 0o644 });
    writeFileNoFollow(`${d}/y.pid`, "456\n");
    expect(readFileNoFollow(`${d}/y.pid`)).toBe("456\n");
    expect(statSync(`${d}/y.pid`).mode & 0o777).toBe(0o600);
  });
});

describe("temp files", () => {
  test("one name scheme: temp names match the sweep's pattern; real names do not", () => {
    expect(TEMP_FILE_RE.test(tempNameFor("data.bin"))).toBe(true);
    expect(TEMP_FILE_RE.test(tempNameFor("é".repeat(200)))).toBe(true);
    expect(TEMP_FILE_RE.test("data.bin")).toBe(false);
    expect(TEMP_FILE_RE.test(".data.bin.bucketfs-tmp-xyz")).toBe(false);
  });

  test("the sweep removes temp files at any depth, keeps everything else, and never descends a symlink", () => {
    const d = fresh();
    mkdirSync(`${d}/root/a/b`, { recursive: true });
    mkdirSync(`${d}/outside`);
    const t1 = tempNameFor("obj");
    const t2 = tempNameFor("big.bam");
    writeFileSync(`${d}/root/${t1}`, "x");
    writeFileSync(`${d}/root/a/b/${t2}`, "x");
    writeFileSync(`${d}/root/a/b/big.bam`, "keep");
    writeFileSync(`${d}/root/a/..bucketfs-part-0123456789ab`, "x"); // the object cache's older scheme
    writeFileSync(`${d}/outside/${t1}`, "not ours");
    symlinkSync(`${d}/outside`, `${d}/root/link`);
    expect(sweepTempFiles(`${d}/root`).sort()).toEqual([t1, "a/..bucketfs-part-0123456789ab", `a/b/${t2}`].sort());
    expect(readdirSync(`${d}/root/a/b`)).toEqual(["big.bam"]);
    expect(readdirSync(`${d}/outside`)).toEqual([t1]);
  });
});
