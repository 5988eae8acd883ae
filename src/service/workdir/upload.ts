/**
 * Workdir upload: pushes local changes of the workdir cache dir back to S3 (at shutdown).
 *
 * Is: one `UploadRun` in named steps: classify (walk with lstat, never following symlinks;
 * regular files whose stamp differs from the journal baseline; names mapped by names.ts, keys
 * over S3's limit set apart as unuploadable) → upload the files (parallel, one attempt per
 * file: the store's request path retries every S3 request, the only retry policy in
 * bucketfs; baseline update per success) → the commit record → the markers → finish (the run
 * row and `status --json`'s `lastUpload`). Every file and the record run under the lease's
 * fence (`UploadFence`): once it fires nothing more is sent. Marker files
 * (`spec.lastUploadFile`, e.g. Nextflow's `.exitcode`) go only after EVERY other file
 * succeeded, so a marker in S3 proves its outputs are there; if anything failed, all
 * markers are held back and stay dirty for the next run.
 * Is not: a sync. It never deletes anything remotely, never uploads symlinks, fifos,
 * sockets or devices (they are listed as skipped), and never throws for a per-file failure:
 * failures are in the report, the caller picks the exit code.
 *
 * Metadata written (read by s3fs and rclone): `mtime` = seconds with a 9-digit fraction
 * (`1700000000.123456789`; s3fs parses the fraction as nanoseconds, rclone as a float),
 * `mode` = octal st_mode (`0100644`; s3fs parses with strtol base 0, rclone as octal),
 * `uid`, `gid` = decimal.
 */
import { closeSync, openSync } from "node:fs";
import { basename } from "node:path";
import { StoreError, type ObjectStore } from "../../store/types.ts";
import { linkSignals, runAll } from "../../util/async.ts";
import { errMsg, fmtBytes, type Logger } from "../../util/log.ts";
import { GC_EVERY_FILES, lstatBig, sameStamp, stampOf, visitWorkdir, type EntryKind, type FileStamp, type TransferKind, type WorkdirJournal, type WorkdirVisit } from "./journal.ts";
import { RESERVED_DIR } from "./lease.ts";
import { keyTooLong } from "./names.ts";
import { MAX_CONCURRENCY, PROGRESS_LOG_INTERVAL_MS, type WorkdirSpec } from "./prefetch.ts";

/**
 * After this many files in a row failed with retryable errors (after the store's own retries),
 * the store is considered unreachable and the remaining files are not attempted (they stay
 * dirty). Bounds shutdown time when S3 is down: without it, every file would wait out the
 * store's full retry schedule.
 */
export const UNREACHABLE_AFTER_FILES = 3;
/** `onProgress` byte updates are coalesced to at most one per this interval. */
export const PROGRESS_CALLBACK_INTERVAL_MS = 250;

export interface UploadProgress {
  phase: "files" | "markers";
  filesDone: number;
  filesTotal: number;
  bytesDone: number;
  bytesTotal: number;
  failed: number;
}

/**
 * Whether this node may still write to the workdir prefix (the lease's fence, see
 * workdir-owner.ts): `signal` fires the moment it may not, and cuts the requests in flight;
 * `reason()` is checked before each file and says why not (null: may write).
 */
export interface UploadFence {
  signal: AbortSignal;
  reason(): string | null;
}

export interface UploadOptions {
  signal?: AbortSignal;
  /** The lease's fence: no data request and no commit record once it fired. */
  fence?: UploadFence;
  /** How the run is recorded: the stop's upload (default), a sync, or the recovery at start. */
  kind?: Exclude<TransferKind, "prefetch">;
  onProgress?: (p: UploadProgress) => void;
  /**
   * Called once every file but the markers is in S3 (and not when anything failed): writes the
   * commit record from a fresh walk. Returns the record's key, or null when none was needed. If
   * it throws, the markers are held back (a marker proves its record is there).
   */
  commit?: (walk: WorkdirVisit, signal: AbortSignal) => Promise<string | null>;
}

export interface SkippedEntry {
  path: string;
  kind: EntryKind | "vanished";
}

export interface UploadFailure {
  path: string;
  error: string;
}

/** A file S3 cannot take under its name (key too long, name refused by the server). */
export interface Unuploadable {
  path: string;
  reason: string;
}

