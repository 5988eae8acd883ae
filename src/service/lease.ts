/**
 * The workdir lease: one S3 object, `<workdir>/.bucketfs/lease`, that says which bucketfs
 * instance owns a workdir prefix, kept with S3 conditional writes.
 *
 * Is: acquire (create with `If-None-Match: *`; take over a released or expired lease, or any
 * lease when the operator says so, with `If-Match` on the ETag read; resume our own lease after
 * a crash), renew (`If-Match` on the ETag we hold), a check before every upload that the lease
 * is still ours, release (overwrite with a released state: bucketfs never deletes), and the
 * start-up probe that tells whether the endpoint honours conditional writes at all.
 * Is not: a timer owner or a lifecycle (the caller renews on its schedule and decides what a
 * lost lease stops), nor a lock on anything but bucketfs instances that use it: other S3
 * writers are not fenced.
 *
 * Identity: a lease is "ours" when its `holder` (host name + workdir cache dir) is ours. Two
 * daemons on one host with different cache dirs are two holders; a daemon restarted on the
 * same cache dir (after SIGKILL, a crash or a reboot) is the same holder and resumes. Only one
 * daemon can run per cache dir (the pid file), so the same holder is never two live processes.
 *
 * Clocks: expiry is an absolute time written by the holder's clock and compared with ours.
 * Nodes whose clocks differ by more than a small part of the lease time weaken the takeover
 * rule; NTP-synchronised nodes are assumed (docs: README "Running on many nodes").
 */
import { StoreError } from "../store/types.ts";

/** The two store operations a lease needs (a narrow view of the ObjectStore port). */
export interface LeaseStore {
  readonly bucket: string;
  /** The object's body and ETag, or null when it does not exist. */
  getSmall(key: string, signal?: AbortSignal): Promise<{ body: Uint8Array; etag: string } | null>;
  /**
   * PUT `body`; with `ifNoneMatch` only when the key does not exist, with `ifMatch` only when its
   * ETag is that one. A failed condition throws StoreError kind "precondition". Returns the ETag.
   */
  putSmall(key: string, body: Uint8Array, cond?: { ifNoneMatch?: boolean; ifMatch?: string }, signal?: AbortSignal): Promise<string>;
}

/** What the lease object holds (JSON). */
export interface LeaseRecord {
  v: 1;
  state: "held" | "released";
  /** Host name + ":" + workdir cache dir: who holds it. */
  holder: string;
  node: string;
  pid: number;
  bootId: string;
  runId: string;
  startedMs: number;
  renewedMs: number;
  expiresMs: number;
}

export type LeaseState =
  | "none" // not acquired yet (or no workdir)
  | "held"
  | "lost" // someone else holds it now (a renewal or check found another ETag)
  | "released";

/** How the lease was obtained, for the log and status. */
export type AcquireHow = "created" | "resumed" | "took-over-released" | "took-over-expired" | "took-over-forced";

export interface LeaseStatus {
  key: string;
  state: LeaseState;
  how?: AcquireHow;
  /** Whether the endpoint refused a conditional write that had to fail (null: not probed). */
  conditionalWrites: boolean | null;
  expiresMs?: number;
  lastRenewMs?: number;
  /** Failed renewals since the last good one. */
  renewFailures: number;
  lastError?: string;
  /** The other holder, when the lease was lost. */
  takenBy?: string;
}

/** Thrown by acquire when another live holder has the lease. */
export class LeaseHeldError extends Error {
  override readonly name = "LeaseHeldError";
  constructor(
    message: string,
    readonly record: LeaseRecord,
  ) {
    super(message);
  }
}

export interface LeaseOptions {
  store: LeaseStore;
  /** Workdir prefix, ending in "/". */
  prefix: string;
  node: string;
  /** The workdir cache dir (with `node`, the holder identity). */
  cacheDir: string;
  pid: number;
  bootId: string;
  runId: string;
  leaseMs: number;
  now?: () => number;
}

/** The reserved folder under a workdir prefix for bucketfs' own objects (lease, commit records). */
export const RESERVED_DIR = ".bucketfs";

export function leaseKey(prefix: string): string {
  return `${prefix}${RESERVED_DIR}/lease`;
}

