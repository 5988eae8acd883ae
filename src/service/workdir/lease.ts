/**
 * The workdir lease: one S3 object, `<workdir>/.bucketfs/lease`, that says which bucketfs
 * instance owns a workdir prefix, kept with S3 conditional writes, and the fence that stops
 * this node's writes before another node may take the lease over.
 *
 * Is: acquire (create with `If-None-Match: *`; take over a released or expired lease, or any
 * lease when the operator says so, with `If-Match` on the ETag read; resume our own lease after
 * a crash), renew (`If-Match` on the ETag we hold; one renewal in flight at a time, whoever
 * asks; its retries bounded by the fence; a 412 is checked by reading the lease back, and a
 * lease that still names this run is adopted, not lost), the fence (how long this node may still write, by its own monotonic
 * clock), release (overwrite with a released state: bucketfs never deletes), and the start-up
 * probe that tells whether the endpoint honours conditional writes at all.
 * Is not: a timer owner or a lifecycle (the caller renews on its schedule and decides what a
 * lost lease stops), nor a lock on anything but bucketfs instances that use it: other S3
 * writers are not fenced.
 *
 * Identity: a lease is "ours" when its `holder` (host name + workdir cache dir) is ours. Two
 * daemons on one host with different cache dirs are two holders; a daemon restarted on the
 * same cache dir (after SIGKILL, a crash or a reboot) is the same holder and resumes. Only one
 * daemon can run per cache dir (the pid file), so the same holder is never two live processes.
 * A lease is "this run's" when it also names our run id and pid.
 *
 * Fence (docs/SEMANTICS.md "The lease as a fence"): a write of ours that S3 applied at
 * monotonic time s carries `expiresMs` = wall(s) + lease. This node writes data only until
 * s + lease - margin (margin = lease / 4), measured on its monotonic clock from the moment the
 * renewal was SENT (S3 applied it later, so the true expiry is later still). Another node
 * takes over only after `expiresMs` by its own wall clock, so the margin covers the clocks'
 * difference and the time a request already sent takes to be applied.
 *
 * Clocks: expiry is an absolute time written by the holder's clock and compared with ours.
 * A lease that looks expired by its own `expiresMs` but that S3 last wrote (Last-Modified)
 * less than a lease time ago is still being renewed by a node whose clock is behind: it is
 * refused with that cause named, not taken over.
 */
import { StoreError, type ObjectInfo } from "../../store/types.ts";
import { singleFlight } from "../../util/async.ts";

/** The two store operations a lease needs (a narrow view of the ObjectStore port). */
export interface LeaseStore {
  readonly bucket: string;
  /** The object's body and ETag, or null when it does not exist. */
  getSmall(key: string, signal?: AbortSignal): Promise<{ body: Uint8Array; etag: string } | null>;
  /**
   * PUT `body`; with `ifNoneMatch` only when the key does not exist, with `ifMatch` only when its
   * ETag is that one. A failed condition throws StoreError kind "precondition". Returns the ETag.
   */
  putSmall(key: string, body: Uint8Array, cond?: { ifNoneMatch?: boolean; ifMatch?: string }, signal?: AbortSignal, deadline?: number): Promise<string>;
  /** HEAD: the object's Last-Modified (S3's clock) tells a live holder with a clock behind from a dead one. */
  head(key: string, signal?: AbortSignal): Promise<ObjectInfo | null>;
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
  /** Renewals whose answer was a 412 but whose lease still named this run (adopted, not lost). */
  adopted?: number;
  /** How long this node may still write, by its monotonic clock (ms; <= 0: fenced). */
  fenceLeftMs?: number;
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
  /** Wall clock (ms since epoch), written into the lease. */
  now?: () => number;
  /** Monotonic clock (ms), for the fence. */
  mono?: () => number;
}

