/**
 * `bucketfs status [--json]` and `bucketfs sync`: views of a running (or stopped) daemon.
 *
 * Is: reading pid files, the mount table and each bucket's index (runs table, journal),
 * and sending SIGUSR1 for a sync, then waiting for the sync run it starts (or the refusal
 * the daemon records) to finish. `--json` is the machine-readable form tests and scripts
 * use: phase, pending files, recent runs. Is not: the daemon; it never writes the index
 * and never touches a mount point (a stat of a hung mount would hang us too).
 */
import { existsSync, readdirSync, lstatSync } from "node:fs";
import type { Database } from "bun:sqlite";
import type { BucketConfig, Config } from "../config/types.ts";
import { openIndex } from "../cache/db.ts";
import { fsSpace, readCacheUse } from "../cache/evictor.ts";
import { readChecks } from "../cache/meta-index.ts";
import { RunLog, type RunRecord } from "../cache/runs.ts";
import { EVENTS, cacheLayout, workdirOf } from "./bucket-run.ts";
import type { OwnerStatus } from "./workdir/workdir-owner.ts";
import { livePid, FSTYPE } from "./mounts.ts";
import { type PendingFile, type UploadFailureRecord } from "./workdir/journal.ts";
import type { LastPrefetch, UnreadableKey } from "./workdir/prefetch.ts";
import type { LastUpload, Unuploadable } from "./workdir/upload.ts";
import { mountAt } from "../util/mountinfo.ts";
import { fuseLine, fuseStatus, type FuseStatus } from "./fuse-counters.ts";
import { netLine, netStatus, type NetStatus } from "./net-status.ts";
import { errMsg, fmtBytes } from "../util/log.ts";

/** Runs listed per bucket. */
const STATUS_RUNS = 10;

export interface BucketStatus {
  section: string;
  bucket: string;
  mountpoint: string;
  /** PID of the live daemon serving this bucket, or null. */
  pid: number | null;
  mount: "mounted" | "not mounted" | { occupiedBy: string };
  /** The phase of the live daemon run, or of the last one when none is running ("closed", "failed"...); null if never run. */
  phase: string | null;
  /** The latest daemon run (its outcome and exit code once finished). */
  daemonRun: RunRecord | null;
  cache: { dir: string; files: number; bytes: number };
  /** The read cache as its index counts it, and the limits of its cachepath. */
  readCache: ReadCacheStatus | null;
  workdir: null | {
    target: string;
    localDir: string;
    pending: PendingFile[];
    pendingBytes: number;
    /** Entries the upload could not handle (unreadable, names that cannot be keys): never "clean". */
    problems: { path: string; error: string }[];
    /** Keys the last prefetch could not read (listed, but 404 twice): not in the workdir. */
    unreadable: UnreadableKey[];
    /** Files the last upload could not give S3 under their names (key too long, name refused). */
    unuploadable: Unuploadable[];
    /** The last upload run (stop, sync, recovery) file by file: failed, held back, skipped; null before any. */
    lastUpload: LastUpload | null;
    /** The last successful prefetch: counts, kept local changes, skipped keys; null before any. */
    lastPrefetch: LastPrefetch | null;
    failures: UploadFailureRecord[];
    /** The workdir lease as the daemon last recorded it (null before any daemon took it). */
    lease: (OwnerStatus & { updatedMs: number }) | null;
  };
  /** Most recent first: daemon runs and the transfers they made (prefetch, recovery, sync, upload), refusals. */
  runs: RunRecord[];
  /** The live daemon's FUSE request counters (READs by size, passthrough), from fuse-counters.ts. */
  fuse: FuseStatus | null;
  /** The wire as the last daemon saw it (net-status.ts): GET bounds, clock skew, credentials; null if never published. */
  network: NetStatus | null;
  /** Why the index could not be read, if so. */
  error?: string;
}