/** S3 error codes that refuse the key itself: sending the file again cannot help. */
const NAME_REFUSED_CODES = new Set(["KeyTooLongError", "InvalidObjectName", "XMinioInvalidObjectName"]);

export interface UploadReport {
  /** Files uploaded (markers included). */
  uploaded: number;
  uploadedBytes: number;
  seconds: number;
  bytesPerSec: number;
  /** Relative paths in the order their uploads completed (markers are always last). */
  order: string[];
  /** Regular files equal to their baseline (not uploaded). */
  unchanged: number;
  /** Non-regular entries (not uploaded), and files that vanished before their upload. */
  skipped: SkippedEntry[];
  failed: UploadFailure[];
  /**
   * Files S3 cannot take under their names. They hold back the markers (and make the upload
   * incomplete) unless `unuploadableHoldsMarkers` is false; listed either way.
   */
  unuploadable: Unuploadable[];
  markersUploaded: string[];
  /** Dirty markers not uploaded because something else failed (or the run was aborted). */
  markersHeldBack: string[];
  /** Key of the commit record this run wrote, if any. */
  record: string | null;
  aborted: boolean;
  /** Why the lease's fence stopped this upload (this node may no longer write), or null. */
  fenced: string | null;
  /** No failures, nothing held back, not aborted, not fenced. */
  ok: boolean;
}

/** `1700000000.123456789`: seconds with exactly nine fractional digits. */
export function formatMtime(mtimeNs: bigint): string {
  const sec = mtimeNs / 1_000_000_000n;
  const ns = mtimeNs % 1_000_000_000n;
  if (ns < 0n) return `${sec - 1n}.${(ns + 1_000_000_000n).toString().padStart(9, "0")}`;
  return `${sec}.${ns.toString().padStart(9, "0")}`;
}

/** `0100644`: st_mode in octal with a leading zero. */
export function formatMode(mode: number): string {
  return "0" + mode.toString(8);
}

interface Candidate {
  rel: string;
  /** The path on disk (a Buffer for names that needed the mapping, see names.ts). */
  abs: string | Buffer;
  size: number;
}

type Outcome =
  | { ok: true; bytes: number }
  | { ok: false; error: string; exhausted?: boolean }
  | { ok: "vanished"; kind: SkippedEntry["kind"] }
  | { ok: "unuploadable"; reason: string };

/**
 * A path the store can open for `abs`: the path itself, or for a name that is not valid UTF-8
 * (a Buffer, which the store's string paths cannot carry) `/proc/self/fd/N` of an fd held open
 * until `close`. The stamp is taken through the same inode, so nothing changes its ctime.
 */
function openable(abs: string | Buffer): { path: string; close(): void } {
  if (typeof abs === "string") return { path: abs, close: () => undefined };
  const fd = openSync(abs, "r");
  return { path: `/proc/self/fd/${fd}`, close: () => closeSync(fd) };
}

/** Paths of `LastUpload.order` kept (the first ones and the last 1,000, where the markers are). */
export const LAST_UPLOAD_ORDER_MAX = 10_000;

/** What `status --json` shows of the last upload run (`workdir.lastUpload`). */
export interface LastUpload {
  kind: Exclude<TransferKind, "prefetch">;
  finishedMs: number;
  ok: boolean;
  uploaded: number;
  /** Regular files equal to their baseline (not uploaded). */
  unchanged: number;
  /** Paths in the order their uploads completed, markers last (the first LAST_UPLOAD_ORDER_MAX). */
  order: string[];
  failed: UploadFailure[];
  unuploadable: Unuploadable[];
  markersUploaded: string[];
  markersHeldBack: string[];
  /** Non-regular entries and files gone before their upload (not uploaded). */
  skipped: SkippedEntry[];
  aborted: boolean;
  fenced: string | null;
  record: string | null;
}

/**
 * Pushes the workdir's local changes to S3 (see the header). Never throws for a per-file
 * failure: the report says what happened, the caller picks the exit code.
 */
export async function uploadWorkdir(
  store: ObjectStore,
  journal: WorkdirJournal,
  spec: WorkdirSpec,
  log: Logger,
  opts: UploadOptions = {},
): Promise<UploadReport> {
  return new UploadRun(store, journal, spec, log, opts).run();
}

