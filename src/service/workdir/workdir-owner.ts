/**
 * Ownership of one workdir prefix for one run of the daemon: the lease kept alive while the
 * bucket runs, the check before every upload that the lease is still ours, and the commit
 * record each upload run writes before its markers.
 *
 * Is: `WorkdirOwner` with four calls at four points of the bucket's lifecycle: `claim()`
 * before prefetch, `adoptRecord()` with what prefetch found, `beforeUpload()` + `fence()` +
 * `commit()` around each upload (stop or sync), `close()` at the end (releasing the lease only
 * after a clean upload). A renew timer in between (running through long uploads too), whose
 * failures are logged loudly and shown in `status()`. The fence is an AbortSignal that fires
 * the moment the lease can no longer be relied on by this node's clock (or is found lost):
 * every data request and the commit record of the upload run under it.
 * Is not: the lease or record logic (lease.ts, commit-record.ts) nor the lifecycle that calls
 * it; it never decides to stop the daemon.
 */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { ObjectStore } from "../../store/types.ts";
import { errMsg, type Logger } from "../../util/log.ts";
import { buildRecord, type CommitRecord } from "./commit-record.ts";
import type { WorkdirJournal, WorkdirVisit } from "./journal.ts";
import { LeaseHeldError, WorkdirLease, describeHolder, type LeaseStatus } from "./lease.ts";
import type { UploadFence } from "./upload.ts";
import { recordFromWorkdir, writeRecord } from "./workdir-record.ts";

export interface WorkdirOwnerOptions {
  store: Pick<ObjectStore, "bucket" | "getSmall" | "putSmall" | "head">;
  prefix: string;
  /** The workdir cache dir: with the host name, who holds the lease. */
  localDir: string;
  lastUploadFile: string;
  journal: WorkdirJournal;
  log: Logger;
  leaseMs: number;
  bootId: string;
  /** Take the lease even from a live holder (`--take-over`). */
  force: boolean;
  node?: string;
  now?: () => number;
}

export interface OwnerStatus {
  lease: LeaseStatus;
  runId: string;
  /** Sequence of the latest commit record known (read at prefetch or written since). */
  lastRecord: number | null;
}

export class WorkdirOwner {
  readonly runId = randomBytes(8).toString("hex");
  readonly lease: WorkdirLease;
  /** This node's name, in the lease and in every record it writes. */
  private readonly node: string;
  private timer: Timer | undefined;
  private prev: CommitRecord | null = null;
  /** Keys the prefetch could not read: carried in every record this run writes. */
  private unreadable: { key: string; etag: string }[] = [];
  private renewing: Promise<unknown> | undefined;
  /** Fences of uploads running now: fired at once when a renewal finds the lease lost. */
  private readonly fences = new Set<() => void>();

  constructor(private readonly o: WorkdirOwnerOptions) {
    this.node = o.node ?? hostname();
    this.lease = new WorkdirLease({
      store: o.store, prefix: o.prefix, node: this.node, cacheDir: o.localDir, pid: process.pid,
      bootId: o.bootId, runId: this.runId, leaseMs: o.leaseMs, ...(o.now ? { now: o.now } : {}),
    });
  }

  status(): OwnerStatus {
    return { lease: this.lease.status(), runId: this.runId, lastRecord: this.prev?.seq ?? null };
  }