/** The read cache of one bucket and the limits of its cachepath (shared with the buckets that use it). */
export interface ReadCacheStatus {
  /** Cached objects of this bucket (from its index). */
  bytes: number;
  objects: number;
  /** Evictions of this bucket, over every run. */
  evictions: number;
  evictedBytes: number;
  /**
   * Objects read in part and kept after their last close (checked parts of objects with
   * composite checksums, served again without a GET), and the bytes those parts hold.
   */
  keptObjects: number;
  keptBytes: number;
  /**
   * Objects fetched, over every run, by what checked their bytes (store/checksum.ts
   * Verification kinds: full, composite, multipart-etag, md5, none), and the `none` ones:
   * fetched with their length as the only check.
   */
  checks: Record<string, number>;
  unverified: number;
  cachePath: string;
  /** Buckets of this config that share the cachepath and its limits. */
  sharedWith: string[];
  /** Cached bytes of all those buckets: what `limitBytes` applies to. */
  cachePathBytes: number;
  /** cache_size, or null for no byte limit. */
  limitBytes: number | null;
  /** cache_min_free in bytes, and the filesystem's free space and size (null when it cannot be read). */
  minFreeBytes: number | null;
  freeBytes: number | null;
  totalBytes: number | null;
}

/** Hook for status: the read-cache figures of every bucket (one index read each). */
function readCacheStatus(config: Config): Map<string, ReadCacheStatus | null> {
  const uses = new Map(config.buckets.map((b) => [b.bucket, (() => {
    try {
      return withIndex(b, (db) => ({ ...readCacheUse(db), checks: readChecks(db) }))
        ?? { bytes: 0, objects: 0, evictions: 0, evictedBytes: 0, keptObjects: 0, keptBytes: 0, checks: {} };
    } catch {
      return undefined;
    }
  })()]));
  const out = new Map<string, ReadCacheStatus | null>();
  for (const b of config.buckets) {
    const u = uses.get(b.bucket);
    if (!u) {
      out.set(b.bucket, null);
      continue;
    }
    const sharing = config.buckets.filter((o) => o.cachePath === b.cachePath);
    const space = fsSpace(b.cachePath, b.cacheMinFree);
    out.set(b.bucket, {
      ...u,
      unverified: u.checks.none ?? 0,
      cachePath: b.cachePath,
      sharedWith: sharing.map((o) => o.bucket),
      cachePathBytes: sharing.reduce((n, o) => n + (uses.get(o.bucket)?.bytes ?? 0), 0),
      limitBytes: b.cacheSize ?? null,
      minFreeBytes: space?.minFreeBytes ?? null,
      freeBytes: space?.freeBytes ?? null,
      totalBytes: space?.totalBytes ?? null,
    });
  }
  return out;
}

function readCacheLine(c: ReadCacheStatus): string {
  const limit = c.limitBytes !== null ? fmtBytes(c.limitBytes) : "no byte limit";
  const shared = c.sharedWith.length > 1 ? `, ${fmtBytes(c.cachePathBytes)} for all of ${c.sharedWith.join(", ")}` : "";
  const free =
    c.freeBytes !== null && c.totalBytes !== null
      ? `${fmtBytes(c.freeBytes)} free of ${fmtBytes(c.totalBytes)} (keeps ${fmtBytes(c.minFreeBytes ?? 0)} free)`
      : `free space unknown (${c.cachePath} missing?)`;
  return (
    `  read cache: ${fmtBytes(c.bytes)} in ${c.objects} objects${shared}; limit ${limit} for ${c.cachePath}; ` +
    `${free}; ${c.evictions} evictions (${fmtBytes(c.evictedBytes)})` +
    (c.keptObjects > 0 ? `; ${c.keptObjects} objects read in part kept (${fmtBytes(c.keptBytes)} of checked parts)` : "") +
    (c.unverified > 0 ? `; ${c.unverified} objects fetched unverified (S3 held no checksum or MD5 for them)` : "")
  );
}

function du(dir: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    let names: string[];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const n of names) {
      const p = `${d}/${n}`;
      try {
        const st = lstatSync(p);
        if (st.isDirectory()) stack.push(p);
        else if (st.isFile()) {
          files++;
          bytes += st.blocks * 512;
        }
      } catch {
        /* vanished */
      }
    }
  }
  return { files, bytes };
}

