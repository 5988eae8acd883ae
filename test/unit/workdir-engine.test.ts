/**
 * Unit tests of the workdir engine (prefetch rules, upload ordering/failures/hold-back)
 * against an in-memory ObjectStore fake. Fast and deterministic; the same behaviour is
 * checked against a real MinIO in test/integration/workdir.test.ts.
 */
import { afterAll, beforeEach, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openIndex } from "../../src/cache/db.ts";
import { walkWorkdir, WorkdirJournal } from "../../src/service/workdir/journal.ts";
import { PrefetchError, prefetchWorkdir, type WorkdirSpec } from "../../src/service/workdir/prefetch.ts";
import { tempNameFor } from "../../src/cache/cache-root.ts";
import { formatMode, formatMtime, uploadWorkdir } from "../../src/service/workdir/upload.ts";
import { StoreError } from "../../src/store/types.ts";
import { MemStore } from "../helpers/mem-store.ts";
import { logger, setSink } from "../../src/util/log.ts";

const root = mkdtempSync(join(tmpdir(), "bucketfs-engine-"));
const lines: string[] = [];
const restoreSink = setSink((l) => lines.push(l));
const log = logger("test");
let n = 0;
let spec: WorkdirSpec;
let journal: WorkdirJournal;
let store: MemStore;

beforeEach(() => {
  n++;
  spec = { prefix: "workdir/", localDir: join(root, `wd${n}`), lastUploadFile: ".exitcode", concurrency: 4 };
  journal = new WorkdirJournal(openIndex(join(root, `idx${n}.index`)), "workdir/");
  store = new MemStore();
  lines.length = 0;
});
afterAll(() => {
  restoreSink();
  rmSync(root, { recursive: true, force: true });
});

const local = (rel: string) => join(spec.localDir, rel);
const read = (rel: string) => readFileSync(local(rel), "utf8");
function allNames(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" });
}

describe("formats", () => {
  test("mtime has nine fractional digits, mode is octal", () => {
    expect(formatMtime(1_700_000_000_123_456_789n)).toBe("1700000000.123456789");
    expect(formatMtime(1_700_000_000_000_000_005n)).toBe("1700000000.000000005");
    expect(formatMode(0o100644)).toBe("0100644");
    expect(formatMode(0o100755)).toBe("0100755");
  });
  test("temp names stay under NAME_MAX", () => {
    const t = tempNameFor("é".repeat(127));
    expect(Buffer.byteLength(t)).toBeLessThanOrEqual(255);
    expect(walkWorkdir("/nonexistent").entries).toEqual([]);
  });
});

