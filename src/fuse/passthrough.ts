/**
 * FUSE passthrough for complete cached files: the kernel reads the cache file itself, so a
 * cached read costs the daemon nothing (measured in research/passthrough-spike.md).
 *
 * Is: the INIT decision (does the kernel offer passthrough, can this libfuse take it: its own
 * API in 3.17+, or the patch of the INIT reply that accepts it on 3.14-3.16, which have no API),
 * and the per-inode bookkeeping of backing ids: one backing
 * file per inode shared by all its passthrough opens, closed when the last one is released;
 * never a passthrough open while the inode has page-cache opens (the kernel refuses the mix
 * with EIO), and direct I/O for an open that cannot share the inode's backing file. When the
 * kernel or the privileges refuse a backing file, passthrough is switched off for the mount
 * with one log line and opens go through the daemon as before. Is not: the FFI (devfuse.ts)
 * or which files are eligible (the filesystem says so per open).
 */
import { FOPEN, INIT_FLAG, INIT_FLAG2, INIT_IN, INIT_OUT, PASSTHROUGH_MINOR, type PassthroughRoute } from "./structs.ts";
import type { Logger } from "../util/log.ts";

export interface InitOffer {
  minor: number;
  flags: number;
  flags2: number;
}

/** Read the kernel's INIT request body (after the in header). */
export function readInitIn(v: DataView, base: number): InitOffer {
  const flags = v.getUint32(base + INIT_IN.flags, true);
  return {
    minor: v.getUint32(base + INIT_IN.minor, true),
    flags,
    flags2: flags & INIT_FLAG.initExt ? v.getUint32(base + INIT_IN.flags2, true) : 0,
  };
}

/** The loaded libfuse, as far as passthrough cares. */
export interface LibfusePassthrough {
  pkgversion: string;
  route: PassthroughRoute;
}

/** Why passthrough will not be used on this connection, or undefined when it can be. */
export function passthroughRefusal(offer: InitOffer, enabled: boolean, lib?: LibfusePassthrough): string | undefined {
  if (!enabled) return "switched off (passthrough = no)";
  if (offer.minor < PASSTHROUGH_MINOR) return `the kernel speaks FUSE 7.${offer.minor}; passthrough needs 7.${PASSTHROUGH_MINOR} (Linux 6.9+)`;
  if (!(offer.flags & INIT_FLAG.initExt) || !(offer.flags2 & INIT_FLAG2.passthrough)) {
    return "the kernel does not offer it (built without CONFIG_FUSE_PASSTHROUGH?)";
  }
  if (lib?.route === "none") {
    return `libfuse ${lib.pkgversion} cannot pass it on (needs libfuse 3.14+: fuse_session_custom_io, or 3.17's passthrough API)`;
  }
  return undefined;
}

/**
 * Accept passthrough in an INIT reply libfuse built (`len` bytes of struct fuse_init_out):
 * the passthrough bit, the extended flags, no writeback cache (the kernel refuses passthrough
 * with it) and a stack depth of 1 (the cache file's filesystem must not itself be stacked).
 * Returns false when the reply is too short to carry the fields.
 */
export function acceptPassthrough(v: DataView, base: number, len: number): boolean {
  if (len < INIT_OUT.maxStackDepth + 4) return false;
  const flags = (v.getUint32(base + INIT_OUT.flags, true) | INIT_FLAG.initExt) & ~INIT_FLAG.writebackCache;
  v.setUint32(base + INIT_OUT.flags, flags >>> 0, true);
  v.setUint32(base + INIT_OUT.flags2, (v.getUint32(base + INIT_OUT.flags2, true) | INIT_FLAG2.passthrough) >>> 0, true);
  v.setUint32(base + INIT_OUT.maxStackDepth, 1, true);
  return true;
}

/** What the filesystem offers for one open: a complete cached file that stays as it is while open. */
export interface Backing {
  fd: number;
  /** Identifies the content (ETag and cache generation); opens of one inode share only equal versions. */
  version: string;
}

/** How one open is answered. */
export type OpenPlan =
  | { mode: "passthrough"; backingId: number }
  | { mode: "cached" } // through the daemon, kernel page cache as the filesystem decides
  | { mode: "direct" }; // through the daemon with FOPEN_DIRECT_IO (inode held by another backing file)

/** The request an open or release is answering (libfuse's passthrough API takes it). */
export type ReqRef = unknown;

export interface BackingIo {
  open(fd: number, req?: ReqRef): number; // id or -errno
  close(id: number, req?: ReqRef): number; // 0 or -errno
}

/** errnos that mean "this kernel or these privileges never allow it": stop trying. */
const FATAL = new Map<number, string>([
  [1, "EPERM: the daemon lacks CAP_SYS_ADMIN, or the kernel did not enable passthrough"],
  [13, "EACCES"],
  [22, "EINVAL"],
  [25, "ENOTTY: the kernel has no backing-file ioctls"],
  [40, "ELOOP: the cache directory is on a stacked filesystem (overlayfs, FUSE)"],
  [95, "EOPNOTSUPP"],
]);

