/**
 * The one persisted table of runs in a bucket's index: each daemon run (its phase as it
 * moves, the boot it ran in, whether it ended with a synced cache, its exit code) and each
 * transfer it made (prefetch, recovery upload, sync, stop upload), plus refused requests.
 *
 * Is: the `runs` table and typed queries; writes are best effort on a full disk (see
 * full-disk.ts): a run that could not be recorded is re-derived from the workdir at
 * the next start. Is not: the lifecycle (service/bucket-run.ts decides phases and outcomes).
 */
import type { Database } from "bun:sqlite";
import { bestEffort } from "./full-disk.ts";

export type RunKind = "daemon" | "prefetch" | "recovery" | "sync" | "upload";
export type RunOutcome = "running" | "ok" | "incomplete" | "failed" | "aborted" | "refused";

export const RUNS_DDL = `CREATE TABLE IF NOT EXISTS runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, scope TEXT NOT NULL DEFAULT '',
  daemon_run INTEGER, phase TEXT, boot_id TEXT, pid INTEGER,
  started_ms INTEGER NOT NULL, finished_ms INTEGER, outcome TEXT NOT NULL,
  files INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
  message TEXT, exit_code INTEGER, cache_synced INTEGER NOT NULL DEFAULT 0)`;

/** Longest message kept per run, in characters. */
const MESSAGE_MAX = 2000;

export interface RunSummary {
  files: number;
  bytes: number;
  failed: number;
  message?: string;
}

export interface RunRecord extends RunSummary {
  id: number;
  kind: RunKind;
  /** Workdir prefix of a transfer run ("" for daemon runs). */
  scope: string;
  /** The daemon run a transfer belongs to. */
  daemonRun: number | null;
  /** Daemon runs: the phase reached (the current one while running). */
  phase: string | null;
  bootId: string | null;
  pid: number | null;
  startedMs: number;
  finishedMs: number | null;
  outcome: RunOutcome;
  exitCode: number | null;
  cacheSynced: boolean;
}

interface Row {
  id: number; kind: string; scope: string; daemon_run: number | null; phase: string | null; boot_id: string | null;
  pid: number | null; started_ms: number; finished_ms: number | null; outcome: string; files: number; bytes: number;
  failed: number; message: string | null; exit_code: number | null; cache_synced: number;
}

const KINDS: readonly RunKind[] = ["daemon", "prefetch", "recovery", "sync", "upload"];
const OUTCOMES: readonly RunOutcome[] = ["running", "ok", "incomplete", "failed", "aborted", "refused"];

const clip = (s: string | undefined) => (s === undefined ? null : s.length > MESSAGE_MAX ? s.slice(0, MESSAGE_MAX) + "…" : s);

function toRecord(r: Row): RunRecord {
  return {
    id: r.id,
    kind: KINDS.find((k) => k === r.kind) ?? "upload",
    scope: r.scope,
    daemonRun: r.daemon_run,
    phase: r.phase,
    bootId: r.boot_id,
    pid: r.pid,
    startedMs: r.started_ms,
    finishedMs: r.finished_ms,
    outcome: OUTCOMES.find((o) => o === r.outcome) ?? "failed",
    files: r.files,
    bytes: r.bytes,
    failed: r.failed,
    ...(r.message === null ? {} : { message: r.message }),
    exitCode: r.exit_code,
    cacheSynced: r.cache_synced === 1,
  };
}

export class RunLog {
  constructor(private readonly db: Database) {
    db.run(RUNS_DDL);
  }

  /** A new run; undefined when the disk is full (nothing recorded). */
  start(kind: RunKind, opts: { scope?: string; daemonRun?: number; phase?: string; bootId?: string } = {}): number | undefined {
    return bestEffort(this.db, () =>
      this.db
        .query<{ id: number }, [string, string, number | null, string | null, string | null, number, number]>(
          `INSERT INTO runs (kind, scope, daemon_run, phase, boot_id, pid, started_ms, outcome)
           VALUES (?, ?, ?, ?, ?, ?, ?, 'running') RETURNING id`,
        )
        .get(kind, opts.scope ?? "", opts.daemonRun ?? null, opts.phase ?? null, opts.bootId ?? null, process.pid, Date.now())?.id,
    );
  }

  setPhase(id: number | undefined, phase: string): void {
    if (id === undefined) return;
    bestEffort(this.db, () => this.db.query("UPDATE runs SET phase = ? WHERE id = ?").run(phase, id));
  }

  finish(
    id: number | undefined,
    outcome: Exclude<RunOutcome, "running">,
    summary: RunSummary,
    extra: { exitCode?: number; cacheSynced?: boolean } = {},
  ): void {
    if (id === undefined) return;
    bestEffort(this.db, () =>
      this.db
        .query(
          `UPDATE runs SET finished_ms = ?, outcome = ?, files = ?, bytes = ?, failed = ?, message = ?,
             exit_code = coalesce(?, exit_code), cache_synced = coalesce(?, cache_synced) WHERE id = ?`,
        )
        .run(
          Date.now(), outcome, summary.files, summary.bytes, summary.failed, clip(summary.message),
          extra.exitCode ?? null, extra.cacheSynced === undefined ? null : extra.cacheSynced ? 1 : 0, id,
        ),
    );
  }

  /** A request that was refused (e.g. a sync during the stop), recorded as a finished run. */
  refused(kind: RunKind, message: string, opts: { scope?: string; daemonRun?: number } = {}): void {
    const id = this.start(kind, opts);
    this.finish(id, "refused", { files: 0, bytes: 0, failed: 0, message });
  }

  /**
   * Runs still "running" were cut short by a process that is gone (the caller owns the
   * bucket's pid file, so no live bucketfs writes this index): mark them failed.
   */
  closeOrphans(message: string): void {
    bestEffort(this.db, () =>
      this.db
        .query("UPDATE runs SET outcome = 'failed', finished_ms = ?, message = coalesce(message, ?) WHERE outcome = 'running'")
        .run(Date.now(), message),
    );
  }

  /** Most recent first; `scope` limits to one workdir's transfer runs. */
  recent(limit: number, scope?: string): RunRecord[] {
    const rows =
      scope === undefined
        ? this.db.query<Row, [number]>("SELECT * FROM runs ORDER BY id DESC LIMIT ?").all(limit)
        : this.db.query<Row, [string, number]>("SELECT * FROM runs WHERE scope = ? ORDER BY id DESC LIMIT ?").all(scope, limit);
    return rows.map(toRecord);
  }

  /** The latest daemon run before `beforeId` (or the latest at all). */
  lastDaemon(beforeId?: number): RunRecord | undefined {
    const r = this.db
      .query<Row, [number]>("SELECT * FROM runs WHERE kind = 'daemon' AND id < ? ORDER BY id DESC LIMIT 1")
      .get(beforeId ?? Number.MAX_SAFE_INTEGER);
    return r ? toRecord(r) : undefined;
  }
}