/** The fence's safety margin: a quarter of the lease time (see the header and SEMANTICS.md). */
export function fenceMarginMs(leaseMs: number): number {
  return Math.floor(leaseMs / 4);
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
  /** Monotonic time until which this node may write (0: never held). */
  private validUntil = 0;
  /** The held record last sent and the monotonic time it was sent (to adopt it after a lost answer). */
  private sent: { rec: LeaseRecord; mono: number } | undefined;
  private readonly flight = singleFlight<"renew", boolean>();

  constructor(opts: LeaseOptions) {
    this.o = { now: Date.now, mono: () => performance.now(), ...opts };
    this.key = leaseKey(opts.prefix);
    this.holder = `${opts.node}:${opts.cacheDir}`;
    this.st = { key: this.key, state: "none", conditionalWrites: null, renewFailures: 0 };
  }

  status(): LeaseStatus {
    const st: LeaseStatus = { ...this.st };
    if (this.validUntil > 0) st.fenceLeftMs = Math.round(this.fenceLeftMs());
    return st;
  }

  /** Ms this node may still write (by its monotonic clock); <= 0 once fenced. */
  fenceLeftMs(): number {
    if (this.st.state !== "held") return 0;
    return this.validUntil - this.o.mono();
  }

  /**
   * Null while this node may write; else why not, for messages. Checked before every data
   * request and the commit record (see the header for the timing argument).
   */
  fenceReason(): string | null {
    const where = `workdir lease ${this.key}`;
    if (this.st.state === "lost") return `${where} was LOST: taken by ${this.st.takenBy ?? "another node"}`;
    if (this.st.state !== "held") return `${where} is ${this.st.state}`;
    const left = this.fenceLeftMs();
    if (left > 0) return null;
    const since = this.sent ? Math.round((this.o.mono() - this.sent.mono) / 1000) : 0;
    return (
      `${where} can no longer be relied on by this node's clock: the last renewal S3 accepted was sent ${since} s ago ` +
      `(lease_time ${Math.round(this.o.leaseMs / 1000)} s, less a ${Math.round(fenceMarginMs(this.o.leaseMs) / 1000)} s safety margin)` +
      (this.st.lastError ? `; renewals fail: ${this.st.lastError}` : "") +
      `; another node may take the workdir over`
    );
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

  private async write(rec: LeaseRecord, cond: { ifNoneMatch?: boolean; ifMatch?: string }, signal?: AbortSignal, deadline?: number): Promise<void> {
    const mono = this.o.mono();
    if (rec.state === "held") this.sent = { rec, mono };
    this.etag = await this.o.store.putSmall(this.key, enc.encode(JSON.stringify(rec)), cond, signal, deadline);
    this.record = rec;
    if (rec.state === "held") this.validUntil = mono + this.o.leaseMs - fenceMarginMs(this.o.leaseMs);
  }

  /** Whether `rec` is a lease written by this very run (holder, run id and pid). */
  private isThisRun(rec: LeaseRecord | null): rec is LeaseRecord {
    return rec !== null && rec.holder === this.holder && rec.runId === this.o.runId && rec.pid === this.o.pid;
  }

  /**
   * After a 412 on our own If-Match: reads the lease. When it still names this run, our write
   * was applied and its answer lost (or an earlier one of ours was): its ETag is adopted and the
   * fence extended only if it is the record we sent last. Returns whether it was ours.
   */
  private async adoptOwn(signal?: AbortSignal): Promise<"none" | "current" | "older"> {
    const cur = await this.o.store.getSmall(this.key, signal);
    const rec = cur === null ? null : parseLease(cur.body);
    if (cur === null || !this.isThisRun(rec)) return "none";
    this.etag = cur.etag;
    this.record = rec;
    this.st.adopted = (this.st.adopted ?? 0) + 1;
    const sent = this.sent;
    if (rec.state === "held" && sent !== undefined && rec.renewedMs === sent.rec.renewedMs && rec.expiresMs === sent.rec.expiresMs) {
      this.validUntil = sent.mono + this.o.leaseMs - fenceMarginMs(this.o.leaseMs);
      return "current";
    }
    return "older";
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
      else if (rec.expiresMs < now) {
        if (!opts.force) await this.refuseIfStillRenewed(rec, now, signal);
        how = "took-over-expired";
      } else if (opts.force) how = "took-over-forced";
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

  /**
   * An expired-looking lease that S3 wrote less than a lease time ago (its Last-Modified, by
   * S3's clock) is still renewed by a holder whose clock is behind ours (or ours is ahead):
   * refused, naming the clocks, instead of taken from a live node.
   */
  private async refuseIfStillRenewed(rec: LeaseRecord, now: number, signal?: AbortSignal): Promise<void> {
    const info = await this.o.store.head(this.key, signal);
    if (info === null) return;
    const writtenAgo = now - info.lastModifiedMs;
    // Last-Modified has whole seconds: one second of slack on the side of the holder.
    if (writtenAgo >= this.o.leaseMs - 1000) return;
    const behind = Math.round((info.lastModifiedMs - rec.renewedMs) / 1000);
    throw new LeaseHeldError(
      `workdir s3://${this.o.store.bucket}/${this.o.prefix} is in use by ${describeHolder(rec, now)}: its lease looks expired by ` +
        `the time it wrote, but S3 stored that renewal ${Math.max(0, Math.round(writtenAgo / 1000))} s ago, so the holder still renews it ` +
        `and its clock is about ${behind} s behind S3's (or this node's clock is ahead). Fix the clocks (NTP); ` +
        `if that node is dead, start with --take-over`,
      rec,
    );
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
   * transient failure is counted and rethrown, the lease stays "held" (the fence decides how
   * long this node may still write). Callers that ask while a renewal runs share it: two
   * If-Match PUTs with one ETag would make the second a false 412.
   */
  renew(signal?: AbortSignal): Promise<boolean> {
    return this.flight.run("renew", () => this.renewOnce(signal));
  }

  /** The renewal running now, if any. */
  get renewing(): Promise<boolean> | undefined {
    return this.flight.running("renew");
  }

  private async renewOnce(signal?: AbortSignal): Promise<boolean> {
    if (this.st.state !== "held" || this.etag === undefined || this.record === undefined) return false;
    try {
      for (let round = 0; ; round++) {
        try {
          await this.write(this.body("held", this.record.startedMs), { ifMatch: this.etag }, signal, this.renewDeadline());
          break;
        } catch (err) {
          if (!isPrecondition(err)) throw err;
          // Our own write whose answer was lost is answered 412 when sent again: read it back.
          const own = await this.adoptOwn(signal);
          if (own === "none") {
            await this.markLost(signal);
            return false;
          }
          if (own === "current" || round > 0) break; // an older record of ours: renew once more on its ETag
        }
      }
      this.st.lastRenewMs = this.o.now();
      this.st.expiresMs = this.record.expiresMs;
      this.st.renewFailures = 0;
      delete this.st.lastError;
      return true;
    } catch (err) {
      this.st.renewFailures++;
      this.st.lastError = err instanceof Error ? err.message : String(err);
      throw err;
    }
  }

  /**
   * The retry deadline of a renewal's PUT (Date.now() ms): the fence, while it is up. S3's
   * throttling backoff (up to 20 s) would otherwise let one slow retry outlast a short lease;
   * bounded by the fence, the request path fits several tries in the window. A renewal sent
   * once the fence is down gets the ordinary policy (it can still put the fence back up).
   */
  private renewDeadline(): number | undefined {
    const left = this.fenceLeftMs();
    return left > 0 ? Date.now() + left : undefined;
  }

  private async markLost(signal?: AbortSignal): Promise<void> {
    this.st.state = "lost";
    this.validUntil = 0;
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
    await this.renewing?.catch(() => undefined);
    if (this.st.state !== "held" || this.etag === undefined || this.record === undefined) return false;
    const body = this.body("released", this.record.startedMs);
    for (let round = 0; ; round++) {
      try {
        await this.write(body, { ifMatch: this.etag }, signal);
        break;
      } catch (err) {
        if (!isPrecondition(err)) throw err;
        // A lost answer: our released record is there already, or a held one of this run to retry on.
        if (round === 0 && (await this.adoptOwn(signal)) !== "none") {
          if (this.record?.state === "released") break;
          continue;
        }
        await this.markLost(signal);
        return false;
      }
    }
    this.validUntil = 0;
    this.st.state = "released";
    this.st.expiresMs = this.record.expiresMs;
    return true;
  }
}

function isPrecondition(err: unknown): boolean {
  return err instanceof StoreError && err.kind === "precondition";
}
