/**
 * One bucket's run as an explicit state machine:
 *
 *   preparing → prefetching → recovering → mounting → serving ⇄ syncing
 *        │            │            │           │          │        │
 *        └────────────┴────────────┴───────────┴──────────┴────────┴──→ stopping → uploading → closed
 *   (any phase before closed) ──→ failed            (start errors; exit 1)
 *
 * Events: `sync` (SIGUSR1, `bucketfs sync`), `stop` (SIGTERM, SIGHUP, a first SIGINT, an
 * unmount from outside) and `abort` (a second SIGINT) are accepted or refused per phase by
 * one table (EVENTS). The phase and outcome are persisted in the index's runs table, which
 * `bucketfs status --json` prints. The exit code follows from the final state: closed with
 * everything uploaded and recorded 0, closed with files pending (failed or aborted upload,
 * full disk) 2, failed 1.
 *
 * Is: the order of one bucket's start and stop, which events each phase takes, and the
 * resources the run owns (pid file, index, FUSE session, bind mount). Is not: signals and
 * the coordination of several buckets (daemon.ts), how transfers work (prefetch.ts,
 * upload.ts), FUSE (fuse/) or the namespace (fs/).
 */
import { fuseCountersPath, publishFuseCounters } from "./fuse-counters.ts";
import { publishNetStatus } from "./net-status.ts";
import { closeSync, constants, openSync, readFileSync } from "node:fs";
import type { Database } from "bun:sqlite";
import type { BucketConfig } from "../config/types.ts";
import { openIndex } from "../cache/db.ts";
import { ensureCacheRoot, mkdirsUnder, sweepTempFiles } from "../cache/cache-root.ts";
import { lostWrites } from "../cache/full-disk.ts";
import { MetaIndex } from "../cache/meta-index.ts";
import { ObjectCache } from "../cache/object-cache.ts";
import type { BucketLedger, Evictor } from "../cache/evictor.ts";
import { BLOCK_SIZE } from "../cache/partial-object.ts";
import { RunLog, type RunOutcome, type RunRecord } from "../cache/runs.ts";
import { BucketFs } from "../fs/bucket-fs.ts";
import { FuseSession, MAX_READ_BYTES } from "../fuse/session.ts";
import { libc, MNT_DETACH } from "../sys/libc.ts";
import { createS3Store, type S3StoreTuning } from "../store/s3.ts";
import type { ObjectStore } from "../store/types.ts";
import { WorkdirJournal, type TransferKind } from "./workdir/journal.ts";
import { prefetchWorkdir, type WorkdirSpec } from "./workdir/prefetch.ts";
import { uploadWorkdir, type UploadReport } from "./workdir/upload.ts";
import type { CommitRecord } from "./workdir/commit-record.ts";
import { WorkdirOwner } from "./workdir/workdir-owner.ts";
import { bindMount, busyProcesses, claimPidFile, prepareMountpoint, releasePidFile, unbind } from "./mounts.ts";
import { adoptStrays, listHidden } from "./strays.ts";
import { errMsg, fmtBytes, logger, type Logger } from "../util/log.ts";
import { envSwitch } from "../util/env.ts";

export type Phase =
  | "preparing" | "prefetching" | "recovering" | "mounting" | "serving" | "syncing"
  | "stopping" | "uploading" | "closed" | "failed";
export type RunEvent = "sync" | "stop" | "abort";

/** Per phase and event: `true` (accepted) or why it is refused. */
export const EVENTS: Readonly<Record<Phase, Readonly<Record<RunEvent, true | string>>>> = {
  preparing: { sync: "not serving yet (preparing)", stop: true, abort: true },
  prefetching: { sync: "not serving yet (prefetching the workdir)", stop: true, abort: true },
  recovering: { sync: "not serving yet (uploading changes left by an earlier run)", stop: true, abort: true },
  mounting: { sync: "not serving yet (mounting)", stop: true, abort: true },
  serving: { sync: true, stop: true, abort: "no upload is running (SIGINT twice aborts the stop's upload)" },
  syncing: { sync: "a sync is already running", stop: true, abort: true },
  stopping: { sync: "bucketfs is stopping: the stop uploads the workdir", stop: "already stopping", abort: true },
  uploading: { sync: "bucketfs is stopping: the stop's upload is running", stop: "already stopping (SIGINT twice aborts the upload)", abort: true },
  closed: { sync: "stopped", stop: "stopped", abort: "stopped" },
  failed: { sync: "the start failed", stop: "the start failed", abort: "the start failed" },
};

