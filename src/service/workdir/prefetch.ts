/**
 * Workdir prefetch: makes the workdir cache dir hold every object under the workdir prefix
 * before anything is mounted.
 *
 * Is: one `PrefetchRun` in named steps: list → read the commit record → directories →
 * decide per key → parallel download into same-directory temp files (restore mtime/mode,
 * atomic rename, record the baseline) → restore symlinks → finish (the run row and
 * `status --json`'s `lastPrefetch`). Names the record maps (names.ts) get their original bytes back. All-or-nothing in the sense that
 * matters: a download failure that puts the workdir's content in doubt (auth, 5xx after the
 * store's retries, the local disk) cancels the rest, removes temp files and throws (the mount
 * must not start); files already complete stay complete, nothing half-written is ever
 * visible under its real name. One exception: a key the listing showed but the server
 * answers 404 for, twice (a server that lists a key under another name than it serves, e.g.
 * one that ignores `encoding-type=url`), is skipped with one line and reported as
 * `unreadable` (report, `status --json`, the next commit record).
 * Is not: a sync. It never deletes local files, and it never overwrites a local change that
 * has not been uploaded yet (a dirty file, e.g. after a crash or a failed upload).
 *
 * Rules per remote file, against the journal baseline:
 *  (a) local file dirty (no baseline, or stamp differs)  → keep it ("kept local change");
 *  (b) local file clean and remote ETag == baseline ETag → nothing to do;
 *  (c) otherwise (missing locally, or clean but remote changed) → download, S3 wins;
 *  except (d) missing locally and listed as deleted by the latest commit record with the ETag
 *      S3 still has → not downloaded (the workdir deleted it after bucketfs uploaded it).
 * Keys under `.bucketfs/` (lease, commit records) are never downloaded; the record's symlinks
 * and empty directories are recreated where nothing local is in their place.
 * Every key is checked with `keyProblem`/`containedPath`, and no existing symlink or
 * non-directory is ever traversed or replaced, so nothing is written outside `localDir`.
 */
import { chmodSync, lstatSync, mkdirSync, renameSync, rmSync, symlinkSync, unlinkSync, utimesSync, type BigIntStats } from "node:fs";
import { basename, dirname, join } from "node:path";
import { containedPath, describeProblem, keyProblem } from "../../cache/keys.ts";
import { CacheRootError, mkdirsUnder, tempNameFor } from "../../cache/cache-root.ts";
import { objectMode, storedMtimeS } from "../../store/meta.ts";
import { StoreError, type ObjectInfo, type ObjectStore } from "../../store/types.ts";
import { errMsg, fmtBytes, type Logger } from "../../util/log.ts";
import { isReservedPath, prefetchPlan, type CommitRecord, type PrefetchPlan } from "./commit-record.ts";
import { GC_EVERY_FILES, isErrno, lstatBig, stampOf, visitWorkdir, type WorkdirJournal } from "./journal.ts";
import { loadLatestRecord } from "./workdir-record.ts";
import { LocalNames } from "./names.ts";
import { linkSignals, runAll } from "../../util/async.ts";

/** What the lead passes for one bucket's workdir. */
export interface WorkdirSpec {
  /** Key prefix of the workdir, ending in "/", e.g. `workdir/`. */
  prefix: string;
  /** The workdir cache dir, e.g. `/tmp/bucketfs/.nf-data/workdir`. */
  localDir: string;
  /** Marker file name uploaded last, e.g. `.exitcode`. */
  lastUploadFile: string;
  /** Parallel transfers. */
  concurrency: number;
  /** Whether a file S3 cannot take holds back the markers (`unuploadable_holds_markers`, default true). */
  unuploadableHoldsMarkers?: boolean;
}

export interface SkippedKey {
  key: string;
  reason: string;
}

export interface UnreadableKey {
  key: string;
  /** The ETag the listing showed. */
  etag: string;
  error: string;
}