  /** Takes the lease (or throws LeaseHeldError naming the holder), checks conditional writes, starts renewing. */
  async claim(signal?: AbortSignal): Promise<void> {
    const where = `s3://${this.o.store.bucket}/${this.o.prefix}`;
    let got: Awaited<ReturnType<WorkdirLease["acquire"]>>;
    try {
      got = await this.lease.acquire({ force: this.o.force, signal });
    } catch (err) {
      if (err instanceof LeaseHeldError) throw err;
      throw new Error(`cannot take the workdir lease of ${where}: ${errMsg(err)}`, { cause: err });
    }
    const { how, previous } = got;
    const now = (this.o.now ?? Date.now)();
    if (how === "took-over-expired" && previous) this.o.log.warn(`workdir lease of ${where}: taking over from ${describeHolder(previous, now)}; that node stopped renewing it`);
    else if (how === "took-over-forced" && previous) this.o.log.warn(`workdir lease of ${where}: TAKEN OVER (--take-over) from ${describeHolder(previous, now)}`);
    else if (how === "took-over-forced") this.o.log.warn(`workdir lease of ${where}: unreadable lease object overwritten (--take-over)`);
    else this.o.log.info(`workdir lease of ${where}: ${how} (run ${this.runId}, renewed every ${Math.round(this.o.leaseMs / 3000)} s)`);
    const honoured = await this.lease.probeConditionalWrites(signal);
    if (!honoured) {
      this.o.log.warn(
        `the S3 endpoint IGNORES conditional writes (If-None-Match/If-Match): the workdir lease of ${where} is advisory only. ` +
          `A node started while this one runs is still refused, but two nodes started at the same moment can both win. ` +
          `Run one workdir prefix per node.`,
      );
    }
    this.save();
    this.timer = setInterval(() => void this.renewNow(), Math.max(1000, Math.floor(this.o.leaseMs / 3)));
    this.timer.unref?.();
  }

  private renewNow(): Promise<unknown> {
    this.renewing ??= this.lease
      .renew()
      .then((ok) => {
        if (!ok && this.lease.status().state === "lost") {
          this.o.log.error(`workdir lease of s3://${this.o.store.bucket}/${this.o.prefix} LOST: ${this.lease.status().lastError}. Uploads of this workdir are refused from now on`);
          clearInterval(this.timer);
          for (const fire of this.fences) fire();
        }
      })
      .catch((err) => {
        const st = this.lease.status();
        const fenced = this.lease.fenceReason() !== null;
        this.o.log[fenced ? "error" : "warn"](
          `workdir lease renewal failed (${st.renewFailures} in a row${fenced ? "; this node no longer writes to the workdir: another node may take it" : `; ${Math.round(this.lease.fenceLeftMs() / 1000)} s of the lease left`}): ${errMsg(err)}`,
        );
      })
      .finally(() => {
        this.renewing = undefined;
        this.save();
      });
    return this.renewing;
  }

  /** Records the lease state in the index, where `bucketfs status` reads it. */
  private save(): void {
    this.o.journal.saveLease(this.status());
  }

  /** The latest record prefetch read (the base of the next one), and the keys it could not read. */
  adoptRecord(rec: CommitRecord | null, unreadable: { key: string; etag: string }[] = []): void {
    if (rec !== null && (this.prev === null || rec.seq > this.prev.seq)) this.prev = rec;
    this.unreadable = unreadable;
  }

  /**
   * Throws unless the lease is still ours, renewing it first so an upload starts with a full
   * lease period ahead (sharing a renewal the timer may have running). A transient renewal
   * failure is tolerated while the fence still lets this node write. With `renewWhenFenced`
   * false (a sync), a fence that is down refuses at once instead of waiting out a renewal.
   */
  async beforeUpload(signal?: AbortSignal, opts: { renewWhenFenced?: boolean } = {}): Promise<void> {
    const where = `s3://${this.o.store.bucket}/${this.o.prefix}`;
    const fencedNow = this.lease.fenceReason();
    if (this.lease.status().state === "held" && fencedNow !== null && opts.renewWhenFenced === false) {
      throw new Error(`${fencedNow}; not uploading, the files stay in the cache`);
    }
    if (this.lease.status().state === "held") {
      try {
        await this.lease.renew(signal);
      } catch (err) {
        const fenced = this.lease.fenceReason();
        if (fenced !== null) throw new Error(`${fenced}; renewing it failed (${errMsg(err)}); not uploading, the files stay in the cache`);
        this.o.log.warn(`workdir lease renewal before upload failed, ${Math.round(this.lease.fenceLeftMs() / 1000)} s of the lease left: ${errMsg(err)}`);
      }
    }
    this.save();
    const st = this.lease.status();
    if (st.state !== "held") {
      throw new Error(`workdir lease of ${where} is ${st.state}${st.takenBy ? ` (held by ${st.takenBy})` : ""}; not uploading, the files stay in the cache`);
    }
  }

