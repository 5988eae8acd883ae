/**
 * Turns an `FsOps` implementation into a `struct fuse_lowlevel_ops` table of JSCallbacks.
 *
 * Is: argument decoding (names and file-info copied during the callback, as they point into
 * libfuse's buffers), the reply for each op, and the guarantee that every request gets
 * exactly one reply: a throw or rejected promise becomes the errno from `toErrno` (EIO for
 * unknown errors, logged once). Capabilities are asked for in `want` or, on libfuse 3.17+,
 * `want_ext`. Opens are answered as the PassthroughTable decides (the kernel reads the cache
 * file itself, or READs come here), with libfuse's backing_id on 3.17+ or our own open reply
 * on 3.14-3.16. Write operations reply EROFS:
 * writable data lives in the workdir bind mount, never in FUSE. Is not: the request loop
 * (session.ts) or fs semantics.
 */
import { JSCallback, FFIType, ptr, read, toArrayBuffer, type Pointer } from "bun:ffi";
import { fuse, readCString } from "./ffi.ts";
import {
  CAP, CONN, ENTRY, FI_BIT, FILE_INFO, FORGET_DATA, OPEN_OUT, OPS_ORDER, OPS_SIZE, STAT, STATVFS,
  BUFVEC, FUSE_BUF, FUSE_BUF_FD_SEEK, FUSE_BUF_IS_FD, encodeEntry, encodeStat, encodeStatvfs, view,
  type FuseAbi, type OpName,
} from "./structs.ts";
import type { FsOps, ReadReply } from "../fs/types.ts";
import { PassthroughTable } from "./passthrough.ts";
import { E, isExpected, toErrno } from "../fs/errors.ts";
import { errMsg, type Logger } from "../util/log.ts";
import { envSwitch } from "../util/env.ts";

const { ptr: P, u64_fast: U, i64_fast: I, i32, void: V } = {
  ptr: FFIType.ptr, u64_fast: FFIType.u64_fast, i64_fast: FFIType.i64_fast, i32: FFIType.i32, void: FFIType.void,
} as const;

export interface AdapterOptions {
  /** Raise the kernel's limit on background (async) requests; default 12 is too low for S3. */
  maxBackground: number;
  /** The largest READ/WRITE payload to accept (INIT's max_write, which sets max_pages). */
  maxWrite: number;
  /** Decides per open whether the kernel reads the cache file itself (FUSE passthrough). */
  passthrough: PassthroughTable;
  /** The libfuse version's layouts and passthrough route. */
  abi: FuseAbi;
  /**
   * libfuse 3.17+ (passthrough route "api"): asked in init whether to want FUSE_CAP_PASSTHROUGH
   * (true when the kernel offered it and the config allows it); told whether libfuse offered it.
   */
  passthroughAtInit?: { wanted(): boolean; result(granted: boolean): void };
  log: Logger;
}

/** Live ops table plus the callbacks that must stay referenced while the session lives. */
export interface OpsTable {
  table: Uint8Array;
  close(): void;
}

type Req = Pointer;

/** Smallest encoded size of one entry: struct fuse_dirent (24) / fuse_direntplus (128 + 24), name padded to 8. */
const DIRENT_MIN = 24 + 8;
const DIRENTPLUS_MIN = 152 + 8;