export interface PrefetchReport {
  /** Remote regular objects considered (after skipping unusable keys). */
  remoteFiles: number;
  /** Of those, how many were to be downloaded (missing locally, or changed in S3). */
  toDownload: number;
  downloaded: number;
  downloadedBytes: number;
  /** Clean local files whose remote ETag is unchanged. */
  upToDate: number;
  /** Dirty local files (or local non-regular entries) left untouched. */
  keptLocal: string[];
  /** Keys that were not written: unsafe names, file/directory clashes, blocked paths. */
  skipped: SkippedKey[];
  /** Keys the listing showed but the server answered 404 for, twice: not in the workdir. */
  unreadable: UnreadableKey[];
  directories: number;
  /** Stale temp files of an earlier crash that were removed. */
  staleTempFilesRemoved: number;
  /** The latest commit record found under the prefix (null: none, or unreadable). */
  record: CommitRecord | null;
  /** Keys not downloaded because the workdir deleted them after bucketfs uploaded them. */
  skippedDeleted: string[];
  /** Symlinks and empty directories recreated from the record. */
  restoredSymlinks: number;
  restoredDirs: number;
  seconds: number;
  bytesPerSec: number;
}

/** What `status --json` shows of the last successful prefetch (`workdir.lastPrefetch`). */
export type LastPrefetch = { finishedMs: number } & Pick<
  PrefetchReport,
  "remoteFiles" | "toDownload" | "downloaded" | "upToDate" | "keptLocal" | "skipped" | "skippedDeleted" | "unreadable" | "restoredSymlinks" | "restoredDirs"
>;

/** Log a progress line at most this often. */
export const PROGRESS_LOG_INTERVAL_MS = 5000;
/** Mode for downloaded files without usable `mode` metadata. */
export const DEFAULT_FILE_MODE = 0o644;
/**
 * Permission bits applied from `mode` metadata (parsed by store/meta.ts: s3fs decimal
 * "33188" or octal "0100644"). setuid/setgid/sticky are dropped on purpose:
 * the daemon usually runs as root, and whoever can write the bucket must not be able to plant
 * a setuid-root binary (same reasoning as rclone GHSA-945v-v9p3-v5xw).
 */
export const APPLIED_MODE_MASK = 0o777;
/** Highest concurrency accepted (a typo like 10000 would exhaust sockets/fds). */
export const MAX_CONCURRENCY = 256;

/** Thrown when prefetch fails; the caller must not mount. */
export class PrefetchError extends Error {
  override readonly name = "PrefetchError";
  constructor(message: string, opts?: { cause?: unknown }) {
    super(message, opts);
  }
}

/** Remove prefetch temp files left by a crash. Returns how many. */
function removeStaleTemps(localDir: string, log: Logger): number {
  const { tempFiles } = visitWorkdir(localDir, () => {}); // the entries are not needed
  for (const rel of tempFiles) {
    try {
      unlinkSync(join(localDir, rel));
      log.info(`removed stale temp file ${rel}`);
    } catch (err) {
      if (!isErrno(err, "ENOENT")) throw new PrefetchError(`cannot remove stale temp file ${join(localDir, rel)}: ${errMsg(err)}`, { cause: err });
    }
  }
  return tempFiles.length;
}

/**
 * Make `relDir` (possibly "") a real directory under root, component by component, never
 * through a symlink or a non-directory. Returns null on success, or the reason it cannot.
 * A directory whose name needed the name mapping is made under its original bytes.
 */
function ensureRealDir(root: string, relDir: string, created: Set<string>, names?: LocalNames): string | null {
  const local = names?.local(relDir) ?? relDir;
  if (typeof local !== "string") return ensureRawDir(root, local, relDir, created);
  try {
    mkdirsUnder(root, relDir, { known: created });
    return null;
  } catch (err) {
    if (err instanceof CacheRootError) return `${err.message.split(";")[0]}; not writing through it`;
    throw err;
  }
}

/** `ensureRealDir` for a path given as bytes (lstat each component; mkdir what is missing). */
function ensureRawDir(root: string, raw: Buffer, relDir: string, created: Set<string>): string | null {
  const rootBytes = Buffer.from(`${root}/`, "utf8");
  let end = 0;
  while (end <= raw.length) {
    let next = raw.indexOf(0x2f, end);
    if (next < 0) next = raw.length;
    const p = Buffer.concat([rootBytes, raw.subarray(0, next)]);
    const st = lstatBig(p);
    if (st === null) mkdirSync(p, { mode: 0o755 });
    else if (!st.isDirectory()) return `${JSON.stringify(relDir)} has a ${st.isSymbolicLink() ? "symlink" : "non-directory"} in its path; not writing through it`;
    end = next + 1;
  }
  created.add(relDir);
  return null;
}

/**
 * Recreates the record's symlinks where nothing is in their place (a local entry always wins),
 * under real directories only. The target is stored as it was; nothing is written through it.
 */