/** One upload run, step by step: classify → files → commit record → markers → finish. */
class UploadRun {
  private readonly report: UploadReport = {
    uploaded: 0, uploadedBytes: 0, seconds: 0, bytesPerSec: 0, order: [], unchanged: 0, skipped: [], failed: [],
    unuploadable: [], markersUploaded: [], markersHeldBack: [], record: null, aborted: false, fenced: null, ok: false,
  };
  private readonly prefix: string;
  private readonly where: string;
  private readonly t0 = performance.now();
  private readonly link: ReturnType<typeof linkSignals>;
  private readonly concurrency: number;
  /** Files S3 cannot take hold back the markers (`unuploadable_holds_markers`). */
  private readonly holds: boolean;
  private files: Candidate[] = [];
  private markers: Candidate[] = [];
  // Progress.
  private phase: UploadProgress["phase"] = "files";
  private doneBytes = 0;
  private filesDone = 0;
  private bytesTotal = 0;
  private readonly inflight = new Map<string, number>();
  private lastCb = 0;
  private lastLog = performance.now();
  // "S3 looks unreachable": after this many exhausted files in a row, the rest are not attempted.
  private exhaustedInARow = 0;
  private unreachable = "";

  constructor(
    private readonly store: ObjectStore,
    private readonly journal: WorkdirJournal,
    private readonly spec: WorkdirSpec,
    private readonly log: Logger,
    private readonly opts: UploadOptions,
  ) {
    this.prefix = spec.prefix;
    this.where = `s3://${store.bucket}/${spec.prefix}`;
    this.link = linkSignals(opts.signal, opts.fence?.signal);
    this.concurrency = Math.max(1, Math.min(MAX_CONCURRENCY, Math.floor(spec.concurrency)));
    this.holds = spec.unuploadableHoldsMarkers !== false;
  }

  async run(): Promise<UploadReport> {
    const { report, journal, prefix } = this;
    if (journal.scope !== prefix) {
      report.failed.push({ path: ".", error: `journal scope ${JSON.stringify(journal.scope)} does not match workdir prefix ${JSON.stringify(prefix)}` });
      this.log.error(report.failed[0]?.error ?? "");
      this.link.dispose();
      return report;
    }
    const runId = journal.startRun(this.opts.kind ?? "upload");
    const ticker = setInterval(() => this.logProgress(), PROGRESS_LOG_INTERVAL_MS);
    try {
      this.classify();
      await this.uploadAll(this.files);
      report.aborted = this.aborted();
      if (this.blocking() === 0 && !report.aborted) await this.writeCommitRecord();
      await this.uploadMarkers();
    } finally {
      clearInterval(ticker);
      this.link.dispose();
    }
    this.finish(runId);
    return report;
  }

  private get signal(): AbortSignal {
    return this.link.signal;
  }

  private aborted(): boolean {
    return this.opts.signal?.aborted === true;
  }

  /** Files that keep the markers back (and the upload incomplete). */
  private blocking(): number {
    return this.report.failed.length + (this.holds ? this.report.unuploadable.length : 0);
  }

