/**
 * The workdir journal: what the local workdir looked like when it last agreed with S3.
 *
 * Is: the baseline table (one row per file that is known to equal an object in S3, with the
 * local stat stamp taken at that moment), the per-path log of failed upload attempts, the
 * workdir's transfer runs (rows of the index's one `runs` table, cache/runs.ts), and the
 * scan that compares the workdir against the baseline ("dirty" = local changes not yet
 * uploaded). Lives in the per-bucket sqlite index
 * (tables prefixed `wd_`), so it survives crashes and restarts. Writes are best effort on
 * a full disk (cache/full-disk.ts): a baseline that could not be recorded leaves its file
 * looking changed, so it is uploaded again at the next start.
 * Is not: a transfer engine (`prefetch.ts`, `upload.ts` do the I/O against S3) nor a file
 * watcher. Writes in the workdir are invisible to bucketfs; the stamp comparison is the
 * only change detection.
 *
 * Dirty rule: a regular file is dirty when it has no baseline row, or when its size,
 * mtime (ns), ctime (ns) or inode differs from the row. ctime catches `touch -r`-style
 * mtime restores, the inode catches files replaced by rename. Stamps are read with
 * `lstat(..., {bigint: true})` and stored as decimal text (nanosecond times and inode
 * numbers do not fit a double).
 */
import type { Database } from "bun:sqlite";
import { lstatSync, readdirSync, type BigIntStats } from "node:fs";
import { join } from "node:path";
import { describeProblem, keyProblem } from "../../cache/keys.ts";
import { RESERVED_DIR } from "./lease.ts";
import { encodeName, type MappedName } from "./names.ts";
import { TEMP_FILE_RE } from "../../cache/cache-root.ts";
import { WD_LEASE_DDL } from "../../cache/db.ts";
import { bestEffort } from "../../cache/full-disk.ts";
import { RunLog, type RunKind, type RunOutcome, type RunRecord, type RunSummary } from "../../cache/runs.ts";

export type { RunKind, RunOutcome, RunRecord, RunSummary };
export type TransferKind = Exclude<RunKind, "daemon">;
/** Number of runs `status()` reports. */
export const STATUS_RUNS = 5;

/**
 * The prefetch and the upload run a full collection after every this many files (of the few
 * MiB they keep live). Each transfer leaves only garbage (7 MiB of heap after a
 * full collection following 20,000 downloads), but the engine lets it pile up between its own
 * collections: measured in one process, 20,000 downloads peaked 68 MiB above the start without
 * this and 50 MiB with it (bench/scale.ts gives the daemon's figures at 100,000 files).
 */
export const GC_EVERY_FILES = 1000;
/** Longest error text kept per path / run, in characters. */
const ERROR_TEXT_MAX = 2000;

/** The part of a stat result the dirty rule looks at. */
export interface FileStamp {
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
  ino: bigint;
}

export type BaselineSource = "prefetch" | "upload";

export interface Baseline extends FileStamp {
  /** Path relative to the workdir cache dir, "/"-separated. */
  path: string;
  /** ETag of the object this file equals. */
  etag: string;
  source: BaselineSource;
  recordedAtMs: number;
}

export interface UploadFailureRecord {
  path: string;
  attempts: number;
  lastAttemptMs: number;
  lastError: string;
}

export type EntryKind = "file" | "symlink" | "fifo" | "socket" | "char-device" | "block-device" | "other";

/** One non-directory entry of the workdir, as the walk found it (never following symlinks). */
export interface WorkdirEntry {
  /** Relative path, "/"-separated. */
  rel: string;
  /** The path on disk: a Buffer when some component is not valid UTF-8 (see names.ts). */
  abs: string | Buffer;
  kind: EntryKind;
  stamp: FileStamp;
  /** Full st_mode, uid, gid (for upload metadata). */
  mode: number;
  uid: number;
  gid: number;
}

/** Something the walk could not look at; its contents are unknown (never silently "clean"). */
export interface WalkProblem {
  rel: string;
  error: string;
}