function restoreSymlinks(
  localDir: string, links: { path: string; target: string }[], created: Set<string>, report: PrefetchReport, log: Logger, names: LocalNames,
): void {
  for (const l of links) {
    if (keyProblem(l.path) !== null) continue;
    const parent = l.path.includes("/") ? l.path.slice(0, l.path.lastIndexOf("/")) : "";
    const reason = ensureRealDir(localDir, parent, created, names);
    if (reason !== null) {
      log.warn(`not restoring symlink ${l.path}: ${reason}`);
      continue;
    }
    const abs = localPath(localDir, l.path, names);
    if (lstatBig(abs) !== null) continue;
    try {
      symlinkSync(l.target, abs);
      report.restoredSymlinks++;
    } catch (err) {
      log.warn(`cannot restore symlink ${l.path}: ${errMsg(err)}`);
    }
  }
}

/** One file to download: its path under the workdir and the listed object (its local path is made when it runs). */
interface DownloadJob {
  rel: string;
  obj: ObjectInfo;
}

/** The checked local path of `rel`: its original bytes when the record maps it (names.ts). */
function localPath(localDir: string, rel: string, names: LocalNames): string | Buffer {
  const checked = containedPath(localDir, rel);
  const local = names.local(rel);
  return typeof local === "string" ? checked : names.join(localDir, rel);
}

function rate(bytes: number, seconds: number): string {
  return seconds > 0 ? `${fmtBytes(Math.round(bytes / seconds))}/s` : "-";
}

/**
 * Makes the workdir cache dir hold every object under the prefix (see the header). Throws
 * PrefetchError when the start must not go on.
 */
export async function prefetchWorkdir(
  store: ObjectStore,
  journal: WorkdirJournal,
  spec: WorkdirSpec,
  log: Logger,
  signal?: AbortSignal,
): Promise<PrefetchReport> {
  const { prefix } = spec;
  if (!prefix.endsWith("/") || keyProblem(prefix) !== null) throw new PrefetchError(`invalid workdir prefix ${JSON.stringify(prefix)}`);
  if (journal.scope !== prefix) throw new PrefetchError(`journal scope ${JSON.stringify(journal.scope)} does not match workdir prefix ${JSON.stringify(prefix)}`);
  return new PrefetchRun(store, journal, spec, log, signal).run();
}

/** What the listing found under the prefix. */
interface Listed {
  files: Map<string, ObjectInfo>;
  dirs: Set<string>;
  reservedKeys: string[];
}

/** One prefetch, step by step: list → record → directories → decide → download → restore → finish. */
class PrefetchRun {
  private readonly report: PrefetchReport;
  private readonly prefix: string;
  private readonly localDir: string;
  private readonly where: string;
  private readonly t0 = performance.now();
  private readonly concurrency: number;
  private names = new LocalNames();
  /** Directories made (or found) real, and those that cannot be (with why). */
  private readonly created = new Set<string>();
  private readonly blockedDirs = new Map<string, string>();

  constructor(
    private readonly store: ObjectStore,
    private readonly journal: WorkdirJournal,
    private readonly spec: WorkdirSpec,
    private readonly log: Logger,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.prefix = spec.prefix;
    this.localDir = spec.localDir;
    this.where = `s3://${store.bucket}/${spec.prefix}`;
    this.concurrency = Math.max(1, Math.min(MAX_CONCURRENCY, Math.floor(spec.concurrency)));
    this.report = {
      remoteFiles: 0, toDownload: 0, downloaded: 0, downloadedBytes: 0, upToDate: 0, keptLocal: [], skipped: [], unreadable: [], directories: 0,
      staleTempFilesRemoved: 0, record: null, skippedDeleted: [], restoredSymlinks: 0, restoredDirs: 0, seconds: 0, bytesPerSec: 0,
    };
  }

  async run(): Promise<PrefetchReport> {
    const { report, journal, localDir, log } = this;
    mkdirSync(localDir, { recursive: true });
    report.staleTempFilesRemoved = removeStaleTemps(localDir, log);
    const runId = journal.startRun("prefetch");
    try {
      const listed = await this.list();
      const plan = await this.readRecord(listed);
      this.makeDirs(listed.dirs);
      const { jobs, plannedBytes } = this.decide(listed.files, plan);
      await this.download(jobs, plannedBytes);
      restoreSymlinks(localDir, plan.symlinks, this.created, report, log, this.names);
      report.restoredDirs = plan.dirs.filter((d) => this.created.has(d)).length;
      this.finish(runId);
      return report;
    } catch (err) {
      throw this.failed(runId, err);
    }
  }