/** The phases each phase may move to. */
export const TRANSITIONS: Readonly<Record<Phase, readonly Phase[]>> = {
  preparing: ["prefetching", "mounting", "stopping", "failed"],
  prefetching: ["recovering", "mounting", "stopping", "failed"],
  recovering: ["mounting", "stopping", "failed"],
  mounting: ["serving", "stopping", "failed"],
  serving: ["syncing", "stopping"],
  syncing: ["serving", "stopping"],
  stopping: ["uploading", "closed"],
  uploading: ["closed"],
  closed: [],
  failed: [],
};

/** Exit code of a finished run: 0 closed and complete, 2 closed with files pending, 1 failed. */
export function exitCodeOf(phase: Phase, complete: boolean): 0 | 1 | 2 {
  if (phase === "failed") return 1;
  return complete ? 0 : 2;
}

/** The process exit code from every bucket's: a failed start (1) wins over pending files (2). */
export function combinedExitCode(codes: readonly number[]): number {
  if (codes.includes(1)) return 1;
  return codes.includes(2) ? 2 : 0;
}

/**
 * Cached object files are written without an fsync each. After a daemon run that ended with
 * the machine (another boot, and no synced clean stop) their content cannot be trusted, so
 * their rows are forgotten and the objects fetched again when used. A crash of the process
 * alone (same boot) loses nothing: the page cache survived it.
 */
export function cachedFilesUntrusted(last: Pick<RunRecord, "bootId" | "cacheSynced"> | undefined, bootId: string): boolean {
  return last !== undefined && last.bootId !== bootId && !last.cacheSynced;
}

/** Paths of one bucket's cache, as the seed lays them out. */
export function cacheLayout(cfg: BucketConfig) {
  return {
    root: `${cfg.cachePath}/.${cfg.bucket}`,
    index: `${cfg.cachePath}/.${cfg.bucket}.index`,
    pid: `${cfg.cachePath}/.${cfg.bucket}.pid`,
  };
}

export interface Workdir {
  spec: WorkdirSpec;
  journal: WorkdirJournal;
  /** Where the local workdir is bind-mounted, e.g. /nf-data/workdir. */
  target: string;
}

export function workdirOf(cfg: BucketConfig, db: Database): Workdir | undefined {
  if (cfg.workdir === undefined) return undefined;
  const prefix = `${cfg.workdir}/`;
  return {
    spec: {
      prefix,
      localDir: `${cacheLayout(cfg).root}/${cfg.workdir}`,
      lastUploadFile: cfg.lastUploadFile,
      concurrency: cfg.transferConcurrency,
      unuploadableHoldsMarkers: cfg.unuploadableHoldsMarkers,
    },
    journal: new WorkdirJournal(db, prefix),
    target: `${cfg.mountpoint}/${cfg.workdir}`,
  };
}

export interface BucketRunOptions {
  debugFuse?: boolean;
  /** Take the workdir's lease even from a live holder (`--take-over`). */
  takeOver?: boolean;
  /** Status text for the service manager while uploading (STATUS=...). */
  onStatus?: (text: string) => void;
  /** The FUSE mount went away without a stop (unmounted from outside). */
  onUnmounted?: (run: BucketRun) => void;
  /** Keeps the read cache inside cache_size / cache_min_free (one per cachepath, see daemon.ts). */
  evictor?: Evictor;
}

/** What the run holds once its index is open. */
interface Held {
  db: Database;
  runs: RunLog;
  runId: number | undefined;
  index: MetaIndex;
  store: ObjectStore;
  fs: BucketFs;
  workdir: Workdir | undefined;
  /** Lease and commit records of the workdir (none without a workdir). */
  owner?: WorkdirOwner;
  session?: FuseSession;
  /** Stops publishing the session's request counters (writes a last copy). */
  stopCounters?: () => void;
  bound: boolean;
}