export interface WalkResult {
  entries: WorkdirEntry[];
  /** Directories with nothing in them (kept by commit records, since S3 has no directories). */
  emptyDirs: string[];
  /** The workdir has bucketfs' reserved `.bucketfs` entry (never uploaded). */
  reserved: boolean;
  /** Prefetch temp files (skipped, never uploaded). */
  tempFiles: string[];
  problems: WalkProblem[];
  /** Paths (as stored in S3) whose bytes on disk needed the name mapping, with those bytes. */
  names: MappedName[];
}

/** A walk of the workdir that hands each entry over as found (`visitWorkdir` bound to a root). */
export type WorkdirVisit = (onEntry: (e: WorkdirEntry) => void) => Omit<WalkResult, "entries">;

export interface PendingFile {
  path: string;
  size: number;
}

export interface WorkdirStatus {
  pending: PendingFile[];
  pendingBytes: number;
  failures: UploadFailureRecord[];
  runs: RunRecord[];
}

export function stampOf(st: BigIntStats): FileStamp {
  return { size: Number(st.size), mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs, ino: st.ino };
}

export function sameStamp(a: FileStamp, b: FileStamp): boolean {
  return a.size === b.size && a.mtimeNs === b.mtimeNs && a.ctimeNs === b.ctimeNs && a.ino === b.ino;
}

/**
 * lstat with bigint times; null when the path does not exist. A missing path is the common case
 * (a prefetch into an empty workdir asks for 100,000 of them): it returns without an exception,
 * whose Error objects and stack strings the engine keeps until its next collection (at 100,000
 * files they were most of the prefetch's peak RSS: bench/scale.ts, see bench/README.md).
 */
export function lstatBig(path: string | Buffer): BigIntStats | null {
  try {
    return lstatSync(path, { bigint: true, throwIfNoEntry: false }) ?? null;
  } catch (err) {
    if (isErrno(err, "ENOENT") || isErrno(err, "ENOTDIR")) return null;
    throw err;
  }
}

export function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && "code" in err && (err as { code: unknown }).code === code;
}

export function kindOf(st: BigIntStats): EntryKind | "dir" {
  if (st.isDirectory()) return "dir";
  if (st.isFile()) return "file";
  if (st.isSymbolicLink()) return "symlink";
  if (st.isFIFO()) return "fifo";
  if (st.isSocket()) return "socket";
  if (st.isCharacterDevice()) return "char-device";
  if (st.isBlockDevice()) return "block-device";
  return "other";
}

function errText(err: unknown): string {
  const s = err instanceof Error ? err.message : String(err);
  return s.length > ERROR_TEXT_MAX ? s.slice(0, ERROR_TEXT_MAX) + "…" : s;
}

/**
 * Walk the workdir cache dir without following symlinks. Directories are descended,
 * everything else is returned with its lstat. Names that are not valid UTF-8 get their key
 * form from the name mapping (names.ts; `rel` is the key form, `abs` the bytes on disk, and
 * `names` lists them for the commit record). Paths that cannot be local paths are reported
 * as problems, as are unreadable directories.
 */
export function walkWorkdir(root: string): WalkResult {
  const entries: WorkdirEntry[] = [];
  const out = visitWorkdir(root, (e) => void entries.push(e));
  entries.sort((a, b) => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0));
  return { ...out, entries };
}

/**
 * The walk of `walkWorkdir` without keeping the entries: each is handed to `onEntry` as it is
 * found (in no particular order) and dropped, so a look at 100,000 files holds none of them.
 */