/** Parses a lease body; null when it is not a lease bucketfs wrote (never trusted blindly). */
export function parseLease(body: Uint8Array): LeaseRecord | null {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch {
    return null;
  }
  if (typeof v !== "object" || v === null) return null;
  const r = v as Record<string, unknown>;
  const str = (k: string) => typeof r[k] === "string" && (r[k] as string).length <= 4096;
  const num = (k: string) => typeof r[k] === "number" && Number.isFinite(r[k]);
  if (r.v !== 1 || (r.state !== "held" && r.state !== "released")) return null;
  if (!str("holder") || !str("node") || !str("bootId") || !str("runId")) return null;
  if (!num("pid") || !num("startedMs") || !num("renewedMs") || !num("expiresMs")) return null;
  return r as unknown as LeaseRecord;
}

/** A short, printable description of a holder for messages. */
export function describeHolder(r: LeaseRecord, now: number): string {
  const left = Math.round((r.expiresMs - now) / 1000);
  const when = new Date(r.expiresMs).toISOString();
  return `node ${printable(r.node)} (pid ${r.pid}, run ${printable(r.runId)}, cache ${printable(r.holder.slice(r.node.length + 1))}), ` +
    `lease ${left >= 0 ? `expires ${when} (in ${left} s)` : `expired ${when} (${-left} s ago)`}`;
}

function printable(s: string): string {
  return JSON.stringify(s).slice(1, -1);
}

const enc = new TextEncoder();

export class WorkdirLease {
  readonly key: string;
  private readonly o: Required<LeaseOptions>;
  private readonly holder: string;
  private etag: string | undefined;
  private record: LeaseRecord | undefined;
  private st: LeaseStatus;

  constructor(opts: LeaseOptions) {
    this.o = { now: Date.now, ...opts };
    this.key = leaseKey(opts.prefix);
    this.holder = `${opts.node}:${opts.cacheDir}`;
    this.st = { key: this.key, state: "none", conditionalWrites: null, renewFailures: 0 };
  }

  status(): LeaseStatus {
    return { ...this.st };
  }

  get held(): boolean {
    return this.st.state === "held";
  }

  private body(state: LeaseRecord["state"], startedMs: number): LeaseRecord {
    const now = this.o.now();
    return {
      v: 1, state, holder: this.holder, node: this.o.node, pid: this.o.pid, bootId: this.o.bootId, runId: this.o.runId,
      startedMs, renewedMs: now, expiresMs: state === "held" ? now + this.o.leaseMs : now,
    };
  }

  private async write(rec: LeaseRecord, cond: { ifNoneMatch?: boolean; ifMatch?: string }, signal?: AbortSignal): Promise<void> {
    this.etag = await this.o.store.putSmall(this.key, enc.encode(JSON.stringify(rec)), cond, signal);
    this.record = rec;
  }

  /**
   * Takes the lease or throws LeaseHeldError (another live holder) / StoreError (S3 failed).
   * `force` takes over a lease that another holder still renews (the operator knows it is dead).
   * Returns how, with the previous holder when there was one (for a warning).
   */
  async acquire(opts: { force?: boolean; signal?: AbortSignal } = {}): Promise<{ how: AcquireHow; previous?: LeaseRecord }> {
    const { signal } = opts;
    // Two rounds: a concurrent writer can change the object between our GET and our If-Match.
    for (let round = 0; ; round++) {
      try {
        await this.write(this.body("held", this.o.now()), { ifNoneMatch: true }, signal);
        return this.acquired("created");
      } catch (err) {
        if (!isPrecondition(err)) throw err;
      }
      const cur = await this.o.store.getSmall(this.key, signal);
      if (cur === null) {
        if (round < 2) continue; // deleted in between by hand: create again
        throw new StoreError("other", `lease ${this.key}: the object keeps vanishing between PUT and GET`);
      }
      const rec = parseLease(cur.body);
      const now = this.o.now();
      let how: AcquireHow;
      if (rec === null) {
        if (!opts.force) {
          throw new LeaseHeldError(
            `s3://${this.o.store.bucket}/${this.key} exists but is not a lease bucketfs can read; ` +
              `if no other bucketfs uses this workdir, start with --take-over`,
            { v: 1, state: "held", holder: "?:?", node: "?", pid: 0, bootId: "", runId: "?", startedMs: 0, renewedMs: 0, expiresMs: Infinity },
          );
        }
        how = "took-over-forced";
      } else if (rec.holder === this.holder) how = "resumed";
      else if (rec.state === "released") how = "took-over-released";
      else if (rec.expiresMs < now) how = "took-over-expired";
      else if (opts.force) how = "took-over-forced";
      else {
        throw new LeaseHeldError(
          `workdir s3://${this.o.store.bucket}/${this.o.prefix} is in use by ${describeHolder(rec, now)}. ` +
            `Wait for it to stop, or, if that node is dead, start with --take-over`,
          rec,
        );
      }
      try {
        const startedMs = how === "resumed" && rec !== null ? rec.startedMs : now;
        await this.write(this.body("held", startedMs), { ifMatch: cur.etag }, signal);
        return this.acquired(how, rec ?? undefined);
      } catch (err) {
        if (!isPrecondition(err) || round >= 2) throw err;
      }
    }
  }

