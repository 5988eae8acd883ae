/**
 * Workdir upload: pushes local changes of the workdir cache dir back to S3 (at shutdown).
 *
 * Is: walk (lstat, never following symlinks) → keep regular files whose stamp differs from
 * the journal baseline → parallel uploads with per-file retry/backoff → baseline update per
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
import { errMsg, fmtBytes, type Logger } from "../util/log.ts";
import { lstatBig, sameStamp, stampOf, walkWorkdir, type EntryKind, type FileStamp, type TransferKind, type WalkResult, type WorkdirJournal } from "./journal.ts";
import { RESERVED_DIR } from "./lease.ts";
import { MAX_CONCURRENCY, PROGRESS_LOG_INTERVAL_MS, type WorkdirSpec } from "./prefetch.ts";

/** Default retries per file (attempts = retries + 1). */
export const DEFAULT_RETRIES = 4;
/** First backoff delay; doubles per retry. */
export const RETRY_BASE_MS = 500;
/** Longest single backoff delay. */
export const RETRY_MAX_MS = 30_000;
/**
 * After this many files in a row failed with retryable errors after all their retries, the
 * store is considered unreachable and the remaining files are not attempted (they stay
 * dirty). Bounds shutdown time when S3 is down: without it, every file would wait out its
 * full backoff schedule.
 */
export const UNREACHABLE_AFTER_FILES = 3;
/** `onProgress` byte updates are coalesced to at most one per this interval. */
export const PROGRESS_CALLBACK_INTERVAL_MS = 250;

/** Error codes of connection-level failures worth retrying when they are not already StoreErrors. */
const RETRYABLE_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "ConnectionRefused",
  "ConnectionClosed",
  "UND_ERR_SOCKET",
]);

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
  /** Retries per file after the first attempt (default 4). */
  retries?: number;
  /** First backoff delay in ms (default 500); tests shorten it. */
  retryBaseMs?: number;
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

/** Worth another attempt: retryable StoreErrors and connection-level errors. */
export function isRetryable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 5; depth++) {
    if (e instanceof StoreError) return e.retryable;
    if (typeof e === "object") {
      const code = (e as { code?: unknown }).code;
      if (typeof code === "string" && RETRYABLE_CODES.has(code)) return true;
      e = (e as { cause?: unknown }).cause;
    } else break;
  }
  return false;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

function backoffMs(retry: number, baseMs: number): number {
  const d = Math.min(RETRY_MAX_MS, baseMs * 2 ** retry);
  return d / 2 + Math.random() * (d / 2); // "equal jitter"
}

async function runPool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, () => worker()));
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
  const retries = Math.max(0, Math.floor(opts?.retries ?? DEFAULT_RETRIES));
  const retryBaseMs = opts?.retryBaseMs ?? RETRY_BASE_MS;
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

  // 3. One file, with retries.
  let exhaustedInARow = 0;
  let unreachable = "";
  const uploadOne = async (c: Candidate): Promise<Outcome> => {
    const key = prefix + c.rel;
    let lastError = "not attempted";
    let lastRetryable = false;
    for (let attempt = 0; attempt <= retries; attempt++) {
      if (unreachable !== "") return { ok: false, error: attempt === 0 ? `not attempted: ${unreachable}` : `${lastError} (gave up: ${unreachable})` };
      if (signal?.aborted) return { ok: false, error: attempt === 0 ? "not attempted: upload aborted" : `aborted after: ${lastError}` };
      if (attempt > 0) {
        await sleep(backoffMs(attempt - 1, retryBaseMs), signal);
        if (signal?.aborted) return { ok: false, error: `aborted after: ${lastError}` };
      }
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
        const etag = await store.upload(key, c.abs, {
          meta,
          ...(signal ? { signal } : {}),
          onProgress: (b) => {
            inflight.set(c.rel, b);
            emit(false);
          },
        });
        const after = lstatBig(c.abs);
        if (after !== null && sameStamp(stamp, stampOf(after))) {
          journal.record(c.rel, stamp, etag, "upload");
          journal.clearFailure(c.rel);
          return { ok: true, bytes: stamp.size };
        }
        // Changed while we read it: what S3 got may be torn. Not recorded: it stays dirty.
        lastError = "file changed during upload";
        lastRetryable = false;
        journal.noteFailure(c.rel, lastError);
        log.warn(`${c.rel} changed during upload (attempt ${attempt + 1}); it stays dirty`);
      } catch (err) {
        lastError = errMsg(err);
        journal.noteFailure(c.rel, lastError);
        if (signal?.aborted) return { ok: false, error: `aborted: ${lastError}` };
        if (!isRetryable(err)) return { ok: false, error: lastError };
        lastRetryable = true;
        if (attempt < retries) log.warn(`upload of ${key} failed (attempt ${attempt + 1}/${retries + 1}), retrying: ${lastError}`);
      } finally {
        inflight.delete(c.rel);
      }
    }
    return { ok: false, error: `${lastError} (after ${retries + 1} attempts)`, exhausted: lastRetryable };
  };

  const runPhase = async (items: Candidate[]): Promise<void> => {
    await runPool(items, concurrency, async (c) => {
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