  private skip(key: string, reason: string): void {
    this.report.skipped.push({ key, reason });
    this.log.warn(`skipping s3://${this.store.bucket}/${key}: ${reason}`);
  }

  /** Step 1: list the prefix; keys that cannot be local paths are skipped, bucketfs' own set apart. */
  private async list(): Promise<Listed> {
    const { prefix, log } = this;
    log.info(`prefetch ${this.where} -> ${this.localDir}: listing`);
    const out: Listed = { files: new Map(), dirs: new Set(), reservedKeys: [] };
    try {
      for await (const obj of this.store.listAll(prefix, this.signal)) {
        const rel = obj.key.slice(prefix.length);
        if (!obj.key.startsWith(prefix) || rel === "") continue; // the prefix's own marker
        if (isReservedPath(rel)) {
          out.reservedKeys.push(obj.key); // bucketfs' lease and commit records, never workdir files
          continue;
        }
        const problem = keyProblem(rel);
        if (problem) {
          this.skip(obj.key, `unusable as a local path (${describeProblem(problem)})`);
          continue;
        }
        if (rel.endsWith("/")) {
          out.dirs.add(rel.slice(0, -1));
          continue;
        }
        out.files.set(rel, obj);
        const parts = rel.split("/");
        for (let i = 1; i < parts.length; i++) out.dirs.add(parts.slice(0, i).join("/"));
      }
    } catch (err) {
      throw new PrefetchError(`prefetch of ${this.where} failed: listing failed: ${errMsg(err)}`, { cause: err });
    }
    return out;
  }

  /** Step 2: the latest commit record: deletions to respect, symlinks, empty dirs, original names. */
  private async readRecord(listed: Listed): Promise<PrefetchPlan> {
    const { report, prefix } = this;
    try {
      report.record = await loadLatestRecord(this.store, prefix, listed.reservedKeys, this.log, this.signal);
    } catch (err) {
      throw new PrefetchError(`prefetch of ${this.where} failed: reading the commit record failed: ${errMsg(err)}`, { cause: err });
    }
    const plan = prefetchPlan(report.record, listed.files.values());
    this.names = new LocalNames(report.record?.names ?? []);
    for (const rel of plan.dirs) {
      if (keyProblem(rel) === null) listed.dirs.add(rel);
    }
    for (const rel of [...listed.files.keys()]) {
      if (listed.dirs.has(rel)) {
        listed.files.delete(rel);
        this.skip(prefix + rel, `both a file and a directory (${prefix}${rel}/...) exist; the directory wins`);
      }
    }
    return plan;
  }

  /** Step 3: directories, shortest first (parents before children), never through a symlink. */
  private makeDirs(dirs: Set<string>): void {
    for (const d of [...dirs].sort((a, b) => a.length - b.length || (a < b ? -1 : 1))) {
      const parent = d.includes("/") ? d.slice(0, d.lastIndexOf("/")) : "";
      const parentBlock = this.blockedDirs.get(parent);
      if (parentBlock !== undefined) {
        this.blockedDirs.set(d, parentBlock);
        continue;
      }
      const reason = ensureRealDir(this.localDir, d, this.created, this.names);
      if (reason !== null) {
        this.blockedDirs.set(d, reason);
        this.log.warn(`cannot create directory ${d}: ${reason}; remote objects under ${this.prefix}${d}/ are skipped`);
      } else this.report.directories++;
    }
  }

