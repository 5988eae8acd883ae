/**
 * The only `dlopen` in bucketfs: libfuse3's low-level API and the few libc calls the
 * daemon needs (umount2, mount for bind mounts, execve for the threadpool re-exec).
 *
 * Is: symbol tables, library loading with a clear error when libfuse3 is missing, errno
 * access, C-string helpers. Is not: session logic (session.ts) or struct layouts (structs.ts).
 */
import { dlopen, FFIType, ptr, read, CString, type Pointer } from "bun:ffi";

const { ptr: P, i32, u64_fast, f64, cstring, void: V } = {
  ptr: FFIType.ptr,
  i32: FFIType.i32,
  u64_fast: FFIType.u64_fast,
  f64: FFIType.f64,
  cstring: FFIType.cstring,
  void: FFIType.void,
} as const;

const FUSE_SYMBOLS = {
  fuse_pkgversion: { args: [], returns: cstring },
  fuse_session_new: { args: [P, P, u64_fast, P], returns: P },
  fuse_session_mount: { args: [P, cstring], returns: i32 },
  fuse_session_fd: { args: [P], returns: i32 },
  fuse_session_process_buf: { args: [P, P], returns: V },
  fuse_session_unmount: { args: [P], returns: V },
  fuse_session_destroy: { args: [P], returns: V },
  fuse_session_exit: { args: [P], returns: V },
  fuse_reply_err: { args: [P, i32], returns: i32 },
  fuse_reply_none: { args: [P], returns: V },
  fuse_reply_entry: { args: [P, P], returns: i32 },
  fuse_reply_attr: { args: [P, P, f64], returns: i32 },
  fuse_reply_readlink: { args: [P, cstring], returns: i32 },
  fuse_reply_open: { args: [P, P], returns: i32 },
  fuse_reply_buf: { args: [P, P, u64_fast], returns: i32 },
  fuse_reply_data: { args: [P, P, i32], returns: i32 },
  fuse_reply_statfs: { args: [P, P], returns: i32 },
  fuse_reply_xattr: { args: [P, u64_fast], returns: i32 },
  fuse_add_direntry: { args: [P, P, u64_fast, cstring, P, u64_fast], returns: u64_fast },
  fuse_add_direntry_plus: { args: [P, P, u64_fast, cstring, P, u64_fast], returns: u64_fast },
  fuse_req_interrupted: { args: [P], returns: i32 },
} as const;

const LIBC_SYMBOLS = {
  umount2: { args: [cstring, i32], returns: i32 },
  mount: { args: [cstring, cstring, cstring, u64_fast, P], returns: i32 },
  execve: { args: [cstring, P, P], returns: i32 },
  __errno_location: { args: [], returns: P },
  strerror: { args: [i32], returns: cstring },
  socket: { args: [i32, i32, i32], returns: i32 },
  sendto: { args: [i32, P, u64_fast, i32, P, u64_fast], returns: i32 },
  close: { args: [i32], returns: i32 },
  syncfs: { args: [i32], returns: i32 },
} as const;

/** What to install when libfuse3 cannot be loaded. */
export const LIBFUSE_HINT =
  "bucketfs needs libfuse3 (libfuse3.so.3). On Debian/Ubuntu: apt-get install fuse3 libfuse3-3; " +
  "on RHEL/Rocky: dnf install fuse3 fuse3-libs";

function openFuse() {
  const name = process.env.BUCKETFS_LIBFUSE ?? "libfuse3.so.3";
  try {
    return dlopen(name, FUSE_SYMBOLS);
  } catch (err) {
    throw new Error(`cannot load ${name}: ${(err as Error).message}. ${LIBFUSE_HINT}`, { cause: err });
  }
}

const openLibc = () => dlopen("libc.so.6", LIBC_SYMBOLS);
type FuseLib = ReturnType<typeof openFuse>;
type LibcLib = ReturnType<typeof openLibc>;

let fuseLib: FuseLib | undefined;
let libcLib: LibcLib | undefined;

/** libfuse3 symbols, loaded on first use. */
export function fuse(): FuseLib["symbols"] {
  fuseLib ??= openFuse();
  return fuseLib.symbols;
}

export function libc(): LibcLib["symbols"] {
  libcLib ??= openLibc();
  return libcLib.symbols;
}

/** errno after a failed libc call (read immediately after the call). */
export function lastErrno(): number {
  const p = libc().__errno_location();
  return p === null ? 0 : read.i32(p as Pointer, 0);
}

export function strerror(errno: number): string {
  return String(libc().strerror(errno) ?? `errno ${errno}`);
}


/** A NUL-terminated copy of a JS string, as a Buffer (keep it referenced while C may read it). */
export function cstr(s: string): Buffer {
  return Buffer.from(s + "\0", "utf8");
}

/** Build a NULL-terminated `char*[]`; returns the array and the strings so both stay alive. */
export function cstrArray(items: string[]): { array: BigUint64Array; keep: Buffer[] } {
  const keep = items.map(cstr);
  const array = new BigUint64Array(items.length + 1);
  keep.forEach((b, i) => (array[i] = BigInt(ptr(b))));
  return { array, keep };
}

/** Read a C string argument during a callback (copies it). */
export function readCString(p: Pointer | null): string {
  return p === null || (p as unknown as number) === 0 ? "" : String(new CString(p));
}

export const MNT_DETACH = 2;