describe("prefetch rules", () => {
  test("new files land with mtime/mode from metadata; rules a/b/c decide the rest", async () => {
    store.put("workdir/new.txt", "new", { mtime: "1600000000.5", mode: "33261" }); // 0100755 in decimal (s3fs)
    store.put("workdir/octal.txt", "o", { mode: "0100600" });
    store.put("workdir/plain.txt", "p", {}, 1_500_000_000_000);
    store.put("workdir/setuid", "s", { mode: "0104755" });
    store.put("workdir/d/same.txt", "same");
    store.put("workdir/d/changed.txt", "v1");
    store.put("workdir/d/dirty.txt", "remote");
    store.put("workdir/emptydir/", "");
    await prefetchWorkdir(store, journal, spec, log);
    expect(read("new.txt")).toBe("new");
    expect(statSync(local("new.txt")).mtimeMs).toBeCloseTo(1_600_000_000_500, 0);
    expect(statSync(local("new.txt")).mode & 0o7777).toBe(0o755);
    expect(statSync(local("octal.txt")).mode & 0o7777).toBe(0o600);
    expect(statSync(local("plain.txt")).mode & 0o7777).toBe(0o644);
    expect(statSync(local("plain.txt")).mtimeMs).toBe(1_500_000_000_000);
    expect(statSync(local("setuid")).mode & 0o7777).toBe(0o755);
    expect(lstatSync(local("emptydir")).isDirectory()).toBe(true);

    // Local edit (dirty), remote change of a clean file, nothing for the third.
    writeFileSync(local("d/dirty.txt"), "LOCAL EDIT");
    store.put("workdir/d/changed.txt", "v2");
    store.put("workdir/d/dirty.txt", "remote v2");
    store.downloads = [];
    const r = await prefetchWorkdir(store, journal, spec, log);
    expect(store.downloads).toEqual(["workdir/d/changed.txt"]);
    expect(read("d/changed.txt")).toBe("v2");
    expect(read("d/dirty.txt")).toBe("LOCAL EDIT");
    expect(r.keptLocal).toEqual(["d/dirty.txt"]);
    expect(r.upToDate).toBe(5);
    expect(lines.some((l) => l.includes("kept local change d/dirty.txt"))).toBe(true);
  });

  test("hostile keys, file/dir clashes and symlinked parents are never written", async () => {
    const outside = join(root, `outside${n}`);
    mkdirSync(outside);
    mkdirSync(spec.localDir, { recursive: true });
    symlinkSync(outside, local("lnk"));
    for (const k of ["workdir/../x", "workdir//y", "workdir/./z", `workdir/${"n".repeat(300)}`, "workdir/a/../../b", "workdir/lnk/evil"]) store.put(k, "bad");
    store.put("workdir/clash", "file");
    store.put("workdir/clash/inner", "inner");
    store.put("workdir/ok", "ok");
    const r = await prefetchWorkdir(store, journal, spec, log);
    expect(read("ok")).toBe("ok");
    expect(read("clash/inner")).toBe("inner");
    expect(allNames(outside)).toEqual([]);
    expect(existsSync(join(root, "x"))).toBe(false);
    expect(existsSync(join(root, "b"))).toBe(false);
    expect(allNames(spec.localDir).sort()).toEqual(["clash", "clash/inner", "lnk", "ok"]);
    expect(r.skipped.map((s) => s.key).sort()).toEqual(
      ["workdir/../x", "workdir//y", "workdir/./z", `workdir/${"n".repeat(300)}`, "workdir/a/../../b", "workdir/clash", "workdir/lnk/evil"].sort(),
    );
  });

  test("a failed download aborts, cleans temp files, keeps what was there, and names bucket and key", async () => {
    mkdirSync(spec.localDir, { recursive: true });
    writeFileSync(local(".old.bucketfs-tmp-aaaaaaaaaaaa"), "stale");
    for (let i = 0; i < 20; i++) store.put(`workdir/f${String(i).padStart(2, "0")}`, `data${i}`);
    store.delayMs = 5;
    const r0 = await prefetchWorkdir(store, journal, spec, log);
    expect(r0.staleTempFilesRemoved).toBe(1);
    for (let i = 0; i < 20; i++) store.put(`workdir/f${String(i).padStart(2, "0")}`, `new${i}`);
    store.failDownload.set("workdir/f07", new StoreError("network", "connection reset"));
    const err = await prefetchWorkdir(store, journal, spec, log).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PrefetchError);
    expect(String((err as Error).message)).toContain("mem-bucket");
    expect(String((err as Error).message)).toContain("workdir/f07");
    expect(String((err as Error).message)).toContain("connection reset");
    expect(walkWorkdir(spec.localDir).tempFiles).toEqual([]);
    expect(read("f07")).toBe("data7");
    expect(journal.runs(1)[0]?.outcome).toBe("failed");
    for (let i = 0; i < 20; i++) expect(["data", "new"].map((p) => p + i)).toContain(read(`f${String(i).padStart(2, "0")}`));
  });
});

