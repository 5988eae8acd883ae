/**
 * Byte layouts of the libfuse3 / glibc structs bucketfs exchanges over FFI (x86-64, glibc,
 * libfuse 3.3+), the parts that differ between libfuse versions (`fuseAbi`), and small codecs
 * that fill or read them.
 *
 * Is: offsets (checked against the installed headers, and against the headers of every
 * libfuse built into .build/libfuse/, by test/unit/layout.test.ts, which compiles
 * native-headers/layout.c and native-headers/abi.c) and encode/decode helpers over DataView.
 * Is not: FFI calls (ffi.ts) or filesystem semantics.
 */
import type { Attr, StatFs } from "../fs/types.ts";

export const STAT = {
  size: 144, ino: 8, nlink: 16, mode: 24, uid: 28, gid: 32, rdev: 40, fsize: 48, blksize: 56, blocks: 64,
  atim: 72, mtim: 88, ctim: 104,
} as const;
export const ENTRY = { size: 176, ino: 0, generation: 8, attr: 16, attrTimeout: 160, entryTimeout: 168 } as const;
/**
 * struct fuse_file_info: 40 bytes up to 3.16, 64 in 3.17+ (backingId is 3.17+); we always
 * allocate 64 so either fits. flags, the bit field word and fh sit at the same offsets in 3.3+.
 */
export const FILE_INFO = { size: 40, alloc: 64, flags: 0, bits: 4, fh: 16, lockOwner: 24, backingId: 36 } as const;
export const FI_BIT = { directIo: 1 << 1, keepCache: 1 << 2, nonseekable: 1 << 4, cacheReaddir: 1 << 6 } as const;
/**
 * struct fuse_buf: 40 bytes up to 3.16; 3.17 appends `size_t mem_size` (48). struct fuse_bufvec
 * holds one: 64 bytes, 72 in 3.17+. We allocate (zeroed) for the larger so libfuse never reads
 * past our buffers.
 */
export const FUSE_BUF = { size: 40, alloc: 48, fsize: 0, flags: 8, mem: 16, fd: 24, pos: 32 } as const;
export const BUFVEC = { size: 64, alloc: 72, count: 0, idx: 8, off: 16, buf: 24 } as const;
export const FUSE_BUF_IS_FD = 2;
export const FUSE_BUF_FD_SEEK = 4;
export const FUSE_ARGS = { size: 24, argc: 0, argv: 8, allocated: 16 } as const;
/** struct fuse_conn_info (128 bytes in every 3.x); capableExt/wantExt (64-bit) are 3.17+. */
export const CONN = {
  size: 128, maxWrite: 8, maxRead: 12, maxReadahead: 16, capable: 20, want: 24, maxBackground: 28, congestionThreshold: 32,
  timeGran: 36, capableExt: 48, wantExt: 56,
} as const;
/** FUSE_CAP_* (want/want_ext bits). passthrough (1 << 29) is 3.17+, overIoUring (1 << 31) 3.18+. */
export const CAP = {
  asyncRead: 1, spliceWrite: 128, spliceMove: 256, spliceRead: 512, autoInvalData: 4096, readdirplus: 8192, readdirplusAuto: 16384,
  parallelDirops: 262144, cacheSymlinks: 8388608, passthrough: 1 << 29, overIoUring: 2 ** 31,
} as const;
export const STATVFS = {
  size: 112, bsize: 0, frsize: 8, blocks: 16, bfree: 24, bavail: 32, files: 40, ffree: 48, favail: 56, fsid: 64,
  flag: 72, namemax: 80,
} as const;
export const FORGET_DATA = { size: 16, ino: 0, nlookup: 8 } as const;

/**
 * Order of the function pointers in `struct fuse_lowlevel_ops`: the first 44 (libfuse 3.8-3.16;
 * 3.17 appends tmpfile, 3.18 statx, which bucketfs leaves unset).
 */
export const OPS_ORDER = [
  "init", "destroy", "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink", "rmdir",
  "symlink", "rename", "link", "open", "read", "write", "flush", "release", "fsync", "opendir", "readdir",
  "releasedir", "fsyncdir", "statfs", "setxattr", "getxattr", "listxattr", "removexattr", "access", "create",
  "getlk", "setlk", "bmap", "ioctl", "poll", "write_buf", "retrieve_reply", "forget_multi", "flock", "fallocate",
  "readdirplus", "copy_file_range", "lseek",
] as const;
export type OpName = (typeof OPS_ORDER)[number];
export const OPS_SIZE = OPS_ORDER.length * 8;

