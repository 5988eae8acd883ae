/**
 * The daemon's lifecycle for every bucket of the config, in one process:
 * start (cache dirs, pid file, stale-mount cleanup, workdir prefetch, recovery upload of
 * changes a crash left behind, FUSE mount, bind mount), serve until a signal, and stop
 * (unmount binds, unmount FUSE, upload the workdir with markers last, exit code from the
 * upload outcome). SIGUSR1 uploads the workdir now without unmounting (`bucketfs sync`).
 *
 * Is: ordering, signals, and the summary lines operators read. Is not: FUSE (fuse/),
 * semantics (fs/), or how prefetch/upload work (prefetch.ts, upload.ts).
 */
import { closeSync, mkdirSync, openSync, readFileSync } from "node:fs";
import type { Database } from "bun:sqlite";
import type { BucketConfig, Config } from "../config/types.ts";
import { openIndex } from "../cache/db.ts";
import { MetaIndex } from "../cache/meta-index.ts";
import { ObjectCache } from "../cache/object-cache.ts";
import { BLOCK_SIZE } from "../cache/partial-object.ts";
import { BucketFs } from "../fs/bucket-fs.ts";
import { FuseSession } from "../fuse/session.ts";
import { libc, MNT_DETACH } from "../sys/libc.ts";
import { createS3Store } from "../store/s3.ts";
import type { ObjectStore } from "../store/types.ts";
import { WorkdirJournal } from "./journal.ts";
import { prefetchWorkdir, type WorkdirSpec } from "./prefetch.ts";
import { uploadWorkdir, type UploadReport } from "./upload.ts";
import type { CommitRecord } from "./commit-record.ts";
import { WorkdirOwner } from "./workdir-owner.ts";
import { bindMount, busyProcesses, claimPidFile, ensureDir, prepareMountpoint, releasePidFile, unbind } from "./mounts.ts";
import { errMsg, fmtBytes, logger, type Logger } from "../util/log.ts";

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
    },
    journal: new WorkdirJournal(db, prefix),
    target: `${cfg.mountpoint}/${cfg.workdir}`,
  };
}

interface Mounted {
  cfg: BucketConfig;
  log: Logger;
  db: Database;
  index: MetaIndex;
  store: ObjectStore;
  fs: BucketFs;
  session?: FuseSession;
  workdir?: Workdir;
  /** Lease and commit records of the workdir (none without a workdir). */
  owner?: WorkdirOwner;
  bound: boolean;
  pidFile: string;
}

export interface DaemonOptions {
  /** Called once every bucket is mounted and bound (systemd READY=1). */
  onReady?: () => void;
  /** Status text for the service manager (STATUS=...). */
  onStatus?: (text: string) => void;
  onStopping?: () => void;
  debugFuse?: boolean;
  /** Take every workdir lease even from a live holder (`--take-over`). */
  takeOver?: boolean;
}

function summarize(r: UploadReport): string {
  const parts = [
    `${r.uploaded} uploaded (${fmtBytes(r.uploadedBytes)} in ${r.seconds.toFixed(1)} s, ${fmtBytes(r.bytesPerSec)}/s)`,
    `${r.unchanged} unchanged`,
  ];
  if (r.skipped.length) parts.push(`${r.skipped.length} non-regular skipped`);
  if (r.failed.length) parts.push(`${r.failed.length} FAILED`);
  if (r.markersHeldBack.length) parts.push(`${r.markersHeldBack.length} markers held back`);
  return parts.join(", ");
}

async function upload(
  m: Mounted, why: string, kind: CommitRecord["kind"], signal?: AbortSignal, onStatus?: (s: string) => void,
): Promise<boolean> {
  const w = m.workdir;
  if (!w) return true;
  const owner = m.owner;
  m.log.info(`uploading workdir ${w.spec.prefix} (${why})`);
  if (owner) {
    try {
      await owner.beforeUpload(signal);
    } catch (err) {
      m.log.error(`upload ${why} refused: ${errMsg(err)}`);
      m.log.error(`the files stay in ${w.spec.localDir}; they are uploaded by a later start that holds the lease`);
      return false;
    }
  }
  const r = await uploadWorkdir(m.store, w.journal, w.spec, m.log, {
    signal,
    ...(owner ? { commit: (walk) => owner.commit(walk, kind, signal) } : {}),
    onProgress: (p) =>
      onStatus?.(`${m.cfg.bucket}: uploading ${p.filesDone}/${p.filesTotal} files, ${fmtBytes(p.bytesDone)}/${fmtBytes(p.bytesTotal)}`),
  });
  const line = `upload ${why}: ${summarize(r)}`;
  if (r.ok) m.log.info(line);
  else {
    m.log.error(line);
    for (const f of r.failed) m.log.error(`  not uploaded: ${w.spec.prefix}${f.path}: ${f.error}`);
    for (const k of r.markersHeldBack) m.log.error(`  marker held back: ${w.spec.prefix}${k}`);
    m.log.error(`the files stay in ${w.spec.localDir} and are uploaded at the next start or stop`);
  }
  return r.ok;
}