describe("upload", () => {
  function tree(): void {
    mkdirSync(local("work/ab/cdef/sub"), { recursive: true });
    mkdirSync(local("work/12/3456"), { recursive: true });
    writeFileSync(local("work/ab/cdef/.command.sh"), "echo hi");
    writeFileSync(local("work/ab/cdef/out.txt"), "out");
    writeFileSync(local("work/ab/cdef/sub/deep.txt"), "deep");
    writeFileSync(local("work/ab/cdef/.exitcode"), "0");
    writeFileSync(local("work/12/3456/.exitcode"), "1");
    symlinkSync("/etc/passwd", local("work/ab/cdef/input.lnk"));
  }

  test("uploads dirty regular files, markers last, then nothing the second time", async () => {
    tree();
    store.delayMs = 3;
    const r = await uploadWorkdir(store, journal, spec, log);
    expect(r.ok).toBe(true);
    expect(r.uploaded).toBe(5);
    expect(r.order.slice(-2).sort()).toEqual(["work/12/3456/.exitcode", "work/ab/cdef/.exitcode"]);
    expect(r.markersUploaded.sort()).toEqual(["work/12/3456/.exitcode", "work/ab/cdef/.exitcode"]);
    expect(r.skipped).toEqual([{ path: "work/ab/cdef/input.lnk", kind: "symlink" }]);
    const meta = store.objects.get("workdir/work/ab/cdef/out.txt")?.meta;
    expect(meta?.mode).toBe(formatMode(statSync(local("work/ab/cdef/out.txt")).mode));
    expect(meta?.mtime).toMatch(/^\d+\.\d{9}$/);
    expect(Number(meta?.uid)).toBe(process.getuid?.() ?? 0);
    const again = await uploadWorkdir(store, journal, spec, log);
    expect(again.uploaded).toBe(0);
    expect(again.unchanged).toBe(5);
    // And a prefetch right after finds everything up to date.
    store.downloads = [];
    const p = await prefetchWorkdir(store, journal, spec, log);
    expect(store.downloads).toEqual([]);
    expect(p.upToDate).toBe(5);
  });

  test("a failure holds back every marker; the next run uploads the rest and then the markers", async () => {
    tree();
    store.failUpload.set("workdir/work/ab/cdef/sub/deep.txt", { err: new StoreError("access-denied", "denied", { status: 403 }), times: 1 });
    const r = await uploadWorkdir(store, journal, spec, log);
    expect(r.ok).toBe(false);
    expect(r.failed.map((f) => f.path)).toEqual(["work/ab/cdef/sub/deep.txt"]);
    expect(r.markersUploaded).toEqual([]);
    expect(r.markersHeldBack.sort()).toEqual(["work/12/3456/.exitcode", "work/ab/cdef/.exitcode"]);
    expect(store.uploads.some((k) => k.endsWith(".exitcode"))).toBe(false);
    expect(journal.pending(spec.localDir).map((p) => p.path).sort()).toEqual([
      "work/12/3456/.exitcode",
      "work/ab/cdef/.exitcode",
      "work/ab/cdef/sub/deep.txt",
    ]);
    expect(journal.failures().map((f) => f.path).sort()).toEqual(["work/12/3456/.exitcode", "work/ab/cdef/.exitcode", "work/ab/cdef/sub/deep.txt"]);
    store.uploads = [];
    const r2 = await uploadWorkdir(store, journal, spec, log);
    expect(r2.ok).toBe(true);
    expect(r2.order).toEqual(["work/ab/cdef/sub/deep.txt", ...r2.markersUploaded]);
    expect(journal.failures()).toEqual([]);
    expect(journal.pending(spec.localDir)).toEqual([]);
  });

  test("one attempt per file (the store retries its requests): a failure is reported, the next run uploads it", async () => {
    mkdirSync(spec.localDir, { recursive: true });
    writeFileSync(local("a"), "a");
    writeFileSync(local("b"), "b");
    store.failUpload.set("workdir/b", { err: new StoreError("throttled", "slow down", { status: 503 }), times: 1 });
    const r = await uploadWorkdir(store, journal, spec, log);
    expect(r.order).toEqual(["a"]);
    expect(r.failed.map((f) => f.path)).toEqual(["b"]);
    expect(r.failed[0]?.error).toContain("slow down");
    expect(store.uploadAttempts).toBe(2);
    expect(journal.failures().find((f) => f.path === "b")?.attempts).toBe(1);
    const r2 = await uploadWorkdir(store, journal, spec, log);
    expect(r2.order).toEqual(["b"]);
    expect(journal.failures()).toEqual([]);
  });

  test("when S3 is unreachable the remaining files are not attempted (bounded shutdown time)", async () => {
    mkdirSync(local("d"), { recursive: true });
    for (let i = 0; i < 30; i++) writeFileSync(local(`d/f${i}`), `x${i}`);
    writeFileSync(local("d/.exitcode"), "0");
    store.failAllUploads = new StoreError("network", "connect ECONNREFUSED");
    const r = await uploadWorkdir(store, journal, spec, log);
    expect(r.failed).toHaveLength(30);
    expect(r.markersHeldBack).toEqual(["d/.exitcode"]);
    // Far fewer than 31 files: only the first wave was attempted.
    expect(store.uploadAttempts).toBeLessThanOrEqual(2 * spec.concurrency);
    expect(r.failed.filter((f) => f.error.startsWith("not attempted")).length).toBeGreaterThan(20);
    expect(journal.pending(spec.localDir)).toHaveLength(31);
  });

  test("an abort stops the run, holds back markers and reports unattempted files", async () => {
    tree();
    store.delayMs = 20;
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 5);
    const progress: number[] = [];
    const r = await uploadWorkdir(store, journal, { ...spec, concurrency: 1 }, log, { signal: ac.signal, onProgress: (p) => progress.push(p.filesDone) });
    expect(r.aborted).toBe(true);
    expect(r.ok).toBe(false);
    expect(r.markersUploaded).toEqual([]);
    expect(r.failed.length).toBeGreaterThan(0);
    expect(progress.length).toBeGreaterThan(0);
  });
});
