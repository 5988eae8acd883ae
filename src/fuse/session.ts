/**
 * One FUSE mount served from the JS thread: libfuse's low-level session used as a protocol
 * codec, with JS owning the read loop (design and measurements: shared/research/ffi-spike.md).
 *
 * Is: mount, the /dev/fuse read loop (N outstanding async reads, each fed to
 * `fuse_session_process_buf` on the JS thread, whichever libfuse 3.3+ is loaded), per-opcode
 * request counters, the INIT hand-shake extras (FUSE passthrough through libfuse's own API on
 * 3.17+ or by accepting it in the INIT reply through libfuse's custom I/O on 3.14-3.16, and
 * the mount's readahead window, which sets the READ size), and the unmount sequence: stop
 * re-arming, lazy detach, wait for ENODEV, abort the connection through fusectl if it stays
 * busy, then free the session. Is not: op semantics (adapter.ts / fs/) or signal handling.
 */
import { existsSync, read as fsRead, writeFileSync } from "node:fs";
import { FFIType, JSCallback, ptr, read as readMem, toArrayBuffer, type Pointer } from "bun:ffi";
import { fuse, libfuse, type Libfuse } from "./ffi.ts";
import { cstrArray, lastErrno, libc, MNT_DETACH, strerror } from "../sys/libc.ts";
import { buildOps, type OpsTable } from "./adapter.ts";
import { FUSE_ARGS, FUSE_BUF, IN_HEADER, OPCODE, OUT_HEADER, READ_IN, fuseAbi, view, type FuseAbi, type PassthroughRoute } from "./structs.ts";
import { backingClose, backingOpen, dev, errno, nativeIo } from "./devfuse.ts";
import { passthroughRefusal, acceptPassthrough, readInitIn, PassthroughTable, type BackingIo, type PassthroughCounters } from "./passthrough.ts";
import type { FsOps } from "../fs/types.ts";
import { mountAt } from "../util/mountinfo.ts";
import type { Logger } from "../util/log.ts";

const FUSECTL = "/sys/fs/fuse/connections";
const FUSECTL_ABORT = (minor: number) => `${FUSECTL}/${minor}/abort`;

/**
 * The largest READ (and WRITE) the kernel sends: 252 pages (1008 KiB), not 256. libfuse 3.14
 * splices an fd-backed reply only when header and data fit its pipe with three pages to spare
 * (`pagesize * (iov_count + buf->count + 1) + len`), and a pipe cannot grow past
 * /proc/sys/fs/pipe-max-size (1 MiB by default) without CAP_SYS_RESOURCE, which containers and
 * this machine's root lack. At 256 pages every cached READ fell back to a pread into a fresh
 * malloc'ed buffer and a writev: a page fault per 4 KiB, about a quarter of the daemon's CPU in
 * a cold read (perf, 2026-11-30). At 252 pages the reply is spliced: no copy in the daemon.
 */
export const MAX_READ_BYTES = 252 * 4096;

/** Each /dev/fuse read needs room for the largest request plus headers. */
const READ_BUF_SIZE = MAX_READ_BYTES + 4096;

export interface SessionOptions {
  mountpoint: string;
  /** Shown in /proc/mounts as the source, e.g. `bucketfs:nf-data`. */
  fsname: string;
  readOnly: boolean;
  allowOther: boolean;
  /** Outstanding /dev/fuse reads (each holds one threadpool thread while idle). */
  readers: number;
  maxBackground: number;
  /**
   * Kernel readahead for this mount in KiB; a buffered READ is min(this, max_pages) long, so
   * MAX_READ_BYTES / 1024 gives the largest READs. 0 leaves the default (128). Applied after
   * INIT, which resets it.
   */
  readAheadKb: number;
  /** Let the kernel read complete cached files itself (FUSE passthrough) when it offers to. */
  passthrough: boolean;
  debug: boolean;
  log: Logger;
}