export function visitWorkdir(root: string, onEntry: (e: WorkdirEntry) => void): Omit<WalkResult, "entries"> {
  const out: Omit<WalkResult, "entries"> = { emptyDirs: [], reserved: false, tempFiles: [], problems: [], names: [] };
  // `raw`: the directory's relative path as bytes, when some component needed the name mapping.
  const stack: { rel: string; raw: Buffer | null }[] = [{ rel: "", raw: null }];
  const rootBytes = Buffer.from(`${root}/`, "utf8");
  while (stack.length > 0) {
    const { rel: relDir, raw: rawDir } = stack.pop()!;
    const absDir: string | Buffer = rawDir !== null ? Buffer.concat([rootBytes, rawDir]) : relDir === "" ? root : join(root, relDir);
    let names: Buffer[];
    try {
      names = readdirSync(absDir, { encoding: "buffer" });
    } catch (err) {
      out.problems.push({ rel: relDir === "" ? "." : relDir, error: `cannot read directory: ${errText(err)}` });
      continue;
    }
    if (names.length === 0 && relDir !== "") {
      out.emptyDirs.push(relDir);
      if (rawDir !== null) out.names.push({ path: relDir, raw: rawDir.toString("base64") });
    }
    for (const raw of names) {
      const { name, mapped } = encodeName(raw);
      const rel = relDir === "" ? name : `${relDir}/${name}`;
      if (relDir === "" && name === RESERVED_DIR) {
        out.reserved = true;
        continue;
      }
      const rawRel = rawDir === null && !mapped ? null : Buffer.concat(relDir === "" ? [raw] : [rawDir ?? Buffer.from(relDir, "utf8"), Buffer.from("/"), raw]);
      const abs: string | Buffer = rawRel !== null ? Buffer.concat([rootBytes, rawRel]) : join(root, rel);
      let st: BigIntStats;
      try {
        st = lstatSync(abs, { bigint: true });
      } catch (err) {
        if (isErrno(err, "ENOENT")) continue; // removed while walking
        out.problems.push({ rel, error: `cannot stat: ${errText(err)}` });
        continue;
      }
      const kind = kindOf(st);
      if (kind === "dir") {
        stack.push({ rel, raw: rawRel });
        continue;
      }
      if (kind === "file" && TEMP_FILE_RE.test(name)) {
        out.tempFiles.push(rel);
        continue;
      }
      const problem = keyProblem(rel);
      if (problem) {
        out.problems.push({ rel, error: `cannot be an S3 key: ${describeProblem(problem)}` });
        continue;
      }
      if (rawRel !== null) out.names.push({ path: rel, raw: rawRel.toString("base64") });
      onEntry({ rel, abs, kind, stamp: stampOf(st), mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid) });
    }
  }
  out.emptyDirs.sort();
  out.names.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  return out;
}

interface BaselineRow {
  path: string;
  size: number;
  mtime_ns: string;
  ctime_ns: string;
  ino: string;
  etag: string;
  source: string;
  recorded_ms: number;
}

interface FailureRow {
  path: string;
  attempts: number;
  last_attempt_ms: number;
  last_error: string;
}

/**
 * Baseline, failure log and run history for ONE workdir. `scope` is the workdir key prefix
 * (e.g. `workdir/`); rows of other scopes in the same index are invisible, so changing the
 * configured workdir never lets an old baseline vouch for unrelated files.
 */
/** Lists kept per workdir for `status --json`. */
export type WorkdirNote = "unreadable" | "unuploadable" | "lastUpload" | "lastPrefetch";

const WD_NOTES_DDL = `CREATE TABLE IF NOT EXISTS wd_notes (
  scope TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL, updated_ms INTEGER NOT NULL,
  PRIMARY KEY (scope, name)) WITHOUT ROWID`;

export class WorkdirJournal {
  readonly scope: string;
  private readonly db: Database;
  private readonly runLog: RunLog;
  /** The daemon run this journal's transfers belong to (set by the bucket's run). */
  daemonRun: number | undefined;

  constructor(db: Database, scope: string) {
    this.db = db;
    this.scope = scope;
    this.runLog = new RunLog(db);
    db.run(`CREATE TABLE IF NOT EXISTS wd_baseline (
      scope TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL,
      mtime_ns TEXT NOT NULL, ctime_ns TEXT NOT NULL, ino TEXT NOT NULL,
      etag TEXT NOT NULL, source TEXT NOT NULL, recorded_ms INTEGER NOT NULL,
      PRIMARY KEY (scope, path)) WITHOUT ROWID`);
    db.run(`CREATE TABLE IF NOT EXISTS wd_uploads (
      scope TEXT NOT NULL, path TEXT NOT NULL, attempts INTEGER NOT NULL,
      last_attempt_ms INTEGER NOT NULL, last_error TEXT NOT NULL,
      PRIMARY KEY (scope, path)) WITHOUT ROWID`);
    db.run(WD_LEASE_DDL);
    try {
      db.run(WD_NOTES_DDL);
      // The full-object CRC64NVME S3 accepted for an upload, by path and the ETag it belongs to.
      db.run(`CREATE TABLE IF NOT EXISTS wd_checksums (
        scope TEXT NOT NULL, path TEXT NOT NULL, etag TEXT NOT NULL, crc64nvme TEXT NOT NULL,
        PRIMARY KEY (scope, path)) WITHOUT ROWID`);
    } catch {
      /* a read-only index (status) of an older bucketfs: notes() and checksumOf() read none */
    }
  }