/**
 * How bucketfs answers FUSE passthrough on a libfuse generation: "api" is libfuse's own
 * (FUSE_CAP_PASSTHROUGH, fuse_passthrough_open/close, fuse_file_info.backing_id; 3.17+),
 * "custom-io" accepts the kernel's offer in the INIT reply through fuse_session_custom_io and
 * sends the open reply itself (3.14-3.16, which have no API for it), "none" has neither.
 */
export type PassthroughRoute = "api" | "custom-io" | "none";

/** What differs between libfuse versions, for one version. */
export interface FuseAbi {
  /** Function pointers handed to fuse_session_new (what that version's struct holds, at most ours). */
  opsCount: number;
  /** sizeof(struct fuse_file_info). */
  fileInfoSize: number;
  /** sizeof(struct fuse_buf) and of a struct fuse_bufvec with one buffer. */
  fuseBufSize: number;
  bufvecSize: number;
  /** fuse_file_info.cache_readdir exists (3.5+; a padding bit before). */
  cacheReaddir: boolean;
  /** fuse_conn_info has capable_ext/want_ext, and libfuse converts `want` into want_ext (3.17+). */
  wantExt: boolean;
  /** fuse_session_new is a header macro calling fuse_session_new_versioned (3.17+). */
  sessionNewVersioned: boolean;
  passthrough: PassthroughRoute;
}

/**
 * The layout and calling choices for libfuse `major.minor` (3.3+). Sources: each version's
 * include/fuse_lowlevel.h and fuse_common.h (checked by test/unit/layout.test.ts for the
 * versions built into .build/libfuse/) and ChangeLog.rst: copy_file_range 3.4, cache_readdir
 * 3.5, lseek 3.8, fuse_session_custom_io 3.13 (used from 3.14, the first one measured), the
 * 3.17 ABI (want_ext, fuse_buf.mem_size, versioned fuse_session_new and custom_io, the
 * passthrough API).
 */
export function fuseAbi(v: { major: number; minor: number }): FuseAbi {
  const m = v.major > 3 ? 99 : v.minor;
  return {
    opsCount: m < 4 ? 42 : m < 8 ? 43 : OPS_ORDER.length,
    fileInfoSize: m >= 17 ? 64 : 40,
    fuseBufSize: m >= 17 ? FUSE_BUF.alloc : FUSE_BUF.size,
    bufvecSize: m >= 17 ? BUFVEC.alloc : BUFVEC.size,
    cacheReaddir: m >= 5,
    wantExt: m >= 17,
    sessionNewVersioned: m >= 17,
    passthrough: m >= 17 ? "api" : m >= 14 ? "custom-io" : "none",
  };
}

export function view(buf: Uint8Array): DataView {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
}

function setTimespec(v: DataView, off: number, ms: number): void {
  const sec = Math.floor(ms / 1000);
  const nsec = Math.round((ms - sec * 1000) * 1e6);
  v.setBigInt64(off, BigInt(sec), true);
  v.setBigInt64(off + 8, BigInt(Math.min(nsec, 999_999_999)), true);
}

/** Fill a `struct stat` at byte offset `base` of `v`. */
export function encodeStat(v: DataView, base: number, a: Attr): void {
  for (let i = 0; i < STAT.size; i += 8) v.setBigUint64(base + i, 0n, true);
  v.setBigUint64(base + STAT.ino, BigInt(a.ino), true);
  v.setBigUint64(base + STAT.nlink, BigInt(a.nlink), true);
  v.setUint32(base + STAT.mode, a.mode, true);
  v.setUint32(base + STAT.uid, a.uid, true);
  v.setUint32(base + STAT.gid, a.gid, true);
  v.setBigInt64(base + STAT.fsize, BigInt(a.size), true);
  v.setBigInt64(base + STAT.blksize, 4096n, true);
  v.setBigInt64(base + STAT.blocks, BigInt(Math.ceil(a.size / 512)), true);
  setTimespec(v, base + STAT.atim, a.atimeMs ?? a.mtimeMs);
  setTimespec(v, base + STAT.mtim, a.mtimeMs);
  setTimespec(v, base + STAT.ctim, a.ctimeMs ?? a.mtimeMs);
}

/** Fill a `struct fuse_entry_param`. ino 0 with attr undefined is a negative (cached ENOENT) entry. */
export function encodeEntry(v: DataView, a: Attr | undefined, attrTimeout: number, entryTimeout: number): void {
  for (let i = 0; i < ENTRY.size; i += 8) v.setBigUint64(i, 0n, true);
  if (a) {
    v.setBigUint64(ENTRY.ino, BigInt(a.ino), true);
    encodeStat(v, ENTRY.attr, a);
  }
  v.setFloat64(ENTRY.attrTimeout, attrTimeout, true);
  v.setFloat64(ENTRY.entryTimeout, entryTimeout, true);
}