function withIndex<T>(b: BucketConfig, fn: (db: Database) => T): T | undefined {
  const path = cacheLayout(b).index;
  if (!existsSync(path)) return undefined;
  const db = openIndex(path, { readonly: true });
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

export function bucketStatus(b: BucketConfig): BucketStatus {
  const layout = cacheLayout(b);
  const pid = livePid(layout.pid) ?? null;
  const m = mountAt(b.mountpoint);
  const out: BucketStatus = {
    section: b.section, bucket: b.bucket, mountpoint: b.mountpoint, pid,
    mount: m?.fstype === FSTYPE ? "mounted" : m ? { occupiedBy: m.fstype } : "not mounted",
    phase: null, daemonRun: null, cache: { dir: layout.root, ...du(layout.root) }, readCache: null, workdir: null, runs: [],
    fuse: pid !== null ? fuseStatus(b, pid) : null,
    network: netStatus(b),
  };
  try {
    withIndex(b, (db) => {
      const runs = new RunLog(db);
      out.runs = runs.recent(STATUS_RUNS);
      out.daemonRun = runs.lastDaemon() ?? null;
      out.phase = out.daemonRun?.phase ?? null;
      // A run left "running" by a process that is gone did not stop: say so.
      if (out.daemonRun && out.daemonRun.outcome === "running" && out.daemonRun.pid !== pid) out.phase = "crashed";
      const w = workdirOf(b, db);
      if (!w) return;
      const walk = w.journal.scanPending(w.spec.localDir);
      const pending = walk.pending;
      out.workdir = {
        target: w.target, localDir: w.spec.localDir, pending,
        pendingBytes: pending.reduce((n, p) => n + p.size, 0),
        problems: walk.problems.map((p) => ({ path: p.rel, error: p.error })),
        unreadable: w.journal.noteList<UnreadableKey>("unreadable"),
        unuploadable: w.journal.noteList<Unuploadable>("unuploadable"),
        lastUpload: (w.journal.note("lastUpload") as LastUpload | null) ?? null,
        lastPrefetch: (w.journal.note("lastPrefetch") as LastPrefetch | null) ?? null,
        failures: w.journal.failures(),
        lease: leaseOf(w.journal.lease()),
      };
    });
  } catch (err) {
    out.error = errMsg(err);
  }
  return out;
}

function leaseOf(saved: { status: unknown; updatedMs: number } | null): (OwnerStatus & { updatedMs: number }) | null {
  const st = saved?.status as OwnerStatus | undefined;
  if (!saved || typeof st !== "object" || st === null || typeof st.lease !== "object") return null;
  return { ...st, updatedMs: saved.updatedMs };
}

function describeLease(o: OwnerStatus & { updatedMs: number }): string {
  const l = o.lease;
  const iso = (ms: number | undefined) => (ms === undefined ? "?" : new Date(ms).toISOString());
  const parts = [`lease ${l.state === "lost" ? "LOST" : l.state}`];
  if (l.state === "held") parts.push(`expires ${iso(l.expiresMs)}`, `renewed ${iso(l.lastRenewMs)}`);
  if (l.renewFailures > 0) parts.push(`${l.renewFailures} renewal(s) FAILED: ${l.lastError ?? "?"}`);
  if (l.takenBy) parts.push(`held by ${l.takenBy}`);
  if (l.conditionalWrites === false) parts.push("endpoint IGNORES conditional writes (advisory only)");
  if (o.lastRecord !== null) parts.push(`last commit record ${o.lastRecord}`);
  return parts.join(", ");
}

export function printStatus(config: Config, json = false): number {
  const caches = readCacheStatus(config);
  const all = config.buckets.map((b) => ({ ...bucketStatus(b), readCache: caches.get(b.bucket) ?? null }));
  if (json) {
    console.log(JSON.stringify({ buckets: all }, null, 2));
    return 0;
  }
  for (const s of all) {
    const mounted = typeof s.mount === "string" ? s.mount : `occupied by ${s.mount.occupiedBy}`;
    const running = s.pid !== null ? `running (pid ${s.pid}), ${mounted}, ${s.phase ?? "?"}` : `not running, ${mounted}${s.phase ? ` (last run: ${s.phase})` : ""}`;
    console.log(`[${s.section}] s3://${s.bucket} at ${s.mountpoint}: ${running}`);
    console.log(`  cache ${s.cache.dir}: ${s.cache.files} files, ${fmtBytes(s.cache.bytes)} (workdir included)`);
    if (s.readCache) console.log(readCacheLine(s.readCache));
    if (s.fuse) console.log(`  ${fuseLine(s.fuse)}`);
    if (s.network && s.network.pid === s.pid) console.log(`  ${netLine(s.network)}`);
    if (s.error) console.log(`  index: ${s.error}`);
    const w = s.workdir;
    if (!w) {
      if (!s.error) console.log("  workdir: none (read-only mount)");
    } else {
      console.log(`  workdir ${w.target}: ${w.pending.length} files pending upload (${fmtBytes(w.pendingBytes)})`);
      for (const p of w.pending.slice(0, 10)) console.log(`    ${p.path} (${fmtBytes(p.size)})`);
      if (w.pending.length > 10) console.log(`    ... and ${w.pending.length - 10} more`);
      for (const p of w.problems.slice(0, 5)) console.log(`  cannot upload ${p.path}: ${p.error}`);
      for (const u of w.unreadable.slice(0, 5)) console.log(`  unreadable in S3 (listed, answered 404): ${u.key}`);
      for (const u of w.unuploadable.slice(0, 5)) console.log(`  cannot be uploaded: ${u.path}: ${u.reason}`);
      for (const f of w.failures.slice(0, 5)) console.log(`  last error for ${f.path}: ${f.lastError}`);
      if (w.lease) console.log(`  ${describeLease(w.lease)}`);
    }
    for (const r of s.runs) {
      const when = new Date(r.startedMs).toISOString();
      const what = r.kind === "daemon" ? `phase ${r.phase ?? "?"}${r.exitCode !== null ? `, exit ${r.exitCode}` : ""}` : `${r.files} files, ${fmtBytes(r.bytes)}, ${r.failed} failed`;
      console.log(`  ${r.kind} ${when}: ${r.outcome}, ${what}${r.message ? ` (${r.message})` : ""}`);
    }
  }
  return 0;
}

/**
 * SIGUSR1 to the daemon, then wait for each workdir's sync run started after the signal
 * (or the refusal it records). 0 all synced, 2 some files not uploaded, 1 refused.
 */
export async function requestSync(config: Config, timeoutMs: number): Promise<number> {
  const pids = new Set<number>();
  for (const b of config.buckets) {
    const pid = livePid(cacheLayout(b).pid);
    if (pid !== undefined) pids.add(pid);
  }
  const withWorkdir = config.buckets.filter((b) => b.workdir !== undefined);
  if (pids.size === 0) throw new Error("bucketfs is not running (no live pid file); nothing to sync");
  if (withWorkdir.length === 0) {
    console.log("no bucket has a workdir; nothing to upload");
    return 0;
  }
  // A daemon that could not record a refusal is refused here at once: one still starting (its
  // run row is not there yet) or one already finished. Any other phase records its own verdict.
  let refusedNow = false;
  for (const b of withWorkdir) {
    const run = withIndex(b, (db) => new RunLog(db).lastDaemon());
    const pid = livePid(cacheLayout(b).pid);
    const phase = run?.phase ?? null;
    let verdict: true | string = true;
    if (pid !== undefined && (run === undefined || run.pid !== pid)) verdict = `bucketfs pid ${pid} is starting (not serving yet)`;
    else if (phase === "closed" || phase === "failed") verdict = EVENTS[phase].sync;
    if (verdict !== true) {
      console.error(`${b.bucket}: sync refused: ${verdict}`);
      refusedNow = true;
    }
  }
  if (refusedNow) return 1;
  const since = Date.now();
  for (const pid of pids) process.kill(pid, "SIGUSR1");
  const deadline = since + timeoutMs;
  let code = 0;
  for (const b of withWorkdir) {
    const scope = `${b.workdir}/`;
    for (;;) {
      const run = withIndex(b, (db) =>
        new RunLog(db).recent(50, scope).find((r) => r.kind === "sync" && r.startedMs >= since && r.finishedMs !== null),
      );
      if (run) {
        if (run.outcome === "refused") {
          console.error(`${b.bucket}: sync refused: ${run.message ?? ""}`);
          code = Math.max(code, 1);
        } else {
          console.log(`${b.bucket}: sync ${run.outcome}: ${run.files} files, ${fmtBytes(run.bytes)}, ${run.failed} failed`);
          if (run.outcome !== "ok") code = 2;
        }
        break;
      }
      if (livePid(cacheLayout(b).pid) === undefined) throw new Error(`${b.bucket}: bucketfs exited before the sync finished`);
      if (Date.now() > deadline) throw new Error(`${b.bucket}: no sync result after ${timeoutMs / 1000} s`);
      await Bun.sleep(200);
    }
  }
  return code;
}