  /** Step 1: walk the workdir; changed regular files (markers apart) are the candidates. */
  private classify(): void {
    const { report, journal, spec, log, prefix } = this;
    // Entry by entry (the walk's 100,000 entries are never all held), then in path order as before.
    const tooLongs: { rel: string; why: string }[] = [];
    const walk = visitWorkdir(spec.localDir, (e) => {
      if (e.kind !== "file") {
        report.skipped.push({ path: e.rel, kind: e.kind });
        return;
      }
      if (!journal.isDirty(e.rel, e.stamp)) {
        report.unchanged++;
        return;
      }
      const tooLong = keyTooLong(prefix + e.rel);
      if (tooLong !== null) {
        tooLongs.push({ rel: e.rel, why: tooLong });
        return;
      }
      (basename(e.rel) === spec.lastUploadFile ? this.markers : this.files).push({ rel: e.rel, abs: e.abs, size: e.stamp.size });
    });
    const byRel = (a: { rel: string }, b: { rel: string }): number => (a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0);
    for (const list of [this.files, this.markers, tooLongs]) list.sort(byRel);
    report.skipped.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    for (const p of walk.problems) report.failed.push({ path: p.rel, error: p.error });
    for (const t of walk.tempFiles) log.debug(`skipping prefetch temp file ${t}`);
    if (walk.reserved) log.warn(`not uploading ${spec.localDir}/${RESERVED_DIR}: the name is reserved for bucketfs' lease and commit records`);
    for (const t of tooLongs) this.cannotUpload(t.rel, t.why);
    if (report.skipped.length > 0) {
      const byKind = new Map<string, number>();
      for (const s of report.skipped) byKind.set(s.kind, (byKind.get(s.kind) ?? 0) + 1);
      log.info(`not uploading ${report.skipped.length} non-regular entries (${[...byKind].map(([k, n]) => `${n} ${k}`).join(", ")})`);
      for (const s of report.skipped) log.debug(`not uploading ${s.kind} ${s.path}`);
    }
    for (const p of walk.problems) log.error(`cannot upload ${p.rel}: ${p.error}`);
    this.bytesTotal = [...this.files, ...this.markers].reduce((n, c) => n + c.size, 0);
    log.info(
      `upload ${spec.localDir} -> ${this.where}: ${this.filesTotal} changed files (${fmtBytes(this.bytesTotal)}, ${this.markers.length} markers), ` +
        `${report.unchanged} unchanged, concurrency ${this.concurrency}`,
    );
  }

  private get filesTotal(): number {
    return this.files.length + this.markers.length;
  }

  /** A file S3 cannot take under its name: said once per upload, with the way out. */
  private cannotUpload(path: string, reason: string): void {
    this.report.unuploadable.push({ path, reason });
    this.journal.noteFailure(path, `cannot be uploaded: ${reason}`, false);
    this.log.error(
      `cannot upload ${path}: ${reason}. ${this.holds ? "It holds back the markers and the lease" : "Left out (unuploadable_holds_markers = no)"}; ` +
        `rename or remove it in ${this.spec.localDir}${this.holds ? ", or set unuploadable_holds_markers = no" : ""} (docs/SEMANTICS.md "Names")`,
    );
  }

  /** Steps 2 and 4: upload `items` with bounded concurrency, each outcome into the report. */
  private async uploadAll(items: Candidate[]): Promise<void> {
    const { report, journal, log, prefix } = this;
    await runAll(items, this.concurrency, async (c) => {
      const r = await this.uploadOne(c);
      this.filesDone++;
      if (this.filesDone % GC_EVERY_FILES === 0) Bun.gc(true); // see GC_EVERY_FILES
      if (r.ok === false && r.exhausted === true) {
        this.exhaustedInARow++;
        if (this.exhaustedInARow >= UNREACHABLE_AFTER_FILES && this.unreachable === "") {
          this.unreachable = `S3 looks unreachable (${this.exhaustedInARow} files in a row failed after all retries)`;
          log.error(`${this.unreachable}; not attempting the remaining files, they stay pending`);
        }
      } else if (r.ok === true) this.exhaustedInARow = 0;
      if (r.ok === true) {
        report.uploaded++;
        report.uploadedBytes += r.bytes;
        this.doneBytes += r.bytes;
        report.order.push(c.rel);
        log.debug(`uploaded ${prefix}${c.rel} (${fmtBytes(r.bytes)})`);
      } else if (r.ok === "unuploadable") {
        this.cannotUpload(c.rel, r.reason);
      } else if (r.ok === "vanished") {
        report.skipped.push({ path: c.rel, kind: r.kind });
        log.info(`not uploading ${c.rel}: ${r.kind === "vanished" ? "it was removed" : `it became a ${r.kind}`} before its upload`);
      } else {
        report.failed.push({ path: c.rel, error: r.error });
        if (r.error.startsWith("not attempted")) journal.noteFailure(c.rel, r.error, false);
        // One line for the fence (it said why), not one per file.
        if (report.fenced === null) log.error(`upload of ${this.where}${c.rel} failed: ${r.error}`);
        else log.debug(`not uploaded ${prefix}${c.rel}: ${r.error}`);
      }
      this.emit(true);
    });
  }

