/**
 * One FUSE mount served from the JS thread: libfuse's low-level session used as a protocol
 * codec, with JS owning the read loop (design and measurements: shared/research/ffi-spike.md).
 *
 * Is: mount, the /dev/fuse read loop (N outstanding async reads, each fed to
 * `fuse_session_process_buf` on the JS thread), and the unmount sequence: stop re-arming,
 * lazy detach, wait for ENODEV, abort the connection through fusectl if it stays busy,
 * then free the session. Is not: op semantics (adapter.ts / fs/) or signal handling.
 */
import { existsSync, read as fsRead, writeFileSync } from "node:fs";
import { ptr } from "bun:ffi";
import { fuse } from "./ffi.ts";
import { cstrArray, lastErrno, libc, MNT_DETACH, strerror } from "../sys/libc.ts";
import { buildOps, type OpsTable } from "./adapter.ts";
import { FUSE_ARGS, FUSE_BUF, OPS_SIZE, view } from "./structs.ts";
import type { FsOps } from "../fs/types.ts";
import { mountAt } from "../util/mountinfo.ts";
import type { Logger } from "../util/log.ts";

const FUSECTL = "/sys/fs/fuse/connections";
const FUSECTL_ABORT = (minor: number) => `${FUSECTL}/${minor}/abort`;

/** Each /dev/fuse read needs room for the largest request: 1 MiB of data plus headers. */
const READ_BUF_SIZE = 1024 * 1024 + 4096;

export interface SessionOptions {
  mountpoint: string;
  /** Shown in /proc/mounts as the source, e.g. `bucketfs:nf-data`. */
  fsname: string;
  readOnly: boolean;
  allowOther: boolean;
  /** Outstanding /dev/fuse reads (each holds one threadpool thread while idle). */
  readers: number;
  maxBackground: number;
  /** Kernel readahead for this mount in KiB (bigger READ requests); 0 leaves the default. */
  readAheadKb: number;
  debug: boolean;
  log: Logger;
}

interface Slot {
  buf: Buffer;
  fb: Uint8Array;
}

export class FuseSession {
  readonly mountpoint: string;
  /** Resolves when the kernel side is gone (unmounted, externally or by us). */
  readonly done: Promise<void>;
  private se: ReturnType<ReturnType<typeof fuse>["fuse_session_new"]>;
  private fd: number;
  private ops: OpsTable;
  private stopping = false;
  private pending = 0;
  private ended = false;
  private resolveDone!: () => void;
  private keep: unknown[] = [];
  private log: Logger;
  private devMinor: number | undefined;

  private constructor(fs: FsOps, private opts: SessionOptions) {
    this.mountpoint = opts.mountpoint;
    this.log = opts.log;
    this.done = new Promise((r) => (this.resolveDone = r));
    const lib = fuse();
    this.ops = buildOps(fs, { maxBackground: opts.maxBackground, log: opts.log });
    const mountOpts = [`fsname=${opts.fsname}`, "subtype=bucketfs", "default_permissions"];
    if (opts.readOnly) mountOpts.push("ro");
    if (opts.allowOther) mountOpts.push("allow_other");
    const argv = ["bucketfs", "-o", mountOpts.join(",")];
    if (opts.debug) argv.push("-d");
    const { array, keep } = cstrArray(argv);
    const args = new Uint8Array(FUSE_ARGS.size);
    const av = view(args);
    av.setInt32(FUSE_ARGS.argc, argv.length, true);
    av.setBigUint64(FUSE_ARGS.argv, BigInt(ptr(array)), true);
    this.keep.push(array, keep, args, this.ops);
    this.se = lib.fuse_session_new(args, this.ops.table, OPS_SIZE, null);
    if (!this.se) {
      this.ops.close();
      throw new Error(`fuse_session_new failed for ${opts.mountpoint} (bad mount options?)`);
    }
    const rc = lib.fuse_session_mount(this.se, opts.mountpoint);
    if (rc !== 0) {
      lib.fuse_session_destroy(this.se);
      this.ops.close();
      throw new Error(`cannot mount FUSE at ${opts.mountpoint} (fuse_session_mount returned ${rc}; see the lines above)`);
    }
    this.fd = Number(lib.fuse_session_fd(this.se));
  }