function summarize(r: UploadReport): string {
  const parts = [
    `${r.uploaded} uploaded (${fmtBytes(r.uploadedBytes)} in ${r.seconds.toFixed(1)} s, ${fmtBytes(r.bytesPerSec)}/s)`,
    `${r.unchanged} unchanged`,
  ];
  if (r.skipped.length) parts.push(`${r.skipped.length} non-regular skipped`);
  if (r.failed.length) parts.push(`${r.failed.length} FAILED`);
  if (r.unuploadable.length) parts.push(`${r.unuploadable.length} cannot be uploaded`);
  if (r.markersHeldBack.length) parts.push(`${r.markersHeldBack.length} markers held back`);
  if (r.aborted) parts.push("ABORTED");
  return parts.join(", ");
}

export class BucketRun {
  readonly cfg: BucketConfig;
  readonly log: Logger;
  private current: Phase = "preparing";
  private held: Held | undefined;
  /** Stops the network status file (net-status.ts); it outlives a failed start until exit. */
  private stopNet: (() => void) | undefined;
  private pidClaimed = false;
  private stopAsked = false;
  private abortAsked = false;
  /** Fired by stop and abort: cancels a prefetch still running (a stop before the mount is clean). */
  private readonly cancelStart = new AbortController();
  /** Fired by abort only: cuts whichever upload runs (recovery, sync, stop). */
  private readonly abortUploads = new AbortController();
  private sync: Promise<void> | undefined;
  /** Everything pending was uploaded and recorded (the last upload's outcome). */
  private complete = true;
  private failure: string | undefined;
  private boot = "unknown";
  /** Whether the stop's upload put everything in S3 (the lease is released only then). */
  private stopUploadOk = false;
  /** The workdir's lease was taken (a stop during the start may come before). */
  private leaseClaimed = false;
  /** This bucket's part of the evictor, while the index is open. */
  private ledger: BucketLedger | undefined;

  constructor(cfg: BucketConfig, private readonly opts: BucketRunOptions = {}) {
    this.cfg = cfg;
    this.log = logger(cfg.bucket);
  }

  get phase(): Phase {
    return this.current;
  }

  get exitCode(): 0 | 1 | 2 {
    return exitCodeOf(this.current, this.complete);
  }

  get stopRequested(): boolean {
    return this.stopAsked;
  }

  private enter(next: Phase): void {
    if (!TRANSITIONS[this.current].includes(next)) throw new Error(`bug: ${this.cfg.bucket}: no transition ${this.current} -> ${next}`);
    this.log.debug(`phase ${this.current} -> ${next}`);
    this.current = next;
    this.held?.runs.setPhase(this.held.runId, next);
  }

  /** Offer an event; returns null when accepted, else why it was refused (logged, and recorded for a sync). */
  handle(event: RunEvent): string | null {
    const verdict = EVENTS[this.current][event];
    if (verdict !== true) {
      if (this.current === "failed" || this.current === "closed") return verdict; // nothing to say
      if (event === "sync") {
        this.log.warn(`sync refused: ${verdict}`);
        const w = this.held?.workdir;
        if (w) this.held!.runs.refused("sync", verdict, { scope: w.spec.prefix, ...(this.held!.runId === undefined ? {} : { daemonRun: this.held!.runId }) });
      } else this.log.info(`${event} ignored: ${verdict}`);
      return verdict;
    }
    if (event === "sync") {
      this.enter("syncing");
      this.sync = this.upload("sync", "on request (sync)", this.abortUploads.signal)
        .then(() => undefined, (err) => this.log.error(`sync failed: ${errMsg(err)}`))
        .finally(() => {
          this.sync = undefined;
          if (this.current === "syncing") this.enter("serving");
        });
    } else if (event === "stop") {
      this.stopAsked = true;
      this.cancelStart.abort(new Error("stop requested"));
      // Serving or syncing: the stop sequence (daemon) takes it from here; a sync still
      // running finishes first (abort cuts it).
      if (this.current === "serving" || this.current === "syncing") this.enter("stopping");
    } else {
      this.stopAsked = true;
      this.abortAsked = true;
      this.log.warn("abort: the running upload stops now; files not uploaded stay pending for the next start");
      this.cancelStart.abort(new Error("aborted"));
      this.abortUploads.abort(new Error("aborted"));
    }
    return null;
  }

