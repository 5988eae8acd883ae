/**
 * Unit tests of the workdir journal: dirty detection against the baseline, the walk, the
 * failure log and run history. Temp dirs and an in-file bun:sqlite index; no S3.
 */
import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { copyFileSync, lstatSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openIndex } from "../../src/cache/db.ts";
import { lstatBig, stampOf, walkWorkdir, WorkdirJournal } from "../../src/service/workdir/journal.ts";

/** Longer than the coarse kernel clock tick, so a later change gets a different ctime. */
const TICK_MS = 25;
const root = mkdtempSync(join(tmpdir(), "bucketfs-journal-"));
let n = 0;
let dir = "";
let journal: WorkdirJournal;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
function stamp(rel: string) {
  const st = lstatBig(join(dir, rel));
  if (!st) throw new Error(`missing ${rel}`);
  return stampOf(st);
}
function baseline(rel: string): void {
  journal.record(rel, stamp(rel), "etag-" + rel, "prefetch");
}
const dirty = (rel: string) => journal.isDirty(rel, stamp(rel));

beforeEach(() => {
  n++;
  dir = join(root, `wd${n}`);
  mkdirSync(dir, { recursive: true });
  journal = new WorkdirJournal(openIndex(join(root, `idx${n}.index`)), "workdir/");
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("dirty detection", () => {
  test("new file without baseline is dirty", () => {
    writeFileSync(join(dir, "new.txt"), "hello");
    expect(dirty("new.txt")).toBe(true);
  });

  test("unchanged file is clean", async () => {
    writeFileSync(join(dir, "a.txt"), "hello");
    baseline("a.txt");
    await sleep(TICK_MS);
    expect(dirty("a.txt")).toBe(false);
    expect(journal.get("a.txt")?.etag).toBe("etag-a.txt");
    expect(journal.get("a.txt")?.source).toBe("prefetch");
  });

  test("same size, new content and new mtime is dirty", async () => {
    writeFileSync(join(dir, "a.txt"), "hello");
    baseline("a.txt");
    await sleep(TICK_MS);
    writeFileSync(join(dir, "a.txt"), "HELLO");
    expect(stamp("a.txt").size).toBe(5);
    expect(dirty("a.txt")).toBe(true);
  });

  test("content changed and mtime restored (touch -r) is dirty through ctime", async () => {
    const p = join(dir, "a.txt");
    writeFileSync(p, "hello");
    utimesSync(p, 1_600_000_000, 1_600_000_000);
    baseline("a.txt");
    const before = stamp("a.txt");
    await sleep(TICK_MS);
    writeFileSync(p, "jello");
    execFileSync("touch", ["-d", "@1600000000", p]);
    const after = stamp("a.txt");
    expect(after.mtimeNs).toBe(before.mtimeNs);
    expect(after.size).toBe(before.size);
    expect(after.ctimeNs).not.toBe(before.ctimeNs);
    expect(dirty("a.txt")).toBe(true);
  });

  test("rename: the new name is dirty; a file renamed over a clean one (same size/mtime) is dirty by inode", async () => {
    const a = join(dir, "a.txt");
    writeFileSync(a, "hello");
    baseline("a.txt");
    renameSync(a, join(dir, "b.txt"));
    expect(dirty("b.txt")).toBe(true);

    writeFileSync(a, "hello");
    utimesSync(a, 1_600_000_000, 1_600_000_000);
    baseline("a.txt");
    const old = stamp("a.txt");
    copyFileSync(a, join(dir, "c.tmp"));
    utimesSync(join(dir, "c.tmp"), 1_600_000_000, 1_600_000_000);
    renameSync(join(dir, "c.tmp"), a);
    const now = stamp("a.txt");
    expect(now.size).toBe(old.size);
    expect(now.mtimeNs).toBe(old.mtimeNs);
    expect(now.ino).not.toBe(old.ino);
    expect(dirty("a.txt")).toBe(true);
  });

  test("stamps survive the sqlite round trip exactly (ns times, 64-bit values)", () => {
    journal.record("x", { size: 3, mtimeNs: 1_700_000_000_123_456_789n, ctimeNs: 1_700_000_001_987_654_321n, ino: 2n ** 63n - 1n }, "e", "upload");
    const b = journal.get("x");
    expect(b?.mtimeNs).toBe(1_700_000_000_123_456_789n);
    expect(b?.ctimeNs).toBe(1_700_000_001_987_654_321n);
    expect(b?.ino).toBe(2n ** 63n - 1n);
    expect(b?.source).toBe("upload");
  });

  test("scopes are isolated", () => {
    writeFileSync(join(dir, "a.txt"), "hello");
    baseline("a.txt");
    const db = openIndex(join(root, `idx${n}.index`));
    const other = new WorkdirJournal(db, "runs/b/");
    expect(other.get("a.txt")).toBeNull();
    expect(other.isDirty("a.txt", stamp("a.txt"))).toBe(true);
    db.close();
  });
});

describe("walk and pending", () => {
  test("regular files only are pending; symlinks, fifos and temp files are not followed or listed as pending", () => {
    const outside = join(root, `outside${n}`);
    mkdirSync(outside);
    writeFileSync(join(outside, "secret"), "x");
    mkdirSync(join(dir, "sub/deeper"), { recursive: true });
    writeFileSync(join(dir, "sub/deeper/f.bin"), "12345");
    writeFileSync(join(dir, "clean.txt"), "c");
    baseline("clean.txt");
    symlinkSync(outside, join(dir, "link-dir"));
    symlinkSync("clean.txt", join(dir, "link-file"));
    execFileSync("mkfifo", [join(dir, "fifo")]);
    writeFileSync(join(dir, "sub/.f.bin.bucketfs-tmp-0123456789ab"), "partial");

    const w = walkWorkdir(dir);
    const kinds = Object.fromEntries(w.entries.map((e) => [e.rel, e.kind]));
    expect(kinds).toEqual({ "clean.txt": "file", fifo: "fifo", "link-dir": "symlink", "link-file": "symlink", "sub/deeper/f.bin": "file" });
    expect(w.tempFiles).toEqual(["sub/.f.bin.bucketfs-tmp-0123456789ab"]);
    expect(w.problems).toEqual([]);
    expect(journal.pending(dir)).toEqual([{ path: "sub/deeper/f.bin", size: 5 }]);
    expect(lstatSync(join(dir, "link-dir")).isSymbolicLink()).toBe(true);
  });

  test("a missing workdir is a walk problem, not an empty success", () => {
    const w = walkWorkdir(join(dir, "nope"));
    expect(w.entries).toEqual([]);
    expect(w.problems.length).toBe(1);
  });

  test("failure log and runs feed status()", () => {
    writeFileSync(join(dir, "out.txt"), "data");
    journal.noteFailure("out.txt", "connection refused");
    journal.noteFailure("out.txt", "connection refused again");
    const id = journal.startRun("upload");
    journal.finishRun(id, "failed", { files: 0, bytes: 0, failed: 1, message: "out.txt: connection refused again" });
    const s = journal.status(dir);
    expect(s.pending).toEqual([{ path: "out.txt", size: 4 }]);
    expect(s.pendingBytes).toBe(4);
    expect(s.failures).toHaveLength(1);
    expect(s.failures[0]?.attempts).toBe(2);
    expect(s.failures[0]?.lastError).toBe("connection refused again");
    expect(s.runs[0]?.outcome).toBe("failed");
    expect(s.runs[0]?.kind).toBe("upload");
    expect(s.runs[0]?.message).toContain("connection refused");
    journal.clearFailure("out.txt");
    expect(journal.failures()).toEqual([]);
  });
});