  /** Mount `fs` at opts.mountpoint and start serving. Throws when the mount fails. */
  static mount(fs: FsOps, opts: SessionOptions): FuseSession {
    const s = new FuseSession(fs, opts);
    const entry = mountAt(opts.mountpoint);
    if (entry) {
      s.devMinor = Number(entry.dev.split(":")[1]);
      if (opts.readAheadKb > 0) {
        try {
          writeFileSync(`/sys/class/bdi/${entry.dev}/read_ahead_kb`, String(opts.readAheadKb));
        } catch (err) {
          opts.log.debug(`cannot set read_ahead_kb for ${entry.dev}: ${(err as Error).message}`);
        }
      }
    }
    for (let i = 0; i < Math.max(1, opts.readers); i++) {
      const fb = new Uint8Array(FUSE_BUF.size);
      s.arm({ buf: Buffer.allocUnsafe(READ_BUF_SIZE), fb });
    }
    return s;
  }

  private arm(slot: Slot): void {
    if (this.stopping || this.ended) return;
    this.pending++;
    fsRead(this.fd, slot.buf, 0, slot.buf.length, null, (err, n) => {
      this.pending--;
      if (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // ENOENT: the request was interrupted before we read it. EINTR/EAGAIN: try again.
        if (code === "ENOENT" || code === "EINTR" || code === "EAGAIN") return this.arm(slot);
        if (code !== "ENODEV" && code !== "EBADF") this.log.error(`reading /dev/fuse: ${err.message}`);
        return this.end();
      }
      if (n > 0) {
        const v = view(slot.fb);
        v.setBigUint64(FUSE_BUF.fsize, BigInt(n), true);
        v.setInt32(FUSE_BUF.flags, 0, true);
        v.setBigUint64(FUSE_BUF.mem, BigInt(ptr(slot.buf)), true);
        try {
          fuse().fuse_session_process_buf(this.se, slot.fb);
        } catch (e) {
          // The adapter replies to every request before anything can throw here; log and go on.
          this.log.error(`processing a FUSE request: ${(e as Error).message}`);
        }
      }
      this.arm(slot);
    });
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.resolveDone();
  }

  /**
   * Unmount and free the session. Waits up to `busyTimeoutMs` for the kernel connection to
   * drain after a lazy detach, then aborts it (open files elsewhere get ENOTCONN).
   */
  async unmount(busyTimeoutMs = 5000): Promise<void> {
    if (!this.se) return;
    this.stopping = true;
    if (!this.ended) {
      if (libc().umount2(this.mountpoint, MNT_DETACH) !== 0) {
        const errno = lastErrno();
        // EINVAL: not mounted any more (someone else unmounted it).
        if (errno !== 22) this.log.warn(`umount ${this.mountpoint}: ${strerror(errno)}`);
      }
      const t = setTimeout(() => {
        if (this.ended) return;
        this.log.warn(`${this.mountpoint} still busy after ${busyTimeoutMs} ms; aborting the FUSE connection`);
        this.abortConnection();
      }, busyTimeoutMs);
      await Promise.race([this.done, Bun.sleep(busyTimeoutMs + 3000)]);
      clearTimeout(t);
    }
    const lib = fuse();
    // The other readers see ENODEV right after the first one; give them a moment to return
    // before the fd is closed under them.
    for (let i = 0; i < 50 && this.pending > 0; i++) await Bun.sleep(10);
    if (this.pending > 0) this.abortConnection();
    lib.fuse_session_unmount(this.se);
    lib.fuse_session_destroy(this.se);
    this.se = null;
    this.ops.close();
    this.keep = [];
    this.end();
  }

  private abortConnection(): void {
    if (this.devMinor === undefined) return;
    // The abort file lives in fusectl, which is not mounted everywhere (containers, minimal systems).
    if (!existsSync(FUSECTL_ABORT(this.devMinor)) && !mountAt(FUSECTL)) {
      if (libc().mount("fusectl", FUSECTL, "fusectl", 0, null) !== 0) {
        this.log.debug(`cannot mount fusectl at ${FUSECTL}: ${strerror(lastErrno())}`);
      }
    }
    try {
      writeFileSync(FUSECTL_ABORT(this.devMinor), "1");
    } catch (err) {
      this.log.warn(`cannot abort FUSE connection ${this.devMinor}: ${(err as Error).message}`);
    }
  }
}
