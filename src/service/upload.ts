/**
 * Workdir upload: pushes local changes of the workdir cache dir back to S3 (at shutdown).
 *
 * Is: walk (lstat, never following symlinks) → keep regular files whose stamp differs from
 * the journal baseline → parallel uploads (one attempt per file: the store's request path
 * retries every S3 request, the only retry policy in bucketfs) → baseline update per
 * success. Marker files (`spec.lastUploadFile`, e.g. Nextflow's `.exitcode`) go only after
 * EVERY other file succeeded, so a marker in S3 proves its outputs are there; if anything
 * failed, all markers are held back and stay dirty for the next run.
 * Is not: a sync. It never deletes anything remotely, never uploads symlinks, fifos,
 * sockets or devices (they are listed as skipped), and never throws for a per-file failure:
 * failures are in the report, the caller picks the exit code.
 *
 * Metadata written (read by s3fs and rclone): `mtime` = seconds with a 9-digit fraction
 * (`1700000000.123456789`; s3fs parses the fraction as nanoseconds, rclone as a float),
 * `mode` = octal st_mode (`0100644`; s3fs parses with strtol base 0, rclone as octal),
 * `uid`, `gid` = decimal.
 */
import { basename } from "node:path";
import { StoreError, type ObjectStore } from "../store/types.ts";
import { runAll } from "../util/async.ts";
import { errMsg, fmtBytes, type Logger } from "../util/log.ts";
import { lstatBig, sameStamp, stampOf, walkWorkdir, type EntryKind, type FileStamp, type TransferKind, type WalkResult, type WorkdirJournal } from "./journal.ts";
import { RESERVED_DIR } from "./lease.ts";
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

export interface UploadOptions {
  signal?: AbortSignal;
  /** How the run is recorded: the stop's upload (default), a sync, or the recovery at start. */
  kind?: Exclude<TransferKind, "prefetch">;
  onProgress?: (p: UploadProgress) => void;
  /**
   * Called once every file but the markers is in S3 (and not when anything failed): writes the
   * commit record from a fresh walk. Returns the record's key, or null when none was needed. If
   * it throws, the markers are held back (a marker proves its record is there).
   */
  commit?: (walk: WalkResult) => Promise<string | null>;
}

export interface SkippedEntry {
  path: string;
  kind: EntryKind | "vanished";
}

export interface UploadFailure {
  path: string;
  error: string;
}

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
  markersUploaded: string[];
  /** Dirty markers not uploaded because something else failed (or the run was aborted). */
  markersHeldBack: string[];
  /** Key of the commit record this run wrote, if any. */
  record: string | null;
  aborted: boolean;
  /** No failures, nothing held back, not aborted. */
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
  abs: string;
  size: number;
}

type Outcome =
  | { ok: true; bytes: number }
  | { ok: false; error: string; exhausted?: boolean }
  | { ok: "vanished"; kind: SkippedEntry["kind"] };