/** Start everything for one bucket up to (not including) the FUSE mount. */
async function prepare(cfg: BucketConfig, signal: AbortSignal, takeOver: boolean): Promise<Mounted> {
  const log = logger(cfg.bucket);
  const layout = cacheLayout(cfg);
  mkdirSync(cfg.cachePath, { recursive: true, mode: 0o700 });
  ensureDir(layout.root, 0o755);
  claimPidFile(layout.pid, cfg.bucket);
  try {
    return await prepareClaimed(cfg, log, layout, signal, takeOver);
  } catch (err) {
    releasePidFile(layout.pid);
    throw new Error(`${cfg.bucket}: ${errMsg(err)}`, { cause: err });
  }
}

async function prepareClaimed(
  cfg: BucketConfig, log: Logger, layout: ReturnType<typeof cacheLayout>, signal: AbortSignal, takeOver: boolean,
): Promise<Mounted> {
  const db = openIndex(layout.index);
  const store = createS3Store(cfg);
  const index = new MetaIndex(db);
  const dropped = index.beginRun(bootId());
  if (dropped > 0) log.warn(`the last run ended with the machine (no clean stop): ${dropped} cached objects will be fetched again`);
  const objects = new ObjectCache(layout.root, store, index, log);
  objects.partialOptions = {
    chunkBlocks: Math.max(1, Math.round(cfg.readChunkSize / BLOCK_SIZE)),
    maxWindowBlocks: Math.max(1, Math.round(cfg.readAhead / BLOCK_SIZE)),
    maxInflight: cfg.readConcurrency,
  };
  const fs = new BucketFs({
    bucket: cfg.bucket, store, index, objects, workdir: cfg.workdir, metadataTtlS: cfg.metadataTtl,
    uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, log,
    copyReads: process.env.BUCKETFS_READ_MODE === "copy",
  });
  const m: Mounted = { cfg, log, db, index, store, fs, bound: false, pidFile: layout.pid, workdir: workdirOf(cfg, db) };
  try {
    prepareMountpoint(cfg.mountpoint, log);
    const w = m.workdir;
    if (w) {
      if (cfg.cachePath === "/tmp" || cfg.cachePath.startsWith("/tmp/")) {
        log.warn(
          `cachepath ${cfg.cachePath} is under /tmp, which many systems empty at boot: workdir changes not yet ` +
            `uploaded would not survive a power loss; set cachepath = /var/cache/bucketfs to keep them`,
        );
      }
      ensureDir(w.spec.localDir);
      // The lease first: never prefetch (or upload) a workdir another node is writing.
      m.owner = new WorkdirOwner({
        store, prefix: w.spec.prefix, localDir: w.spec.localDir, lastUploadFile: w.spec.lastUploadFile, journal: w.journal,
        log, leaseMs: cfg.leaseTime * 1000, bootId: bootId(), force: takeOver,
      });
      await m.owner.claim(signal);
      const report = await prefetchWorkdir(store, w.journal, w.spec, log, signal); // logs its own summary
      m.owner.adoptRecord(report.record);
      if (w.journal.pending(w.spec.localDir).length > 0) {
        // Changes an earlier run could not upload (crash, failed upload): try now, markers last.
        await upload(m, "of changes left by an earlier run", "recovery", signal);
      }
    }
    return m;
  } catch (err) {
    await m.owner?.close(nothingPending(m));
    db.close();
    throw err;
  }
}