  /**
   * The fence of one upload: its signal fires (with the reason) when this node may no longer
   * write, by the lease's monotonic deadline or because a renewal found the lease lost. The
   * renew timer keeps moving the deadline while renewals succeed. `dispose` when the upload ends.
   */
  fence(): UploadFence & { dispose(): void } {
    const ctl = new AbortController();
    let timer: Timer | undefined;
    const reason = () => this.lease.fenceReason();
    const fire = (): void => {
      clearTimeout(timer);
      const why = reason();
      if (why === null) {
        timer = setTimeout(fire, Math.max(1, this.lease.fenceLeftMs()));
        return;
      }
      if (ctl.signal.aborted) return;
      this.o.log.error(`${why}: the upload stops now; files not uploaded stay pending, no commit record is written`);
      ctl.abort(new Error(why));
      this.fences.delete(fire);
    };
    this.fences.add(fire);
    fire();
    return {
      signal: ctl.signal,
      reason: () => (ctl.signal.aborted ? errMsg(ctl.signal.reason) : reason()),
      dispose: () => {
        clearTimeout(timer);
        this.fences.delete(fire);
      },
    };
  }

  /** The upload's commit hook: writes the next record unless it would say what the last one says. */
  async commit(walk: WorkdirVisit, kind: CommitRecord["kind"], signal?: AbortSignal): Promise<string | null> {
    const content = recordFromWorkdir(walk, this.o.journal, this.o.lastUploadFile, this.o.log);
    const next = buildRecord({ prev: this.prev, prefix: this.o.prefix, runId: this.runId, node: this.node, kind, ...content, unreadable: this.unreadable });
    if (this.prev !== null && sameContent(this.prev, next)) return null;
    const fenced = this.lease.fenceReason();
    if (fenced !== null) throw new Error(fenced);
    const key = await writeRecord(this.o.store, next, signal);
    this.prev = next;
    this.save();
    this.o.log.info(`commit record ${next.seq} written: ${next.files.length} files, ${next.symlinks.length} symlinks, ${next.dirs.length} empty directories, ${next.deleted.length} deleted`);
    return key;
  }

  /** Stops renewing; releases the lease only when `clean` (everything uploaded). */
  async close(clean: boolean): Promise<void> {
    clearInterval(this.timer);
    await this.renewing;
    await this.lease.renewing?.catch(() => undefined);
    try {
      await this.closeLease(clean);
    } finally {
      this.save();
    }
  }

  private async closeLease(clean: boolean): Promise<void> {
    if (!clean) {
      if (this.lease.held) this.o.log.warn(`keeping the workdir lease of s3://${this.o.store.bucket}/${this.o.prefix} (not everything was uploaded); it expires unless this node restarts`);
      return;
    }
    try {
      if (await this.lease.release()) this.o.log.info(`workdir lease of s3://${this.o.store.bucket}/${this.o.prefix} released`);
    } catch (err) {
      this.o.log.warn(`could not release the workdir lease (it expires by itself): ${errMsg(err)}`);
    }
  }
}

/**
 * Whether two records say the same (files, symlinks, dirs, deleted, unreadable, names), entry by
 * entry as JSON: what comparing the lists' JSON says, without two strings of a 100,000-file record.
 */
function sameContent(a: CommitRecord, b: CommitRecord): boolean {
  const same = (x: readonly unknown[], y: readonly unknown[]): boolean => {
    if (x.length !== y.length) return false;
    for (let i = 0; i < x.length; i++) if (JSON.stringify(x[i]) !== JSON.stringify(y[i])) return false;
    return true;
  };
  return same(a.files, b.files) && same(a.symlinks, b.symlinks) && same(a.dirs, b.dirs) && same(a.deleted, b.deleted) &&
    same(a.unreadable ?? [], b.unreadable ?? []) && same(a.names ?? [], b.names ?? []);
}