  /** One file, one attempt (the store retried each of its requests), under the fence. */
  private async uploadOne(c: Candidate): Promise<Outcome> {
    const { journal, log, report } = this;
    const fence = this.opts.fence;
    if (this.unreachable !== "") return { ok: false, error: `not attempted: ${this.unreachable}` };
    const fenced = fence?.reason() ?? null;
    if (fenced !== null) {
      report.fenced ??= fenced;
      return { ok: false, error: `not attempted: ${fenced}` };
    }
    if (this.aborted()) return { ok: false, error: "not attempted: upload aborted" };
    const before = lstatBig(c.abs);
    if (before === null) return { ok: "vanished", kind: "vanished" };
    if (!before.isFile()) return { ok: "vanished", kind: before.isSymbolicLink() ? "symlink" : "other" };
    const stamp: FileStamp = stampOf(before);
    const meta = {
      mtime: formatMtime(before.mtimeNs),
      mode: formatMode(Number(before.mode)),
      uid: before.uid.toString(),
      gid: before.gid.toString(),
    };
    this.inflight.set(c.rel, 0);
    const src = openable(c.abs);
    try {
      let crc64nvme: string | undefined;
      const etag = await this.store.upload(this.prefix + c.rel, src.path, {
        meta,
        onChecksum: (sum) => (crc64nvme = sum.value),
        signal: this.signal,
        onProgress: (b) => {
          this.inflight.set(c.rel, b);
          this.emit(false);
        },
      });
      const after = lstatBig(c.abs);
      if (after !== null && sameStamp(stamp, stampOf(after))) {
        journal.record(c.rel, stamp, etag, "upload");
        if (crc64nvme !== undefined) journal.recordChecksum(c.rel, etag, crc64nvme);
        journal.clearFailure(c.rel);
        return { ok: true, bytes: stamp.size };
      }
      // Changed while we read it: what S3 got may be torn. Not recorded: it stays dirty.
      const error = "file changed during upload; it stays dirty for the next upload";
      journal.noteFailure(c.rel, error);
      log.warn(`${c.rel} changed during upload; it stays dirty`);
      return { ok: false, error };
    } catch (err) {
      const error = errMsg(err);
      if (err instanceof StoreError && err.code !== undefined && NAME_REFUSED_CODES.has(err.code)) {
        return { ok: "unuploadable", reason: `S3 refuses the key (${err.code})` };
      }
      journal.noteFailure(c.rel, error);
      if (fence?.signal.aborted) {
        report.fenced ??= fence.reason() ?? errMsg(fence.signal.reason);
        return { ok: false, error: `stopped: ${report.fenced}` };
      }
      if (this.aborted()) return { ok: false, error: `aborted: ${error}` };
      return { ok: false, error, exhausted: err instanceof StoreError && err.retryable };
    } finally {
      src.close();
      this.inflight.delete(c.rel);
    }
  }

  /** Step 3: every other file is in S3, so the commit record goes before the markers. */
  private async writeCommitRecord(): Promise<void> {
    const { report, opts } = this;
    if (opts.commit === undefined) return;
    // The record holds one entry per file, beside the last record's: collect the walk's and the
    // transfers' garbage first (see GC_EVERY_FILES), so the two records are the peak, not the sum.
    if (this.files.length + report.unchanged >= GC_EVERY_FILES) Bun.gc(true);
    try {
      report.record = await opts.commit((onEntry) => visitWorkdir(this.spec.localDir, onEntry), this.signal);
    } catch (err) {
      const fence = opts.fence;
      if (fence?.signal.aborted || fence?.reason()) report.fenced ??= fence.reason() ?? errMsg(fence.signal.reason);
      report.failed.push({ path: RESERVED_DIR, error: `commit record not written: ${errMsg(err)}` });
      this.log.error(`commit record for ${this.where} not written: ${errMsg(err)}`);
    }
  }