  /**
   * preparing → prefetching → recovering. Resolves true when the bucket is ready to mount,
   * false when a stop came first (not a failure) or the start failed (phase "failed").
   */
  async prepare(): Promise<boolean> {
    try {
      await this.prepareSteps();
      return !this.stopAsked;
    } catch (err) {
      if (this.stopAsked && this.cancelStart.signal.aborted && this.current !== "recovering") {
        this.log.info(`stopped during ${this.current}: ${errMsg(err)}`);
        return false;
      }
      this.fail(err);
      return false;
    }
  }

  private async prepareSteps(): Promise<void> {
    const { cfg, log } = this;
    const layout = cacheLayout(cfg);
    ensureCacheRoot(cfg.cachePath);
    const root = mkdirsUnder(cfg.cachePath, `.${cfg.bucket}`);
    claimPidFile(layout.pid, cfg.bucket);
    this.pidClaimed = true;
    const db = openIndex(layout.index);
    const runs = new RunLog(db);
    try {
      runs.closeOrphans("the process ended without a stop (killed, crashed or the machine went down)");
      const boot = bootId();
      this.boot = boot;
      const runId = runs.start("daemon", { phase: this.current, bootId: boot });
      const last = runs.lastDaemon(runId);
      const index = new MetaIndex(db);
      if (cachedFilesUntrusted(last, boot)) {
        const dropped = index.forgetCached();
        if (dropped > 0) log.warn(`the last run ended with the machine (no clean stop): ${dropped} cached objects will be fetched again`);
      }
      const swept = sweepTempFiles(root, new Set(index.allKeptParts().map((k) => k.file)));
      if (swept.length > 0) log.info(`removed ${swept.length} temp files of interrupted downloads`);
      const store = createS3Store(cfg, storeTuning());
      this.stopNet ??= publishNetStatus(cfg);
      const objects = new ObjectCache(root, store, index, log);
      objects.partialOptions = {
        chunkBlocks: Math.max(1, Math.round(cfg.readChunkSize / BLOCK_SIZE)),
        maxWindowBlocks: Math.max(1, Math.round(cfg.readAhead / BLOCK_SIZE)),
        maxInflight: cfg.readConcurrency,
      };
      if (this.opts.evictor) {
        // Checks files against rows (a crash may leave either alone), then pins, LRU and limits.
        this.ledger = this.opts.evictor.attach({
          bucket: cfg.bucket, db, index, root, workdir: cfg.workdir, log, dropIdle: (bytes) => objects.dropIdlePartials(bytes),
        });
        objects.hooks = this.ledger;
      }
      const fs = new BucketFs({
        bucket: cfg.bucket, store, index, objects, workdir: cfg.workdir, metadataTtlS: cfg.metadataTtl,
        uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, log,
        copyReads: envSwitch("BUCKETFS_READ_MODE") === "copy",
      });
      const workdir = workdirOf(cfg, db);
      if (workdir) workdir.journal.daemonRun = runId;
      this.held = { db, runs, runId, index, store, fs, workdir, bound: false };
    } catch (err) {
      db.close();
      throw err;
    }
    prepareMountpoint(cfg.mountpoint, log);
    const w = this.held.workdir;
    // Mounting hides what the plain directory holds: say what (the workdir's path is adopted below).
    const hidden = listHidden(cfg.mountpoint, cfg.workdir?.split("/")[0]);
    if (hidden.length > 0) {
      log.warn(
        `${cfg.mountpoint} is not empty: it holds ${hidden.slice(0, 10).map((n) => JSON.stringify(n)).join(", ")}` +
          `${hidden.length > 10 ? ` and ${hidden.length - 10} more` : ""}, hidden while bucketfs is mounted there (move them elsewhere to use them)`,
      );
    }
    if (!w) return;
    if (cfg.cachePath === "/tmp" || cfg.cachePath.startsWith("/tmp/")) {
      log.warn(
        `cachepath ${cfg.cachePath} is under /tmp, which many systems empty at boot: workdir changes not yet ` +
          `uploaded would not survive a power loss; set cachepath = /var/cache/bucketfs to keep them`,
      );
    }
    mkdirsUnder(root, cfg.workdir!);
    if (this.stopAsked) throw new Error("stop requested before the prefetch");
    this.enter("prefetching");
    // The lease first: never prefetch (or upload) a workdir another node is writing.
    const owner = new WorkdirOwner({
      store: this.held.store, prefix: w.spec.prefix, localDir: w.spec.localDir, lastUploadFile: w.spec.lastUploadFile,
      journal: w.journal, log, leaseMs: cfg.leaseTime * 1000, bootId: this.boot, force: this.opts.takeOver === true,
    });
    this.held.owner = owner;
    await owner.claim(this.cancelStart.signal);
    this.leaseClaimed = true;
    const report = await prefetchWorkdir(this.held.store, w.journal, w.spec, log, this.cancelStart.signal); // logs its own summary
    owner.adoptRecord(report.record, report.unreadable.map(({ key, etag }) => ({ key, etag })));
    if (this.stopAsked) throw new Error("stop requested during the prefetch");
    this.adoptStrays(w);
    if (w.journal.pending(w.spec.localDir).length > 0) {
      // Changes an earlier run could not upload (crash, failed upload): try now, markers last.
      // A stop now lets this upload finish (it is the stop's upload); only abort cuts it.
      this.enter("recovering");
      await this.upload("recovery", "of changes left by an earlier run", this.abortUploads.signal);
    }
  }