  private acquired(how: AcquireHow, previous?: LeaseRecord): { how: AcquireHow; previous?: LeaseRecord } {
    this.st = {
      ...this.st, state: "held", how, expiresMs: this.record?.expiresMs, lastRenewMs: this.o.now(), renewFailures: 0,
    };
    delete this.st.lastError;
    delete this.st.takenBy;
    return previous === undefined ? { how } : { how, previous };
  }

  /**
   * Checks that the endpoint refuses conditional writes that must fail: If-None-Match on the
   * existing lease, and If-Match with an ETag it does not have. Both rewrite our own lease with
   * the same content if the endpoint ignores them, so the probe is harmless either way.
   * Returns true when both were refused (412).
   */
  async probeConditionalWrites(signal?: AbortSignal): Promise<boolean> {
    if (this.record === undefined || this.etag === undefined) throw new Error("probe before acquire");
    const body = enc.encode(JSON.stringify(this.record));
    let honoured = true;
    for (const cond of [{ ifNoneMatch: true }, { ifMatch: "00000000000000000000000000000000" }]) {
      try {
        this.etag = await this.o.store.putSmall(this.key, body, cond, signal);
        honoured = false;
      } catch (err) {
        if (!isPrecondition(err)) throw err;
      }
    }
    this.st.conditionalWrites = honoured;
    return honoured;
  }

  /**
   * Extends the lease. Returns false (and moves to "lost") when another holder has it now; a
   * transient failure is counted and rethrown, the lease stays "held" until its expiry passes.
   */
  async renew(signal?: AbortSignal): Promise<boolean> {
    if (this.st.state !== "held" || this.etag === undefined || this.record === undefined) return false;
    try {
      await this.write(this.body("held", this.record.startedMs), { ifMatch: this.etag }, signal);
      this.st.lastRenewMs = this.o.now();
      this.st.expiresMs = this.record.expiresMs;
      this.st.renewFailures = 0;
      delete this.st.lastError;
      return true;
    } catch (err) {
      if (isPrecondition(err)) {
        await this.markLost(signal);
        return false;
      }
      this.st.renewFailures++;
      this.st.lastError = err instanceof Error ? err.message : String(err);
      throw err;
    }
  }

  /** Whether our last good renewal has expired (we can no longer claim the lease). */
  expired(): boolean {
    return this.st.state === "held" && (this.st.expiresMs ?? 0) < this.o.now();
  }

  private async markLost(signal?: AbortSignal): Promise<void> {
    this.st.state = "lost";
    try {
      const cur = await this.o.store.getSmall(this.key, signal);
      const rec = cur === null ? null : parseLease(cur.body);
      this.st.takenBy = rec === null ? "unknown (lease object missing or unreadable)" : describeHolder(rec, this.o.now());
    } catch (err) {
      this.st.takenBy = `unknown (${err instanceof Error ? err.message : String(err)})`;
    }
    this.st.lastError = `lease taken by ${this.st.takenBy}`;
  }

  /** Writes the released state (only while held; a lost lease is left to its new holder). */
  async release(signal?: AbortSignal): Promise<boolean> {
    if (this.st.state !== "held" || this.etag === undefined || this.record === undefined) return false;
    try {
      await this.write(this.body("released", this.record.startedMs), { ifMatch: this.etag }, signal);
    } catch (err) {
      if (isPrecondition(err)) {
        await this.markLost(signal);
        return false;
      }
      throw err;
    }
    this.st.state = "released";
    this.st.expiresMs = this.record.expiresMs;
    return true;
  }
}

function isPrecondition(err: unknown): boolean {
  return err instanceof StoreError && err.kind === "precondition";
}
