import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { openIndex, SCHEMA_VERSION } from "../../src/cache/db.ts";
import { RunLog } from "../../src/cache/runs.ts";
import { MetaIndex } from "../../src/cache/meta-index.ts";
import { bestEffort, lostWrites } from "../../src/cache/full-disk.ts";
import { WorkdirJournal } from "../../src/service/workdir/journal.ts";

const dir = mkdtempSync("/tmp/bucketfs-schema-");
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = () => join(dir, `i${n++}.index`);

const tables = (db: Database) =>
  db.query<{ name: string }, []>("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").all().map((r) => r.name);
const version = (db: Database) => db.query<{ user_version: number }, []>("PRAGMA user_version").get()!.user_version;

/** An index as the bucketfs before schema versions wrote it (user_version 0). */
function legacyIndex(path: string): void {
  const db = new Database(path, { create: true });
  db.run(`CREATE TABLE meta_entries (dir TEXT NOT NULL, name TEXT NOT NULL, is_dir INTEGER NOT NULL, size INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL, etag TEXT NOT NULL, mode INTEGER, seen_ms INTEGER NOT NULL, PRIMARY KEY (dir, name)) WITHOUT ROWID`);
  db.run(`CREATE TABLE meta_dirs (dir TEXT PRIMARY KEY, listed_ms INTEGER NOT NULL) WITHOUT ROWID`);
  db.run(`CREATE TABLE meta_cached (key TEXT PRIMARY KEY, etag TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ms INTEGER NOT NULL, mode INTEGER, fetched_ms INTEGER NOT NULL) WITHOUT ROWID`);
  db.run(`CREATE TABLE meta_state (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`);
  db.run(`CREATE TABLE wd_baseline (scope TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns TEXT NOT NULL, ctime_ns TEXT NOT NULL, ino TEXT NOT NULL, etag TEXT NOT NULL, source TEXT NOT NULL,
    recorded_ms INTEGER NOT NULL, PRIMARY KEY (scope, path)) WITHOUT ROWID`);
  db.run(`CREATE TABLE wd_uploads (scope TEXT NOT NULL, path TEXT NOT NULL, attempts INTEGER NOT NULL,
    last_attempt_ms INTEGER NOT NULL, last_error TEXT NOT NULL, PRIMARY KEY (scope, path)) WITHOUT ROWID`);
  db.run(`CREATE TABLE wd_runs (id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, kind TEXT NOT NULL,
    started_ms INTEGER NOT NULL, finished_ms INTEGER, outcome TEXT NOT NULL, files INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, message TEXT)`);
  db.run("INSERT INTO meta_state VALUES ('run_boot', 'boot-old'), ('clean_stop', '1')");
  db.run("INSERT INTO meta_cached VALUES ('a/b.txt', 'e1', 3, 1000, NULL, 2000)");
  db.run("INSERT INTO wd_baseline VALUES ('work/', 'x.txt', 5, '1', '2', '3', 'etag-x', 'upload', 4000)");
  db.run("INSERT INTO wd_runs (scope, kind, started_ms, finished_ms, outcome, files, bytes, failed) VALUES ('work/', 'prefetch', 100, 200, 'ok', 2, 20, 0)");
  db.run("INSERT INTO wd_runs (scope, kind, started_ms, finished_ms, outcome, files, bytes, failed, message) VALUES ('work/', 'upload', 300, 400, 'failed', 1, 5, 1, 'x.txt: boom')");
  db.close();
}