  /**
   * A named value the daemon keeps for `status --json` (keys prefetch could not read, files
   * that cannot be uploaded, the last upload's outcome). Replaced whole; best effort like the lease.
   */
  saveNote(name: WorkdirNote, value: unknown): void {
    bestEffort(this.db, () =>
      this.db.query("INSERT OR REPLACE INTO wd_notes (scope, name, value, updated_ms) VALUES (?, ?, ?, ?)").run(this.scope, name, JSON.stringify(value), Date.now()),
    );
  }

  /** The value saved under `name`, or null (none, or an index without notes). */
  note(name: WorkdirNote): unknown {
    try {
      const row = this.db.query<{ value: string }, [string, string]>("SELECT value FROM wd_notes WHERE scope = ? AND name = ?").get(this.scope, name);
      return row ? (JSON.parse(row.value) as unknown) : null;
    } catch {
      return null;
    }
  }

  /** The list saved under `name`, or []. */
  noteList<T>(name: WorkdirNote): T[] {
    const v = this.note(name);
    return Array.isArray(v) ? (v as T[]) : [];
  }

  /** The object `etag` that `path` was uploaded as has this full-object CRC64NVME (base64). */
  recordChecksum(path: string, etag: string, crc64nvme: string): void {
    bestEffort(this.db, () => this.db
      .query("INSERT OR REPLACE INTO wd_checksums (scope, path, etag, crc64nvme) VALUES (?, ?, ?, ?)")
      .run(this.scope, path, etag, crc64nvme));
  }

  /** The CRC64NVME recorded for `path` uploaded as `etag`, if any (none in an older read-only index). */
  checksumOf(path: string, etag: string): string | undefined {
    try {
      return this.db
        .query<{ crc64nvme: string }, [string, string, string]>("SELECT crc64nvme FROM wd_checksums WHERE scope = ? AND path = ? AND etag = ?")
        .get(this.scope, path, etag)?.crc64nvme;
    } catch {
      return undefined;
    }
  }

  /** Records the workdir lease's state for `status` (best effort: a full disk only loses the display). */
  saveLease(status: unknown): void {
    bestEffort(this.db, () =>
      this.db.query("INSERT OR REPLACE INTO wd_lease (scope, status, updated_ms) VALUES (?, ?, ?)").run(this.scope, JSON.stringify(status), Date.now()),
    );
  }

  /** The lease state the daemon last recorded for this workdir, or null. */
  lease(): { status: unknown; updatedMs: number } | null {
    const row = this.db.query<{ status: string; updated_ms: number }, [string]>("SELECT status, updated_ms FROM wd_lease WHERE scope = ?").get(this.scope);
    if (!row) return null;
    try {
      return { status: JSON.parse(row.status) as unknown, updatedMs: row.updated_ms };
    } catch {
      return null;
    }
  }

  /** The baseline of one path, or null. */
  get(path: string): Baseline | null {
    const row = this.db
      .query<BaselineRow, [string, string]>("SELECT * FROM wd_baseline WHERE scope = ? AND path = ?")
      .get(this.scope, path);
    if (!row) return null;
    return {
      path: row.path,
      size: row.size,
      mtimeNs: BigInt(row.mtime_ns),
      ctimeNs: BigInt(row.ctime_ns),
      ino: BigInt(row.ino),
      etag: row.etag,
      source: row.source === "upload" ? "upload" : "prefetch",
      recordedAtMs: row.recorded_ms,
    };
  }