  /**
   * Files written at the workdir's path while bucketfs was stopped (an engine still running)
   * would be hidden by the mount: they become local changes of the workdir, or the start is
   * refused when one conflicts with what the workdir has (nothing moved, nothing hidden).
   */
  private adoptStrays(w: Workdir): void {
    const r = adoptStrays(w.target, w.spec.localDir, this.cfg.mountpoint);
    if (r.conflicts.length > 0) {
      throw new Error(
        `${w.target} holds files written while bucketfs was stopped that conflict with the workdir: ` +
          `${r.conflicts.slice(0, 10).join(", ")}${r.conflicts.length > 10 ? ` and ${r.conflicts.length - 10} more` : ""}. ` +
          `Mounting would hide them: move them away (or merge them into ${w.spec.localDir} by hand) and start again`,
      );
    }
    if (r.moved.length > 0) {
      this.log.warn(
        `${r.moved.length} entries were written to ${w.target} while bucketfs was stopped (${r.moved.slice(0, 5).join(", ")}` +
          `${r.moved.length > 5 ? ", ..." : ""}); moved into the workdir as local changes, they are uploaded like any other`,
      );
    }
  }

  private fail(err: unknown): void {
    this.failure = errMsg(err);
    this.log.error(`start failed: ${this.cfg.bucket}: ${this.failure}`);
    if (TRANSITIONS[this.current].includes("failed")) this.enter("failed");
  }

  /** mounting → serving: the FUSE mount, then the workdir's bind mount. */
  async mount(): Promise<void> {
    const h = this.held;
    if (!h || this.current === "failed") return;
    const { cfg, log } = this;
    try {
      this.enter("mounting");
      h.session = FuseSession.mount(h.fs, {
        mountpoint: cfg.mountpoint, fsname: `bucketfs:${cfg.bucket}`, readOnly: true,
        allowOther: (process.getuid?.() ?? 0) === 0, readers: 2, maxBackground: 64,
        // The largest READs; BUCKETFS_READ_AHEAD_KB overrides it (diagnostics, benchmarks).
        readAheadKb: Number(envSwitch("BUCKETFS_READ_AHEAD_KB") ?? MAX_READ_BYTES / 1024) || 0,
        passthrough: this.cfg.passthrough,
        debug: Boolean(this.opts.debugFuse), log: log.child("fuse"),
      });
      const session = h.session;
      h.stopCounters = publishFuseCounters(fuseCountersPath(cfg), () => session.counters(), () => session.countersVersion);
      log.info(`mounted s3://${cfg.bucket} at ${cfg.mountpoint} (read-only outside the workdir)`);
      void h.session.done.then(() => {
        if (this.current === "serving" || this.current === "syncing") {
          log.warn(`${cfg.mountpoint} was unmounted from outside; stopping`);
          this.opts.onUnmounted?.(this);
        }
      });
      if (h.workdir) {
        // Checked again right before the bind: never bind through a symlink in the cache.
        mkdirsUnder(cacheLayout(cfg).root, cfg.workdir!);
        await bindMount(h.workdir.spec.localDir, h.workdir.target);
        h.bound = true;
        log.info(`workdir ${h.workdir.target} is writable (bound from ${h.workdir.spec.localDir})`);
      }
      if (this.stopAsked) this.enter("stopping");
      else this.enter("serving");
    } catch (err) {
      this.fail(err);
    }
  }