export function buildOps(fs: FsOps, opts: AdapterOptions): OpsTable {
  const lib = fuse();
  const log = opts.log;
  // Reply structs are copied by libfuse synchronously (writev), so one of each is reused.
  const entryBuf = new Uint8Array(ENTRY.size);
  const entryView = view(entryBuf);
  const statBuf = new Uint8Array(STAT.size);
  const statView = view(statBuf);
  const statvfsBuf = new Uint8Array(STATVFS.size);
  const openFi = new Uint8Array(FILE_INFO.alloc);
  const openFiView = view(openFi);
  const openOut = new Uint8Array(OPEN_OUT.size);
  const openOutView = view(openOut);
  const pt = opts.passthrough;
  const abi = opts.abi;
  const bufvec = new Uint8Array(BUFVEC.alloc);
  const bufvecView = view(bufvec);

  function fail(req: Req, op: string, err: unknown): void {
    const errno = toErrno(err);
    if (!isExpected(err) && errno !== E.ENOENT) log.warn(`${op}: ${errMsg(err)} (errno ${errno})`);
    lib.fuse_reply_err(req, errno);
  }

  /** Run `produce`, then `send` its result; any throw or rejection replies an errno instead. */
  function settle<T>(req: Req, op: string, produce: () => T | Promise<T>, send: (v: T) => void): void {
    let v: T | Promise<T>;
    try {
      v = produce();
    } catch (err) {
      fail(req, op, err);
      return;
    }
    const deliver = (x: T) => {
      try {
        send(x);
      } catch (err) {
        fail(req, op, err);
      }
    };
    if (v instanceof Promise) v.then(deliver, (err: unknown) => fail(req, op, err));
    else deliver(v);
  }

  /**
   * fuse_reply_open with our own file-info copy (libfuse's is only valid during the callback).
   * backingId (3.17+ only) makes libfuse send it with FOPEN_PASSTHROUGH.
   */
  function replyOpen(req: Req, flags: number, handle: number, bits: number, backingId = 0): number {
    openFi.fill(0);
    openFiView.setInt32(FILE_INFO.flags, flags, true);
    openFiView.setUint32(FILE_INFO.bits, bits, true);
    openFiView.setBigUint64(FILE_INFO.fh, BigInt(handle), true);
    if (backingId > 0 && abi.fileInfoSize > FILE_INFO.backingId) openFiView.setInt32(FILE_INFO.backingId, backingId, true);
    return lib.fuse_reply_open(req, openFi);
  }

  /**
   * A passthrough open reply on 3.14-3.16: their fuse_reply_open cannot carry a backing id, so
   * the struct fuse_open_out is sent as the reply body (what fuse_reply_open sends, plus the id).
   */
  function replyOpenPassthrough(req: Req, handle: number, backingId: number): number {
    openOut.fill(0);
    openOutView.setBigUint64(OPEN_OUT.fh, BigInt(handle), true);
    openOutView.setUint32(OPEN_OUT.openFlags, PassthroughTable.openFlags({ mode: "passthrough", backingId }), true);
    openOutView.setInt32(OPEN_OUT.backingId, backingId, true);
    return lib.fuse_reply_buf(req, openOut, OPEN_OUT.size);
  }

  const fh = (fi: Pointer | null): number => (fi ? Number(read.u64(fi, FILE_INFO.fh)) : 0);

  function replyRead(req: Req, r: ReadReply): void {
    if (r.kind === "bytes") {
      lib.fuse_reply_buf(req, r.data.byteLength ? ptr(r.data) : null, r.data.byteLength);
      return;
    }
    // fd-backed buffer: libfuse reads (or splices) the range itself, no copy through JS.
    bufvec.fill(0);
    bufvecView.setBigUint64(BUFVEC.count, 1n, true);
    const b = BUFVEC.buf;
    bufvecView.setBigUint64(b + FUSE_BUF.fsize, BigInt(r.size), true);
    bufvecView.setInt32(b + FUSE_BUF.flags, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK, true);
    bufvecView.setInt32(b + FUSE_BUF.fd, r.fd, true);
    bufvecView.setBigInt64(b + FUSE_BUF.pos, BigInt(r.pos), true);
    lib.fuse_reply_data(req, bufvec, 0);
  }

  function readdirInto(req: Req, op: string, ino: number, dh: number, size: number, off: number, plus: boolean) {
    // Every entry takes at least its fixed header (dirent 24 bytes, direntplus 152) plus a name.
    const max = Math.ceil(size / (plus ? DIRENTPLUS_MIN : DIRENT_MIN));
    settle(req, op, () => fs.readdir(ino, dh, off, max), (entries) => {
      const out = new Uint8Array(size);
      const base = ptr(out);
      let pos = 0;
      let next = off;
      const timeout = fs.entryTimeout(ino);
      for (const e of entries) {
        next++;
        const rest = size - pos;
        let n: number;
        if (plus) {
          encodeEntry(entryView, e.attr, timeout, timeout);
          n = Number(lib.fuse_add_direntry_plus(req, (base + pos) as Pointer, rest, e.name, entryBuf, next));
        } else {
          encodeStat(statView, 0, e.attr);
          n = Number(lib.fuse_add_direntry(req, (base + pos) as Pointer, rest, e.name, statBuf, next));
        }
        if (n > rest) break;
        pos += n;
        if (plus && e.name !== "." && e.name !== "..") fs.remember(e.attr.ino);
      }
      lib.fuse_reply_buf(req, pos ? out : null, pos);
    });
  }

  const erofs = (req: Req) => lib.fuse_reply_err(req, E.EROFS);
  /** An xattr value or name list: its size when asked with size 0, ERANGE when it does not fit. */
  const replyXattr = (req: Req, size: number, v: Uint8Array) =>
    size === 0 ? lib.fuse_reply_xattr(req, v.byteLength)
    : v.byteLength > size ? lib.fuse_reply_err(req, E.ERANGE)
    : lib.fuse_reply_buf(req, v.byteLength ? ptr(v) : null, v.byteLength);

  type Impl = { args: FFIType[]; fn: (...a: never[]) => void };
  const impls: Partial<Record<OpName, Impl>> = {
    init: {
      args: [P, P],
      fn: (_ud: Pointer, conn: Pointer) => {
        const c = new DataView(toArrayBuffer(conn, 0, CONN.size));
        // 3.17+ fill `capable` with the low 32 bits of capable_ext, and every flag we use is there.
        const capable = c.getUint32(CONN.capable, true);
        let want = abi.wantExt ? Number(c.getBigUint64(CONN.wantExt, true) & 0xffffffffn) : c.getUint32(CONN.want, true);
        const caps: number[] = [CAP.asyncRead, CAP.readdirplus, CAP.parallelDirops, CAP.cacheSymlinks, CAP.autoInvalData];
        // Splice cached file ranges into /dev/fuse (measured ~15% faster than copying; BUCKETFS_SPLICE=0 disables).
        if (envSwitch("BUCKETFS_SPLICE") !== "0") caps.push(CAP.spliceWrite, CAP.spliceMove);
        for (const cap of caps) {
          if (capable & cap) want |= cap;
        }
        // Always readdirplus: `ls -l` then costs no per-entry LOOKUP round trips.
        want &= ~CAP.readdirplusAuto;
        // Never FUSE over io_uring (3.18+, wanted by default and enabled by FUSE_URING_ENABLE=1):
        // its requests would reach these callbacks on libfuse's threads, not on the JS thread.
        want &= ~CAP.overIoUring;
        const ptInit = opts.passthroughAtInit;
        if (ptInit?.wanted()) {
          const granted = (capable & CAP.passthrough) !== 0;
          if (granted) want |= CAP.passthrough;
          ptInit.result(granted);
        }
        c.setUint32(CONN.want, want >>> 0, true);
        if (abi.wantExt) {
          // want_ext is what 3.17+ act on; with its low half equal to `want` libfuse takes it as is.
          const high = c.getBigUint64(CONN.wantExt, true) & 0xffffffff00000000n;
          c.setBigUint64(CONN.wantExt, high | BigInt(want >>> 0), true);
        }
        c.setUint32(CONN.maxBackground, opts.maxBackground, true);
        // libfuse derives max_pages from max_write, and the kernel caps every READ at max_pages.
        if (opts.maxWrite < c.getUint32(CONN.maxWrite, true)) c.setUint32(CONN.maxWrite, opts.maxWrite, true);
        c.setUint32(CONN.congestionThreshold, Math.floor((opts.maxBackground * 3) / 4), true);
      },
    },
    lookup: {
      args: [P, U, P],
      fn: (req: Req, parent: number, name: Pointer) => {
        const n = readCString(name);
        settle(req, "lookup", () => fs.lookup(parent, n), (e) => {
          encodeEntry(entryView, e.attr, e.attrTimeout, e.entryTimeout);
          lib.fuse_reply_entry(req, entryBuf);
        });
      },
    },
    forget: {
      args: [P, U, U],
      fn: (req: Req, ino: number, n: number) => {
        try {
          fs.forget(ino, n);
        } finally {
          lib.fuse_reply_none(req);
        }
      },
    },
    forget_multi: {
      args: [P, U, P],
      fn: (req: Req, count: number, list: Pointer) => {
        try {
          for (let i = 0; i < count; i++) {
            const o = i * FORGET_DATA.size;
            fs.forget(Number(read.u64(list, o + FORGET_DATA.ino)), Number(read.u64(list, o + FORGET_DATA.nlookup)));
          }
        } finally {
          lib.fuse_reply_none(req);
        }
      },
    },
    getattr: {
      args: [P, U, P],
      fn: (req: Req, ino: number) =>
        settle(req, "getattr", () => fs.getattr(ino), (r) => {
          encodeStat(statView, 0, r.attr);
          lib.fuse_reply_attr(req, statBuf, r.timeout);
        }),
    },
    readlink: {
      args: [P, U],
      fn: (req: Req, ino: number) =>
        settle(req, "readlink", () => fs.readlink(ino), (target) => lib.fuse_reply_readlink(req, target)),
    },
    open: {
      args: [P, U, P],
      fn: (req: Req, ino: number, fi: Pointer) => {
        const flags = read.i32(fi, FILE_INFO.flags);
        settle(req, "open", () => fs.open(ino, flags), (o) => {
          // Plan, reply and record in one synchronous step, so no other open of the inode interleaves.
          const plan = pt.plan(ino, o.backing, req);
          const rc =
            plan.mode !== "passthrough"
              ? replyOpen(req, flags, o.fh, plan.mode === "direct" ? FI_BIT.directIo : o.keepCache ? FI_BIT.keepCache : 0)
              : abi.passthrough === "api"
                ? replyOpen(req, flags, o.fh, 0, plan.backingId)
                : replyOpenPassthrough(req, o.fh, plan.backingId);
          pt.opened(o.fh, ino, plan, rc === 0, req);
        });
      },
    },
    read: {
      args: [P, U, U, I, P],
      fn: (req: Req, ino: number, size: number, off: number, fi: Pointer) => {
        const h = fh(fi);
        settle(req, "read", () => fs.read(ino, h, size, off), (r) => replyRead(req, r));
      },
    },
    release: {
      args: [P, U, P],
      fn: (req: Req, ino: number, fi: Pointer) => {
        const h = fh(fi);
        pt.released(h, req);
        settle(req, "release", () => fs.release(ino, h), () => lib.fuse_reply_err(req, 0));
      },
    },
    opendir: {
      args: [P, U, P],
      fn: (req: Req, ino: number, fi: Pointer) => {
        const flags = read.i32(fi, FILE_INFO.flags);
        // Let the kernel cache the listing; keep what it cached while the listing is unchanged.
        settle(req, "opendir", () => fs.opendir(ino), (o) =>
          replyOpen(req, flags, o.fh, (abi.cacheReaddir ? FI_BIT.cacheReaddir : 0) | (o.keepCache ? FI_BIT.keepCache : 0)),
        );
      },
    },
    readdir: {
      args: [P, U, U, I, P],
      fn: (req: Req, ino: number, size: number, off: number, fi: Pointer) =>
        readdirInto(req, "readdir", ino, fh(fi), size, off, false),
    },
    readdirplus: {
      args: [P, U, U, I, P],
      fn: (req: Req, ino: number, size: number, off: number, fi: Pointer) =>
        readdirInto(req, "readdirplus", ino, fh(fi), size, off, true),
    },
    releasedir: {
      args: [P, U, P],
      fn: (req: Req, ino: number, fi: Pointer) => {
        const h = fh(fi);
        settle(req, "releasedir", () => fs.releasedir(ino, h), () => lib.fuse_reply_err(req, 0));
      },
    },
    statfs: {
      args: [P, U],
      fn: (req: Req) =>
        settle(req, "statfs", () => fs.statfs(), (s) => {
          encodeStatvfs(view(statvfsBuf), s);
          lib.fuse_reply_statfs(req, statvfsBuf);
        }),
    },
    getxattr: {
      args: [P, U, P, U],
      fn: (req: Req, ino: number, name: Pointer, size: number) => {
        const n = readCString(name);
        settle(req, "getxattr", () => fs.getxattr(ino, n), (v) => replyXattr(req, size, v));
      },
    },
    listxattr: {
      args: [P, U, U],
      fn: (req: Req, ino: number, size: number) =>
        settle(req, "listxattr", () => fs.listxattr(ino), (names) => replyXattr(req, size, Buffer.from(names.map((x) => `${x}\0`).join("")))),
    },
    // No flush: with nothing to write, libfuse answers the first FLUSH ENOSYS, the kernel sets
    // no_flush and returns 0 from every later close() without asking (one request less per open).
    fsync: { args: [P, U, i32, P], fn: (req: Req) => lib.fuse_reply_err(req, 0) },
    fsyncdir: { args: [P, U, i32, P], fn: (req: Req) => lib.fuse_reply_err(req, 0) },
    // Outside the workdir the namespace is read-only.
    setattr: { args: [P], fn: erofs },
    mknod: { args: [P], fn: erofs },
    mkdir: { args: [P], fn: erofs },
    unlink: { args: [P], fn: erofs },
    rmdir: { args: [P], fn: erofs },
    symlink: { args: [P], fn: erofs },
    rename: { args: [P], fn: erofs },
    link: { args: [P], fn: erofs },
    write: { args: [P], fn: erofs },
    create: { args: [P], fn: erofs },
    setxattr: { args: [P], fn: erofs },
    removexattr: { args: [P], fn: erofs },
    fallocate: { args: [P], fn: erofs },
  };

  const table = new Uint8Array(OPS_SIZE);
  const tv = view(table);
  const callbacks: JSCallback[] = [];
  OPS_ORDER.forEach((name, i) => {
    const impl = impls[name];
    if (!impl) return;
    const cb = new JSCallback(impl.fn as (...a: unknown[]) => void, { args: impl.args, returns: V });
    callbacks.push(cb);
    tv.setBigUint64(i * 8, BigInt(cb.ptr ?? 0), true);
  });
  return {
    table,
    close: () => callbacks.forEach((c) => c.close()),
  };
}