  /** Record that the file at `path`, with this stamp, equals the object with `etag`. */
  record(path: string, stamp: FileStamp, etag: string, source: BaselineSource): void {
    bestEffort(this.db, () => this.db
      .query(
        `INSERT OR REPLACE INTO wd_baseline (scope, path, size, mtime_ns, ctime_ns, ino, etag, source, recorded_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      )
      .run(this.scope, path, stamp.size, stamp.mtimeNs.toString(), stamp.ctimeNs.toString(), stamp.ino.toString(), etag, source, Date.now()));
  }

  forget(path: string): void {
    this.db.query("DELETE FROM wd_baseline WHERE scope = ? AND path = ?").run(this.scope, path);
  }

  /** Number of baseline rows (for tests and status). */
  baselineCount(): number {
    const row = this.db.query<{ n: number }, [string]>("SELECT count(*) AS n FROM wd_baseline WHERE scope = ?").get(this.scope);
    return row?.n ?? 0;
  }

  /** Dirty = no baseline, or the stamp differs from it. */
  isDirty(path: string, stamp: FileStamp): boolean {
    const b = this.get(path);
    return b === null || !sameStamp(b, stamp);
  }

  /**
   * Log a failed upload attempt of `path`. `attempted = false` records why a pending file was
   * not even tried (held back, S3 unreachable, aborted) without counting an attempt.
   */
  noteFailure(path: string, error: string, attempted = true): void {
    const inc = attempted ? 1 : 0;
    bestEffort(this.db, () => this.db
      .query(
        `INSERT INTO wd_uploads (scope, path, attempts, last_attempt_ms, last_error) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (scope, path) DO UPDATE SET attempts = attempts + excluded.attempts,
           last_attempt_ms = excluded.last_attempt_ms, last_error = excluded.last_error`,
      )
      .run(this.scope, path, inc, Date.now(), errText(error)));
  }

  /** The path uploaded fine: drop its failure log. */
  clearFailure(path: string): void {
    bestEffort(this.db, () => this.db.query("DELETE FROM wd_uploads WHERE scope = ? AND path = ?").run(this.scope, path));
  }

  /** Paths whose last upload attempt failed, most recent first. */
  failures(): UploadFailureRecord[] {
    return this.db
      .query<FailureRow, [string]>("SELECT * FROM wd_uploads WHERE scope = ? ORDER BY last_attempt_ms DESC, path")
      .all(this.scope)
      .map((r) => ({ path: r.path, attempts: r.attempts, lastAttemptMs: r.last_attempt_ms, lastError: r.last_error }));
  }

  /** A transfer run of this workdir; undefined when the disk is full (not recorded). */
  startRun(kind: TransferKind): number | undefined {
    return this.runLog.start(kind, { scope: this.scope, ...(this.daemonRun === undefined ? {} : { daemonRun: this.daemonRun }) });
  }

  finishRun(id: number | undefined, outcome: Exclude<RunOutcome, "running" | "refused">, summary: RunSummary): void {
    this.runLog.finish(id, outcome, summary);
  }

  /** Most recent transfer runs first. A run still "running" after the process died shows as such. */
  runs(limit = STATUS_RUNS): RunRecord[] {
    return this.runLog.recent(limit, this.scope);
  }

  /** Scan `localDir`: regular files with local changes not yet uploaded. */
  pending(localDir: string): PendingFile[] {
    return this.scanPending(localDir).pending;
  }

  /** `pending`, with the problems the same walk met (unreadable entries), for `status`. */
  scanPending(localDir: string): { pending: PendingFile[]; problems: WalkResult["problems"] } {
    const pending: PendingFile[] = [];
    const { problems } = visitWorkdir(localDir, (e) => {
      if (e.kind === "file" && this.isDirty(e.rel, e.stamp)) pending.push({ path: e.rel, size: e.stamp.size });
    });
    pending.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    return { pending, problems };
  }

  /** Everything a `status` command shows: "N files pending, last error ...". */
  status(localDir: string): WorkdirStatus {
    const pending = this.pending(localDir);
    return {
      pending,
      pendingBytes: pending.reduce((n, p) => n + p.size, 0),
      failures: this.failures(),
      runs: this.runs(),
    };
  }
}