  /**
   * The stop, from any phase: stopping (unbind, unmount, wait for a running sync) →
   * uploading (unless aborted, or the start failed) → closed; then the index, the pid file.
   */
  async stop(): Promise<void> {
    const h = this.held;
    const { cfg, log } = this;
    if (this.current !== "failed" && this.current !== "closed" && this.current !== "stopping") this.enter("stopping");
    if (h?.workdir && h.bound) {
      const busy = busyProcesses(h.workdir.target).concat(busyProcesses(h.workdir.spec.localDir));
      if (busy.length) log.warn(`workdir in use by ${busy.join(", ")}; their files are uploaded as they are now`);
      await unbind(h.workdir.target, log);
      h.bound = false;
    }
    if (h?.session) {
      // Outside the workdir (the bind is gone by now): name who keeps the FUSE mount busy.
      const busy = busyProcesses(cfg.mountpoint);
      if (busy.length) log.warn(`${cfg.mountpoint} in use by ${busy.join(", ")}; detaching it anyway`);
      await h.session.unmount();
      h.stopCounters?.();
      h.fs.closeAll();
      h.session = undefined;
      log.info(`unmounted ${cfg.mountpoint}`);
    }
    await this.sync;
    if (this.current === "stopping" && h?.workdir) {
      this.enter("uploading");
      if (h.owner && !this.leaseClaimed) {
        // Stopped before the lease was ours: this node may not upload (another may be writing).
        this.complete = this.nothingPending();
        if (!this.complete) log.warn(`stopped before the workdir lease was taken: pending files stay in ${h.workdir.spec.localDir} for the next start`);
      } else if (this.abortAsked) {
        const pending = h.workdir.journal.pending(h.workdir.spec.localDir).length;
        if (pending > 0) {
          this.complete = false;
          log.warn(`upload aborted: ${pending} files stay pending in ${h.workdir.spec.localDir} for the next start`);
        }
      } else this.stopUploadOk = await this.upload("upload", "at stop", this.abortUploads.signal, this.opts.onStatus);
    }
    if (h?.owner) {
      // The lease goes last, after the markers, and only when everything is in S3 (or, when
      // no stop upload ran, when nothing waits for one).
      const ran = this.current === "uploading" && !this.abortAsked;
      await h.owner.close(ran ? this.stopUploadOk : this.nothingPending());
    }
    if (h && lostWrites(h.db) > 0) {
      this.complete = false;
      log.error(
        `the cache disk is full: ${lostWrites(h.db)} writes to the index were lost; uploads went on, and what ` +
          `could not be recorded is uploaded again at the next start (free space in ${cfg.cachePath})`,
      );
    }
    this.close();
  }

  private nothingPending(): boolean {
    const w = this.held?.workdir;
    return w !== undefined && w.journal.pending(w.spec.localDir).length === 0;
  }