/** Run the daemon until a stop signal; resolves with the process exit code. */
export async function runDaemon(config: Config, opts: DaemonOptions = {}): Promise<number> {
  const log = logger("daemon");
  for (const w of config.warnings) log.warn(w);
  const mounted: Mounted[] = [];
  const abort = new AbortController();
  const uploadAbort = new AbortController();
  let stopping = false;
  let stopRequested: (() => void) | undefined;
  const stopSignal = new Promise<void>((r) => (stopRequested = r));

  const safetyNet = () => {
    // Last resort on an unexpected exit: never leave a dead mount behind ("Transport endpoint
    // is not connected"). A lazy detach of the FUSE mount also detaches the bind below it.
    for (const m of mounted) if (m.session) libc().umount2(m.cfg.mountpoint, MNT_DETACH);
  };
  process.on("exit", safetyNet);

  let syncing: Promise<unknown> = Promise.resolve();
  const onSignal = (sig: NodeJS.Signals) => {
    if (sig === "SIGUSR1") {
      log.info("SIGUSR1: uploading workdirs now (checkpoint, mounts stay)");
      syncing = syncing.then(() => Promise.all(mounted.map((m) => upload(m, "on request (sync)", "sync"))));
      return;
    }
    if (stopping) {
      if (sig === "SIGINT") {
        log.warn("second SIGINT: aborting the upload; pending files stay in the cache for the next start");
        uploadAbort.abort();
      } else log.warn(`${sig} again: still stopping (uploads in progress); SIGINT twice aborts the upload`);
      return;
    }
    stopping = true;
    log.info(`${sig}: stopping`);
    abort.abort(); // cancels a prefetch still running; uploads below get a fresh controller
    stopRequested?.();
  };
  for (const s of ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"] as const) process.on(s, onSignal);

  let code = 0;
  try {
    // Prefetch every bucket in parallel; any failure aborts the start (no FUSE mount at all).
    const prepared = await Promise.allSettled(config.buckets.map((b) => prepare(b, abort.signal, opts.takeOver === true)));
    for (const p of prepared) if (p.status === "fulfilled") mounted.push(p.value);
    const failed = prepared.filter((p) => p.status === "rejected");
    if (failed.length) {
      for (const f of failed) log.error(`start failed: ${errMsg((f as PromiseRejectedResult).reason)}`);
      throw new StartError();
    }
    if (stopping) throw new StartError();
    for (const m of mounted) {
      m.session = FuseSession.mount(m.fs, {
        mountpoint: m.cfg.mountpoint, fsname: `bucketfs:${m.cfg.bucket}`, readOnly: true,
        allowOther: (process.getuid?.() ?? 0) === 0, readers: 2, maxBackground: 64, readAheadKb: 1024,
        debug: Boolean(opts.debugFuse), log: m.log.child("fuse"),
      });
      m.log.info(`mounted s3://${m.cfg.bucket} at ${m.cfg.mountpoint} (read-only outside the workdir)`);
      m.session.done.then(() => {
        if (!stopping) {
          m.log.warn(`${m.cfg.mountpoint} was unmounted from outside; stopping`);
          onSignal("SIGTERM");
        }
      });
    }
    for (const m of mounted) {
      if (!m.workdir) continue;
      await bindMount(m.workdir.spec.localDir, m.workdir.target);
      m.bound = true;
      m.log.info(`workdir ${m.workdir.target} is writable (bound from ${m.workdir.spec.localDir})`);
    }
    if (!stopping) {
      log.info(`ready: ${mounted.map((m) => m.cfg.mountpoint).join(", ")}`);
      opts.onReady?.();
      await stopSignal;
    }
  } catch (err) {
    if (!(err instanceof StartError)) log.error(`start failed: ${errMsg(err)}`);
    code = 1;
  }

  opts.onStopping?.();
  // Stop: unmount binds, unmount FUSE, then upload.
  for (const m of mounted) {
    if (!m.workdir || !m.bound) continue;
    const busy = busyProcesses(m.workdir.target).concat(busyProcesses(m.workdir.spec.localDir));
    if (busy.length) m.log.warn(`workdir in use by ${busy.join(", ")}; their files are uploaded as they are now`);
    await unbind(m.workdir.target, m.log);
  }
  for (const m of mounted) {
    if (!m.session) continue;
    // Outside the workdir (the bind is gone by now): name who keeps the FUSE mount busy.
    const busy = busyProcesses(m.cfg.mountpoint);
    if (busy.length) m.log.warn(`${m.cfg.mountpoint} in use by ${busy.join(", ")}; detaching it anyway`);
    await m.session.unmount();
    m.fs.closeAll();
    m.log.info(`unmounted ${m.cfg.mountpoint}`);
  }
  await syncing;
  if (code === 0) {
    const results = await Promise.all(mounted.map((m) => upload(m, "at stop", "stop", uploadAbort.signal, opts.onStatus)));
    if (results.some((ok) => !ok)) code = 2;
    // The lease goes last, after the markers, and only when everything is in S3.
    await Promise.all(mounted.map((m, i) => m.owner?.close(results[i] === true)));
  } else {
    await Promise.all(mounted.map((m) => m.owner?.close(nothingPending(m))));
  }
  for (const m of mounted) {
    // One syncfs for everything cached this run, then the index may trust those files next time.
    if (syncCacheFs(cacheLayout(m.cfg).root, m.log)) m.index.endRun();
    m.db.close();
    releasePidFile(m.pidFile);
  }
  process.off("exit", safetyNet);
  for (const s of ["SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"] as const) process.off(s, onSignal);
  log.info(code === 0 ? "stopped cleanly" : `stopped with errors (exit ${code})`);
  return code;
}

class StartError extends Error {}

/** No local change waits for an upload: the lease can be released without losing anything. */
function nothingPending(m: Mounted): boolean {
  return m.workdir !== undefined && m.workdir.journal.pending(m.workdir.spec.localDir).length === 0;
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
    fd = openSync(dir, "r");
    return libc().syncfs(fd) === 0;
  } catch (err) {
    log.warn(`cannot sync the cache filesystem: ${errMsg(err)}`);
    return false;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