  /** Step 4: the markers, only when everything else (and the record) made it; else held back. */
  private async uploadMarkers(): Promise<void> {
    const { report, markers } = this;
    if (markers.length === 0) return;
    if (this.blocking() === 0 && !report.aborted) {
      this.phase = "markers";
      const before = report.order.length;
      await this.uploadAll(markers);
      report.markersUploaded = report.order.slice(before);
      report.markersHeldBack = markers.map((m) => m.rel).filter((m) => !report.markersUploaded.includes(m));
      return;
    }
    report.markersHeldBack = markers.map((m) => m.rel);
    for (const m of report.markersHeldBack) this.journal.noteFailure(m, "held back: other files failed to upload", false);
    this.log.warn(`holding back ${markers.length} marker file(s) (${this.spec.lastUploadFile}): ${this.blocking()} other file(s) not uploaded`);
  }

  /** Step 5: the verdict, one summary line, the run row and what `status --json` shows. */
  private finish(runId: number | undefined): void {
    const { report, journal, log } = this;
    report.aborted = this.aborted();
    report.seconds = (performance.now() - this.t0) / 1000;
    report.bytesPerSec = report.seconds > 0 ? report.uploadedBytes / report.seconds : 0;
    report.ok = this.blocking() === 0 && report.markersHeldBack.length === 0 && !report.aborted && report.fenced === null;
    journal.saveNote("unuploadable", report.unuploadable);
    const last: LastUpload = {
      kind: this.opts.kind ?? "upload", finishedMs: Date.now(), ok: report.ok, uploaded: report.uploaded, unchanged: report.unchanged,
      order: report.order.length <= LAST_UPLOAD_ORDER_MAX ? report.order : [...report.order.slice(0, LAST_UPLOAD_ORDER_MAX - 1000), ...report.order.slice(-1000)],
      failed: report.failed,
      unuploadable: report.unuploadable, markersUploaded: report.markersUploaded, markersHeldBack: report.markersHeldBack,
      skipped: report.skipped, aborted: report.aborted, fenced: report.fenced, record: report.record,
    };
    journal.saveNote("lastUpload", last);
    const summary =
      `upload ${this.where} ${report.ok ? "done" : "INCOMPLETE"}: ${report.uploaded} uploaded (${fmtBytes(report.uploadedBytes)} in ${report.seconds.toFixed(1)} s, ` +
      `${fmtBytes(Math.round(report.bytesPerSec))}/s), ${report.unchanged} unchanged, ${report.skipped.length} skipped, ${report.failed.length} failed, ` +
      `${report.unuploadable.length} cannot be uploaded, ` +
      `markers ${report.markersUploaded.length} uploaded / ${report.markersHeldBack.length} held back`;
    if (report.ok) log.info(summary);
    else log.error(summary);
    journal.finishRun(runId, report.ok ? "ok" : report.aborted ? "aborted" : "failed", {
      files: report.uploaded,
      bytes: report.uploadedBytes,
      failed: this.blocking() + report.markersHeldBack.length,
      ...(report.fenced !== null
        ? { message: `stopped by the lease's fence: ${report.fenced}` }
        : report.failed[0] ? { message: `${report.failed[0].path}: ${report.failed[0].error}` }
        : report.unuploadable[0] ? { message: `${report.unuploadable[0].path}: cannot be uploaded: ${report.unuploadable[0].reason}` } : {}),
    });
  }

  // Progress: a coalesced callback for the service manager, a log line every few seconds.
  private currentBytes(): number {
    let b = this.doneBytes;
    for (const v of this.inflight.values()) b += v;
    return b;
  }

  private emit(force: boolean): void {
    const now = performance.now();
    const cb = this.opts.onProgress;
    if (cb && (force || now - this.lastCb >= PROGRESS_CALLBACK_INTERVAL_MS)) {
      this.lastCb = now;
      cb({ phase: this.phase, filesDone: this.filesDone, filesTotal: this.filesTotal, bytesDone: this.currentBytes(), bytesTotal: this.bytesTotal, failed: this.report.failed.length });
    }
  }

  private logProgress(): void {
    const now = performance.now();
    if (now - this.lastLog < PROGRESS_LOG_INTERVAL_MS) return;
    this.lastLog = now;
    const b = this.currentBytes();
    const secs = (now - this.t0) / 1000;
    this.log.info(`upload ${this.where}: ${this.filesDone}/${this.filesTotal} files, ${fmtBytes(b)}/${fmtBytes(this.bytesTotal)}, ${secs > 0 ? fmtBytes(Math.round(b / secs)) : "-"}/s`);
  }
}