  private close(): void {
    const h = this.held;
    const failed = this.current === "failed";
    if (!failed) this.enter("closed");
    if (h) {
      // One syncfs for everything cached this run, then the next start may trust those files.
      const synced = !failed && syncCacheFs(cacheLayout(this.cfg).root, this.log);
      const outcome: Exclude<RunOutcome, "running"> = failed ? "failed" : this.abortAsked && !this.complete ? "aborted" : this.complete ? "ok" : "incomplete";
      h.runs.finish(h.runId, outcome, { files: 0, bytes: 0, failed: 0, ...(this.failure ? { message: this.failure } : {}) }, {
        exitCode: this.exitCode,
        cacheSynced: synced,
      });
      try {
        h.index.flush(); // the batched rows of the last fetches
      } catch (err) {
        this.log.warn(`writing the index: ${errMsg(err)}`);
      }
      if (this.ledger) this.opts.evictor?.detach(this.ledger); // its last writes, before the index closes
      this.ledger = undefined;
      try {
        h.db.close();
      } catch (err) {
        this.log.warn(`closing the index: ${errMsg(err)}`);
      }
      this.held = undefined;
    }
    this.stopNet?.();
    this.stopNet = undefined;
    if (this.pidClaimed) releasePidFile(cacheLayout(this.cfg).pid);
    this.pidClaimed = false;
  }

  /** Upload the workdir (one run of `kind`); records whether everything pending made it. */
  private async upload(kind: Exclude<TransferKind, "prefetch">, why: string, signal: AbortSignal, onStatus?: (s: string) => void): Promise<boolean> {
    const w = this.held?.workdir;
    if (!w || !this.held) return true;
    const { log } = this;
    const owner = this.held.owner;
    log.info(`uploading workdir ${w.spec.prefix} (${why})`);
    if (owner) {
      try {
        // A sync is refused at once when the fence is down (the timer keeps renewing); a stop or
        // a recovery tries one more renewal first.
        await owner.beforeUpload(signal, { renewWhenFenced: kind !== "sync" });
      } catch (err) {
        log.error(`upload ${why} refused: ${errMsg(err)}`);
        log.error(`the files stay in ${w.spec.localDir}; they are uploaded by a later start that holds the lease`);
        // The refusal is a run row, so `bucketfs sync` (and status) see it at once.
        this.held.runs.refused(kind, errMsg(err), { scope: w.spec.prefix, ...(this.held.runId === undefined ? {} : { daemonRun: this.held.runId }) });
        this.complete = false;
        return false;
      }
    }
    const recordKind: CommitRecord["kind"] = kind === "upload" ? "stop" : kind;
    const fence = owner?.fence();
    let r: UploadReport;
    try {
      r = await uploadWorkdir(this.held.store, w.journal, w.spec, log, {
        signal,
        kind,
        ...(owner && fence ? { fence, commit: (walk, s) => owner.commit(walk, recordKind, s) } : {}),
        onProgress: (p) =>
          onStatus?.(`${this.cfg.bucket}: uploading ${p.filesDone}/${p.filesTotal} files, ${fmtBytes(p.bytesDone)}/${fmtBytes(p.bytesTotal)}`),
      });
    } finally {
      fence?.dispose();
    }
    this.complete = r.ok;
    const line = `upload ${why}: ${summarize(r)}`;
    if (r.ok) log.info(line);
    else {
      log.error(line);
      for (const f of r.failed) log.error(`  not uploaded: ${w.spec.prefix}${f.path}: ${f.error}`);
      for (const k of r.markersHeldBack) log.error(`  marker held back: ${w.spec.prefix}${k}`);
      if (r.fenced !== null) log.error(`upload ${why} stopped: ${r.fenced}. The files stay in ${w.spec.localDir}; a later start that holds the lease uploads them`);
      else if (r.failed.length > 0) log.error(`the files stay in ${w.spec.localDir} and are uploaded at the next start or stop`);
    }
    return r.ok;
  }

  /** Last resort on an unexpected exit: never leave a dead mount behind. */
  detachNow(): void {
    if (this.held?.session) libc().umount2(this.cfg.mountpoint, MNT_DETACH);
  }
}

function bootId(): string {
  try {
    return readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
  } catch {
    return "unknown";
  }
}

function syncCacheFs(dir: string, log: Logger): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    return libc().syncfs(fd) === 0;
  } catch (err) {
    log.warn(`cannot sync the cache filesystem: ${errMsg(err)}`);
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

/** Transport tuning from the diagnostics switches (tests shorten the connect timeout). */
function storeTuning(): S3StoreTuning {
  const ms = Number(envSwitch("BUCKETFS_CONNECT_TIMEOUT_MS"));
  return Number.isFinite(ms) && ms > 0 ? { connectTimeoutMs: ms } : {};
}