export function encodeStatvfs(v: DataView, s: StatFs): void {
  for (let i = 0; i < STATVFS.size; i += 8) v.setBigUint64(i, 0n, true);
  const u = (off: number, n: number) => v.setBigUint64(off, BigInt(Math.max(0, Math.floor(n))), true);
  u(STATVFS.bsize, s.bsize);
  u(STATVFS.frsize, s.bsize);
  u(STATVFS.blocks, s.blocks);
  u(STATVFS.bfree, s.bfree);
  u(STATVFS.bavail, s.bavail);
  u(STATVFS.files, s.files);
  u(STATVFS.ffree, s.ffree);
  u(STATVFS.favail, s.ffree);
  u(STATVFS.namemax, s.namemax);
}

// ---- The kernel protocol (linux/fuse.h), for the raw request/reply bytes bucketfs inspects ----
// Checked against the installed header by test/unit/layout.test.ts. Debian 12's header is protocol
// 7.38; what passthrough added in 7.40 (kernel 6.9) is not in it. Those values are marked "7.40" and
// come from the kernel's include/uapi/linux/fuse.h (v6.9+), where they were added by
// "fuse: implement open/create/release with passthrough" and "fuse: prepare for opening file in
// passthrough mode" (Amir Goldstein, 2024); measured on this machine in research/passthrough-spike.md.

/** struct fuse_in_header (40 bytes) at the start of every request read from /dev/fuse. */
export const IN_HEADER = { size: 40, len: 0, opcode: 4, unique: 8, nodeid: 16 } as const;
/** struct fuse_out_header (16 bytes) at the start of every reply. */
export const OUT_HEADER = { size: 16, len: 0, error: 4, unique: 8 } as const;
/** struct fuse_init_in: flags2 is valid only when flags has FUSE_INIT_EXT. */
export const INIT_IN = { major: 0, minor: 4, maxReadahead: 8, flags: 12, flags2: 16 } as const;
/**
 * struct fuse_init_out (64 bytes). maxStackDepth (7.40) sits where the 7.38 header has unused[0];
 * the test checks that `unused` starts there.
 */
export const INIT_OUT = {
  size: 64, major: 0, minor: 4, maxReadahead: 8, flags: 12, maxBackground: 16, congestionThreshold: 18, maxWrite: 20,
  timeGran: 24, maxPages: 28, flags2: 32, maxStackDepth: 36,
} as const;
/** struct fuse_read_in, after the in header. */
export const READ_IN = { fh: 0, offset: 8, size: 16 } as const;
/** struct fuse_open_out (16 bytes). backingId (7.40) is the 7.38 header's `padding`. */
export const OPEN_OUT = { size: 16, fh: 0, openFlags: 8, backingId: 12 } as const;
/** struct fuse_backing_map (7.40, 16 bytes): the argument of FUSE_DEV_IOC_BACKING_OPEN. */
export const BACKING_MAP = { size: 16, fd: 0, flags: 4, padding: 8 } as const;

/** Opcodes bucketfs counts by name (enum fuse_opcode). */
export const OPCODE = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17,
  RELEASE: 18, GETXATTR: 22, LISTXATTR: 23, FLUSH: 25, INIT: 26, OPENDIR: 27, READDIR: 28, RELEASEDIR: 29,
  ACCESS: 34, INTERRUPT: 36, DESTROY: 38, BATCH_FORGET: 42, READDIRPLUS: 44, LSEEK: 46,
} as const;

/** INIT flags (first word). */
export const INIT_FLAG = { writebackCache: 1 << 16, initExt: 1 << 30 } as const;
/** INIT flags2 (second word, bit n = 1ULL << (32 + n)). FUSE_PASSTHROUGH = 1ULL << 37 (7.40). */
export const INIT_FLAG2 = { passthrough: 1 << 5 } as const;
/** First protocol minor with passthrough. */
export const PASSTHROUGH_MINOR = 40;
/** fuse_open_out.open_flags. FOPEN_PASSTHROUGH = 1 << 7 (7.40). */
export const FOPEN = { directIo: 1 << 0, keepCache: 1 << 1, passthrough: 1 << 7 } as const;
/**
 * /dev/fuse ioctls (7.40): FUSE_DEV_IOC_BACKING_OPEN = _IOW(229, 1, struct fuse_backing_map) and
 * FUSE_DEV_IOC_BACKING_CLOSE = _IOW(229, 2, uint32_t). The test recomputes both with the C _IOW macro
 * and the header's FUSE_DEV_IOC_MAGIC.
 */
export const DEV_IOC = { magic: 229, backingOpen: 0x4010e501, backingClose: 0x4004e502 } as const;