export interface PassthroughCounters {
  state: "on" | "off" | "pending";
  reason: string | undefined;
  opens: number;
  cachedOpens: number;
  directOpens: number;
  backingOpen: number;
  backingFailures: number;
}

interface InodeBacking {
  id: number;
  version: string;
  refs: number;
}

export class PassthroughTable {
  private byIno = new Map<number, InodeBacking>();
  /** Page-cache opens per inode (a passthrough open would be refused while any is held). */
  private cachedByIno = new Map<number, number>();
  private handles = new Map<number, { ino: number; mode: OpenPlan["mode"] }>();
  readonly counters: PassthroughCounters = {
    state: "pending", reason: undefined, opens: 0, cachedOpens: 0, directOpens: 0, backingOpen: 0, backingFailures: 0,
  };

  constructor(private io: BackingIo, private log: Logger) {}

  get active(): boolean {
    return this.counters.state === "on";
  }

  /** Record the INIT outcome: `reason` undefined means the kernel accepted passthrough. */
  setState(reason: string | undefined): void {
    this.counters.state = reason === undefined ? "on" : "off";
    this.counters.reason = reason;
  }

  /** Decide how to answer an open of `ino`; `backing` is set when the file may be passed through. */
  plan(ino: number, backing: Backing | undefined, req?: ReqRef): OpenPlan {
    const held = this.byIno.get(ino);
    if (held) {
      // The inode is in passthrough mode: share its backing file, or stay out of the page cache.
      if (backing && backing.version === held.version) return { mode: "passthrough", backingId: held.id };
      return { mode: "direct" };
    }
    if (!backing || !this.active || (this.cachedByIno.get(ino) ?? 0) > 0) return { mode: "cached" };
    const id = this.io.open(backing.fd, req);
    if (id < 0) {
      this.counters.backingFailures++;
      const fatal = FATAL.get(-id);
      if (fatal !== undefined) {
        this.counters.state = "off";
        this.counters.reason = `backing file refused (${fatal})`;
        this.log.warn(`FUSE passthrough unavailable, cached reads go through the daemon: ${this.counters.reason}`);
      } else {
        this.log.debug(`backing file for inode ${ino} refused (errno ${-id}); this open goes through the daemon`);
      }
      return { mode: "cached" };
    }
    this.counters.backingOpen++;
    this.byIno.set(ino, { id, version: backing.version, refs: 0 });
    return { mode: "passthrough", backingId: id };
  }

  /** The open reply for `fh` reached the kernel (or, with ok false, did not). */
  opened(fh: number, ino: number, plan: OpenPlan, ok: boolean, req?: ReqRef): void {
    if (ok) {
      this.handles.set(fh, { ino, mode: plan.mode });
      if (plan.mode === "passthrough") {
        this.byIno.get(ino)!.refs++;
        this.counters.opens++;
      } else if (plan.mode === "cached") {
        this.cachedByIno.set(ino, (this.cachedByIno.get(ino) ?? 0) + 1);
        this.counters.cachedOpens++;
      } else this.counters.directOpens++;
    } else if (plan.mode === "passthrough") {
      this.unref(ino, false, req);
    }
  }

  /** Open-reply flags for a plan (keep_cache never goes with passthrough: the kernel fails the open). */
  static openFlags(plan: OpenPlan): number {
    return plan.mode === "passthrough" ? FOPEN.passthrough : plan.mode === "direct" ? FOPEN.directIo : 0;
  }

  released(fh: number, req?: ReqRef): void {
    const h = this.handles.get(fh);
    if (!h) return;
    this.handles.delete(fh);
    if (h.mode === "passthrough") this.unref(h.ino, true, req);
    else if (h.mode === "cached") {
      const n = (this.cachedByIno.get(h.ino) ?? 1) - 1;
      if (n > 0) this.cachedByIno.set(h.ino, n);
      else this.cachedByIno.delete(h.ino);
    }
  }

  private unref(ino: number, counted = false, req?: ReqRef): void {
    const b = this.byIno.get(ino);
    if (!b) return;
    if (counted) b.refs--;
    if (b.refs > 0) return;
    this.byIno.delete(ino);
    const rc = this.io.close(b.id, req);
    if (rc < 0) this.log.debug(`closing backing id ${b.id}: errno ${-rc}`);
  }

  /** Backing ids still open (the kernel frees them with the connection anyway). */
  get openIds(): number {
    return this.byIno.size;
  }

  /**
   * Release every backing id (before the /dev/fuse fd is closed). Without a request (libfuse's
   * API needs one) the ids are left to the kernel, which frees them with the connection.
   */
  closeAll(): void {
    for (const b of this.byIno.values()) this.io.close(b.id);
    this.byIno.clear();
    this.cachedByIno.clear();
    this.handles.clear();
  }
}