interface Slot {
  buf: Buffer;
  fb: Uint8Array;
}

const OPCODE_NAME = new Map<number, string>(Object.entries(OPCODE).map(([k, v]) => [v, k]));

/** What the session counted since the mount (for `bucketfs status` and the tests). */
export interface FuseCounters {
  /** Requests read from /dev/fuse, by opcode name. */
  requests: Record<string, number>;
  /** READ requests by requested size in bytes. */
  readSizes: Record<string, number>;
  maxReadSize: number;
  /** The readahead window the mount got (KiB), when it was set. */
  readAheadKb: number | undefined;
  passthrough: PassthroughCounters & { backingIdsOpen: number };
  /** The libfuse serving the mount: fuse_pkgversion(), what was loaded, how passthrough is answered. */
  libfuse: { version: string; path: string; passthroughRoute: PassthroughRoute };
}

/** How passthrough is answered with this library: its generation's route, when its symbols loaded. */
export function passthroughRoute(lf: Libfuse, abi: FuseAbi): PassthroughRoute {
  if (abi.passthrough === "api") return lf.v317 ? "api" : "none";
  if (abi.passthrough === "custom-io") return lf.customIo ? "custom-io" : "none";
  return "none";
}

let libfuseLogged = false;

/** One line, once per process: which libfuse and which of its features are in use. */
function logLibfuse(log: Logger, lf: Libfuse, abi: FuseAbi, route: PassthroughRoute): void {
  if (libfuseLogged) return;
  libfuseLogged = true;
  const features = [
    `${abi.opsCount} ops`,
    abi.sessionNewVersioned ? "fuse_session_new_versioned" : "fuse_session_new",
    abi.wantExt ? "want_ext" : "want",
    route === "api" ? "passthrough via fuse_passthrough_open" : route === "custom-io" ? "passthrough via fuse_session_custom_io" : "no passthrough support",
  ];
  log.info(`libfuse ${lf.pkgversion} (${lf.path}): ${features.join(", ")}`);
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
  private bdi: string | undefined;
  private readonly pt: PassthroughTable;
  private byOpcode = new Map<number, number>();
  private readSizes = new Map<number, number>();
  private maxReadSize = 0;
  private countVersion = 0;
  private readAheadKb: number | undefined;
  private initDone = false;
  /** unique of the INIT request while its reply is to be patched. */
  private initUnique: bigint | undefined;
  private initPatched = false;
  private initHook: JSCallback | undefined;
  private readonly lf: Libfuse;
  private readonly abi: FuseAbi;
  private readonly route: PassthroughRoute;
  /** Route "api": the INIT request offered passthrough and the config allows it. */
  private ptWanted = false;

  private constructor(fs: FsOps, private opts: SessionOptions) {
    this.mountpoint = opts.mountpoint;
    this.log = opts.log;
    this.done = new Promise((r) => (this.resolveDone = r));
    const lib = fuse();
    this.lf = libfuse();
    this.abi = fuseAbi(this.lf.version);
    this.route = passthroughRoute(this.lf, this.abi);
    logLibfuse(opts.log, this.lf, this.abi, this.route);
    this.pt = new PassthroughTable(this.backingIo(), opts.log);
    this.ops = buildOps(fs, {
      maxBackground: opts.maxBackground, maxWrite: MAX_READ_BYTES, passthrough: this.pt, abi: this.abi, log: opts.log,
      passthroughAtInit: {
        wanted: () => this.ptWanted,
        result: (granted) => {
          this.ptWanted = false;
          this.pt.setState(granted ? undefined : `libfuse ${this.lf.pkgversion} did not offer FUSE_CAP_PASSTHROUGH`);
        },
      },
    });
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
    const opsSize = this.abi.opsCount * 8;
    if (this.abi.sessionNewVersioned && this.lf.v317) {
      // What the 3.17+ header's fuse_session_new() macro does: pass the version whose layouts we use.
      const v = new Uint32Array([this.lf.version.major, this.lf.version.minor, this.lf.version.hotfix, 0]);
      this.keep.push(v);
      this.se = this.lf.v317.fuse_session_new_versioned(args, this.ops.table, opsSize, v, null);
    } else {
      this.se = lib.fuse_session_new(args, this.ops.table, opsSize, null);
    }
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

  /**
   * Backing files through libfuse's API (3.17+: fuse_passthrough_open returns 0 and sets errno
   * on failure; without a request there is nothing to call, and the kernel frees the ids with
   * the connection), else through the /dev/fuse ioctls ourselves.
   */
  private backingIo(): BackingIo {
    const api = this.route === "api" ? this.lf.v317 : undefined;
    if (api) {
      return {
        open: (fd, req) => {
          const id = api.fuse_passthrough_open(req as Pointer, fd);
          return id > 0 ? id : -(errno() || 5);
        },
        close: (id, req) => (req === undefined ? 0 : api.fuse_passthrough_close(req as Pointer, id) < 0 ? -errno() : 0),
      };
    }
    return { open: (fd) => backingOpen(this.fd, fd), close: (id) => backingClose(this.fd, id) };
  }

  /** Mount `fs` at opts.mountpoint and start serving. Throws when the mount fails. */
  static mount(fs: FsOps, opts: SessionOptions): FuseSession {
    const s = new FuseSession(fs, opts);
    const entry = mountAt(opts.mountpoint);
    if (entry) {
      s.devMinor = Number(entry.dev.split(":")[1]);
      s.bdi = entry.dev;
    }
    for (let i = 0; i < Math.max(1, opts.readers); i++) {
      const fb = new Uint8Array(FUSE_BUF.alloc);
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
        const opcode = n >= IN_HEADER.size ? slot.buf.readUInt32LE(IN_HEADER.opcode) : 0;
        this.count(opcode, slot.buf, n);
        if (opcode === OPCODE.INIT && !this.initDone) this.beforeInit(slot.buf);
        try {
          fuse().fuse_session_process_buf(this.se, slot.fb);
        } catch (e) {
          // The adapter replies to every request before anything can throw here; log and go on.
          this.log.error(`processing a FUSE request: ${(e as Error).message}`);
        }
        if (opcode === OPCODE.INIT && !this.initDone) this.afterInit();
      }
      this.arm(slot);
    });
  }

  private count(opcode: number, buf: Buffer, n: number): void {
    this.countVersion++;
    this.byOpcode.set(opcode, (this.byOpcode.get(opcode) ?? 0) + 1);
    if (opcode === OPCODE.READ && n >= IN_HEADER.size + READ_IN.size + 4) {
      const size = buf.readUInt32LE(IN_HEADER.size + READ_IN.size);
      this.readSizes.set(size, (this.readSizes.get(size) ?? 0) + 1);
      if (size > this.maxReadSize) this.maxReadSize = size;
    }
  }

  /**
   * The kernel's INIT request, before libfuse answers it. When the kernel offers passthrough
   * (and the switch allows it): on 3.17+ the init callback asks libfuse for it; on 3.14-3.16,
   * which have no API for it, libfuse's replies go through a JS writev for this one reply, so
   * the INIT reply can be patched to accept it.
   */
  private beforeInit(buf: Buffer): void {
    const offer = readInitIn(view(buf), IN_HEADER.size);
    const refusal = passthroughRefusal(offer, this.opts.passthrough, { pkgversion: this.lf.pkgversion, route: this.route });
    if (refusal !== undefined) {
      this.pt.setState(refusal);
      return;
    }
    if (this.route === "api") {
      this.ptWanted = true;
      return;
    }
    this.initUnique = buf.readBigUInt64LE(IN_HEADER.unique);
    const hook = new JSCallback(
      (fd: number, iov: Pointer, count: number): number => {
        if (count >= 2 && this.initUnique !== undefined && readMem.u64(readMem.ptr(iov, 0) as Pointer, OUT_HEADER.unique) === this.initUnique) {
          const body = readMem.ptr(iov, 16) as Pointer;
          const len = Number(readMem.u64(iov, 24));
          this.initPatched = acceptPassthrough(new DataView(toArrayBuffer(body, 0, len)), 0, len);
        }
        return Number(dev().writev(fd, iov, count));
      },
      { args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.ptr], returns: FFIType.i64_fast },
    );
    this.initHook = hook;
    if (!this.setCustomIo(Number(hook.ptr))) this.pt.setState("libfuse refused custom I/O");
  }

  /**
   * struct fuse_custom_io {writev, read, splice_receive, splice_send}: libc's own functions
   * (their signatures match; the extra userdata argument is ignored) or the INIT hook.
   * splice_send is given so libfuse keeps splicing cached file ranges into /dev/fuse.
   */
  private setCustomIo(writev: number): boolean {
    const io = nativeIo();
    const table = new BigUint64Array([BigInt(writev), BigInt(io.read), 0n, BigInt(io.splice)]);
    this.keep.push(table);
    const rc = this.lf.customIo?.fuse_session_custom_io(this.se, table, this.fd) ?? -1;
    if (rc !== 0) this.log.warn(`fuse_session_custom_io failed (${rc})`);
    return rc === 0;
  }

  private afterInit(): void {
    this.initDone = true;
    if (this.initUnique !== undefined) {
      this.initUnique = undefined;
      // Back to libc's writev for every later reply: no JS on the reply path. (libfuse copies
      // the table into a malloc'ed one each call; the first copy, 32 bytes, is not freed.)
      this.setCustomIo(nativeIo().writev);
      this.initHook?.close();
      this.initHook = undefined;
      if (this.pt.counters.state === "pending") {
        this.pt.setState(this.initPatched ? undefined : "the INIT reply could not carry the passthrough flag");
      }
    }
    this.ptWanted = false;
    if (this.pt.counters.state === "pending") this.pt.setState(`libfuse ${this.lf.pkgversion} did not call init`);
    const c = this.pt.counters;
    if (c.state === "on") this.log.info("FUSE passthrough on: complete cached files are read by the kernel directly");
    else this.log.info(`FUSE passthrough off (${c.reason}); cached reads go through the daemon`);
    // INIT sets the mount's readahead to min(its default, our reply), so raise it only now.
    if (this.opts.readAheadKb > 0 && this.bdi !== undefined) {
      try {
        writeFileSync(`/sys/class/bdi/${this.bdi}/read_ahead_kb`, String(this.opts.readAheadKb));
        this.readAheadKb = this.opts.readAheadKb;
      } catch (err) {
        this.log.warn(`cannot set read_ahead_kb for ${this.bdi} (READs stay at 128 KiB): ${(err as Error).message}`);
      }
    }
  }

  /** Changes whenever a request is counted (cheap to poll; counters() builds the full view). */
  get countersVersion(): number {
    const c = this.pt.counters;
    return this.countVersion + c.opens + c.cachedOpens + c.directOpens + c.backingOpen + c.backingFailures + this.pt.openIds * 1e9;
  }

  /** Requests counted since the mount, and the passthrough state. */
  counters(): FuseCounters {
    const requests: Record<string, number> = {};
    for (const [op, n] of this.byOpcode) requests[OPCODE_NAME.get(op) ?? `op${op}`] = n;
    const readSizes: Record<string, number> = {};
    for (const [size, n] of [...this.readSizes].sort((a, b) => a[0] - b[0])) readSizes[String(size)] = n;
    return {
      requests, readSizes, maxReadSize: this.maxReadSize, readAheadKb: this.readAheadKb,
      passthrough: { ...this.pt.counters, backingIdsOpen: this.pt.openIds },
      libfuse: { version: this.lf.pkgversion, path: this.lf.path, passthroughRoute: this.route },
    };
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
    this.pt.closeAll();
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