describe("index schema version", () => {
  test("a new index gets the current version, the one runs table, mode 0600", () => {
    const path = fresh();
    const db = openIndex(path);
    new MetaIndex(db);
    new WorkdirJournal(db, "work/");
    expect(version(db)).toBe(SCHEMA_VERSION);
    expect(tables(db)).toContain("runs");
    expect(tables(db)).not.toContain("meta_state");
    expect(tables(db)).not.toContain("wd_runs");
    db.close();
    expect(statSync(path).mode & 0o777).toBe(0o600);
  });

  test("an index of the unversioned schema is migrated: runs kept, baseline and cache kept, old tables gone", () => {
    const path = fresh();
    legacyIndex(path);
    const db = openIndex(path);
    expect(version(db)).toBe(SCHEMA_VERSION);
    expect(tables(db)).not.toContain("meta_state");
    expect(tables(db)).not.toContain("wd_runs");
    const runs = new RunLog(db).recent(10);
    expect(runs.map((r) => [r.kind, r.scope, r.outcome, r.files, r.message ?? null])).toEqual([
      ["daemon", "", "ok", 0, "recorded by a bucketfs without run history"],
      ["upload", "work/", "failed", 1, "x.txt: boom"],
      ["prefetch", "work/", "ok", 2, null],
    ]);
    expect(new RunLog(db).lastDaemon()).toMatchObject({ bootId: "boot-old", cacheSynced: true, phase: "closed" });
    const j = new WorkdirJournal(db, "work/");
    expect(j.get("x.txt")).toMatchObject({ etag: "etag-x", size: 5, mtimeNs: 1n, source: "upload" });
    expect(j.runs(5).map((r) => r.kind)).toEqual(["upload", "prefetch"]);
    expect(new MetaIndex(db).cached("a/b.txt")).toEqual({ key: "a/b.txt", etag: "e1", size: 3, mtimeMs: 1000, mode: null });
    db.close();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    // Migrating again is a no-op.
    const again = openIndex(path);
    expect(new RunLog(again).recent(10).length).toBe(3);
    again.close();
  });

  test("an unclean legacy run stays untrusted after the migration (cached files are forgotten on a new boot)", () => {
    const path = fresh();
    legacyIndex(path);
    const raw = new Database(path);
    raw.run("UPDATE meta_state SET value = '0' WHERE name = 'clean_stop'");
    raw.close();
    const db = openIndex(path);
    expect(new RunLog(db).lastDaemon()).toMatchObject({ bootId: "boot-old", cacheSynced: false });
    db.close();
  });

  test("an index of a newer schema is refused with what to do, and left as it is", () => {
    const path = fresh();
    const raw = new Database(path, { create: true });
    raw.run(`PRAGMA user_version = ${SCHEMA_VERSION + 5}`);
    raw.close();
    expect(() => openIndex(path)).toThrow(/newer than this bucketfs understands.*remove the index to rebuild it/);
    const check = new Database(path);
    expect(version(check)).toBe(SCHEMA_VERSION + 5);
    check.close();
  });

  test("status (read-only) never migrates: an old index is reported, not changed", () => {
    const path = fresh();
    legacyIndex(path);
    expect(() => openIndex(path, { readonly: true })).toThrow(/schema version 0/);
    const check = new Database(path);
    expect(version(check)).toBe(0);
    check.close();
  });

  test("a symlink at the index or its WAL is never followed", () => {
    const victim = join(dir, "victim");
    writeFileSync(victim, "untouched");
    const a = fresh();
    symlinkSync(victim, a);
    expect(() => openIndex(a)).toThrow(/is a symlink; bucketfs never follows symlinks/);
    const b = fresh();
    symlinkSync(victim, `${b}-wal`);
    expect(() => openIndex(b)).toThrow(/-wal is a symlink/);
    expect(readFileSync(victim, "utf8")).toBe("untouched");
  });
});

describe("full disk", () => {
  test("bestEffort counts a disk-full write as lost and returns undefined; other errors still throw", () => {
    const db = new Database(":memory:");
    const full = Object.assign(new Error("database or disk is full"), { code: "SQLITE_FULL" });
    expect(bestEffort(db, () => { throw full; })).toBeUndefined();
    expect(bestEffort(db, () => { throw Object.assign(new Error("x"), { code: "ENOSPC" }); })).toBeUndefined();
    expect(lostWrites(db)).toBe(2);
    expect(() => bestEffort(db, () => { throw new Error("constraint failed"); })).toThrow("constraint failed");
    expect(bestEffort(db, () => 7)).toBe(7);
    expect(lostWrites(db)).toBe(2);
  });
});