  /** Step 4: per remote file, against the journal baseline (rules (a)-(d) of the header). */
  private decide(files: Map<string, ObjectInfo>, plan: PrefetchPlan): { jobs: DownloadJob[]; plannedBytes: number } {
    const { report, journal, log } = this;
    const jobs: DownloadJob[] = [];
    let plannedBytes = 0;
    // In the listing's order (S3 lists keys sorted): no sorted copy of 100,000 entries.
    for (const [rel, obj] of files) {
      report.remoteFiles++;
      const parent = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
      const block = this.blockedDirs.get(parent);
      if (block !== undefined) {
        report.skipped.push({ key: obj.key, reason: block });
        continue;
      }
      const abs = localPath(this.localDir, rel, this.names);
      const st = lstatBig(abs);
      if (st === null && plan.skipDeleted.has(rel)) {
        report.skippedDeleted.push(rel);
        log.debug(`not restoring ${rel}: deleted from the workdir after bucketfs uploaded it (commit record ${report.record?.seq})`);
        continue;
      }
      if (st !== null) {
        if (!st.isFile()) {
          report.keptLocal.push(rel);
          log.warn(`kept local change ${rel}: a local ${st.isDirectory() ? "directory" : "non-regular file"} is in the place of ${obj.key}`);
          continue;
        }
        const stamp = stampOf(st);
        const base = journal.get(rel);
        if (base === null || base.size !== stamp.size || base.mtimeNs !== stamp.mtimeNs || base.ctimeNs !== stamp.ctimeNs || base.ino !== stamp.ino) {
          report.keptLocal.push(rel);
          log.info(`kept local change ${rel} (not uploaded yet; remote ${obj.key} not downloaded)`);
          continue;
        }
        if (base.etag === obj.etag) {
          report.upToDate++;
          continue;
        }
      }
      jobs.push({ rel, obj });
      plannedBytes += obj.size;
    }
    report.toDownload = jobs.length;
    log.info(
      `prefetch ${this.where}: ${report.remoteFiles} files, ${jobs.length} to download (${fmtBytes(plannedBytes)}), ` +
        `${report.upToDate} up to date, ${report.keptLocal.length} kept local, ${report.skipped.length} skipped`,
    );
    return { jobs, plannedBytes };
  }

  /**
   * Step 5: download with bounded concurrency; the first failure that puts the content in doubt
   * cancels the rest and throws. A listed key answered 404 twice is skipped and reported.
   */
  private async download(jobs: DownloadJob[], plannedBytes: number): Promise<void> {
    const { report, journal, log, store, localDir } = this;
    const ac = linkSignals(this.signal);
    let firstError: PrefetchError | null = null;
    const inflight = new Map<string, number>();
    let doneBytes = 0;
    let lastLog = performance.now();
    const progress = (): void => {
      const now = performance.now();
      if (now - lastLog < PROGRESS_LOG_INTERVAL_MS) return;
      lastLog = now;
      let bytes = doneBytes;
      for (const b of inflight.values()) bytes += b;
      const secs = (now - this.t0) / 1000;
      log.info(`prefetch ${this.where}: ${report.downloaded}/${jobs.length} files, ${fmtBytes(bytes)}/${fmtBytes(plannedBytes)}, ${rate(bytes, secs)}`);
    };
    const ticker = setInterval(progress, PROGRESS_LOG_INTERVAL_MS);

    const notFound = (err: unknown): boolean => err instanceof StoreError && err.kind === "not-found";
    /** The download; a 404 for a listed key is tried once more, then reported and skipped (null). */
    const downloadListed = async (job: DownloadJob, tmp: string): Promise<ObjectInfo | null> => {
      const opts = { signal: ac.signal, onProgress: (b: number) => inflight.set(job.rel, b) };
      for (let attempt = 1; ; attempt++) {
        try {
          return await store.download(job.obj.key, tmp, opts);
        } catch (err) {
          if (!notFound(err) || ac.signal.aborted) throw err;
          rmSync(tmp, { force: true });
          if (attempt < 2) continue;
          report.unreadable.push({ key: job.obj.key, etag: job.obj.etag, error: errMsg(err) });
          log.warn(
            `skipping s3://${store.bucket}/${job.obj.key}: listed under the prefix, but the server answers 404 for it ` +
              `(twice); it is not in the workdir and is reported as unreadable (status --json, commit record)`,
          );
          return null;
        }
      }
    };

    const downloadOne = async (job: DownloadJob): Promise<void> => {
      const abs = localPath(localDir, job.rel, this.names);
      // A name kept as bytes cannot be a string path: its temp file sits at the top, renamed across.
      const tmp = typeof abs === "string" ? join(dirname(abs), tempNameFor(basename(abs))) : join(localDir, tempNameFor("mapped-name"));
      inflight.set(job.rel, 0);
      let renamed = false;
      try {
        const info = await downloadListed(job, tmp);
        if (info === null) return;
        const tmpSt = lstatSync(tmp);
        if (tmpSt.size !== info.size) throw new Error(`downloaded ${tmpSt.size} bytes, object has ${info.size}`);
        chmodSync(tmp, (objectMode(info) ?? DEFAULT_FILE_MODE) & APPLIED_MODE_MASK);
        const when = storedMtimeS(info);
        utimesSync(tmp, when, when);
        // The target may have appeared or changed since the decision (nothing should run yet,
        // but never clobber a dirty file or a directory).
        const now: BigIntStats | null = lstatBig(abs);
        if (now !== null && (!now.isFile() || journal.isDirty(job.rel, stampOf(now)))) {
          report.keptLocal.push(job.rel);
          log.warn(`kept local change ${job.rel}: it changed during prefetch`);
          return;
        }
        renameSync(tmp, abs);
        renamed = true;
        const finalSt = lstatBig(abs);
        if (finalSt === null) throw new Error("file vanished right after rename");
        journal.record(job.rel, stampOf(finalSt), info.etag, "prefetch");
        report.downloaded++;
        if (report.downloaded % GC_EVERY_FILES === 0) Bun.gc(true); // see GC_EVERY_FILES
        doneBytes += info.size;
        report.downloadedBytes += info.size;
        log.debug(`downloaded ${job.obj.key} (${fmtBytes(info.size)})`);
      } catch (err) {
        if (firstError === null) {
          const cause = ac.signal.aborted && this.signal?.aborted ? "cancelled" : errMsg(err);
          firstError = new PrefetchError(`prefetch of ${this.where} failed: bucket ${store.bucket}, key ${job.obj.key}: ${cause}`, { cause: err });
          ac.abort(firstError);
        }
      } finally {
        inflight.delete(job.rel);
        if (!renamed) rmSync(tmp, { force: true });
      }
    };

    try {
      // downloadOne never throws; after the first failure (or an abort) the rest are skipped.
      await runAll(jobs, this.concurrency, async (job) => {
        if (firstError === null && !ac.signal.aborted) await downloadOne(job);
      });
    } finally {
      clearInterval(ticker);
      ac.dispose();
    }
    if (firstError === null && ac.signal.aborted) {
      firstError = new PrefetchError(`prefetch of ${this.where} cancelled`, { cause: ac.signal.reason });
    }
    if (firstError !== null) throw firstError;
  }