export async function uploadWorkdir(
  store: ObjectStore,
  journal: WorkdirJournal,
  spec: WorkdirSpec,
  log: Logger,
  opts?: UploadOptions,
): Promise<UploadReport> {
  const { prefix, localDir } = spec;
  const signal = opts?.signal;
  const concurrency = Math.max(1, Math.min(MAX_CONCURRENCY, Math.floor(spec.concurrency)));
  const where = `s3://${store.bucket}/${prefix}`;
  const t0 = performance.now();
  const report: UploadReport = {
    uploaded: 0,
    uploadedBytes: 0,
    seconds: 0,
    bytesPerSec: 0,
    order: [],
    unchanged: 0,
    skipped: [],
    failed: [],
    markersUploaded: [],
    markersHeldBack: [],
    record: null,
    aborted: false,
    ok: false,
  };
  if (journal.scope !== prefix) {
    report.failed.push({ path: ".", error: `journal scope ${JSON.stringify(journal.scope)} does not match workdir prefix ${JSON.stringify(prefix)}` });
    log.error(report.failed[0]?.error ?? "");
    return report;
  }
  const runId = journal.startRun(opts?.kind ?? "upload");

  // 1. Walk and classify.
  const walk = walkWorkdir(localDir);
  for (const p of walk.problems) report.failed.push({ path: p.rel, error: p.error });
  for (const t of walk.tempFiles) log.debug(`skipping prefetch temp file ${t}`);
  if (walk.reserved) log.warn(`not uploading ${localDir}/${RESERVED_DIR}: the name is reserved for bucketfs' lease and commit records`);
  const files: Candidate[] = [];
  const markers: Candidate[] = [];
  for (const e of walk.entries) {
    if (e.kind !== "file") {
      report.skipped.push({ path: e.rel, kind: e.kind });
      continue;
    }
    if (!journal.isDirty(e.rel, e.stamp)) {
      report.unchanged++;
      continue;
    }
    (basename(e.rel) === spec.lastUploadFile ? markers : files).push({ rel: e.rel, abs: e.abs, size: e.stamp.size });
  }
  if (report.skipped.length > 0) {
    const byKind = new Map<string, number>();
    for (const s of report.skipped) byKind.set(s.kind, (byKind.get(s.kind) ?? 0) + 1);
    log.info(`not uploading ${report.skipped.length} non-regular entries (${[...byKind].map(([k, n]) => `${n} ${k}`).join(", ")})`);
    for (const s of report.skipped) log.debug(`not uploading ${s.kind} ${s.path}`);
  }
  for (const p of walk.problems) log.error(`cannot upload ${p.rel}: ${p.error}`);
  const bytesTotal = [...files, ...markers].reduce((n, c) => n + c.size, 0);
  const filesTotal = files.length + markers.length;
  log.info(
    `upload ${localDir} -> ${where}: ${filesTotal} changed files (${fmtBytes(bytesTotal)}, ${markers.length} markers), ` +
      `${report.unchanged} unchanged, concurrency ${concurrency}`,
  );

  // 2. Progress plumbing.
  let phase: UploadProgress["phase"] = "files";
  let doneBytes = 0;
  let filesDone = 0;
  const inflight = new Map<string, number>();
  let lastCb = 0;
  let lastLog = performance.now();
  const currentBytes = (): number => {
    let b = doneBytes;
    for (const v of inflight.values()) b += v;
    return b;
  };
  const emit = (force: boolean): void => {
    const now = performance.now();
    if (opts?.onProgress && (force || now - lastCb >= PROGRESS_CALLBACK_INTERVAL_MS)) {
      lastCb = now;
      opts.onProgress({ phase, filesDone, filesTotal, bytesDone: currentBytes(), bytesTotal, failed: report.failed.length });
    }
  };
  const logProgress = (): void => {
    const now = performance.now();
    if (now - lastLog < PROGRESS_LOG_INTERVAL_MS) return;
    lastLog = now;
    const b = currentBytes();
    const secs = (now - t0) / 1000;
    log.info(`upload ${where}: ${filesDone}/${filesTotal} files, ${fmtBytes(b)}/${fmtBytes(bytesTotal)}, ${secs > 0 ? fmtBytes(Math.round(b / secs)) : "-"}/s`);
  };
  const ticker = setInterval(logProgress, PROGRESS_LOG_INTERVAL_MS);

  // 3. One file, one attempt (the store retried each of its requests).
  let exhaustedInARow = 0;
  let unreachable = "";
  const uploadOne = async (c: Candidate): Promise<Outcome> => {
    const key = prefix + c.rel;
    if (unreachable !== "") return { ok: false, error: `not attempted: ${unreachable}` };
    if (signal?.aborted) return { ok: false, error: "not attempted: upload aborted" };
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
    inflight.set(c.rel, 0);
    try {
      let crc64nvme: string | undefined;
      const etag = await store.upload(key, c.abs, {
        meta,
        onChecksum: (sum) => (crc64nvme = sum.value),
        ...(signal ? { signal } : {}),
        onProgress: (b) => {
          inflight.set(c.rel, b);
          emit(false);
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
      journal.noteFailure(c.rel, error);
      if (signal?.aborted) return { ok: false, error: `aborted: ${error}` };
      return { ok: false, error, exhausted: err instanceof StoreError && err.retryable };
    } finally {
      inflight.delete(c.rel);
    }
  };

  const runPhase = async (items: Candidate[]): Promise<void> => {
    await runAll(items, concurrency, async (c) => {
      const r = await uploadOne(c);
      filesDone++;
      if (r.ok === false && r.exhausted === true) {
        exhaustedInARow++;
        if (exhaustedInARow >= UNREACHABLE_AFTER_FILES && unreachable === "") {
          unreachable = `S3 looks unreachable (${exhaustedInARow} files in a row failed after all retries)`;
          log.error(`${unreachable}; not attempting the remaining files, they stay pending`);
        }
      } else if (r.ok === true) exhaustedInARow = 0;
      if (r.ok === true) {
        report.uploaded++;
        report.uploadedBytes += r.bytes;
        doneBytes += r.bytes;
        report.order.push(c.rel);
        log.debug(`uploaded ${prefix}${c.rel} (${fmtBytes(r.bytes)})`);
      } else if (r.ok === "vanished") {
        report.skipped.push({ path: c.rel, kind: r.kind });
        log.info(`not uploading ${c.rel}: ${r.kind === "vanished" ? "it was removed" : `it became a ${r.kind}`} before its upload`);
      } else {
        report.failed.push({ path: c.rel, error: r.error });
        if (r.error.startsWith("not attempted")) journal.noteFailure(c.rel, r.error, false);
        log.error(`upload of s3://${store.bucket}/${prefix}${c.rel} failed: ${r.error}`);
      }
      emit(true);
    });
  };

  // 4. Everything else first, markers only if all of it made it.
  try {
    await runPhase(files);
    report.aborted = signal?.aborted === true;
    if (opts?.commit !== undefined && report.failed.length === 0 && !report.aborted) {
      try {
        report.record = await opts.commit(walkWorkdir(localDir));
      } catch (err) {
        report.failed.push({ path: RESERVED_DIR, error: `commit record not written: ${errMsg(err)}` });
        log.error(`commit record for ${where} not written: ${errMsg(err)}`);
      }
    }
    if (markers.length > 0) {
      if (report.failed.length === 0 && !report.aborted) {
        phase = "markers";
        const before = report.order.length;
        await runPhase(markers);
        report.markersUploaded = report.order.slice(before);
        report.markersHeldBack = markers.map((m) => m.rel).filter((m) => !report.markersUploaded.includes(m));
      } else {
        report.markersHeldBack = markers.map((m) => m.rel);
        for (const m of report.markersHeldBack) journal.noteFailure(m, "held back: other files failed to upload", false);
        log.warn(`holding back ${markers.length} marker file(s) (${spec.lastUploadFile}): ${report.failed.length} other file(s) failed`);
      }
    }
  } finally {
    clearInterval(ticker);
  }
  report.aborted = signal?.aborted === true;
  report.seconds = (performance.now() - t0) / 1000;
  report.bytesPerSec = report.seconds > 0 ? report.uploadedBytes / report.seconds : 0;
  report.ok = report.failed.length === 0 && report.markersHeldBack.length === 0 && !report.aborted;

  const summary =
    `upload ${where} ${report.ok ? "done" : "INCOMPLETE"}: ${report.uploaded} uploaded (${fmtBytes(report.uploadedBytes)} in ${report.seconds.toFixed(1)} s, ` +
    `${fmtBytes(Math.round(report.bytesPerSec))}/s), ${report.unchanged} unchanged, ${report.skipped.length} skipped, ${report.failed.length} failed, ` +
    `markers ${report.markersUploaded.length} uploaded / ${report.markersHeldBack.length} held back`;
  if (report.ok) log.info(summary);
  else log.error(summary);
  journal.finishRun(runId, report.ok ? "ok" : report.aborted ? "aborted" : "failed", {
    files: report.uploaded,
    bytes: report.uploadedBytes,
    failed: report.failed.length + report.markersHeldBack.length,
    ...(report.failed[0] ? { message: `${report.failed[0].path}: ${report.failed[0].error}` } : {}),
  });
  return report;
}