  /** Step 7: the summary line, the run row, and the unreadable keys for `status --json`. */
  private finish(runId: number | undefined): void {
    const { report, journal, log } = this;
    report.seconds = (performance.now() - this.t0) / 1000;
    report.bytesPerSec = report.seconds > 0 ? report.downloadedBytes / report.seconds : 0;
    log.info(
      `prefetch ${this.where} done: ${report.downloaded} downloaded (${fmtBytes(report.downloadedBytes)}, ${rate(report.downloadedBytes, report.seconds)}), ` +
        `${report.upToDate} up to date, ${report.keptLocal.length} kept local, ${report.skipped.length} skipped, ` +
        `${report.unreadable.length} unreadable, ` +
        `${report.skippedDeleted.length} deleted since the last commit, ${report.restoredSymlinks} symlinks restored, ${report.seconds.toFixed(1)} s`,
    );
    journal.saveNote("unreadable", report.unreadable);
    const last: LastPrefetch = {
      finishedMs: Date.now(), remoteFiles: report.remoteFiles, toDownload: report.toDownload, downloaded: report.downloaded,
      upToDate: report.upToDate, keptLocal: report.keptLocal, skipped: report.skipped, skippedDeleted: report.skippedDeleted,
      unreadable: report.unreadable, restoredSymlinks: report.restoredSymlinks, restoredDirs: report.restoredDirs,
    };
    journal.saveNote("lastPrefetch", last);
    journal.finishRun(runId, "ok", {
      files: report.downloaded, bytes: report.downloadedBytes, failed: 0,
      ...(report.unreadable.length > 0 ? { message: `${report.unreadable.length} listed keys unreadable (404), e.g. ${report.unreadable[0]!.key}` } : {}),
    });
  }

  /** A failed prefetch: no temp file survives, the run row says why; returns the error to throw. */
  private failed(runId: number | undefined, err: unknown): PrefetchError {
    const { report, log } = this;
    const e = err instanceof PrefetchError ? err : new PrefetchError(`prefetch of ${this.where} failed: ${errMsg(err)}`, { cause: err });
    try {
      removeStaleTemps(this.localDir, log);
    } catch {
      /* already reported by the primary error */
    }
    this.journal.finishRun(runId, this.signal?.aborted ? "aborted" : "failed", {
      files: report.downloaded,
      bytes: report.downloadedBytes,
      failed: 1,
      message: e.message,
    });
    if (this.signal?.aborted) log.info(`prefetch of ${this.where} stopped: ${report.downloaded} files downloaded before the stop`);
    else log.error(e.message);
    return e;
  }
}
